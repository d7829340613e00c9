"""All Maildir file I/O (SPEC §5): Maildir++ under ``<data_dir>/mail/<id>/``.

Layout of one mailbox::

    <data_dir>/mail/<id>/cur new tmp          INBOX
    <data_dir>/mail/<id>/.Sent/...            folder "Sent" (``maildirfolder`` inside)
    <data_dir>/mail/<id>/.Kvitton.F&APY-rs&AOQ-kring/   "Kvitton/Försäkring"
    <data_dir>/mail/<id>/ktmail-index.sqlite  the index (store/folder_index.py)
    <data_dir>/mail/<id>/ktmail-index.lock    flock: one writer per mailbox, across processes
    <data_dir>/mail/<id>/ktmail-uidvalidity   the last UIDVALIDITY handed out

Messages are files with CRLF line endings, exactly the bytes IMAP serves.
New messages are written (or hard-linked, when already clean) into the
mailbox's top ``tmp/`` and renamed from there into their folder.
File names are ``<secs>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>`` in
``new/``, plus ``:2,<flags>`` (D F P R S T in ASCII order) in ``cur/``. A
message's key is the base name before ``:``; changing flags renames the file.

Invariants:
- never writes outside a mailbox's own directory (folder names are checked
  by store/folder_names.py; message names are generated here);
- a message becomes visible only by ``rename()`` after its file was
  fsynced, and the caller's Deferred fires only after the directory was
  fsynced and the index row committed (synchronous=FULL);
- every operation on one mailbox holds its lock (a thread lock plus
  ``flock`` on ``ktmail-index.lock``, so ``ktmail-admin`` and the daemon
  never interleave; with the index in PostgreSQL instead, for nodes that
  share the Maildirs, an advisory lock on the mailbox: see the index
  handles in store/folder_index.py and store/folder_index_pg.py) and runs
  on a worker thread, never on the reactor;
  operations on one mailbox fire in the order they took effect;
- the index follows the disk: on a folder's first use in this process, and
  whenever the recorded mtime of ``new/`` or ``cur/`` differs, the folder
  is rescanned (unknown files get new UIDs, missing files are expunged,
  flags in file names win); a missing or unreadable index is rebuilt from
  the Maildir with new UIDVALIDITYs;
- a removed mailbox or folder disappears by one rename before its files
  are deleted, so nothing half-deleted is ever visible.
"""

import collections
import errno
import itertools
import operator
import os
import re
import secrets
import shutil
import socket
import stat
import threading
from contextlib import contextmanager

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ktmail import errors, mime
from ktmail.model import (
    DEFAULT_FOLDERS,
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    INBOX,
    SPECIAL_USE,
    CopyResult,
    Expunged,
    FlagChanges,
    FolderChanges,
    FolderInfo,
    FolderSnapshot,
    FolderStatus,
    MailUsage,
    StoredMessage,
    is_below,
    normalize_folder_name,
    parent_names,
)
from ktmail.store import IMailStore
from ktmail.store import folder_index as index
from ktmail.store.files import fsync_dir, pid_alive
from ktmail.store.folder_names import folder_dirname, folder_name_from_dirname
from ktmail.store.message_flags import check_flags

log = Logger()

LOCK_FILENAME = index.LOCK_FILENAME
UIDVALIDITY_FILENAME = "ktmail-uidvalidity"
DELETED_PREFIX = "ktmail-deleted."
#: Maildir rule: a file in tmp/ untouched for 36 hours is garbage
STALE_TMP_SECONDS = 36 * 3600
#: new/ mtimes younger than this are not trusted (another writer may still
#: add a file within the same timestamp tick); the folder is rescanned later
MTIME_SETTLE_SECONDS = 2
COPY_CHUNK = 1 << 20
#: mail is private to the daemon's user, whatever the umask
DIR_MODE = 0o700
FILE_MODE = 0o600

_FLAGS, _SIZE, _RECENT = (operator.itemgetter(i) for i in (2, 3, 7))  # MessageInfo fields
_INFO_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
               "S": "\\Seen", "T": "\\Deleted"}
_FLAG_LETTERS = {flag: letter for letter, flag in _INFO_FLAGS.items()}
_SIZE_FIELD = re.compile(r",S=(\d+)")
_VSIZE_FIELD = re.compile(r",W=(\d+)")
_OUR_NAME = re.compile(r"\d+\.M\d+P(\d+)Q\d+R[0-9a-f]+\.(.+?)(?:,|$)")


