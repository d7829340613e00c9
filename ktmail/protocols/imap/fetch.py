"""FETCH data items (RFC 3501 §6.4.5, §7.4.2) from the index and the MIME tree.

Owns how a message's cached summary (``mime.MessageSummary``: ENVELOPE,
part tree with byte offsets) becomes ENVELOPE, BODY and BODYSTRUCTURE, and
which byte range of the message file a ``BODY[section]<partial>`` is.
Pure: ranges are computed here, the bytes are read by the caller.

Invariants:
- a section is always a contiguous byte range of the stored file (CRLF
  line endings, exactly the bytes IMAP serves), except HEADER.FIELDS[.NOT],
  which is a filtered copy of a header block; the partial ``<o.n>`` is
  applied to that range or text, so exactly the requested octets are sent
  (the Twisted bug #5613 does not apply);
- BODYSTRUCTURE and ENVELOPE strings are the raw header bytes (encoded
  words stay encoded, as RFC 3501 asks); ``wire.string`` makes anything
  that is not plain 7-bit text a literal.
"""

import binascii
import re
import tempfile

from ktmail import mime
from ktmail.protocols.imap import wire

NIL = b"NIL"


# --- ENVELOPE ---------------------------------------------------------------------------


def _address(a):
    return b"(" + b" ".join((wire.nstring(a.name), wire.nstring(a.adl),
                              wire.nstring(a.mailbox), wire.nstring(a.host))) + b")"


def _addresses(items):
    if not items:
        return NIL
    return b"(" + b"".join(_address(a) for a in items) + b")"


def envelope(env):
    """RFC 3501 ENVELOPE of a ``mime.Envelope`` (or an empty one for None)."""
    if env is None:
        env = mime.Envelope()
    return b"(" + b" ".join((
        wire.nstring(env.date), wire.nstring(env.subject), _addresses(env.from_),
        _addresses(env.sender), _addresses(env.reply_to), _addresses(env.to),
        _addresses(env.cc), _addresses(env.bcc), wire.nstring(env.in_reply_to),
        wire.nstring(env.message_id))) + b")"


# --- BODY / BODYSTRUCTURE -------------------------------------------------------------------


def joined_params(params):
    """RFC 2231 parameters decoded (RFC 9051 §6.4.5 BODYSTRUCTURE: the
    server SHOULD decode value continuations): ``name*0*``, ``name*1``... and
    ``name*`` become one ``name`` with its decoded value; other parameters
    stay as they are."""
    out = []
    done = set()
    for key, value in params:
        name = mime.rfc2231_name(key)
        if name is None:
            out.append((key, value))
            continue
        if name not in done:
            done.add(name)
            decoded = mime.decode_param(params, name)
            out.append((name, decoded if decoded is not None else value))
    return tuple(out)


def _params(params, decode=False):
    if not params:
        return NIL
    if decode:
        params = joined_params(params)
    return b"(" + b" ".join(wire.string(name) + b" " + wire.string(value)
                            for name, value in params) + b")"


def _disposition(part, decode=False):
    if part.disposition is None:
        return NIL
    return b"(" + wire.string(part.disposition) + b" " \
        + _params(part.disposition_params, decode) + b")"


def _language(part):
    if not part.language:
        return NIL
    if len(part.language) == 1:
        return wire.string(part.language[0])
    return b"(" + b" ".join(wire.string(t) for t in part.language) + b")"


def body_structure(part, extended=True, decode_params=False):
    """BODYSTRUCTURE (``extended``) or BODY of a ``mime.Part``; with
    ``decode_params`` (IMAP4rev2) RFC 2231 parameters are decoded."""
    if part.is_multipart and part.children:
        out = b"(" + b"".join(body_structure(c, extended, decode_params)
                              for c in part.children)
        out += b" " + wire.string(part.media_subtype)
        if extended:
            out += b" " + b" ".join((_params(part.params, decode_params),
                                     _disposition(part, decode_params), _language(part),
                                     wire.nstring(part.location)))
        return out + b")"
    fields = [wire.string(part.media_type), wire.string(part.media_subtype),
              _params(part.params, decode_params), wire.nstring(part.content_id),
              wire.nstring(part.description), wire.string(part.encoding),
              b"%d" % part.size]
    if part.message is not None:
        fields += [envelope(part.message.envelope),
                   body_structure(part.message, extended, decode_params),
                   b"%d" % part.body_lines]
    elif part.media_type == "text":
        fields.append(b"%d" % part.body_lines)
    if extended:
        fields += [wire.nstring(part.md5), _disposition(part, decode_params), _language(part),
                   wire.nstring(part.location)]
    return b"(" + b" ".join(fields) + b")"


# --- sections --------------------------------------------------------------------------


def section_range(structure, section, size):
    """The bytes of ``section`` as (start, end) in the file, or None when the
    message has no such part. HEADER.FIELDS sections give the range of the
    header block to filter (see ``filter_header``)."""
    if not section.part:
        if section.text is None:
            return (0, size)
        if section.text == "TEXT":
            return (structure.body_start, size)
        return (structure.header_start, structure.header_end)  # HEADER, HEADER.FIELDS*
    part = structure.find(section.part)
    if part is None:
        return None
    if section.text is None:
        return (part.body_start, part.body_end)
    if section.text == "MIME":
        return (part.header_start, part.header_end)
    inner = part.message
    if inner is None:
        # HEADER/TEXT of a part that is no message/rfc822: nothing there
        return (part.body_start, part.body_start)
    if section.text == "TEXT":
        return (inner.body_start, inner.body_end)
    return (inner.header_start, inner.header_end)


