"""Customers and mailboxes through the one service the CLI and portal use."""

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.config import DEFAULT_DOMAINS, Limits
from ktmail.services.accounts import AccountService
from ktmail.store.memory import MemoryStore
from tests.services.fakes import RecordingMailStore, fast_hasher

PW = "correct horse 7"


class AccountServiceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000)
        self.store = MemoryStore()
        self.mail = RecordingMailStore()
        self.removed = []
        self.service = AccountService(self.store, self.mail, self.store, fast_hasher(),
                                      DEFAULT_DOMAINS, Limits(), self.clock,
                                      removal_hooks=[self.removed.append])
        self.successResultOf(self.service.add_customer("Kund1001", PW, "test"))

    def add(self, username, address, password=PW, customer="kund1001"):
        return self.service.add_mailbox(customer, username, address, password, "test")

    def test_five_mailboxes_then_refused(self):
        """A customer gets five mailboxes; the sixth is refused with a reason."""
        for i in range(5):
            m = self.successResultOf(self.add(f"user{i}", f"user{i}@sboksi.fi"))
            self.assertIn(m.id, self.mail.mailboxes)
        e = self.failureResultOf(self.add("user5", "user5@sboksi.fi"), errors.LimitReached)
        self.assertIn("5", e.value.text)

    def test_address_rules(self):
        """Addresses are lower-cased dot-atoms on a hosted domain, max 64."""
        m = self.successResultOf(self.add("alice_u", "Alice.Smith@BREV.fi"))
        self.assertEqual(str(m.address), "alice.smith@brev.fi")
        for bad, field in (("x@example.com", "domain"), ("a..b@brev.fi", "local_part"),
                           (".a@brev.fi", "local_part"), ("a b@brev.fi", "local_part"),
                           ("x" * 65 + "@brev.fi", "local_part"), ("nodomain", "address")):
            e = self.failureResultOf(self.add("bob_u", bad), errors.ValidationError).value
            self.assertEqual(e.field, field, bad)

    def test_username_and_password_rules(self):
        """Usernames follow USERNAME_RULES (not an address); passwords have a
        minimum length."""
        for bad in ("a", "alice@brev.fi", "1abc", "x" * 33, "bad name"):
            e = self.failureResultOf(self.add(bad, "a@brev.fi"), errors.ValidationError).value
            self.assertEqual(e.field, "username", bad)
        e = self.failureResultOf(self.add("alice_u", "a@brev.fi", password="short"),
                                 errors.ValidationError).value
        self.assertEqual(e.field, "password")

    def test_unknown_customer(self):
        self.failureResultOf(self.add("alice_u", "a@brev.fi", customer="nobody"),
                             errors.NoSuchCustomer)

    def test_failed_maildir_creation_leaves_no_account(self):
        """If the Maildir cannot be made, the account is rolled back."""
        self.mail.fail_create = True
        self.failureResultOf(self.add("alice_u", "a@brev.fi"), OSError)
        self.failureResultOf(self.store.get_mailbox_by_username("alice_u"),
                             errors.NoSuchMailbox)

    @defer.inlineCallbacks
    def test_remove_mailbox_removes_maildir_runs_hooks_and_audits(self):
        """Removing a mailbox deletes its Maildir, runs the clean-up hooks
        (learned spam data, sessions) and writes the audit log."""
        m = yield self.add("alice_u", "a@brev.fi")
        yield self.service.remove_mailbox("alice_u", "operator", "by operator")
        self.assertNotIn(m.id, self.mail.mailboxes)
        self.assertEqual(self.removed, [m])
        audit = yield self.store.list_audit()
        self.assertEqual(audit[0][1:4], ("operator", "mailbox.remove", "alice_u"))
        self.assertIn("a@brev.fi", audit[0][4])
        # the address is free again
        yield self.add("alice2_u", "a@brev.fi")

    @defer.inlineCallbacks
    def test_remove_customer_removes_every_mailbox(self):
        yield self.add("alice_u", "a@brev.fi")
        yield self.add("bob_u", "b@brev.fi")
        removed = yield self.service.remove_customer("kund1001", "operator")
        self.assertEqual(sorted(m.username for m in removed), ["alice_u", "bob_u"])
        self.assertEqual(self.mail.mailboxes, set())
        self.assertEqual((yield self.store.list_mailboxes()), [])

    @defer.inlineCallbacks
    def test_password_change_is_hashed_and_audited(self):
        m = yield self.add("alice_u", "a@brev.fi")
        old = (yield self.store.mailbox_password_hash("alice_u"))[1]
        yield self.service.set_mailbox_password("alice_u", "another long one", "portal")
        new = (yield self.store.mailbox_password_hash("alice_u"))[1]
        self.assertNotEqual(old, new)
        self.assertTrue(new.startswith("$argon2id$"))
        self.assertNotIn("another long one", repr((yield self.store.list_audit())))
        self.assertEqual(m.username, "alice_u")
