"""The MIME structure parser: real-world shapes, exact offsets, decoding, and
that no input whatsoever makes it raise."""

import base64
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from ktmail import mime


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


def parse(data):
    return mime.parse(io.BytesIO(data))


def body_of(data, part):
    return data[part.body_start:part.body_end]


def header_of(data, part):
    return data[part.header_start:part.header_end]


SIMPLE = crlf("""\
From: Anna Andersson <anna@example.com>
To: bo@sboksi.fi, "Cecilia C." <cecilia@brev.fi>
Subject: Hello
Date: Mon, 13 Nov 2023 10:00:00 +0200
Message-ID: <abc@example.com>

Line one
Line two
""")

MIXED = crlf("""\
From: a@example.com
Subject: Report
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a multi-part message in MIME format.
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hej p=C3=A5 dig
--inner
Content-Type: text/html; charset=utf-8

<p>Hej</p>
--inner--
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64
Content-ID: <pdf1@example.com>
Content-Description: The report

JVBERi0xLjQK
AAAA
--outer--
epilogue text
""")

NESTED = crlf("""\
From: outer@example.com
Subject: Fwd: inner
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain

See below.
--b1
Content-Type: message/rfc822

From: =?utf-8?q?J=C3=B6rg?= <jorg@example.de>
Subject: =?iso-8859-1?q?Gr=FC=DFe?=
Content-Type: multipart/mixed; boundary=b2

--b2
Content-Type: text/plain

inner text
--b2
Content-Type: image/gif
Content-Transfer-Encoding: base64

R0lGODlh
--b2--

--b1--
""")


class SimpleMessageTests(unittest.TestCase):
    def test_single_part_offsets_and_lines(self):
        """A plain message: the header block includes its blank line, the body
        runs to the end, lines are counted, the default type is text/plain."""
        root = parse(SIMPLE)
        self.assertTrue(header_of(SIMPLE, root).endswith(b"<abc@example.com>\r\n\r\n"))
        self.assertEqual(body_of(SIMPLE, root), b"Line one\r\nLine two\r\n")
        self.assertEqual((root.header_start, root.body_end), (0, len(SIMPLE)))
        self.assertEqual(root.body_lines, 2)
        self.assertEqual((root.content_type, root.charset, root.encoding),
                         ("text/plain", "us-ascii", "7bit"))
        self.assertEqual(root.size, len(b"Line one\r\nLine two\r\n"))
        self.assertEqual(root.children, [])

    def test_envelope(self):
        """The RFC 3501 ENVELOPE: raw strings, addresses split, sender and
        reply-to defaulting to from."""
        env = parse(SIMPLE).envelope
        self.assertEqual(env.subject, "Hello")
        self.assertEqual(env.date, "Mon, 13 Nov 2023 10:00:00 +0200")
        self.assertEqual(env.message_id, "<abc@example.com>")
        self.assertEqual(env.from_, (mime.EnvelopeAddress("Anna Andersson", None, "anna",
                                                          "example.com"),))
        self.assertEqual(env.sender, env.from_)
        self.assertEqual(env.reply_to, env.from_)
        self.assertEqual(env.to, (mime.EnvelopeAddress(None, None, "bo", "sboksi.fi"),
                                  mime.EnvelopeAddress("Cecilia C.", None, "cecilia",
                                                       "brev.fi")))
        self.assertEqual((env.cc, env.bcc, env.in_reply_to), ((), (), None))

    def test_summary_fields(self):
        """The index summary: decoded fields and the sent date as POSIX time."""
        summary = mime.summarize(io.BytesIO(SIMPLE))
        self.assertEqual(summary.fields["hdr_to"], 'bo@sboksi.fi, "Cecilia C." <cecilia@brev.fi>')
        self.assertEqual(summary.sent_date, 1699862400.0)
        self.assertEqual(summary.fields["message_id"], "<abc@example.com>")
        self.assertEqual(summary.envelope.subject, "Hello")

    def test_no_trailing_newline(self):
        """A last line without CRLF is still a line and part of the body."""
        data = b"Subject: x\r\n\r\nno newline at the end"
        root = parse(data)
        self.assertEqual(body_of(data, root), b"no newline at the end")
        self.assertEqual(root.body_lines, 1)

    def test_headers_only(self):
        """A message that ends inside its header block has an empty body."""
        data = b"Subject: only headers\r\nFrom: a@b.c"
        root = parse(data)
        self.assertEqual((root.header_end, root.body_start, root.body_end),
                         (len(data),) * 3)
        self.assertEqual(root.envelope.subject, "only headers")

    def test_lf_only_message(self):
        """Bare LF line endings (another tool's file) are understood."""
        data = b"Subject: lf\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nbody\n--x--\n"
        root = parse(data)
        [child] = root.children
        self.assertEqual(body_of(data, child), b"body")

    def test_empty_input(self):
        """Nothing at all is an empty text/plain message."""
        root = parse(b"")
        self.assertEqual((root.content_type, root.body_end, root.body_lines),
                         ("text/plain", 0, 0))
        self.assertEqual(root.envelope, mime.Envelope())

    def test_mbox_from_line_is_skipped(self):
        """An mbox 'From ' separator line at the top is not a header field."""
        data = b"From someone@example.com Mon Jan  1 00:00:00 2024\r\nSubject: s\r\n\r\nb\r\n"
        root = parse(data)
        self.assertEqual(root.envelope.subject, "s")
        self.assertEqual(body_of(data, root), b"b\r\n")

    def test_body_starting_without_blank_line(self):
        """A line that is no header field ends the header block: the body
        starts there."""
        data = b"Subject: s\r\nthis is body text\r\n"
        root = parse(data)
        self.assertEqual(body_of(data, root), b"this is body text\r\n")


