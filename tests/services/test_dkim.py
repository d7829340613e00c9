"""DKIM signing: the streamed body hash equals dkimpy's, and a signed
message verifies with dkimpy against the TXT record we tell operators to
publish."""

import io
import os

import dkim
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.services.dkim import DkimSigner
from ktmail.services.messagetext import CRLFNormalizer, MessageScan, header_block
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.sqlite import InlineRunner

MESSAGE = (b"From: Anna <anna@sboksi.fi>\r\nTo: bob@example.net\r\nSubject: Hello\r\n"
           b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@sboksi.fi>\r\n\r\n"
           b"Hi Bob,  \t \r\n\r\n.leading dot\r\nbye\r\n\r\n\r\n")


def dkimpy_relaxed_body_hash(message):
    import hashlib

    from dkim.canonicalization import Relaxed
    _, body = dkim.rfc822_parse(message)
    return hashlib.sha256(Relaxed.canonicalize_body(body)).digest()


def scan(message, chunk=7):
    s = MessageScan()
    for i in range(0, len(message), chunk):
        s.feed(message[i:i + chunk])
    s.body_hash = s.close()
    return s


def verify(message, name, txt):
    def dnsfunc(domain, timeout=5):
        assert domain.decode("ascii").rstrip(".") == name, domain
        return txt.encode("ascii")
    return dkim.verify(message, dnsfunc=dnsfunc)


class MessageTextTests(unittest.TestCase):
    def test_normalizer_makes_every_line_end_crlf(self):
        """Bare LF and bare CR become CRLF, also when a CRLF pair is split
        across chunks."""
        n = CRLFNormalizer()
        out = b"".join(n.feed(c) for c in [b"a\r", b"\nb\n", b"c\rd\r"]) + n.close()
        self.assertEqual(out, b"a\r\nb\r\nc\r\nd\r\n")

    @settings(max_examples=300, deadline=None)
    @given(body=st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"x y", b".", b"\xe4"]),
                         max_size=40).map(b"".join),
           chunk=st.integers(min_value=1, max_value=9))
    def test_streamed_body_hash_matches_dkimpy(self, body, chunk):
        """The relaxed body hash computed while streaming equals dkimpy's
        whole-message canonicalization, for any body and chunk size."""
        message = b"From: a@sboksi.fi\r\n\r\n" + body
        self.assertEqual(scan(message, chunk).body_hash, dkimpy_relaxed_body_hash(message))

    def test_scan_finds_header_block_and_8bit(self):
        """The scan returns the header block and notices 8-bit bytes."""
        s = scan(MESSAGE + "Grüße\r\n".encode())
        self.assertTrue(s.headers.startswith(b"From: Anna"))
        self.assertTrue(s.headers.endswith(b"<1@sboksi.fi>\r\n"))
        self.assertTrue(s.eight_bit)
        self.assertFalse(scan(MESSAGE).eight_bit)

    def test_header_block_for_dsn(self):
        """header_block returns the headers without the body."""
        self.assertEqual(header_block(io.BytesIO(MESSAGE)), MESSAGE.split(b"\r\n\r\n")[0]
                         + b"\r\n")
        self.assertEqual(header_block(io.BytesIO(b"\r\nbody only\r\n")), b"")


class DkimSignerTests(unittest.TestCase):
    def setUp(self):
        self.data_dir = self.mktemp()
        self.keys = DiskDkimKeyStore(self.data_dir, InlineRunner())
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.signer = DkimSigner(self.keys, InlineRunner(), self.clock,
                                 ["sboksi.fi", "minmail.fi"], "mail.ktnet.fi")
        self.path = self.mktemp()

    def write(self, data):
        with open(self.path, "wb") as f:
            f.write(data)
        return lambda: open(self.path, "rb")

    @defer.inlineCallbacks
    def test_signature_verifies_against_published_key(self):
        """A signed message verifies with dkimpy against the published TXT
        record; the key file is private and was created on first use."""
        header, eight_bit, size = yield self.signer.sign(self.write(MESSAGE), "anna@sboksi.fi")
        self.assertTrue(header.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed"
                                          b"; d=sboksi.fi"))
        self.assertEqual((eight_bit, size), (False, len(MESSAGE)))
        name, txt = yield self.keys.public_record("sboksi.fi")
        self.assertEqual(name, "ktmail._domainkey.sboksi.fi")
        self.assertTrue(verify(header + MESSAGE, name, txt))
        key = os.path.join(self.data_dir, "dkim", "sboksi.fi.ktmail.pem")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.dirname(key)).st_mode & 0o777, 0o700)

    @defer.inlineCallbacks
    def test_tampered_message_fails(self):
        """Changing the body or a signed header breaks the signature (the
        check above can fail)."""
        header, _, _ = yield self.signer.sign(self.write(MESSAGE), "anna@sboksi.fi")
        name, txt = yield self.keys.public_record("sboksi.fi")
        self.assertFalse(verify(header + MESSAGE.replace(b"bye", b"BYE"), name, txt))
        self.assertFalse(verify(header + MESSAGE.replace(b"Hello", b"Hullo"), name, txt))

    @defer.inlineCallbacks
    def test_key_is_stable(self):
        """The key is created once and reused (also by a new store object)."""
        first = yield self.keys.public_record("minmail.fi")
        again = yield DiskDkimKeyStore(self.data_dir, InlineRunner()).public_record("minmail.fi")
        self.assertEqual(first, again)

    @defer.inlineCallbacks
    def test_foreign_from_is_signed_as_host(self):
        """A From: domain we do not host is not signed for: the host name's
        key signs instead."""
        message = MESSAGE.replace(b"anna@sboksi.fi", b"someone@gmail.com")
        header, _, _ = yield self.signer.sign(self.write(message), "")
        self.assertIn(b"d=mail.ktnet.fi", header)
        name, txt = yield self.keys.public_record("mail.ktnet.fi")
        self.assertTrue(verify(header + message, name, txt))

    @defer.inlineCallbacks
    def test_message_without_from_goes_unsigned(self):
        """A message with no From: header cannot be signed (RFC 6376 §5.4)."""
        header, _, _ = yield self.signer.sign(self.write(b"Subject: x\r\n\r\nhi\r\n"), "")
        self.assertEqual(header, b"")
