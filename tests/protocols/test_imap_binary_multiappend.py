"""BINARY (RFC 3516) and MULTIAPPEND (RFC 3502): decoded parts, their sizes,
literal8, and several messages appended at once, all or none."""

import base64
import quopri

from twisted.trial import unittest

from ktmail import errors
from ktmail.protocols.imap import server as imap_server
from tests.protocols.imap_harness import IMAPHarness

PAYLOAD = bytes(range(256)) * 4  # every octet, NUL included
TEXT = "Hyvää päivää = tervehdys".encode()

MESSAGE = (b"From: a@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           + quopri.encodestring(TEXT).replace(b"\n", b"\r\n") + b"\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n") +
           b"--b\r\nContent-Type: application/x-thing\r\n"
           b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n`\r\nend\r\n"
           b"--b--\r\n")


class BinaryTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.deliver(MESSAGE)
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_advertised(self):
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        self.assertIn(b"BINARY", caps)
        self.assertIn(b"MULTIAPPEND", caps)

    def test_fetch_binary_decodes_the_part(self):
        """RFC 3516 §4.2: BINARY[2] is the base64 part decoded, sent as a
        literal8 (~{n}) since it holds NUL; BINARY.PEEK leaves \\Seen alone."""
        r = self.c.command("a FETCH 1 (BINARY.PEEK[2])").ok()
        self.assertEqual(r.untagged[0], b"* 1 FETCH (BINARY[2] ~{%d}\r\n%s)"
                         % (len(PAYLOAD), PAYLOAD))
        self.c.command("b FETCH 1 (FLAGS)").ok().has(b"* 1 FETCH (FLAGS (\\Recent))")

    def test_quoted_printable_and_seen(self):
        """BINARY[1] of a quoted-printable text part, with a partial
        (RFC 3516 §4.2: <origin> in the label); BINARY sets \\Seen."""
        r = self.c.command("a FETCH 1 (BINARY[1]<0.6>)").ok()
        self.assertEqual(r.untagged[0],
                         b"* 1 FETCH (BINARY[1]<0> {6}\r\n%s FLAGS (\\Seen \\Recent))"
                         % TEXT[:6])

    def test_binary_size(self):
        """RFC 3516 §4.2: BINARY.SIZE is the decoded size."""
        r = self.c.command("a FETCH 1 (BINARY.SIZE[1] BINARY.SIZE[2])").ok()
        r.has(b"* 1 FETCH (BINARY.SIZE[1] %d BINARY.SIZE[2] %d)" % (len(TEXT), len(PAYLOAD)))

    def test_unknown_encoding(self):
        """RFC 3516 §4.3: a transfer encoding the server cannot decode is
        NO [UNKNOWN-CTE]."""
        self.c.command("a FETCH 1 (BINARY[3])").no("UNKNOWN-CTE")
        self.c.command("b FETCH 1 (BINARY[9])").ok().has(b"* 1 FETCH (BINARY[9] NIL)")

    def test_large_part_is_decoded_to_a_file(self):
        """A part above the in-memory size is decoded on a worker thread into
        a temporary file and streamed, with the same bytes."""
        self.patch(imap_server, "INLINE_BODY", 100)
        r = self.c.command("a FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])").ok()
        self.assertEqual(r.untagged[0], b"* 1 FETCH (BINARY[2] ~{%d}\r\n%s BINARY.SIZE[2] %d)"
                         % (len(PAYLOAD), PAYLOAD, len(PAYLOAD)))

    def test_append_literal8(self):
        """RFC 3516 §4.4: APPEND takes a literal8; elsewhere it is BAD."""
        data = b"Subject: nul\r\n\r\nzero \x00 byte\r\n"
        r = self.c.command("a APPEND INBOX ~{%d}" % len(data), literals=[data + b"\r\n"])
        r.ok("[APPENDUID")
        r = self.c.command("b UID FETCH 2 (BINARY.PEEK[])").ok()
        self.assertIn(b"~{%d}\r\n%s" % (len(data), data), r.untagged[0])
        self.c.command("c LOGIN ~{1}", literals=[b"x {1}\r\n", b"y\r\n"]).bad()


class MultiappendTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_several_messages(self):
        """RFC 3502 §6.3.11 (A003): several messages in one APPEND, each with
        its own flags and date; APPENDUID names all the new UIDs."""
        one = b"Subject: one\r\n\r\n1\r\n"
        two = b"Subject: two\r\n\r\n2\r\n"
        r = self.c.command('A003 APPEND Drafts (\\Seen) "7-Feb-1994 21:52:25 -0800" {%d}'
                           % len(one),
                           literals=[one + b' (\\Draft) {%d}\r\n' % len(two), two + b"\r\n"])
        r.ok()
        self.assertRegex(r.tagged.decode(), r"\[APPENDUID \d+ 1:2\]")
        self.c.command("b SELECT Drafts").ok()
        r = self.c.command("c FETCH 1:2 (FLAGS INTERNALDATE)").ok()
        r.has(b'* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE "08-Feb-1994 05:52:25 +0000")')
        self.assertIn(b"\\Draft", r.untagged[1])

    def test_all_or_nothing(self):
        """RFC 3502 §6.3.11: when one message cannot be stored, none is."""
        imap = IMAPHarness(self, quota_bytes=100)
        c = imap.connect(login=True)
        one = b"Subject: one\r\n\r\n" + b"a" * 40 + b"\r\n"
        r = c.command(b"a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (len(one), one, len(one), one))
        r.no("OVERQUOTA")
        c.command("b STATUS INBOX (MESSAGES)").ok().has(b"* STATUS INBOX (MESSAGES 0)")

    def test_rollback_after_a_failed_store(self):
        """A store failure after the first message takes the first back."""
        account_append = []
        c = self.c
        c.command("x SELECT INBOX").ok()
        protocol = c.protocol
        original = protocol.account.append

        def failing_second(*args, **kwargs):
            account_append.append(args)
            if len(account_append) == 2:
                raise errors.TooBig()
            return original(*args, **kwargs)
        protocol.account.append = failing_second
        msg = b"Subject: m\r\n\r\nx\r\n"
        r = c.command(b"a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s" % (len(msg), msg, len(msg), msg))
        r.no("TOOBIG")
        self.c.command("b STATUS INBOX (MESSAGES)").ok().has(b"* STATUS INBOX (MESSAGES 0)")
