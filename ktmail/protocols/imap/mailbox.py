"""IMAP's view of the mail service: the Twisted ``IAccount``/``IMailbox``
adapters over ``services.mailboxes``.

``ImapAccount`` is one logged-in mailbox: folder operations and the live
folders it opens. ``SelectedFolder`` is one session's view of one shared
``LiveFolder``: it owns the session's message sequence numbers.

Invariants of ``SelectedFolder`` (RFC 3501 §2.3.1.2, §5.2, §7.4.1):
- ``uids`` is the list of UIDs as the client knows them: sequence number
  ``n`` is ``uids[n - 1]``. It changes only when ``updates()`` reports the
  change to the client (EXPUNGE, EXISTS), never behind the client's back;
- changes made by anyone (other sessions, SMTP delivery, POP3, webmail, or
  this session through a shared operation) arrive as ``IFolderListener``
  calls and wait in ``_expunged``/``_flag_changes`` until the session asks
  for them at a point where it may send them: expunges only when
  ``allow_expunge`` (never during FETCH, STORE or SEARCH);
- a message expunged elsewhere keeps its sequence number until then; the
  live folder no longer knows it (``info()`` is None), so FETCH skips it;
- once the session enabled CONDSTORE (RFC 7162 §3.1) every FETCH response
  about flags carries MODSEQ; once it enabled QRESYNC (§3.2.10), removals
  are reported as ``VANISHED uid-set`` instead of EXPUNGE;
- ``saved`` (RFC 5182 ``$``) holds UIDs; an expunged message leaves it
  when its removal is reported;
- a session that enabled IMAP4rev2 (RFC 9051 Appendix E) has no \\Recent:
  ``recent`` stays empty (the messages stay \\Recent for IMAP4rev1
  sessions) and no RECENT response is sent.
"""

import bisect
import email.utils
import io
import re

from twisted.internet import defer
from twisted.mail import imap4
from zope.interface import implementer

from ktmail import errors, mime
from ktmail.model import (
    DELETED,
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    INBOX,
    SEPARATOR,
    SYSTEM_FLAGS,
    normalize_folder_name,
)
from ktmail.protocols.imap import wire
from ktmail.protocols.imap.parser import ParseError
from ktmail.services.mailboxes import IFolderListener


@implementer(imap4.IMailboxInfo)
class FolderEntry:
    """One folder as LIST shows it (Twisted's IMailboxInfo): its attributes."""

    def __init__(self, info, subscribed_child=False):
        self.info = info
        self.subscribed_child = subscribed_child

    def getFlags(self):
        flags = ["\\HasChildren" if self.info.has_children else "\\HasNoChildren"]
        if self.info.special_use:
            flags.append(self.info.special_use)
        return flags

    def getHierarchicalDelimiter(self):
        return SEPARATOR


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class ImapAccount:
    """The avatar of one IMAP login: ``mailbox`` (model.Mailbox) served by
    ``mailboxes`` (services.mailboxes.MailboxService). Every operation
    returns a Deferred."""

    def __init__(self, mailboxes, mailbox):
        self.mailboxes = mailboxes
        self.mailbox = mailbox

    # IAccount

    def addMailbox(self, name, mbox=None):
        return self.create(name)

    def create(self, pathspec):
        name = pathspec.rstrip(SEPARATOR) if pathspec != SEPARATOR else pathspec
        return self.mailboxes.create_folder(self.mailbox, name)

    def select(self, name, rw=True):
        """-> Deferred[SelectedFolder] (not yet listening: see ``attach``)."""
        d = self.mailboxes.open_folder(self.mailbox, name)
        d.addCallback(SelectedFolder, rw)
        return d

    def delete(self, name):
        return self.mailboxes.delete_folder(self.mailbox, name)

    def rename(self, oldname, newname):
        return self.mailboxes.rename_folder(self.mailbox, oldname, newname)

    def isSubscribed(self, name):
        d = self.mailboxes.list_subscriptions(self.mailbox)
        d.addCallback(lambda names: normalize_folder_name(name) in names)
        return d

    def subscribe(self, name):
        return self.mailboxes.subscribe(self.mailbox, name, True)

    def unsubscribe(self, name):
        return self.mailboxes.subscribe(self.mailbox, name, False)

    def listMailboxes(self, ref, wildcard):
        matcher = pattern_matcher(ref, wildcard)
        d = self.mailboxes.list_folders(self.mailbox)
        d.addCallback(lambda infos: [(i.name, FolderEntry(i)) for i in infos
                                     if matcher(i.name)])
        return d

    # INamespacePresenter (RFC 2342): one personal namespace, "/" separated

    def getPersonalNamespaces(self):
        return [["", SEPARATOR]]

    def getSharedNamespaces(self):
        return None

    def getUserNamespaces(self):
        return None

    # beyond Twisted's interfaces

    def list_folders(self):
        return self.mailboxes.list_folders(self.mailbox)

    def list_subscriptions(self):
        return self.mailboxes.list_subscriptions(self.mailbox)

    def status(self, name):
        return self.mailboxes.folder_status(self.mailbox, name)

    def quota(self):
        return self.mailboxes.quota(self.mailbox)

    def remove(self, stored):
        """Take back messages just appended (a MULTIAPPEND that failed
        part-way): ``stored`` are their model.StoredMessage results."""
        by_folder = {}
        for message in stored:
            by_folder.setdefault(message.folder, []).append(message.info.uid)

        async def run():
            for folder, uids in by_folder.items():
                await self.mailboxes.expunge(self.mailbox, folder, uids)
        return defer.ensureDeferred(run())

    def append(self, name, source, flags, internal_date):
        """``source``: a path (a finished spool file, which the store links
        rather than copies when it can) or a binary file object."""
        return self.mailboxes.append(self.mailbox, name, source, flags=flags,
                                     internal_date=internal_date)


