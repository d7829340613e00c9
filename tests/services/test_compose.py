"""Writing mail: recipients, header safety, the MIME built with streamed
attachments, replies; and reading: body choice and streamed part decoding."""

import base64
import email
import email.policy
import io
import os
import quopri

from twisted.trial import unittest

from ktmail import errors, mime
from ktmail.model import Address
from ktmail.services import compose, messageview


class RecipientTests(unittest.TestCase):
    def test_names_commas_semicolons_and_idn(self):
        """Typed lists with names (also quoted, with commas), semicolons and
        international domains become addresses; duplicates go."""
        found = compose.parse_recipients(
            'Åsa Öberg <asa@brev.fi>; "Berg, Bo" <bo@x.fi>, asa@brev.fi, c@räksmörgås.se', "to")
        self.assertEqual([(n, str(a)) for n, a in found], [
            ("Åsa Öberg", "asa@brev.fi"), ("Berg, Bo", "bo@x.fi"),
            ("", "c@xn--rksmrgs-5wao1o.se")])

    def test_bad_addresses_and_line_breaks_are_refused(self):
        for text in ("asa", "a@b@c", "a b@c.fi", "<>", "x@-bad-.fi"):
            with self.assertRaises(errors.ValidationError, msg=text):
                compose.parse_recipients(text, "to")
        for text in ("a@b.fi\r\nBcc: c@d.fi", "a@b.fi\nx", "a@b.fi\x00"):
            with self.assertRaises(errors.ValidationError) as caught:
                compose.parse_recipients(text, "cc")
            self.assertEqual(caught.exception.field, "cc")

    def test_format_round_trip(self):
        pairs = (("Berg, Bo", "bo@x.fi"), ("Åsa", "asa@brev.fi"), ("", "c@d.fi"))
        text = compose.format_addresses(pairs)
        self.assertEqual(text, '"Berg, Bo" <bo@x.fi>, Åsa <asa@brev.fi>, c@d.fi')
        self.assertEqual([(n, str(a)) for n, a in compose.parse_recipients(text, "to")],
                         list(pairs))


class WriteMessageTests(unittest.TestCase):
    def write(self, **kwargs):
        out = io.BytesIO()
        values = dict(sender=Address("me", "brev.fi"),
                      to=(("Bo", Address("bo", "brev.fi")),), subject="Hej",
                      body="Hej!", message_id="<1@mail.example.test>", date=1_790_000_000)
        values.update(kwargs)
        written = compose.write_message(out, **values)
        data = out.getvalue()
        self.assertEqual(written, len(data))
        return data

    def test_crlf_headers_and_utf8(self):
        data = self.write(subject="Hälsningar från Åre", body="Rad ett\nRad två åäö")
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""))
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(msg["Subject"], "Hälsningar från Åre")
        self.assertEqual(msg["Message-ID"], "<1@mail.example.test>")
        self.assertTrue(msg["Date"])
        self.assertEqual(msg.get_content(), "Rad ett\r\nRad två åäö\r\n")
        self.assertTrue(data.isascii())

    def test_bcc_only_when_asked(self):
        bcc = (("", Address("hidden", "x.fi")),)
        self.assertNotIn(b"hidden", self.write(bcc=()))
        self.assertIn(b"Bcc: hidden@x.fi", self.write(bcc=bcc))

    def test_subject_with_line_break_is_refused(self):
        with self.assertRaises(errors.ValidationError):
            self.write(subject="Hej\r\nBcc: x@y.fi")

    def test_big_attachment_is_streamed_and_exact(self):
        """A 3 MiB attachment (not a multiple of the chunk) comes out of the
        streamed base64 byte for byte, with an RFC 2231 UTF-8 name."""
        path = self.mktemp()
        payload = os.urandom(3 * 1024 * 1024 + 7)
        with open(path, "wb") as f:
            f.write(payload)
        data = self.write(attachments=[compose.Attachment("räkning åäö.bin",
                                                          "application/x-thing", path,
                                                          len(payload))])
        msg = email.message_from_bytes(data, policy=email.policy.default)
        (part,) = list(msg.iter_attachments())
        self.assertEqual(part.get_filename(), "räkning åäö.bin")
        self.assertEqual(part.get_content(), payload)
        self.assertTrue(all(len(line) <= 78 for line in data.split(b"\r\n")))

    def test_attachment_types_that_cannot_be_base64_become_octet_stream(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"From: x\r\n\r\nhi\r\n")
        data = self.write(attachments=[compose.Attachment("m.eml", "message/rfc822", path, 15)])
        msg = email.message_from_bytes(data, policy=email.policy.default)
        (part,) = list(msg.iter_attachments())
        self.assertEqual(part.get_content_type(), "application/octet-stream")


