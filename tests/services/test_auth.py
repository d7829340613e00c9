"""Logins for every surface, and the shared failed-login throttle."""

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import Address
from ktmail.services.auth import (
    AuthService,
    LoginThrottle,
    ThrottlePolicy,
    _verify,
    client_key,
)
from ktmail.services.ratelimit import Window
from ktmail.store.memory import MemoryStore
from tests.services.fakes import fast_hasher

PW = "correct horse 7"


class PasswordHashTests(unittest.TestCase):
    def test_argon2id_hash_verifies_and_is_salted(self):
        """Hashes are argon2id, salted (two hashes differ), and verify only
        the right password; a malformed hash never raises."""
        hasher = fast_hasher()
        h1 = self.successResultOf(hasher.hash(PW))
        h2 = self.successResultOf(hasher.hash(PW))
        self.assertTrue(h1.startswith("$argon2id$"))
        self.assertNotEqual(h1, h2)
        self.assertTrue(self.successResultOf(hasher.verify(h1, PW)))
        self.assertFalse(self.successResultOf(hasher.verify(h1, PW + "x")))
        self.assertFalse(_verify("not a hash", PW))
        self.assertFalse(self.successResultOf(hasher.verify(None, PW)))


class ClientKeyTests(unittest.TestCase):
    def test_ipv6_is_throttled_per_64(self):
        """One IPv6 host owns a /64; mapped IPv4 is the IPv4 address."""
        self.assertEqual(client_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(client_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(client_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(client_key(""), "unknown")


class AuthServiceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.store = MemoryStore()
        self.hasher = fast_hasher()
        policy = ThrottlePolicy(per_address=Window(3, 600), per_username=Window(5, 900),
                                failure_delay=1.0)
        self.auth = AuthService(self.store, self.hasher,
                                LoginThrottle(self.store, self.clock, policy), self.clock)
        h = self.successResultOf(self.hasher.hash(PW))
        customer = self.successResultOf(self.store.add_customer("kund", h, 0.0))
        self.mailbox = self.successResultOf(self.store.add_mailbox(
            customer.id, "alice_u", Address("alice", "brev.fi"), h, 100, 0.0, 5))

    def fail_once(self, name, password, address):
        """Attempt a login that must fail after the failure delay."""
        d = self.auth.authenticate_mailbox(name, password, address, "imap")
        self.assertNoResult(d)  # the answer to a failure is delayed
        self.clock.advance(1.0)
        return self.failureResultOf(d).value

    def test_mailbox_login_records_last_login(self):
        """A right password returns the mailbox and records the login time;
        the username is case-insensitive."""
        got = self.successResultOf(
            self.auth.authenticate_mailbox("Alice_U", PW, "192.0.2.1", "imap"))
        self.assertEqual(got.id, self.mailbox.id)
        stored = self.successResultOf(self.store.get_mailbox(self.mailbox.id))
        self.assertEqual(stored.last_login, self.clock.seconds())

    def test_wrong_password_and_unknown_user_look_the_same(self):
        """Both give AuthFailed with the same text, after the same delay."""
        e1 = self.fail_once("alice_u", "nope", "192.0.2.1")
        e2 = self.fail_once("nobody", PW, "192.0.2.2")
        self.assertIsInstance(e1, errors.AuthFailed)
        self.assertEqual(e1.text, e2.text)

    def test_customer_and_mailbox_credentials_do_not_cross(self):
        """The customer's credentials never open mail, nor the mailbox's the portal."""
        self.assertIsInstance(self.fail_once("kund", PW, "192.0.2.1"), errors.AuthFailed)
        d = self.auth.authenticate_customer("alice_u", PW, "192.0.2.1")
        self.clock.advance(1.0)
        self.assertIsInstance(self.failureResultOf(d).value, errors.AuthFailed)
        d = self.auth.authenticate_customer("kund", PW, "192.0.2.1")
        self.assertEqual(self.successResultOf(d).login, "kund")
        # the email address is not the username
        self.assertIsInstance(self.fail_once("alice@brev.fi", PW, "192.0.2.9"),
                              errors.AuthFailed)

    def test_address_throttle_refuses_then_recovers(self):
        """After 3 failures from one address (this policy), even the right
        password is refused from it, while another address logs in; the
        window passes and the address may try again."""
        for _ in range(3):
            self.fail_once("alice_u", "wrong", "198.51.100.7")
        d = self.auth.authenticate_mailbox("alice_u", PW, "198.51.100.7", "pop3")
        e = self.failureResultOf(d).value
        self.assertIsInstance(e, errors.LoginThrottled)
        self.assertTrue(e.temporary)
        self.assertTrue(0 < e.retry_after <= 600)
        self.successResultOf(self.auth.authenticate_mailbox("alice_u", PW, "192.0.2.50", "web"))
        self.clock.advance(601)
        self.successResultOf(self.auth.authenticate_mailbox("alice_u", PW, "198.51.100.7",
                                                            "imap"))

    def test_username_throttle_across_addresses(self):
        """Failures for one username from many addresses add up (5 here)."""
        for i in range(5):
            self.fail_once("alice_u", "wrong", f"203.0.113.{i}")
        d = self.auth.authenticate_mailbox("alice_u", PW, "203.0.113.99", "smtp")
        self.assertIsInstance(self.failureResultOf(d).value, errors.LoginThrottled)
        self.clock.advance(901)
        self.successResultOf(self.auth.authenticate_mailbox("alice_u", PW, "203.0.113.99",
                                                            "smtp"))

    def test_throttle_is_shared_by_every_protocol(self):
        """Failures over IMAP, POP3 and SMTP count against the same address."""
        for protocol in ("imap", "pop3", "smtp"):
            d = self.auth.authenticate_mailbox("alice_u", "x", "192.0.2.77", protocol)
            self.clock.advance(1.0)
            self.failureResultOf(d, errors.AuthFailed)
        d = self.auth.authenticate_customer("kund", PW, "192.0.2.77")
        self.failureResultOf(d, errors.LoginThrottled)

    @defer.inlineCallbacks
    def test_oversized_password_is_refused_without_hashing(self):
        """A megabyte password is a failure, not a denial of service."""
        d = self.auth.authenticate_mailbox("alice_u", "x" * 1_000_000, "192.0.2.3", "imap")
        self.clock.advance(1.0)
        yield self.assertFailure(d, errors.AuthFailed)
