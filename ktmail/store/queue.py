"""The outbound queue on disk: ``<data_dir>/queue/``.

Each queued message is two files named by its id:

- ``<id>.msg``: the message bytes exactly as submitted (CRLF), hard-linked
  from the submission spool when it is on the same file system, copied
  otherwise;
- ``<id>.json``: the ``QueueEntry`` (envelope, DKIM header, per-recipient
  state), replaced atomically: written to ``<id>.json.tmp``, fsynced,
  renamed over the old one, directory fsynced.

The rename of ``<id>.json`` is the commit point of every change: an entry
exists exactly when its ``.json`` exists, and the ``.msg`` is durable before
the first ``.json`` is renamed into place, so an entry is never visible
without its message. After a crash, ``recover()`` deletes ``*.tmp`` files
and ``.msg`` files without an entry (an ``add`` that never returned).
Removal unlinks ``.json`` first, then ``.msg``.

A delivery round holds ``<id>.lock`` with a non-blocking ``flock``
(``claim``), so that the schedulers of several nodes sharing the queue
directory never deliver one entry twice; the kernel (or the NFSv4 / CephFS
lock service) drops the lock when its process dies, and another node's
scheduler takes the entry over.

A per-message file pair rather than rows in the service database, because
the message and its metadata then live and die together in one directory,
with no transaction spanning SQLite and the file system; ``ktmail-admin``
and the daemon share it through an advisory lock (``.lock``, ``flock``)
held only around each read-modify-write.

All file work runs through ``run_in_thread``, never on the reactor thread.
"""

import errno
import fcntl
import json
import os
import re
import shutil

from zope.interface import implementer

from ktmail import errors
from ktmail.model import QueuedRecipient, QueueEntry
from ktmail.store import IQueueStore
from ktmail.store.files import ExclusiveFlock, fsync_dir, write_durably

ENTRY_ID = re.compile(r"[a-z0-9-]{1,64}\Z")
FORMAT_VERSION = 1


def entry_to_json(entry):
    """The on-disk form of a QueueEntry (UTF-8 JSON bytes)."""
    doc = {
        "version": FORMAT_VERSION,
        "id": entry.id,
        "sender": entry.sender,
        "created": entry.created,
        "size": entry.size,
        "dkim_header": entry.dkim_header.decode("latin-1"),
        "eight_bit": entry.eight_bit,
        "delay_notified": entry.delay_notified,
        "dsn_count": entry.dsn_count,
        "recipients": [
            {"address": r.address, "state": r.state, "attempts": r.attempts,
             "next_attempt": r.next_attempt, "last_error": r.last_error, "reply": r.reply,
             "remote_mta": r.remote_mta, "reported": r.reported}
            for r in entry.recipients],
    }
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8")


def entry_from_json(data):
    doc = json.loads(data.decode("utf-8"))
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown queue entry format {doc.get('version')!r}")
    return QueueEntry(
        id=doc["id"], sender=doc["sender"], created=doc["created"], size=doc["size"],
        dkim_header=doc["dkim_header"].encode("latin-1"), eight_bit=doc["eight_bit"],
        delay_notified=doc["delay_notified"], dsn_count=doc["dsn_count"],
        recipients=tuple(QueuedRecipient(**r) for r in doc["recipients"]))


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Claim:
    """An entry held for one delivery round (an open, flocked ``<id>.lock``)."""

    def __init__(self, store, entry_id, fd):
        self._store = store
        self.entry_id = entry_id
        self.fd = fd

    def release(self):
        return self._store._run(self._store._release, self)


