"""POP3 transcripts (RFC 1939, RFC 2449, RFC 5034, RFC 3206) against the
real auth and maildrop services over the in-memory stores."""

import base64
import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import FLAGS_ADD, SEEN
from ktmail.protocols.pop3 import (
    CAPABILITIES,
    DotStuffer,
    TopFilter,
    message_chunks,
    pop3_error_text,
)
from tests.protocols.pop3_transcript import PASSWORD, POP3Fixture, unstuff


def plain(authzid, user, password):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


MESSAGE_1 = b"From: a@example.org\r\nSubject: one\r\n\r\nFirst body.\r\n"
MESSAGE_2 = (b"From: b@example.org\r\nSubject: two\r\n\r\n.starts with a dot\r\n"
             b"line 2\r\n.\r\nline 4\r\n")


class GreetingAndCapabilityTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)

    def test_greeting_offers_no_apop(self):
        """RFC 1939 §4/§7: the greeting is +OK without a <timestamp>, since
        APOP (which needs the plaintext password on the server) is not
        offered; APOP is an unknown command."""
        pop = self.box.connect()
        self.assertEqual(pop.last, "+OK mail.example.test ktmail POP3 server ready.")
        self.assertNotIn("<", pop.last)
        pop.send("APOP alice_u c4c9334bac560ecc979e58001b3e22fb").expect("-ERR Unknown command")

    def test_capa_lists_the_contract_and_no_joke_capabilities(self):
        """RFC 2449 §5: CAPA works before and after login and lists USER UIDL
        TOP RESP-CODES AUTH-RESP-CODE SASL PLAIN PIPELINING EXPIRE NEVER
        IMPLEMENTATION ktmail, and none of Twisted's CELERITY AUSPEX
        POTENCE PIPELINE."""
        want = ["USER", "UIDL", "TOP", "RESP-CODES", "AUTH-RESP-CODE", "SASL PLAIN",
                "PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION ktmail"]
        pop = self.box.connect()
        pop.send("CAPA")
        self.assertEqual(pop.lines("+OK Capability list follows"), want)
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS " + PASSWORD).expect("+OK Logged in")
        pop.send("capa")
        caps = pop.lines()
        self.assertEqual(caps, want)
        for joke in ("CELERITY", "AUSPEX", "POTENCE", "PIPELINE"):
            self.assertNotIn(joke, caps)
        self.assertEqual([c.decode() for c in CAPABILITIES], want)


class UserPassTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)
        self.box.deliver(MESSAGE_1)
        self.box.deliver(MESSAGE_2)

    def test_user_pass_with_the_mailbox_username(self):
        """RFC 1939 §7 USER/PASS: the mailbox username logs in; the reply
        says how much mail there is; the password may contain spaces."""
        pop = self.box.connect()
        pop.send("USER alice_u").expect("+OK Send your password")
        pop.send("PASS correct horse 7").expect("+OK Logged in; 2 messages (")
        pop.send("STAT").expect(f"+OK 2 {len(MESSAGE_1) + len(MESSAGE_2)}")

    def test_wrong_password_answers_auth_code_after_a_delay(self):
        """RFC 3206 §5: wrong credentials get -ERR [AUTH], after the
        throttle's delay; the session stays in the AUTHORIZATION state."""
        pop = self.box.connect()
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS wrong password").expect_nothing()
        self.box.clock.advance(1)
        pop.expect("-ERR [AUTH] Wrong username or password.")
        pop.send("STAT").expect("-ERR Log in first")
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS " + PASSWORD).expect("+OK Logged in")

    def test_the_address_is_not_a_username(self):
        """SPEC §1: the username is not the e-mail address."""
        pop = self.box.connect()
        pop.send("USER alice@brev.fi").expect("+OK")
        pop.send("PASS " + PASSWORD)
        self.box.clock.advance(1)
        pop.expect("-ERR [AUTH]")

    def test_throttled_address_answers_sys_temp(self):
        """RFC 3206 §4: once an address has failed too often, even the right
        password is refused with -ERR [SYS/TEMP] (LoginThrottled)."""
        for _ in range(10):
            pop = self.box.connect()
            pop.send("USER alice_u").expect("+OK")
            pop.send("PASS nope")
            self.box.clock.advance(1)
            pop.expect("-ERR [AUTH]")
        pop = self.box.connect()
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS " + PASSWORD).expect("-ERR [SYS/TEMP] Too many failed logins")
        other = self.box.connect(peer="198.51.100.9")
        other.send("USER alice_u").expect("+OK")
        other.send("PASS " + PASSWORD).expect("+OK Logged in")

    def test_pass_needs_user_first(self):
        """RFC 1939 §7: PASS is valid only right after a successful USER."""
        pop = self.box.connect()
        pop.send("PASS " + PASSWORD).expect("-ERR Send USER first.")
        pop.send("USER").expect("-ERR Syntax: USER <username>")

    def test_commands_in_the_wrong_state(self):
        """RFC 1939 §3: transaction commands need a login, and login
        commands are refused once logged in."""
        pop = self.box.connect()
        for command in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "RSET", "NOOP"):
            pop.send(command).expect("-ERR Log in first")
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS " + PASSWORD).expect("+OK Logged in")
        pop.send("USER bob_u").expect("-ERR You are already logged in.")
        pop.send("AUTH PLAIN " + plain("", "bob_u", PASSWORD)).expect("-ERR You are already")

    def test_password_is_never_logged(self):
        """A failed or odd login never puts the password in the log."""
        logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        pop = self.box.connect()
        pop.send("USER alice_u").expect("+OK")
        pop.send("PASS s3cret-Pa55")
        self.box.clock.advance(1)
        pop.expect("-ERR [AUTH]")
        pop.send("AUTH PLAIN " + plain("", "alice_u", "s3cret-Pa55"))
        self.box.clock.advance(1)
        pop.expect("-ERR [AUTH]")
        self.assertTrue(logged)
        self.assertNotIn("s3cret-Pa55", repr(logged))


