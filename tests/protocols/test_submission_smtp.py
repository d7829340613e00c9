"""Authenticated submission (port 465), as transcripts: AUTH PLAIN and
LOGIN with their edge cases, nothing before AUTH, the sender and From:
checks, the hourly recipient limit on an injected clock, local delivery
without spam scanning and remote recipients."""

import base64

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from ktmail.config import Limits
from ktmail.services.auth import ThrottlePolicy
from ktmail.services.ratelimit import Window
from tests.protocols.fakes import (
    BOB,
    PASSWORD,
    FakeOutboundQueue,
    SubmissionWorld,
)
from tests.protocols.transcript import SMTPTranscript


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def plain(user, password=PASSWORD, authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


def message(sender="alice@brev.fi", to="bob@pikaposti.fi", subject="hi", extra=""):
    return (f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <m1@laptop>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0200\r\n{extra}\r\n"
            "Hello.\r\n")


class SubmissionTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.world = SubmissionWorld(self.clock, **self.world_options())

    def world_options(self):
        return {}

    def session(self, tls=True, **kwargs):
        s = SMTPTranscript(self, self.world.factory, tls=tls, **kwargs)
        return s

    def logged_in(self, user="alice_u"):
        s = self.session()
        s.send("EHLO laptop.example.org").expect("250 ")
        s.send(f"AUTH PLAIN {plain(user)}").expect("235 2.7.0")
        return s

    @property
    def delivered(self):
        return self.world.delivery.delivered


class Extensions(SubmissionTestCase):
    def test_ehlo_offers_auth_and_no_starttls(self):
        """465 advertises AUTH PLAIN LOGIN with SIZE, 8BITMIME, PIPELINING,
        ENHANCEDSTATUSCODES, and never STARTTLS (it is TLS already)."""
        ext = self.session().ehlo()
        self.assertEqual(ext["AUTH"], "AUTH PLAIN LOGIN")
        self.assertEqual(ext["SIZE"], "SIZE 52428800")
        for keyword in ("8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"):
            self.assertIn(keyword, ext)
        self.assertNotIn("STARTTLS", ext)
        self.logged_in().send("STARTTLS").expect("500 5.5.1")

    def test_no_auth_without_tls(self):
        """On a plain-text transport AUTH is neither offered nor accepted."""
        s = self.session(tls=False)
        self.assertNotIn("AUTH", s.ehlo())
        s.send(f"AUTH PLAIN {plain('alice_u')}").expect("538 5.7.11")

    def test_auth_not_offered_once_authenticated(self):
        """After AUTH the EHLO list no longer offers AUTH."""
        s = self.logged_in()
        self.assertNotIn("AUTH", s.ehlo())


class BeforeAuth(SubmissionTestCase):
    def test_only_greeting_commands_before_auth(self):
        """MAIL, RCPT, DATA, BDAT, VRFY before AUTH: 530 5.7.0; EHLO, HELO,
        NOOP, RSET, QUIT work."""
        s = self.session()
        s.send("EHLO laptop").expect("250 ")
        for command in ("MAIL FROM:<alice@brev.fi>", "RCPT TO:<bob@pikaposti.fi>", "DATA",
                        "VRFY alice", "HELP"):
            with self.subTest(command=command):
                s.send(command).expect("530 5.7.0")
        s.send_raw(b"BDAT 4\r\nQUIT").expect("530 5.7.0")
        s.send("NOOP").expect("250 2.0.0")
        s.send("RSET").expect("250 2.0.0")
        s.send("HELO laptop").expect("250 ")
        s.send("QUIT").expect("221 2.0.0")

    def test_auth_needs_ehlo(self):
        """AUTH before EHLO is out of sequence."""
        self.session().send(f"AUTH PLAIN {plain('alice_u')}").expect("503 5.5.1")


class Auth(SubmissionTestCase):
    def test_plain_with_initial_response(self):
        """AUTH PLAIN with the SASL initial response logs in (RFC 4954 §4)."""
        self.logged_in()

    def test_plain_without_initial_response(self):
        """AUTH PLAIN alone gets an empty 334 challenge, then the response."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH PLAIN").expect("334 ")
        self.assertEqual(s.last, "334 ")
        s.send(plain("alice_u")).expect("235 2.7.0")

    def test_login(self):
        """AUTH LOGIN asks for the username, then the password."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH LOGIN").expect("334 VXNlcm5hbWU6")
        s.send(b64("alice_u")).expect("334 UGFzc3dvcmQ6")
        s.send(b64(PASSWORD)).expect("235 2.7.0")

    def test_login_with_initial_response(self):
        """AUTH LOGIN <base64 username> goes straight to the password."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH LOGIN {b64('alice_u')}").expect("334 UGFzc3dvcmQ6")
        s.send(b64(PASSWORD)).expect("235 2.7.0")

    def test_mechanism_names_are_case_insensitive(self):
        """`auth plain` works like `AUTH PLAIN`."""
        s = self.session()
        s.send("ehlo x").expect("250 ")
        s.send(f"auth plain {plain('alice_u')}").expect("235 2.7.0")

    def test_wrong_password(self):
        """Wrong credentials: 535 5.7.8, and the session goes on."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice_u', 'wrong password')}").expect("535 5.7.8")
        s.send(f"AUTH PLAIN {plain('alice_u')}").expect("235 2.7.0")

    def test_address_is_not_the_username(self):
        """Logging in with the e-mail address instead of the username fails."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice@brev.fi')}").expect("535 5.7.8")

    def test_malformed_base64(self):
        """Data that is not base64 gets 501 5.5.2 and the session goes on."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH PLAIN !!!notbase64").expect("501 5.5.2")
        s.send("AUTH LOGIN").expect("334")
        s.send("###").expect("501 5.5.2")
        s.send("NOOP").expect("250 2.0.0")
        s.send(f"AUTH PLAIN {plain('alice_u')}").expect("235 2.7.0")

    def test_malformed_plain_message(self):
        """PLAIN data without the two NULs gets 501 5.5.2."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {b64('alice_u ' + PASSWORD)}").expect("501 5.5.2")
        not_utf8 = b64(b"alice_u\0alice_u\0\xff\xfe")
        s.send(f"AUTH PLAIN {not_utf8}").expect("501 5.5.2")

    def test_authzid(self):
        """An authorization identity equal to the username is accepted; any
        other is refused without trying the password (RFC 4616 §2)."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice_u', authzid='bob_u')}").expect("535 5.7.8")
        s.send(f"AUTH PLAIN {plain('alice_u', authzid='alice_u')}").expect("235 2.7.0")

    def test_cancel(self):
        """`*` cancels an exchange: 501 5.0.0 (RFC 4954 §4)."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH LOGIN").expect("334")
        s.send(b64("alice_u")).expect("334")
        s.send("*").expect("501 5.0.0")
        s.send("NOOP").expect("250 2.0.0")

    def test_empty_initial_response(self):
        """`=` is an empty initial response: a PLAIN blob with no NULs."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH PLAIN =").expect("501 5.5.2")

    def test_unknown_mechanism(self):
        """CRAM-MD5 and others: 504 5.5.4."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send("AUTH CRAM-MD5").expect("504 5.5.4")

    def test_auth_twice(self):
        """A second AUTH after success: 503 5.5.1."""
        self.logged_in().send(f"AUTH PLAIN {plain('bob_u')}").expect("503 5.5.1")

    def test_three_failures_close_the_session(self):
        """The third failed AUTH in one session ends it with 421 4.7.0."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice_u', 'bad one')}").expect("535")
        s.send(f"AUTH PLAIN {plain('alice_u', 'bad two')}").expect("535")
        s.send(f"AUTH PLAIN {plain('alice_u', 'bad three')}").expect("535").expect("421 4.7.0")
        self.assertTrue(s.closed)

    def test_login_is_recorded(self):
        """A successful AUTH records the mailbox's last login (inactivity)."""
        self.clock.advance(1000)
        self.logged_in()
        mailbox = self.world.store.get_mailbox_by_username("alice_u").result
        self.assertEqual(mailbox.last_login, 1000)

    def test_password_never_logged(self):
        """Neither a wrong nor a right password appears in any log event."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice_u', 'Sekr1t-wrong')}").expect("535")
        s.send(f"AUTH PLAIN {plain('alice_u')}").expect("235")
        self.assertTrue(events)
        for event in events:
            self.assertNotIn("Sekr1t", repr(event))
            self.assertNotIn(PASSWORD, repr(event))

    def test_pipelined_commands_wait_for_auth(self):
        """Commands pipelined after AUTH wait until the login is decided."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send_raw(f"AUTH PLAIN {plain('alice_u')}\r\nMAIL FROM:<alice@brev.fi>\r\n")
        s.expect("235 2.7.0").expect("250 2.1.0")


