"""Folders and messages of a mailbox, shared by IMAP, POP3, webmail and delivery.

Owns the live folders: one ``LiveFolder`` per (mailbox, folder) while
anybody uses it (and a few recently used ones), shared by every session,
holding the ordered UIDs and infos in memory. Every change made through
this service (delivery, APPEND, STORE, EXPUNGE, COPY/MOVE, webmail, POP3
deletions, Spam expiry) is applied to the live folder and reaches all of
its listeners at once; changes made by other processes or tools are picked
up by ``LiveFolder.refresh`` (IMAP calls it on NOOP/IDLE ticks, and
``MailboxService.refresh_all`` runs every few seconds in the daemon).

Invariants:
- a live folder's UIDs are strictly ascending and only grow at the end:
  listeners get ``messages_added`` with UIDs above every UID they know;
- store results are applied in the order the store produced them, and a
  modseq gap (a change made elsewhere) triggers a refresh, so a live folder
  never silently misses a change;
- moving or copying a message into Spam trains the spam filter as spam,
  out of Spam as ham (in the background; training never fails the move);
- the service never reads files or SQL itself: everything goes through
  ``store.IMailStore``.

Listener callbacks (``IFolderListener``) run synchronously on the reactor
thread; IMAP turns them into EXISTS/FETCH/EXPUNGE with its own sequence
numbers; POP3 keeps its RFC 1939 snapshot and ignores them.
"""

import bisect
import collections
import operator
import os

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from ktmail import errors
from ktmail.model import (
    DELETED,
    INBOX,
    SEEN,
    SPAM_FOLDER,
    FolderStatus,
    is_below,
    normalize_folder_name,
)
from ktmail.services import deferred, events

log = Logger()

_UID, _FLAGS, _SIZE = (operator.itemgetter(i) for i in (0, 2, 3))  # MessageInfo fields


class IFolderListener(Interface):
    """Told about changes of a live folder. Every method is optional to
    implement only in the sense that IMAP, POP3 and webmail all get every
    call; each runs synchronously and must not raise."""

    def messages_added(folder, infos):
        """New messages: ``infos`` (model.MessageInfo) in ascending UID order,
        every UID above the ones known before."""

    def flags_changed(folder, infos):
        """Messages whose flags (or modseq) changed: the new infos, ascending UID."""

    def messages_expunged(folder, uids):
        """Messages removed for good: their UIDs, ascending."""

    def folder_closed(folder):
        """The folder is gone (deleted, renamed, its UIDVALIDITY changed, or the
        mailbox removed): stop using it (IMAP: BYE or deselect)."""