class MultipartTests(unittest.TestCase):
    def test_mixed_with_alternative_and_attachment(self):
        """multipart/mixed with a nested alternative and a base64 attachment:
        every offset is exact, the CRLF before a boundary is not body."""
        root = parse(MIXED)
        self.assertEqual(root.content_type, "multipart/mixed")
        alternative, attachment = root.children
        self.assertEqual(alternative.content_type, "multipart/alternative")
        plain, html = alternative.children
        self.assertEqual(body_of(MIXED, plain), b"Hej p=C3=A5 dig")
        self.assertEqual(plain.body_lines, 1)
        self.assertEqual((plain.charset, plain.encoding), ("utf-8", "quoted-printable"))
        self.assertEqual(mime.decode_body(body_of(MIXED, plain), plain.encoding).decode(),
                         "Hej på dig")
        self.assertEqual(header_of(MIXED, html),
                         b"Content-Type: text/html; charset=utf-8\r\n\r\n")
        self.assertEqual(body_of(MIXED, html), b"<p>Hej</p>")
        self.assertEqual(body_of(MIXED, attachment), b"JVBERi0xLjQK\r\nAAAA")
        self.assertEqual(attachment.body_lines, 2)
        self.assertEqual((attachment.filename, attachment.disposition, attachment.encoding),
                         ("report.pdf", "attachment", "base64"))
        self.assertEqual(attachment.content_id, "<pdf1@example.com>")
        self.assertEqual(attachment.description, "The report")
        self.assertTrue(attachment.is_attachment)
        self.assertFalse(plain.is_attachment)
        self.assertEqual(mime.decode_body(body_of(MIXED, attachment), "base64"),
                         b"%PDF-1.4\n\x00\x00\x00")
        self.assertTrue(body_of(MIXED, root).startswith(b"This is a multi-part"))
        self.assertTrue(body_of(MIXED, root).endswith(b"epilogue text\r\n"))
        self.assertEqual(root.body_end, len(MIXED))
        self.assertTrue(body_of(MIXED, alternative).endswith(b"--inner--"))

    def test_sections(self):
        """IMAP section numbers find the parts (RFC 3501 §6.4.5)."""
        root = parse(MIXED)
        self.assertIs(root.find(()), root)
        self.assertEqual(root.find((1, 2)).content_type, "text/html")
        self.assertEqual(root.find((2,)).content_type, "application/pdf")
        self.assertIsNone(root.find((3,)))
        self.assertIsNone(root.find((2, 2)))
        self.assertIs(root.find((2, 1)), root.find((2,)))
        single = parse(SIMPLE)
        self.assertIs(single.find((1,)), single)
        self.assertIsNone(single.find((0,)))

    def test_nested_message(self):
        """message/rfc822 carries the encapsulated message: its own envelope,
        its parts, its offsets; BODY[2] is the whole inner message."""
        root = parse(NESTED)
        text, forwarded = root.children
        self.assertEqual(body_of(NESTED, text), b"See below.")
        self.assertEqual(forwarded.content_type, "message/rfc822")
        inner = forwarded.message
        self.assertEqual(inner.header_start, forwarded.body_start)
        self.assertTrue(body_of(NESTED, forwarded).startswith(b"From: =?utf-8?q?J=C3=B6rg?="))
        self.assertTrue(body_of(NESTED, forwarded).endswith(b"--b2--\r\n"))
        self.assertEqual(inner.envelope.subject, "=?iso-8859-1?q?Gr=FC=DFe?=")
        self.assertEqual(inner.envelope.from_[0].name, "=?utf-8?q?J=C3=B6rg?=")
        self.assertEqual(inner.content_type, "multipart/mixed")
        self.assertEqual(root.find((2, 1)).content_type, "text/plain")
        self.assertEqual(body_of(NESTED, root.find((2, 1))), b"inner text")
        gif = root.find((2, 2))
        self.assertEqual((gif.content_type, body_of(NESTED, gif)), ("image/gif", b"R0lGODlh"))
        self.assertEqual(forwarded.body_lines, body_of(NESTED, forwarded).count(b"\n"))
        self.assertEqual([p.content_type for p in root.walk()],
                         ["multipart/mixed", "text/plain", "message/rfc822", "multipart/mixed",
                          "text/plain", "image/gif"])

    def test_digest_parts_default_to_message(self):
        """In multipart/digest a part without Content-Type is message/rfc822."""
        data = crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\n"
                    "Subject: one\n\nfirst\n--d--\n")
        [part] = parse(data).children
        self.assertEqual(part.content_type, "message/rfc822")
        self.assertEqual(part.message.envelope.subject, "one")

    def test_missing_close_delimiter(self):
        """A multipart cut off before its close delimiter ends at the end."""
        data = crlf("Content-Type: multipart/mixed; boundary=z\n\n--z\n\none\n--z\n\ntwo\n")
        root = parse(data)
        self.assertEqual([body_of(data, c) for c in root.children], [b"one", b"two\r\n"])
        self.assertEqual(root.body_end, len(data))

    def test_boundary_never_seen(self):
        """A multipart whose boundary never appears has no parts, which IMAP
        cannot express: it is read as text/plain."""
        data = crlf("Content-Type: multipart/mixed; boundary=never\n\njust text\n")
        root = parse(data)
        self.assertEqual((root.content_type, root.children), ("text/plain", []))
        self.assertEqual(body_of(data, root), b"just text\r\n")

    def test_multipart_without_boundary(self):
        """Without a boundary parameter the body is opaque."""
        root = parse(crlf("Content-Type: multipart/mixed\n\n--x\n\nbody\n"))
        self.assertEqual((root.content_type, root.children), ("application/octet-stream", []))

    def test_outer_boundary_ends_inner_parts(self):
        """An outer delimiter also ends an unterminated inner multipart
        (RFC 2046 §5.1.2)."""
        data = crlf("Content-Type: multipart/mixed; boundary=out\n\n--out\n"
                    "Content-Type: multipart/alternative; boundary=in\n\n--in\n\nA\n"
                    "--out\n\nB\n--out--\n")
        root = parse(data)
        inner, second = root.children
        [a] = inner.children
        self.assertEqual((body_of(data, a), body_of(data, second)), (b"A", b"B"))

    def test_boundary_prefix_of_another(self):
        """A boundary that begins like another one is told apart."""
        data = crlf("Content-Type: multipart/mixed; boundary=ab\n\n--ab\n"
                    "Content-Type: multipart/mixed; boundary=abc\n\n--abc\n\nX\n--abc--\n"
                    "--ab--\n")
        root = parse(data)
        [inner] = root.children
        [x] = inner.children
        self.assertEqual(body_of(data, x), b"X")

    def test_lookalike_lines_are_body(self):
        """Lines beginning with '--' that are not delimiters stay in the body;
        delimiters may carry trailing white space."""
        data = crlf("Content-Type: multipart/mixed; boundary=q\n\n--q\n\n-- \nsig\n--qq\n"
                    "--q  \n\nnext\n--q--\n")
        first, second = parse(data).children
        self.assertEqual(body_of(data, first), b"-- \r\nsig\r\n--qq")
        self.assertEqual(body_of(data, second), b"next")

    def test_empty_parts(self):
        """Parts with no header or no body have empty, consistent ranges."""
        data = crlf("Content-Type: multipart/mixed; boundary=e\n\n--e\n--e\n\n--e--\n")
        first, second = parse(data).children
        for part in (first, second):
            self.assertEqual((part.size, part.body_lines), (0, 0))
            self.assertLessEqual(part.header_end, part.body_end)

    def test_deep_nesting_is_bounded(self):
        """Hundreds of nested multiparts do not exhaust the stack: beyond
        MAX_DEPTH a part is a leaf."""
        depth = mime.MAX_DEPTH * 3
        head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
                       for i in range(depth))
        tail = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
        root = parse(crlf(head + "\nleaf\n" + tail))
        levels = 0
        part = root
        while part.children:
            part = part.children[0]
            levels += 1
        self.assertEqual(levels, mime.MAX_DEPTH)

    def test_many_parts_are_bounded(self):
        """A message of tens of thousands of tiny parts stops at MAX_PARTS."""
        count = mime.MAX_PARTS + 500
        data = crlf("Content-Type: multipart/mixed; boundary=p\n\n" + "--p\n\nx\n" * count
                    + "--p--\n")
        root = parse(data)
        self.assertLess(len(root.children), mime.MAX_PARTS)
        self.assertEqual(root.body_end, len(data))

    def test_huge_header_block(self):
        """A header block far beyond MAX_HEADER_BYTES still ends at its blank
        line; only the first MAX_HEADER_BYTES of it are parsed."""
        data = b"Subject: first\r\n" + b"X-Filler: y\r\n" * 60000 + b"\r\nbody"
        root = parse(data)
        self.assertEqual(body_of(data, root), b"body")
        self.assertEqual(root.envelope.subject, "first")

    def test_header_budget_per_message(self):
        """Past MAX_MESSAGE_HEADER_BYTES, later parts' headers are skipped:
        their offsets stay exact and their types are the defaults."""
        filler = b"X-Filler: y\r\n" * (mime.MAX_HEADER_BYTES // 14 + 10)
        count = mime.MAX_MESSAGE_HEADER_BYTES // mime.MAX_HEADER_BYTES + 3
        data = (b"Content-Type: multipart/mixed; boundary=p\r\n\r\n"
                + (b"--p\r\nContent-Type: image/png\r\n" + filler + b"\r\nx\r\n") * count
                + b"--p--\r\n")
        root = parse(data)
        self.assertEqual(len(root.children), count)
        self.assertEqual([body_of(data, c) for c in root.children], [b"x"] * count)
        self.assertEqual(root.children[0].content_type, "image/png")
        self.assertEqual(root.children[-1].content_type, "text/plain")

    def test_big_attachment_is_streamed(self):
        """A 20 MB attachment is scanned, not kept: offsets and line counts are
        exact and reads never exceed one chunk."""
        line = b"A" * 76 + b"\r\n"
        lines = 20 * 1024 * 1024 // len(line)
        data = (crlf("Content-Type: multipart/mixed; boundary=big\n\n--big\n\nhi\n--big\n"
                     "Content-Type: application/octet-stream\n"
                     "Content-Transfer-Encoding: base64\n\n") + line * lines
                + b"--big--\r\n")

        class CountingFile(io.BytesIO):
            biggest = 0

            def read(self, n=-1):
                CountingFile.biggest = max(CountingFile.biggest, n)
                return super().read(n)

        root = mime.parse(CountingFile(data))
        big = root.children[1]
        self.assertEqual(big.size, len(line) * lines - 2)
        self.assertEqual(big.body_lines, lines)
        self.assertEqual(CountingFile.biggest, mime.CHUNK)


class DecodingTests(unittest.TestCase):
    def test_encoded_words(self):
        """RFC 2047: B and Q words, charsets, adjacent words joined without
        the space between them, split multi-byte characters rejoined."""
        cases = {
            "=?utf-8?q?M=C3=B6te_p=C3=A5_fredag?=": "Möte på fredag",
            "=?ISO-8859-1?B?SvZyZw==?= Schmidt": "Jörg Schmidt",
            "=?utf-8?q?a?= =?utf-8?q?b?=": "ab",
            "=?utf-8?q?a?=\r\n =?utf-8?q?b?= c": "ab c",
            "=?utf-8?b?w6Q=?= =?utf-8?b?w7Y=?=": "äö",
            "=?utf-8?b?4oK=?==?utf-8?b?rA==?=": "€",
            "=?utf-8*sv?q?hej?=": "hej",
            "plain =?bogus-charset?q?x?= text": "plain x text",
            "=?utf-8?q?broken": "=?utf-8?q?broken",
            "Prefix=?utf-8?q?=C3=A5?=suffix": "Prefixåsuffix",
        }
        for raw, decoded in cases.items():
            self.assertEqual(mime.decode_header_value(raw), decoded, raw)

    def test_raw_8bit_headers(self):
        """Unencoded 8-bit headers: UTF-8 if valid, else Windows-1252; the raw
        text keeps the exact bytes."""
        data = b"Subject: R\xe4kning\r\nFrom: \xc3\x85sa <asa@x.fi>\r\n\r\n"
        summary = mime.summarize(io.BytesIO(data))
        self.assertEqual(summary.subject, "Räkning")
        self.assertEqual(summary.fields["hdr_from"], "Åsa <asa@x.fi>")
        env = summary.envelope
        self.assertEqual(mime.raw_bytes(env.subject), b"R\xe4kning")
        self.assertEqual(json.loads(json.dumps(summary.structure.to_json()))["env"][1],
                         env.subject)

    def test_rfc2231_parameters(self):
        """RFC 2231 continuations, charsets and percent-encoding are decoded;
        RFC 2047 words in quoted names too; paths are cut to the file name."""
        data = crlf("Content-Type: application/pdf;\n"
                    " name*0*=utf-8''Kvitto%20f%C3%B6r;\n name*1=\" mars.pdf\"\n"
                    "Content-Disposition: attachment;\n"
                    " filename=\"=?utf-8?q?R=C3=A4kning.pdf?=\"\n\nx")
        part = parse(data)
        self.assertEqual(part.param("name"), "Kvitto för mars.pdf")
        self.assertEqual(part.filename, "Räkning.pdf")
        self.assertEqual(part.params, (("name*0*", "utf-8''Kvitto%20f%C3%B6r"),
                                       ("name*1", " mars.pdf")))
        evil = parse(crlf('Content-Disposition: attachment; filename="../../etc/passwd"\n\nx'))
        self.assertEqual(evil.filename, "passwd")

    def test_content_type_oddities(self):
        """Comments, case, spaces and bad syntax in Content-Type."""
        part = parse(crlf('Content-Type: Text/HTML (comment) ; Charset = "UTF-8" ;\n\nx'))
        self.assertEqual((part.content_type, part.charset), ("text/html", "UTF-8"))
        bad = parse(crlf("Content-Type: garbage\nContent-Transfer-Encoding: BASE64\n\nx"))
        self.assertEqual((bad.content_type, bad.charset, bad.encoding),
                         ("text/plain", "us-ascii", "base64"))
        self.assertEqual(parse(crlf("Content-Language: sv, en-GB\n\nx")).language,
                         ("sv", "en-GB"))

    def test_addresses(self):
        """Groups, routes, quoted local parts, comments as names, and
        addresses without a domain, as RFC 3501 ENVELOPE wants them."""
        A = mime.EnvelopeAddress
        cases = {
            "undisclosed-recipients:;": (A(None, None, "undisclosed-recipients", None),
                                         A(None, None, None, None)),
            "Team: a@x.fi, B <b@y.fi>;, c@z.fi": (
                A(None, None, "Team", None), A(None, None, "a", "x.fi"),
                A("B", None, "b", "y.fi"), A(None, None, None, None),
                A(None, None, "c", "z.fi")),
            "<@relay.example:user@host.example>": (
                A(None, "@relay.example", "user", "host.example"),),
            '"odd local"@example.com': (A(None, None, '"odd local"', "example.com"),),
            "joe@example.com (Joe Q. Public)": (A("Joe Q. Public", None, "joe",
                                                  "example.com"),),
            '"Last, First" <lf@example.com>': (A("Last, First", None, "lf", "example.com"),),
            "localonly": (A(None, None, "localonly", "MISSING_DOMAIN"),),
            "": (),
            "<>": (),
        }
        for raw, expected in cases.items():
            self.assertEqual(mime.parse_address_list(raw), expected, raw)

    def test_dates(self):
        """Date: headers become POSIX seconds; garbage becomes None."""
        self.assertEqual(mime.parse_date("Thu, 1 Jan 1970 00:00:10 +0000"), 10.0)
        self.assertEqual(mime.parse_date("1 Jan 1970 02:00:00 +0200"), 0.0)
        for bad in (None, "", "yesterday", "Mon, 99 Foo 20x4"):
            self.assertIsNone(mime.parse_date(bad))

    def test_decode_body(self):
        """Transfer encodings are undone; broken base64 does not raise."""
        self.assertEqual(mime.decode_body(b"aGVs\r\nbG8=", "base64"), b"hello")
        self.assertEqual(mime.decode_body(b"a=3Db=\r\nc", "quoted-printable"), b"a=bc")
        self.assertEqual(mime.decode_body(b"!!**", "BASE64"), b"")
        self.assertEqual(mime.decode_body(b"aGVs!!bG8=", "BASE64"), b"hello")
        self.assertEqual(mime.decode_body(b"raw", "8bit"), b"raw")

    def test_header_block_parser(self):
        """parse_header_block keeps folding, order and repeated names."""
        fields = mime.parse_header_block(b"Received: a\r\n b\r\nX-Y : z\r\nReceived: c\r\n\r\n")
        self.assertEqual(fields, [("received", "a\r\n b"), ("x-y", "z"), ("received", "c")])
        self.assertEqual(mime.Headers(fields).get_all("received"), ["a\r\n b", "c"])


class CacheFormTests(unittest.TestCase):
    def test_json_round_trip(self):
        """to_json/from_json give back the same tree (the index cache)."""
        for data in (SIMPLE, MIXED, NESTED):
            root = parse(data)
            again = mime.Part.from_json(json.loads(json.dumps(root.to_json())))
            self.assertEqual(again, root)

    def test_summary_cache_round_trip(self):
        """A MessageSummary survives the index cache."""
        summary = mime.summarize(io.BytesIO(NESTED))
        fields, structure = summary.to_cache()
        again = mime.MessageSummary.from_cache(json.loads(json.dumps(fields)),
                                               json.loads(json.dumps(structure)))
        self.assertEqual(again, summary)


def check_invariants(test, data, root):
    """Offsets nest and stay inside the data; the cache form round-trips."""
    def check(part, low, high):
        test.assertTrue(low <= part.header_start <= part.header_end <= part.body_start
                        <= part.body_end <= high, part)
        test.assertGreaterEqual(part.body_lines, 0)
        if part.message is not None:
            check(part.message, part.body_start, part.body_end)
        last = part.body_start
        for child in part.children:
            check(child, last, part.body_end)
            last = child.body_end
    check(root, 0, len(data))
    test.assertEqual(mime.Part.from_json(json.loads(json.dumps(root.to_json()))), root)


_SEEDS = [SIMPLE, MIXED, NESTED]
_PIECES = st.sampled_from([b"\r\n", b"\n", b"--", b"--outer", b"--inner--", b"--b1\r\n",
                           b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n",
                           b"Content-Type: message/rfc822\r\n", b"\r\n\r\n", b":", b"=?",
                           b"?=", b"\x00", b"\xff\xfe", b" ", b"\t", b"\"", b"(", b"<", b";",
                           b"=?utf-8?b?", b"name*0*=", b"'", b"%"])


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 2))
        if action == 0:
            data[pos:pos] = draw(_PIECES)
        elif action == 1:
            del data[pos:pos + draw(st.integers(1, 40))]
        else:
            data[pos:pos] = draw(st.binary(max_size=20))
    return bytes(data)


class NeverRaisesTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=3000))
    def test_random_bytes(self, data):
        """Any bytes at all parse, with consistent offsets."""
        check_invariants(self, data, mime.summarize(io.BytesIO(data)).structure)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated())
    def test_mutated_real_messages(self, data):
        """Real messages with cut, doubled and garbled pieces parse, with
        consistent offsets."""
        check_invariants(self, data, mime.summarize(io.BytesIO(data)).structure)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300))
    def test_random_header_values(self, text):
        """Header value helpers take any text."""
        mime.decode_header_value(text)
        mime.parse_address_list(text)
        mime.parse_parameterized(text)
        mime.decode_param(mime.parse_parameterized("x/y;" + text)[1], "name")
        mime.parse_date(text)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200), st.sampled_from(["base64", "quoted-printable", "x"]))
    def test_random_bodies(self, data, encoding):
        """decode_body takes any bytes."""
        mime.decode_body(data, encoding)

    def test_base64_padding_garbage(self):
        """Odd base64 lengths decode what they can."""
        self.assertEqual(mime.decode_body(base64.b64encode(b"hello")[:-1], "base64")[:3], b"hel")


class HeaderFieldDropperTests(unittest.TestCase):
    CASES = (
        # (message, kept)
        (b"X-Spam-Status: No\r\nSubject: hi\r\n\r\nbody\r\n",
         b"Subject: hi\r\n\r\nbody\r\n"),
        # any case, continuation lines go with their field
        (b"From: a@b\r\nx-spam-flag: NO\r\n\tstill it\r\n more\r\nTo: c@d\r\n\r\nb\r\n",
         b"From: a@b\r\nTo: c@d\r\n\r\nb\r\n"),
        # obsolete syntax: white space before the colon
        (b"X-SPAM-Score \t: 0\r\nA: 1\r\n\r\n", b"A: 1\r\n\r\n"),
        # other fields of that look are kept
        (b"X-Spammy: 1\r\nX-Spam: 2\r\n\r\n", b"X-Spammy: 1\r\nX-Spam: 2\r\n\r\n"),
        # the body is never touched
        (b"A: 1\r\n\r\nX-Spam-Status: No\r\n", b"A: 1\r\n\r\nX-Spam-Status: No\r\n"),
        # a line that is not a field ends the header section
        (b"A: 1\r\nnot a field\r\nX-Spam-Flag: NO\r\n",
         b"A: 1\r\nnot a field\r\nX-Spam-Flag: NO\r\n"),
        # no body, no final CRLF
        (b"A: 1\r\nX-Spam-Flag: NO", b"A: 1\r\n"),
        (b"X-Spam-Flag: NO\r\n", b""),
        (b"", b""),
    )

    def run_pieces(self, data, cuts):
        dropper = mime.HeaderFieldDropper([b"x-spam-"])
        out, start = [], 0
        for cut in [*cuts, len(data)]:
            out.append(dropper.feed(data[start:cut]))
            start = cut
        out.append(dropper.finish())
        return b"".join(out)

    def test_table(self):
        for data, kept in self.CASES:
            with self.subTest(data=data):
                self.assertEqual(self.run_pieces(data, []), kept)

    def test_cut_anywhere(self):
        """The same bytes come out however the message arrives in pieces."""
        for data, kept in self.CASES:
            for i in range(len(data) + 1):
                with self.subTest(data=data, cut=i):
                    self.assertEqual(self.run_pieces(data, [i]), kept)
            with self.subTest(data=data, bytewise=True):
                self.assertEqual(self.run_pieces(data, range(1, len(data))), kept)
