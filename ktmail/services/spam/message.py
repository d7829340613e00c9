"""Bounded reading and parsing of one message for the spam filter.

Owns the view of a message that every spam rule and the Bayes tokenizer
look at (``ParsedMessage``). Invariants:

- the cost is bounded whatever the size of the message: ``read_bounded``
  streams the file in chunks and keeps at most ``PART_LIMIT`` bytes of each
  MIME part and about ``TOTAL_LIMIT`` bytes in all (boundary lines and the
  headers of later parts are still kept, so attachment names after a big
  attachment are seen); a 50 MiB message costs one sequential read;
- nothing here trusts the message: every header may be missing, repeated,
  malformed or in a wrong charset; parsing never raises on bad input;
- the result is plain data (no I/O, no clock), so rules are pure functions.
"""

import binascii
import contextlib
import email
import email.header
import email.policy
import email.utils
import quopri
import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import attrs

#: bytes kept of each MIME part (headers included)
PART_LIMIT = 256 * 1024
#: bytes kept of the whole message before only part headers are kept
TOTAL_LIMIT = 2 * 1024 * 1024
#: bytes kept of each part once TOTAL_LIMIT is reached (its headers)
LATE_PART_LIMIT = 4 * 1024
#: characters of decoded text (plain or HTML) that rules look at per part
TEXT_LIMIT = 200_000
#: characters of each HTML part that are parsed as HTML
HTML_LIMIT = 100_000
_CHUNK = 1 << 20
_MAX_BOUNDARY_LINE = 1000


def read_bounded(stream):
    """Read a binary stream, keeping the start of each MIME part.

    Returns ``(kept_bytes, total_size, truncated)``. A line that starts
    with ``--`` is treated as a possible MIME boundary: it is kept and
    starts a new part budget. Base64 never contains ``-``, so a big
    attachment costs only a ``find`` per chunk.
    """
    kept = []
    kept_total = 0
    in_part = 0
    truncated = False
    size = 0
    carry = b""
    while True:
        chunk = stream.read(_CHUNK)
        if chunk:
            size += len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                cut = len(data)  # a line longer than a chunk is content, not a boundary
            data, carry = data[:cut], data[cut:]
        else:
            data, carry = carry, b""
        pos = 0
        while pos < len(data):
            if data.startswith(b"--", pos):
                end = data.find(b"\n", pos)
                end = len(data) if end < 0 else end + 1
                line = data[pos:end]
                if len(line) > _MAX_BOUNDARY_LINE:
                    line = line[:_MAX_BOUNDARY_LINE] + b"\r\n"
                kept.append(line)
                kept_total += len(line)
                in_part = len(line)
                pos = end
                continue
            nxt = data.find(b"\n--", pos)
            end = len(data) if nxt < 0 else nxt + 1
            limit = PART_LIMIT if kept_total < TOTAL_LIMIT else LATE_PART_LIMIT
            room = limit - in_part
            piece = data[pos:end]
            if len(piece) > room:
                truncated = True
                piece = piece[:max(room, 0)]
                # keep whole lines so that the next boundary starts a line
                piece = piece[:piece.rfind(b"\n") + 1]
            if piece:
                kept.append(piece)
                kept_total += len(piece)
                in_part += len(piece)
            pos = end
        if not chunk:
            break
    return b"".join(kept), size, truncated


def decode_header_value(raw):
    """RFC 2047 decode a header value; never raises. -> (text, words) where
    ``words`` is [(charset, encoding_char)] of the encoded words found."""
    if raw is None:
        return "", []
    if not isinstance(raw, str):
        raw = str(raw)
    raw = re.sub(r"\r?\n[ \t]", " ", raw)
    words = [(m.group(1).lower(), m.group(2).lower()) for m in _ENCODED_WORD.finditer(raw)]
    if not words:
        return raw, words
    try:
        parts = email.header.decode_header(raw)
        out = []
        for value, charset in parts:
            if isinstance(value, bytes):
                out.append(value.decode(_codec(charset), errors="replace"))
            else:
                out.append(value)
        return "".join(out), words
    except Exception:  # noqa: BLE001 - a malformed header must not stop scoring
        return raw, words


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _codec(charset):
    charset = (charset or "").lower().strip().strip('"')
    if not charset or charset in ("unknown-8bit", "x-unknown", "us-ascii", "ascii", "default"):
        return "latin-1"
    try:
        "".encode(charset)
        return charset
    except LookupError:
        return "latin-1"


