"""IMAP command syntax (RFC 3501 §9, with RFC 7888 LITERAL+, RFC 4315,
RFC 6851, RFC 5258/6154 LIST options, RFC 5819 LIST-STATUS, RFC 7162
modifiers, RFC 4731/5182 RETURN options, RFC 5256 SORT/THREAD, RFC 3516
BINARY and literal8, RFC 3502 MULTIAPPEND): from a framed command to values.

A command arrives framed by the server as ``segments``: the command line
split at its literals, ``[line0, Literal, line1, Literal, ..., lineN]``,
where every line but the last ends with the ``{n}``/``{n+}`` marker of the
literal after it. ``CommandReader`` walks that structure token by token,
so literals may appear wherever the grammar allows a string.

Everything here is pure: malformed input raises ``ParseError`` (answered
with BAD), and no parser does I/O. Search keys become the query model of
``ktmail.services.search``.
"""

import datetime
import re

import attrs

from ktmail.model import INBOX, decode_mutf7
from ktmail.services import search as q

#: ``{123}`` or ``{123+}`` at the end of a line (RFC 3501 §4.3, RFC 7888),
#: or the ``~{123}`` of a literal8 (RFC 3516 §4.4, APPEND only)
LITERAL_MARKER = re.compile(rb"~?\{(\d{1,19})(\+?)\}\Z")

_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+")
# 8-bit bytes are taken in atoms and quoted strings although RFC 3501 wants
# literals for them: clients send UTF-8 search strings and names that way
_ASTRING = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\]+")
_LIST_MAILBOX = re.compile(rb"[^\x00-\x20\x7f-\xff(){\"\\]+")
_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+\Z")
_NUMBER = re.compile(rb"\d+")
_SEQ_SET = re.compile(rb"[0-9*:,$]+")
_HEADER_NAME = re.compile(rb"[!-9;-~]+\Z")

MAX_NUMBER = 2 ** 63 - 1
MAX_NZ32 = 2 ** 32 - 1


class ParseError(Exception):
    """The command does not follow the grammar: answered with BAD."""


@attrs.define
class Literal:
    """One literal of a command: in memory (``data``) or, for an APPEND
    message, in a spool file (``spool``: has ``path`` and ``size``)."""

    size: int
    data: bytes | None = None
    spool: object = None


# --- the reader -------------------------------------------------------------------------