class NoPasswordWithoutTLS(unittest.TestCase):
    def test_plain_connection_takes_no_login(self):
        """SPEC §2: on a connection without TLS (a tcp: POP3 listener, a
        misconfiguration) USER, PASS and AUTH PLAIN are refused before any
        password is checked; nothing counts as a failed login."""
        box = POP3Fixture(self)
        pop = box.connect(tls=False)
        pop.send("USER alice_u").expect("-ERR [SYS/PERM] Log in over TLS")
        pop.send("PASS " + PASSWORD).expect("-ERR [SYS/PERM] Log in over TLS")
        pop.send("AUTH PLAIN " + plain("", "alice_u", PASSWORD)).expect(
            "-ERR [SYS/PERM] Log in over TLS")
        pop.send("STAT").expect("-ERR")
        box.login()   # over TLS, the same address: not throttled


class AuthPlainTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)
        self.box.deliver(MESSAGE_1)

    def test_initial_response(self):
        """RFC 5034 §4 with RFC 4616: AUTH PLAIN <initial-response>."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN " + plain("", "alice_u", PASSWORD)).expect("+OK Logged in; 1 mess")

    def test_continuation(self):
        """RFC 5034 §4: without an initial response the server sends an empty
        challenge "+ " and reads the response on the next line."""
        pop = self.box.connect()
        pop.send("AUTH plain")
        self.assertEqual(pop.unread(), b"+ \r\n")
        pop._read += 4
        pop.send(plain("", "alice_u", PASSWORD)).expect("+OK Logged in")

    def test_authorization_identity_equal_to_the_user(self):
        """RFC 4616 §2: an authzid equal to the authcid is the same login."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN " + plain("alice_u", "alice_u", PASSWORD)).expect("+OK Logged in")

    def test_other_authorization_identity_is_refused(self):
        """No proxy logins: logging in as one mailbox to act as another
        gets -ERR [AUTH]."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN " + plain("bob_u", "alice_u", PASSWORD)).expect("-ERR [AUTH]")

    def test_wrong_password(self):
        """RFC 5034 §4, RFC 3206 §5: a failed AUTH answers -ERR [AUTH]."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN " + plain("", "alice_u", "nope"))
        self.box.clock.advance(1)
        pop.expect("-ERR [AUTH] Wrong username or password.")

    def test_cancel(self):
        """RFC 5034 §4: "*" cancels the exchange with -ERR."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN")
        pop._read += 4
        pop.send("*").expect("-ERR Authentication cancelled.")
        pop.send("STAT").expect("-ERR Log in first")

    def test_bad_base64_and_malformed_messages(self):
        """RFC 5034 §4: a response that is not base64 gets -ERR; a decoded
        message without two NULs fails like wrong credentials; "=" is an
        empty initial response."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN !!!notbase64").expect("-ERR The response is not valid base64.")
        pop.send("AUTH PLAIN " + base64.b64encode(b"alice_u " + PASSWORD.encode()).decode())
        pop.expect("-ERR [AUTH]")
        pop.send("AUTH PLAIN =").expect("-ERR [AUTH]")
        pop.send("AUTH PLAIN a b").expect("-ERR Syntax: AUTH PLAIN")

    def test_overlong_response_ends_the_exchange(self):
        """An AUTH PLAIN response longer than the line limit gets -ERR and
        ends the exchange: the next line is a command again."""
        pop = self.box.connect()
        pop.send("AUTH PLAIN")
        pop._read += 4
        pop.send("A" * 5000).expect("-ERR Line too long")
        pop.send("CAPA").lines("+OK Capability list follows")

    def test_only_plain_is_offered(self):
        """RFC 5034 §4: an unknown mechanism gets -ERR; AUTH alone lists the
        mechanisms (RFC 1734 style, which clients still send)."""
        pop = self.box.connect()
        pop.send("AUTH CRAM-MD5").expect("-ERR Unsupported authentication mechanism; use PLAIN.")
        pop.send("AUTH")
        self.assertEqual(pop.lines("+OK"), ["PLAIN"])


class LockTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)
        self.box.deliver(MESSAGE_1)

    def test_second_session_gets_in_use(self):
        """RFC 2449 §8.1.1: while one session holds the maildrop, another
        login for the same mailbox gets -ERR [IN-USE] and may try again;
        another mailbox is not affected."""
        first = self.box.login()
        second = self.box.connect()
        second.send("USER alice_u").expect("+OK")
        second.send("PASS " + PASSWORD).expect("-ERR [IN-USE] The mailbox is open in another")
        second.send("AUTH PLAIN " + plain("", "alice_u", PASSWORD)).expect("-ERR [IN-USE]")
        self.box.login("bob_u")
        first.send("QUIT").expect("+OK Bye")
        second.send("USER alice_u").expect("+OK")
        second.send("PASS " + PASSWORD).expect("+OK Logged in")

    def test_dropped_connection_releases_the_lock(self):
        """The lock is released when the connection is lost without QUIT."""
        first = self.box.login()
        first.drop()
        self.box.login()

    def test_idle_timeout_releases_the_lock(self):
        """An autologout (RFC 1939 §3) releases the lock too."""
        first = self.box.login()
        self.box.clock.advance(600)
        first.expect("-ERR Disconnected")
        first.protocol.connectionLost(None)
        self.box.login()


class TransactionTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)
        self.uids = [self.box.deliver(m) for m in (MESSAGE_1, MESSAGE_2, b"Subject: 3\r\n\r\n3\r\n")]
        self.keys = [m.key for m in self.box.inbox_messages()]
        self.pop = self.box.login()

    def test_stat_list_uidl(self):
        """RFC 1939 §5 STAT and LIST, §7 UIDL: counts, exact sizes of the
        stored CRLF files, and the unique-ids are the Maildir keys."""
        pop = self.pop
        sizes = [len(MESSAGE_1), len(MESSAGE_2), 17]
        pop.send("STAT").expect(f"+OK 3 {sum(sizes)}")
        pop.send("LIST")
        self.assertEqual(pop.lines(f"+OK 3 messages ({sum(sizes)} octets)"),
                         [f"{n} {s}" for n, s in enumerate(sizes, 1)])
        pop.send("LIST 2").expect(f"+OK 2 {sizes[1]}")
        pop.send("UIDL")
        self.assertEqual(pop.lines(), [f"{n} {k}" for n, k in enumerate(self.keys, 1)])
        pop.send("UIDL 3").expect(f"+OK 3 {self.keys[2]}")

    def test_bad_message_numbers(self):
        """RFC 1939 §5: a number outside the maildrop is -ERR; a malformed
        argument is a syntax error."""
        pop = self.pop
        for command in ("LIST 4", "LIST 0", "UIDL 9", "RETR 4", "TOP 4 1", "DELE 0"):
            pop.send(command).expect("-ERR There is no message")
        for command in ("LIST x", "RETR", "RETR -1", "TOP 1", "TOP 1 -2", "DELE 1 2",
                        "STAT 1", "LIST 99999999999"):
            pop.send(command).expect("-ERR Syntax:")
        pop.send("NOOP").expect("+OK")

    def test_dele_marks_and_listings_leave_the_message_out(self):
        """RFC 1939 §5 DELE: the message is only marked; STAT, LIST and UIDL
        no longer count it (Twisted counted it, and UIDL crashed); every
        command on it answers -ERR; nothing leaves the store before QUIT."""
        pop = self.pop
        pop.send("DELE 2").expect("+OK Message 2 deleted.")
        pop.send("DELE 2").expect("-ERR Message 2 is already deleted.")
        pop.send("STAT").expect(f"+OK 2 {len(MESSAGE_1) + 17}")
        pop.send("LIST")
        self.assertEqual(pop.lines("+OK 2 messages"), [f"1 {len(MESSAGE_1)}", "3 17"])
        pop.send("UIDL")
        self.assertEqual(pop.lines(), [f"1 {self.keys[0]}", f"3 {self.keys[2]}"])
        for command in ("LIST 2", "UIDL 2", "RETR 2", "TOP 2 0"):
            pop.send(command).expect("-ERR Message 2 is already deleted.")
        self.assertEqual(len(self.box.inbox_messages()), 3)

    def test_rset_unmarks(self):
        """RFC 1939 §5 RSET: every mark is removed; QUIT then removes nothing."""
        pop = self.pop
        pop.send("DELE 1").expect("+OK")
        pop.send("DELE 3").expect("+OK")
        pop.send("RSET").expect("+OK 3 messages (")
        pop.send("STAT").expect("+OK 3 ")
        pop.send("QUIT").expect("+OK Bye; 0 messages deleted.")
        self.assertEqual(len(self.box.inbox_messages()), 3)

    def test_quit_removes_exactly_the_marked_messages(self):
        """RFC 1939 §6: QUIT in the TRANSACTION state removes the marked
        messages and only them, then closes."""
        pop = self.pop
        pop.send("DELE 1").expect("+OK")
        pop.send("DELE 3").expect("+OK")
        pop.send("QUIT").expect("+OK Bye; 2 messages deleted.")
        self.assertTrue(pop.closed)
        self.assertEqual([m.uid for m in self.box.inbox_messages()], [self.uids[1]])

    def test_dropped_connection_commits_nothing(self):
        """RFC 1939 §6: without QUIT the UPDATE state is never entered: the
        marked messages stay."""
        self.pop.send("DELE 1").expect("+OK")
        self.pop.send("DELE 2").expect("+OK")
        self.pop.drop()
        self.assertEqual(len(self.box.inbox_messages()), 3)
        again = self.box.login()
        again.send("STAT").expect("+OK 3 ")

    def test_quit_before_login_removes_nothing(self):
        """RFC 1939 §4: QUIT in the AUTHORIZATION state just closes."""
        pop = self.box.connect()
        pop.send("QUIT").expect("+OK Bye.")
        self.assertTrue(pop.closed)

    def test_noop(self):
        """RFC 1939 §5 NOOP."""
        self.pop.send("NOOP").expect("+OK")

    def test_retr_sends_the_stored_bytes_stuffed(self):
        """RFC 1939 §7 RETR / §3: "+OK <size> octets", the message with every
        line that begins with "." stuffed, then ".": un-stuffed it is the
        stored file, byte for byte."""
        pop = self.pop
        body = pop.send("RETR 2").expect_multiline(f"+OK {len(MESSAGE_2)} octets")
        self.assertIn(b"\r\n..starts with a dot\r\n", body)
        self.assertIn(b"\r\n..\r\n", body)
        self.assertEqual(unstuff(body), MESSAGE_2)

    def test_retr_marks_seen_and_top_does_not(self):
        """Like Dovecot, RETR marks the message \\Seen in the store (so IMAP
        and webmail show it read), when the session ends; TOP leaves it
        unseen."""
        pop = self.pop
        pop.send("TOP 1 0").expect_multiline("+OK Top of message follows")
        pop.send("RETR 2").expect_multiline("+OK")
        pop.send("QUIT").expect("+OK")
        flags = {m.uid: m.flags for m in self.box.inbox_messages()}
        self.assertNotIn(SEEN, flags[self.uids[0]])
        self.assertIn(SEEN, flags[self.uids[1]])
        self.assertNotIn(SEEN, flags[self.uids[2]])

    def test_top(self):
        """RFC 1939 §7 TOP msg n: the header, the empty line and n body
        lines (stuffed); n larger than the body gives the whole message;
        n = 0 gives the header only."""
        pop = self.pop
        header = b"From: b@example.org\r\nSubject: two\r\n\r\n"
        self.assertEqual(pop.send("TOP 2 0").expect_multiline("+OK"), header)
        self.assertEqual(pop.send("TOP 2 1").expect_multiline("+OK"),
                         header + b"..starts with a dot\r\n")
        self.assertEqual(pop.send("TOP 2 3").expect_multiline("+OK"),
                         header + b"..starts with a dot\r\nline 2\r\n..\r\n")
        self.assertEqual(unstuff(pop.send("TOP 2 100").expect_multiline("+OK")), MESSAGE_2)

    def test_pipelined_commands_are_answered_in_order(self):
        """RFC 2449 §6.6 PIPELINING: commands sent in one segment, including
        the login, get their responses in order."""
        box = POP3Fixture(self)
        box.deliver(MESSAGE_1)
        pop = box.connect()
        pop.send_raw(f"USER alice_u\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nLIST\r\n"
                     "UIDL 1\r\nDELE 1\r\nQUIT\r\n")
        pop.expect("+OK Send your password")
        pop.expect("+OK Logged in")
        pop.expect(f"+OK 1 {len(MESSAGE_1)}")
        self.assertEqual(unstuff(pop.expect_multiline("+OK")), MESSAGE_1)
        pop.lines("+OK 1 message (")
        pop.expect("+OK 1 ")
        pop.expect("+OK Message 1 deleted.")
        pop.expect("+OK Bye; 1 message deleted.")
        self.assertEqual(box.inbox_messages(), [])


