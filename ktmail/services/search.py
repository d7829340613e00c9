"""Searching the messages of one folder: the query model and its evaluation.

Owns the meaning of a search (IMAP SEARCH, RFC 3501 §6.4.4; webmail's
search box can build the same queries) independent of any wire syntax,
and its evaluation over what the index knows, cheapest data first:

1. flags, size, INTERNALDATE, UID and position, from ``MessageInfo``
   (in memory, no I/O);
2. the decoded From/To/Cc/Bcc/Subject, Date, Message-ID, In-Reply-To and
   References fields cached in the index (``LiveFolder.details``);
3. any other header field, read from the top of the message file;
4. body text (BODY, TEXT), read from the file, transfer encoding and
   charset decoded part by part.

Levels 3 and 4 read files through ``LiveFolder.read_messages`` on the
store's worker threads; only the booleans come back.

Evaluation is three-valued: a message whose answer is already known from
cheaper data never loads the dearer data (``UNSEEN BODY x`` reads only the
unseen messages). String matches are case-insensitive (Unicode casefold)
substring matches on decoded text (RFC 2047 encoded words, charsets), as
RFC 3501 asks. Dates compare calendar days in UTC: INTERNALDATE is kept in
UTC, and the Date: header is reduced to its instant, so SENT* keys see the
UTC day of the sending time.
"""

import datetime

import attrs

from ktmail import mime
from ktmail.services import deferred

#: header fields whose decoded value the index caches (level 2)
CACHED_FIELDS = {"from": "hdr_from", "to": "hdr_to", "cc": "hdr_cc", "bcc": "hdr_bcc",
                 "subject": "subject", "message-id": "message_id",
                 "in-reply-to": "in_reply_to", "references": "refs"}

#: messages whose dearer data is loaded at once
BATCH = 500
#: text of one part looked at by BODY/TEXT searches (the rest is not searched)
MAX_PART_TEXT = 16 * 1024 * 1024
#: header bytes read for searches in uncached header fields
MAX_HEADER_READ = 256 * 1024

INFO, FIELDS, HEADERS, TEXT = 1, 2, 3, 4


# --- the query model ----------------------------------------------------------------------


@attrs.frozen
class All:
    """Every message."""

    level = INFO


@attrs.frozen
class FlagIs:
    """A flag (system flag in its canonical spelling, or keyword) is set or not."""

    flag: str
    present: bool = True
    level = INFO


@attrs.frozen
class Recent:
    """The message is \\Recent for the searching session."""

    level = INFO


@attrs.frozen
class SizeIs:
    """RFC822.SIZE ``larger`` or ``smaller`` than ``octets``."""

    op: str
    octets: int
    level = INFO


@attrs.frozen
class DateIs:
    """The day of INTERNALDATE (``field="internal"``) or of the Date:
    header (``"sent"``) is ``before``/``on``/``since`` ``day`` (datetime.date)."""

    field: str
    op: str
    day: datetime.date

    @property
    def level(self):
        return INFO if self.field == "internal" else FIELDS


@attrs.frozen
class InSet:
    """Position (1-based, ``by_uid=False``) or UID in a set of ranges;
    ``None`` in a range stands for the largest one (``*``)."""

    ranges: tuple
    by_uid: bool
    level = INFO


@attrs.frozen
class SavedResult:
    """The messages of the session's saved search result (IMAP ``$``,
    RFC 5182), given as UIDs in ``Scope.saved``."""

    level = INFO


@attrs.frozen
class ModseqIs:
    """The message's mod-sequence is at least ``modseq`` (RFC 7162 §3.1.5)."""

    modseq: int
    level = INFO


@attrs.frozen
class HeaderHas:
    """Header field ``name`` (lower-case) contains ``text``; an empty text
    matches every message that has the field."""

    name: str
    text: str

    @property
    def level(self):
        return FIELDS if self.name in CACHED_FIELDS else HEADERS


@attrs.frozen
class BodyHas:
    """The body (``TEXT`` when ``with_headers``) contains ``text``."""

    text: str
    with_headers: bool = False
    level = TEXT


@attrs.frozen
class Not:
    item: object

    @property
    def level(self):
        return self.item.level


@attrs.frozen
class Or:
    left: object
    right: object

    @property
    def level(self):
        return max(self.left.level, self.right.level)


@attrs.frozen
class And:
    items: tuple

    @property
    def level(self):
        return max((i.level for i in self.items), default=INFO)


def new():
    """RFC 3501 NEW: \\Recent and not \\Seen."""
    return And((Recent(), FlagIs("\\Seen", False)))


