"""``ktmail-admin expire [--dry-run]``: runs every retention job once and
lists what went (or would go)."""

import io

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import cli
from ktmail.config import DEFAULT_DOMAINS, Limits
from ktmail.model import SPAM_FOLDER, Address
from ktmail.services.accounts import AccountService
from ktmail.services.retention import (
    DAY,
    InactivityJob,
    InactivityPolicy,
    SpamExpiryJob,
)
from ktmail.store.memory import MemoryStore
from tests.services.fakes import RecordingMailStore, fast_hasher
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
        d70, d61 = (cli._day(self.clock.seconds() - n * DAY) for n in (70, 61))
        self.assertEqual(self.run_expire(True),
                         "spam\tmatti\tSpam\twould delete 2 messages, UIDs (arrived): "
                         f"4 ({d70}), 9 ({d61})\n"
                         "spam: would delete 2 messages in 1 mailboxes\n")
        self.assertEqual(sorted(self.folders.messages[self.box.id, SPAM_FOLDER]), [4, 9, 12])

    def test_run_deletes_then_nothing_left(self):
        """A real run deletes; a second run finds nothing."""
        self.assertIn("deleted 2 messages, UIDs (arrived): 4 (", self.run_expire(False))
        self.assertEqual(sorted(self.folders.messages[self.box.id, SPAM_FOLDER]), [12])
        self.assertEqual(self.run_expire(False), "spam: deleted 0 messages in 0 mailboxes\n")

    def test_inactive_mailboxes_are_listed_with_their_dates(self):
        """The inactivity job's dry run names the mailbox that would go and
        the one that would be warned, with the dates."""
        customer = self.successResultOf(self.accounts.add_customer("kund", "h", 0))
        recent = self.successResultOf(self.accounts.add_mailbox(
            customer.id, "liisa", Address("liisa", "brev.fi"), "h", 1, 0, 5))
        self.successResultOf(self.accounts.record_login(
            recent.id, self.clock.seconds() - 160 * DAY))
        service = AccountService(self.accounts, RecordingMailStore(), self.accounts,
                                 fast_hasher(), DEFAULT_DOMAINS, Limits(), self.clock)
        job = InactivityJob(service, lambda *a: defer.succeed(None), self.clock,
                            InactivityPolicy(), "mail.example.test")
        out = io.StringIO()
        self.successResultOf(defer.Deferred.fromCoroutine(
            cli.expire(FakeCore([job]), True, out)))
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "inactivity\tliisa\tliisa@brev.fi\twould warn: deleted on "
                         f"{cli._day(self.clock.seconds() + 23 * DAY)} unless someone logs in "
                         f"(last login {cli._day(self.clock.seconds() - 160 * DAY)}, "
                         f"created {cli._day(0)})")
        self.assertEqual(lines[1], "inactivity\tmatti\tmatti@sboksi.fi\twould delete the "
                         f"mailbox (last login never, created {cli._day(0)})")
        self.assertEqual(lines[2], "inactivity: would delete 1 mailboxes, would warn 1")
        self.assertEqual(len(self.successResultOf(self.accounts.list_mailboxes())), 2)
