"""The 60-day Spam expiry: the pure selector and the job on a task.Clock."""

import collections

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.config import Limits
from ktmail.model import SPAM_FOLDER, Address
from ktmail.services.retention import (
    DAY,
    SpamExpiryJob,
    days_until_expiry,
    run_all,
    spam_to_expire,
)
from ktmail.store.memory import MemoryStore

Saved = collections.namedtuple("Saved", "uid saved_at")


class FakeFolders:
    """The mailboxes service's expiry calls over dicts:
    {(mailbox_id, folder): {uid: arrived}}."""

    def __init__(self):
        self.messages = {}
        self.expunged = []
        self.failing = set()

    def put(self, mailbox_id, folder, uid, arrived):
        self.messages.setdefault((mailbox_id, folder), {})[uid] = arrived

    def messages_saved_before(self, mailbox, folder, before):
        if mailbox.id in self.failing:
            return defer.fail(OSError("maildir unreadable"))
        found = self.messages.get((mailbox.id, folder), {})
        return defer.succeed([Saved(uid, at) for uid, at in found.items() if at < before])

    def expunge(self, mailbox, folder, uids, reason="expunge"):
        found = self.messages.get((mailbox.id, folder), {})
        gone = [uid for uid in uids if found.pop(uid, None) is not None]
        self.expunged.append((mailbox.id, folder, tuple(gone)))
        return defer.succeed(len(gone))


class SelectorTests(unittest.TestCase):
    def test_spam_to_expire_table(self):
        """Messages that arrived more than N days ago are selected, oldest
        first; exactly N days old is kept."""
        now = 1000 * DAY
        table = [
            ([], []),
            ([(1, now - 61 * DAY)], [1]),
            ([(1, now - 60 * DAY)], []),
            ([(1, now - 60 * DAY - 1)], [1]),
            ([(3, now - 90 * DAY), (1, now - 70 * DAY), (2, now)], [3, 1]),
            ([(5, now + DAY)], []),
        ]
        for messages, expected in table:
            self.assertEqual(spam_to_expire(messages, now, 60), expected, messages)

    def test_days_until_expiry(self):
        """What the webmail shows: whole days left, rounded up, never below 0."""
        now = 1000 * DAY
        self.assertEqual(days_until_expiry(now, now, 60), 60)
        self.assertEqual(days_until_expiry(now - DAY + 1, now, 60), 60)
        self.assertEqual(days_until_expiry(now - 59.5 * DAY, now, 60), 1)
        self.assertEqual(days_until_expiry(now - 80 * DAY, now, 60), 0)


class ExpiryJobTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000 * DAY)
        self.accounts = MemoryStore()
        self.folders = FakeFolders()
        self.job = SpamExpiryJob(self.accounts, self.folders, Limits(), self.clock,
                                 audit=self.accounts)
        customer = self.successResultOf(self.accounts.add_customer("asiakas", "h", 0))
        self.box = self.successResultOf(self.accounts.add_mailbox(
            customer.id, "matti", Address("matti", "sboksi.fi"), "h", 10**9, 0, 5))

    def test_deletes_old_spam_only(self):
        """Spam older than 60 days goes; newer Spam and old INBOX mail stay."""
        now = self.clock.seconds()
        self.folders.put(self.box.id, SPAM_FOLDER, 1, now - 61 * DAY)
        self.folders.put(self.box.id, SPAM_FOLDER, 2, now - 10 * DAY)
        self.folders.put(self.box.id, "INBOX", 3, now - 400 * DAY)
        reports = self.successResultOf(self.job.run_once())
        self.assertEqual([(r.mailbox.username, r.folder, r.uids) for r in reports],
                         [("matti", SPAM_FOLDER, (1,))])
        self.assertEqual(sorted(self.folders.messages[self.box.id, SPAM_FOLDER]), [2])
        self.assertEqual(list(self.folders.messages[self.box.id, "INBOX"]), [3])
        audit = self.successResultOf(self.accounts.list_audit())
        self.assertEqual(audit[0][1:4], ("retention", "spam.expire", "matti"))

    def test_rerun_is_idempotent(self):
        """Running again at once deletes nothing more."""
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds() - 61 * DAY)
        self.successResultOf(self.job.run_once())
        self.assertEqual(self.successResultOf(self.job.run_once()), [])
        self.assertEqual(len(self.folders.expunged), 1)

    def test_dry_run_deletes_nothing(self):
        """A dry run lists what would go and leaves it."""
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds() - 61 * DAY)
        reports = self.successResultOf(self.job.run_once(dry_run=True))
        self.assertEqual([r.uids for r in reports], [(1,)])
        self.assertEqual(self.folders.expunged, [])
        self.assertIn(1, self.folders.messages[self.box.id, SPAM_FOLDER])

    def test_timer_expires_as_days_pass(self):
        """Under the timer service a message in Spam disappears on the first
        run after its 60th day, not before."""
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds())
        svc = self.job.service()
        svc.startService()
        self.addCleanup(svc.stopService)
        self.clock.advance(59 * DAY)
        for _ in range(24):
            self.clock.advance(3600)
        self.assertIn(1, self.folders.messages[self.box.id, SPAM_FOLDER])
        for _ in range(2):
            self.clock.advance(3600)
        self.assertNotIn(1, self.folders.messages[self.box.id, SPAM_FOLDER])

    def test_retention_days_are_configurable(self):
        """spam_retention_days decides the age."""
        job = SpamExpiryJob(self.accounts, self.folders, Limits(spam_retention_days=7),
                            self.clock)
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds() - 8 * DAY)
        self.assertEqual([r.uids for r in self.successResultOf(job.run_once())], [(1,)])

    def test_one_broken_mailbox_does_not_stop_the_run(self):
        """A failure in one mailbox is logged; the others are still expired."""
        customer = self.successResultOf(self.accounts.get_customer("asiakas"))
        other = self.successResultOf(self.accounts.add_mailbox(
            customer.id, "maija", Address("maija", "sboksi.fi"), "h", 10**9, 0, 5))
        self.folders.failing.add(other.id)
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds() - 61 * DAY)
        reports = self.successResultOf(self.job.run_once())
        self.assertEqual([r.mailbox.username for r in reports], ["matti"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_runs_do_not_overlap(self):
        """A turn that starts while the previous run is still working is skipped."""
        slow = defer.Deferred()
        self.folders.messages_saved_before = lambda *a: slow
        first = self.job.run_once()
        self.assertEqual(self.successResultOf(self.job.run_once()), [])
        slow.callback([])
        self.assertEqual(self.successResultOf(first), [])

    def test_run_all(self):
        """run_all runs every job once and names each."""
        self.folders.put(self.box.id, SPAM_FOLDER, 1, self.clock.seconds() - 61 * DAY)
        results = self.successResultOf(run_all([self.job], dry_run=True))
        self.assertEqual([(name, [r.uids for r in reports]) for name, reports in results],
                         [("spam", [(1,)])])