def _host_part():
    """This host's name as Maildir names carry it ('/' and ':' escaped)."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


class _NameMaker:
    """Unique Maildir base names: ``<secs>.M<usec>P<pid>Q<n>R<rand>.<host>``."""

    def __init__(self, clock):
        self._clock = clock
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.host = _host_part()

    def make(self):
        now = self._clock.seconds()
        with self._lock:
            n = next(self._counter)
        return (f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{n}"
                f"R{secrets.token_hex(4)}.{self.host}")


# --- file-name flags -----------------------------------------------------------------


def _info_letters(filename):
    _, sep, info = filename.partition(":2,")
    return info if sep else ""


def flags_from_filename(filename, keywords):
    """(sysflags, keywords) read from a file name's ``:2,`` letters: the
    letters win for system flags and ``$Forwarded`` (P); other keywords are
    kept from the index."""
    letters = _info_letters(filename)
    flags = {_INFO_FLAGS[c] for c in letters if c in _INFO_FLAGS}
    kept = {k for k in keywords.split() if k != "$Forwarded"}
    sysflags, _ = index.encode_flags(flags)
    if "$Forwarded" in flags:
        kept.add("$Forwarded")
    return sysflags, " ".join(sorted(kept))


def filename_for(filename, flags):
    """The ``cur/`` name of a message with ``flags``; info letters we do not
    know (e.g. another tool's keywords a-z) are kept."""
    key = index.message_key(filename)
    letters = {_FLAG_LETTERS[f] for f in flags if f in _FLAG_LETTERS}
    letters |= {c for c in _info_letters(filename) if c not in _INFO_FLAGS}
    return f"{key}:2,{''.join(sorted(letters))}"


def _size_from_name(filename):
    key = index.message_key(filename)
    size = _SIZE_FIELD.search(key)
    vsize = _VSIZE_FIELD.search(key)
    if size and (vsize is None or vsize.group(1) == size.group(1)):
        return int(size.group(1))
    return None


# --- low-level file operations ---------------------------------------------------------


def publish(src, dst):
    """Make a message visible: one atomic rename (tests replace this to
    simulate a crash at that point)."""
    os.rename(src, dst)


class CRLFWriter:
    """Writes a stream with every line ending made CRLF (bare LF -> CRLF)."""

    def __init__(self, out):
        self._out = out
        self._held_cr = False
        self.size = 0

    def write_raw(self, data):
        self._out.write(data)
        self.size += len(data)

    def write(self, data):
        if not data:
            return
        if self._held_cr:
            data = b"\r" + data
            self._held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._held_cr = True
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self.write_raw(data)

    def close(self):
        if self._held_cr:
            self.write_raw(b"\r")
            self._held_cr = False


def _needs_crlf(path):
    """Does the file at ``path`` contain a bare LF?"""
    with open(path, "rb") as f:
        prev = b""
        while True:
            chunk = f.read(COPY_CHUNK)
            if not chunk:
                return False
            data = prev + chunk
            if data.count(b"\n") != data.count(b"\r\n"):
                return True
            prev = chunk[-1:]


def _copy_file(src, dst):
    """Copy ``src`` to a new file ``dst`` (copy_file_range where possible), fsynced."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            remaining = os.fstat(fin.fileno()).st_size
            while remaining > 0:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), remaining)
                if n == 0:
                    break
                remaining -= n
        except OSError:
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            shutil.copyfileobj(fin, fout, COPY_CHUNK)
        fout.flush()
        os.fsync(fout.fileno())


def is_stale_tmp_name(name, mtime, now, host):
    """Is a ``tmp/`` (or spool) file garbage? Older than 36 hours (Maildir
    rule), or written by an earlier process of this host that is gone."""
    if mtime < now - STALE_TMP_SECONDS:
        return True
    m = _OUR_NAME.match(name)
    if m and m.group(2) == host:
        pid = int(m.group(1))
        return pid != os.getpid() and not pid_alive(pid)
    return False


@attrs.frozen
class _Staged:
    """A message written to ``tmp/``, fsynced, not yet visible."""

    path: str
    size: int
    summary: object  # mime.MessageSummary or None


# --- one mailbox -----------------------------------------------------------------------


class MaildirMailbox:
    """One mailbox directory and its index.

    Every public method must be called on a worker thread inside
    ``with mailbox.locked():``. Methods raise ktmail.errors types for
    expected failures.
    """

    def __init__(self, path, clock, names, index_handle=None):
        self.path = path
        self._clock = clock
        self._names = names
        self._thread_lock = threading.RLock()
        self._depth = 0
        #: the index handle: folder_index.SQLiteFolderIndex (a file in the
        #: mailbox) or folder_index_pg.PostgresFolderIndex (rows in PostgreSQL)
        self.index = (index_handle if index_handle is not None
                      else index.SQLiteFolderIndex(path))
        #: the index functions the handle goes with, called with ``_conn``
        self._sql = self.index.functions
        self._conn = None
        # folder ids (with their uidvalidity) scanned since this process opened
        # the index; a folder not in here is rescanned on its next use
        self._scanned = set()
        self._root_scanned = False

    # --- locking, the index connection ---

    @contextmanager
    def locked(self):
        with self._thread_lock:
            self._depth += 1
            try:
                if self._depth == 1:
                    self._acquire()
                yield self
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self):
        if not os.path.isdir(self.path):
            self.close()
            raise errors.NoSuchMailbox()
        self.index.lock()
        try:
            self._check_index()
        except BaseException:
            self._release()
            raise

    def _release(self):
        self.index.unlock()

    def close(self):
        self.index.close()
        self._conn = None
        self._scanned.clear()
        self._root_scanned = False

    def _check_index(self):
        """Open the index, or notice it was replaced or lost (and rebuild)."""
        state = self.index.open()
        if state == index.SAME:
            return
        self._scanned.clear()
        self._root_scanned = False
        self._conn = self.index.conn
        if state == index.CREATED:
            self._rebuild()

    @contextmanager
    def _transaction(self):
        try:
            with self.index.transaction() as conn:
                yield conn
        except BaseException:
            # the disk may now be ahead of the index: look again next time
            self._scanned.clear()
            self._root_scanned = False
            raise

    # --- UIDVALIDITY ---

    def _new_uidvalidity(self, conn):
        """A value above every one handed out in this mailbox, also across an
        index loss (kept in ktmail-uidvalidity too), and at least the time."""
        last = self._sql.get_meta(conn, "last_uidvalidity", 0)
        try:
            with open(os.path.join(self.path, UIDVALIDITY_FILENAME)) as f:
                last = max(last, int(f.read().strip() or 0))
        except (OSError, ValueError):
            pass
        value = max(int(self._clock.seconds()), last + 1) & 0xFFFFFFFF or 1
        tmp = os.path.join(self.path, UIDVALIDITY_FILENAME + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
        os.rename(tmp, os.path.join(self.path, UIDVALIDITY_FILENAME))
        self._sql.set_meta(conn, "last_uidvalidity", value)
        return value

    # --- folder directories ---

    def _folder_dir(self, row_or_dirname):
        dirname = getattr(row_or_dirname, "dirname", row_or_dirname)
        return os.path.join(self.path, dirname) if dirname else self.path

    def _make_folder_dirs(self, dirname):
        base = self._folder_dir(dirname)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(base, sub), mode=DIR_MODE, exist_ok=True)
        if dirname:
            open(os.path.join(base, "maildirfolder"), "ab").close()
        fsync_dir(base)

    def _rebuild(self):
        """Fill a new, empty index from what is on disk."""
        with self._transaction() as conn:
            self._make_folder_dirs("")
            self._sql.insert_folder(conn, INBOX, "", self._new_uidvalidity(conn))
            self._sql.set_subscribed(conn, INBOX, True)
            for entry in sorted(os.listdir(self.path)):
                name = folder_name_from_dirname(entry)
                if name and self._is_maildir(entry) and self._sql.folder_row(conn, name) is None:
                    self._sql.insert_folder(conn, name, entry, self._new_uidvalidity(conn))
                    self._sql.set_subscribed(conn, name, True)
            self._sql.set_meta(conn, "root_mtime_ns", None)
        self._root_scanned = True
        for row in self._sql.folder_rows(self._conn):
            self._sync_folder(row, force=True)

    def _is_maildir(self, dirname):
        base = self._folder_dir(dirname)
        return os.path.isdir(os.path.join(base, "cur")) or os.path.isdir(os.path.join(base, "new"))

    def _sync_folder_list(self, force=False):
        """Follow folders created, renamed or deleted on disk by other tools."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            raise errors.NoSuchMailbox() from None
        conn = self._conn
        if self._root_scanned and not force and self._sql.get_meta(conn, "root_mtime_ns") == mtime:
            return
        entries = set(os.listdir(self.path))
        with self._transaction() as conn:
            rows = self._sql.folder_rows(conn)
            known = {r.dirname for r in rows}
            for row in rows:
                if row.dirname == "":
                    continue
                if row.dirname not in entries or not self._is_maildir(row.dirname):
                    log.info("folder {name} of {path} is gone from the disk",
                             name=row.name, path=self.path)
                    self._sql.delete_folder(conn, row.id)
            for entry in sorted(entries - known):
                name = folder_name_from_dirname(entry)
                if name and self._is_maildir(entry) and self._sql.folder_row(conn, name) is None:
                    self._sql.insert_folder(conn, name, entry, self._new_uidvalidity(conn))
            for entry in entries:
                if entry.startswith(DELETED_PREFIX):
                    shutil.rmtree(os.path.join(self.path, entry), ignore_errors=True)
            self._sql.set_meta(conn, "root_mtime_ns", mtime)
        self._root_scanned = True

    def _root_changed(self, before_ns):
        """After our own change to the root: record the new mtime, unless the
        root had changed behind our back before (then it is rescanned)."""
        conn = self._conn
        if self._sql.get_meta(conn, "root_mtime_ns") == before_ns:
            self._sql.set_meta(conn, "root_mtime_ns", os.stat(self.path).st_mtime_ns)

    def _folder(self, name, sync=True):
        """-> FolderRow of an existing folder, its messages in step with the disk."""
        name = normalize_folder_name(name)
        self._sync_folder_list()
        row = self._sql.folder_row(self._conn, name)
        if row is None:
            raise errors.NoSuchFolder(f"There is no folder '{name}'.")
        if sync:
            row = self._sync_folder(row)
        return row

    # --- reconciliation with the disk ---

    def _settled(self, mtime_ns):
        return mtime_ns < (self._clock.seconds() - MTIME_SETTLE_SECONDS) * 1e9

    def _dir_mtimes(self, row):
        base = self._folder_dir(row)
        out = []
        for sub in ("new", "cur"):
            path = os.path.join(base, sub)
            try:
                out.append(os.stat(path).st_mtime_ns)
            except FileNotFoundError:
                if not os.path.isdir(base):
                    raise errors.NoSuchFolder(f"There is no folder '{row.name}'.") from None
                os.makedirs(path, mode=DIR_MODE, exist_ok=True)
                out.append(os.stat(path).st_mtime_ns)
        return out

    def _record_mtimes(self, conn, row, new_ns, cur_ns):
        self._sql.set_dir_mtimes(conn, row.id, new_ns if self._settled(new_ns) else None, cur_ns)

    @contextmanager
    def _changing(self, row, subdirs=("new", "cur")):
        """Around our own changes to a folder's ``new/``/``cur/``: afterwards
        record the new mtimes, but only for directories that had not changed
        behind our back (those stay due for a rescan). Use inside a
        transaction."""
        before = self._dir_mtimes(row)
        yield
        current = self._sql.folder_row_by_id(self._conn, row.id)
        after = self._dir_mtimes(row)
        recorded = [current.new_mtime_ns, current.cur_mtime_ns]
        result = []
        for i, sub in enumerate(("new", "cur")):
            if sub in subdirs and recorded[i] == before[i]:
                if sub == "new" and not self._settled(after[i]):
                    result.append(None)
                else:
                    result.append(after[i])
            else:
                result.append(recorded[i])
        self._sql.set_dir_mtimes(self._conn, row.id, *result)

    def _sync_folder(self, row, force=False, keep_rows=None):
        """Bring the index of one folder in step with its directory. -> fresh row.

        Cheap when nothing changed: two stats. A directory (``new/`` or
        ``cur/``) is listed and compared with the index, as sets of names,
        on the folder's first use in this process and when its mtime moved;
        only names that differ are looked at one by one. If ``keep_rows`` (a
        list) is given and every index row was read and found in step with
        the disk, the rows are put in it (saves reading them again).
        """
        mtimes = self._dir_mtimes(row)
        recorded = [row.new_mtime_ns, row.cur_mtime_ns]
        first_look = force or (row.id, row.uidvalidity) not in self._scanned
        dirty = [sub for i, sub in enumerate(("new", "cur"))
                 if first_look or recorded[i] != mtimes[i]]
        if not dirty:
            return row
        base = self._folder_dir(row)
        on_disk = {sub: {n for n in os.listdir(os.path.join(base, sub)) if n[:1] != "."}
                   for sub in dirty}
        indexed = {sub: set() for sub in dirty}
        if len(dirty) == 2:
            raw_rows = self._sql.raw_message_rows(self._conn, row.id)
            for r in raw_rows:
                indexed[r[2]].add(r[1])
        else:
            raw_rows = None
            indexed[dirty[0]].update(self._sql.message_filenames(self._conn, row.id, dirty[0]))
        if on_disk == indexed:
            if keep_rows is not None and raw_rows is not None:
                keep_rows.extend(raw_rows)
            if recorded != mtimes:
                with self._transaction() as conn:
                    self._record_mtimes(conn, row, *mtimes)
            self._scanned.add((row.id, row.uidvalidity))
            return self._sql.folder_row_by_id(self._conn, row.id)
        # names present on one side only: new files, vanished ones, renames
        appeared = {}  # key -> (subdir, filename)
        for sub in dirty:
            for name in on_disk[sub] - indexed[sub]:
                if not os.path.isfile(os.path.join(base, sub, name)):
                    continue
                key = index.message_key(name)
                if key in appeared and appeared[key][0] == "cur":
                    continue
                appeared[key] = (sub, name)
        missing = [f for sub in dirty for f in indexed[sub] - on_disk[sub]]
        with self._transaction() as conn:
            rows = {index.message_key(r.filename): r
                    for r in self._sql.message_rows_by_filename(conn, row.id, missing)}
            unknown = [key for key in appeared if key not in rows]
            if unknown and len(dirty) == 1:
                # a file moved here from the directory we did not list (its mtime
                # did not visibly move): find its row there by key, in one pass
                other = "cur" if dirty[0] == "new" else "new"
                by_key = {index.message_key(f): f
                          for f in self._sql.message_filenames(conn, row.id, other)}
                moved = [by_key[key] for key in unknown if key in by_key]
                for r in self._sql.message_rows_by_filename(conn, row.id, moved):
                    if not os.path.exists(os.path.join(base, r.subdir, r.filename)):
                        rows[index.message_key(r.filename)] = r
            gone = [r for key, r in rows.items() if key not in appeared]
            renamed = [(r, *appeared[key]) for key, r in rows.items() if key in appeared]
            found = sorted((name, sub) for key, (sub, name) in appeared.items()
                           if key not in rows)
            modseq = None
            if gone or renamed or found:
                modseq = self._sql.next_modseq(conn, row.id)
            if gone:
                log.info("{n} messages of {folder} in {path} vanished from the disk",
                         n=len(gone), folder=row.name, path=self.path)
                self._sql.delete_messages(conn, row.id, gone, modseq)
            for r, sub, filename in renamed:
                sysflags, keywords = flags_from_filename(filename, r.keywords)
                changed = (sysflags, keywords) != (r.sysflags, r.keywords)
                self._sql.update_message_file(conn, row.id, r.uid, filename, sub, sysflags, keywords,
                                          modseq=modseq if changed else None)
            if found:
                self._index_found_files(conn, row, found, modseq)
            self._record_mtimes(conn, row, *mtimes)
        self._scanned.add((row.id, row.uidvalidity))
        return self._sql.folder_row_by_id(self._conn, row.id)

    def _index_found_files(self, conn, row, found, modseq):
        """Give files unknown to the index (other tools, crash leftovers) UIDs."""
        base = self._folder_dir(row)
        now = self._clock.seconds()
        indexed = 0
        uid = self._sql.take_uids(conn, row.id, len(found))
        for filename, sub in found:
            path = os.path.join(base, sub, filename)
            try:
                st = os.stat(path)
                size = _size_from_name(filename)
                if size is None or size != st.st_size:
                    filename, st = self._adopt_foreign_file(base, sub, filename, st)
                    path = os.path.join(base, sub, filename)
            except FileNotFoundError:
                continue
            sysflags, keywords = flags_from_filename(filename, "")
            self._sql.insert_message(conn, row.id, index.MessageRow(
                uid=uid, filename=filename, subdir=sub, sysflags=sysflags, keywords=keywords,
                size=st.st_size, internal_date=st.st_mtime, saved_at=now, modseq=modseq,
                recent=int(sub == "new")))
            uid += 1
            indexed += 1
        if indexed:
            log.info("{n} new files in {folder} of {path} got UIDs", n=indexed,
                     folder=row.name, path=self.path)

    def _adopt_foreign_file(self, base, sub, filename, st):
        """A file another tool wrote: give it CRLF line endings (IMAP serves
        the file as it is) and a ``,S=`` size in its name. -> (name, stat)."""
        path = os.path.join(base, sub, filename)
        key = index.message_key(filename)
        info = filename[len(key):]
        plain_key = _VSIZE_FIELD.sub("", _SIZE_FIELD.sub("", key))
        if _needs_crlf(path):
            tmp = os.path.join(base, "tmp", f"{self._names.make()}.adopt")
            with open(path, "rb") as fin, open(tmp, "xb") as fout:
                writer = CRLFWriter(fout)
                for chunk in iter(lambda: fin.read(COPY_CHUNK), b""):
                    writer.write(chunk)
                writer.close()
                fout.flush()
                os.fsync(fout.fileno())
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            size = os.stat(tmp).st_size
            new_name = f"{plain_key},S={size}{info}"
            publish(tmp, os.path.join(base, sub, new_name))
            if new_name != filename:
                os.unlink(path)
        else:
            new_name = f"{plain_key},S={st.st_size}{info}"
            if new_name != filename:
                os.rename(path, os.path.join(base, sub, new_name))
        fsync_dir(os.path.join(base, sub))
        return new_name, os.stat(os.path.join(base, sub, new_name))

    # --- mailbox operations ---

    def create_defaults(self):
        with self._transaction() as conn:
            before = os.stat(self.path).st_mtime_ns
            for name in DEFAULT_FOLDERS:
                if self._sql.folder_row(conn, name) is None:
                    dirname = folder_dirname(name)
                    self._make_folder_dirs(dirname)
                    self._sql.insert_folder(conn, name, dirname, self._new_uidvalidity(conn))
                self._sql.set_subscribed(conn, name, True)
            fsync_dir(self.path)
            self._root_changed(before)

    def usage(self):
        return MailUsage(*self._sql.usage(self._conn))

    def list_folders(self):
        self._sync_folder_list()
        rows = self._sql.folder_rows(self._conn)
        subscribed = set(self._sql.subscriptions(self._conn))
        names = [r.name for r in rows]
        return [FolderInfo(name=name, subscribed=name in subscribed,
                           special_use=SPECIAL_USE.get(name),
                           has_children=any(is_below(other, name) for other in names))
                for name in names]

    def list_subscriptions(self):
        return self._sql.subscriptions(self._conn)

    def subscribe(self, name, subscribed):
        name = normalize_folder_name(name)
        with self._transaction() as conn:
            self._sql.set_subscribed(conn, name, subscribed)

    def create_folder(self, name):
        name = normalize_folder_name(name)
        self._sync_folder_list()
        if self._sql.folder_row(self._conn, name) is not None:
            raise errors.AlreadyExists(f"The folder '{name}' already exists.")
        with self._transaction() as conn:
            before = os.stat(self.path).st_mtime_ns
            for wanted in parent_names(name) + [name]:
                if self._sql.folder_row(conn, wanted) is None:
                    dirname = folder_dirname(wanted)
                    if os.path.exists(self._folder_dir(dirname)):
                        # a stray directory (or a file) where the folder would go
                        os.rename(self._folder_dir(dirname), os.path.join(
                            self.path, f"{DELETED_PREFIX}{secrets.token_hex(6)}"))
                    self._make_folder_dirs(dirname)
                    self._sql.insert_folder(conn, wanted, dirname, self._new_uidvalidity(conn))
            fsync_dir(self.path)
            self._root_changed(before)
        return self._status(self._folder(name))

    def delete_folder(self, name):
        name = normalize_folder_name(name)
        if name in DEFAULT_FOLDERS:
            raise errors.FolderProtected(
                f"The folder '{name}' is needed by the service and cannot be deleted.")
        row = self._folder(name, sync=False)
        if any(is_below(r.name, name) for r in self._sql.folder_rows(self._conn)):
            raise errors.ValidationError(
                f"The folder '{name}' has subfolders; delete or move them first.")
        doomed = os.path.join(self.path, f"{DELETED_PREFIX}{secrets.token_hex(6)}")
        with self._transaction() as conn:
            before = os.stat(self.path).st_mtime_ns
            os.rename(self._folder_dir(row), doomed)
            fsync_dir(self.path)
            self._sql.delete_folder(conn, row.id)
            self._root_changed(before)
        shutil.rmtree(doomed, ignore_errors=True)

    def rename_folder(self, old, new):
        old = normalize_folder_name(old)
        new = normalize_folder_name(new)
        if old == INBOX:
            return self._rename_inbox(new)
        if old in DEFAULT_FOLDERS:
            raise errors.FolderProtected(
                f"The folder '{old}' is needed by the service and cannot be renamed.")
        row = self._folder(old, sync=False)
        if new == old or is_below(new, old):
            raise errors.ValidationError(f"A folder cannot be moved into itself ('{new}').")
        rows = self._sql.folder_rows(self._conn)
        if any(r.name == new for r in rows):
            raise errors.AlreadyExists(f"The folder '{new}' already exists.")
        moving = [row] + [r for r in rows if is_below(r.name, old)]
        subscribed = set(self._sql.subscriptions(self._conn))
        with self._transaction() as conn:
            before = os.stat(self.path).st_mtime_ns
            for parent in parent_names(new):
                if self._sql.folder_row(conn, parent) is None:
                    dirname = folder_dirname(parent)
                    self._make_folder_dirs(dirname)
                    self._sql.insert_folder(conn, parent, dirname, self._new_uidvalidity(conn))
            for r in moving:
                target = new + r.name[len(old):]
                dirname = folder_dirname(target)
                if os.path.exists(self._folder_dir(dirname)):
                    raise errors.AlreadyExists(f"The folder '{target}' already exists on disk.")
                os.rename(self._folder_dir(r), self._folder_dir(dirname))
                self._sql.rename_folder(conn, r.id, target, dirname)
                if r.name in subscribed:
                    self._sql.set_subscribed(conn, r.name, False)
                    self._sql.set_subscribed(conn, target, True)
            fsync_dir(self.path)
            self._root_changed(before)

    def _rename_inbox(self, new):
        """RFC 3501 §6.3.5: RENAME INBOX moves its messages to a new folder
        and leaves INBOX empty (its subfolders stay where they are)."""
        if new == INBOX:
            raise errors.AlreadyExists("The folder 'INBOX' already exists.")
        self.create_folder(new)
        inbox = self._folder(INBOX)
        target = self._folder(new)
        rows = self._sql.message_rows(self._conn, inbox.id)
        if rows:
            self._transfer(inbox, rows, target, keep_names=True)

    # --- folder contents ---

    def _status(self, row, infos=None):
        if infos is None:
            messages, recent, unseen, size, deleted = self._sql.folder_counts(self._conn,
                                                                              row.id)
        else:
            # C-level passes: a 100,000-message folder is counted in milliseconds
            messages = len(infos)
            recent = sum(map(_RECENT, infos))
            size = sum(map(_SIZE, infos))
            by_flags = collections.Counter(map(_FLAGS, infos))
            unseen = sum(n for flags, n in by_flags.items() if "\\Seen" not in flags)
            deleted = sum(n for flags, n in by_flags.items() if "\\Deleted" in flags)
        return FolderStatus(name=row.name, uidvalidity=row.uidvalidity, uidnext=row.uidnext,
                            highestmodseq=row.highestmodseq, messages=messages, recent=recent,
                            unseen=unseen, size=size, deleted=deleted)

    def folder_status(self, name):
        return self._status(self._folder(name))

    def open_folder(self, name):
        row = self._folder(name, sync=False)
        raw_rows = []
        row = self._sync_folder(row, keep_rows=raw_rows)
        if raw_rows or row.uidnext == 1:
            infos = index.infos_from_raw(raw_rows)
        else:
            infos = self._sql.message_infos(self._conn, row.id)
        return FolderSnapshot(status=self._status(row, infos), messages=tuple(infos))

    def changes_since(self, name, modseq):
        row = self._folder(name)
        changed, vanished = self._sql.changed_since(self._conn, row.id, modseq)
        return FolderChanges(uidvalidity=row.uidvalidity, uidnext=row.uidnext,
                             highestmodseq=row.highestmodseq, changed=tuple(changed),
                             vanished=tuple(vanished),
                             vanished_floor=self._sql.vanished_floor(self._conn, row.id))

    def saved_before(self, name, before):
        row = self._folder(name)
        return tuple(self._sql.saved_before(self._conn, row.id, before))

    def message_path(self, name, uid):
        row = self._folder(name, sync=False)
        found = self._sql.message_row(self._conn, row.id, uid)
        if found is None:
            row = self._sync_folder(row)
            found = self._sql.message_row(self._conn, row.id, uid)
        if found is None:
            raise errors.NoSuchMessage(f"There is no message with UID {uid} in '{row.name}'.")
        return os.path.join(self._folder_dir(row), found.subdir, found.filename)

    def open_message(self, name, uid):
        for _attempt in (1, 2):
            path = self.message_path(name, uid)
            try:
                return open(path, "rb")
            except FileNotFoundError:
                # renamed or removed behind our back: look at the disk again
                self._scanned.clear()
        raise errors.NoSuchMessage(f"The message with UID {uid} is gone.")

    def details(self, name, uids, with_structure):
        """-> {uid: mime.MessageSummary} of the existing ``uids``, parsing
        and caching the ones not yet summarized."""
        row = self._folder(name, sync=False)
        rows = {r.uid: r for r in self._sql.message_rows(self._conn, row.id, uids)}
        cached = self._sql.cached_mime(self._conn, row.id, rows, with_structure)
        missing = [uid for uid in rows if uid not in cached]
        if missing:
            fresh = {}
            for uid in missing:
                r = rows[uid]
                try:
                    with open(os.path.join(self._folder_dir(row), r.subdir, r.filename),
                              "rb") as f:
                        fresh[uid] = mime.summarize(f)
                except FileNotFoundError:
                    continue
            with self._transaction() as conn:
                for uid, summary in fresh.items():
                    self._sql.store_mime(conn, row.id, uid, *summary.to_cache())
            for uid, summary in fresh.items():
                fields, structure = summary.to_cache()
                cached[uid] = (fields, structure if with_structure else None)
        return {uid: mime.MessageSummary.from_cache(*cached[uid]) for uid in sorted(cached)}

    def open_messages(self, name, uids):
        """-> [(uid, open binary file)] of the existing ``uids`` (for
        read_messages: the files are read after the lock is released)."""
        row = self._folder(name, sync=False)
        base = self._folder_dir(row)
        opened = []
        try:
            for r in self._sql.message_rows(self._conn, row.id, uids):
                try:
                    opened.append((r.uid, open(os.path.join(base, r.subdir, r.filename), "rb")))
                except FileNotFoundError:
                    self._scanned.discard((row.id, row.uidvalidity))
        except BaseException:
            for _, f in opened:
                f.close()
            raise
        return opened

    # --- adding ---

    def stage(self, source, prefix, summarize=True):
        """Write a message to ``tmp/`` with CRLF line endings and fsync it.
        Runs outside the mailbox lock (the file is private until published).

        A source *path* with no prefix whose line endings are already CRLF
        (an IMAP APPEND literal or a webmail upload spooled on this file
        system) is hard-linked instead of copied: 50 MiB are not written twice.
        """
        if not os.path.isdir(self.path):
            raise errors.NoSuchMailbox()
        os.makedirs(os.path.join(self.path, "tmp"), mode=DIR_MODE, exist_ok=True)
        tmp = os.path.join(self.path, "tmp", self._names.make())
        try:
            if isinstance(source, (str, bytes, os.PathLike)):
                if not prefix and self._link_clean(source, tmp):
                    size = os.stat(tmp).st_size
                else:
                    with open(source, "rb") as opened:
                        size = self._write_crlf(opened, prefix, tmp)
            else:
                size = self._write_crlf(source, prefix, tmp)
            summary = None
            if summarize:
                with open(tmp, "rb") as f:
                    summary = mime.summarize(f)
            return _Staged(path=tmp, size=size, summary=summary)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    @staticmethod
    def _link_clean(source, tmp):
        """Hard-link ``source`` to ``tmp`` if it needs no CRLF repair and is on
        this file system; fsync it. -> done?"""
        if _needs_crlf(source):
            return False
        try:
            os.link(source, tmp)
        except OSError:
            return False
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _write_crlf(source, prefix, tmp):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with open(fd, "wb") as out:
            writer = CRLFWriter(out)
            if prefix:
                writer.write(prefix)
            for chunk in iter(lambda: source.read(COPY_CHUNK), b""):
                writer.write(chunk)
            writer.close()
            out.flush()
            os.fsync(out.fileno())
            return writer.size

    def commit_staged(self, staged, name, flags, internal_date, quota_bytes):
        """Publish a staged message into a folder and index it (under the lock)."""
        try:
            row = self._folder(name, sync=False)
            flags = check_flags(flags)
            if quota_bytes is not None:
                used, _ = self._sql.usage(self._conn)
                if used + staged.size > quota_bytes:
                    raise errors.QuotaExceeded(
                        f"The mailbox is full ({used} of {quota_bytes} bytes used); "
                        "delete some mail and try again.")
            now = self._clock.seconds()
            internal_date = now if internal_date is None else internal_date
            key = f"{os.path.basename(staged.path)},S={staged.size}"
            subdir = "cur" if flags else "new"
            filename = filename_for(key, flags) if flags else key
            base = self._folder_dir(row)
            target = os.path.join(base, subdir, filename)
            os.utime(staged.path, (internal_date, internal_date))
        except BaseException:
            _unlink_quietly(staged.path)
            raise
        published = False
        try:
            with self._transaction() as conn:
                with self._changing(row, (subdir,)):
                    publish(staged.path, target)
                    published = True
                    fsync_dir(os.path.join(base, subdir))
                uid = self._sql.take_uids(conn, row.id, 1)
                modseq = self._sql.next_modseq(conn, row.id)
                sysflags, keywords = index.encode_flags(flags)
                message = index.MessageRow(
                    uid=uid, filename=filename, subdir=subdir, sysflags=sysflags,
                    keywords=keywords, size=staged.size, internal_date=internal_date,
                    saved_at=now, modseq=modseq, recent=1)
                self._sql.insert_message(conn, row.id, message)
                if staged.summary is not None:
                    self._sql.store_mime(conn, row.id, uid, *staged.summary.to_cache())
        except BaseException:
            # not committed: the message must not appear later either
            _unlink_quietly(target if published else staged.path)
            raise
        row = self._sql.folder_row_by_id(self._conn, row.id)
        return StoredMessage(folder=row.name, uidvalidity=row.uidvalidity,
                             info=index.row_info(message))

    # --- flags, expunge, copy, move ---

    def set_flags(self, name, uids, flags, mode, unchanged_since):
        flags = check_flags(flags)
        if mode not in (FLAGS_ADD, FLAGS_REMOVE, FLAGS_REPLACE):
            raise ValueError(f"unknown flag mode {mode!r}")
        row = self._folder(name, sync=False)
        rows = self._sql.message_rows(self._conn, row.id, uids)
        base = self._folder_dir(row)
        changed = []
        modified = []
        with self._transaction() as conn:
            modseq = None
            with self._changing(row):
                for r in rows:
                    if unchanged_since is not None and r.modseq > unchanged_since:
                        modified.append(r.uid)
                        continue
                    old = index.flags_of(r.sysflags, r.keywords)
                    if mode == FLAGS_ADD:
                        new = old | flags
                    elif mode == FLAGS_REMOVE:
                        new = old - flags
                    else:
                        new = flags
                    if new == old:
                        continue
                    filename = filename_for(r.filename, new)
                    try:
                        if (r.subdir, r.filename) != ("cur", filename):
                            os.rename(os.path.join(base, r.subdir, r.filename),
                                      os.path.join(base, "cur", filename))
                    except FileNotFoundError:
                        self._scanned.discard((row.id, row.uidvalidity))
                        continue
                    if modseq is None:
                        modseq = self._sql.next_modseq(conn, row.id)
                    sysflags, keywords = index.encode_flags(new)
                    self._sql.update_message_file(conn, row.id, r.uid, filename, "cur", sysflags,
                                              keywords, modseq=modseq)
                    changed.append(attrs.evolve(r, filename=filename, subdir="cur",
                                                sysflags=sysflags, keywords=keywords,
                                                modseq=modseq))
            if changed:
                fsync_dir(os.path.join(base, "cur"))
        row = self._sql.folder_row_by_id(self._conn, row.id)
        return FlagChanges(changed=tuple(index.row_info(r) for r in changed),
                           modified=tuple(modified), highestmodseq=row.highestmodseq)

    def claim_recent(self, name, uids):
        """Clear ``\\Recent`` (moving files from new/ to cur/). -> claimed UIDs."""
        row = self._folder(name, sync=False)
        rows = self._sql.recent_rows(self._conn, row.id)
        if uids is not None:
            wanted = set(uids)
            rows = [r for r in rows if r.uid in wanted]
        base = self._folder_dir(row)
        claimed = []
        with self._transaction() as conn:
            with self._changing(row):
                for r in rows:
                    if r.subdir == "new":
                        filename = filename_for(r.filename,
                                                index.flags_of(r.sysflags, r.keywords))
                        try:
                            os.rename(os.path.join(base, "new", r.filename),
                                      os.path.join(base, "cur", filename))
                        except FileNotFoundError:
                            self._scanned.discard((row.id, row.uidvalidity))
                            continue
                        self._sql.update_message_file(conn, row.id, r.uid, filename, "cur",
                                                  r.sysflags, r.keywords, recent=False)
                    claimed.append(r.uid)
                self._sql.clear_recent(conn, row.id, claimed)
        return tuple(claimed)

    def expunge(self, name, uids):
        row = self._folder(name, sync=False)
        rows = self._sql.message_rows(self._conn, row.id, uids)
        base = self._folder_dir(row)
        if not rows:
            return Expunged(uids=(), highestmodseq=row.highestmodseq)
        with self._transaction() as conn:
            with self._changing(row):
                for r in rows:
                    # the file goes first: a crash before the commit must not
                    # bring the message back as an unknown file
                    _unlink_quietly(os.path.join(base, r.subdir, r.filename))
            modseq = self._sql.next_modseq(conn, row.id)
            self._sql.delete_messages(conn, row.id, rows, modseq)
        return Expunged(uids=tuple(r.uid for r in rows), highestmodseq=modseq)

    def copy(self, name, uids, dest_name, quota_bytes):
        src = self._folder(name, sync=False)
        dst = self._folder(dest_name, sync=False)
        rows = self._sql.message_rows(self._conn, src.id, uids)
        if quota_bytes is not None and rows:
            used, _ = self._sql.usage(self._conn)
            needed = sum(r.size for r in rows)
            if used + needed > quota_bytes:
                raise errors.QuotaExceeded(
                    f"Copying needs {needed} bytes and the mailbox is full ({used} of "
                    f"{quota_bytes} bytes used); delete some mail and try again.")
        return self._transfer(src, rows, dst, link=True)

    def move(self, name, uids, dest_name):
        src = self._folder(name, sync=False)
        dst = self._folder(dest_name, sync=False)
        rows = self._sql.message_rows(self._conn, src.id, uids)
        return self._transfer(src, rows, dst)

    def _transfer(self, src, rows, dst, link=False, keep_names=False):
        """Copy (``link``) or move message rows from ``src`` to ``dst``."""
        src_base, dst_base = self._folder_dir(src), self._folder_dir(dst)
        now = self._clock.seconds()
        placed = []   # (source row, new filename, new subdir)
        created = []  # paths to undo if the index cannot be committed
        try:
            with self._transaction() as conn:
                with self._changing(src), self._changing(dst):
                    for r in rows:
                        old_path = os.path.join(src_base, r.subdir, r.filename)
                        if keep_names:
                            filename, subdir = r.filename, r.subdir
                        else:
                            flags = index.flags_of(r.sysflags, r.keywords)
                            key = f"{self._names.make()},S={r.size}"
                            filename, subdir = filename_for(key, flags), "cur"
                        new_path = os.path.join(dst_base, subdir, filename)
                        try:
                            if link:
                                self._link_or_copy(old_path, new_path, dst_base)
                            else:
                                os.rename(old_path, new_path)
                        except FileNotFoundError:
                            self._scanned.discard((src.id, src.uidvalidity))
                            continue
                        created.append((new_path, old_path))
                        placed.append((r, filename, subdir))
                    for sub in {s for _, _, s in placed}:
                        fsync_dir(os.path.join(dst_base, sub))
                    if not link and placed:
                        for sub in {r.subdir for r, _, _ in placed}:
                            fsync_dir(os.path.join(src_base, sub))
                if not placed:
                    src_row = self._sql.folder_row_by_id(conn, src.id)
                    return CopyResult(uidvalidity=dst.uidvalidity, uid_map=(), added=(),
                                      source_highestmodseq=None if link
                                      else src_row.highestmodseq)
                first = self._sql.take_uids(conn, dst.id, len(placed))
                modseq = self._sql.next_modseq(conn, dst.id)
                added, uid_map = [], []
                for i, (r, filename, subdir) in enumerate(placed):
                    new = attrs.evolve(r, uid=first + i, filename=filename, subdir=subdir,
                                       saved_at=now, modseq=modseq, recent=1)
                    self._sql.insert_message(conn, dst.id, new)
                    self._sql.copy_mime(conn, src.id, r.uid, dst.id, new.uid)
                    added.append(index.row_info(new))
                    uid_map.append((r.uid, new.uid))
                source_modseq = None
                if not link:
                    source_modseq = self._sql.next_modseq(conn, src.id)
                    self._sql.delete_messages(conn, src.id, [r for r, _, _ in placed],
                                          source_modseq)
        except BaseException:
            for new_path, old_path in created:
                try:
                    if link:
                        os.unlink(new_path)
                    else:
                        os.rename(new_path, old_path)
                except OSError:
                    pass
            raise
        return CopyResult(uidvalidity=dst.uidvalidity, uid_map=tuple(uid_map),
                          added=tuple(added), source_highestmodseq=source_modseq)

    def _link_or_copy(self, src, dst, dst_base):
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            tmp = os.path.join(dst_base, "tmp", self._names.make())
            try:
                _copy_file(src, tmp)
                shutil.copystat(src, tmp)
                publish(tmp, dst)
            except BaseException:
                _unlink_quietly(tmp)
                raise

    # --- housekeeping ---

    def clean_tmp(self, now):
        """Remove stale files from every folder's ``tmp/``. -> count removed."""
        removed = 0
        dirs = [""] + [e for e in os.listdir(self.path) if e.startswith(".")]
        for dirname in dirs:
            tmp = os.path.join(self._folder_dir(dirname), "tmp")
            try:
                entries = list(os.scandir(tmp))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and is_stale_tmp_name(
                        entry.name, st.st_mtime, now, self._names.host):
                    _unlink_quietly(entry.path)
                    removed += 1
        for entry in os.listdir(self.path):
            if entry.startswith(DELETED_PREFIX):
                shutil.rmtree(os.path.join(self.path, entry), ignore_errors=True)
        return removed


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- the store -------------------------------------------------------------------------


@implementer(IMailStore)
class MaildirStore:
    """IMailStore over Maildir++ directories under ``<data_dir>/mail``.

    ``clock`` (IReactorTime) gives the time for UIDVALIDITY, saved-at and
    tmp clean-up; ``run_in_thread(fn, *args) -> Deferred`` runs the file and
    index work (tap.py passes the reactor's thread pool; tests may pass a
    synchronous runner). Operations on one mailbox are queued and run one
    at a time, in order; different mailboxes proceed in parallel.
    """

    def __init__(self, data_dir, clock, run_in_thread, max_open_indexes=256,
                 index_backend=None):
        self.root = os.path.join(data_dir, "mail")
        self._clock = clock
        self._run = run_in_thread
        #: (mailbox path, mailbox id) -> the mailbox's index handle; None:
        #: a SQLite file in each mailbox (folder_index.SQLiteFolderIndex)
        self._index_backend = index_backend or (
            lambda path, mailbox_id: index.SQLiteFolderIndex(path))
        self._names = _NameMaker(clock)
        self._mailboxes = {}
        self._mailboxes_lock = threading.Lock()
        self._max_open = max_open_indexes
        self._queues = {}
        os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)

    def mailbox_path(self, mailbox_id):
        return os.path.join(self.root, str(int(mailbox_id)))

    # --- plumbing ---

    def _mailbox(self, mailbox_id):
        mailbox_id = int(mailbox_id)
        with self._mailboxes_lock:
            found = self._mailboxes.pop(mailbox_id, None)
            if found is None:
                path = self.mailbox_path(mailbox_id)
                found = MaildirMailbox(path, self._clock, self._names,
                                       self._index_backend(path, mailbox_id))
            self._mailboxes[mailbox_id] = found  # most recently used last
            while len(self._mailboxes) > self._max_open:
                oldest_id = next(iter(self._mailboxes))
                oldest = self._mailboxes.pop(oldest_id)
                if oldest._thread_lock.acquire(blocking=False):
                    try:
                        oldest.close()
                    finally:
                        oldest._thread_lock.release()
                else:
                    self._mailboxes[oldest_id] = oldest
                    break
            return found

    def _locked_call(self, mailbox_id, method, args):
        mailbox = self._mailbox(mailbox_id)
        with mailbox.locked():
            return getattr(mailbox, method)(*args)

    def _serial(self, mailbox_id, fn, *args):
        """Run ``fn(*args)`` on a worker thread after the work already queued
        for this mailbox: one operation per mailbox at a time, in order."""
        mailbox_id = int(mailbox_id)
        lock = self._queues.get(mailbox_id)
        if lock is None:
            lock = self._queues[mailbox_id] = defer.DeferredLock()

        def done(result):
            if not lock.locked and not lock.waiting:
                self._queues.pop(mailbox_id, None)
            return result

        return lock.run(self._run, fn, *args).addBoth(done)

    def _queued(self, mailbox_id, method, *args):
        """Run ``MaildirMailbox.method(*args)`` under the mailbox lock, queued."""
        return self._serial(mailbox_id, self._locked_call, mailbox_id, method, args)

    # --- mailboxes ---

    def _create(self, mailbox_id):
        path = self.mailbox_path(mailbox_id)
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)
        fsync_dir(self.root)
        self._locked_call(mailbox_id, "create_defaults", ())

    def create_mailbox(self, mailbox_id):
        return self._serial(mailbox_id, self._create, mailbox_id)

    def _remove(self, mailbox_id):
        path = self.mailbox_path(mailbox_id)
        mailbox = self._mailbox(mailbox_id)
        doomed = None
        with mailbox._thread_lock:
            mailbox.close()
            try:
                # wait for another process (ktmail-admin, the daemon, another node)
                mailbox.index.lock()
            except FileNotFoundError:
                return
            try:
                if os.path.isdir(path):
                    doomed = os.path.join(self.root, f".removed-{int(mailbox_id)}-"
                                          f"{secrets.token_hex(8)}")
                    os.rename(path, doomed)
                    fsync_dir(self.root)
                mailbox.index.forget()
            finally:
                mailbox.index.unlock()
                mailbox.close()
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)
        with self._mailboxes_lock:
            self._mailboxes.pop(int(mailbox_id), None)

    def remove_mailbox(self, mailbox_id):
        return self._serial(mailbox_id, self._remove, mailbox_id)

    def usage(self, mailbox_id):
        return self._queued(mailbox_id, "usage").addCallback(lambda u: u.bytes)

    def mail_usage(self, mailbox_id):
        return self._queued(mailbox_id, "usage")

    # --- folders ---

    def list_folders(self, mailbox_id):
        return self._queued(mailbox_id, "list_folders")

    def create_folder(self, mailbox_id, name):
        return self._queued(mailbox_id, "create_folder", name)

    def delete_folder(self, mailbox_id, name):
        return self._queued(mailbox_id, "delete_folder", name)

    def rename_folder(self, mailbox_id, old, new):
        return self._queued(mailbox_id, "rename_folder", old, new)

    def subscribe(self, mailbox_id, name, subscribed=True):
        return self._queued(mailbox_id, "subscribe", name, subscribed)

    def list_subscriptions(self, mailbox_id):
        return self._queued(mailbox_id, "list_subscriptions")

    def folder_status(self, mailbox_id, name):
        return self._queued(mailbox_id, "folder_status", name)

    def open_folder(self, mailbox_id, name):
        return self._queued(mailbox_id, "open_folder", name)

    def changes_since(self, mailbox_id, name, modseq):
        return self._queued(mailbox_id, "changes_since", name, modseq)

    def messages_saved_before(self, mailbox_id, name, before):
        return self._queued(mailbox_id, "saved_before", name, before)

    # --- messages ---

    def add_message(self, mailbox_id, name, source, prefix=b"", flags=(), internal_date=None,
                    quota_bytes=None):
        mailbox = self._mailbox(mailbox_id)
        d = self._run(mailbox.stage, source, prefix)
        d.addCallback(lambda staged: self._queued(
            mailbox_id, "commit_staged", staged, name, flags, internal_date, quota_bytes))
        return d

    def set_flags(self, mailbox_id, name, uids, flags, mode, unchanged_since=None):
        return self._queued(mailbox_id, "set_flags", name, tuple(uids), flags, mode,
                            unchanged_since)

    def claim_recent(self, mailbox_id, name, uids=None):
        return self._queued(mailbox_id, "claim_recent", name,
                            None if uids is None else tuple(uids))

    def expunge(self, mailbox_id, name, uids):
        return self._queued(mailbox_id, "expunge", name, tuple(uids))

    def copy_messages(self, mailbox_id, name, uids, dest_name, quota_bytes=None):
        return self._queued(mailbox_id, "copy", name, tuple(uids), dest_name, quota_bytes)

    def move_messages(self, mailbox_id, name, uids, dest_name):
        return self._queued(mailbox_id, "move", name, tuple(uids), dest_name)

    def open_message(self, mailbox_id, name, uid):
        return self._queued(mailbox_id, "open_message", name, uid)

    def message_path(self, mailbox_id, name, uid):
        return self._queued(mailbox_id, "message_path", name, uid)

    def message_details(self, mailbox_id, name, uids, with_structure=True):
        return self._queued(mailbox_id, "details", name, tuple(uids), with_structure)

    #: files opened at once by read_messages
    READ_BATCH = 128

    def read_messages(self, mailbox_id, name, uids, reader):
        uids = sorted(set(uids))
        results = {}

        def read_all(opened):
            try:
                for uid, f in opened:
                    results[uid] = reader(uid, f)
            finally:
                for _, f in opened:
                    f.close()

        def batch(start):
            if start >= len(uids):
                return defer.succeed(results)
            d = self._queued(mailbox_id, "open_messages", name,
                             tuple(uids[start:start + self.READ_BATCH]))
            d.addCallback(lambda opened: self._run(read_all, opened))
            d.addCallback(lambda _: batch(start + self.READ_BATCH))
            return d
        return batch(0)

    # --- housekeeping ---

    def _clean_all(self, now):
        removed = 0
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if entry.startswith(".removed-"):
                shutil.rmtree(path, ignore_errors=True)
            elif entry.isdigit() and os.path.isdir(path):
                try:
                    removed += self._mailbox(int(entry)).clean_tmp(now)
                except OSError as e:
                    log.warn("cleaning tmp/ of {path} failed: {error}", path=path,
                             error=str(e))
        return removed

    def clean_stale_files(self):
        """Remove stale ``tmp/`` files of every mailbox (older than 36 hours,
        or left by a crashed earlier process of this host) and leftovers of
        interrupted removals. -> Deferred[int] files removed. Run at start."""
        return self._run(self._clean_all, self._clock.seconds())
