"""The MIME parser as its users use it, under random and damaged messages
(tests/test_mime.py fuzzes the parser itself; the spam filter has
tests/services/test_spam_fuzz.py): the webmail's message view, text
decoding, attachment streaming and HTML sanitiser; IMAP's BODYSTRUCTURE,
ENVELOPE and section ranges; and the streaming header-section check that
SMTP and APPEND use, which must give the same answer however the bytes
are cut."""

import io
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from ktmail import mime
from ktmail.protocols.imap import fetch, parser
from ktmail.services import messageview
from ktmail.web import htmlmail
from tests.test_mime import mutated

EXAMPLES = int(os.environ.get("KTMAIL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HTML = (b"Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\n<p onclick=3D\"x()\">hi<script>alert(1)</script>"
        b"<img src=3D\"http://t.example/x.gif\"><a href=3D\"javascript:x\">a</a>\r\n--a\r\n"
        b"Content-Type: application/pdf; name=\"=?utf-8?q?r=C3=A4kning?=.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--a--\r\n")
messages = st.one_of(st.binary(max_size=2000), mutated(),
                     st.binary(max_size=60).map(lambda junk: HTML[:300] + junk + HTML[300:]))


def sections(structure):
    """Every section a client could ask for, existing or not."""
    paths = [(), (1,), (2,), (1, 1), (3, 1), (9,)]
    paths += [tuple(path) for path, _part in messageview.leaves(structure)]
    for path in paths:
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS"):
            if text == "MIME" and not path:
                continue
            yield parser.Section(path, text, (b"SUBJECT",) if text == "HEADER.FIELDS" else ())


class WebmailView(unittest.TestCase):
    @FUZZ
    @given(messages)
    def test_reading_any_message(self, data):
        """The webmail's reading page: the view model, each text part
        (HTML through the sanitiser), each attachment streamed and
        decoded, whatever the bytes."""
        summary = mime.summarize(io.BytesIO(data))
        view = messageview.read_view(io.BytesIO(data), summary.structure)
        for body in view.body:
            if body.kind == "html":
                cleaned, _blocked = htmlmail.sanitize(body.text)
                self.assertNotIn("<script", cleaned.lower())
                htmlmail.document(cleaned, view.subject)
            messageview.html_to_text(body.text)
        for attachment in view.attachments:
            part = summary.structure.find(attachment.section)
            self.assertIsNotNone(part, attachment)
            reader = messageview.PartReader(io.BytesIO(data), part)
            while reader.read(4096):
                pass
        for _path, part in messageview.leaves(summary.structure):
            reader = messageview.PartReader(io.BytesIO(data), part)
            total = 0
            while chunk := reader.read(1000):
                total += len(chunk)
            self.assertLessEqual(total, max(len(data), 1) * 3)


class IMAPStructure(unittest.TestCase):
    @FUZZ
    @given(messages)
    def test_fetch_items_of_any_message(self, data):
        """BODYSTRUCTURE, BODY and ENVELOPE render as balanced IMAP data;
        every section a client may name maps to a range inside the message
        (or to none), and header filtering takes any block."""
        summary = mime.summarize(io.BytesIO(data))
        structure = summary.structure
        for extended in (True, False):
            rendered = fetch.body_structure(structure, extended)
            self.assertTrue(rendered.startswith(b"(") and rendered.endswith(b")"))
        fetch.envelope(summary.envelope)
        for section in sections(structure):
            where = fetch.section_range(structure, section, len(data))
            if where is not None:
                start, end = where
                self.assertTrue(0 <= start <= end <= len(data), (section, where))
                fetch.filter_header(data[start:end], [b"SUBJECT", b"FROM"], True)
                fetch.filter_header(data[start:end], [b"SUBJECT"], False)


class HeaderFieldDropperFuzz(unittest.TestCase):
    @FUZZ
    @given(messages, st.lists(st.integers(1, 3000), max_size=8))
    def test_same_bytes_however_cut_and_body_untouched(self, data, cuts):
        """Fed whole or in pieces, the dropper keeps the same bytes: the
        input with some of its lines left out, none changed."""
        def run(pieces):
            dropper = mime.HeaderFieldDropper([b"x-spam-"])
            return b"".join([*map(dropper.feed, pieces), dropper.finish()]), dropper
        whole, dropper = run([data])
        bounds = sorted({c % (len(data) + 1) for c in cuts})
        pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
        self.assertEqual(run(pieces)[0], whole)
        if dropper.dropped == 0:
            self.assertEqual(whole, data)
        kept = iter(data.splitlines(keepends=True))
        for line in whole.splitlines(keepends=True):   # a subsequence of the lines
            self.assertIn(line, kept)


class HeaderSectionCheckFuzz(unittest.TestCase):
    @FUZZ
    @given(messages, st.lists(st.integers(1, 3000), max_size=8),
           st.integers(1, 2000), st.integers(1, 40))
    def test_same_answer_however_cut(self, data, cuts, max_bytes, max_fields):
        """The check never raises and gives the same problem, size and
        field count fed whole or in any pieces."""
        limits = mime.HeaderLimits(max_bytes=max_bytes, max_fields=max_fields)
        whole = mime.HeaderSectionCheck(limits)
        whole.feed(data)
        pieces = mime.HeaderSectionCheck(limits)
        start = 0
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
            pieces.feed(data[start:cut])
            start = cut
        self.assertEqual((pieces.problem, pieces.done), (whole.problem, whole.done))
        if whole.problem is None:
            self.assertEqual((pieces.size, pieces.fields), (whole.size, whole.fields))
            self.assertLessEqual(whole.size, max_bytes)
            self.assertLessEqual(whole.fields, max_fields)
        self.assertEqual(mime.header_section_problem(io.BytesIO(data), limits), whole.problem)

    def test_regression_partial_name_then_body(self):
        """Found by the fuzzer: a line start that turns out not to be a field
        name was counted when cut after its first byte and not when fed
        whole."""
        limits = mime.HeaderLimits()
        whole = mime.HeaderSectionCheck(limits)
        whole.feed(b"a\x00rest")
        pieces = mime.HeaderSectionCheck(limits)
        pieces.feed(b"a")
        pieces.feed(b"\x00rest")
        self.assertEqual((whole.size, whole.done), (pieces.size, pieces.done))
        self.assertEqual(whole.size, 1)