def pattern_matcher(reference, pattern):
    """RFC 3501 §6.3.8 LIST matching of ``reference`` + ``pattern``: ``*``
    matches anything, ``%`` anything but the separator; the INBOX part of a
    name matches case-insensitively (RFC 3501 §5.1). -> predicate(name)."""
    if reference.endswith(SEPARATOR) and pattern.startswith(SEPARATOR):
        pattern = pattern[1:]
    full = reference + pattern
    regex = "".join(".*" if c == "*" else f"[^{re.escape(SEPARATOR)}]*" if c == "%"
                    else re.escape(c) for c in full)
    exact = re.compile(regex + r"\Z", re.DOTALL)
    folded = re.compile(regex + r"\Z", re.DOTALL | re.IGNORECASE)

    def matches(name):
        if name == INBOX or name.startswith(INBOX + SEPARATOR):
            # the pattern may spell INBOX in any case; the rest is exact
            return bool(folded.match(name)) and (
                bool(exact.match(name)) or full[:5].upper() == INBOX)
        return bool(exact.match(name))
    return matches


def keyword_flags(infos):
    """The keywords in use among ``infos`` (for FLAGS / PERMANENTFLAGS)."""
    system = set(SYSTEM_FLAGS)
    seen = set()
    for info in infos:
        if info.flags:
            seen.update(info.flags)
    return sorted(seen - system)