class CommandReader:
    """Reads the arguments of one framed command, left to right."""

    def __init__(self, segments):
        self._segments = segments
        self._index = 0
        self._pos = 0
        self.line = segments[0]

    # position

    def _literal_here(self):
        """The Literal whose marker starts at the current position, or None."""
        if self._index + 1 < len(self._segments):
            m = LITERAL_MARKER.search(self.line)
            if m and m.start() == self._pos:
                return self._segments[self._index + 1]
        return None

    def _take_literal(self):
        literal = self._segments[self._index + 1]
        self._index += 2
        self.line = self._segments[self._index]
        self._pos = 0
        return literal

    def at_end(self):
        return self._index == len(self._segments) - 1 and self._pos >= len(self.line)

    def peek(self, n=1):
        return self.line[self._pos:self._pos + n]

    def peek_upper(self, word):
        """Does the next token start with ``word`` (case-insensitive)?"""
        return self.line[self._pos:self._pos + len(word)].upper() == word

    def end(self):
        """There must be nothing left."""
        if not self.at_end():
            raise ParseError("Unexpected text at the end of the command.")

    def expect(self, text):
        if self.line[self._pos:self._pos + len(text)].upper() != text:
            raise ParseError(f"Expected {text.decode()!r}.")
        self._pos += len(text)

    def space(self):
        if self.peek() != b" ":
            raise ParseError("Missing argument.")
        self._pos += 1

    def maybe(self, text):
        """Consume ``text`` if it is next (case-insensitive) -> bool."""
        if self.peek_upper(text):
            self._pos += len(text)
            return True
        return False

    def _match(self, pattern, what):
        m = pattern.match(self.line, self._pos)
        if not m:
            raise ParseError(f"Expected {what}.")
        self._pos = m.end()
        return m.group()

    # tokens

    def atom(self):
        return self._match(_ATOM, "an atom")

    def number(self, limit=MAX_NUMBER):
        value = int(self._match(_NUMBER, "a number"))
        if value > limit:
            raise ParseError("Number out of range.")
        return value

    def nz_number(self, limit=MAX_NZ32):
        value = self.number(limit)
        if value == 0:
            raise ParseError("Expected a number above zero.")
        return value

    def quoted(self):
        if self.peek() != b'"':
            raise ParseError("Expected a quoted string.")
        out = bytearray()
        pos = self._pos + 1
        line = self.line
        while pos < len(line):
            char = line[pos]
            if char == 0x22:  # "
                self._pos = pos + 1
                return bytes(out)
            if char == 0x5C:  # backslash: only \" and \\ are allowed
                pos += 1
                if pos >= len(line) or line[pos] not in (0x22, 0x5C):
                    raise ParseError("Bad escape in a quoted string.")
                char = line[pos]
            out.append(char)
            pos += 1
        raise ParseError("Unterminated quoted string.")

    def literal(self):
        """The next token must be a literal: -> Literal."""
        if self._literal_here() is None:
            raise ParseError("Expected a literal.")
        return self._take_literal()

    def string(self):
        """quoted / literal -> bytes."""
        if self.peek() == b'"':
            return self.quoted()
        literal = self._literal_here()
        if literal is None:
            raise ParseError("Expected a string.")
        if self.peek() == b"~":
            raise ParseError("A literal8 (~{n}) may only carry an APPEND message.")
        self._take_literal()
        if literal.data is None:
            raise ParseError("Literal too large here.")
        return literal.data

    def astring(self):
        if self.peek() == b'"' or self._literal_here() is not None:
            return self.string()
        return self._match(_ASTRING, "a string")

    def nstring(self):
        if self.peek_upper(b"NIL") and not _ASTRING.match(self.line, self._pos + 3):
            self._pos += 3
            return None
        return self.string()

    def list_mailbox(self):
        """A LIST pattern: like astring, but ``%`` and ``*`` are allowed bare."""
        if self.peek() == b'"' or self._literal_here() is not None:
            return self.string()
        return self._match(_LIST_MAILBOX, "a mailbox pattern")

    def rest(self):
        """The rest of the current line (no literals)."""
        text = self.line[self._pos:]
        self._pos = len(self.line)
        return text

    def paren_list(self, item):
        """``(a b c)`` -> [item() ...]; empty lists allowed."""
        self.expect(b"(")
        out = []
        if self.peek() == b")":
            self._pos += 1
            return out
        while True:
            out.append(item())
            if self.peek() == b")":
                self._pos += 1
                return out
            self.space()


# --- common arguments -------------------------------------------------------------------


def decode_mailbox(raw, utf8=False):
    """A mailbox name from the wire -> str. Modified UTF-7 (RFC 3501
    §5.1.3); 8-bit names are taken as UTF-8, which many clients send; with
    ``utf8`` (UTF8=ACCEPT enabled, RFC 6855 §3) every name is UTF-8."""
    if raw.upper() == b"INBOX":
        return INBOX
    if utf8:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The mailbox name is not UTF-8.") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The mailbox name is neither modified UTF-7 nor UTF-8.") from None
    try:
        return decode_mutf7(text)
    except (ValueError, UnicodeDecodeError):
        raise ParseError("The mailbox name is not valid modified UTF-7.") from None


def mailbox(reader, utf8=False):
    return decode_mailbox(reader.astring(), utf8)