class Throttled(SubmissionTestCase):
    def world_options(self):
        return {"throttle": ThrottlePolicy(per_address=Window(2, 600), failure_delay=1.0)}

    def test_throttled_login(self):
        """After too many failures from one address: 454 4.7.0, even with the
        right password; failures wait out the delay on the injected clock."""
        s = self.session()
        s.send("EHLO x").expect("250 ")
        s.send(f"AUTH PLAIN {plain('alice_u', 'bad one')}").expect_nothing()
        self.clock.advance(1)
        s.expect("535 5.7.8")
        s.send(f"AUTH PLAIN {plain('alice_u', 'bad two')}")
        self.clock.advance(1)
        s.expect("535 5.7.8")
        other = self.session()
        other.send("EHLO x").expect("250 ")
        other.send(f"AUTH PLAIN {plain('alice_u')}").expect("454 4.7.0")
        self.clock.advance(601)   # the failures leave the window (sessions time out too)
        self.assertTrue(other.closed)
        self.logged_in()


class SenderChecks(SubmissionTestCase):
    def test_mail_from_must_be_own_address(self):
        """MAIL FROM another address: 553 5.7.1; the own address in any
        case, and the null sender, are accepted."""
        s = self.logged_in()
        s.send("MAIL FROM:<bob@pikaposti.fi>").expect("553 5.7.1")
        s.send("MAIL FROM:<alice@brev.fi.evil.example>").expect("553 5.7.1")
        s.send("MAIL FROM:<Alice@BREV.FI>").expect("250 2.1.0")
        s.send("RSET").expect("250")
        s.send("MAIL FROM:<>").expect("250 2.1.0")

    def test_from_header_must_be_own_address(self):
        """A From: header with another address: 550 5.7.1 at the end of DATA;
        nothing is delivered and no recipient is counted."""
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi"], message(sender="bob@pikaposti.fi"))
        s.expect("550 5.7.1")
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.world.store.events_since("sent-smtp:2", 0).result, [])

    def test_from_header_variants(self):
        """Display names are fine; two addresses, two From: fields or none
        are refused."""
        cases = [
            ("From: =?utf-8?q?Al=C3=AFce?= <ALICE@brev.fi>\r\n", "250 2.0.0"),
            ("From: alice@brev.fi\r\n", "250 2.0.0"),
            ("From: \"bob@pikaposti.fi\" <alice@brev.fi>\r\n", "250 2.0.0"),
            ("From: alice@brev.fi, bob@pikaposti.fi\r\n", "550 5.7.1"),
            ("From: alice@brev.fi\r\nFrom: bob@pikaposti.fi\r\n", "550 5.7.1"),
            ("From: Alice <bob@pikaposti.fi>\r\n", "550 5.7.1"),
            ("Subject: no from\r\n", "550 5.7.1"),
            ("From: undisclosed:;\r\n", "550 5.7.1"),
        ]
        for header, answer in cases:
            with self.subTest(header=header):
                s = self.logged_in()
                s.message("alice@brev.fi", ["bob@pikaposti.fi"],
                          header + "Subject: t\r\n\r\nbody\r\n")
                s.expect(answer)


