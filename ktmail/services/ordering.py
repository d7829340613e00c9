"""Ordering the messages of a folder: SORT and THREAD (RFC 5256).

Owns the meaning of sort keys and threads independent of any wire syntax
(IMAP SORT/THREAD; webmail may sort and thread with the same functions):

- ``base_subject`` is RFC 5256 §2.1's base-subject extraction (with the
  "is a reply or forward" answer threading needs);
- ``SortKeys`` are the per-message keys (RFC 5256 §3: ARRIVAL, CC, DATE,
  FROM, SIZE, SUBJECT, TO, plus what THREAD needs), compared with the
  i;ascii-casemap collation (RFC 4790 §9.2: ASCII letters folded, every
  other octet of the UTF-8 compared as it is);
- ``sort``, ``thread_ordered_subject`` and ``thread_references`` are pure.

Invariants: ties are always broken by message position (sequence number),
so every answer is deterministic; sort keys are built once per message
from the index's cached summary (``LiveFolder.details``, never the file)
and kept on the live folder (``keys_for``) while it stays loaded, since a
message's headers never change.
"""

import re

import attrs

from ktmail.services import deferred

#: summaries loaded at once when keys are missing
BATCH = 1000


# --- base subject (RFC 5256 §2.1) --------------------------------------------------------

_BLOB = r"\[[^\[\]]*\][ \t]*"
_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:", re.IGNORECASE)
_BLOB_START = re.compile(_BLOB)
_FWD_TRAILER = re.compile(r"[ \t]*\(fwd\)[ \t]*\Z", re.IGNORECASE)


def base_subject(subject):
    """RFC 5256 §2.1 -> (base subject, is a reply or forward). ``subject``
    is the decoded Subject: text (step 1's encoded-word decoding is done by
    the index), or None."""
    # step 1: every run of white space (folding included) becomes one space
    text = " ".join((subject or "").split())
    reply = False
    while True:
        # step 2: trailing "(fwd)" and white space
        while True:
            m = _FWD_TRAILER.search(text)
            if m is None:
                break
            text = text[:m.start()]
            reply = True
        text = text.rstrip(" \t")
        # steps 3-5: leading white space, subj-leader, subj-blob, until none left
        while True:
            before = text
            text = text.lstrip(" \t")
            m = _LEADER.match(text)
            if m is not None:
                text = text[m.end():]
                reply = True
            m = _BLOB_START.match(text)
            if m is not None and text[m.end():].strip(" \t"):
                text = text[m.end():]
            if text == before:
                break
        # step 6: "[fwd:" ... "]" around the rest, then again from step 2
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def casemap(text):
    """The i;ascii-casemap collation key of a string (RFC 4790 §9.2)."""
    return (text or "").encode("utf-8", "replace").upper()


# --- keys ---------------------------------------------------------------------------------

_MSG_ID = re.compile(r"<([^<>\s]+)>")


@attrs.frozen
class SortKeys:
    """What SORT and THREAD compare, for one message (``sent`` None when the
    Date: header is missing or unreadable)."""

    from_: bytes
    to: bytes
    cc: bytes
    subject: bytes
    reply: bool
    sent: float | None
    message_id: str | None
    references: tuple


def _first_mailbox(addresses):
    """addr-mailbox of the first real address (group markers skipped)."""
    for a in addresses or ():
        if a.host is not None and a.mailbox:
            return casemap(a.mailbox)
    return b""


def keys_of(summary):
    """SortKeys of a mime.MessageSummary (with its structure, for ENVELOPE)."""
    fields = summary.fields
    envelope = summary.envelope
    subject, reply = base_subject(fields.get("subject"))
    message_ids = _MSG_ID.findall(fields.get("message_id") or "")
    references = _MSG_ID.findall(fields.get("refs") or "")
    if not references:
        references = _MSG_ID.findall(fields.get("in_reply_to") or "")[:1]
    return SortKeys(
        from_=_first_mailbox(envelope.from_ if envelope else ()),
        to=_first_mailbox(envelope.to if envelope else ()),
        cc=_first_mailbox(envelope.cc if envelope else ()),
        subject=casemap(subject), reply=reply, sent=fields.get("sent_date"),
        message_id=message_ids[0] if message_ids else None,
        references=tuple(references))


