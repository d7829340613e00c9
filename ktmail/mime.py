"""MIME structure of a stored message (RFC 2045-2049, RFC 5322, RFC 3501 §7.4.2).

Owns the one parser of message structure that IMAP (BODYSTRUCTURE, ENVELOPE,
BODY[section], partial fetch), webmail (attachments) and the spam filter
build on. Pure: no I/O other than reading the binary file object it is
given, from its current position to its end.

Invariants:
- it never raises on malformed input (any bytes give a part tree), and it
  never holds a body in memory: it reads in chunks, remembers byte offsets
  and counts lines; only header blocks are kept, up to MAX_HEADER_BYTES
  per part;
- offsets are absolute positions in the file (from where reading began):
  ``header_start <= header_end <= body_start <= body_end``; a part's
  header block includes its terminating blank line (IMAP BODY[n.MIME] /
  BODY[HEADER]); the CRLF before a boundary line belongs to the boundary
  (RFC 2046 §5.1.1), so it is not part of the body;
- ``body_lines`` counts lines of the body, a last line without CRLF included;
- raw header text keeps its bytes exactly (decoded as UTF-8 with
  ``surrogateescape``; ``raw_bytes()`` gives them back) for ENVELOPE and
  BODYSTRUCTURE; decoded text (RFC 2047 encoded words, RFC 2231 parameters,
  charsets) is for people and for SEARCH;
- nesting and part counts are bounded (MAX_DEPTH, MAX_PARTS): beyond them
  a part is kept whole as a leaf.
"""

import base64
import binascii
import codecs
import email.utils
import quopri
import re

import attrs

CHUNK = 64 * 1024
MAX_DEPTH = 64
MAX_PARTS = 10000
MAX_HEADER_BYTES = 256 * 1024
#: header bytes parsed in one message, all parts together; past it, part
#: headers are skipped (the parts keep their offsets, with default types)
MAX_MESSAGE_HEADER_BYTES = 2 * 1024 * 1024
MAX_HEADER_LINE = 64 * 1024
MAX_BOUNDARY_LINE = 2048


# --- text helpers ---------------------------------------------------------------------


def raw_text(data):
    """Header bytes -> str that keeps every byte (``raw_bytes`` reverses it)."""
    return data.decode("utf-8", "surrogateescape")


def raw_bytes(text):
    """The exact bytes of a raw header str (see ``raw_text``)."""
    return text.encode("utf-8", "surrogateescape")