class Delivery(SubmissionTestCase):
    def test_local_recipient_without_spam_scan(self):
        """A message to a hosted mailbox is delivered directly, unscanned,
        with an ESMTPSA Received: line and the authenticated mailbox in the
        envelope."""
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi"], message()).expect("250 2.0.0")
        [delivered] = self.delivered
        self.assertFalse(delivered.scan_spam)
        self.assertEqual(delivered.envelope.recipients, (BOB.address,))
        self.assertEqual(delivered.envelope.authenticated.username, "alice_u")
        self.assertEqual(delivered.envelope.protocol, "ESMTPSA")
        self.assertIn(b"with ESMTPSA id", delivered.message)
        self.assertIn(b"(using TLSv1.3 with cipher", delivered.message)
        self.assertNotIn(b"alice_u", delivered.message)   # the login name stays private

    def test_unknown_local_recipient(self):
        """A hosted address without a mailbox: 550 5.1.1 at RCPT."""
        s = self.logged_in()
        s.send("MAIL FROM:<alice@brev.fi>").expect("250")
        s.send("RCPT TO:<nobody@brev.fi>").expect("550 5.1.1")

    def test_remote_recipient_without_outbound_queue(self):
        """With no outbound queue running, a remote recipient is refused
        temporarily (451 4.3.2), never accepted and dropped."""
        s = self.logged_in()
        s.send("MAIL FROM:<alice@brev.fi>").expect("250")
        s.send("RCPT TO:<friend@example.org>").expect("451 4.3.2")

    def test_remote_recipient_is_queued(self):
        """With an outbound queue, remote recipients are queued (case of the
        local part kept) and local ones delivered, from one spool."""
        self.world = SubmissionWorld(self.clock, outbound=FakeOutboundQueue())
        s = self.logged_in()
        s.message("alice@brev.fi", ["Friend@Example.org", "bob@pikaposti.fi"],
                  message()).expect("250 2.0.0")
        [queued] = self.world.outbound.queued
        self.assertEqual([str(a) for a in queued.envelope.recipients], ["Friend@example.org"])
        self.assertEqual(self.delivered[0].envelope.recipients, (BOB.address,))
        self.assertEqual(queued.message, self.delivered[0].message)

    def test_address_literal_recipient(self):
        """Address literals are refused as recipients: 553 5.1.3."""
        s = self.logged_in()
        s.send("MAIL FROM:<alice@brev.fi>").expect("250")
        s.send("RCPT TO:<x@[192.0.2.1]>").expect("553 5.1.3")

    def test_header_fields_are_kept_as_written(self):
        """Submission stores the message as written, X-Spam-* fields too
        (only the MX leaves a sender's out: no spam verdict is made here)."""
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi"],
                  message(extra="X-Spam-Flag: NO\r\n")).expect("250 2.0.0")
        self.assertIn(b"\r\nX-Spam-Flag: NO\r\n", self.delivered[0].message)

    def test_message_id_and_date_added_when_missing(self):
        """A message without Message-ID: and Date: gets both, right after
        Received:; a message with them is left alone."""
        self.clock.advance(1795737600)
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi"],
                  "From: alice@brev.fi\r\nSubject: bare\r\n\r\nbody\r\n").expect("250 2.0.0")
        stored = self.delivered[0].message
        head = stored.split(b"\r\n\r\n")[0]
        self.assertRegex(head, rb"\r\nMessage-ID: <[0-9a-f]{32}@mail\.example\.test>\r\n"
                               rb"Date: Fri, 27 Nov 2026 00:00:00 \+0000\r\nFrom: alice")
        s.message("alice@brev.fi", ["bob@pikaposti.fi"], message()).expect("250 2.0.0")
        stored = self.delivered[1].message
        self.assertEqual(stored.count(b"Message-ID:"), 1)
        self.assertEqual(stored.count(b"\r\nDate:"), 1)