class ReplyTests(unittest.TestCase):
    def view(self, **headers):
        block = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        data = (block + "\r\nText\r\n").encode()
        return messageview.read_view(io.BytesIO(data), mime.parse(io.BytesIO(data)))

    def test_subjects(self):
        self.assertEqual(compose.reply_subject("SV: Re: Möte"), "Re: Möte")
        self.assertEqual(compose.forward_subject("Fwd: VB: Möte"), "Fwd: Möte")

    def test_reply_all_without_oneself_and_threading(self):
        view = self.view(From="A <a@x.fi>", To="me@brev.fi, b@x.fi", Cc="c@x.fi, ME@brev.fi",
                         Message_ID="<m2@x>", References="<m1@x>")
        to, cc = compose.reply_recipients(view, Address("me", "brev.fi"), everyone=True)
        self.assertEqual([a for _n, a in to], ["a@x.fi"])
        self.assertEqual([a for _n, a in cc], ["b@x.fi", "c@x.fi"])
        self.assertEqual(compose.references_for(view), ("<m2@x>", "<m1@x> <m2@x>"))

    def test_reply_to_own_sent_message_goes_to_its_recipients(self):
        view = self.view(From="me@brev.fi", To="b@x.fi")
        to, _cc = compose.reply_recipients(view, Address("me", "brev.fi"), everyone=False)
        self.assertEqual([a for _n, a in to], ["b@x.fi"])

    def test_quote(self):
        self.assertEqual(compose.quote("a\n\n> b"), "> a\n>\n>> b")


class PartReaderTests(unittest.TestCase):
    def read_all(self, reader, size):
        out = b""
        while True:
            chunk = reader.read(size)
            if not chunk:
                return out
            out += chunk

    def test_base64_and_quoted_printable_across_chunk_boundaries(self):
        payload = os.urandom(300_000)
        text = ("Räksmörgås = gott " * 20_000).encode()
        message = (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                   b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                   + quopri.encodestring(text).replace(b"\n", b"\r\n")
                   + b"\r\n--b\r\nContent-Type: application/octet-stream\r\n"
                   b"Content-Transfer-Encoding: base64\r\n\r\n"
                   + base64.encodebytes(payload).replace(b"\n", b"\r\n") + b"--b--\r\n")
        root = mime.parse(io.BytesIO(message))
        for size in (1, 1000, 65536, 10**6):
            reader = messageview.PartReader(io.BytesIO(message), root.find((2,)))
            self.assertEqual(self.read_all(reader, size), payload)
        reader = messageview.PartReader(io.BytesIO(message), root.find((1,)))
        self.assertEqual(self.read_all(reader, 4096), text)

    def test_body_choice_prefers_html_alternative_and_lists_attachments(self):
        message = (b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
                   b"Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
                   b"Content-Type: text/plain\r\n\r\nplain\r\n--a\r\n"
                   b"Content-Type: text/html\r\n\r\n<p>html</p>\r\n--a--\r\n--m\r\n"
                   b"Content-Type: image/png; name=\"bild.png\"\r\n\r\nPNG\r\n--m--\r\n")
        view = messageview.read_view(io.BytesIO(message), mime.parse(io.BytesIO(message)))
        self.assertEqual([(p.section, p.kind) for p in view.body], [((1, 2), "html")])
        self.assertEqual([(a.section, a.filename) for a in view.attachments],
                         [((2,), "bild.png")])

    def test_spam_report(self):
        report = messageview.spam_report("Yes, score=7.2 required=5.0\r\n\ttests=A_RULE,\r\n\tB")
        self.assertEqual((report.is_spam, report.score, report.required, report.rules),
                         (True, 7.2, 5.0, ("A_RULE", "B")))
        self.assertIsNone(messageview.spam_report("garbage"))