@attrs.frozen
class SequenceSet:
    """A sequence-set: ranges of (low, high), ``None`` standing for ``*``
    (RFC 3501 §9 ``seq-number``); ``saved`` for the RFC 5182 ``$``."""

    ranges: tuple
    saved: bool = False

    def resolved(self, last):
        """-> sorted, merged [(low, high)] with ``*`` as ``last``; empty when
        ``last`` is 0 and the set is only ``*``."""
        out = []
        for low, high in self.ranges:
            low = last if low is None else low
            high = last if high is None else high
            if low > high:
                low, high = high, low
            if high < 1:
                continue
            out.append((max(low, 1), high))
        out.sort()
        merged = []
        for low, high in out:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return merged

    def largest(self, last):
        resolved = self.resolved(last)
        return resolved[-1][1] if resolved else 0


def _seq_number(text):
    if text == b"*":
        return None
    if not text.isdigit() or text.startswith(b"0"):
        raise ParseError("Bad message number in the sequence set.")
    value = int(text)
    if value > MAX_NZ32:
        raise ParseError("Message number out of range.")
    return value


def sequence_set(reader):
    token = reader._match(_SEQ_SET, "a sequence set")
    if token == b"$":
        return SequenceSet((), saved=True)
    ranges = []
    for item in token.split(b","):
        low, colon, high = item.partition(b":")
        if colon:
            ranges.append((_seq_number(low), _seq_number(high)))
        else:
            value = _seq_number(low)
            ranges.append((value, value))
    return SequenceSet(tuple(ranges))


_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen",
                                         "\\Draft", "\\Recent")}


def flag(reader):
    """flag / flag-keyword (RFC 3501 §9) -> str, system flags canonical."""
    if reader.peek() == b"\\":
        reader._pos += 1
        name = b"\\" + reader.atom()
        canonical = _SYSTEM_FLAGS.get(name.decode("ascii").lower())
        if canonical is None:
            raise ParseError(f"Unknown system flag {name.decode('ascii')}.")
        return canonical
    return reader.atom().decode("ascii")


def flag_list(reader):
    return reader.paren_list(lambda: flag(reader))


def optional_flag_list(reader):
    if reader.peek() == b"(":
        flags = flag_list(reader)
        reader.space()
        return flags
    return None


_MONTHS = {m: i + 1 for i, m in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
     b"DEC"))}