class SnapshotTests(unittest.TestCase):
    """RFC 1939 §5: numbers, sizes and unique-ids stay fixed for a session,
    whatever other sessions (IMAP, delivery) do meanwhile."""

    def setUp(self):
        self.box = POP3Fixture(self)
        self.uids = [self.box.deliver(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))
                     for i in range(1, 4)]

    def test_delivery_during_a_session_is_not_seen_until_the_next(self):
        """A message delivered meanwhile is not listed, and QUIT leaves it."""
        pop = self.box.login()
        new_uid = self.box.deliver(b"Subject: new\r\n\r\nnew\r\n")
        pop.send("STAT").expect("+OK 3 ")
        pop.send("RETR 4").expect("-ERR There is no message 4.")
        pop.send("DELE 1").expect("+OK")
        pop.send("QUIT").expect("+OK Bye; 1 message deleted.")
        self.assertEqual([m.uid for m in self.box.inbox_messages()],
                         self.uids[1:] + [new_uid])
        self.box.login().send("STAT").expect("+OK 3 ")

    def test_concurrent_expunge(self):
        """A message expunged over IMAP meanwhile keeps its number; RETR of it
        answers -ERR, the others still work, and QUIT still removes the
        remaining marked messages."""
        pop = self.box.login()
        self.successResultOf(self.box.mail.expunge(self.box.mailbox_id(), "INBOX",
                                                   [self.uids[1]]))
        pop.send("LIST")
        self.assertEqual(len(pop.lines()), 3)
        pop.send("RETR 2").expect("-ERR Message 2 was removed from the mailbox by another")
        pop.send("RETR 3").expect_multiline("+OK")
        pop.send("DELE 2").expect("+OK")
        pop.send("DELE 3").expect("+OK")
        pop.send("QUIT").expect("+OK Bye; 1 message deleted.")
        self.assertEqual([m.uid for m in self.box.inbox_messages()], [self.uids[0]])


    def test_concurrent_expunge_over_imap(self):
        """The same through the shared live INBOX, as an IMAP session expunges:
        POP3 keeps its numbering, and its own removals at QUIT reach the
        IMAP session (IDLE gets EXPUNGE) with the \\Seen of its RETR."""
        imap, told = self.box.imap_session()
        pop = self.box.login()
        self.successResultOf(imap.expunge([self.uids[0]]))
        pop.send("STAT").expect("+OK 3 ")
        pop.send("RETR 1").expect("-ERR Message 1 was removed")
        self.assertEqual(unstuff(pop.send("RETR 2").expect_multiline("+OK")),
                         b"Subject: 2\r\n\r\nbody 2\r\n")
        pop.send("DELE 3").expect("+OK")
        pop.send("DELE 1").expect("+OK")
        pop.send("QUIT").expect("+OK Bye; 1 message deleted.")
        self.assertEqual(told.events, [("expunged", [self.uids[0]]),      # its own
                                       ("flags", [(self.uids[1], [SEEN])]),
                                       ("expunged", [self.uids[2]])])
        self.assertEqual(imap.uids, [self.uids[1]])

    def test_imap_flag_changes_do_not_change_uidls(self):
        """Flags set over IMAP during and between POP3 sessions change
        nothing a POP3 client sees (same UIDLs, so nothing downloads twice)."""
        imap, _ = self.box.imap_session()
        pop = self.box.login()
        before = pop.send("UIDL").lines()
        self.successResultOf(imap.set_flags(self.uids, {SEEN, "\\Flagged"}, FLAGS_ADD))
        self.assertEqual(pop.send("UIDL").lines(), before)
        pop.send("QUIT").expect("+OK")
        self.assertEqual(self.box.login().send("UIDL").lines(), before)


