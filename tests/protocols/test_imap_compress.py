"""COMPRESS=DEFLATE (RFC 4978) on an IMAP session: the tagged OK goes out
plain, then both directions are raw deflate, flushed per write; corrupt or
oversized compressed input is handled without buffering it all."""

import zlib

from twisted.trial import unittest

from ktmail.protocols.imap import compress
from tests.protocols.imap_harness import IMAPHarness


class CompressedClient:
    """The client side of the two deflate streams over the harness client."""

    def __init__(self, testcase, client):
        self.testcase = testcase
        self.client = client
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflate = zlib.decompressobj(-15)
        self.offset = len(client.transport.value())
        self.received = b""

    def send(self, data):
        self.client.protocol.dataReceived(self.deflate.compress(data)
                                          + self.deflate.flush(zlib.Z_SYNC_FLUSH))

    def read(self):
        raw = self.client.transport.value()[self.offset:]
        self.offset += len(raw)
        self.received += self.inflate.decompress(raw)
        return self.received

    def command(self, line):
        tag = line.split(b" ", 1)[0]
        self.send(line + b"\r\n")
        data = self.read()
        end = data.find(b"\r\n" + tag + b" ")
        self.testcase.assertTrue(data.startswith(tag + b" ") or end >= 0,
                                 f"no tagged reply in {data[-300:]!r}")
        self.received = b""
        return data


class CompressTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(20, body=b"Hello hello hello, compressible text.\r\n" * 50)
        self.c = self.imap.connect(login=True)

    def test_advertised_after_login(self):
        """COMPRESS=DEFLATE is offered once authenticated (RFC 4978 §3)."""
        self.assertNotIn(b"COMPRESS=DEFLATE", self.c.greeting)
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        self.assertIn(b"COMPRESS=DEFLATE", caps)

    def test_session_runs_compressed(self):
        """RFC 4978 §3 (example): OK DEFLATE active in plain text, then
        commands and responses are deflated; every response can be read at
        once (sync flush); a large FETCH is smaller on the wire."""
        self.c.command("a COMPRESS DEFLATE").ok()  # the tagged OK is plain text
        z = CompressedClient(self, self.c)
        self.assertIn(b"b OK", z.command(b"b SELECT INBOX"))
        before = z.offset
        reply = z.command(b"c FETCH 1:* (BODY.PEEK[])")
        self.assertIn(b"c OK FETCH completed", reply)
        self.assertEqual(reply.count(b"FETCH (BODY[]"), 20)
        self.assertLess(z.offset - before, len(reply) / 5)
        self.assertIn(b"d NO [COMPRESSIONACTIVE]", z.command(b"d COMPRESS DEFLATE"))
        self.assertIn(b"e OK", z.command(b"e NOOP"))

    def test_unknown_mechanism(self):
        """Only DEFLATE exists (RFC 4978 §3)."""
        self.c.command("a COMPRESS LZ4").no("CANNOT")
        self.c.command("b NOOP").ok()

    def test_corrupt_stream_ends_the_session(self):
        """Input that is not a deflate stream ends the session with BYE."""
        self.c.command("a COMPRESS DEFLATE").ok()
        z = CompressedClient(self, self.c)
        self.c.protocol.dataReceived(b"\xff\xff\xff\xff garbage")
        self.assertIn(b"* BYE", z.read())
        self.assertTrue(self.c.closed)

    def test_inflation_is_bounded(self):
        """A tiny compressed input that inflates to a huge one is inflated
        only as fast as the session takes it: while a command runs, the
        rest stays compressed."""
        self.c.command("a COMPRESS DEFLATE").ok()
        z = CompressedClient(self, self.c)
        protocol = self.c.protocol
        protocol._stop_reading()   # as while a command runs
        bomb = b"x NOOP\r\n" * (4 * 1024 * 1024)    # 32 MiB of commands
        z.send(bomb)
        self.assertLess(len(protocol._buffer), 2 * compress.SLICE + 256 * 1024)
        self.assertGreater(protocol._inflater.pending, 0)

    def test_append_literals_inside_the_compressed_stream(self):
        """APPEND with synchronising and LITERAL+ literals, with more commands
        right behind them in the same compressed write (as mbsync sends)."""
        self.c.command("a COMPRESS DEFLATE").ok()
        z = CompressedClient(self, self.c)
        message = b"Subject: x\r\n\r\nbody\r\n"
        z.send(b"b APPEND INBOX {%d+}\r\n%s\r\nc APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n"
               b"d NOOP\r\n" % (len(message), message, len(message), message))
        data = z.read()
        self.assertIn(b"b OK [APPENDUID", data)
        self.assertIn(b"c OK [APPENDUID", data)
        self.assertIn(b"d OK", data)
        z.received = b""
        z.send(b"e APPEND INBOX {%d}\r\n" % len(message))
        self.assertIn(b"+ ", z.read())
        z.received = b""
        z.send(message + b"\r\nf NOOP\r\n")
        data = z.read()
        self.assertIn(b"e OK [APPENDUID", data)
        self.assertIn(b"f OK", data)

    def test_pipelined_commands_behind_a_slow_one(self):
        """Many commands in one compressed write, the first of them still
        running when the rest arrive (as mbsync pipelines UID FETCHes): every
        one is answered once the first completes."""
        self.c.command("a COMPRESS DEFLATE").ok()
        z = CompressedClient(self, self.c)
        z.command(b"b SELECT INBOX")
        protocol = self.c.protocol
        protocol._stop_reading()   # as while a command runs
        z.send(b"".join(b"f%d UID FETCH %d (BODY.PEEK[])\r\n" % (n, n) for n in range(1, 21)))
        self.assertNotIn(b"f1 OK", z.read())
        protocol._start_reading()
        data = z.read()
        for n in range(1, 21):
            self.assertIn(b"f%d OK FETCH completed" % n, data)