@implementer(IQueueStore)
class DiskQueueStore:
    def __init__(self, data_dir, run_in_thread):
        self.root = os.path.join(data_dir, "queue")
        self._run = run_in_thread
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.root, ".lock")
        self._wakeup_path = os.path.join(self.root, ".changed")

    # -- paths ----------------------------------------------------------------

    def _paths(self, entry_id):
        if not isinstance(entry_id, str) or not ENTRY_ID.match(entry_id):
            raise errors.NotFound(f"There is no queued message '{entry_id}'.")
        base = os.path.join(self.root, entry_id)
        return base + ".json", base + ".msg"

    def _not_found(self, entry_id):
        return errors.NotFound(f"There is no queued message '{entry_id}'.")

    # -- work on the thread ---------------------------------------------------

    def _add(self, entry, write_message):
        json_path, msg_path = self._paths(entry.id)
        with ExclusiveFlock(self._lock_path):
            if os.path.exists(json_path):
                raise errors.AlreadyExists(f"Message '{entry.id}' is already queued.")
            if os.path.exists(msg_path):
                os.unlink(msg_path)  # left by an add that crashed
            write_message(msg_path)
            write_durably(json_path, entry_to_json(entry))
            fsync_dir(self.root)

    def _add_file(self, entry, source):
        def write_message(msg_path):
            try:
                os.link(source, msg_path)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                with open(source, "rb") as src, open(msg_path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            # the spool was fsynced by its owner; a copy was not: sync either way
            fd = os.open(msg_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._add(entry, write_message)

    def _add_bytes(self, entry, message):
        def write_message(msg_path):
            fd = os.open(msg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(message)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        self._add(entry, write_message)

    def _read(self, entry_id):
        json_path, _ = self._paths(entry_id)
        try:
            with open(json_path, "rb") as f:
                return entry_from_json(f.read())
        except FileNotFoundError:
            raise self._not_found(entry_id) from None

    def _list(self):
        entries = []
        for name in os.listdir(self.root):
            if name.endswith(".json") and ENTRY_ID.match(name[:-5]):
                try:
                    entries.append(self._read(name[:-5]))
                except errors.NotFound:
                    pass  # removed while listing
        entries.sort(key=lambda e: (e.created, e.id))
        return entries

    def _update(self, entry_id, change):
        json_path, _ = self._paths(entry_id)
        with ExclusiveFlock(self._lock_path):
            try:
                entry = self._read(entry_id)
            except errors.NotFound:
                return None
            new = change(entry)
            if new != entry:
                write_durably(json_path, entry_to_json(new))
                fsync_dir(self.root)
            return new

    def _remove(self, entry_id):
        json_path, msg_path = self._paths(entry_id)
        with ExclusiveFlock(self._lock_path):
            try:
                os.unlink(json_path)
            except FileNotFoundError:
                raise self._not_found(entry_id) from None
            try:
                os.unlink(msg_path)
            except FileNotFoundError:
                pass
            _unlink_quietly(json_path[:-len(".json")] + ".lock")
            fsync_dir(self.root)

    def _claim(self, entry_id):
        json_path, _ = self._paths(entry_id)
        lock_path = json_path[:-len(".json")] + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return _Claim(self, entry_id, fd)

    def _release(self, claim):
        json_path, _ = self._paths(claim.entry_id)
        try:
            if not os.path.exists(json_path):
                # the round removed the entry: its lock file goes too
                _unlink_quietly(json_path[:-len(".json")] + ".lock")
        finally:
            os.close(claim.fd)

    def _open(self, entry_id):
        _, msg_path = self._paths(entry_id)
        try:
            return open(msg_path, "rb")
        except FileNotFoundError:
            raise self._not_found(entry_id) from None

    def _notify(self):
        # a new file (inode) holding a counter: differs even within one mtime tick
        with ExclusiveFlock(self._lock_path):
            try:
                with open(self._wakeup_path, "rb") as f:
                    count = int(f.read() or b"0")
            except (FileNotFoundError, ValueError):
                count = 0
            write_durably(self._wakeup_path, b"%d" % (count + 1))

    def _token(self):
        try:
            st = os.stat(self._wakeup_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _recover(self):
        cleaned = 0
        with ExclusiveFlock(self._lock_path):
            names = set(os.listdir(self.root))
            for name in names:
                path = os.path.join(self.root, name)
                # an add that never returned, or a finished round's lock
                orphan = (not name.startswith(".") and name.endswith((".msg", ".lock"))
                          and name.rpartition(".")[0] + ".json" not in names)
                if name.endswith(".tmp") or orphan:
                    os.unlink(path)
                    cleaned += 1
            if cleaned:
                fsync_dir(self.root)
        return cleaned

    # -- IQueueStore ----------------------------------------------------------

    def add(self, entry, message_path):
        return self._run(self._add_file, entry, message_path)

    def add_bytes(self, entry, message):
        return self._run(self._add_bytes, entry, bytes(message))

    def get(self, entry_id):
        return self._run(self._read, entry_id)

    def list_entries(self):
        return self._run(self._list)

    def update(self, entry_id, change):
        return self._run(self._update, entry_id, change)

    def remove(self, entry_id):
        return self._run(self._remove, entry_id)

    def open_message(self, entry_id):
        return self._run(self._open, entry_id)

    def notify_changed(self):
        return self._run(self._notify)

    def change_token(self):
        return self._run(self._token)

    def recover(self):
        return self._run(self._recover)

    def claim(self, entry_id):
        return self._run(self._claim, entry_id)