def _readable(text):
    """Raw header str -> clean text: UTF-8 if it is, else Windows-1252."""
    data = raw_bytes(text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


_CHARSET_ALIASES = {
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6", "ks_c_5601-1987": "cp949",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "unknown-8bit": "cp1252",
    "x-user-defined": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "windows-874": "cp874", "utf8": "utf-8",
    "x-mac-roman": "mac-roman", "ansi_x3.4-1968": "cp1252",
}


def decode_bytes(data, charset):
    """Bytes in a named charset -> str; unknown charsets fall back to UTF-8
    (then Windows-1252); bad bytes become U+FFFD. Never raises."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            codecs.lookup(name)
        except LookupError:
            name = ""
    if not name or name == "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            if name == "utf-8":
                return data.decode("utf-8", "replace")
            return data.decode("cp1252", "replace")
    try:
        return data.decode(name, "replace")
    except Exception:  # codecs can fail in odd ways (e.g. stateful ones)
        return data.decode("utf-8", "replace")


def _b_decode(text):
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", text)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else None]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def _q_decode(text):
    data = raw_bytes(text).replace(b"_", b" ")
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def decode_header_value(text):
    """Decode a raw header value for people and SEARCH: RFC 2047 encoded words
    (also where senders put them wrongly, e.g. inside quotes or without
    spaces), whitespace between adjacent encoded words dropped, adjacent words
    in one charset joined before decoding (split multi-byte characters),
    folding removed. Never raises."""
    text = unfold(text)
    out = []
    pending = []  # (charset, bytes) of adjacent encoded words
    pos = 0

    def flush():
        if pending:
            charset = pending[0][0]
            out.append(decode_bytes(b"".join(data for _, data in pending), charset))
            pending.clear()

    for m in _ENCODED_WORD.finditer(text):
        between = text[pos:m.start()]
        if between and (between.strip() or not pending):
            flush()
            out.append(_readable(between))
        charset = m.group(1).split("*", 1)[0].lower()
        data = _b_decode(m.group(3)) if m.group(2) in "bB" else _q_decode(m.group(3))
        if pending and pending[0][0] != charset:
            flush()
        pending.append((charset, data))
        pos = m.end()
    flush()
    out.append(_readable(text[pos:]))
    return "".join(out)


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def unfold(text):
    """RFC 5322 §2.2.3: remove the CRLF of folded header lines."""
    return _FOLD.sub("", text).replace("\r", "").replace("\n", "")


# --- header blocks --------------------------------------------------------------------


_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")


def parse_header_block(data):
    """Bytes of a header block -> [(lower-case name, raw value str)], in
    order; the value keeps its folding (as CRLF) and loses the leading
    space. Lines that are no header field are skipped. Never raises."""
    fields = []
    name = None
    pieces = []

    def flush():
        if name is not None:
            fields.append((name, raw_text(b"\r\n".join(pieces)).lstrip(" \t")))

    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if line[0] in (32, 9):  # folded continuation
            if name is not None:
                pieces.append(line)
            continue
        m = _FIELD_NAME.match(line)
        if m:
            flush()
            name = m.group(1).decode("ascii").lower()
            pieces = [line[m.end():]]
    flush()
    return fields


class Headers:
    """The fields of one header block, looked up by lower-case name."""

    def __init__(self, fields):
        self.fields = fields
        self._first = {}
        for key, value in fields:
            self._first.setdefault(key, value)

    def get(self, name, default=None):
        """The raw value of the first ``name`` field, or ``default``."""
        return self._first.get(name, default)

    def get_all(self, name):
        return [value for key, value in self.fields if key == name]


# --- structured header values ---------------------------------------------------------


def _strip_comments(text):
    """Remove RFC 5322 comments (nested parentheses) outside quoted strings."""
    if "(" not in text:
        return text
    out = []
    depth = 0
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            if depth == 0:
                out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            out.append(char)
            if char == '"':
                quoted = False
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            if char == '"':
                quoted = True
            out.append(char)
    return "".join(out)


def _split_params(text):
    """Split ``a; b="x;y"; c`` at semicolons outside quotes."""
    items = []
    current = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:])
    return value


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")


def parse_parameterized(text):
    """``type/sub; name=value; ...`` -> (value lower-case, ((name, raw value), ...)).

    Tolerant of comments, spaces around ``=``, missing quotes and empty
    items. Values keep RFC 2231 / RFC 2047 encodings (see ``decode_param``).
    """
    items = _split_params(_strip_comments(unfold(text or "")))
    value = items[0].strip().lower()
    params = []
    for item in items[1:]:
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not eq or not name or not _TOKEN.match(name):
            continue
        params.append((name, _unquote(val)))
    return value, tuple(params)


# name*0*= / name*0= / name*= (RFC 2231 §3 sections, §4 charset without sections)
_RFC2231_SECTION = re.compile(r"(.+?)(?:\*(\d+))?(\*)?\Z")


def rfc2231_name(key):
    """The parameter name of an RFC 2231 key (``name*0*``, ``name*1``,
    ``name*``), or None for a plain parameter."""
    m = _RFC2231_SECTION.match(key)
    if m and (m.group(2) is not None or m.group(3)):
        return m.group(1)
    return None


def decode_param(params, name):
    """The decoded value of parameter ``name`` among raw ``params``: RFC 2231
    continuations and charsets (``name*0*=utf-8''...``), else the plain
    value with RFC 2047 encoded words (as some mailers write them) decoded.
    None when absent. Never raises."""
    name = name.lower()
    sections = {}
    for key, value in params:
        m = _RFC2231_SECTION.match(key)
        if m and m.group(1) == name and (m.group(2) is not None or m.group(3)):
            number = int(m.group(2) or 0)
            if number < 1000:
                sections.setdefault(number, (value, bool(m.group(3))))
    if sections:
        charset = None
        data = bytearray()
        for number in sorted(sections):
            value, encoded = sections[number]
            if encoded:
                if charset is None and value.count("'") >= 2:
                    charset, _lang, value = value.split("'", 2)
                data += re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                               raw_bytes(value))
            else:
                data += raw_bytes(value)
        return decode_bytes(bytes(data), charset)
    for key, value in params:
        if key == name:
            return decode_header_value(value)
    return None


# --- addresses (RFC 5322 §3.4, RFC 3501 ENVELOPE) ----------------------------------------


@attrs.frozen
class EnvelopeAddress:
    """One ``address`` of an RFC 3501 ENVELOPE: (name adl mailbox host).
    A group is a start marker (mailbox = group name, host None) and an end
    marker (all None)."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    def to_json(self):
        return [self.name, self.adl, self.mailbox, self.host]

    @classmethod
    def from_json(cls, obj):
        return cls(*obj)

    @property
    def address(self):
        """``mailbox@host`` (or '' for group markers)."""
        if self.mailbox is None or self.host is None:
            return ""
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


_ADDRESS_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\n]+)
  | (?P<quoted>"(?:[^"\\]|\\.)*"?)
  | (?P<comment>\()
  | (?P<special>[<>@,;:.\[\]])
  | (?P<atom>[^ \t\r\n"(<>@,;:.\[\]]+)
''', re.VERBOSE | re.DOTALL)


def _comment_end(text, pos):
    depth = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return pos


def _address_tokens(text):
    """-> [(kind, value)] with kinds word, quoted, comment, special."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _ADDRESS_TOKEN.match(text, pos)
        if m is None:  # cannot happen: the atom class takes everything else
            pos += 1
            continue
        kind = m.lastgroup
        if kind == "comment":
            end = _comment_end(text, pos)
            tokens.append(("comment", text[pos + 1:end - 1]))
            pos = end
            continue
        if kind == "quoted":
            value = m.group()
            inner = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
            tokens.append(("quoted", re.sub(r"\\(.)", r"\1", inner)))
        elif kind == "special":
            tokens.append(("special", m.group()))
        elif kind == "atom":
            tokens.append(("word", m.group()))
        pos = m.end()
    return tokens


def _phrase(tokens):
    words = [value for kind, value in tokens if kind in ("word", "quoted")
             or (kind == "special" and value == ".")]
    text = " ".join(words).replace(" . ", ".").strip()
    return text or None


def _addr_spec(tokens):
    """-> (mailbox, host) from the tokens of ``local@domain``."""
    words = [(kind, value) for kind, value in tokens if kind != "comment"]
    at = max((i for i, (kind, value) in enumerate(words) if (kind, value) == ("special", "@")),
             default=None)
    if at is None:
        local, domain = words, []
    else:
        local, domain = words[:at], words[at + 1:]
    mailbox = "".join(('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
                       if k == "quoted" and re.search(r'[\s"\\()<>@,;:\[\]]', v) else v)
                      for k, v in local) or None
    host = "".join(v for _, v in domain) or None
    return mailbox, host


def _mailbox(tokens):
    """-> EnvelopeAddress of one mailbox, or None for nothing usable."""
    if not tokens:
        return None
    adl = None
    kinds = [k for k, _ in tokens]
    if ("special", "<") in tokens:
        start = tokens.index(("special", "<"))
        end = tokens.index(("special", ">"), start) if ("special", ">") in tokens[start:] \
            else len(tokens)
        inner = tokens[start + 1:end]
        name = _phrase(tokens[:start])
        colon = [i for i, t in enumerate(inner) if t == ("special", ":")]
        if colon and any(t == ("special", "@") for t in inner[:colon[0]]):
            adl = "".join(v for k, v in inner[:colon[0]] if k != "comment") or None
            inner = inner[colon[0] + 1:]
        mailbox, host = _addr_spec(inner)
    else:
        comments = [v for k, v in tokens if k == "comment"]
        mailbox, host = _addr_spec(tokens)
        name = " ".join(c.strip() for c in comments if c.strip()) or None
        if "special" not in kinds and len([k for k in kinds if k != "comment"]) > 1:
            # a bare phrase ("undisclosed recipients"): no address at all
            mailbox, host = _phrase(tokens), None
    if mailbox is None and host is None and name is None:
        return None
    # Dovecot's convention for invalid addresses, which clients understand
    return EnvelopeAddress(name=name, adl=adl, mailbox=mailbox or "MISSING_MAILBOX",
                           host=host or "MISSING_DOMAIN")


def parse_address_list(text):
    """A raw address-list header value -> (EnvelopeAddress, ...) with RFC 3501
    group markers. Names stay raw (encoded words are the client's to
    decode, RFC 3501 §7.4.2). Never raises."""
    if text is None:
        return ()
    tokens = _address_tokens(unfold(text))
    out = []
    current = []
    group = False
    angle = False
    for token in tokens:
        if token == ("special", "<"):
            angle = True
        elif token == ("special", ">"):
            angle = False
        if not angle and token == ("special", ":") and not group and \
                ("special", "@") not in current and ("special", "<") not in current:
            out.append(EnvelopeAddress(None, None, _phrase(current) or "", None))
            group = True
            current = []
            continue
        if not angle and token == ("special", ";") and group:
            found = _mailbox(current)
            if found:
                out.append(found)
            out.append(EnvelopeAddress(None, None, None, None))
            group = False
            current = []
            continue
        if not angle and token == ("special", ","):
            found = _mailbox(current)
            if found:
                out.append(found)
            current = []
            continue
        current.append(token)
    found = _mailbox(current)
    if found:
        out.append(found)
    if group:
        out.append(EnvelopeAddress(None, None, None, None))
    return tuple(out)


# --- ENVELOPE ---------------------------------------------------------------------------


@attrs.frozen
class Envelope:
    """The RFC 3501 §7.4.2 ENVELOPE of a message: raw (undecoded) strings or
    None, and tuples of EnvelopeAddress. ``sender`` and ``reply_to`` are
    ``from_`` when the header is absent or empty, as RFC 3501 requires."""

    date: str | None = None
    subject: str | None = None
    from_: tuple = ()
    sender: tuple = ()
    reply_to: tuple = ()
    to: tuple = ()
    cc: tuple = ()
    bcc: tuple = ()
    in_reply_to: str | None = None
    message_id: str | None = None

    @classmethod
    def from_headers(cls, headers):
        def text(name):
            value = headers.get(name)
            if value is None:
                return None
            return unfold(value).strip()

        def addresses(name):
            return parse_address_list(headers.get(name))

        from_ = addresses("from")
        return cls(date=text("date"), subject=text("subject"), from_=from_,
                   sender=addresses("sender") or from_,
                   reply_to=addresses("reply-to") or from_,
                   to=addresses("to"), cc=addresses("cc"), bcc=addresses("bcc"),
                   in_reply_to=text("in-reply-to"), message_id=text("message-id"))

    def to_json(self):
        def addresses(items):
            return [a.to_json() for a in items]
        return [self.date, self.subject, addresses(self.from_), addresses(self.sender),
                addresses(self.reply_to), addresses(self.to), addresses(self.cc),
                addresses(self.bcc), self.in_reply_to, self.message_id]

    @classmethod
    def from_json(cls, obj):
        def addresses(items):
            return tuple(EnvelopeAddress.from_json(a) for a in items)
        (date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id) = obj
        return cls(date=date, subject=subject, from_=addresses(from_),
                   sender=addresses(sender), reply_to=addresses(reply_to), to=addresses(to),
                   cc=addresses(cc), bcc=addresses(bcc), in_reply_to=in_reply_to,
                   message_id=message_id)


# --- the part tree ----------------------------------------------------------------------


@attrs.define(eq=True)
class Part:
    """One MIME part (the message itself is the root part).

    Offsets: the header block is ``[header_start, header_end)``, the body
    ``[body_start, body_end)``. ``params``/``disposition_params`` hold raw
    (name lower-case, value) pairs in order, RFC 2231 sections as written;
    use ``param()``/``filename`` for decoded values. ``children`` are the
    parts of a multipart; ``message`` is the root part of an encapsulated
    message (message/rfc822, message/global), whose ``envelope`` is set, as
    it is on the top-level root.
    """

    header_start: int = 0
    header_end: int = 0
    body_start: int = 0
    body_end: int = 0
    body_lines: int = 0
    media_type: str = "text"
    media_subtype: str = "plain"
    params: tuple = ()
    content_id: str | None = None
    description: str | None = None
    encoding: str = "7bit"
    disposition: str | None = None
    disposition_params: tuple = ()
    language: tuple = ()
    location: str | None = None
    md5: str | None = None
    children: list = attrs.field(factory=list)
    message: "Part | None" = None
    envelope: Envelope | None = None

    @property
    def content_type(self):
        return f"{self.media_type}/{self.media_subtype}"

    @property
    def size(self):
        """Octets of the (still encoded) body: BODYSTRUCTURE body-fld-octets."""
        return self.body_end - self.body_start

    @property
    def is_multipart(self):
        return self.media_type == "multipart"

    def param(self, name):
        """Decoded Content-Type parameter (e.g. ``charset``, ``name``)."""
        return decode_param(self.params, name)

    @property
    def charset(self):
        return self.param("charset")

    @property
    def filename(self):
        """Decoded file name: Content-Disposition filename, else Content-Type
        name; only the last path component (never a path). None if none."""
        name = decode_param(self.disposition_params, "filename") or self.param("name")
        if not name:
            return None
        name = re.split(r"[/\\]", name)[-1].strip()
        name = "".join(c for c in name if c >= " " and c != "\x7f")
        return name or None

    @property
    def is_attachment(self):
        """Does a reader see this as an attachment (not the message text)?"""
        if self.is_multipart or self.message is not None and self.disposition != "attachment":
            return False
        if self.disposition == "attachment":
            return True
        if self.filename and self.disposition != "inline":
            return True
        return self.media_type not in ("text", "multipart", "message")

    def walk(self):
        """This part and all below it, depth first (encapsulated messages included)."""
        yield self
        if self.message is not None:
            yield from self.message.walk()
        for child in self.children:
            yield from child.walk()

    def find(self, section):
        """The part at an IMAP section number path (RFC 3501 §6.4.5), e.g.
        ``(2, 1)`` for "2.1"; ``()`` is the message itself. None if absent."""
        part = self
        for number in section:
            if number < 1:
                return None
            if part.message is not None:
                part = part.message
            if part.is_multipart:
                if number > len(part.children):
                    return None
                part = part.children[number - 1]
            elif number != 1:
                return None
        return part

    def to_json(self):
        """A compact JSON-able dict (the index cache); see ``from_json``."""
        obj = {"o": [self.header_start, self.header_end, self.body_start, self.body_end,
                     self.body_lines],
               "t": [self.media_type, self.media_subtype]}
        if self.params:
            obj["p"] = [list(p) for p in self.params]
        for key, value in (("id", self.content_id), ("ds", self.description),
                           ("loc", self.location), ("md5", self.md5),
                           ("dp", self.disposition)):
            if value is not None:
                obj[key] = value
        if self.encoding != "7bit":
            obj["e"] = self.encoding
        if self.disposition_params:
            obj["dpp"] = [list(p) for p in self.disposition_params]
        if self.language:
            obj["lang"] = list(self.language)
        if self.children:
            obj["c"] = [c.to_json() for c in self.children]
        if self.message is not None:
            obj["m"] = self.message.to_json()
        if self.envelope is not None:
            obj["env"] = self.envelope.to_json()
        return obj

    @classmethod
    def from_json(cls, obj):
        header_start, header_end, body_start, body_end, body_lines = obj["o"]
        return cls(
            header_start=header_start, header_end=header_end, body_start=body_start,
            body_end=body_end, body_lines=body_lines,
            media_type=obj["t"][0], media_subtype=obj["t"][1],
            params=tuple(tuple(p) for p in obj.get("p", ())),
            content_id=obj.get("id"), description=obj.get("ds"), location=obj.get("loc"),
            md5=obj.get("md5"), disposition=obj.get("dp"), encoding=obj.get("e", "7bit"),
            disposition_params=tuple(tuple(p) for p in obj.get("dpp", ())),
            language=tuple(obj.get("lang", ())),
            children=[cls.from_json(c) for c in obj.get("c", ())],
            message=cls.from_json(obj["m"]) if "m" in obj else None,
            envelope=Envelope.from_json(obj["env"]) if "env" in obj else None)


# --- the streaming parser ------------------------------------------------------------------


class _Reader:
    """Sequential reads with absolute offsets and a running count of LFs.
    Keeps only a window of the file: the unread rest of the current chunk
    plus a few bytes of history."""

    HISTORY = 4

    def __init__(self, fileobj):
        self._file = fileobj
        self.buf = b""
        self.base = 0      # absolute offset of buf[0]
        self.pos = 0       # index in buf of the next unread byte
        self.lf = 0        # LFs consumed so far
        self.eof = False

    @property
    def offset(self):
        return self.base + self.pos

    def fill(self, need):
        """Make ``need`` unread bytes available unless the file ends first."""
        while len(self.buf) - self.pos < need and not self.eof:
            drop = self.pos - self.HISTORY
            if drop > CHUNK:
                self.buf = self.buf[drop:]
                self.base += drop
                self.pos -= drop
            try:
                data = self._file.read(CHUNK)
            except (OSError, ValueError):
                data = b""
            if not data:
                self.eof = True
            else:
                self.buf += data

    def advance_to(self, index):
        self.lf += self.buf.count(b"\n", self.pos, index)
        self.pos = index

    def byte_at(self, offset):
        """A byte before the current position (within the kept history)."""
        index = offset - self.base
        if 0 <= index < len(self.buf):
            return self.buf[index:index + 1]
        return b""

    def peek_line(self, limit):
        """-> (bytes of the next line up to ``limit``, whole line?)."""
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + limit)
            if end >= 0:
                return self.buf[self.pos:end + 1], True
            if len(self.buf) - self.pos >= limit:
                return self.buf[self.pos:self.pos + limit], False
            if self.eof:
                return self.buf[self.pos:], True
            self.fill(len(self.buf) - self.pos + 1)

    def skip_line(self):
        """Consume up to and including the next LF (or to the end)."""
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                self.advance_to(end + 1)
                return
            self.advance_to(len(self.buf))
            if self.eof:
                return
            self.fill(1)

    def at_end(self):
        self.fill(1)
        return self.pos >= len(self.buf)


_PATTERNS = {}
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _delimiter_patterns(boundaries):
    """-> (regex of a delimiter line at a position, regex of "\\n" + one,
    bytes needed to see a whole delimiter line) for a boundary stack."""
    found = _PATTERNS.get(boundaries)
    if found is None:
        alternatives = b"|".join(re.escape(b) for b in sorted(set(boundaries), key=len,
                                                                reverse=True))
        body = rb"--(?:" + alternatives + rb")(?:--)?[ \t\r]{0,200}(?:\n|\Z)"
        need = max(len(b) for b in boundaries) + 210
        found = (re.compile(body), re.compile(rb"\n" + body), need)
        if len(_PATTERNS) > 256:
            _PATTERNS.clear()
        _PATTERNS[boundaries] = found
    return found


def _boundary_match(line, boundaries):
    """Is ``line`` a delimiter of one of ``boundaries`` (innermost last)?
    -> (index, is_close) or None."""
    if not line.startswith(b"--"):
        return None
    text = line.rstrip(b" \t\r\n")
    for index in range(len(boundaries) - 1, -1, -1):
        boundary = boundaries[index]
        if text == b"--" + boundary:
            return index, False
        if text == b"--" + boundary + b"--":
            return index, True
    return None


class _Parser:
    def __init__(self, fileobj):
        self.reader = _Reader(fileobj)
        self.parts = 0
        self.header_budget = MAX_MESSAGE_HEADER_BYTES
        #: the header fields of the top-level message
        self.top_headers = Headers([])

    # one header block

    def read_headers(self, boundaries, top):
        """Read a header block -> Headers. Stops after the blank line, before
        a boundary line, or before the first line that is no header field
        (the body starts there)."""
        reader = self.reader
        kept = []
        kept_bytes = 0
        first = True
        if self.header_budget <= 0:
            self.skip_header_rest(boundaries)
            return Headers([])
        while True:
            line, whole = reader.peek_line(MAX_HEADER_LINE)
            if not line:
                break
            if line in (b"\r\n", b"\n"):
                reader.skip_line()
                break
            if boundaries and _boundary_match(line, boundaries) is not None:
                break
            if first and top and line.startswith(b"From "):
                reader.skip_line()  # an mbox separator line
                first = False
                continue
            if line[:1] not in (b" ", b"\t") and not _FIELD_NAME.match(line):
                break
            first = False
            kept.append(line if whole else line + b"\r\n")
            kept_bytes += len(line)
            if whole and line.endswith(b"\n"):
                reader.advance_to(reader.pos + len(line))
            else:
                reader.skip_line()
            if kept_bytes >= min(MAX_HEADER_BYTES, self.header_budget):
                self.skip_header_rest(boundaries)
                break
        self.header_budget -= kept_bytes
        return Headers(parse_header_block(b"".join(kept)))

    def skip_header_rest(self, boundaries):
        """Past MAX_HEADER_BYTES: find the end of the header block (a blank
        line, or a delimiter line) without looking at each line."""
        reader = self.reader
        delimiter, need = None, 2
        if boundaries:
            _line_start, delimiter, need = _delimiter_patterns(tuple(boundaries))
        reader.fill(2)
        if reader.buf.startswith((b"\r\n", b"\n"), reader.pos):
            reader.skip_line()  # we are at a line start: this is the blank line
            return
        while True:
            blank = _BLANK_LINE.search(reader.buf, reader.pos)
            found = delimiter.search(reader.buf, reader.pos) if delimiter else None
            if blank is not None and (found is None or blank.start() < found.start()):
                reader.advance_to(blank.end())
                return
            if found is not None and (found.end() < len(reader.buf) or reader.eof):
                reader.advance_to(found.start() + 1)
                return
            if reader.eof:
                reader.advance_to(len(reader.buf))
                return
            reader.advance_to(max(reader.pos, len(reader.buf) - need - 2))
            reader.fill(len(reader.buf) - reader.pos + 1)

    # bodies

    def scan_body(self, boundaries):
        """Consume a body up to the next delimiter line of ``boundaries``
        (the delimiter line is consumed too).
        -> (body_end, LFs before body_end, last body byte is LF, match or None)."""
        reader = self.reader
        if not boundaries:
            reader.advance_to(len(reader.buf))
            while not reader.eof:
                reader.fill(1)
                reader.advance_to(len(reader.buf))
            end = reader.offset
            return end, reader.lf, reader.byte_at(end - 1) == b"\n", None
        line_start, anywhere, need = _delimiter_patterns(tuple(boundaries))
        at_line_start = True
        while True:
            if at_line_start:
                reader.fill(need)
                if line_start.match(reader.buf, reader.pos):
                    line, _whole = reader.peek_line(MAX_BOUNDARY_LINE)
                    match = _boundary_match(line, boundaries)
                    if match is not None:
                        return self._delimiter_found(match)
            while True:
                # the regex finds delimiter lines in C; look-alikes never get here
                found = anywhere.search(reader.buf, reader.pos)
                if found is not None and (found.end() < len(reader.buf) or reader.eof):
                    reader.advance_to(found.start() + 1)
                    at_line_start = True
                    break
                if found is None and reader.eof:
                    reader.advance_to(len(reader.buf))
                    end = reader.offset
                    return end, reader.lf, reader.byte_at(end - 1) == b"\n", None
                # keep a tail that may hold the beginning of a delimiter line
                keep_from = found.start() if found is not None else len(reader.buf) - need
                reader.advance_to(max(reader.pos, keep_from))
                reader.fill(len(reader.buf) - reader.pos + 1)

    def _delimiter_found(self, match):
        """At the start of a delimiter line: -> scan_body's answer."""
        reader = self.reader
        start = reader.offset
        lf = reader.lf
        cut = 0
        if reader.byte_at(start - 1) == b"\n":
            # RFC 2046 §5.1.1: the CRLF before "--" belongs to the delimiter
            cut = 2 if reader.byte_at(start - 2) == b"\r" else 1
            lf -= 1
        end = start - cut
        last_lf = reader.byte_at(end - 1) == b"\n"
        reader.skip_line()
        return end, lf, last_lf, match

    # parts

    def parse_part(self, boundaries, default_type, depth, top=False):
        """Parse one part at the current position.
        -> (part, match, LFs before its body_end, its last body byte is LF),
        ``match`` being the delimiter that ended it, or None at the end."""
        reader = self.reader
        self.parts += 1
        part = Part(header_start=reader.offset)
        headers = self.read_headers(boundaries, top)
        if top and depth == 0:
            self.top_headers = headers
        part.header_end = part.body_start = reader.offset
        start_lf = reader.lf
        self.describe(part, headers, default_type)
        if top:
            part.envelope = Envelope.from_headers(headers)
        leaf = depth >= MAX_DEPTH or self.parts >= MAX_PARTS
        boundary = part.param("boundary") if part.is_multipart else None
        if part.is_multipart and not leaf and boundary and len(boundary) <= 200:
            match, end, end_lf, last_lf = self.parse_multipart(
                part, boundaries + [raw_bytes(boundary)], depth)
            if not part.children:
                # nothing but a preamble: no IMAP body-type-mpart can say that
                part.media_type, part.media_subtype = "text", "plain"
                part.params = (("charset", "us-ascii"),)
        else:
            if part.is_multipart:
                # RFC 2046 §5.1.1 needs a boundary; without one the body is opaque
                part.media_type, part.media_subtype = "application", "octet-stream"
                part.params = ()
            if (not leaf and part.media_type == "message"
                    and part.media_subtype in ("rfc822", "global")
                    and part.encoding in ("7bit", "8bit", "binary")):
                inner, match, end_lf, last_lf = self.parse_part(
                    boundaries, ("text", "plain"), depth + 1, top=True)
                part.message = inner
                end = inner.body_end
            else:
                end, end_lf, last_lf, match = self.scan_body(boundaries)
        if end <= part.body_start:
            part.body_end = part.body_start
            part.body_lines = 0
            return part, match, start_lf, False
        part.body_end = end
        part.body_lines = (end_lf - start_lf) + (0 if last_lf else 1)
        return part, match, end_lf, last_lf

    def parse_multipart(self, part, boundaries, depth):
        """Parse the preamble, the parts and the epilogue of a multipart.
        -> (match, body_end, LFs before it, last byte is LF)."""
        own = len(boundaries) - 1
        child_default = (("message", "rfc822") if part.media_subtype == "digest"
                         else ("text", "plain"))
        end, end_lf, last_lf, match = self.scan_body(boundaries)  # the preamble
        while match is not None and match[0] == own and not match[1]:
            if self.parts >= MAX_PARTS:
                break  # too many parts: the rest is kept as the epilogue
            child, match, end_lf, last_lf = self.parse_part(boundaries, child_default,
                                                            depth + 1)
            part.children.append(child)
            end = child.body_end
        if match is not None and match[0] == own:
            # after the close delimiter: the epilogue, up to an outer delimiter
            end, end_lf, last_lf, match = self.scan_body(boundaries[:-1])
        return match, end, end_lf, last_lf

    def describe(self, part, headers, default_type):
        """Fill the MIME fields of ``part`` from its header fields."""
        raw_type = headers.get("content-type")
        media, params = parse_parameterized(raw_type) if raw_type else ("", ())
        main, slash, sub = media.partition("/")
        main, sub = main.strip(), sub.strip()
        if slash and main and sub and _TOKEN.match(main) and _TOKEN.match(sub):
            part.media_type, part.media_subtype, part.params = main, sub, params
        else:
            # RFC 2045 §5.2: missing or invalid -> the default (text/plain; us-ascii)
            part.media_type, part.media_subtype = default_type
            part.params = (("charset", "us-ascii"),) if default_type == ("text", "plain") \
                else ()
        encoding = headers.get("content-transfer-encoding") or "7bit"
        encoding = _strip_comments(unfold(encoding)).strip().lower() or "7bit"
        part.encoding = encoding if _TOKEN.match(encoding) else "7bit"
        if part.media_type == "multipart" and part.encoding not in ("7bit", "8bit", "binary"):
            part.encoding = "7bit"  # RFC 2045 §6.4: other encodings are not allowed
        for name, attr in (("content-id", "content_id"), ("content-description", "description"),
                           ("content-location", "location"), ("content-md5", "md5")):
            value = headers.get(name)
            if value is not None:
                setattr(part, attr, unfold(value).strip())
        disposition = headers.get("content-disposition")
        if disposition is not None:
            value, params = parse_parameterized(disposition)
            if value and _TOKEN.match(value):
                part.disposition, part.disposition_params = value, params
        language = headers.get("content-language")
        if language:
            part.language = tuple(t for t in re.split(r"[\s,]+", _strip_comments(
                unfold(language))) if t)


def _parse(fileobj):
    parser = _Parser(fileobj)
    root, _match, _lf, _last = parser.parse_part([], ("text", "plain"), 0, top=True)
    return root, parser.top_headers


def parse(fileobj):
    """Parse a whole message from ``fileobj`` (binary, read to its end).
    -> the root Part (with ``envelope``). Never raises on malformed input."""
    return _parse(fileobj)[0]


# --- the index summary ---------------------------------------------------------------------


def _decoded(value):
    return decode_header_value(value).strip() if value is not None else None


def parse_date(value):
    """A Date: header value -> POSIX seconds, or None if it is no date."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(unfold(value))
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


@attrs.frozen
class MessageSummary:
    """What the index caches per message: decoded header fields for SEARCH
    and SORT, and the part tree (``structure``, with offsets and the
    ENVELOPE on the root; None when not asked for).

    ``fields`` keys: hdr_from, hdr_to, hdr_cc, hdr_bcc, subject (decoded
    text or None), sent_date (POSIX seconds from Date:, or None),
    message_id, in_reply_to, refs (raw, unfolded).
    """

    fields: dict
    structure: Part | None

    @property
    def envelope(self):
        return self.structure.envelope if self.structure is not None else None

    @property
    def subject(self):
        return self.fields.get("subject")

    @property
    def sent_date(self):
        return self.fields.get("sent_date")

    def to_cache(self):
        """-> (fields, JSON-able structure) for the index."""
        return self.fields, self.structure.to_json() if self.structure is not None else None

    @classmethod
    def from_cache(cls, fields, structure_json):
        return cls(fields=dict(fields), structure=None if structure_json is None
                   else Part.from_json(structure_json))


def summarize(fileobj):
    """Parse a message and build its MessageSummary. Never raises on
    malformed input."""
    root, headers = _parse(fileobj)

    def raw(name):
        value = headers.get(name)
        return unfold(value).strip() if value is not None else None

    fields = {
        "hdr_from": _decoded(headers.get("from")),
        "hdr_to": _decoded(headers.get("to")),
        "hdr_cc": _decoded(headers.get("cc")),
        "hdr_bcc": _decoded(headers.get("bcc")),
        "subject": _decoded(headers.get("subject")),
        "sent_date": parse_date(headers.get("date")),
        "message_id": raw("message-id"),
        "in_reply_to": raw("in-reply-to"),
        "refs": " ".join((raw("references") or "").split()) or None,
    }
    for key, value in fields.items():
        if isinstance(value, str):
            # surrogates (undecodable bytes) cannot go into the index as text
            fields[key] = value.encode("utf-8", "replace").decode("utf-8")
    return MessageSummary(fields=fields, structure=root)


def decode_body(data, encoding):
    """Decode a body's transfer encoding (base64, quoted-printable; others as
    they are). For webmail and the spam filter; never raises."""
    encoding = (encoding or "").lower()
    if encoding == "base64":
        return _b_decode(raw_text(data)) if data else b""
    if encoding == "quoted-printable":
        try:
            return quopri.decodestring(data)
        except (ValueError, binascii.Error):
            return data
    return data


# --- limits on the header section of incoming messages ------------------------------

HEADER_TOO_BIG = "header-too-big"
TOO_MANY_FIELDS = "too-many-header-fields"
#: a line start longer than this without a colon is not a field name
_MAX_FIELD_NAME = 256


@attrs.frozen
class HeaderLimits:
    """How large the header section (RFC 5322 §2.1) of a message taken in
    over SMTP or IMAP APPEND may be: ``max_bytes`` in all, ``max_fields``
    header fields."""

    max_bytes: int = 262144
    max_fields: int = 1000


class HeaderSectionCheck:
    """Watches the start of a message as it streams in, piece by piece, and
    names the first limit its header section breaks (``problem``). Keeps no
    more than the start of the current line (at most a field name); stops
    looking at the line that ends the header section: the empty line, or
    a line that is neither a field nor a continuation (RFC 5322 §2.2)."""

    def __init__(self, limits):
        self.limits = limits
        self.size = 0
        self.fields = 0
        self.done = False
        self.problem = None
        self._line_start = True
        self._name = bytearray()   # the start of the current line, while it may be a name

    def feed(self, data):
        """-> the problem (HEADER_TOO_BIG, TOO_MANY_FIELDS) or None."""
        pos, end = 0, len(data)
        while pos < end and not self.done and self.problem is None:
            if self._line_start or self._name:
                pos = self._field_start(data, pos)
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            self._count(stop - pos)
            pos = stop
            self._line_start = newline >= 0
        return self.problem

    def _field_start(self, data, pos):
        if self._line_start:
            self._line_start = False
            first = data[pos:pos + 1]
            if first in (b"\r", b"\n"):
                self.done = True          # the empty line: the body follows
                return pos
            if first in (b" ", b"\t"):
                return pos                # a continuation line
        # collect the field name up to its colon
        for i in range(pos, len(data)):
            byte = data[i]
            if byte == 0x3A and self._name:       # ":" ends a field name
                self._count(i + 1 - pos)
                self._name.clear()
                self.fields += 1
                if self.fields > self.limits.max_fields:
                    self.problem = TOO_MANY_FIELDS
                return i + 1
            if not 33 <= byte <= 126 or len(self._name) >= _MAX_FIELD_NAME:
                self._count(i - pos)
                self.done = self.problem is None   # not a header field: the body has begun
                return i
            self._name.append(byte)
        self._count(len(data) - pos)
        return len(data)

    def _count(self, n):
        self.size += n
        if self.size > self.limits.max_bytes:
            self.problem = HEADER_TOO_BIG


class HeaderFieldDropper:
    """Streams a message through and leaves out of its header section every
    field whose name starts with one of ``prefixes`` (lower-case bytes, e.g.
    ``b"x-spam-"``), with its continuation lines. ``feed(data)`` returns the
    bytes to keep; ``finish()`` those still held at the end of the message.
    Holds at most the current header line (the caller bounds line length);
    from the line that ends the header section on, everything passes."""

    def __init__(self, prefixes):
        self.prefixes = tuple(prefixes)
        self.done = False
        self.dropped = 0              # fields left out
        self._line = bytearray()      # the current header line, not yet complete
        self._dropping = False        # inside a field being left out

    def feed(self, data):
        if self.done:
            return data
        out = bytearray()
        pos = 0
        while pos < len(data) and not self.done:
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                return bytes(out)
            self._line += data[pos:newline + 1]
            pos = newline + 1
            out += self._decide(bytes(self._line))
            self._line.clear()
        out += data[pos:]
        return bytes(out)

    def finish(self):
        """The held start of a last line (a message without a body)."""
        line, self._line = bytes(self._line), bytearray()
        return self._decide(line) if line and not self.done else line

    def _decide(self, line):
        if line[:1] in (b" ", b"\t"):
            return b"" if self._dropping else line     # a continuation line
        field = _FIELD_NAME.match(line)
        if field is None:
            self.done = True          # the empty line, or the body has begun
            return line
        self._dropping = field.group(1).lower().startswith(self.prefixes)
        if self._dropping:
            self.dropped += 1
            return b""
        return line


def header_section_problem(source, limits):
    """The HeaderSectionCheck problem of a whole message (a path or a binary
    file object, read from its current position and put back), or None.
    Reads no further than the header section and its limit."""
    if isinstance(source, str) or hasattr(source, "__fspath__"):
        with open(source, "rb") as f:
            return header_section_problem(f, limits)
    check = HeaderSectionCheck(limits)
    start = source.tell()
    try:
        while not check.done and check.problem is None:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            check.feed(chunk)
    finally:
        source.seek(start)
    return check.problem