def old():
    """RFC 3501 OLD: not \\Recent."""
    return Not(Recent())


# --- evaluation -------------------------------------------------------------------------


@attrs.define
class Candidate:
    """One message being searched, with the data loaded for it so far."""

    position: int
    info: object            # model.MessageInfo
    fields: dict | None = None
    headers: list | None = None       # [(name, decoded value)]
    text_hits: dict | None = None     # {BodyHas node: bool}


@attrs.frozen
class Scope:
    """What a search needs to know besides the messages: the session's
    \\Recent UIDs, the largest position and UID (``*``) and the UIDs of the
    saved result (``$``)."""

    recent: frozenset = frozenset()
    last_position: int = 0
    last_uid: int = 0
    saved: frozenset = frozenset()


def _utc_day(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).date()


def _contains(value, needle):
    if value is None:
        return False
    return needle.casefold() in value.casefold()


def _in_ranges(value, ranges, last):
    for low, high in ranges:
        low = last if low is None else low
        high = last if high is None else high
        if low > high:
            low, high = high, low
        if low <= value <= high:
            return True
    return False


def evaluate(node, c, scope, level):
    """True, False, or None when data above ``level`` would be needed."""
    kind = type(node)
    if kind is All:
        return True
    if kind is FlagIs:
        return (node.flag in c.info.flags) == node.present
    if kind is Recent:
        return c.info.uid in scope.recent
    if kind is SizeIs:
        return c.info.size > node.octets if node.op == "larger" else c.info.size < node.octets
    if kind is ModseqIs:
        return c.info.modseq >= node.modseq
    if kind is SavedResult:
        return c.info.uid in scope.saved
    if kind is InSet:
        if node.by_uid:
            return _in_ranges(c.info.uid, node.ranges, scope.last_uid)
        return _in_ranges(c.position, node.ranges, scope.last_position)
    if kind is And:
        answer = True
        for item in node.items:
            value = evaluate(item, c, scope, level)
            if value is False:
                return False
            if value is None:
                answer = None
        return answer
    if kind is Or:
        left = evaluate(node.left, c, scope, level)
        if left is True:
            return True
        right = evaluate(node.right, c, scope, level)
        if right is True:
            return True
        return None if None in (left, right) else False
    if kind is Not:
        value = evaluate(node.item, c, scope, level)
        return None if value is None else not value
    if node.level > level:
        return None
    if kind is DateIs:
        if node.field == "internal":
            seconds = c.info.internal_date
        else:
            seconds = (c.fields or {}).get("sent_date")
            if seconds is None:
                return False
        day = _utc_day(seconds)
        if node.op == "before":
            return day < node.day
        if node.op == "on":
            return day == node.day
        return day >= node.day
    if kind is HeaderHas:
        if node.name in CACHED_FIELDS:
            value = (c.fields or {}).get(CACHED_FIELDS[node.name])
            if not node.text:
                return value is not None
            return _contains(value, node.text)
        values = [v for n, v in (c.headers or ()) if n == node.name]
        if not node.text:
            return bool(values)
        return any(_contains(v, node.text) for v in values)
    if kind is BodyHas:
        return bool((c.text_hits or {}).get(node))
    raise TypeError(f"unknown search key {node!r}")


def leaves(node):
    """The keys of a query (everything but And/Or/Not), depth first."""
    if isinstance(node, And):
        for item in node.items:
            yield from leaves(item)
    elif isinstance(node, Or):
        yield from leaves(node.left)
        yield from leaves(node.right)
    elif isinstance(node, Not):
        yield from leaves(node.item)
    else:
        yield node


# --- reading message files (worker threads) -----------------------------------------------


def read_header_block(fileobj, limit=MAX_HEADER_READ):
    """The raw header block at the start of a message file, with the blank
    line that ends it (IMAP BODY[HEADER])."""
    data = b""
    while len(data) < limit:
        if data.startswith(b"\r\n"):
            return b"\r\n"  # no header fields at all
        chunk = fileobj.read(16384)
        if not chunk:
            break
        data += chunk
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[:end + 4]
        end = data.find(b"\n\n")
        if end >= 0:
            return data[:end + 2]
    return data[:limit]


def decoded_headers(block):
    """[(lower-case name, decoded value)] of a raw header block."""
    return [(name, mime.decode_header_value(value))
            for name, value in mime.parse_header_block(block)]


def _read_range(fileobj, start, end, limit):
    fileobj.seek(start)
    return fileobj.read(max(0, min(end - start, limit)))