_DATE_TIME = re.compile(rb'"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_DATE = re.compile(rb'"?(\d{1,2})-([A-Za-z]{3})-(\d{4})"?')


def date_time(reader):
    """RFC 3501 ``date-time`` -> POSIX seconds."""
    m = _DATE_TIME.match(reader.line, reader._pos)
    if not m:
        raise ParseError("Bad date-time; use \"dd-Mon-yyyy hh:mm:ss +zzzz\".")
    day, month, year, hour, minute, second, sign, zh, zm = m.groups()
    month = _MONTHS.get(month.upper())
    if month is None:
        raise ParseError("Bad month in date-time.")
    try:
        when = datetime.datetime(int(year), month, int(day), int(hour), int(minute),
                                 int(second), tzinfo=datetime.UTC)
    except ValueError:
        raise ParseError("Bad date-time.") from None
    offset = (int(zh) * 60 + int(zm)) * 60 * (1 if sign == b"+" else -1)
    reader._pos = m.end()
    return when.timestamp() - offset


def optional_date_time(reader):
    if reader.peek() == b'"':
        when = date_time(reader)
        reader.space()
        return when
    return None


def date(reader):
    """RFC 3501 ``date`` (SEARCH) -> datetime.date."""
    m = _DATE.match(reader.line, reader._pos)
    if not m or (m.group().startswith(b'"') != m.group().endswith(b'"')):
        raise ParseError("Bad date; use dd-Mon-yyyy.")
    day, month, year = m.groups()
    month = _MONTHS.get(month.upper())
    try:
        value = datetime.date(int(year), month or 0, int(day))
    except (ValueError, TypeError):
        raise ParseError("Bad date; use dd-Mon-yyyy.") from None
    reader._pos = m.end()
    return value


# --- FETCH (RFC 3501 §6.4.5) -------------------------------------------------------------


@attrs.frozen
class Section:
    """A ``section`` of BODY[...]: ``part`` numbers, then ``text`` one of
    None, HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME, with the
    header ``fields`` (bytes, as the client wrote them)."""

    part: tuple = ()
    text: str | None = None
    fields: tuple = ()

    def label(self):
        """The section as written in the response: ``1.HEADER.FIELDS (A B)``."""
        out = b".".join(b"%d" % n for n in self.part)
        if self.text:
            if out:
                out += b"."
            out += self.text.encode("ascii")
            if self.fields:
                out += b" (" + b" ".join(self.fields) + b")"
        return out


@attrs.frozen
class FetchItem:
    """One fetch attribute. ``name`` is one of ENVELOPE, FLAGS,
    INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY
    (structure), BODYSTRUCTURE, UID, or BODY[] with ``section`` (and
    ``peek``, ``partial`` = (origin, length) or None)."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple | None = None

    @property
    def sets_seen(self):
        """Does fetching this set \\Seen (RFC 3501 §6.4.5, RFC 3516 §4.1)?"""
        return (self.name in ("BODY[]", "BINARY[]") and not self.peek) or self.name in (
            "RFC822", "RFC822.TEXT")

    @property
    def is_body(self):
        return self.section is not None or self.name in ("RFC822", "RFC822.HEADER",
                                                         "RFC822.TEXT")


_SIMPLE_ATTS = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.HEADER", "RFC822.SIZE",
                "RFC822.TEXT", "RFC822", "BODYSTRUCTURE", "UID", "MODSEQ")
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


def _header_field_name(reader):
    name = reader.astring()
    if not _HEADER_NAME.match(name):
        raise ParseError("Bad header field name.")
    return name


def section(reader):
    reader.expect(b"[")
    part = []
    text = None
    fields = ()
    while reader.peek().isdigit():
        part.append(reader.nz_number())
        if not reader.maybe(b"."):
            break
    if reader.peek() != b"]":
        word = reader._match(re.compile(rb"[A-Za-z.]+"), "a section").upper()
        if word == b"HEADER.FIELDS.NOT" or word == b"HEADER.FIELDS":
            text = word.decode()
            reader.space()
            fields = tuple(reader.paren_list(lambda: _header_field_name(reader)))
            if not fields:
                raise ParseError("HEADER.FIELDS needs at least one field name.")
        elif word in (b"HEADER", b"TEXT") or (word == b"MIME" and part):
            text = word.decode()
        else:
            raise ParseError("Unknown section.")
    elif part and reader.line[reader._pos - 1:reader._pos] == b".":
        raise ParseError("Bad section.")
    reader.expect(b"]")
    return Section(tuple(part), text, fields)


def binary_section(reader):
    """RFC 3516 ``section-binary``: ``[`` part numbers ``]`` only."""
    reader.expect(b"[")
    part = []
    while reader.peek().isdigit():
        part.append(reader.nz_number())
        if not reader.maybe(b"."):
            break
    reader.expect(b"]")
    return Section(tuple(part))


def _partial(reader):
    if reader.peek() != b"<":
        return None
    reader._pos += 1
    origin = reader.number(MAX_NZ32)
    reader.expect(b".")
    length = reader.nz_number()
    reader.expect(b">")
    return (origin, length)


def fetch_att(reader):
    """One fetch-att -> [FetchItem]."""
    word = reader._match(re.compile(rb"[A-Za-z0-9.]+"), "a fetch attribute").upper().decode()
    if word in ("BODY", "BODY.PEEK") and reader.peek() == b"[":
        sect = section(reader)
        return [FetchItem("BODY[]", sect, peek=word == "BODY.PEEK", partial=_partial(reader))]
    if word in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and reader.peek() == b"[":
        sect = binary_section(reader)
        if word == "BINARY.SIZE":
            return [FetchItem("BINARY.SIZE", sect)]
        return [FetchItem("BINARY[]", sect, peek=word == "BINARY.PEEK",
                          partial=_partial(reader))]
    if word == "BODY":
        return [FetchItem("BODY")]
    if word in _SIMPLE_ATTS:
        return [FetchItem(word)]
    raise ParseError(f"Unknown fetch attribute {word}.")


def fetch_atts(reader):
    """fetch-spec: a macro, one attribute, or a parenthesised list -> (FetchItem, ...)."""
    if reader.peek() == b"(":
        groups = reader.paren_list(lambda: fetch_att(reader))
        items = [item for group in groups for item in group]
        if not items:
            raise ParseError("Empty fetch attribute list.")
    else:
        for macro, names in _MACROS.items():
            if reader.peek_upper(macro.encode()) and not re.match(
                    rb"[A-Za-z0-9.\[]", reader.line[reader._pos + len(macro):
                                                     reader._pos + len(macro) + 1]):
                reader._pos += len(macro)
                return tuple(FetchItem(n) for n in names)
        items = fetch_att(reader)
    return tuple(dict.fromkeys(items))


@attrs.frozen
class FetchModifiers:
    """RFC 7162 FETCH modifiers: CHANGEDSINCE (§3.1.4) and VANISHED (§3.2.6)."""

    changed_since: int | None = None
    vanished: bool = False


def mod_sequence(reader, allow_zero=False):
    """RFC 7162 ``mod-sequence-value`` (63-bit; zero only where ``valzer``)."""
    value = reader.number(MAX_NUMBER)
    if value == 0 and not allow_zero:
        raise ParseError("Expected a mod-sequence above zero.")
    return value


def fetch_modifiers(reader):
    """`` (CHANGEDSINCE n [VANISHED])`` after the fetch attributes, if any."""
    if reader.peek(2) != b" (":
        return FetchModifiers()
    reader.space()
    changed_since = None
    vanished = False

    def modifier():
        nonlocal changed_since, vanished
        word = reader.atom().upper()
        if word == b"CHANGEDSINCE" and changed_since is None:
            reader.space()
            changed_since = mod_sequence(reader)
        elif word == b"VANISHED" and not vanished:
            vanished = True
        else:
            raise ParseError(f"Unknown FETCH modifier {word.decode('ascii', 'replace')}.")
    reader.paren_list(modifier)
    if vanished and changed_since is None:
        raise ParseError("VANISHED needs CHANGEDSINCE (RFC 7162 §3.2.6).")
    return FetchModifiers(changed_since, vanished)


# --- SELECT / EXAMINE parameters (RFC 7162 §3.1.8, §3.2.5) ----------------------------------


@attrs.frozen
class QresyncParams:
    """``QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])``."""

    uidvalidity: int
    modseq: int
    known_uids: "SequenceSet | None" = None
    seq_match: tuple | None = None   # (SequenceSet of numbers, SequenceSet of UIDs)


@attrs.frozen
class SelectParams:
    condstore: bool = False
    qresync: QresyncParams | None = None


def select_params(reader):
    """Optional `` (CONDSTORE)`` / `` (QRESYNC (...))`` after SELECT's name."""
    if reader.peek(2) != b" (":
        return SelectParams()
    reader.space()
    condstore = False
    qresync = None

    def param():
        nonlocal condstore, qresync
        word = reader.atom().upper()
        if word == b"CONDSTORE":
            condstore = True
        elif word == b"QRESYNC" and qresync is None:
            reader.space()
            reader.expect(b"(")
            uidvalidity = reader.nz_number()
            reader.space()
            modseq = mod_sequence(reader)
            known = seq_match = None
            if reader.peek() == b" ":
                reader.space()
                if reader.peek() != b"(":
                    known = sequence_set(reader)
                    if reader.peek() == b" ":
                        reader.space()
                if reader.peek() == b"(":
                    reader.expect(b"(")
                    seqs = sequence_set(reader)
                    reader.space()
                    uids = sequence_set(reader)
                    reader.expect(b")")
                    seq_match = (seqs, uids)
            reader.expect(b")")
            qresync = QresyncParams(uidvalidity, modseq, known, seq_match)
        else:
            raise ParseError(f"Unknown SELECT parameter {word.decode('ascii', 'replace')}.")
    reader.paren_list(param)
    return SelectParams(condstore, qresync)