@implementer(imap4.IMailbox, imap4.ICloseableMailbox, IFolderListener)
class SelectedFolder:
    """One session's view of a shared LiveFolder (see the module docstring).

    ``session`` (set by ``attach``) gets ``folder_changed()`` whenever
    something is waiting to be reported.
    """

    def __init__(self, live, rw):
        self.live = live
        self.rw = rw
        self.uids = list(live.uids)
        self._last_uid = self.uids[-1] if self.uids else 0
        self.recent = set()
        self._expunged = set()
        self._flag_changes = set()
        self.closed = False
        self.session = None
        #: RFC 7162: MODSEQ in flag updates (CONDSTORE), VANISHED (QRESYNC)
        self.condstore = False
        self.qresync = False
        #: RFC 9051: no \\Recent, no RECENT responses
        self.rev2 = False
        #: the saved search result (RFC 5182 ``$``): UIDs
        self.saved = frozenset()

    def attach(self, session):
        """Start listening; claim \\Recent when read-write (RFC 3501 §2.3.2).
        Read-only (EXAMINE) sees the messages nobody claimed as \\Recent
        without taking the flag from them (RFC 3501 §6.3.2)."""
        self.session = session
        self.live.add_listener(self)
        if self.rev2:
            self.recent = set()
        elif self.rw:
            self.recent = set(self.live.take_recent()) & set(self.uids)
        else:
            info = self.live.info
            self.recent = {u for u in self.uids if (i := info(u)) is not None and i.recent}

    def enable_rev2(self):
        """ENABLE IMAP4rev2 while this folder is open: \\Recent is no more."""
        self.rev2 = True
        self.recent = set()

    def detach(self):
        """Stop listening and give the live folder back (idempotent)."""
        if self.session is not None:
            self.live.remove_listener(self)
            self.live.release()
            self.session = None

    # --- IFolderListener (called by the live folder, on the reactor thread) ---

    def messages_added(self, folder, infos):
        if self.rw and not self.rev2:
            self.recent.update(folder.take_recent())
        self._wake()

    def flags_changed(self, folder, infos):
        self._flag_changes.update(info.uid for info in infos)
        self._wake()

    def messages_expunged(self, folder, uids):
        self._expunged.update(uids)
        self._wake()

    def folder_closed(self, folder):
        self.closed = True
        self._wake()

    def _wake(self):
        if self.session is not None:
            self.session.folder_changed()

    # --- sequence numbers ---

    def seq_of(self, uid):
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, seqset, by_uid):
        """The messages of a sequence set: [(seq, uid)] ascending. Message
        numbers beyond EXISTS are an error (ParseError -> BAD); UIDs that do
        not exist are ignored (RFC 3501 §6.4.8). ``$`` is the saved search
        result (RFC 5182 §2.1), whichever kind of number the command uses."""
        uids = self.uids
        out = []
        if seqset.saved:
            for uid in sorted(self.saved):
                seq = self.seq_of(uid)
                if seq is not None:
                    out.append((seq, uid))
            return out
        if by_uid:
            last = uids[-1] if uids else 0
            for low, high in seqset.resolved(last):
                start = bisect.bisect_left(uids, low)
                end = bisect.bisect_right(uids, high)
                out.extend((i + 1, uids[i]) for i in range(start, end))
            return out
        last = len(uids)
        for low, high in seqset.resolved(last):
            if high > last:
                raise ParseError(f"No message {high}: the folder has {last} messages.")
            out.extend((i, uids[i - 1]) for i in range(low, high + 1))
        return out

    def deleted_uids(self, among=None):
        """UIDs of the client's view that carry \\Deleted (within ``among``)."""
        info = self.live.info
        candidates = self.uids if among is None else among
        return [u for u in candidates if (i := info(u)) is not None and DELETED in i.flags]

    # --- unsolicited responses ---

    def pending(self):
        return bool(self._expunged or self._flag_changes or self.closed
                    or (self.live.uids and self.live.uids[-1] > self._last_uid))

    def updates(self, allow_expunge, with_uid=True):
        """The untagged responses now due, as lines; applies them to the view."""
        lines = []
        if allow_expunge and self._expunged:
            gone = self._expunged
            self._expunged = set()
            positions = []
            for uid in gone:
                seq = self.seq_of(uid)
                if seq is not None:
                    positions.append(seq)
            positions.sort(reverse=True)
            if self.qresync:
                # RFC 7162 §3.2.10: the UIDs, in place of the numbers
                reported = sorted(self.uids[seq - 1] for seq in positions)
                if reported:
                    lines.append(b"* VANISHED " + wire.number_set(reported))
            else:
                # descending: each EXPUNGE leaves the numbers of the next ones as they were
                lines.extend(b"* %d EXPUNGE" % seq for seq in positions)
            if self.saved:
                self.saved = self.saved - gone
            if len(positions) > 32:
                self.uids = [u for u in self.uids if u not in gone]
            else:
                for seq in positions:
                    del self.uids[seq - 1]
            self.recent -= gone
            self._flag_changes -= gone
        live_uids = self.live.uids
        if live_uids and live_uids[-1] > self._last_uid:
            new = live_uids[bisect.bisect_right(live_uids, self._last_uid):]
            self.uids.extend(new)
            self._last_uid = new[-1]
            lines.append(b"* %d EXISTS" % len(self.uids))
            if not self.rev2:
                lines.append(b"* %d RECENT" % len(self.recent))
        if self._flag_changes:
            changed = sorted(self._flag_changes - self._expunged)
            self._flag_changes = set(self._expunged & self._flag_changes)
            for uid in changed:
                seq = self.seq_of(uid)
                info = self.live.info(uid)
                if seq is None or info is None:
                    continue
                lines.append(self.flags_line(seq, info, with_uid))
        return lines

    def flags_line(self, seq, info, with_uid=True, with_flags=True):
        """``* n FETCH (UID u FLAGS (...) MODSEQ (m))``: MODSEQ once CONDSTORE
        is on (RFC 7162 §3.1.4), with the UID then too, which clients key on;
        without FLAGS for a .SILENT STORE (§3.1.3)."""
        recent = info.uid in self.recent
        items = []
        if with_uid or self.condstore:
            items.append(b"UID %d" % info.uid)
        if with_flags:
            items.append(b"FLAGS " + wire.flag_list(info.flags, recent))
        if self.condstore:
            items.append(b"MODSEQ (%d)" % info.modseq)
        return b"* %d FETCH (%s)" % (seq, b" ".join(items))

    # --- IMailbox (Twisted) ---

    def getFlags(self):
        return list(SYSTEM_FLAGS) + keyword_flags(self.live.infos())

    def getHierarchicalDelimiter(self):
        return SEPARATOR

    def getUIDValidity(self):
        return self.live.uidvalidity

    def getUIDNext(self):
        return self.live.uidnext

    def getUID(self, message):
        return self.uids[message - 1]

    def getMessageCount(self):
        return len(self.uids)

    def getRecentCount(self):
        return len(self.recent)

    def getUnseenCount(self):
        info = self.live.info
        return sum(1 for u in self.uids if (i := info(u)) is not None and not i.seen)

    def isWriteable(self):
        return self.rw

    def destroy(self):
        raise imap4.MailboxException("Delete folders with DELETE.")

    def requestStatus(self, names):
        return imap4.statusRequestHelper(self, names)

    def addListener(self, listener):
        raise NotImplementedError("sessions attach with attach()")

    def removeListener(self, listener):
        self.detach()

    def addMessage(self, message, flags=(), date=None):
        d = self.live.append(message, flags=flags)
        d.addCallback(lambda stored: stored.info.uid)
        return d

    def expunge(self):
        """Remove the \\Deleted messages: -> Deferred[[seq]] as the client
        numbered them, highest first (the order they are reported in)."""
        doomed = self.deleted_uids()
        seqs = sorted((self.seq_of(u) for u in doomed), reverse=True)
        d = self.live.expunge(doomed)
        d.addCallback(lambda _: seqs)
        return d

    def _members(self, messages, uid):
        """(seq, uid) of a Twisted MessageSet: our list is walked and tested
        against it (TWISTED-NOTES §1.4: never iterate a UID set)."""
        messages.last = (self.uids[-1] if self.uids else 0) if uid else len(self.uids)
        if uid:
            return [(n, u) for n, u in enumerate(self.uids, 1) if u in messages]
        return [(n, self.uids[n - 1]) for n in messages if 0 < n <= len(self.uids)]

    def fetch(self, messages, uid):
        """Twisted's IMailbox.fetch: -> Deferred[[(seq, MessageAdapter)]] with
        each message file open. The session itself serves FETCH with its
        batched writer; this is for Twisted-interface callers (few messages)."""
        members = [(n, u) for n, u in self._members(messages, uid)
                   if self.live.info(u) is not None]

        async def load():
            summaries = await self.live.details([u for _, u in members])
            out = []
            for n, u in members:
                if u not in summaries:
                    continue
                try:
                    fileobj = await self.live.open_message(u)
                except errors.NoSuchMessage:
                    continue
                out.append((n, MessageAdapter(self.live.info(u), summaries[u].structure,
                                              fileobj, u in self.recent)))
            return out
        return defer.ensureDeferred(load())

    def store(self, messages, flags, mode, uid):
        """Twisted's IMailbox.store (mode -1 remove, 0 replace, 1 add):
        -> Deferred[{seq: [flags]}]."""
        members = self._members(messages, uid)
        action = {-1: FLAGS_REMOVE, 0: FLAGS_REPLACE, 1: FLAGS_ADD}[mode]
        d = self.live.set_flags([u for _, u in members], list(flags), action, origin=self)

        def answer(_):
            return {n: sorted(self.live.info(u).flags) for n, u in members
                    if self.live.info(u) is not None}
        return d.addCallback(answer)

    def close(self):
        self.detach()

    def __repr__(self):
        return f"<SelectedFolder {self.live!r} {'rw' if self.rw else 'ro'}>"