@attrs.frozen
class QuotaStatus:
    """Quota of a mailbox for IMAP QUOTA (RFC 9208) and the webmail bar."""

    used_bytes: int
    limit_bytes: int
    messages: int

    @property
    def fraction(self):
        """Used share of the limit, 0.0 .. (over 1.0 when over quota)."""
        return self.used_bytes / self.limit_bytes if self.limit_bytes else 0.0

    @property
    def used_kib(self):
        """RFC 9208 STORAGE usage, in units of 1024 octets (rounded up)."""
        return -(-self.used_bytes // 1024)

    @property
    def limit_kib(self):
        return self.limit_bytes // 1024


class LiveFolder:
    """One folder of one mailbox in memory, shared by everyone using it.

    Read access (``uids``, ``info()``, ``index_of()``, ``status`` ...) is
    immediate; operations return Deferreds and, when they succeed, have
    already updated this object and told every listener. ``origin`` is the
    listener of the caller: it is *not* told about its own change (it has
    the result), everybody else is; except when the folder had to catch up
    with a change made elsewhere at the same moment: then everybody, the
    origin too, is told everything in order (IMAP sends the extra untagged
    responses, which RFC 3501 allows).

    Get one from ``MailboxService.open_folder`` and give it back with
    ``release()`` when done (IMAP: at UNSELECT/CLOSE/LOGOUT/disconnect).
    """

    def __init__(self, service, mailbox, snapshot):
        self._service = service
        self.mailbox = mailbox
        status = snapshot.status
        self.name = status.name
        self.uidvalidity = status.uidvalidity
        self.uidnext = status.uidnext
        #: the highest modseq seen (CONDSTORE HIGHESTMODSEQ)
        self.highestmodseq = status.highestmodseq
        # the modseq up to which every change is known here
        self._synced_modseq = status.highestmodseq
        messages = snapshot.messages
        # C-level passes (a folder may hold 100,000 messages)
        self.uids = list(map(_UID, messages))
        self._infos = dict(zip(self.uids, messages, strict=True))
        self._unclaimed_recent = {m[0] for m in messages if m[7]}
        self._listeners = []
        #: SORT/THREAD keys by UID (services.ordering.keys_for): a message's
        #: headers never change, so they stay valid while the folder is loaded
        self.sort_keys = {}
        self.users = 0
        self.closed = False
        self._refresh_waiters = None
        self._catching_up = False
        # a look at the store is due after the one under way (changed_elsewhere)
        self._look_again = False

    def __repr__(self):
        return f"<LiveFolder {self.mailbox.username}:{self.name} {len(self.uids)} messages>"

    # --- reading ---

    def __len__(self):
        return len(self.uids)

    def info(self, uid):
        """-> model.MessageInfo, or None if there is no such message now."""
        return self._infos.get(uid)

    def infos(self):
        """-> [MessageInfo] in ascending UID order (a new list)."""
        return [self._infos[u] for u in self.uids]

    def index_of(self, uid):
        """0-based position of ``uid`` in ``uids``, or None."""
        i = bisect.bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def uids_between(self, low, high):
        """The UIDs ``low <= uid <= high``, ascending (IMAP UID ranges)."""
        return self.uids[bisect.bisect_left(self.uids, low):bisect.bisect_right(self.uids, high)]

    def _flag_counts(self):
        """-> (messages without \\Seen, messages with \\Deleted), in one pass."""
        by_flags = collections.Counter(map(_FLAGS, self._infos.values()))
        return (sum(n for flags, n in by_flags.items() if SEEN not in flags),
                sum(n for flags, n in by_flags.items() if DELETED in flags))

    @property
    def unseen(self):
        return self._flag_counts()[0]

    def first_unseen_uid(self):
        """UID of the first message without \\Seen (SELECT's [UNSEEN n]), or None."""
        for uid in self.uids:
            if not self._infos[uid].seen:
                return uid
        return None

    @property
    def size(self):
        return sum(map(_SIZE, self._infos.values()))

    @property
    def status(self):
        """model.FolderStatus as of now (RECENT: not yet claimed by a session)."""
        unseen, deleted = self._flag_counts()
        return FolderStatus(name=self.name, uidvalidity=self.uidvalidity, uidnext=self.uidnext,
                            highestmodseq=self.highestmodseq, messages=len(self.uids),
                            recent=len(self._unclaimed_recent), unseen=unseen,
                            size=self.size, deleted=deleted)

    # --- listeners and \Recent ---

    def add_listener(self, listener):
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener):
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def listeners(self):
        return tuple(self._listeners)

    def take_recent(self):
        """Claim ``\\Recent`` for the caller's session: -> frozenset of UIDs that
        no other session has claimed (RFC 3501 §2.3.2). The first session to
        ask gets them; the store moves them from new/ to cur/."""
        taken = frozenset(self._unclaimed_recent)
        self._unclaimed_recent.clear()
        if taken:
            for uid in taken:
                info = self._infos.get(uid)
                if info is not None:
                    self._infos[uid] = info._replace(recent=False)
            d = self._service.store.claim_recent(self.mailbox.id, self.name, sorted(taken))
            d.addErrback(self._log_failure, "claiming \\Recent")
        return taken

    def release(self):
        """Give the folder back (the caller no longer uses it)."""
        self._service._release(self)

    # --- operations ---

    @deferred
    async def append(self, source, flags=(), internal_date=None, origin=None):
        """Store a message here (IMAP APPEND, webmail drafts and Sent).
        -> model.StoredMessage. QuotaExceeded, TooBig."""
        return await self._service.append(self.mailbox, self.name, source, flags=flags,
                                          internal_date=internal_date, origin=origin)

    @deferred
    async def set_flags(self, uids, flags, mode, unchanged_since=None, origin=None):
        """STORE: -> model.FlagChanges (see IMailStore.set_flags)."""
        result = await self._service.store.set_flags(self.mailbox.id, self.name, uids, flags,
                                                     mode, unchanged_since)
        self._apply_changed(result.changed, origin, result.highestmodseq)
        return result

    @deferred
    async def expunge(self, uids, origin=None, reason="expunge"):
        """Remove messages for good: -> model.Expunged."""
        result = await self._service.store.expunge(self.mailbox.id, self.name, uids)
        self._apply_expunged(result.uids, origin, result.highestmodseq)
        log_deletion(self.mailbox, self.name, result, reason)
        return result

    @deferred
    async def copy_to(self, uids, dest, origin=None):
        """COPY into folder ``dest``: -> model.CopyResult. QuotaExceeded."""
        return await self._service.transfer(self, uids, dest, move=False, origin=origin)

    @deferred
    async def move_to(self, uids, dest, origin=None):
        """MOVE into folder ``dest`` (RFC 6851): -> model.CopyResult."""
        return await self._service.transfer(self, uids, dest, move=True, origin=origin)

    def open_message(self, uid):
        """-> Deferred[binary file] of the whole message (the caller closes it)."""
        return self._service.store.open_message(self.mailbox.id, self.name, uid)

    def message_path(self, uid):
        """-> Deferred[path] of the message file now (readers in a thread)."""
        return self._service.store.message_path(self.mailbox.id, self.name, uid)

    def details(self, uids, with_structure=True):
        """-> Deferred[{uid: mime.MessageSummary}]: cached header fields,
        ENVELOPE and body structure (never reparsed once cached)."""
        return self._service.store.message_details(self.mailbox.id, self.name, uids,
                                                   with_structure)

    def read_messages(self, uids, reader):
        """-> Deferred[{uid: reader(uid, binary file)}], the readers run on a
        worker thread (IMAP header-field fetches, SEARCH in bodies)."""
        return self._service.store.read_messages(self.mailbox.id, self.name, uids, reader)

    def changes_since(self, modseq):
        """-> Deferred[model.FolderChanges] after ``modseq``, from the store
        (QRESYNC: the removals a client missed, RFC 7162 §3.2.5)."""
        return self._service.store.changes_since(self.mailbox.id, self.name, modseq)

    def refresh(self):
        """Pick up changes made elsewhere (other processes, other Maildir
        tools) and tell the listeners. -> Deferred[None]. Concurrent calls
        share one look at the store."""
        if self.closed:
            return defer.succeed(None)
        waiter = defer.Deferred()
        if self._refresh_waiters is not None:
            self._refresh_waiters.append(waiter)
            return waiter
        self._refresh_waiters = [waiter]

        def done(_):
            waiters, self._refresh_waiters = self._refresh_waiters, None
            for w in waiters:
                w.callback(None)
        defer.Deferred.fromCoroutine(self._refresh()).addBoth(done)
        return waiter

    def changed_elsewhere(self):
        """Another process or node committed a change to this folder just
        now (a store notification): make sure a look at the store starts
        after this call, so that the change reaches the listeners at once.
        A look already under way may have started before the change: then
        one more follows it."""
        if self.closed:
            return
        if self._refresh_waiters is None:
            self.refresh()
        elif not self._look_again:
            self._look_again = True
            after_current = defer.Deferred()
            self._refresh_waiters.append(after_current)

            def again(_):
                self._look_again = False
                self.refresh()
            after_current.addCallback(again)

    async def _refresh(self):
        try:
            await self._refresh_once()
        finally:
            self._catching_up = False

    async def _refresh_once(self):
        try:
            changes = await self._service.store.changes_since(self.mailbox.id, self.name,
                                                              self._synced_modseq)
        except (errors.NoSuchFolder, errors.NoSuchMailbox):
            self._service._close(self)
            return
        except Exception:
            log.failure("refreshing {folder} failed", folder=self)
            return
        if changes.uidvalidity != self.uidvalidity:
            # rebuilt or recreated behind our back: UIDs mean something else now
            self._service._close(self)
            return
        vanished = changes.vanished
        if changes.vanished_floor > self._synced_modseq:
            # the store pruned the tombstones we would need: compare UID lists
            snapshot = await self._service.store.open_folder(self.mailbox.id, self.name)
            present = {m.uid for m in snapshot.messages}
            vanished = [u for u in self.uids if u not in present]
        self._apply_expunged(vanished, None, None)
        added = [i for i in changes.changed if i.uid not in self._infos]
        known = [i for i in changes.changed if i.uid in self._infos]
        self._apply_changed(known, None, None)
        self._apply_added(added, None, None)
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        self._synced_modseq = max(self._synced_modseq, changes.highestmodseq)

    # --- applying store results (also called by MailboxService) ---

    def _accept_own(self, modseq, own_changes):
        """May the result of an own operation (raising the folder's modseq by
        ``own_changes`` to ``modseq``) be applied here directly?

        Only when it follows what we know without a gap. A gap means
        somebody else changed the folder first: then nothing is applied
        directly; one refresh, which the store runs after every operation
        already queued, brings all of it in store order (so UIDs reach the
        listeners ascending). Everybody, the origin included, is then told."""
        if modseq is None:
            return True
        if self._catching_up:
            return False
        if modseq == self._synced_modseq + own_changes:
            self._synced_modseq = modseq
            self.highestmodseq = max(self.highestmodseq, modseq)
            return True
        if modseq > self._synced_modseq:
            self._catching_up = True
            self.refresh()
        return False

    def _notify(self, method, origin, payload):
        for listener in list(self._listeners):
            if listener is origin:
                continue
            try:
                getattr(listener, method)(self, payload)
            except Exception:
                log.failure("folder listener {listener}.{method} failed", listener=listener,
                            method=method)

    def _apply_added(self, infos, origin, modseq):
        if not self._accept_own(modseq, 1):
            return
        fresh = [i for i in sorted(infos, key=lambda i: i.uid) if i.uid not in self._infos]
        for info in fresh:
            if self.uids and info.uid < self.uids[-1]:
                # cannot happen while results are applied in store order; keep
                # the list sorted anyway
                log.warn("{folder}: UID {uid} arrived after higher UIDs", folder=self,
                         uid=info.uid)
                bisect.insort(self.uids, info.uid)
            else:
                self.uids.append(info.uid)
            self._infos[info.uid] = info
            if info.recent:
                self._unclaimed_recent.add(info.uid)
            self.uidnext = max(self.uidnext, info.uid + 1)
        if fresh:
            self._notify("messages_added", origin, fresh)

    def _apply_changed(self, infos, origin, modseq):
        if not infos or not self._accept_own(modseq, 1):
            return
        changed = []
        for info in infos:
            current = self._infos.get(info.uid)
            if current is None or current.modseq > info.modseq:
                continue
            info = info._replace(recent=current.recent)  # \Recent is kept here
            if info == current:
                continue  # already known (a refresh brought it first)
            self._infos[info.uid] = info
            changed.append(info)
        if changed:
            self._notify("flags_changed", origin, changed)

    def _apply_expunged(self, uids, origin, modseq):
        if not uids or not self._accept_own(modseq, 1):
            return
        gone = sorted(u for u in set(uids) if u in self._infos)
        if gone:
            removed = set(gone)
            if len(gone) < 32:
                for uid in gone:
                    del self.uids[self.index_of(uid)]
            else:
                self.uids = [u for u in self.uids if u not in removed]
            for uid in gone:
                del self._infos[uid]
                self.sort_keys.pop(uid, None)
            self._unclaimed_recent -= removed
            self._notify("messages_expunged", origin, gone)

    def _log_failure(self, failure, what):
        log.failure("{what} in {folder} failed", failure, what=what, folder=self)