class RateLimit(SubmissionTestCase):
    def world_options(self):
        return {"limits": Limits(smtp_recipients_per_hour=3)}

    def send(self, s, recipients):
        s.send("MAIL FROM:<alice@brev.fi>").expect("250")
        for rcpt in recipients:
            s.send(f"RCPT TO:<{rcpt}>")

    def test_recipient_over_the_hourly_limit(self):
        """With 3 recipients per hour: the 4th recipient in the rolling hour
        gets 451 4.7.1 saying when sending works again; an hour after the
        first message it works."""
        self.clock.advance(1795737600)
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi", "postmaster@brev.fi"],
                  message()).expect("250 2.0.0")
        self.clock.advance(600)
        s = self.logged_in()
        self.send(s, ["bob@pikaposti.fi", "postmaster@brev.fi"])
        s.expect("250 2.1.5").expect("451 4.7.1")
        self.assertIn("at 01:00 UTC (in 50 minutes)", s.last)
        s.send("DATA").expect("354")
        s.send_raw(message() + ".\r\n").expect("250 2.0.0")
        self.send(s, ["bob@pikaposti.fi"])
        s.expect("451 4.7.1")
        s.send("RSET").expect("250")
        self.clock.advance(3000)    # the first message's two recipients leave the window
        s = self.logged_in()
        self.send(s, ["bob@pikaposti.fi", "postmaster@brev.fi", "alice@brev.fi"])
        s.expect("250 2.1.5").expect("250 2.1.5").expect("451 4.7.1")

    def test_limit_is_per_mailbox(self):
        """Another mailbox has its own hour."""
        s = self.logged_in()
        s.message("alice@brev.fi", ["bob@pikaposti.fi"] * 1 + ["postmaster@brev.fi",
                                                               "alice@brev.fi"], message())
        s.expect("250 2.0.0")
        s = self.logged_in("bob_u")
        s.send("MAIL FROM:<bob@pikaposti.fi>").expect("250")
        s.send("RCPT TO:<alice@brev.fi>").expect("250 2.1.5")

    def test_duplicate_recipient_counts_once(self):
        """The same recipient twice in a message is one recipient."""
        s = self.logged_in()
        self.send(s, ["bob@pikaposti.fi"] * 5)
        for _ in range(5):
            s.expect("250 2.1.5")

    def test_concurrent_sessions_never_exceed(self):
        """Two sessions that each got RCPT approval for 2 recipients: the
        second message to end is refused at DATA with 451 4.7.1, so the
        hour's count stays at 3 at most."""
        first, second = self.logged_in(), self.logged_in()
        for s in (first, second):
            self.send(s, ["bob@pikaposti.fi", "postmaster@brev.fi"])
            s.expect("250 2.1.5").expect("250 2.1.5")
            s.send("DATA").expect("354")
        first.send_raw(message() + ".\r\n").expect("250 2.0.0")
        second.send_raw(message() + ".\r\n").expect("451 4.7.1")
        self.assertEqual(len(self.delivered), 1)
