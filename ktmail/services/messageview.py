"""What a person sees of a stored message: decoded headers, the body text
(plain or HTML), the attachments and inline images, and the spam verdict.

Owns the choice of what is "the message text" in a MIME tree (RFC 2046:
the richest alternative we can show, the root of a multipart/related,
every inline text part of a multipart/mixed) and what is an attachment.
Pure: everything here reads the binary file it is given (a stored
message) at the byte offsets of its ``mime.Part`` tree and never holds
more than one body part's text, capped at ``MAX_TEXT_BYTES``; callers run
it on a worker thread. Attachments are not read here at all:
``PartReader`` streams one part's decoded bytes in chunks.

Sections are IMAP section paths (RFC 3501 §6.4.5) as tuples: ``(2, 1)``
is "2.1"; a message that is no multipart has its body at ``(1,)``.
"""

import binascii
import html as html_module
import re

import attrs

from ktmail import mime

#: the most text of one body part shown (the rest: download the message)
MAX_TEXT_BYTES = 4 * 1024 * 1024
#: header bytes read at the top of a message
MAX_HEADER_BYTES = 256 * 1024
CHUNK = 64 * 1024


def section_text(section):
    return ".".join(str(n) for n in section)


def parse_section(text):
    """"2.1" -> (2, 1); ValueError for anything else."""
    parts = tuple(int(p) for p in text.split("."))
    if not parts or any(p < 1 or p > 10000 for p in parts) or len(parts) > 64:
        raise ValueError(text)
    return parts


@attrs.frozen
class Attachment:
    section: tuple
    filename: str
    content_type: str
    #: decoded size, estimated from the encoded one (base64: 3/4)
    size: int
    content_id: str | None = None
    inline: bool = False


@attrs.frozen
class BodyPart:
    """One piece of the message text: ``kind`` "plain" or "html"."""

    section: tuple
    kind: str
    text: str = ""
    truncated: bool = False


@attrs.frozen
class SpamReport:
    """The ``X-Spam-Status:`` our delivery wrote: verdict, score and rule names."""

    is_spam: bool
    score: float | None
    required: float | None
    rules: tuple


@attrs.frozen
class MessageView:
    subject: str
    from_: tuple          # of (name, address)
    to: tuple
    cc: tuple
    bcc: tuple
    reply_to: tuple
    date: float | None    # POSIX seconds from Date:, or None
    date_text: str
    message_id: str | None
    references: str | None
    body: tuple           # of BodyPart
    attachments: tuple    # of Attachment (inline images included, ``inline`` set)
    spam: SpamReport | None

    @property
    def has_html(self):
        return any(p.kind == "html" for p in self.body)

    def content_ids(self):
        """{content-id without <>: section} of the parts an HTML body may show."""
        return {a.content_id: a.section for a in self.attachments if a.content_id}


# --- headers -----------------------------------------------------------------------------


def addresses(raw):
    """Raw address-list header value -> ((display name, address), ...), names decoded."""
    out = []
    for item in mime.parse_address_list(raw):
        if item.host is None:
            continue  # group markers
        name = mime.decode_header_value(item.name).strip() if item.name else ""
        address = item.address
        if item.mailbox == "MISSING_MAILBOX" or item.host == "MISSING_DOMAIN":
            address = ""
        if name or address:
            out.append((name, address))
    return tuple(out)


_SPAM_STATUS = re.compile(r"^\s*(yes|no)\b(.*)$", re.IGNORECASE | re.DOTALL)


def spam_report(raw):
    """Parse an ``X-Spam-Status:`` value (SpamAssassin layout); None if it is none."""
    if raw is None:
        return None
    text = " ".join(mime.unfold(raw).split())
    m = _SPAM_STATUS.match(text)
    if m is None:
        return None
    rest = m.group(2)

    def number(name):
        found = re.search(rf"\b{name}=(-?[0-9]+(?:\.[0-9]+)?)", rest)
        return float(found.group(1)) if found else None
    tests = re.search(r"\btests=([A-Za-z0-9_,\s]*)", rest)
    names = ()
    if tests:
        names = tuple(n for n in re.split(r"[,\s]+", tests.group(1))
                      if n and n.lower() != "none")
    return SpamReport(is_spam=m.group(1).lower() == "yes", score=number("score"),
                      required=number("required"), rules=names)