class StuffingBoundaryTests(unittest.TestCase):
    """RFC 1939 §3 dot-stuffing, wherever a line falls relative to the
    chunks the file is read in (Twisted stuffs each 16 KiB chunk alone and
    misses a "." line that starts a chunk)."""

    def message_with_dot_lines_at(self, offsets):
        """A CRLF message in which a line starting with "." begins at each
        offset (offsets ascending, at least 100 apart)."""
        out = bytearray(b"Subject: boundaries\r\n\r\n")
        for offset in offsets:
            gap = offset - len(out)
            filler = b"x" * (gap - 2) + b"\r\n"
            out += filler
            assert len(out) == offset
            out += b".\r\n" if len(out) % 2 else b".hidden line\r\n"
        out += b"end\r\n"
        return bytes(out)

    def check(self, message, chunk_size, offsets):
        box = POP3Fixture(self, chunk_size=chunk_size)
        box.deliver(message)
        pop = box.login()
        body = pop.send("RETR 1").expect_multiline(f"+OK {len(message)} octets")
        self.assertEqual(unstuff(body), message)
        self.assertNotIn(b"\r\r\n", body)
        sent_lines = body.split(b"\r\n")
        stored_lines = message.split(b"\r\n")
        for offset in offsets:
            index = message[:offset].count(b"\r\n")
            self.assertTrue(stored_lines[index].startswith(b"."))
            self.assertEqual(sent_lines[index], b"." + stored_lines[index])

    def test_dot_lines_at_16k_boundaries(self):
        """A "." line beginning at offset 16384·k, k = 1..4, is stuffed with
        16 KiB reads and with the default 64 KiB reads."""
        offsets = [16384 * k for k in range(1, 5)]
        message = self.message_with_dot_lines_at(offsets)
        self.check(message, 16384, offsets)
        self.check(message, 65536, offsets)

    def test_crlf_split_across_chunks(self):
        """A CRLF whose CR ends one chunk and whose LF begins the next, followed
        by a "." line: the line is stuffed and no CR is doubled."""
        offsets = [16385, 32770]   # line starts right after a LF at 16384 and 32769
        message = self.message_with_dot_lines_at(offsets)
        self.assertEqual(message[16383:16386], b"\r\n.")
        self.check(message, 16384, offsets)

    def test_terminator_after_a_message_without_final_crlf(self):
        """A message whose last line has no CRLF still ends with CRLF "."
        CRLF (RFC 1939 §3)."""
        stuffer = DotStuffer()
        self.assertEqual(stuffer.feed(b"a\r\nb") + stuffer.end(), b"a\r\nb\r\n.\r\n")
        stuffer = DotStuffer()
        self.assertEqual(stuffer.feed(b"a\r") + stuffer.end(), b"a\r\n.\r\n")
        stuffer = DotStuffer()
        self.assertEqual(stuffer.end(), b".\r\n")

    def test_bare_lf_becomes_crlf(self):
        """Files from other tools with bare LF go out with CRLF, stuffed."""
        stuffer = DotStuffer()
        out = stuffer.feed(b"a\n.b\r\n") + stuffer.feed(b"\n.c\n") + stuffer.end()
        self.assertEqual(out, b"a\r\n..b\r\n\r\n..c\r\n.\r\n")

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([b".", b"..", b"a", b"\r\n", b"\n", b"\r", b"x.y",
                                     b" "]), max_size=60),
           st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=30))
    def test_any_chunking_gives_the_same_stream(self, parts, cuts):
        """Property: the stuffed stream does not depend on where the chunks
        are cut, and un-stuffed it is the message with CRLF line ends."""
        message = b"".join(parts)
        whole = DotStuffer()
        expected = whole.feed(message) + whole.end()
        stuffer = DotStuffer()
        out, pos, i = [], 0, 0
        while pos < len(message):
            size = cuts[i % len(cuts)]
            out.append(stuffer.feed(message[pos:pos + size]))
            pos += size
            i += 1
        out.append(stuffer.end())
        self.assertEqual(b"".join(out), expected)
        normalized = re.sub(rb"(?<!\r)\n", b"\r\n", message)
        if normalized and not normalized.endswith(b"\n"):
            normalized += b"\n" if normalized.endswith(b"\r") else b"\r\n"
        self.assertTrue(expected.endswith(b".\r\n"))
        self.assertEqual(unstuff(expected[:-3]), normalized)
        for line in expected[:-3].split(b"\r\n"):
            self.assertFalse(line.startswith(b".") and not line.startswith(b".."), line)


class TopFilterTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.integers(min_value=0, max_value=5),
           st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20),
           st.sampled_from([b"\r\n", b"\n"]))
    def test_top_is_independent_of_chunking(self, lines, cuts, eol):
        """TOP's cut (header, empty line, n body lines) is the same for
        every chunking, also when the header's end is split."""
        message = eol.join([b"A: 1", b"B: 2", b"", b"l1", b"", b"l3", b"l4", b""])
        whole = TopFilter(lines).feed(message)
        top = TopFilter(lines)
        out, pos, i = [], 0, 0
        while pos < len(message) and not top.done:
            size = cuts[i % len(cuts)]
            out.append(top.feed(message[pos:pos + size]))
            pos += size
            i += 1
        self.assertEqual(b"".join(out), whole)
        head = eol.join([b"A: 1", b"B: 2", b""]) + eol
        body_lines = [b"l1", b"", b"l3", b"l4"]
        self.assertEqual(whole, head + b"".join(line + eol for line in body_lines[:lines]))

    def test_message_without_body(self):
        """A message that is all header passes whole."""
        self.assertEqual(TopFilter(3).feed(b"A: 1\r\nB: 2\r\n"), b"A: 1\r\nB: 2\r\n")


