"""The session store: expiry on an injected clock, rotation, bounded size."""

from twisted.internet import task
from twisted.trial import unittest

from ktmail.web.sessions import CUSTOMER, MAILBOX, SessionPolicy, SessionStore


class SessionStoreTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = SessionStore(self.clock, SessionPolicy(
            idle_seconds=600, lifetime_seconds=3600, max_sessions=5, max_per_account=2))

    def test_idle_and_absolute_expiry(self):
        """Use keeps a session alive until its lifetime; idleness ends it."""
        s = self.store.create(CUSTOMER, "kund1001", 1)
        self.clock.advance(599)
        self.assertIs(self.store.get(s.id, CUSTOMER), s)
        self.clock.advance(599)
        self.assertIs(self.store.get(s.id, CUSTOMER), s)
        self.clock.advance(601)
        self.assertIsNone(self.store.get(s.id, CUSTOMER))
        self.assertEqual(len(self.store), 0)
        s = self.store.create(CUSTOMER, "kund1001", 1)
        for _ in range(6):
            self.clock.advance(590)
            self.assertIs(self.store.get(s.id, CUSTOMER), s)
        self.clock.advance(200)
        self.assertIsNone(self.store.get(s.id, CUSTOMER))

    def test_rotation_drops_the_old_id(self):
        old = self.store.create(CUSTOMER, "kund1001", 1)
        new = self.store.create(CUSTOMER, "kund1001", 1, replacing=old.id)
        self.assertNotEqual(old.id, new.id)
        self.assertIsNone(self.store.get(old.id, CUSTOMER))
        self.assertNotEqual(new.csrf_token, old.csrf_token)

    def test_kinds_do_not_mix(self):
        s = self.store.create(MAILBOX, "alice_u", 7)
        self.assertIsNone(self.store.get(s.id, CUSTOMER))
        self.assertIsNone(self.store.get(None, MAILBOX))
        self.assertIsNone(self.store.get("", MAILBOX))

    def test_bounded_size(self):
        """At most max_per_account per account and max_sessions in all: the
        least recently used go first."""
        a = self.store.create(CUSTOMER, "a", 1)
        self.clock.advance(1)
        b = self.store.create(CUSTOMER, "a", 1)
        self.clock.advance(1)
        c = self.store.create(CUSTOMER, "a", 1)
        self.assertIsNone(self.store.get(a.id, CUSTOMER))
        self.assertIsNotNone(self.store.get(b.id, CUSTOMER))
        self.assertIsNotNone(self.store.get(c.id, CUSTOMER))
        others = [self.store.create(MAILBOX, f"m{i}", i) for i in range(4)]
        self.assertEqual(len(self.store), 5)
        self.assertIsNone(self.store.get(b.id, CUSTOMER))
        self.assertTrue(all(self.store.get(o.id, MAILBOX) for o in others))

    def test_destroy_account_and_sweep(self):
        keep = self.store.create(CUSTOMER, "a", 1)
        self.store.create(CUSTOMER, "a", 1)
        self.assertEqual(self.store.destroy_account(CUSTOMER, "a", keep=keep.id), 1)
        self.assertIs(self.store.get(keep.id, CUSTOMER), keep)
        self.clock.advance(700)
        self.assertEqual(self.store.sweep(), 1)
        self.assertEqual(len(self.store), 0)

    def test_tokens(self):
        """CSRF and login tokens are HMACs: right one accepted, others not."""
        s = self.store.create(CUSTOMER, "a", 1)
        self.assertTrue(self.store.check_csrf(s, s.csrf_token))
        self.assertFalse(self.store.check_csrf(s, s.id))
        self.assertFalse(self.store.check_csrf(s, None))
        nonce = self.store.new_login_nonce()
        self.assertTrue(self.store.check_login_token(nonce, self.store.login_token(nonce)))
        self.assertFalse(self.store.check_login_token(nonce, self.store.login_token("x")))
        self.assertFalse(self.store.check_login_token(None, self.store.login_token(nonce)))
        other = SessionStore(self.clock)
        self.assertFalse(other.check_login_token(nonce, self.store.login_token(nonce)))