def log_deletion(mailbox, folder, expunged, reason):
    """The ``deletion`` event of messages removed for good."""
    if expunged.uids:
        log.info("{count} message(s) deleted from {folder} of {mailbox} ({reason})",
                 ktmail_event=events.DELETION, what="messages", mailbox=mailbox.username,
                 folder=folder, count=len(expunged.uids), reason=reason)


@attrs.define
class MailboxService:
    """Folder and message operations for every surface.

    Collaborators: ``store`` (IMailStore), ``spam`` (has
    ``train(mailbox, path, is_spam) -> Deferred``), ``limits``
    (config.Limits: max_message_bytes), ``clock`` (IReactorTime).
    ``idle_folders``/``idle_messages`` bound the released folders kept
    loaded for a quick return.
    """

    store: object
    spam: object
    limits: object
    clock: object
    idle_folders: int = 32
    idle_messages: int = 200_000
    _live: dict = attrs.field(factory=dict, init=False)       # key -> LiveFolder
    _loading: dict = attrs.field(factory=dict, init=False)    # key -> [waiting Deferred]
    _idle: collections.OrderedDict = attrs.field(factory=collections.OrderedDict, init=False)

    @staticmethod
    def _key(mailbox, name):
        return (mailbox.id, normalize_folder_name(name))

    # --- live folders ---

    @deferred
    async def open_folder(self, mailbox, name):
        """-> the shared LiveFolder of ``name``, brought up to date with the
        store. The caller must ``release()`` it. NoSuchFolder, ValidationError."""
        key = self._key(mailbox, name)
        folder = self._live.get(key)
        if folder is None:
            folder = await self._shared_load(key, mailbox)
        else:
            await folder.refresh()
            if folder.closed:
                return await self.open_folder(mailbox, name)
        folder.users += 1
        self._idle.pop(key, None)
        return folder

    def _shared_load(self, key, mailbox):
        """One store load per folder, however many sessions open it at once."""
        waiter = defer.Deferred()
        waiters = self._loading.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._loading[key] = [waiter]

        def fan_out(result):
            for w in self._loading.pop(key):
                if isinstance(result, Failure):
                    w.errback(result)
                else:
                    w.callback(result)
        defer.Deferred.fromCoroutine(self._load(key, mailbox)).addBoth(fan_out)
        return waiter

    async def _load(self, key, mailbox):
        snapshot = await self.store.open_folder(mailbox.id, key[1])
        folder = self._live.get(key)
        if folder is None:
            folder = LiveFolder(self, mailbox, snapshot)
            self._live[key] = folder
        return folder

    def live_folder(self, mailbox, name):
        """The LiveFolder of ``name`` if it is loaded now, else None (no I/O)."""
        return self._live.get(self._key(mailbox, name))

    def _release(self, folder):
        folder.users = max(0, folder.users - 1)
        key = (folder.mailbox.id, folder.name)
        if folder.users == 0 and self._live.get(key) is folder:
            self._idle[key] = folder
            self._idle.move_to_end(key)
            self._trim_idle()

    def _trim_idle(self):
        def total():
            return sum(len(f) for f in self._idle.values())
        while self._idle and (len(self._idle) > self.idle_folders
                              or total() > self.idle_messages):
            key, folder = self._idle.popitem(last=False)
            if folder.users == 0 and not folder.listeners:
                self._live.pop(key, None)

    def _close(self, folder):
        """Drop a live folder that no longer exists as it was; tell listeners."""
        if folder.closed:
            return
        folder.closed = True
        key = (folder.mailbox.id, folder.name)
        if self._live.get(key) is folder:
            del self._live[key]
        self._idle.pop(key, None)
        for listener in list(folder.listeners):
            try:
                listener.folder_closed(folder)
            except Exception:
                log.failure("folder listener {listener}.folder_closed failed",
                            listener=listener)

    def _close_matching(self, mailbox_id, predicate):
        for key, folder in list(self._live.items()):
            if key[0] == mailbox_id and predicate(key[1]):
                self._close(folder)

    @deferred
    async def refresh_all(self):
        """Refresh every live folder someone listens to (changes made by
        other processes reach IDLE sessions). -> None."""
        for folder in list(self._live.values()):
            if folder.listeners and not folder.closed:
                await folder.refresh()

    def folder_changed(self, mailbox_id, name):
        """A folder was changed by another node or process (the store's
        change notifications, e.g. PostgreSQL NOTIFY): its live folder here,
        if one is loaded, catches up at once and tells its listeners."""
        folder = self._live.get((int(mailbox_id), name))
        if folder is not None:
            folder.changed_elsewhere()

    def close_mailbox(self, mailbox):
        """Forget every live folder of a removed mailbox, telling listeners
        (an AccountService removal hook)."""
        self._close_matching(mailbox.id, lambda name: True)

    # --- folders ---

    def list_folders(self, mailbox):
        """-> Deferred[[model.FolderInfo]] ordered by name."""
        return self.store.list_folders(mailbox.id)

    def list_subscriptions(self, mailbox):
        return self.store.list_subscriptions(mailbox.id)

    def subscribe(self, mailbox, name, subscribed=True):
        return self.store.subscribe(mailbox.id, normalize_folder_name(name), subscribed)

    def create_folder(self, mailbox, name):
        """-> Deferred[model.FolderStatus]. AlreadyExists, ValidationError."""
        return self.store.create_folder(mailbox.id, name)

    @deferred
    async def delete_folder(self, mailbox, name):
        """Delete a folder and its messages; sessions using it are told."""
        name = normalize_folder_name(name)
        await self.store.delete_folder(mailbox.id, name)
        self._close_matching(mailbox.id, lambda n: n == name)
        log.info("folder {folder} of {mailbox} deleted", ktmail_event=events.DELETION,
                 what="folder", mailbox=mailbox.username, folder=name, count=None,
                 reason="deleted")

    @deferred
    async def rename_folder(self, mailbox, old, new):
        """Rename a folder (and its subfolders); sessions using them are told.
        Renaming INBOX empties it into a new folder (RFC 3501 §6.3.5)."""
        old, new = normalize_folder_name(old), normalize_folder_name(new)
        await self.store.rename_folder(mailbox.id, old, new)
        if old == INBOX:
            inbox = self.live_folder(mailbox, INBOX)
            if inbox is not None:
                await inbox.refresh()
        else:
            self._close_matching(mailbox.id, lambda n: n == old or is_below(n, old))

    @deferred
    async def folder_status(self, mailbox, name):
        """-> model.FolderStatus (from the live folder when loaded; RECENT
        there counts messages no session has claimed yet)."""
        folder = self.live_folder(mailbox, name)
        if folder is not None:
            await folder.refresh()
            if not folder.closed:
                return folder.status
        return await self.store.folder_status(mailbox.id, name)

    @deferred
    async def quota(self, mailbox):
        """-> QuotaStatus(used_bytes, limit_bytes, messages)."""
        usage = await self.store.mail_usage(mailbox.id)
        return QuotaStatus(used_bytes=usage.bytes, limit_bytes=mailbox.quota_bytes,
                           messages=usage.messages)

    # --- messages ---

    def _check_size(self, source, size_limit):
        """TooBig for a source above ``size_limit``, when its size is known."""
        size = None
        if isinstance(source, (str, bytes, os.PathLike)):
            try:
                size = os.stat(source).st_size
            except OSError:
                return
        elif hasattr(source, "seek") and hasattr(source, "tell"):
            try:
                here = source.tell()
                size = source.seek(0, os.SEEK_END) - here
                source.seek(here)
            except (OSError, ValueError):
                return
        if size is not None and size > size_limit:
            raise errors.TooBig()

    @deferred
    async def append(self, mailbox, name, source, flags=(), internal_date=None, origin=None,
                     prefix=b"", enforce_quota=True, size_limit=None):
        """Store a message in a folder (IMAP APPEND, webmail, delivery):
        ``source`` is a path or a binary file object, ``prefix`` bytes go
        before it. -> model.StoredMessage. QuotaExceeded (the mailbox's
        quota, unless ``enforce_quota`` is false), TooBig (above
        ``size_limit``, by default max_message_bytes), NoSuchFolder,
        ValidationError."""
        self._check_size(source, size_limit or self.limits.max_message_bytes)
        stored = await self.store.add_message(
            mailbox.id, name, source, prefix=prefix, flags=flags, internal_date=internal_date,
            quota_bytes=mailbox.quota_bytes if enforce_quota else None)
        folder = self.live_folder(mailbox, stored.folder)
        if folder is not None:
            folder._apply_added([stored.info], origin, stored.info.modseq)
        return stored

    @deferred
    async def expunge(self, mailbox, name, uids, reason="expunge"):
        """Remove messages of a folder whether or not it is loaded (Spam
        expiry, POP3 at QUIT). -> model.Expunged."""
        folder = self.live_folder(mailbox, name)
        if folder is not None:
            return await folder.expunge(uids, reason=reason)
        result = await self.store.expunge(mailbox.id, name, uids)
        log_deletion(mailbox, name, result, reason)
        return result

    def messages_saved_before(self, mailbox, name, before):
        """-> Deferred[(MessageInfo, ...)] saved into ``name`` before ``before``."""
        return self.store.messages_saved_before(mailbox.id, name, before)

    @deferred
    async def transfer(self, source, uids, dest, move, origin=None):
        """COPY or MOVE from a live folder into folder ``dest``; updates both
        live folders, tells their listeners, and trains the spam filter when
        messages enter or leave Spam. -> model.CopyResult."""
        mailbox = source.mailbox
        dest = normalize_folder_name(dest)
        if move:
            result = await self.store.move_messages(mailbox.id, source.name, uids, dest)
        else:
            result = await self.store.copy_messages(mailbox.id, source.name, uids, dest,
                                                    quota_bytes=mailbox.quota_bytes)
        if move and result.uid_map:
            source._apply_expunged([src for src, _ in result.uid_map], origin,
                                   result.source_highestmodseq)
        target = self.live_folder(mailbox, dest)
        if target is not None and result.added:
            target._apply_added(result.added, origin, result.added[0].modseq)
        into_spam = dest == SPAM_FOLDER and source.name != SPAM_FOLDER
        out_of_spam = source.name == SPAM_FOLDER and dest != SPAM_FOLDER
        if (into_spam or out_of_spam) and result.uid_map:
            self._train(mailbox, dest, [new for _, new in result.uid_map], into_spam)
        return result

    def _train(self, mailbox, folder, uids, is_spam):
        """Teach the spam filter about messages a user moved, one after the
        other in the background; a failure is logged, never raised."""
        async def train_all():
            for uid in uids:
                try:
                    path = await self.store.message_path(mailbox.id, folder, uid)
                    await self.spam.train(mailbox, path, is_spam)
                except errors.NotFound:
                    continue  # moved on again meanwhile
                except Exception:
                    log.failure("training the spam filter on {folder} UID {uid} failed",
                                folder=folder, uid=uid)
        defer.Deferred.fromCoroutine(train_all())