# --- STORE (RFC 3501 §6.4.6) -----------------------------------------------------------


@attrs.frozen
class StoreAction:
    mode: str        # "add", "remove", "replace" (model.FLAGS_*)
    silent: bool
    flags: tuple
    unchanged_since: int | None = None   # RFC 7162 §3.1.3


def store_action(reader):
    unchanged_since = None
    if reader.peek() == b"(":
        def modifier():
            nonlocal unchanged_since
            word = reader.atom().upper()
            if word != b"UNCHANGEDSINCE" or unchanged_since is not None:
                raise ParseError(f"Unknown STORE modifier {word.decode('ascii', 'replace')}.")
            reader.space()
            unchanged_since = mod_sequence(reader, allow_zero=True)
        reader.paren_list(modifier)
        if unchanged_since is None:
            raise ParseError("Empty STORE modifier list.")
        reader.space()
    mode = "replace"
    if reader.maybe(b"+"):
        mode = "add"
    elif reader.maybe(b"-"):
        mode = "remove"
    reader.expect(b"FLAGS")
    silent = reader.maybe(b".SILENT")
    reader.space()
    if reader.peek() == b"(":
        flags = flag_list(reader)
    else:
        flags = [flag(reader)]
        while reader.peek() == b" ":
            reader.space()
            flags.append(flag(reader))
    return StoreAction(mode, silent, tuple(flags), unchanged_since)


