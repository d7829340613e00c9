"""Hostile input at the command parsers of SMTP (25 and 465), IMAP and
POP3, through real protocol instances on in-memory transports: random
bytes, mutated real commands, literals, long lines, stray CR/LF, in any
segmentation.

What must hold for every input: nothing raises out of ``dataReceived``
(in the daemon that would reach the reactor and drop the connection
uncleanly), nothing is logged as an error (a bug) and no IMAP command
ends in ``[SERVERBUG]``; every line sent back is well-formed for the
protocol (answers, errors), or the connection is closed; and afterwards
the same factory still serves another client normally.

Example counts are bounded so that ``make test`` stays fast; crashes
found here are kept below as plain regression tests.
"""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.protocols.fakes import SubmissionWorld, inbound_factory
from tests.protocols.imap_harness import IMAPClient, IMAPHarness
from tests.protocols.pop3_transcript import PASSWORD, POP3Fixture
from tests.protocols.transcript import SMTPTranscript

#: KTMAIL_FUZZ_EXAMPLES=5000 make test (or trial this module) fuzzes deeper
EXAMPLES = int(os.environ.get("KTMAIL_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

SMTP_COMMANDS = [
    b"EHLO client.example.org", b"HELO x", b"MAIL FROM:<friend@example.org>",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME", b"MAIL FROM:<a@b.c> SMTPUTF8",
    b"RCPT TO:<alice@brev.fi>", b"RCPT TO:<nobody@brev.fi>", b"RCPT TO:<x@[127.0.0.1]>",
    b"RCPT TO:<\"quoted local\"@brev.fi>", b"DATA", b"BDAT 10", b"BDAT 0 LAST", b"RSET",
    b"NOOP", b"VRFY alice", b"HELP", b"QUIT", b"STARTTLS", b"AUTH PLAIN",
    b"AUTH PLAIN AGFsaWNlX3UAY29ycmVjdCBob3JzZSA3", b"AUTH LOGIN", b"AUTH LOGIN YWxpY2VfdQ==",
    b"*", b"=", b"Subject: hello", b".", b"..", b"",
]
IMAP_COMMANDS = [
    b"a CAPABILITY", b"a NOOP", b"a LOGIN alice_u \"correct horse 7\"",
    b"a LOGIN {7}", b"alice_u {15+}", b"correct horse 7", b"a AUTHENTICATE PLAIN",
    b"a AUTHENTICATE PLAIN AGFsaWNlX3UAY29ycmVjdCBob3JzZSA3", b"AGFsaWNlX3UAd3Jvbmc=",
    b"a SELECT INBOX", b"a EXAMINE Spam", b"a CREATE \"New/Sub\"", b"a DELETE New",
    b"a RENAME New Old", b"a LIST \"\" *", b"a LIST (SPECIAL-USE) \"\" \"%\" RETURN (STATUS (MESSAGES))",
    b"a LSUB \"\" *", b"a STATUS INBOX (MESSAGES UIDNEXT UNSEEN APPENDLIMIT)",
    b"a APPEND INBOX (\\Seen) {20}", b"a APPEND INBOX {5+}", b"Subject: x\r\n\r\nbody",
    b"a FETCH 1:* (FLAGS UID RFC822.SIZE)", b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    b"a FETCH 1 (BODY[]<0.10> BODYSTRUCTURE ENVELOPE)", b"a UID FETCH 1:* FLAGS",
    b"a SEARCH UNSEEN", b"a UID SEARCH OR FROM x SUBJECT \"y\" SINCE 1-Jan-2020",
    b"a SEARCH CHARSET UTF-8 TEXT {3}", b"a STORE 1 +FLAGS (\\Deleted)",
    b"a UID STORE 1:* -FLAGS.SILENT (\\Seen)", b"a COPY 1 Trash", b"a UID MOVE 1 Spam",
    b"a EXPUNGE", b"a UID EXPUNGE 1", b"a CLOSE", b"a UNSELECT", b"a IDLE", b"DONE",
    b"a ENABLE UTF8=ACCEPT", b"a ID (\"name\" \"fuzz\")", b"a ID NIL", b"a NAMESPACE",
    b"a GETQUOTAROOT INBOX", b"a GETQUOTA \"\"", b"a CHECK", b"a LOGOUT",
    b"a FETCH 4294967296 FLAGS", b"a FETCH *:1 (BODY[1.2.3.MIME])", b"a SELECT &Jjo-",
    b"a SEARCH 1,2,3:5,* NOT (OR SEEN FLAGGED)", b"* NOOP", b"", b"a",
    b"a COMPRESS DEFLATE", b"x\x9c\xcbH\xcd\xc9\xc9\x07\x00", b"a APPEND INBOX {3}",
    rb"a APPEND INBOX (\Seen) {3+}", rb"abc (\Flagged) {3+}", b"a APPEND INBOX ~{4+}",
    b"a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])", b"a UID SORT (DATE) UTF-8 ALL",
    b"a SELECT INBOX (CONDSTORE)", b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
    b"a ENABLE QRESYNC", b"a SELECT INBOX (QRESYNC (1 1))",
]
POP3_COMMANDS = [
    b"CAPA", b"USER alice_u", b"PASS " + PASSWORD.encode(), b"PASS wrong", b"AUTH PLAIN",
    b"AUTH PLAIN AGFsaWNlX3UAY29ycmVjdCBob3JzZSA3", b"AUTH", b"*", b"STAT", b"LIST",
    b"LIST 1", b"LIST 99999999999", b"UIDL", b"UIDL 1", b"RETR 1", b"RETR 0", b"TOP 1 0",
    b"TOP 1 -1", b"TOP 1 99999999999999", b"DELE 1", b"RSET", b"NOOP", b"QUIT", b"APOP a b",
    b"STLS", b"", b"USER", b"LIST a b c",
]


def mutated(corpus):
    """A corpus line, perhaps damaged: bytes replaced, cut, doubled, or
    whole random junk."""
    junk = st.binary(min_size=1, max_size=12)
    line = st.sampled_from(corpus)
    damaged = st.tuples(line, st.integers(0, 200), junk).map(
        lambda t: t[0][:t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1):])
    return st.one_of(line, line, damaged, st.binary(max_size=60),
                     st.tuples(line, st.integers(1, 5)).map(lambda t: t[0] * t[1]))


def session_input(corpus):
    """Lines joined with CRLF (or LF, CR, nothing), cut into segments."""
    ending = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
    lines = st.lists(st.tuples(mutated(corpus), ending).map(lambda t: t[0] + t[1]),
                     min_size=1, max_size=25)
    return st.tuples(lines, st.lists(st.integers(1, 400), max_size=6)).map(_segments)


def _segments(args):
    lines, cuts = args
    data = b"".join(lines)
    positions = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in positions + [len(data)]:
        if p > start:
            pieces.append(data[start:p])
        start = p
    return pieces


class _ErrorWatch:
    """Collects events that report errors (what the reactor would log)."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self._seen)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._seen)

    def _seen(self, event):
        if event.get("log_failure") is not None or event.get("isError"):
            self.events.append(event)

    def take(self):
        events, self.events = self.events, []
        return [e.get("log_failure") or e for e in events]


def _reply_lines(data):
    return [line for line in data.split(b"\r\n") if line]


class SMTPFuzz(unittest.TestCase):
    def setUp(self):
        self.errors = _ErrorWatch(self)
        self.factory = inbound_factory()
        self.submission = SubmissionWorld()

    def feed(self, session, pieces):
        for piece in pieces:
            session.protocol.dataReceived(piece)
            if session.transport.disconnecting:
                break
        for line in _reply_lines(session.transport.value()):
            self.assertRegex(line, rb"\A[2345]\d\d[ -]", line)
        self.assertEqual(self.errors.take(), [])

    def still_serves(self, factory):
        s = SMTPTranscript(self, factory, peer="198.51.100.20")
        s.send("EHLO other.example.org").expect("250 ")
        s.send("NOOP").expect("250")

    @FUZZ
    @given(session_input(SMTP_COMMANDS))
    def test_inbound(self, pieces):
        """Port 25: any input gets well-formed replies or a clean close."""
        session = SMTPTranscript(self, self.factory)
        self.feed(session, pieces)
        self.still_serves(self.factory)

    @FUZZ
    @given(session_input(SMTP_COMMANDS))
    def test_submission(self, pieces):
        """Port 465 (inside TLS), before and after AUTH."""
        session = SMTPTranscript(self, self.submission.factory, tls=True)
        self.feed(session, pieces)
        self.still_serves(self.submission.factory)

    @FUZZ
    @given(session_input(SMTP_COMMANDS))
    def test_submission_logged_in(self, pieces):
        """Port 465 after a successful AUTH."""
        session = SMTPTranscript(self, self.submission.factory, tls=True)
        session.send("EHLO laptop.example.org").expect("250 ")
        session.send("AUTH PLAIN AGFsaWNlX3UAY29ycmVjdCBob3JzZSA3").expect("235")
        self.feed(session, pieces)


class IMAPFuzz(unittest.TestCase):
    def setUp(self):
        self.errors = _ErrorWatch(self)
        self.imap = IMAPHarness(self)
        self.imap.deliver(b"From: a@example.org\r\nSubject: one\r\nContent-Type: multipart/"
                          b"mixed; boundary=b\r\n\r\n--b\r\n\r\nhello\r\n--b--\r\n")

    def feed(self, client, pieces):
        try:
            for piece in pieces:
                client.protocol.dataReceived(piece)
                if client.transport.disconnecting:
                    break
        finally:
            client.protocol.connectionLost(None)
        out = client.transport.value()
        self.assertEqual(self.errors.take(), [])
        self.assertNotIn(b"[SERVERBUG]", out)
        for line in client.read_lines():
            self.assertRegex(line, rb"\A(\* |\+|[^\s]+ (OK|NO|BAD)\b)", line[:200])

    def still_serves(self):
        # from another address: the fuzzed session may have used up its own
        # with failed logins (the throttle is working, not broken)
        c = IMAPClient(self, self.imap.factory, peer="198.51.100.77")
        try:
            c.login()
            c.select()
            c.command("z UID FETCH 1:* (FLAGS)").ok()
            c.command("z LOGOUT").ok()
        finally:
            c.protocol.connectionLost(None)

    @FUZZ
    @given(session_input(IMAP_COMMANDS))
    def test_not_logged_in(self, pieces):
        """Any input before login: tagged/untagged answers or a clean close."""
        self.feed(self.imap.connect(), pieces)
        self.still_serves()

    @FUZZ
    @given(session_input(IMAP_COMMANDS))
    def test_selected(self, pieces):
        """Any input with INBOX selected (FETCH, SEARCH, STORE, APPEND ...)."""
        client = self.imap.connect(login=True)
        client.select()
        self.feed(client, pieces)
        self.still_serves()


class POP3Fuzz(unittest.TestCase):
    def setUp(self):
        self.errors = _ErrorWatch(self)
        self.box = POP3Fixture(self, failure_delay=0)
        self.box.deliver(b"Subject: one\r\n\r\n.dot line\r\nbody\r\n")

    def feed(self, pop, pieces):
        for piece in pieces:
            pop.protocol.dataReceived(piece)
            pop.pump()
            if pop.transport.disconnecting:
                break
        self.assertEqual(self.errors.take(), [])
        pop.protocol.connectionLost(None)

    @FUZZ
    @given(session_input(POP3_COMMANDS))
    def test_session(self, pieces):
        """Any input, before and after login: +OK/-ERR answers or a clean
        close; the mailbox still works for the next client."""
        pop = self.box.connect()
        self.feed(pop, pieces)
        pop = self.box.connect(peer="198.51.100.77")   # see IMAPFuzz.still_serves
        pop.send("USER bob_u").expect("+OK")
        pop.send("PASS " + PASSWORD).expect("+OK")
        pop.send("STAT").expect("+OK")
        pop.send("QUIT").expect("+OK")