def _part_texts(fileobj, part):
    """Decoded text of every text part below ``part`` (casefolded), and the
    decoded header fields of encapsulated messages."""
    if part.message is not None:
        block = _read_range(fileobj, part.message.header_start, part.message.header_end,
                            MAX_HEADER_READ)
        yield " ".join(v for _, v in decoded_headers(block)).casefold()
        yield from _part_texts(fileobj, part.message)
        return
    if part.children:
        for child in part.children:
            yield from _part_texts(fileobj, child)
        return
    if part.media_type not in ("text", "multipart", "message") and part.media_type:
        return
    raw = _read_range(fileobj, part.body_start, part.body_end, MAX_PART_TEXT)
    data = mime.decode_body(raw, part.encoding)
    charset = part.charset
    if not charset or charset.strip().lower() in ("us-ascii", "ascii"):
        charset = None  # undeclared or 7-bit: 8-bit bytes are most likely UTF-8
    text = mime.decode_bytes(data, charset)
    if part.media_subtype == "html":
        text = _strip_tags(text)
    yield text.casefold()


def _strip_tags(html):
    out = []
    inside = False
    for char in html:
        if char == "<":
            inside = True
        elif char == ">":
            inside = False
            out.append(" ")
        elif not inside:
            out.append(char)
    return "".join(out)


def text_matcher(nodes, structures):
    """-> reader(uid, fileobj) -> {node: bool} for BODY/TEXT nodes, run on
    a worker thread; ``structures`` maps UIDs to their mime.Part trees."""
    def read(uid, fileobj):
        structure = structures.get(uid)
        hits = {}
        needles = [(node, node.text.casefold()) for node in nodes]
        if structure is None:
            fileobj.seek(0)
            structure = mime.parse(fileobj)
        header_text = None
        body = list(_part_texts(fileobj, structure))
        for node, needle in needles:
            if any(needle in t for t in body):
                hits[node] = True
                continue
            if node.with_headers:
                if header_text is None:
                    block = _read_range(fileobj, structure.header_start,
                                        structure.header_end, MAX_HEADER_READ)
                    header_text = " ".join(
                        f"{n}: {v}" for n, v in decoded_headers(block)).casefold()
                hits[node] = needle in header_text
            else:
                hits[node] = False
        return hits
    return read


def header_reader(uid, fileobj):
    """reader(uid, fileobj) -> [(name, decoded value)] of the message header."""
    return decoded_headers(read_header_block(fileobj))


# --- the shell ----------------------------------------------------------------------


@deferred
async def search(folder, query, messages, scope):
    """Evaluate ``query`` over ``messages`` [(position, MessageInfo)] of the
    live ``folder``. -> [position ...] of the matches, ascending."""
    matches = []
    pending = []
    for position, info in messages:
        c = Candidate(position, info)
        value = evaluate(query, c, scope, INFO)
        if value is True:
            matches.append(position)
        elif value is None:
            pending.append(c)
    for start in range(0, len(pending), BATCH):
        batch = pending[start:start + BATCH]
        matches.extend(await _search_batch(folder, query, batch, scope))
    matches.sort()
    return matches


async def _search_batch(folder, query, batch, scope):
    found = []
    level = query.level
    needs_structure = level >= TEXT
    details = await folder.details([c.info.uid for c in batch], with_structure=needs_structure)
    structures = {}
    undecided = []
    for c in batch:
        summary = details.get(c.info.uid)
        if summary is None:
            continue  # expunged meanwhile
        c.fields = summary.fields
        if summary.structure is not None:
            structures[c.info.uid] = summary.structure
        value = evaluate(query, c, scope, FIELDS)
        if value is True:
            found.append(c.position)
        elif value is None:
            undecided.append(c)
    if undecided and any(key.level == HEADERS for key in leaves(query)):
        headers = await folder.read_messages([c.info.uid for c in undecided], header_reader)
        still = []
        for c in undecided:
            c.headers = headers.get(c.info.uid, [])
            value = evaluate(query, c, scope, HEADERS)
            if value is True:
                found.append(c.position)
            elif value is None:
                still.append(c)
        undecided = still
    if undecided and level >= TEXT:
        nodes = list(dict.fromkeys(k for k in leaves(query) if isinstance(k, BodyHas)))
        hits = await folder.read_messages([c.info.uid for c in undecided],
                                          text_matcher(nodes, structures))
        for c in undecided:
            c.text_hits = hits.get(c.info.uid, {})
            if evaluate(query, c, scope, TEXT):
                found.append(c.position)
    return found
