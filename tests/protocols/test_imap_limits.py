"""IMAP limits: sessions per mailbox, the header section of APPENDed
messages, and the idle timers (RFC 3501 §5.4) against a trickling client."""

from twisted.trial import unittest

from ktmail.mime import HeaderLimits
from tests.protocols.imap_harness import IMAPHarness


class SessionsPerMailbox(unittest.TestCase):
    def test_one_more_than_the_cap_is_refused(self):
        """With imap_sessions_per_mailbox = 2, a third login to the same
        mailbox gets NO [LIMIT] and stays unauthenticated; when one session
        ends, a new login works."""
        imap = IMAPHarness(self, sessions_per_mailbox=2)
        first = imap.connect(login=True)
        imap.connect(login=True)
        third = imap.connect()
        r = third.command('a LOGIN alice_u "correct horse 7"').no("LIMIT")
        self.assertIn(b"Too many IMAP sessions", r.tagged)
        third.command("b SELECT INBOX").bad()
        first.command("z LOGOUT").ok()
        first.protocol.connectionLost(None)
        third.login()
        third.select()

    def test_a_failed_login_is_not_counted(self):
        """Only logged-in sessions count: wrong passwords and sessions that
        never log in take no place."""
        imap = IMAPHarness(self, sessions_per_mailbox=1)
        for _ in range(3):
            imap.connect().command('a LOGIN alice_u "wrong"').no("AUTHENTICATIONFAILED")
        imap.connect(login=True)
        self.assertEqual(dict(imap.factory.sessions), {imap.mailbox.id: 1})


class AppendHeaderLimits(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self, header_limits=HeaderLimits(max_bytes=2048,
                                                                 max_fields=20))
        self.c = self.imap.connect(login=True)

    def append(self, message):
        return self.c.command(b"A APPEND INBOX {%d}" % len(message), literals=[message + b"\r\n"])

    def test_too_many_fields(self):
        """An APPENDed message with more header fields than max_header_fields
        is refused NO [LIMIT] and not stored."""
        message = b"".join(b"X-F%d: v\r\n" % i for i in range(21)) + b"\r\nbody\r\n"
        r = self.append(message).no("LIMIT")
        self.assertIn(b"more than 20 header fields", r.tagged)
        self.c.select().has("* 0 EXISTS")

    def test_header_too_big_in_a_spooled_literal(self):
        """A large APPEND (streamed to a spool file) whose header section is
        over max_header_bytes is refused NO [LIMIT]; a large message with a
        small header is stored."""
        big_header = b"Subject: " + b"x" * 3000 + b"\r\n\r\n" + b"y" * 100_000 + b"\r\n"
        self.append(big_header).no("LIMIT")
        fine = b"Subject: fine\r\n\r\n" + b"y" * 100_000 + b"\r\n"
        self.append(fine).ok("APPENDUID")
        self.c.select().has("* 1 EXISTS")


class Timeouts(unittest.TestCase):
    def test_a_byte_a_minute_before_login(self):
        """Before login the timer runs per line: a client trickling a byte
        a minute is logged out after imap_login_timeout all the same."""
        imap = IMAPHarness(self, login_timeout=60)
        c = imap.connect()
        for byte in b"a1 NOO":
            c.send_raw(bytes([byte]))
            imap.clock.advance(9)
        self.assertFalse(c.closed)
        imap.clock.advance(7)
        self.assertTrue(c.closed)
        self.assertIn(b"* BYE Autologout", c.transport.value())

    def test_configured_idle_timeout_after_login(self):
        """After login the configured idle timeout applies (at least 30
        minutes, RFC 3501 §5.4: the config refuses less)."""
        imap = IMAPHarness(self, idle_timeout=3600)
        c = imap.connect(login=True)
        imap.clock.advance(3599)
        self.assertFalse(c.closed)
        c.command("n NOOP").ok()
        imap.clock.advance(3599)
        self.assertFalse(c.closed)
        imap.clock.advance(2)
        self.assertTrue(c.closed)