# --- SEARCH (RFC 3501 §6.4.4) -------------------------------------------------------------


class BadCharset(Exception):
    """SEARCH CHARSET names a charset we do not take: NO [BADCHARSET]."""


SEARCH_CHARSETS = ("UTF-8", "US-ASCII")


def search_charset(reader):
    """``CHARSET x SP`` when present -> the charset (validated), else None."""
    if reader.peek_upper(b"CHARSET "):
        reader._pos += len(b"CHARSET ")
        charset = reader.astring().decode("ascii", "replace").upper()
        if charset not in SEARCH_CHARSETS:
            raise BadCharset(charset)
        reader.space()
        return charset
    return None


def _search_text(reader):
    return reader.astring().decode("utf-8", "replace")


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}
_DATE_KEYS = {"BEFORE": ("internal", "before"), "ON": ("internal", "on"),
              "SINCE": ("internal", "since"), "SENTBEFORE": ("sent", "before"),
              "SENTON": ("sent", "on"), "SENTSINCE": ("sent", "since")}
MAX_SEARCH_DEPTH = 100


def search_key(reader, depth=0):
    """One search-key -> a query node."""
    if depth > MAX_SEARCH_DEPTH:
        raise ParseError("The search is nested too deeply.")
    if reader.peek() == b"(":
        items = reader.paren_list(lambda: search_key(reader, depth + 1))
        if not items:
            raise ParseError("Empty search key list.")
        return items[0] if len(items) == 1 else q.And(tuple(items))
    if reader.peek()[:1].isdigit() or reader.peek() in (b"*", b"$"):
        seqs = sequence_set(reader)
        if seqs.saved:
            return q.SavedResult()
        return q.InSet(seqs.ranges, by_uid=False)
    word = reader.atom().upper().decode("ascii")
    if word == "ALL":
        return q.All()
    if word in _FLAG_KEYS:
        return q.FlagIs(*_FLAG_KEYS[word])
    if word == "NEW":
        return q.new()
    if word == "OLD":
        return q.old()
    if word == "RECENT":
        return q.Recent()
    reader.space()
    if word in _ADDRESS_KEYS:
        return q.HeaderHas(_ADDRESS_KEYS[word], _search_text(reader))
    if word in _DATE_KEYS:
        field, op = _DATE_KEYS[word]
        return q.DateIs(field, op, date(reader))
    if word in ("KEYWORD", "UNKEYWORD"):
        return q.FlagIs(flag(reader), word == "KEYWORD")
    if word in ("LARGER", "SMALLER"):
        return q.SizeIs(word.lower(), reader.number())
    if word == "HEADER":
        name = _header_field_name(reader).decode("ascii").lower()
        reader.space()
        return q.HeaderHas(name, _search_text(reader))
    if word == "BODY":
        return q.BodyHas(_search_text(reader))
    if word == "TEXT":
        return q.BodyHas(_search_text(reader), with_headers=True)
    if word == "UID":
        seqs = sequence_set(reader)
        if seqs.saved:
            return q.SavedResult()
        return q.InSet(seqs.ranges, by_uid=True)
    if word == "MODSEQ":
        # RFC 7162 §3.1.5: an optional metadata entry name and type, which
        # change nothing here: every flag shares the message's mod-sequence
        if reader.peek() == b'"':
            reader.quoted()
            reader.space()
            entry_type = reader.atom().upper()
            if entry_type not in (b"PRIV", b"SHARED", b"ALL"):
                raise ParseError("MODSEQ entry type must be priv, shared or all.")
            reader.space()
        return q.ModseqIs(mod_sequence(reader, allow_zero=True))
    if word == "NOT":
        return q.Not(search_key(reader, depth + 1))
    if word == "OR":
        left = search_key(reader, depth + 1)
        reader.space()
        return q.Or(left, search_key(reader, depth + 1))
    raise ParseError(f"Unknown search key {word}.")


