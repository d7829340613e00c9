"""The inactivity lifecycle on a fake clock: warnings at T-30 and T-7,
deletion at T, a login resets everything, re-running changes nothing."""

import email

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.config import DEFAULT_DOMAINS, Limits
from ktmail.model import Address, Mailbox
from ktmail.services.accounts import AccountService
from ktmail.services.retention import (
    DAY,
    InactivityJob,
    InactivityPolicy,
    inactivity_actions,
)
from ktmail.store.memory import MemoryStore
from tests.services.fakes import RecordingMailStore, fast_hasher

PW = "correct horse 7"
POLICY = InactivityPolicy(delete_after_days=183, warn_days_before=(30, 7))


def mailbox(created, last_login=None, warned=()):
    return Mailbox(id=1, customer_id=1, username="u", address=Address("u", "brev.fi"),
                   quota_bytes=1, created=created, last_login=last_login, warnings_sent=warned)


class InactivityActionsTests(unittest.TestCase):
    def test_table(self):
        """(mailbox, now) -> actions, around each threshold."""
        T = 183 * DAY
        cases = [
            (mailbox(0), T - 30 * DAY - 1, []),
            (mailbox(0), T - 30 * DAY, [("warn", (30,))]),
            (mailbox(0, warned=(30,)), T - 8 * DAY, []),
            (mailbox(0, warned=(30,)), T - 7 * DAY, [("warn", (7,))]),
            # a late first run sends one warning covering both thresholds
            (mailbox(0), T - 2 * DAY, [("warn", (30, 7))]),
            (mailbox(0, warned=(30, 7)), T - 1, []),
            (mailbox(0, warned=(30, 7)), T, [("delete", ())]),
            (mailbox(0), T + 50 * DAY, [("delete", ())]),
            # the last login counts, not creation
            (mailbox(0, last_login=100 * DAY), T, []),
            (mailbox(0, last_login=100 * DAY), T + 100 * DAY, [("delete", ())]),
        ]
        for m, now, expected in cases:
            got = [(a.kind, a.days_before) for a in inactivity_actions([m], now, POLICY)]
            self.assertEqual(got, expected, (m, now / DAY))


class InactivityJobTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.mail = RecordingMailStore()
        self.accounts = AccountService(self.store, self.mail, self.store, fast_hasher(),
                                       DEFAULT_DOMAINS, Limits(), self.clock)
        self.notices = []
        self.job = InactivityJob(self.accounts, self.deliver, self.clock, POLICY,
                                 "mail.example.test")
        self.successResultOf(self.accounts.add_customer("kund", PW, "test"))
        self.box = self.successResultOf(
            self.accounts.add_mailbox("kund", "alice_u", "alice@brev.fi", PW, "test"))
        self.created = self.clock.seconds()

    def deliver(self, mailbox, message):
        self.notices.append((mailbox.username, email.message_from_bytes(message)))
        return defer.succeed(None)

    def at(self, days_after_creation):
        self.clock.advance(self.created + days_after_creation * DAY - self.clock.seconds())
        return self.successResultOf(self.job.run_once())

    def exists(self):
        d = self.store.get_mailbox(self.box.id)
        d.addErrback(lambda f: None)
        return self.successResultOf(d) is not None

    def test_warns_twice_then_deletes_and_reruns_change_nothing(self):
        """T-30 and T-7 warnings land once each; at T the mailbox and its
        Maildir go, with an audit entry; running again does nothing."""
        self.assertEqual(self.at(152), [])
        self.assertEqual([a.kind for a in self.at(153)], ["warn"])
        self.assertEqual(self.at(153), [])  # idempotent
        self.assertEqual(len(self.notices), 1)
        subject = self.notices[0][1]["Subject"]
        self.assertIn("alice@brev.fi", subject)
        self.assertEqual(self.notices[0][1]["To"], "alice@brev.fi")
        self.assertEqual([a.kind for a in self.at(176)], ["warn"])
        self.assertEqual(self.at(177), [])
        self.assertEqual(len(self.notices), 2)
        self.assertTrue(self.exists())
        self.assertEqual([a.kind for a in self.at(183)], ["delete"])
        self.assertFalse(self.exists())
        self.assertNotIn(self.box.id, self.mail.mailboxes)
        audit = self.successResultOf(self.store.list_audit())
        self.assertEqual(audit[0][1:4], ("lifecycle", "mailbox.remove", "alice_u"))
        self.assertEqual(self.at(184), [])

    def test_login_the_day_before_resets_everything(self):
        """A login at T-1 cancels the deletion and re-arms both warnings."""
        self.at(153)
        self.at(176)
        self.clock.advance(self.created + 182 * DAY - self.clock.seconds())
        self.successResultOf(self.store.record_login(self.box.id, self.clock.seconds()))
        self.assertEqual(self.at(183), [])
        self.assertTrue(self.exists())
        # the next warnings count from the login
        self.assertEqual([a.kind for a in self.at(182 + 153)], ["warn"])
        self.assertEqual(len(self.notices), 3)

    def test_login_racing_the_deletion_wins(self):
        """If a login lands between the decision and the removal, nothing is removed."""
        real_list = self.store.list_mailboxes

        def list_then_login(customer_id=None):
            d = real_list(customer_id)

            def login(boxes):
                self.successResultOf(self.store.record_login(self.box.id, self.clock.seconds()))
                return boxes
            return d.addCallback(login)

        self.store.list_mailboxes = list_then_login
        self.assertEqual(self.at(200), [])
        self.assertTrue(self.exists())

    def test_dry_run_changes_nothing(self):
        """expire --dry-run lists what would happen and does nothing."""
        self.clock.advance(200 * DAY)
        actions = self.successResultOf(self.job.run_once(dry_run=True))
        self.assertEqual([(a.kind, a.mailbox.username) for a in actions],
                         [("delete", "alice_u")])
        self.assertTrue(self.exists())

    def test_timer_service_runs_the_job_on_the_clock(self):
        """The job's service runs it at start and then every hour, so the
        mailbox goes on the first run after its day."""
        svc = self.job.service()
        svc.startService()
        self.addCleanup(svc.stopService)
        self.clock.advance(self.created + 183 * DAY - 1 - self.clock.seconds())
        self.assertTrue(self.exists())
        self.clock.advance(3600)
        self.assertFalse(self.exists())
