"""``ktmail-admin expire [--dry-run]``: runs every retention job once and
lists what went (or would go)."""

import io

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import cli
from ktmail.config import Limits
from ktmail.model import SPAM_FOLDER, Address
from ktmail.services.retention import DAY, SpamExpiryJob
from ktmail.store.memory import MemoryStore
from tests.services.test_retention import FakeFolders


@attrs.define
class FakeCore:
    retention_jobs: list


class ExpireCommandTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000 * DAY)
        self.accounts = MemoryStore()
        customer = self.successResultOf(self.accounts.add_customer("asiakas", "h", 0))
        self.box = self.successResultOf(self.accounts.add_mailbox(
            customer.id, "matti", Address("matti", "sboksi.fi"), "h", 10**9, 0, 5))
        self.folders = FakeFolders()
        self.folders.put(self.box.id, SPAM_FOLDER, 4, self.clock.seconds() - 70 * DAY)
        self.folders.put(self.box.id, SPAM_FOLDER, 9, self.clock.seconds() - 61 * DAY)
        self.folders.put(self.box.id, SPAM_FOLDER, 12, self.clock.seconds() - DAY)
        self.core = FakeCore([SpamExpiryJob(self.accounts, self.folders, Limits(), self.clock)])

    def run_expire(self, dry_run):
        out = io.StringIO()
        self.successResultOf(defer.Deferred.fromCoroutine(cli.expire(self.core, dry_run, out)))
        return out.getvalue()

    def test_dry_run_lists_and_keeps(self):
        """--dry-run names the mailbox, folder and UIDs that would go, and keeps them."""
        self.assertEqual(self.run_expire(True),
                         "spam\tmatti\tSpam\twould delete 2 messages (UIDs 4 9)\n"
                         "spam: would delete 2 messages in 1 mailboxes\n")
        self.assertEqual(sorted(self.folders.messages[self.box.id, SPAM_FOLDER]), [4, 9, 12])

    def test_run_deletes_then_nothing_left(self):
        """A real run deletes; a second run finds nothing."""
        self.assertIn("deleted 2 messages (UIDs 4 9)", self.run_expire(False))
        self.assertEqual(sorted(self.folders.messages[self.box.id, SPAM_FOLDER]), [12])
        self.assertEqual(self.run_expire(False), "spam: deleted 0 messages in 0 mailboxes\n")

    def test_no_jobs_is_refused(self):
        """Without any retention job the command is refused with a reason."""
        d = defer.Deferred.fromCoroutine(cli.expire(FakeCore([]), True, io.StringIO()))
        self.assertIn("no retention job", str(self.failureResultOf(d, cli.Refused).value))