def search_keys(reader):
    """``key *(SP key)`` -> one query node."""
    keys = [search_key(reader)]
    while reader.peek() == b" ":
        reader.space()
        keys.append(search_key(reader))
    return keys[0] if len(keys) == 1 else q.And(tuple(keys))


#: RFC 4731 §3.1 result options, with RFC 5182 SAVE
RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE")


def search_return(reader):
    """``RETURN (opts) SP`` (RFC 4731 §3.1) when present -> frozenset of
    options (empty RETURN () means ALL), else None (a plain SEARCH)."""
    if not reader.peek_upper(b"RETURN "):
        return None
    reader._pos += len(b"RETURN ")
    options = set()
    for word in reader.paren_list(reader.atom):
        word = word.upper().decode("ascii")
        if word not in RETURN_OPTIONS:
            raise ParseError(f"Unknown SEARCH return option {word}.")
        options.add(word)
    reader.space()
    return frozenset(options or {"ALL"})


@attrs.frozen
class SearchProgram:
    charset: str | None
    query: object
    returns: frozenset | None = None    # ESEARCH options (RFC 4731), None: SEARCH


def search_program(reader):
    """``[RETURN (opts)] [CHARSET x] key *(SP key)`` -> SearchProgram."""
    returns = search_return(reader)
    charset = search_charset(reader)
    query = search_keys(reader)
    reader.end()
    return SearchProgram(charset, query, returns)


# --- SORT and THREAD (RFC 5256, RFC 5267 ESORT) -------------------------------------------

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO")


@attrs.frozen
class SortProgram:
    criteria: tuple        # ((key, reverse), ...)
    charset: str
    query: object
    returns: frozenset | None = None    # ESORT options (RFC 5267 §3.2)


def _required_charset(reader):
    charset = reader.astring().decode("ascii", "replace").upper()
    if charset not in SEARCH_CHARSETS:
        raise BadCharset(charset)
    return charset


