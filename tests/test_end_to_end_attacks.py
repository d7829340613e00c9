"""Attacks on a real ``twistd ktmail`` (the drivers and the figures are
bench/attack_bench.py's): a thousand wrong passwords over every protocol
from one address while the owner logs in from another, and five hundred
slow connections on every listener while the owner logs in.

"Another address" is another loopback address (Linux routes all of
127.0.0.0/8 to lo); only 127.0.0.1 and ::1 are exempt from the
per-client connection caps by default.
"""

from twisted.trial import unittest

from bench.attack_bench import (
    OK,
    PROTOCOLS,
    THROTTLED,
    BruteForce,
    Slowloris,
    daemon_for_attacks,
    one_address_flood,
)
from ktmail.config import Limits
from tests import e2e


class AttackTestCase(unittest.TestCase):
    limits = {}

    @property
    def daemon(self):
        cls = type(self)
        if cls not in e2e._shared:
            e2e._shared[cls] = daemon_for_attacks(self.mktemp(), **self.limits)
        return e2e._shared[cls]


class BruteForceTests(AttackTestCase):
    def test_a_thousand_wrong_passwords(self):
        """1,000 wrong passwords for alice_u from 127.0.0.2, over IMAP, POP3,
        SMTP AUTH and the webmail at once: only the first ten or so are
        checked at all (each answered after a one-second delay), every
        later one is refused unheard on every protocol, even the right
        password; meanwhile alice logs in from 127.0.0.1 over all four,
        every time, promptly."""
        run = BruteForce(self.daemon, attempts=1000).run()
        outcomes = [outcome for _, outcome, _ in run.outcomes]
        self.assertEqual(len(outcomes), 1000)
        self.assertNotIn(OK, outcomes)
        # 10 failures per address and 10 minutes; up to 3 more were in flight
        self.assertLessEqual(run.checked(), 13)
        self.assertGreaterEqual(run.checked(), 10)
        for cls in PROTOCOLS:
            self.assertIn((cls.name, THROTTLED), {(p, o) for p, o, _ in run.outcomes})
        # the checked ones were slowed: ten answers, one second each, four at a time
        self.assertGreater(run.first_refusal(), 2.0)
        self.assertEqual(set(run.correct_password_after.values()), {THROTTLED})
        owner = [(name, outcome) for name, outcome, _ in run.legit_logins]
        self.assertGreaterEqual(len(owner), 4)
        self.assertEqual({outcome for _, outcome in owner}, {OK}, owner)
        self.assertLess(max(t for _, _, t in run.legit_logins), 5.0)


class SlowlorisTests(AttackTestCase):
    limits = {"tls_handshake_timeout": 5, "web_idle_timeout": 10}

    def test_five_hundred_slow_connections(self):
        """500 connections from 20 addresses, 100 on each listener, half
        silent and half sending a byte now and then: the owner logs in over
        IMAP, POP3, SMTP and the webmail while they are held open; the TLS
        listeners drop theirs at the handshake deadline and the web its
        own at the request-head deadline."""
        run = Slowloris(self.daemon, connections=500).run(
            wait_for=("imap", "pop3", "submission", "web"), timeout=40)
        self.addCleanup(run.close)
        self.assertGreaterEqual(run.held_at_login, 480)
        self.assertGreaterEqual(run.still_held_after_login, 400)
        self.assertEqual([outcome for _, outcome, _ in run.legit_logins], [OK] * 4,
                         run.legit_logins)
        self.assertLess(max(t for _, _, t in run.legit_logins), 5.0)
        self.assertEqual(run.left_open, 0)
        for name in ("imap", "pop3", "submission"):
            self.assertLess(max(run.lifetimes[name]), 5 + 4, name)
        self.assertLess(max(run.lifetimes["web"]), 10 + 4)

    def test_one_address_gets_its_share_only(self):
        """500 connections to IMAP from one address: the first
        imap_connections_per_client are held, the rest closed at once."""
        held, refused = one_address_flood(self.daemon, "imap", 500)
        self.assertEqual(held, Limits().imap_connections_per_client)
        self.assertEqual(refused, 500 - held)