class StreamingTests(unittest.TestCase):
    def test_retr_is_read_and_written_one_chunk_at_a_time(self):
        """A message is streamed with back-pressure: each time the transport
        asks for more, one chunk is read from the file and written; the file
        is never read whole, and is closed at the end."""
        reads = []

        class CountingFile(io.BytesIO):
            def read(self, size=-1):
                reads.append(size)
                return super().read(size)

        data = b"Subject: big\r\n\r\n" + b"y" * 78 + b"\r\n"
        data = data + (b"z" * 998 + b"\r\n") * 300    # about 300 KB
        opened = []

        def open_message(mailbox_id, name, uid):
            f = CountingFile(data)
            opened.append(f)
            return defer.succeed(f)

        box = POP3Fixture(self, chunk_size=16384)
        box.mail.open_message = open_message
        box.deliver(data)
        pop = box.login()
        pop.transport.clear()
        pop._read, written = 0, 0
        pop.send("RETR 1")
        producer = pop.transport.producer
        self.assertIsNotNone(producer)
        self.assertFalse(pop.transport.streaming)       # a pull producer
        self.assertEqual(pop.transport.value(), b"")     # nothing before it is asked
        producer.resumeProducing()
        first = len(pop.transport.value()) - written
        self.assertLess(first, 16384 + 100)
        self.assertLessEqual(len(reads), 2)     # the status line waits for the first piece
        producer.resumeProducing()
        self.assertLess(len(pop.transport.value()) - written - first, 16384 + 100)
        self.assertLessEqual(len(reads), 3)
        body = pop.expect_multiline(f"+OK {len(data)} octets")
        self.assertEqual(body, data)
        self.assertTrue(all(size == 16384 for size in reads))
        self.assertTrue(opened[0].closed)

    def test_long_listings_are_streamed(self):
        """LIST and UIDL of a large maildrop go out through the producer too,
        complete and in order."""
        box = POP3Fixture(self)
        for i in range(1200):
            box.deliver(b"S: %04d\r\n\r\n" % i)
        pop = box.login()
        pop.send("LIST")
        self.assertIsNotNone(pop.transport.producer)
        lines = pop.lines("+OK 1200 messages")
        self.assertEqual(len(lines), 1200)
        self.assertEqual(lines[-1], "1200 11")
        pop.send("UIDL")
        self.assertEqual(len(pop.lines()), 1200)

    def test_connection_lost_during_retr(self):
        """A client that goes away in the middle of a message: the file is
        closed, nothing is marked \\Seen and nothing is removed."""
        box = POP3Fixture(self, chunk_size=1024)
        box.deliver(b"Subject: x\r\n\r\n" + b"q" * 100_000 + b"\r\n")
        pop = box.login()
        pop.send("DELE 1").expect("+OK")
        pop.send("RSET").expect("+OK")
        pop.send("RETR 1")
        pop.transport.producer.resumeProducing()
        pop.transport.producer.stopProducing()
        pop.drop()
        [info] = box.inbox_messages()
        self.assertNotIn(SEEN, info.flags)
        box.login()