def _read(fileobj, start, end, limit):
    fileobj.seek(start)
    return fileobj.read(max(0, min(end - start, limit)))


# --- the part tree -------------------------------------------------------------------------


def leaves(part, path=()):
    """(section, part) of every leaf part; encapsulated messages are leaves."""
    if part.is_multipart and part.children:
        for number, child in enumerate(part.children, 1):
            yield from leaves(child, path + (number,))
    else:
        yield (path or (1,)), part


def _is_text_body(part):
    return (part.media_type == "text" and part.media_subtype in ("plain", "html")
            and not part.is_attachment)


def body_sections(part, path=()):
    """-> [(section, part)] of the parts that make the message text."""
    if part.is_multipart and part.children:
        children = list(enumerate(part.children, 1))
        if part.media_subtype == "alternative":
            # RFC 2046 §5.1.4: the last alternative is the richest; take the
            # last one we can show
            for number, child in reversed(children):
                found = body_sections(child, path + (number,))
                if found:
                    return found
            return []
        if part.media_subtype == "related":
            number, child = children[0]
            return body_sections(child, path + (number,))
        found = []
        for number, child in children:
            if child.is_multipart or _is_text_body(child):
                found.extend(body_sections(child, path + (number,)))
        return found
    if _is_text_body(part):
        return [(path or (1,), part)]
    return []


def decoded_size(part):
    if part.encoding == "base64":
        return part.size * 3 // 4 * 76 // 78
    return part.size


def default_filename(part, section, _=None):
    """A file name for a part that has none (``message.eml``, ``part-2.1.bin``)."""
    if part.media_type == "message":
        return "message.eml"
    extension = {"text/plain": "txt", "text/html": "html", "image/png": "png",
                 "image/jpeg": "jpg", "image/gif": "gif", "application/pdf": "pdf",
                 "text/calendar": "ics"}.get(part.content_type, "bin")
    return f"part-{section_text(section)}.{extension}"


def _alternatives(part, path=(), inside=False):
    """Sections of the text parts of multipart/alternative: the versions of
    the message text that were not chosen are no attachments either."""
    if part.is_multipart and part.children:
        inside = inside or part.media_subtype == "alternative"
        for number, child in enumerate(part.children, 1):
            yield from _alternatives(child, path + (number,), inside)
    elif inside and _is_text_body(part):
        yield path or (1,)


def attachments_of(structure, body):
    """The parts that are not the message text, in order."""
    in_body = {section for section, _ in body} | set(_alternatives(structure))
    found = []
    for section, part in leaves(structure):
        if section in in_body:
            continue
        if part.is_multipart or (part.size == 0 and not part.filename):
            continue
        cid = part.content_id.strip().strip("<>").strip() if part.content_id else None
        inline = bool(cid) and part.media_type == "image" and part.disposition != "attachment"
        found.append(Attachment(
            section=section, filename=part.filename or default_filename(part, section),
            content_type=part.content_type, size=decoded_size(part), content_id=cid or None,
            inline=inline))
    return tuple(found)


def part_text(fileobj, part, limit=MAX_TEXT_BYTES):
    """-> (decoded text of a text part, truncated?)."""
    encoded_limit = limit * 4 // 3 + 4 if part.encoding == "base64" else limit
    raw = _read(fileobj, part.body_start, part.body_end, encoded_limit)
    truncated = part.size > encoded_limit
    data = mime.decode_body(raw, part.encoding)
    charset = part.charset
    if not charset or charset.strip().lower() in ("us-ascii", "ascii"):
        charset = None  # 8-bit bytes in undeclared text are most likely UTF-8
    return mime.decode_bytes(data[:limit], charset), truncated


