"""The outbound SMTP client: the DATA writer's dot-stuffing (the SMTP
smuggling regression of Twisted's per-chunk transformChunk), SIZE and
8BITMIME, and the opportunistic TLS policy with its log line."""

import io
import itertools

import twisted.test
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, ssl, task
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial import unittest

from ktmail.protocols.smtp_client import DataEncoder, SMTPDeliveryClient
from ktmail.services.outbound import OutgoingMessage, SessionFailed
from tests.fake_mx import FakeMX, LoopbackEndpoints


def encode(chunks):
    encoder = DataEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def unstuff(data):
    """What a correct server makes of a DATA stream: the lines up to the
    first lone '.', leading dots removed, and what follows it."""
    lines = data.split(b"\r\n")
    body = []
    for i, line in enumerate(lines):
        if line == b".":
            return b"".join(x + b"\r\n" for x in body), b"\r\n".join(lines[i + 1:])
        body.append(line[1:] if line.startswith(b".") else line)
    raise AssertionError("no end of data")


def smuggling_message():
    """A message whose '.' lines start exactly at 16384·k (k = 1..4; 4 is
    also a boundary of our 64 KiB reads), each followed by commands that
    would run on the remote if DATA ended there."""
    out = b"From: anna@sboksi.fi\r\nTo: bob@example.net\r\nSubject: smuggle\r\n\r\n"
    for k in (1, 2, 3, 4):
        filler = 16384 * k - len(out) - 2
        out += b"x" * (filler - 2) + b"\r\n" if filler > 2 else b""
        out = out.ljust(16384 * k - 2, b"y") + b"\r\n"
        assert len(out) == 16384 * k
        out += (b".\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nowned\r\n")
    return out + b"end\r\n"


class DataEncoderTests(unittest.TestCase):
    def test_dot_at_chunk_boundary_is_stuffed(self):
        """A '.' line that begins a chunk is stuffed like any other."""
        self.assertEqual(encode([b"a\r\n", b".\r\n", b".x\r\nb"]),
                         b"a\r\n..\r\n..x\r\nb\r\n.\r\n")

    def test_first_line_dot(self):
        """A message whose very first byte is '.' is stuffed."""
        self.assertEqual(encode([b".hidden\r\n"]), b"..hidden\r\n.\r\n")

    def test_bare_line_ends_become_crlf(self):
        """Bare LF and bare CR are turned into CRLF, so '\\n.\\n' cannot end
        DATA at a server that accepts bare LF; a split CRLF stays one."""
        self.assertEqual(encode([b"a\n.\nb\r", b"\n.c\rd"]),
                         b"a\r\n..\r\nb\r\n..c\r\nd\r\n.\r\n")

    def test_message_without_final_crlf(self):
        """A missing final CRLF is added before the terminating dot."""
        self.assertEqual(encode([b"abc"]), b"abc\r\n.\r\n")
        self.assertEqual(encode([]), b".\r\n")

    def test_smuggling_message_in_16k_chunks(self):
        """The regression: fed in 16 KiB chunks as Twisted's FileSender
        does, the stream still has one end of data, at the end."""
        message = smuggling_message()
        chunks = [message[i:i + 16384] for i in range(0, len(message), 16384)]
        self.assertEqual(chunks[1][:3], b".\r\n")   # the test hits the boundary
        body, rest = unstuff(encode(chunks))
        self.assertEqual((body, rest), (message, b""))

    def test_per_chunk_stuffing_would_smuggle(self):
        """The test message does hit the bug: stuffed chunk by chunk the way
        Twisted's SMTPClient.transformChunk does, DATA ends at 16 KiB and the
        smuggled commands follow."""
        message = smuggling_message()
        stream = b"".join(message[i:i + 16384].replace(b"\r\n.", b"\r\n..")
                          for i in range(0, len(message), 16384)) + b".\r\n"
        body, rest = unstuff(stream)
        self.assertEqual(len(body), 16384)
        self.assertTrue(rest.startswith(b"MAIL FROM:<evil@attacker.example>"))

    @settings(max_examples=300, deadline=None)
    @given(parts=st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\r", b"\n", b"a", b" "]),
                          max_size=30),
           cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6))
    def test_any_chunking_gives_the_same_stream(self, parts, cuts):
        """However the message is cut into chunks, the DATA stream is the
        same, and a server reading it gets the CRLF-normalised message."""
        message = b"".join(parts)
        bounds = sorted({0, len(message), *[c for c in cuts if c < len(message)]})
        chunks = [message[a:b] for a, b in itertools.pairwise(bounds)]
        whole = encode([message])
        self.assertEqual(encode(chunks), whole)
        body, rest = unstuff(whole)
        self.assertEqual(rest, b"")
        normal = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if normal and not normal.endswith(b"\r\n"):
            normal += b"\r\n"
        self.assertEqual(body, normal)


class ClientTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.mx = FakeMX()
        self.endpoints = LoopbackEndpoints({"192.0.2.10": (yield self.mx.listen(self))})
        self.client = SMTPDeliveryClient(self.endpoints, task.Clock(), "mail.ktnet.fi")
        self.addCleanup(self.client.idle)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def deliver(self, data, recipients=("bob@example.net",), prefix=b"", eight_bit=False):
        message = OutgoingMessage(prefix=prefix, file=io.BytesIO(data),
                                  size=len(prefix) + len(data), eight_bit=eight_bit)
        return self.client.deliver("mx.example.net", "192.0.2.10", 25, "anna@sboksi.fi",
                                   list(recipients), message)

    def tls_log(self):
        return [e["status"] for e in self.events if "status" in e and "host" in e]

    @defer.inlineCallbacks
    def test_dot_lines_at_16k_offsets_do_not_smuggle(self):
        """The stored '.' lines at 16384·k reach the remote stuffed: it
        receives exactly one message, byte for byte, and no smuggled
        MAIL FROM."""
        message = smuggling_message()
        replies = (yield self.deliver(message, prefix=b"DKIM-Signature: x\r\n")).replies
        self.assertEqual([str(r) for r in replies.values()], ["250 2.0.0 Ok: queued"])
        yield self.client.idle()
        self.assertEqual(self.mx.received(), [b"DKIM-Signature: x\r\n" + message])
        self.assertEqual([c for c in self.mx.commands if c.startswith(b"MAIL")],
                         [b"MAIL FROM:<anna@sboksi.fi> SIZE=%d" % (len(message) + 19)])

    @defer.inlineCallbacks
    def test_per_recipient_replies(self):
        """Each recipient gets its RCPT refusal or the reply to DATA."""
        self.mx.rcpt_replies["x@example.net"] = b"550 5.1.1 no such user"
        self.mx.rcpt_replies["y@example.net"] = b"452 4.2.2 mailbox full"
        result = yield self.deliver(b"Subject: a\r\n\r\nb\r\n",
                                    ["bob@example.net", "x@example.net", "y@example.net"])
        replies = result.replies
        self.assertEqual({k: str(v) for k, v in replies.items()},
                         {"bob@example.net": "250 2.0.0 Ok: queued",
                          "x@example.net": "550 5.1.1 no such user",
                          "y@example.net": "452 4.2.2 mailbox full"})
        self.assertEqual(replies["bob@example.net"].host, "mx.example.net")
        yield result.closed
        self.assertEqual(self.mx.commands[-2:], [b"RSET", b"QUIT"])

    @defer.inlineCallbacks
    def test_mail_from_refused(self):
        """A refused MAIL FROM fails the session with the server's reply."""
        self.mx.mail_reply = b"553 5.7.1 Sender address rejected"
        failure = yield self.assertFailure(self.deliver(b"x\r\n"), SessionFailed)
        self.assertEqual(str(failure.reply), "553 5.7.1 Sender address rejected")

    @defer.inlineCallbacks
    def test_no_size_when_not_offered(self):
        """SIZE= and BODY= are sent only when the server offers them."""
        self.mx.extensions = [b"PIPELINING"]
        yield self.deliver("Grüße\r\n".encode(), eight_bit=True)
        self.assertEqual([c for c in self.mx.commands if c.startswith(b"MAIL")],
                         [b"MAIL FROM:<anna@sboksi.fi>"])
        self.assertEqual(self.tls_log(), ["plaintext (STARTTLS not offered)"])

    @defer.inlineCallbacks
    def test_starttls_with_unverifiable_certificate(self):
        """STARTTLS is used when offered; a self-signed certificate does not
        stop delivery, and the log says the peer was not verified."""
        pem = FilePath(twisted.test.__file__).sibling("server.pem").getContent()
        self.mx.tls_context = ssl.PrivateCertificate.loadPEM(pem).options()
        yield self.deliver(b"Subject: tls\r\n\r\nsecret\r\n")
        yield self.client.idle()
        self.assertEqual(len(self.mx.messages), 1)
        self.assertTrue(self.mx.messages[0]["tls"])
        [status] = self.tls_log()
        self.assertTrue(status.startswith("encrypted, unverified"), status)

    @defer.inlineCallbacks
    def test_broken_tls_falls_back_to_plaintext(self):
        """A server whose TLS fails after STARTTLS gets the message in
        plaintext on a second connection."""
        self.mx.broken_tls = True
        yield self.deliver(b"Subject: x\r\n\r\ny\r\n")
        yield self.client.idle()
        self.assertEqual(self.mx.sessions, 2)
        self.assertEqual(len(self.mx.messages), 1)
        self.assertFalse(self.mx.messages[0]["tls"])

    @defer.inlineCallbacks
    def test_refused_connection(self):
        """No listener: SessionFailed with a 4.4.1 reply (try the next host)."""
        message = OutgoingMessage(prefix=b"", file=io.BytesIO(b"x"), size=1, eight_bit=False)
        failure = yield self.assertFailure(
            self.client.deliver("mx9.example.net", "192.0.2.99", 25, "", ["a@b.example"],
                                message), SessionFailed)
        self.assertEqual(failure.reply.code, 451)
        self.assertIn("4.4.1 No connection to mx9.example.net", failure.reply.text)
