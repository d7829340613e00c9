"""In-memory fakes of the store interfaces, for fast service and protocol
tests. They keep the same invariants as the real stores and are held to the
same contract tests (tests/store/), so a test that passes against a fake
means something."""

import io
import itertools
import os
import re
import tempfile

import attrs
from twisted.internet import defer
from zope.interface import implementer

from ktmail import errors, mime
from ktmail.model import (
    DEFAULT_FOLDERS,
    DELETED,
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    INBOX,
    SPECIAL_USE,
    CopyResult,
    Customer,
    Expunged,
    FlagChanges,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    FolderStatus,
    Mailbox,
    MailUsage,
    MessageInfo,
    StoredMessage,
    is_below,
    normalize_folder_name,
    parent_names,
)
from ktmail.store import (
    IAccountStore,
    IAuditLog,
    ICounterStore,
    IMailStore,
    IQueueStore,
    ISpamStatsStore,
    folder_index,
)
from ktmail.store.maildir import CRLFWriter
from ktmail.store.message_flags import check_flags


def _answer(fn):
    """Run ``fn`` now and hand its result or error back as a Deferred."""
    def wrapper(*args, **kwargs):
        return defer.maybeDeferred(fn, *args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@implementer(IAccountStore, ICounterStore, IAuditLog)
class MemoryStore:
    def __init__(self):
        self._ids = itertools.count(1)
        self._customers = {}      # login -> (Customer, hash)
        self._mailboxes = {}      # id -> (Mailbox, hash)
        self._events = {}         # key -> [(at, count)]
        self._audit = []

    def _taken(self, name):
        return name in self._customers or any(
            m.username == name for m, _ in self._mailboxes.values())

    def _customer_by_id(self, customer_id):
        for customer, _ in self._customers.values():
            if customer.id == customer_id:
                return customer
        raise errors.NoSuchCustomer()

    def _find(self, pred, missing):
        for mailbox, password_hash in self._mailboxes.values():
            if pred(mailbox):
                return mailbox, password_hash
        raise errors.NoSuchMailbox(missing)

    @_answer
    def add_customer(self, login, password_hash, now):
        if self._taken(login):
            raise errors.AlreadyExists(f"The name '{login}' is already taken; choose another.",
                                       field="login")
        customer = Customer(id=next(self._ids), login=login, created=now)
        self._customers[login] = (customer, password_hash)
        return customer

    @_answer
    def customer_password_hash(self, login):
        try:
            return self._customers[login]
        except KeyError:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.") from None

    def get_customer(self, login):
        return self.customer_password_hash(login).addCallback(lambda pair: pair[0])

    @_answer
    def get_customer_by_id(self, customer_id):
        return self._customer_by_id(customer_id)

    @_answer
    def set_customer_password(self, login, password_hash):
        if login not in self._customers:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
        self._customers[login] = (self._customers[login][0], password_hash)

    @_answer
    def list_customers(self):
        return sorted((c for c, _ in self._customers.values()), key=lambda c: c.login)

    @_answer
    def remove_customer(self, login):
        if login not in self._customers:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
        customer, _ = self._customers.pop(login)
        removed = self._list(customer.id)
        for mailbox in removed:
            del self._mailboxes[mailbox.id]
        return removed

    @_answer
    def add_mailbox(self, customer_id, username, address, password_hash, quota_bytes, now,
                    limit):
        self._customer_by_id(customer_id)
        count = len(self._list(customer_id))
        if count >= limit:
            raise errors.LimitReached(
                f"This customer already has {count} mailboxes, the most allowed ({limit}); "
                "remove one first.")
        if self._taken(username):
            raise errors.AlreadyExists(
                f"The username '{username}' is already taken; choose another.", field="username")
        if any(m.address == address for m, _ in self._mailboxes.values()):
            raise errors.AlreadyExists(f"The address {address} is already taken; choose another.",
                                       field="address")
        mailbox = Mailbox(id=next(self._ids), customer_id=customer_id, username=username,
                          address=address, quota_bytes=quota_bytes, created=now)
        self._mailboxes[mailbox.id] = (mailbox, password_hash)
        return mailbox

    @_answer
    def get_mailbox(self, mailbox_id):
        try:
            return self._mailboxes[mailbox_id][0]
        except KeyError:
            raise errors.NoSuchMailbox() from None

    @_answer
    def get_mailbox_by_username(self, username):
        return self._find(lambda m: m.username == username,
                          f"There is no mailbox '{username}'.")[0]

    @_answer
    def get_mailbox_by_address(self, address):
        return self._find(lambda m: m.address == address, f"There is no mailbox {address}.")[0]

    @_answer
    def mailbox_password_hash(self, username):
        return self._find(lambda m: m.username == username,
                          f"There is no mailbox '{username}'.")

    def _update(self, mailbox_id, password_hash=None, **changes):
        try:
            mailbox, old_hash = self._mailboxes[mailbox_id]
        except KeyError:
            raise errors.NoSuchMailbox() from None
        self._mailboxes[mailbox_id] = (attrs.evolve(mailbox, **changes),
                                       password_hash or old_hash)

    @_answer
    def set_mailbox_password(self, mailbox_id, password_hash):
        self._update(mailbox_id, password_hash)

    def _list(self, customer_id):
        return sorted((m for m, _ in self._mailboxes.values()
                       if customer_id is None or m.customer_id == customer_id),
                      key=lambda m: (m.address.domain, m.address.local))

    @_answer
    def list_mailboxes(self, customer_id=None):
        return self._list(customer_id)

    @_answer
    def remove_mailbox(self, mailbox_id, inactive_since=None):
        if mailbox_id not in self._mailboxes:
            raise errors.NoSuchMailbox()
        mailbox = self._mailboxes[mailbox_id][0]
        if inactive_since is not None and mailbox.last_activity > inactive_since:
            return None
        return self._mailboxes.pop(mailbox_id)[0]

    @_answer
    def record_login(self, mailbox_id, now):
        if mailbox_id in self._mailboxes:
            self._update(mailbox_id, last_login=now, warnings_sent=())

    @_answer
    def record_warning(self, mailbox_id, days_before):
        mailbox = self._mailboxes[mailbox_id][0] if mailbox_id in self._mailboxes else None
        if mailbox is None:
            raise errors.NoSuchMailbox()
        sent = set(mailbox.warnings_sent) | {int(days_before)}
        self._update(mailbox_id, warnings_sent=tuple(sorted(sent, reverse=True)))

    # ICounterStore
    @_answer
    def add_event(self, key, now, count=1):
        self._events.setdefault(key, []).append((now, count))
        self._events[key].sort()

    @_answer
    def events_since(self, key, since):
        return [e for e in self._events.get(key, []) if e[0] >= since]

    @_answer
    def take_event(self, key, now, count, window, limit):
        events = [e for e in self._events.get(key, []) if e[0] > now - window]
        taken = sum(n for _, n in events) + count <= limit
        if taken:
            self._events.setdefault(key, []).append((now, count))
            self._events[key].sort()
        return taken, events

    @_answer
    def clear_events(self, key):
        self._events.pop(key, None)

    @_answer
    def prune_events(self, before):
        dropped = 0
        for key, events in list(self._events.items()):
            kept = [e for e in events if e[0] >= before]
            dropped += len(events) - len(kept)
            self._events[key] = kept
        return dropped

    # IAuditLog
    @_answer
    def add_audit(self, now, actor, action, target, detail=""):
        self._audit.append((now, actor, action, target, detail))

    @_answer
    def list_audit(self, limit=100):
        return list(reversed(self._audit))[:limit]


# --- mail -------------------------------------------------------------------------------


@attrs.define
class _MemMessage:
    info: object          # MessageInfo
    data: bytes
    summary: object       # mime.MessageSummary


@attrs.define
class _MemFolder:
    name: str
    uidvalidity: int
    uidnext: int = 1
    highestmodseq: int = 1
    messages: dict = attrs.field(factory=dict)   # uid -> _MemMessage, ascending
    vanished: dict = attrs.field(factory=dict)   # uid -> modseq
    vanished_floor: int = 0

    def prune_vanished(self):
        """The same tombstone policy as the index (folder_index._prune_vanished)."""
        keep = folder_index.TOMBSTONES_KEPT
        if len(self.vanished) <= keep + keep // 4:
            return
        cutoff = sorted(self.vanished.values(), reverse=True)[keep]
        self.vanished = {u: m for u, m in self.vanished.items() if m > cutoff}
        self.vanished_floor = max(self.vanished_floor, cutoff)


@attrs.define
class _MemMailbox:
    folders: dict = attrs.field(factory=dict)    # name -> _MemFolder
    subscriptions: set = attrs.field(factory=set)


@implementer(IMailStore)
class MemoryMailStore:
    """IMailStore in memory, with the Maildir store's rules (folder names,
    flags, UIDs, modseqs, quota, CRLF). ``message_path`` writes the message
    to a file under ``files_dir`` (a temporary directory by default), since
    readers of a path need one."""

    def __init__(self, clock, files_dir=None):
        self._clock = clock
        self._mailboxes = {}
        self._uidvalidity = itertools.count(int(clock.seconds()) or 1)
        self._keys = itertools.count(1)
        self._files_dir = files_dir

    def _box(self, mailbox_id):
        try:
            return self._mailboxes[int(mailbox_id)]
        except KeyError:
            raise errors.NoSuchMailbox() from None

    def _folder(self, mailbox_id, name):
        name = normalize_folder_name(name)
        try:
            return self._box(mailbox_id).folders[name]
        except KeyError:
            raise errors.NoSuchFolder(f"There is no folder '{name}'.") from None

    def _usage(self, box):
        messages = [m for f in box.folders.values() for m in f.messages.values()]
        return MailUsage(bytes=sum(m.info.size for m in messages), messages=len(messages))

    def _new_folder(self, name):
        return _MemFolder(name=name, uidvalidity=next(self._uidvalidity))

    @staticmethod
    def _status(folder):
        infos = [m.info for m in folder.messages.values()]
        return FolderStatus(
            name=folder.name, uidvalidity=folder.uidvalidity, uidnext=folder.uidnext,
            highestmodseq=folder.highestmodseq, messages=len(infos),
            recent=sum(1 for i in infos if i.recent),
            unseen=sum(1 for i in infos if not i.seen), size=sum(i.size for i in infos),
            deleted=sum(1 for i in infos if DELETED in i.flags))

    # mailboxes
    @_answer
    def create_mailbox(self, mailbox_id):
        box = self._mailboxes.setdefault(int(mailbox_id), _MemMailbox())
        for name in DEFAULT_FOLDERS:
            if name not in box.folders:
                box.folders[name] = self._new_folder(name)
            box.subscriptions.add(name)

    @_answer
    def remove_mailbox(self, mailbox_id):
        self._mailboxes.pop(int(mailbox_id), None)

    @_answer
    def usage(self, mailbox_id):
        return self._usage(self._box(mailbox_id)).bytes

    @_answer
    def mail_usage(self, mailbox_id):
        return self._usage(self._box(mailbox_id))

    # folders
    @_answer
    def list_folders(self, mailbox_id):
        box = self._box(mailbox_id)
        names = sorted(box.folders)
        return [FolderInfo(name=n, subscribed=n in box.subscriptions,
                           special_use=SPECIAL_USE.get(n),
                           has_children=any(is_below(o, n) for o in names)) for n in names]

    @_answer
    def create_folder(self, mailbox_id, name):
        name = normalize_folder_name(name)
        box = self._box(mailbox_id)
        if name in box.folders:
            raise errors.AlreadyExists(f"The folder '{name}' already exists.")
        for wanted in parent_names(name) + [name]:
            if wanted not in box.folders:
                box.folders[wanted] = self._new_folder(wanted)
        return self._status(box.folders[name])

    @_answer
    def delete_folder(self, mailbox_id, name):
        name = normalize_folder_name(name)
        if name in DEFAULT_FOLDERS:
            raise errors.FolderProtected(
                f"The folder '{name}' is needed by the service and cannot be deleted.")
        self._folder(mailbox_id, name)
        box = self._box(mailbox_id)
        if any(is_below(other, name) for other in box.folders):
            raise errors.ValidationError(
                f"The folder '{name}' has subfolders; delete or move them first.")
        del box.folders[name]

    @_answer
    def rename_folder(self, mailbox_id, old, new):
        old, new = normalize_folder_name(old), normalize_folder_name(new)
        box = self._box(mailbox_id)
        source = self._folder(mailbox_id, old)
        if new in box.folders:
            raise errors.AlreadyExists(f"The folder '{new}' already exists.")
        if old == INBOX:
            for parent in parent_names(new):
                box.folders.setdefault(parent, self._new_folder(parent))
            target = box.folders[new] = self._new_folder(new)
            self._transfer(source, list(source.messages), target, move=True, keep=True)
            return
        if old in DEFAULT_FOLDERS:
            raise errors.FolderProtected(
                f"The folder '{old}' is needed by the service and cannot be renamed.")
        if is_below(new, old):
            raise errors.ValidationError(f"A folder cannot be moved into itself ('{new}').")
        for parent in parent_names(new):
            box.folders.setdefault(parent, self._new_folder(parent))
        for name in [n for n in list(box.folders) if n == old or is_below(n, old)]:
            folder = box.folders.pop(name)
            folder.name = new + name[len(old):]
            box.folders[folder.name] = folder
            if name in box.subscriptions:
                box.subscriptions.discard(name)
                box.subscriptions.add(folder.name)

    @_answer
    def subscribe(self, mailbox_id, name, subscribed=True):
        name = normalize_folder_name(name)
        box = self._box(mailbox_id)
        (box.subscriptions.add if subscribed else box.subscriptions.discard)(name)

    @_answer
    def list_subscriptions(self, mailbox_id):
        return sorted(self._box(mailbox_id).subscriptions)

    @_answer
    def folder_status(self, mailbox_id, name):
        return self._status(self._folder(mailbox_id, name))

    @_answer
    def open_folder(self, mailbox_id, name):
        folder = self._folder(mailbox_id, name)
        return FolderSnapshot(status=self._status(folder),
                              messages=tuple(m.info for m in folder.messages.values()))

    @_answer
    def changes_since(self, mailbox_id, name, modseq):
        folder = self._folder(mailbox_id, name)
        return FolderChanges(
            uidvalidity=folder.uidvalidity, uidnext=folder.uidnext,
            highestmodseq=folder.highestmodseq,
            changed=tuple(m.info for m in folder.messages.values() if m.info.modseq > modseq),
            vanished=tuple(sorted(u for u, m in folder.vanished.items() if m > modseq)),
            vanished_floor=folder.vanished_floor)

    @_answer
    def messages_saved_before(self, mailbox_id, name, before):
        folder = self._folder(mailbox_id, name)
        return tuple(m.info for m in folder.messages.values() if m.info.saved_at < before)

    # messages
    @_answer
    def add_message(self, mailbox_id, name, source, prefix=b"", flags=(), internal_date=None,
                    quota_bytes=None):
        folder = self._folder(mailbox_id, name)
        flags = check_flags(flags)
        out = io.BytesIO()
        writer = CRLFWriter(out)
        writer.write(prefix)
        if isinstance(source, (str, bytes, os.PathLike)):
            with open(source, "rb") as f:
                writer.write(f.read())
        else:
            writer.write(source.read())
        writer.close()
        data = out.getvalue()
        box = self._box(mailbox_id)
        if quota_bytes is not None:
            used = self._usage(box).bytes
            if used + len(data) > quota_bytes:
                raise errors.QuotaExceeded(
                    f"The mailbox is full ({used} of {quota_bytes} bytes used); "
                    "delete some mail and try again.")
        now = self._clock.seconds()
        folder.highestmodseq += 1
        info = MessageInfo(uid=folder.uidnext, key=f"m{next(self._keys)}", flags=flags,
                           size=len(data),
                           internal_date=now if internal_date is None else internal_date,
                           saved_at=now, modseq=folder.highestmodseq, recent=True)
        folder.uidnext += 1
        folder.messages[info.uid] = _MemMessage(info=info, data=data,
                                                summary=mime.summarize(io.BytesIO(data)))
        return StoredMessage(folder=folder.name, uidvalidity=folder.uidvalidity, info=info)

    @_answer
    def set_flags(self, mailbox_id, name, uids, flags, mode, unchanged_since=None):
        folder = self._folder(mailbox_id, name)
        flags = check_flags(flags)
        if mode not in (FLAGS_ADD, FLAGS_REMOVE, FLAGS_REPLACE):
            raise ValueError(f"unknown flag mode {mode!r}")
        changed, modified = [], []
        modseq = None
        for uid in sorted(set(uids)):
            message = folder.messages.get(uid)
            if message is None:
                continue
            if unchanged_since is not None and message.info.modseq > unchanged_since:
                modified.append(uid)
                continue
            old = message.info.flags
            new = (old | flags if mode == FLAGS_ADD else old - flags if mode == FLAGS_REMOVE
                   else flags)
            if new == old:
                continue
            if modseq is None:
                folder.highestmodseq += 1
                modseq = folder.highestmodseq
            message.info = message.info._replace(flags=frozenset(new), modseq=modseq)
            changed.append(message.info)
        return FlagChanges(changed=tuple(changed), modified=tuple(modified),
                           highestmodseq=folder.highestmodseq)

    @_answer
    def claim_recent(self, mailbox_id, name, uids=None):
        folder = self._folder(mailbox_id, name)
        wanted = None if uids is None else set(uids)
        claimed = []
        for uid, message in folder.messages.items():
            if message.info.recent and (wanted is None or uid in wanted):
                message.info = message.info._replace(recent=False)
                claimed.append(uid)
        return tuple(claimed)

    @_answer
    def expunge(self, mailbox_id, name, uids):
        folder = self._folder(mailbox_id, name)
        gone = [uid for uid in sorted(set(uids)) if uid in folder.messages]
        if gone:
            folder.highestmodseq += 1
            for uid in gone:
                del folder.messages[uid]
                folder.vanished[uid] = folder.highestmodseq
            folder.prune_vanished()
        return Expunged(uids=tuple(gone), highestmodseq=folder.highestmodseq)

    def _transfer(self, source, uids, target, move, keep=False):
        now = self._clock.seconds()
        uids = [uid for uid in sorted(set(uids)) if uid in source.messages]
        if not uids:
            return CopyResult(uidvalidity=target.uidvalidity, uid_map=(), added=(),
                              source_highestmodseq=source.highestmodseq if move else None)
        target.highestmodseq += 1
        added, uid_map = [], []
        for uid in uids:
            message = source.messages[uid]
            info = message.info._replace(uid=target.uidnext,
                                key=message.info.key if keep else f"m{next(self._keys)}",
                                saved_at=now, modseq=target.highestmodseq,
                                recent=message.info.recent if keep else True)
            target.uidnext += 1
            target.messages[info.uid] = _MemMessage(info=info, data=message.data,
                                                    summary=message.summary)
            added.append(info)
            uid_map.append((uid, info.uid))
        source_modseq = None
        if move:
            source.highestmodseq += 1
            source_modseq = source.highestmodseq
            for uid in uids:
                del source.messages[uid]
                source.vanished[uid] = source_modseq
            source.prune_vanished()
        return CopyResult(uidvalidity=target.uidvalidity, uid_map=tuple(uid_map),
                          added=tuple(added), source_highestmodseq=source_modseq)

    @_answer
    def copy_messages(self, mailbox_id, name, uids, dest_name, quota_bytes=None):
        source = self._folder(mailbox_id, name)
        target = self._folder(mailbox_id, dest_name)
        if quota_bytes is not None:
            used = self._usage(self._box(mailbox_id)).bytes
            needed = sum(source.messages[u].info.size for u in set(uids)
                         if u in source.messages)
            if needed and used + needed > quota_bytes:
                raise errors.QuotaExceeded(
                    f"Copying needs {needed} bytes and the mailbox is full ({used} of "
                    f"{quota_bytes} bytes used); delete some mail and try again.")
        return self._transfer(source, uids, target, move=False)

    @_answer
    def move_messages(self, mailbox_id, name, uids, dest_name):
        source = self._folder(mailbox_id, name)
        target = self._folder(mailbox_id, dest_name)
        return self._transfer(source, uids, target, move=True)

    def _message(self, mailbox_id, name, uid):
        folder = self._folder(mailbox_id, name)
        try:
            return folder.messages[uid]
        except KeyError:
            raise errors.NoSuchMessage(
                f"There is no message with UID {uid} in '{folder.name}'.") from None

    @_answer
    def open_message(self, mailbox_id, name, uid):
        return io.BytesIO(self._message(mailbox_id, name, uid).data)

    @_answer
    def message_path(self, mailbox_id, name, uid):
        message = self._message(mailbox_id, name, uid)
        if self._files_dir is None:
            self._files_dir = tempfile.mkdtemp(prefix="ktmail-memory-mail-")
        os.makedirs(self._files_dir, exist_ok=True)
        path = os.path.join(self._files_dir, f"{int(mailbox_id)}-{message.info.key}")
        with open(path, "wb") as f:
            f.write(message.data)
        return path

    @_answer
    def message_details(self, mailbox_id, name, uids, with_structure=True):
        folder = self._folder(mailbox_id, name)
        found = {}
        for uid in sorted(set(uids)):
            message = folder.messages.get(uid)
            if message is not None:
                found[uid] = message.summary if with_structure else mime.MessageSummary(
                    fields=message.summary.fields, structure=None)
        return found

    @_answer
    def read_messages(self, mailbox_id, name, uids, reader):
        folder = self._folder(mailbox_id, name)
        return {uid: reader(uid, io.BytesIO(folder.messages[uid].data))
                for uid in sorted(set(uids)) if uid in folder.messages}

    @_answer
    def clean_stale_files(self):
        return 0


_ENTRY_ID = re.compile(r"[a-z0-9-]{1,64}\Z")


class _MemoryClaim:
    def __init__(self, claimed, entry_id):
        self._claimed = claimed
        self.entry_id = entry_id

    def release(self):
        self._claimed.discard(self.entry_id)
        return defer.succeed(None)


@implementer(IQueueStore)
class MemoryQueueStore:
    """The outbound queue in memory: entries and message bytes in dicts."""

    def __init__(self):
        self._entries = {}     # id -> QueueEntry
        self._messages = {}    # id -> bytes
        self._token = 0
        self._claimed = set()  # ids in a delivery round

    @_answer
    def claim(self, entry_id):
        if entry_id in self._claimed:
            return None
        self._claimed.add(entry_id)
        return _MemoryClaim(self._claimed, entry_id)

    def _check(self, entry_id):
        if not isinstance(entry_id, str) or not _ENTRY_ID.match(entry_id) \
                or entry_id not in self._entries:
            raise errors.NotFound(f"There is no queued message '{entry_id}'.")

    @_answer
    def add(self, entry, message_path):
        with open(message_path, "rb") as f:
            data = f.read()
        self._add(entry, data)

    @_answer
    def add_bytes(self, entry, message):
        self._add(entry, bytes(message))

    def _add(self, entry, data):
        if not _ENTRY_ID.match(entry.id):
            raise errors.NotFound(f"There is no queued message '{entry.id}'.")
        if entry.id in self._entries:
            raise errors.AlreadyExists(f"Message '{entry.id}' is already queued.")
        self._entries[entry.id] = entry
        self._messages[entry.id] = data

    @_answer
    def get(self, entry_id):
        self._check(entry_id)
        return self._entries[entry_id]

    @_answer
    def list_entries(self):
        return sorted(self._entries.values(), key=lambda e: (e.created, e.id))

    @_answer
    def update(self, entry_id, change):
        if entry_id not in self._entries:
            return None
        new = change(self._entries[entry_id])
        self._entries[entry_id] = new
        return new

    @_answer
    def remove(self, entry_id):
        self._check(entry_id)
        del self._entries[entry_id]
        del self._messages[entry_id]

    @_answer
    def open_message(self, entry_id):
        self._check(entry_id)
        return io.BytesIO(self._messages[entry_id])

    @_answer
    def notify_changed(self):
        self._token += 1

    @_answer
    def change_token(self):
        return self._token

    @_answer
    def recover(self):
        return 0
@implementer(ISpamStatsStore)
class MemorySpamStatsStore:
    """ISpamStatsStore in dicts."""

    def __init__(self):
        self._totals = {}     # scope -> [nspam, nham]
        self._tokens = {}     # scope -> {token: [nspam, nham]}
        self._learned = {}    # (scope, message_key) -> is_spam
        self._days = {}       # (scope, token or ("learned", key)) -> day last counted

    @_answer
    def load_stats(self, scopes, tokens):
        result = {}
        for scope in scopes:
            nspam, nham = self._totals.get(scope, (0, 0))
            seen = self._tokens.get(scope, {})
            result[scope] = (nspam, nham, {t: tuple(seen[t]) for t in tokens if t in seen})
        return result

    def _count(self, scope, tokens, index, delta, day=0):
        totals = self._totals.setdefault(scope, [0, 0])
        totals[index] = max(totals[index] + delta, 0)
        seen = self._tokens.setdefault(scope, {})
        for t in tokens:
            counts = seen.setdefault(t, [0, 0])
            counts[index] = max(counts[index] + delta, 0)
            if delta > 0:
                self._days[scope, t] = max(self._days.get((scope, t), 0), day)
            if counts == [0, 0]:
                del seen[t]
                self._days.pop((scope, t), None)

    @_answer
    def learn(self, scopes, message_key, tokens, is_spam, now=0.0):
        tokens = set(tokens)
        day = int(now // 86400)
        outcome = {}
        for scope in scopes:
            before = self._learned.get((scope, message_key))
            if before is not None and before == bool(is_spam):
                outcome[scope] = "already"
                continue
            if before is not None:
                self._count(scope, tokens, 0 if before else 1, -1)
            self._count(scope, tokens, 0 if is_spam else 1, +1, day)
            self._learned[scope, message_key] = bool(is_spam)
            self._days[scope, ("learned", message_key)] = day
            outcome[scope] = "relearned" if before is not None else "learned"
        return outcome

    @_answer
    def prune(self, before):
        day = int(before // 86400)
        dropped = 0
        for scope, seen in self._tokens.items():
            for t in [t for t, c in seen.items()
                      if sum(c) <= 1 and self._days.get((scope, t), 0) < day]:
                del seen[t]
                self._days.pop((scope, t), None)
                dropped += 1
        for scope, key in [k for k in self._learned
                           if self._days.get((k[0], ("learned", k[1])), 0) < day]:
            del self._learned[scope, key]
            self._days.pop((scope, ("learned", key)), None)
            dropped += 1
        return dropped

    @_answer
    def forget_scope(self, scope):
        self._totals.pop(scope, None)
        self._tokens.pop(scope, None)
        for key in [k for k in self._learned if k[0] == scope]:
            del self._learned[key]
        for key in [k for k in self._days if k[0] == scope]:
            del self._days[key]
