"""IMAP response syntax (RFC 3501 §9, RFC 9051 §9): how values are written.

Owns the one place where strings, mailbox names, flag lists, dates and
sequence sets become bytes on the wire. Pure functions, no I/O.

Invariants: a ``quoted`` string is only used for 7-bit text without CR,
LF or NUL (RFC 3501 ``QUOTED-CHAR``); everything else is sent as a
literal, so a header value with 8-bit bytes or a line break can never
break the framing of a response. NUL bytes, which IMAP4rev1 strings cannot
carry at all, are dropped. Response text (``resp-text``) is reduced to
printable ASCII on one line.
"""

import calendar
import re
import time

from ktmail.model import INBOX, encode_mutf7

#: RFC 3501 ATOM-CHAR: any CHAR except atom-specials
_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\\]]+\Z")
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")

MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
          b"Nov", b"Dec")


def _bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def literal(data):
    """``{n}CRLF`` followed by the bytes (RFC 3501 §4.3)."""
    data = _bytes(data).replace(b"\x00", b"")
    return b"{%d}\r\n%s" % (len(data), data)


def literal8(data):
    """RFC 3516 ``literal8`` (``~{n}``) when the bytes hold a NUL, else an
    ordinary literal: the bytes go out exactly as they are."""
    data = _bytes(data)
    if b"\x00" in data:
        return b"~{%d}\r\n%s" % (len(data), data)
    return b"{%d}\r\n%s" % (len(data), data)


def string(value):
    """A ``string``: quoted when it can be, else a literal."""
    data = _bytes(value).replace(b"\x00", b"")
    if len(data) < 1024 and _QUOTABLE.match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def nstring(value):
    """An ``nstring``: NIL for None, else a string."""
    return b"NIL" if value is None else string(value)


def astring(value):
    """An ``astring``: a bare atom when it is one (plus ``]``), else a string."""
    data = _bytes(value)
    if data and _ATOM.match(data.replace(b"]", b"a")):
        return data
    return string(data)


def mailbox(name, utf8=False):
    """A mailbox name on the wire: modified UTF-7 (RFC 3501 §5.1.3), or
    UTF-8 once the client enabled UTF8=ACCEPT (RFC 6855 §3), as an astring
    (a quoted string may then carry UTF-8); INBOX is always spelled INBOX."""
    if name.upper() == INBOX:
        return b"INBOX"
    if utf8:
        data = name.encode("utf-8")
        if _ATOM.match(data.replace(b"]", b"a")):
            return data
        if b"\r" not in data and b"\n" not in data and b"\x00" not in data:
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return literal(data)
    return astring(encode_mutf7(name).encode("ascii"))


_FLAG_ORDER = {b"\\Answered": 0, b"\\Flagged": 1, b"\\Deleted": 2, b"\\Seen": 3, b"\\Draft": 4}


def flag_list(flags, recent=False):
    """``(\\Seen $Forwarded)``: system flags first in a fixed order, then
    keywords sorted; ``\\Recent`` when ``recent``."""
    items = sorted((_bytes(f) for f in flags), key=lambda f: (_FLAG_ORDER.get(f, 9), f))
    if recent:
        items.append(b"\\Recent")
    return b"(" + b" ".join(items) + b")"


def internal_date(seconds):
    """RFC 3501 ``date-time``: ``"17-Jul-1996 02:44:25 +0000"`` (UTC)."""
    t = time.gmtime(int(seconds))
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def utc_seconds(year, month, day, hour=0, minute=0, second=0):
    """POSIX seconds of a UTC calendar time (no clock involved)."""
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def number_set(numbers):
    """Ascending distinct ints -> ``1:3,5,9:10`` (RFC 4315 ``uid-set``)."""
    return ordered_set(numbers)   # for ascending input, every run is a range


def range_set(ranges):
    """Ascending, disjoint [(low, high)] -> ``1:3,5`` (a sequence set)."""
    return b",".join(b"%d" % low if low == high else b"%d:%d" % (low, high)
                     for low, high in ranges)


def ordered_set(numbers):
    """Ints in a given order (RFC 5267 sorted results) -> a sequence set that
    keeps the order: only ascending runs become ranges."""
    out = []
    start = prev = None
    for n in numbers:
        if start is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    if start is not None:
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(out)


def text(value):
    """``resp-text`` for people: one line of printable ASCII."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = " ".join(value.split())
    return value.encode("ascii", "replace")