class RobustnessTests(unittest.TestCase):
    def setUp(self):
        self.box = POP3Fixture(self)
        self.box.deliver(MESSAGE_1)

    def test_idle_timeout(self):
        """RFC 1939 §3: the autologout timer is at least 10 minutes; it ends
        the session with -ERR and without removing anything."""
        pop = self.box.login()
        pop.send("DELE 1").expect("+OK")
        self.box.clock.advance(599)
        pop.send("NOOP").expect("+OK")
        self.box.clock.advance(599)
        self.assertFalse(pop.closed)
        self.box.clock.advance(1)
        pop.expect("-ERR Disconnected after too long without a command.")
        self.assertTrue(pop.closed)
        pop.protocol.connectionLost(None)
        self.assertEqual(len(self.box.inbox_messages()), 1)

    def test_a_client_that_stops_reading_is_dropped(self):
        """The timer also runs while a message is being sent, reset by each
        piece the client takes: a client that stops reading in the middle
        of a RETR is dropped after 10 minutes, and its lock released."""
        box = POP3Fixture(self, chunk_size=1024)
        box.deliver(b"Subject: x\r\n\r\n" + b"q" * 50_000 + b"\r\n")
        pop = box.login()
        pop.send("RETR 1")
        for _ in range(5):
            box.clock.advance(599)
            pop.transport.producer.resumeProducing()     # the client reads a little
        self.assertFalse(pop.transport.disconnected)
        box.clock.advance(600)
        self.assertTrue(pop.transport.disconnected)       # aborted, not flushed
        pop.protocol.connectionLost(None)
        box.login()

    def test_timeout_before_login(self):
        """The same timer runs before login."""
        pop = self.box.connect()
        self.box.clock.advance(600)
        self.assertTrue(pop.closed)

    def test_overlong_line_is_refused_and_the_session_goes_on(self):
        """An over-long command line gets -ERR without being buffered, also
        when it arrives in pieces, and the next command works."""
        pop = self.box.login()
        pop.send("NOOP " + "x" * 5000).expect("-ERR Line too long")
        for _ in range(10):
            pop.send_raw(b"y" * 1000)
        self.assertLess(len(pop.protocol._buffer), 2)
        pop.send_raw(b"yyy\r")
        pop.send_raw(b"\nNOOP\r\n").expect("-ERR Line too long").expect("+OK")
        pop.send("STAT").expect("+OK 1 ")

    def test_too_many_bad_commands_close_the_connection(self):
        """Unknown commands get -ERR; 20 bad commands in a row close the
        connection; a good command resets the count."""
        pop = self.box.connect()
        for _ in range(19):
            pop.send("BOGUS").expect("-ERR Unknown command.")
        pop.send("CAPA").lines()
        for _ in range(19):
            pop.send("XYZZY").expect("-ERR Unknown command.")
        self.assertFalse(pop.closed)
        pop.send("XYZZY").expect("-ERR Too many bad commands; closing the connection.")
        self.assertTrue(pop.closed)
        pop.send("CAPA").expect_nothing()

    def test_many_pipelined_lines_pause_reading(self):
        """Lines that pile up while a command works stop the reading from the
        client until they are answered."""
        box = POP3Fixture(self)
        box.deliver(MESSAGE_1)
        pop = box.login()
        pop.send_raw(b"RETR 1\r\n" + b"NOOP\r\n" * 300)
        self.assertEqual(pop.transport.producerState, "paused")
        pop.pump()
        self.assertEqual(pop.transport.producerState, "producing")
        self.assertEqual(pop.unread().count(b"+OK\r\n"), 300)

    def test_empty_line_and_lower_case(self):
        """Keywords are case-insensitive (RFC 1939 §3); an empty line is an
        unknown command."""
        pop = self.box.login()
        pop.send("").expect("-ERR Unknown command.")
        pop.send("stat").expect("+OK 1 ")

    def test_unexpected_error_is_generic_and_logged(self):
        """An unexpected exception in a service gives -ERR [SYS/TEMP] with no
        detail, is logged, and the session goes on."""
        box = POP3Fixture(self)
        box.deliver(MESSAGE_1)

        box.mail.open_message = lambda *args: defer.fail(
            RuntimeError("secret detail /var/mail/7"))
        pop = box.login()
        pop.send("RETR 1").expect("-ERR [SYS/TEMP] Internal server error; try again later.")
        self.assertNotIn("secret", pop.last)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        pop.send("NOOP").expect("+OK")

    def test_failed_commit_is_reported(self):
        """RFC 1939 §6: when the removal fails, QUIT answers -ERR and closes;
        the messages stay."""
        box = POP3Fixture(self)
        box.deliver(MESSAGE_1)

        box.mail.expunge = lambda *args: defer.fail(errors.StoreUnavailable())
        pop = box.login()
        pop.send("DELE 1").expect("+OK")
        pop.send("QUIT").expect("-ERR [SYS/TEMP] Some deleted messages were not removed")
        self.assertTrue(pop.closed)
        self.assertEqual(len(box.inbox_messages()), 1)
        self.flushLoggedErrors(errors.StoreUnavailable)
        box.login()


class ErrorMappingTests(unittest.TestCase):
    def test_one_mapper(self):
        """RFC 2449 §8 / RFC 3206: each service error has its response code."""
        self.assertEqual(pop3_error_text(errors.AuthFailed()),
                         "[AUTH] Wrong username or password.")
        self.assertTrue(pop3_error_text(errors.LoginThrottled()).startswith("[SYS/TEMP] "))
        self.assertTrue(pop3_error_text(errors.MailboxInUse()).startswith("[IN-USE] "))
        self.assertTrue(pop3_error_text(errors.StoreUnavailable()).startswith("[SYS/TEMP] "))
        self.assertTrue(pop3_error_text(errors.NoSuchMailbox()).startswith("[SYS/PERM] "))
        self.assertEqual(pop3_error_text(errors.NoSuchMessage("There is no message 3.")),
                         "There is no message 3.")
        self.assertEqual(pop3_error_text(KeyError("x")),
                         "[SYS/TEMP] Internal server error; try again later.")

    def test_message_chunks_close_the_file_when_abandoned(self):
        """A stream abandoned half-way closes its file."""
        f = io.BytesIO(b"a\r\n" * 100)
        chunks = message_chunks(f, 10)
        next(chunks)
        chunks.close()
        self.assertTrue(f.closed)