def sort_program(reader):
    """``[RETURN (opts)] (criteria) charset key *(SP key)`` (RFC 5256 §3)."""
    returns = search_return(reader)
    if returns is not None and "SAVE" in returns:
        raise ParseError("SORT cannot SAVE its result.")
    criteria = []
    reverse = False

    def criterion():
        nonlocal reverse
        word = reader.atom().upper().decode("ascii")
        if word == "REVERSE":
            reverse = True
            reader.space()
            word = reader.atom().upper().decode("ascii")
        if word not in SORT_KEYS:
            raise ParseError(f"Unknown sort criterion {word}.")
        criteria.append((word, reverse))
        reverse = False
    reader.paren_list(criterion)
    if not criteria:
        raise ParseError("SORT needs at least one criterion.")
    reader.space()
    charset = _required_charset(reader)
    reader.space()
    query = search_keys(reader)
    reader.end()
    return SortProgram(tuple(criteria), charset, query, returns)


THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


def thread_program(reader):
    """``algorithm charset key *(SP key)`` (RFC 5256 §3) -> (algorithm, query)."""
    algorithm = reader.atom().upper().decode("ascii")
    if algorithm not in THREAD_ALGORITHMS:
        raise ParseError(f"Unknown threading algorithm {algorithm}.")
    reader.space()
    _required_charset(reader)
    reader.space()
    query = search_keys(reader)
    reader.end()
    return algorithm, query


# --- LIST (RFC 3501 §6.3.8, RFC 5258, RFC 6154) --------------------------------------------


@attrs.frozen
class ListCommand:
    reference: str
    patterns: tuple
    selection: frozenset = frozenset()   # SUBSCRIBED, SPECIAL-USE, RECURSIVEMATCH, REMOTE
    returns: frozenset = frozenset()     # SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS
    status_items: tuple = ()             # RETURN (STATUS (...)) (RFC 5819)


_SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_RETURNS = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}


def _pattern(reader, utf8=False):
    raw = reader.list_mailbox()
    if raw.upper() == b"INBOX":
        return INBOX
    try:
        return decode_mailbox(raw, utf8)
    except ParseError:
        # wildcards make some patterns not decodable as a whole; decode the
        # literal runs between them
        parts = re.split(rb"([*%])", raw)
        return "".join(p.decode() if p in (b"*", b"%") else decode_mailbox(p, utf8) if p
                       else "" for p in parts)


def list_command(reader, utf8=False):
    selection = set()
    if reader.peek() == b"(":
        for word in reader.paren_list(reader.atom):
            word = word.upper().decode("ascii")
            if word not in _SELECTION:
                raise ParseError(f"Unknown LIST selection option {word}.")
            selection.add(word)
        reader.space()
        if "RECURSIVEMATCH" in selection and selection <= {"RECURSIVEMATCH", "REMOTE"}:
            raise ParseError("RECURSIVEMATCH needs another selection option.")
    reference = reader.astring()
    reference = decode_mailbox(reference, utf8) if reference else ""
    reader.space()
    if reader.peek() == b"(":
        patterns = reader.paren_list(lambda: _pattern(reader, utf8))
    else:
        patterns = [_pattern(reader, utf8)]
    returns = set()
    items = ()
    if reader.peek() == b" ":
        reader.space()
        reader.expect(b"RETURN")
        reader.space()

        def option():
            nonlocal items
            word = reader.atom().upper().decode("ascii")
            if word not in _RETURNS or word in returns:
                raise ParseError(f"Unknown or repeated LIST return option {word}.")
            returns.add(word)
            if word == "STATUS":
                reader.space()
                items = status_items(reader)   # RFC 5819 §2
        reader.paren_list(option)
    reader.end()
    return ListCommand(reference, tuple(patterns), frozenset(selection), frozenset(returns),
                       items)


STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "APPENDLIMIT",
                "HIGHESTMODSEQ", "SIZE", "DELETED")


def status_items(reader):
    items = []
    for word in reader.paren_list(reader.atom):
        word = word.upper().decode("ascii")
        if word not in STATUS_ITEMS:
            raise ParseError(f"Unknown STATUS item {word}.")
        items.append(word)
    if not items:
        raise ParseError("STATUS needs at least one item.")
    return tuple(dict.fromkeys(items))