def decode_bytes(data, charset):
    codec = _codec(charset)
    if codec == "latin-1":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return data.decode(codec, errors="replace")


@attrs.frozen
class Link:
    """A link in an HTML part: where it goes and what it shows."""

    href: str
    text: str


@attrs.frozen
class Attachment:
    """A non-text MIME part (or a text part with a file name)."""

    content_type: str
    filename: str
    #: the first bytes of the decoded content (for magic numbers)
    head: bytes


@attrs.define
class HtmlSummary:
    visible_text: str = ""
    hidden_text: str = ""
    images: int = 0
    links: list = attrs.Factory(list)
    forms: int = 0
    password_inputs: int = 0
    scripts: int = 0
    word_splitting_comments: int = 0
    length: int = 0


_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden"
    r"|font-size\s*:\s*[01](?:\.\d+)?\s*(?:px|pt)?\s*(?:;|$)"
    r"|(?<![-\w])color\s*:\s*(?:#f{3}\b|#f{6}\b|white\b)|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$)",
    re.IGNORECASE)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "param", "source", "track", "wbr"}


class _HtmlScanner(HTMLParser):
    """Collects what a reader sees and what is hidden from them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.summary = HtmlSummary()
        self._visible = []
        self._hidden = []
        self._stack = []          # (tag, hidden) of open elements
        self._skip = 0            # inside <script>/<style>/<head>/<title>
        self._link = None         # (href, [text]) of the open <a>

    def _hidden_now(self):
        return bool(self._stack) and self._stack[-1][1]

    def handle_starttag(self, tag, attrs_list):
        attributes = {k: (v or "") for k, v in attrs_list}
        s = self.summary
        if tag in ("script", "style", "head", "title"):
            if tag == "script":
                s.scripts += 1
            self._skip += 1
            self._stack.append((tag, self._hidden_now()))
            return
        hidden = self._hidden_now()
        style = attributes.get("style", "")
        if style and _HIDDEN_STYLE.search(style):
            hidden = True
        if tag == "font" and (attributes.get("size", "").strip() in ("0", "1", "-2", "-3")
                              or attributes.get("color", "").strip().lower()
                              in ("#ffffff", "#fff", "white")):
            hidden = True
        if "hidden" in attributes and tag not in ("input",):
            hidden = True
        if any(k.startswith("on") for k in attributes):
            s.scripts += 1
        if tag == "img":
            s.images += 1
        elif tag == "form":
            s.forms += 1
        elif tag == "input" and attributes.get("type", "").lower() == "password":
            s.password_inputs += 1
        elif tag == "a" and attributes.get("href"):
            self._link = (attributes["href"].strip(), [])
            if attributes["href"].strip().lower().startswith("javascript:"):
                s.scripts += 1
        if tag in ("br", "p", "div", "tr", "td", "li", "table", "h1", "h2", "h3"):
            (self._hidden if hidden else self._visible).append(" ")
        if tag not in _VOID:
            self._stack.append((tag, hidden))

    def handle_startendtag(self, tag, attrs_list):
        self.handle_starttag(tag, attrs_list)
        if tag not in _VOID and self._stack and self._stack[-1][0] == tag:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag == "a" and self._link is not None:
            href, text = self._link
            self.summary.links.append(Link(href=href, text=" ".join("".join(text).split())))
            self._link = None
        # pop to the matching open tag (browsers forgive unclosed tags)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                if tag in ("script", "style", "head", "title"):
                    self._skip = max(0, self._skip - 1)
                del self._stack[i:]
                break

    def handle_data(self, data):
        if self._skip:
            return
        (self._hidden if self._hidden_now() else self._visible).append(data)
        if self._link is not None:
            self._link[1].append(data)

    def finish(self):
        with contextlib.suppress(Exception):  # broken HTML is still scored
            self.close()
        self.summary.visible_text = " ".join("".join(self._visible).split())
        self.summary.hidden_text = " ".join("".join(self._hidden).split())
        return self.summary


_SPLIT_COMMENT = re.compile(r"[A-Za-z]<!--[^>]{0,80}-->[A-Za-z]")


def scan_html(source):
    """Summarize an HTML document (bounded by the caller)."""
    scanner = _HtmlScanner()
    with contextlib.suppress(Exception):  # broken HTML is still scored
        scanner.feed(source)
    summary = scanner.finish()
    summary.length = len(source)
    summary.word_splitting_comments = len(_SPLIT_COMMENT.findall(source))
    return summary


_URL_IN_TEXT = re.compile(r"""(?i)\b(?:https?://|www\.)[^\s<>"'()\[\]{}]+""")


def urls_in_text(text):
    return [m.group(0).rstrip(".,;:!?") for m in _URL_IN_TEXT.finditer(text)]


def url_host(url):
    """The lower-case host of a URL ('' when it has none)."""
    url = url.strip()
    if url.lower().startswith("www."):
        url = "http://" + url
    try:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            return ""
        host = parts.hostname or ""
    except ValueError:
        return ""
    return unquote(host).lower().rstrip(".")


@attrs.define
class ParsedMessage:
    """What the spam rules look at. Built by ``parse_message``."""

    #: [(lower-case name, raw value)] of the top-level header, in order
    headers: list
    size: int = 0
    truncated: bool = False
    content_type: str = "text/plain"
    #: decoded text of the text/plain parts
    text: str = ""
    #: HTML summaries of the text/html parts
    html: list = attrs.Factory(list)
    #: raw (decoded) HTML sources, bounded
    html_sources: list = attrs.Factory(list)
    attachments: list = attrs.Factory(list)
    #: [(content_type, charset, transfer_encoding)] of every leaf part
    parts: list = attrs.Factory(list)
    #: multipart parts whose boundary never appears / is missing
    broken_multipart: bool = False
    #: text/plain parts encoded in base64 although they are plain ASCII
    ascii_base64_text: bool = False
    #: text/plain part and HTML part of a multipart/alternative say different things
    alternative_mismatch: bool = False
    #: the ``From `` line of an mbox export, if any (never trusted)
    unixfrom: str = ""

    def get_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def get(self, name, default=None):
        values = self.get_all(name)
        return values[0] if values else default

    def has(self, name):
        name = name.lower()
        return any(n == name for n, _ in self.headers)

    def decoded(self, name):
        return decode_header_value(self.get(name))[0]

    @property
    def subject(self):
        return self.decoded("subject").strip()

    def address(self, name):
        """(display name, lower-case address) of the first address of a header."""
        value = self.decoded(name)
        if not value:
            return "", ""
        try:
            display, addr = email.utils.parseaddr(value)
        except Exception:  # noqa: BLE001
            return value, ""
        return display.strip(), addr.strip().lower()

    @property
    def visible_text(self):
        """Everything a reader sees: the plain text, else the HTML's text."""
        if self.text.strip():
            return self.text
        return "\n".join(h.visible_text for h in self.html)

    @property
    def all_text(self):
        return "\n".join([self.text] + [h.visible_text for h in self.html])

    @property
    def links(self):
        return [link for h in self.html for link in h.links]

    @property
    def urls(self):
        found = urls_in_text(self.text)
        for h in self.html:
            found.extend(link.href for link in h.links)
            found.extend(urls_in_text(h.visible_text))
        return found


def _walk(part, message, seen, depth=0):
    """Visit every part; ``seen`` maps id(part) -> decoded text or HtmlSummary."""
    if depth > 20:
        return
    ctype = part.get_content_type()
    if ctype.startswith("multipart/") and not part.is_multipart():
        message.broken_multipart = True
        return
    if part.is_multipart():
        payload = part.get_payload()
        if not payload or not isinstance(payload, list) or part.get_param("boundary") is None:
            message.broken_multipart = True
        defects = getattr(part, "defects", [])
        if any(type(d).__name__ in ("StartBoundaryNotFoundDefect",
                                    "MultipartInvariantViolationDefect") for d in defects):
            message.broken_multipart = True
        for sub in payload if isinstance(payload, list) else []:
            _walk(sub, message, seen, depth + 1)
        if ctype == "multipart/alternative":
            _compare_alternatives(payload if isinstance(payload, list) else [], message, seen)
        return
    if ctype == "message/rfc822":
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else []:
            _walk(sub, message, seen, depth + 1)
        return
    filename = ""
    try:
        filename = decode_header_value(part.get_filename() or "")[0]
    except Exception:  # noqa: BLE001
        filename = ""
    disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    cte = (part.get("content-transfer-encoding") or "").strip().lower()
    charset = part.get_content_charset() or ""
    message.parts.append((ctype, charset, cte))
    is_text = ctype in ("text/plain", "text/html") and not filename and disposition != "attachment"
    if is_text:
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001
            data = b""
        text = decode_bytes(data[:TEXT_LIMIT * 2], charset)[:TEXT_LIMIT]
        if ctype == "text/plain":
            if cte == "base64" and text and text.isascii() and charset.lower() in (
                    "", "us-ascii", "ascii"):
                message.ascii_base64_text = True
            message.text = (message.text + "\n" + text) if message.text else text
            seen[id(part)] = text
        else:
            message.html_sources.append(text)
            summary = scan_html(text[:HTML_LIMIT])
            message.html.append(summary)
            seen[id(part)] = summary
        return
    message.attachments.append(Attachment(content_type=ctype, filename=filename,
                                          head=_decoded_head(part, cte, _head_limit(filename,
                                                                                    ctype))))


#: attached web pages are read further: their scripts and forms are the payload
_PAGE_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml")
_PAGE_EXTENSIONS = (".htm", ".html", ".shtml", ".xhtml", ".svg", ".mht", ".mhtml")


def _head_limit(filename, ctype):
    if ctype in _PAGE_TYPES or filename.lower().strip('"').endswith(_PAGE_EXTENSIONS):
        return 16384
    return 256


def _decoded_head(part, cte, limit=256):
    """The first ``limit`` bytes of a part's content, decoding only those."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    if cte == "base64":
        chunk = "".join(payload[:limit * 4 // 3 + 400].split())
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            return binascii.a2b_base64(chunk)[:limit]
        except (binascii.Error, ValueError):
            return b""
    if cte == "quoted-printable":
        return quopri.decodestring(payload[:limit * 3].encode("latin-1", "replace"))[:limit]
    return payload[:limit].encode("latin-1", errors="replace")


_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def _compare_alternatives(parts, message, seen):
    plain = html_text = None
    for sub in parts:
        found = seen.get(id(sub))
        if isinstance(found, str) and plain is None:
            plain = found
        elif isinstance(found, HtmlSummary) and html_text is None:
            html_text = found.visible_text
    if plain is None or html_text is None:
        return
    plain_words = {w.lower() for w in _WORD.findall(plain)}
    html_words = {w.lower() for w in _WORD.findall(html_text)}
    if len(plain_words) < 8 and len(html_words) >= 40:
        message.alternative_mismatch = True
    elif len(plain_words) >= 20 and len(html_words) >= 20:
        common = len(plain_words & html_words)
        if common < 0.2 * min(len(plain_words), len(html_words)):
            message.alternative_mismatch = True


def _header_text(value):
    """A header value as text; raw 8-bit bytes (RFC 6532) read as UTF-8."""
    if isinstance(value, email.header.Header):
        # compat32 wraps 8-bit header bytes in a Header of charset unknown-8bit
        out = []
        for chunk, _charset in email.header.decode_header(value):
            if isinstance(chunk, bytes):
                try:
                    chunk = chunk.decode("utf-8")
                except UnicodeDecodeError:
                    chunk = chunk.decode("latin-1")
            out.append(chunk)
        return "".join(out)
    text = str(value)
    if text.isascii():
        return text
    raw = text.encode("ascii", "surrogateescape") if any(
        "\udc80" <= c <= "\udcff" for c in text) else None
    if raw is None:
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_MIME_FIELD = re.compile(rb"(?im)^content-(?:type|disposition)[ \t]*:(?:[^\n]*\n[ \t])*[^\n]*")
#: longest Content-Type/-Disposition field kept (the email package parses their
#: parameters in quadratic time; real ones are a few hundred bytes)
MAX_MIME_FIELD = 2048


def _cap_mime_fields(data):
    def cap(m):
        field = m.group(0)
        if len(field) <= MAX_MIME_FIELD:
            return field
        return field[:MAX_MIME_FIELD].rpartition(b";")[0] or field[:MAX_MIME_FIELD]
    return _MIME_FIELD.sub(cap, data)


def parse_bytes(data, size=None, truncated=False):
    """Parse (already bounded) message bytes into a ParsedMessage."""
    data = _cap_mime_fields(data)
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    headers = [(name.lower(), _header_text(value)) for name, value in msg.items()]
    message = ParsedMessage(headers=headers, size=len(data) if size is None else size,
                            truncated=truncated, content_type=msg.get_content_type(),
                            unixfrom=msg.get_unixfrom() or "")
    try:
        _walk(msg, message, {})
    except Exception:  # noqa: BLE001 - a pathological structure still gets header rules
        message.broken_multipart = True
    return message


def parse_file(path):
    """Read (bounded) and parse the message file at ``path``."""
    with open(path, "rb") as f:
        data, size, truncated = read_bounded(f)
    return parse_bytes(data, size, truncated)