@deferred
async def keys_for(folder, uids):
    """-> {uid: SortKeys} for those of ``uids`` still in the live ``folder``;
    built from cached summaries once, then kept on the folder."""
    cache = folder.sort_keys
    missing = [u for u in uids if u not in cache]
    for start in range(0, len(missing), BATCH):
        chunk = missing[start:start + BATCH]
        summaries = await folder.details(chunk, with_structure=True)
        for uid, summary in summaries.items():
            cache[uid] = keys_of(summary)
    return {u: cache[u] for u in uids if u in cache}


# --- SORT (RFC 5256 §3) ---------------------------------------------------------------------


@attrs.frozen
class Item:
    """One message being ordered: its position (sequence number), index
    entry (model.MessageInfo) and SortKeys."""

    position: int
    info: object
    keys: SortKeys

    @property
    def sent(self):
        """RFC 5256 §2.2 sent date: the Date: header, else INTERNALDATE."""
        return self.keys.sent if self.keys.sent is not None else self.info.internal_date


def _key_value(item, name):
    if name == "ARRIVAL":
        return item.info.internal_date
    if name == "DATE":
        return item.sent
    if name == "SIZE":
        return item.info.size
    if name == "SUBJECT":
        return item.keys.subject
    if name == "FROM":
        return item.keys.from_
    if name == "TO":
        return item.keys.to
    if name == "CC":
        return item.keys.cc
    raise ValueError(f"unknown sort key {name}")


def sort(items, criteria):
    """RFC 5256 §3 SORT: ``criteria`` is ((name, reverse), ...); the last
    tie-break is the position, ascending. -> [Item] in order."""
    ordered = sorted(items, key=lambda i: i.position)
    # stable sorts from the least significant criterion to the most
    for name, reverse in reversed(criteria):
        ordered.sort(key=lambda i, n=name: _key_value(i, n), reverse=reverse)
    return ordered


# --- THREAD (RFC 5256 §3) --------------------------------------------------------------------


class Node:
    """A thread node: a message (``item``) or a dummy (``item`` None)."""

    __slots__ = ("children", "item", "parent")

    def __init__(self, item=None):
        self.item = item
        self.parent = None
        self.children = []

    def is_ancestor_of(self, other):
        node = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def add_child(self, child):
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def unlink(self):
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def first_item(self):
        """The message of this node, or of its first child (dummies)."""
        node = self
        while node.item is None and node.children:
            node = node.children[0]
        return node.item


def _date_key(node):
    item = node.first_item()
    return (item.sent, item.position) if item is not None else (0.0, 0)


def thread_ordered_subject(items):
    """RFC 5256 §3 ORDEREDSUBJECT: messages grouped by base subject, each
    group in sent-date order with the first as parent of the rest; the
    groups ordered by their first message. -> [Node] roots."""
    ordered = sorted(items, key=lambda i: (i.keys.subject, i.sent, i.position))
    roots = []
    current = None
    for item in ordered:
        if current is None or current.item.keys.subject != item.keys.subject:
            current = Node(item)
            roots.append(current)
        else:
            current.add_child(Node(item))
    roots.sort(key=_date_key)
    return roots