_FIELD_START = re.compile(rb"([!-9;-~]+)[ \t]*:")


def filter_header(block, fields, keep):
    """The header fields of a raw block named in ``fields`` (``keep``) or not
    named there (HEADER.FIELDS.NOT), with their folding, and the blank line."""
    wanted = {f.lower() for f in fields}
    out = []
    current = None
    for line in block.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if current:
                out.append(line)
            continue
        m = _FIELD_START.match(line)
        if m is None:
            current = False
            continue
        current = (m.group(1).lower() in wanted) == keep
        if current:
            out.append(line)
    return b"".join(line + b"\r\n" for line in out) + b"\r\n"


def apply_partial(start, end, partial):
    """Narrow (start, end) to ``<origin.length>``."""
    if partial is None:
        return start, end
    origin, length = partial
    begin = min(start + origin, end)
    return begin, min(begin + length, end)


def body_label(item):
    """``BODY[1.TEXT]<0>`` as the response names the item (RFC 3501 §7.4.2:
    the partial shows only the origin)."""
    label = b"BODY[" + item.section.label() + b"]"
    if item.partial is not None:
        label += b"<%d>" % item.partial[0]
    return label


def needs_structure(items):
    """Do these items need the MIME tree? (Flags, sizes, whole messages and
    top-level header fields do not.)"""
    for item in items:
        if item.name in ("ENVELOPE", "BODYSTRUCTURE", "RFC822.TEXT"):
            return True
        if item.name == "BODY" and item.section is None:
            return True
        if item.section is not None and (item.section.part or item.section.text == "TEXT"):
            return True
    return False


# --- BINARY (RFC 3516) ----------------------------------------------------------------------


class UnknownCTE(Exception):
    """The part's Content-Transfer-Encoding cannot be decoded (RFC 3516 §4.3
    [UNKNOWN-CTE])."""


def binary_target(structure, section, size):
    """The bytes of a BINARY section: (start, end, encoding) with encoding
    "base64", "quoted-printable" or None (sent as it is: a whole message, a
    multipart or message/rfc822 body, 7bit/8bit/binary); None when the
    message has no such part. UnknownCTE for other encodings."""
    if not section.part:
        return (0, size, None)
    part = structure.find(section.part)
    if part is None:
        return None
    if part.is_multipart or part.message is not None:
        return (part.body_start, part.body_end, None)
    encoding = (part.encoding or "7bit").lower()
    if encoding in ("7bit", "8bit", "binary"):
        return (part.body_start, part.body_end, None)
    if encoding not in ("base64", "quoted-printable"):
        raise UnknownCTE(encoding)
    return (part.body_start, part.body_end, encoding)


_NOT_BASE64 = bytes(c for c in range(256)
                    if not (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/=")))


class Decoder:
    """A transfer-encoding decoder fed in chunks: ``feed(raw) -> decoded``,
    then ``finish() -> decoded`` (for parts too large to decode at once)."""

    def __init__(self, encoding):
        self.encoding = encoding
        self._rest = b""

    def feed(self, raw):
        if self.encoding is None:
            return raw
        data = self._rest + raw
        if self.encoding == "base64":
            data = data.translate(None, _NOT_BASE64)
            cut = len(data) - len(data) % 4
            self._rest = data[cut:]
            return _b64(data[:cut])
        cut = data.rfind(b"\n") + 1     # quoted-printable: whole lines only
        self._rest = data[cut:]
        return binascii.a2b_qp(data[:cut])

    def finish(self):
        rest, self._rest = self._rest, b""
        if not rest or self.encoding is None:
            return b""
        if self.encoding == "base64":
            return _b64(rest + b"=" * (-len(rest) % 4))
        return binascii.a2b_qp(rest)


def _b64(data):
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""   # broken padding: what could be decoded was


def decode_range(fileobj, start, end, encoding, chunk=256 * 1024):
    """Decode bytes [start, end) of ``fileobj``: -> bytes (small parts)."""
    fileobj.seek(start)
    decoder = Decoder(encoding)
    out = []
    remaining = end - start
    while remaining > 0:
        raw = fileobj.read(min(chunk, remaining))
        if not raw:
            break
        remaining -= len(raw)
        out.append(decoder.feed(raw))
    out.append(decoder.finish())
    return b"".join(out)


def decode_to_file(fileobj, start, end, encoding, chunk=256 * 1024):
    """Decode bytes [start, end) of ``fileobj`` into a temporary file (large
    parts, on a worker thread): -> (file at offset 0, size, has NUL)."""
    out = tempfile.TemporaryFile()
    try:
        fileobj.seek(start)
        decoder = Decoder(encoding)
        remaining = end - start
        size = 0
        nul = False
        while True:
            raw = fileobj.read(min(chunk, remaining)) if remaining > 0 else b""
            remaining -= len(raw)
            data = decoder.feed(raw) if raw else decoder.finish()
            out.write(data)
            size += len(data)
            nul = nul or b"\0" in data
            if not raw:
                break
        out.seek(0)
        return out, size, nul
    except BaseException:
        out.close()
        raise


def binary_label(item):
    """``BINARY[1.2]<0>`` / ``BINARY.SIZE[1.2]`` as the response names it."""
    section = b".".join(b"%d" % n for n in item.section.part)
    if item.name == "BINARY.SIZE":
        return b"BINARY.SIZE[" + section + b"]"
    label = b"BINARY[" + section + b"]"
    if item.partial is not None:
        label += b"<%d>" % item.partial[0]
    return label