@implementer(imap4.IMessagePart)
class PartAdapter:
    """A MIME part (``mime.Part``) of an open message file, for Twisted's
    IMessagePart. Reads are small and synchronous on the open file."""

    def __init__(self, part, fileobj):
        self.part = part
        self.fileobj = fileobj

    def _read(self, start, end):
        self.fileobj.seek(start)
        return self.fileobj.read(max(0, end - start))

    def getHeaders(self, negate, *names):
        wanted = {n.lower() for n in names}
        block = self._read(self.part.header_start, self.part.header_end)
        out = {}
        for name, value in mime.parse_header_block(block):
            if not names or (name in wanted) != negate:
                out.setdefault(name, mime.unfold(value))
        return out

    def getBodyFile(self):
        return io.BytesIO(self._read(self.part.body_start, self.part.body_end))

    def getSize(self):
        return self.part.size

    def isMultipart(self):
        return self.part.is_multipart

    def getSubPart(self, part):
        if not self.part.is_multipart:
            raise TypeError("not a multipart")
        return PartAdapter(self.part.children[part], self.fileobj)


@implementer(imap4.IMessage, imap4.IMessageFile)
class MessageAdapter(PartAdapter):
    """One message for Twisted's IMessage/IMessageFile: its index entry, its
    MIME tree and its open file (the caller closes it with ``close``)."""

    def __init__(self, info, structure, fileobj, recent=False):
        super().__init__(structure, fileobj)
        self.info = info
        self.recent = recent

    def getUID(self):
        return self.info.uid

    def getFlags(self):
        return sorted(self.info.flags) + (["\\Recent"] if self.recent else [])

    def getInternalDate(self):
        return email.utils.formatdate(self.info.internal_date)

    def getSize(self):
        return self.info.size

    def open(self):
        self.fileobj.seek(0)
        return self.fileobj

    def close(self):
        self.fileobj.close()