def thread_references(items):
    """RFC 5256 §3 REFERENCES (the JWZ algorithm as the RFC adapts it).
    -> [Node] roots, every sibling list in sent-date order."""
    table = {}
    used_ids = set()
    # (1) the parent/child links of Message-ID, References and In-Reply-To
    for item in sorted(items, key=lambda i: i.position):
        message_id = item.keys.message_id
        if message_id is None or message_id in used_ids:
            message_id = f"\0unique-{item.position}"  # (1)(A): missing or duplicate
        used_ids.add(message_id)
        node = table.get(message_id)
        if node is None:
            node = table[message_id] = Node(item)
        else:
            node.item = item
        previous = None
        for ref in item.keys.references:
            ref_node = table.get(ref)
            if ref_node is None:
                ref_node = table[ref] = Node()
            if (previous is not None and ref_node.parent is None
                    and not ref_node.is_ancestor_of(previous) and ref_node is not previous):
                previous.add_child(ref_node)
            previous = ref_node
        # (1)(B): the last reference is the parent, replacing an earlier guess
        if previous is not None and previous is not node and not node.is_ancestor_of(previous):
            previous.add_child(node)
        elif previous is None:
            node.unlink()
    # (2) the root set
    roots = [n for n in table.values() if n.parent is None]
    # (3) prune dummies
    roots = _prune(roots, top=True)
    # (4) order the children, then the roots, by sent date
    for root in roots:
        _sort_tree(root)
    roots.sort(key=_date_key)
    # (5) merge roots with the same base subject
    roots = _merge_subjects(roots)
    # (6) order every sibling list again (merging made new ones)
    for root in roots:
        _sort_tree(root)
    roots.sort(key=_date_key)
    return roots


def _prune(nodes, top):
    out = []
    for node in nodes:
        node.children = _prune(node.children, top=False)
        for child in node.children:
            child.parent = node
        if node.item is not None:
            out.append(node)
        elif not node.children:
            continue  # (3)(A): an empty dummy goes
        elif top and len(node.children) > 1:
            out.append(node)  # (3)(B): kept at the top with several children
        else:
            for child in node.children:
                child.parent = node.parent if not top else None
            out.extend(node.children)  # (3)(B): children promoted
    return out


def _sort_tree(node):
    for child in node.children:
        _sort_tree(child)
    node.children.sort(key=_date_key)


def _merge_subjects(roots):
    subjects = {}
    for root in roots:  # (5)(A)-(B): one container per base subject
        item = root.first_item()
        if item is None or not item.keys.subject:
            continue
        held = subjects.get(item.keys.subject)
        if held is None or (held.item is not None and root.item is None) or (
                held.item is not None and root.item is not None
                and held.item.keys.reply and not root.item.keys.reply):
            subjects[item.keys.subject] = root
    out = []
    replaced = {}
    for root in roots:  # (5)(C)
        if root.parent is not None:
            continue  # merged below a root handled before it
        item = root.first_item()
        held = subjects.get(item.keys.subject) if item is not None and item.keys.subject \
            else None
        held = replaced.get(id(held), held)
        if held is None or held is root:
            out.append(root)
            continue
        if held.item is None and root.item is None:
            for child in list(root.children):
                held.add_child(child)
        elif held.item is None:
            held.add_child(root)
        elif root.item is None:
            root.add_child(held)
            _replace(out, held, root)
            replaced[id(held)] = root
            subjects[item.keys.subject] = root
        elif root.item.keys.reply and not held.item.keys.reply:
            held.add_child(root)
        elif held.item.keys.reply and not root.item.keys.reply:
            root.add_child(held)
            _replace(out, held, root)
            replaced[id(held)] = root
            subjects[item.keys.subject] = root
        else:
            dummy = Node()
            _replace(out, held, dummy)
            dummy.add_child(held)
            dummy.add_child(root)
            replaced[id(held)] = dummy
            subjects[item.keys.subject] = dummy
    return out


def _replace(roots, old, new):
    for i, node in enumerate(roots):
        if node is old:
            roots[i] = new
            return
    roots.append(new)


def render(node, number):
    """RFC 5256 §4 thread syntax of one tree, without the outer parentheses;
    ``number(item)`` gives the message number or UID."""
    parts = []
    while True:
        if node.item is not None:
            parts.append(b"%d" % number(node.item))
        if len(node.children) == 1:
            node = node.children[0]
            continue
        if node.children:
            nested = b"".join(b"(" + render(c, number) + b")" for c in node.children)
            parts.append(nested)
        break
    return b" ".join(parts)