def read_view(fileobj, structure, with_text=True):
    """Build the MessageView of the message in ``fileobj`` (binary, seekable)
    whose part tree is ``structure``."""
    block = _read(fileobj, structure.header_start, structure.header_end, MAX_HEADER_BYTES)
    headers = mime.Headers(mime.parse_header_block(block))

    def decoded(name):
        value = headers.get(name)
        return mime.decode_header_value(value).strip() if value is not None else ""

    body_parts = body_sections(structure)
    body = []
    if with_text:
        for section, part in body_parts:
            text, truncated = part_text(fileobj, part)
            body.append(BodyPart(section=section, kind=part.media_subtype, text=text,
                                 truncated=truncated))
    raw_refs = headers.get("references")
    return MessageView(
        subject=decoded("subject"), from_=addresses(headers.get("from")),
        to=addresses(headers.get("to")), cc=addresses(headers.get("cc")),
        bcc=addresses(headers.get("bcc")), reply_to=addresses(headers.get("reply-to")),
        date=mime.parse_date(headers.get("date")), date_text=decoded("date"),
        message_id=mime.unfold(headers.get("message-id") or "").strip() or None,
        references=" ".join(mime.unfold(raw_refs).split()) if raw_refs else None,
        body=tuple(body), attachments=attachments_of(structure, body_parts),
        spam=spam_report(headers.get("x-spam-status")))


_BLOCK_END = re.compile(r"(?i)<\s*(br|/p|/div|/tr|/li|/h[1-6]|/table|/blockquote)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile(r"(?is)<\s*(style|script|head|title)\b.*?<\s*/\s*\1\s*>")


def html_to_text(html):
    """A rough plain-text rendering of HTML (to quote it in a reply)."""
    text = _INVISIBLE.sub("", html)
    text = _BLOCK_END.sub("\n", text)
    text = html_module.unescape(_TAG.sub("", text))
    lines = [" ".join(line.split()) for line in text.replace("\r", "").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- streaming one part ----------------------------------------------------------------------


class _Base64Decoder:
    def __init__(self):
        self.rest = b""

    def feed(self, data):
        data = self.rest + re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cut = len(data) - len(data) % 4
        self.rest = data[cut:]
        try:
            return binascii.a2b_base64(data[:cut])
        except binascii.Error:
            return b""

    def close(self):
        rest, self.rest = self.rest, b""
        return mime.decode_body(rest, "base64") if rest else b""


class _QuotedPrintableDecoder:
    def __init__(self):
        self.rest = b""

    def feed(self, data):
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        return mime.decode_body(data[:cut], "quoted-printable") if cut else b""

    def close(self):
        rest, self.rest = self.rest, b""
        return mime.decode_body(rest, "quoted-printable") if rest else b""


class _Identity:
    def feed(self, data):
        return data

    def close(self):
        return b""


class PartReader:
    """A file-like ``read(n)`` over one part's body, transfer encoding
    decoded on the fly (base64, quoted-printable); ``whole=True`` reads the
    part as stored (an encapsulated message, or the whole file). Holds one
    chunk at a time; closes the underlying file with ``close()``."""

    def __init__(self, fileobj, part=None, whole=False):
        self._file = fileobj
        if part is None:
            self._pos, self._end = 0, None
            self._decoder = _Identity()
        else:
            start = part.header_start if whole else part.body_start
            self._pos, self._end = start, part.body_end
            encoding = "7bit" if whole else part.encoding
            self._decoder = {"base64": _Base64Decoder,
                             "quoted-printable": _QuotedPrintableDecoder}.get(
                                 encoding, _Identity)()
        self._buffer = b""
        self._done = False

    def read(self, size=CHUNK):
        while len(self._buffer) < size and not self._done:
            want = CHUNK if self._end is None else min(CHUNK, self._end - self._pos)
            data = b""
            if want > 0:
                self._file.seek(self._pos)
                data = self._file.read(want)
            if not data:
                self._buffer += self._decoder.close()
                self._done = True
                break
            self._pos += len(data)
            self._buffer += self._decoder.feed(data)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def close(self):
        self._file.close()
