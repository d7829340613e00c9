"""The per-mailbox index: all of its SQL, and nothing else.

One SQLite file per mailbox (``<mailbox>/ktmail-index.sqlite``, WAL mode)
holds what IMAP, POP3 and webmail need without opening message files:

- ``folders``: IMAP name, Maildir++ directory, UIDVALIDITY, UIDNEXT,
  HIGHESTMODSEQ and the mtimes of ``new/`` and ``cur/`` when the index was
  last known to match them (NULL = rescan at the next look);
- ``messages``: one lean row per message (UID, file name, flags, size,
  dates, modseq, ``\\Recent``) so that a 100,000-message folder loads fast;
- ``message_mime``: the cached MIME summary of each message (decoded header
  fields for SEARCH/SORT and the JSON body structure), filled on delivery
  or lazily on first use;
- ``vanished``: tombstones of expunged UIDs with their modseq (QRESYNC),
  at most about ``TOMBSTONES_KEPT`` per folder: older ones are pruned and
  the modseq up to which they were is kept in ``meta``
  (``vanished_floor:<folder id>``), so that a caller asking for changes
  since an older modseq knows the answer would be incomplete;
- ``subscriptions`` and ``meta`` (quota usage in bytes and messages, the
  last UIDVALIDITY handed out, the mailbox root's mtime).

Invariants: the usage counters change in the same transaction as every
insert or delete of a message row, so they are exact; UIDNEXT and
HIGHESTMODSEQ only grow; a UID is never handed out twice in a folder with
the same UIDVALIDITY. Functions here never touch message files and never
commit: the caller (store/maildir.py) owns the transaction.

``SQLiteFolderIndex`` is how the Maildir store holds one mailbox's index:
the file, its connection and the ``flock`` that serialises processes.
store/folder_index_pg.py offers the same functions and handle over
PostgreSQL, for nodes that share the Maildirs on a network file system.
"""

import fcntl
import json
import os
import secrets
import sqlite3
import sys
from contextlib import contextmanager

import attrs
from twisted.logger import Logger

from ktmail.model import MessageInfo

log = Logger()

INDEX_FILENAME = "ktmail-index.sqlite"
LOCK_FILENAME = "ktmail-index.lock"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    dirname TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 1,
    new_mtime_ns INTEGER,
    cur_mtime_ns INTEGER
);
CREATE TABLE messages (
    folder_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    filename TEXT NOT NULL,
    subdir TEXT NOT NULL,
    sysflags INTEGER NOT NULL DEFAULT 0,
    keywords TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    internal_date REAL NOT NULL,
    saved_at REAL NOT NULL,
    modseq INTEGER NOT NULL,
    recent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_modseq ON messages (folder_id, modseq);
CREATE INDEX messages_subdir ON messages (folder_id, subdir);
CREATE TABLE message_mime (
    folder_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hdr_from TEXT, hdr_to TEXT, hdr_cc TEXT, hdr_bcc TEXT, subject TEXT,
    sent_date REAL, message_id TEXT, in_reply_to TEXT, refs TEXT,
    structure TEXT NOT NULL,
    PRIMARY KEY (folder_id, uid)
);
CREATE TABLE vanished (
    folder_id INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE TABLE subscriptions (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
"""

#: tombstones kept per folder (QRESYNC); pruning starts a quarter above it
TOMBSTONES_KEPT = 20_000

# sysflags bits of the IMAP system flags
FLAG_BITS = {"\\Answered": 1, "\\Deleted": 2, "\\Draft": 4, "\\Flagged": 8, "\\Seen": 16}
SEEN_BIT = FLAG_BITS["\\Seen"]
DELETED_BIT = FLAG_BITS["\\Deleted"]


def connect(path):
    """Open (creating if needed) the index at ``path``; -> (conn, created).

    The schema is created inside the same exclusive transaction that checks
    for it, so two processes opening a new index at once cannot both create it.
    """
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private, whatever the umask
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA journal_mode=WAL")
        # every commit is on disk before the caller answers a client: a UID
        # reported to a client is never handed out again after a power loss
        conn.execute("PRAGMA synchronous=FULL")
        # reads of a big folder come straight from the page cache, without copies
        conn.execute("PRAGMA mmap_size=268435456")
        conn.execute("PRAGMA cache_size=-16384")
        created = False
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                created = True
            elif version != SCHEMA_VERSION:
                raise IndexUnusable(f"index schema {version}, expected {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn, created


class IndexUnusable(Exception):
    """The index file exists but cannot be used (corrupt, unknown schema):
    the store rebuilds it from the Maildir."""


# what SQLiteFolderIndex.open() (and its PostgreSQL twin) found
SAME = "same"        # the connection open before is still the index
OPENED = "opened"    # (re)opened: whatever was cached about it is stale
CREATED = "created"  # a new, empty index: fill it from the Maildir


class SQLiteFolderIndex:
    """The index of one mailbox: ``<mailbox>/ktmail-index.sqlite``, guarded
    by ``flock`` on ``<mailbox>/ktmail-index.lock`` so that the daemon and
    ``ktmail-admin`` never interleave.

    The handle store/maildir.py holds per mailbox (its PostgreSQL twin is
    folder_index_pg.PostgresFolderIndex): ``lock()``, then ``open()``, then
    the ``functions`` of this module on ``conn``, writes inside
    ``transaction()``, then ``unlock()``; ``close()`` drops the connection;
    ``forget()`` drops the index of a removed mailbox. Not thread-safe:
    the Maildir store calls it under its per-mailbox thread lock.
    """

    #: the index functions (this module) the Maildir store calls with ``conn``
    functions = sys.modules[__name__]

    def __init__(self, mailbox_path):
        self.path = mailbox_path
        self.conn = None
        self._ino = None
        self._lock_fd = None

    @property
    def index_path(self):
        return os.path.join(self.path, INDEX_FILENAME)

    def lock(self):
        """Wait for the mailbox's lock. FileNotFoundError if the mailbox
        directory is gone."""
        fd = os.open(os.path.join(self.path, LOCK_FILENAME), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def open(self):
        """Under the lock: open the index, or notice it was replaced or lost.
        -> SAME, OPENED or CREATED."""
        try:
            ino = os.stat(self.index_path).st_ino
        except FileNotFoundError:
            ino = None
        if self.conn is not None and ino == self._ino:
            return SAME
        self.close()
        if ino is None:
            log.warn("mail index of {path} is missing: rebuilding it from the Maildir",
                     path=self.path)
        try:
            conn, created = connect(self.index_path)
        except (sqlite3.DatabaseError, IndexUnusable) as e:
            log.warn("mail index of {path} is unusable ({error}): rebuilding it",
                     path=self.path, error=str(e))
            self._set_aside()
            conn, created = connect(self.index_path)
        self.conn = conn
        self._ino = os.stat(self.index_path).st_ino
        return CREATED if created else OPENED

    def _set_aside(self):
        stamp = secrets.token_hex(4)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.rename(self.index_path + suffix, f"{self.index_path}.unusable-{stamp}{suffix}")
            except FileNotFoundError:
                pass

    @contextmanager
    def transaction(self):
        """One write transaction (``BEGIN IMMEDIATE``): committed at the end,
        rolled back on an exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self._ino = None

    def forget(self):
        """The mailbox is being removed: the index file goes with its directory."""


# --- meta ----------------------------------------------------------------------------


def get_meta(conn, name, default=None):
    row = conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
    return default if row is None else row[0]


def set_meta(conn, name, value):
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


def usage(conn):
    """-> (bytes, messages) of the whole mailbox."""
    return (get_meta(conn, "usage_bytes", 0), get_meta(conn, "usage_messages", 0))


def _adjust_usage(conn, delta_bytes, delta_messages):
    if delta_bytes or delta_messages:
        used_bytes, used_messages = usage(conn)
        set_meta(conn, "usage_bytes", used_bytes + delta_bytes)
        set_meta(conn, "usage_messages", used_messages + delta_messages)


def recount_usage(conn):
    """Recompute the usage counters from the message rows (index rebuild)."""
    used_bytes, used_messages = conn.execute(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages").fetchone()
    set_meta(conn, "usage_bytes", used_bytes)
    set_meta(conn, "usage_messages", used_messages)


# --- folders -------------------------------------------------------------------------


@attrs.frozen
class FolderRow:
    id: int
    name: str
    dirname: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    new_mtime_ns: int | None
    cur_mtime_ns: int | None


_FOLDER_COLUMNS = ("id, name, dirname, uidvalidity, uidnext, highestmodseq, new_mtime_ns, "
                   "cur_mtime_ns")


def folder_rows(conn):
    """-> [FolderRow] ordered by name."""
    return [FolderRow(*r) for r in
            conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM folders ORDER BY name")]


def folder_row(conn, name):
    row = conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM folders WHERE name=?",
                       (name,)).fetchone()
    return None if row is None else FolderRow(*row)


def folder_row_by_id(conn, folder_id):
    row = conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM folders WHERE id=?",
                       (folder_id,)).fetchone()
    return None if row is None else FolderRow(*row)


def insert_folder(conn, name, dirname, uidvalidity):
    cur = conn.execute("INSERT INTO folders (name, dirname, uidvalidity) VALUES (?, ?, ?)",
                       (name, dirname, uidvalidity))
    return folder_row_by_id(conn, cur.lastrowid)


def rename_folder(conn, folder_id, name, dirname):
    conn.execute("UPDATE folders SET name=?, dirname=? WHERE id=?", (name, dirname, folder_id))


def delete_folder(conn, folder_id):
    """Drop a folder with its messages, tombstones and cache; usage follows."""
    size, count = conn.execute(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM messages WHERE folder_id=?",
        (folder_id,)).fetchone()
    for table in ("messages", "message_mime", "vanished"):
        conn.execute(f"DELETE FROM {table} WHERE folder_id=?", (folder_id,))
    conn.execute("DELETE FROM folders WHERE id=?", (folder_id,))
    conn.execute("DELETE FROM meta WHERE name=?", (f"vanished_floor:{folder_id}",))
    _adjust_usage(conn, -size, -count)


def set_dir_mtimes(conn, folder_id, new_mtime_ns, cur_mtime_ns):
    conn.execute("UPDATE folders SET new_mtime_ns=?, cur_mtime_ns=? WHERE id=?",
                 (new_mtime_ns, cur_mtime_ns, folder_id))


def next_modseq(conn, folder_id):
    """Raise the folder's HIGHESTMODSEQ by one and return the new value."""
    conn.execute("UPDATE folders SET highestmodseq=highestmodseq+1 WHERE id=?", (folder_id,))
    return conn.execute("SELECT highestmodseq FROM folders WHERE id=?",
                        (folder_id,)).fetchone()[0]


def take_uids(conn, folder_id, count):
    """Reserve ``count`` consecutive UIDs; -> the first one."""
    first = conn.execute("SELECT uidnext FROM folders WHERE id=?", (folder_id,)).fetchone()[0]
    conn.execute("UPDATE folders SET uidnext=? WHERE id=?", (first + count, folder_id))
    return first


def folder_counts(conn, folder_id):
    """-> (messages, recent, unseen, bytes, deleted) of one folder."""
    return conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(recent), 0), "
        f"COALESCE(SUM((sysflags & {SEEN_BIT}) = 0), 0), COALESCE(SUM(size), 0), "
        f"COALESCE(SUM((sysflags & {DELETED_BIT}) != 0), 0) "
        "FROM messages WHERE folder_id=?", (folder_id,)).fetchone()


# --- messages ------------------------------------------------------------------------


@attrs.frozen
class MessageRow:
    """A message row as the Maildir layer needs it (file name and place)."""

    uid: int
    filename: str
    subdir: str
    sysflags: int
    keywords: str
    size: int
    internal_date: float
    saved_at: float
    modseq: int
    recent: int


_MESSAGE_COLUMNS = ("uid, filename, subdir, sysflags, keywords, size, internal_date, "
                    "saved_at, modseq, recent")


class FlagSets:
    """Turns (sysflags, keywords) into shared frozensets and back: a folder of
    100,000 messages has only a handful of distinct flag sets."""

    def __init__(self):
        self._sets = {}

    def flags(self, sysflags, keywords):
        found = self._sets.get((sysflags, keywords))
        if found is None:
            names = [name for name, bit in FLAG_BITS.items() if sysflags & bit]
            names.extend(keywords.split())
            found = self._sets[(sysflags, keywords)] = frozenset(names)
        return found


def encode_flags(flags):
    """frozenset of IMAP flags -> (sysflags, keywords) as stored."""
    sysflags = 0
    keywords = []
    for flag in flags:
        bit = FLAG_BITS.get(flag)
        if bit:
            sysflags |= bit
        else:
            keywords.append(flag)
    return sysflags, " ".join(sorted(keywords))


_FLAG_SETS = FlagSets()


def flags_of(sysflags, keywords):
    """The (shared) frozenset of IMAP flags of a stored row."""
    return _FLAG_SETS.flags(sysflags, keywords)


def row_info(row):
    """MessageRow -> MessageInfo."""
    return info_of(attrs.astuple(row))


def message_key(filename):
    """The Maildir base name: everything before the ``:2,`` info."""
    return filename.split(":", 1)[0]


def info_of(row, flag_sets=_FLAG_SETS):
    """A raw tuple in _MESSAGE_COLUMNS order -> MessageInfo."""
    (uid, filename, _subdir, sysflags, keywords, size, internal_date, saved_at, modseq,
     recent) = row
    return MessageInfo(uid, message_key(filename), flag_sets.flags(sysflags, keywords), size,
                       internal_date, saved_at, modseq, bool(recent))


# the key computed by SQLite: one Python string operation less per row
_INFO_COLUMNS = ("uid, substr(filename, 1, instr(filename || ':', ':') - 1), sysflags, "
                 "keywords, size, internal_date, saved_at, modseq, recent")


def message_infos(conn, folder_id):
    """-> [MessageInfo] of a folder, ascending UID.

    The hot path of loading a folder: one query, and one tuple per row built
    without any per-field Python call (a 100,000-message folder loads in a
    fraction of a second)."""
    flag_sets = {}
    make = tuple.__new__
    out = []
    append = out.append
    for uid, key, sysflags, keywords, size, internal_date, saved_at, modseq, recent in \
            conn.execute(f"SELECT {_INFO_COLUMNS} FROM messages WHERE folder_id=? ORDER BY uid",
                         (folder_id,)):
        flags = flag_sets.get((sysflags, keywords))
        if flags is None:
            flags = flag_sets[(sysflags, keywords)] = _FLAG_SETS.flags(sysflags, keywords)
        append(make(MessageInfo, (uid, key, flags, size, internal_date, saved_at, modseq,
                                  recent == 1)))
    return out


def raw_message_rows(conn, folder_id):
    """-> [tuple in _MESSAGE_COLUMNS order] of a folder, ascending UID (the
    disk check uses the file names; ``infos_from_raw`` turns the same rows
    into MessageInfos when nothing had to change)."""
    return conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? "
                        "ORDER BY uid", (folder_id,)).fetchall()


def infos_from_raw(rows):
    """raw_message_rows() -> [MessageInfo]."""
    flag_sets = {}
    make = tuple.__new__
    out = []
    append = out.append
    for (uid, filename, _subdir, sysflags, keywords, size, internal_date, saved_at, modseq,
         recent) in rows:
        flags = flag_sets.get((sysflags, keywords))
        if flags is None:
            flags = flag_sets[(sysflags, keywords)] = _FLAG_SETS.flags(sysflags, keywords)
        append(make(MessageInfo, (uid, filename.split(":", 1)[0], flags, size, internal_date,
                                  saved_at, modseq, recent == 1)))
    return out


def message_filenames(conn, folder_id, subdir):
    """-> [file name] of the messages of a folder in ``new`` or ``cur``."""
    return [r[0] for r in conn.execute(
        "SELECT filename FROM messages WHERE folder_id=? AND subdir=?", (folder_id, subdir))]


def message_rows_by_filename(conn, folder_id, filenames):
    """-> [MessageRow] whose file name is one of ``filenames``."""
    found = []
    for chunk in _chunks(sorted(set(filenames)), 500):
        marks = ",".join("?" * len(chunk))
        found.extend(MessageRow(*r) for r in conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? "
            f"AND filename IN ({marks})", (folder_id, *chunk)))
    return found


def message_rows(conn, folder_id, uids=None):
    """-> [MessageRow] of a folder (all, or those of ``uids``), ascending UID."""
    if uids is None:
        rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? "
                            "ORDER BY uid", (folder_id,))
        return [MessageRow(*r) for r in rows]
    found = []
    for chunk in _chunks(sorted(set(uids)), 500):
        marks = ",".join("?" * len(chunk))
        found.extend(MessageRow(*r) for r in conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? AND uid IN ({marks}) "
            "ORDER BY uid", (folder_id, *chunk)))
    found.sort(key=lambda r: r.uid)
    return found


def recent_rows(conn, folder_id):
    """-> [MessageRow] still carrying ``\\Recent``, ascending UID."""
    return [MessageRow(*r) for r in conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? AND recent=1 ORDER BY uid",
        (folder_id,))]


def message_row(conn, folder_id, uid):
    row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? AND uid=?",
                       (folder_id, uid)).fetchone()
    return None if row is None else MessageRow(*row)


def insert_message(conn, folder_id, row):
    """Insert a MessageRow (its uid and modseq already reserved); usage follows."""
    conn.execute(f"INSERT INTO messages (folder_id, {_MESSAGE_COLUMNS}) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (folder_id, *attrs.astuple(row)))
    _adjust_usage(conn, row.size, 1)


def update_message_file(conn, folder_id, uid, filename, subdir, sysflags, keywords,
                        modseq=None, recent=None):
    """Record a renamed file (new flags, or moved from new/ to cur/)."""
    sets = ["filename=?", "subdir=?", "sysflags=?", "keywords=?"]
    args = [filename, subdir, sysflags, keywords]
    if modseq is not None:
        sets.append("modseq=?")
        args.append(modseq)
    if recent is not None:
        sets.append("recent=?")
        args.append(int(recent))
    conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE folder_id=? AND uid=?",
                 (*args, folder_id, uid))


def update_flags(conn, folder_id, uid, sysflags, keywords, modseq):
    conn.execute("UPDATE messages SET sysflags=?, keywords=?, modseq=? "
                 "WHERE folder_id=? AND uid=?", (sysflags, keywords, modseq, folder_id, uid))


def clear_recent(conn, folder_id, uids):
    for chunk in _chunks(sorted(uids), 500):
        marks = ",".join("?" * len(chunk))
        conn.execute(f"UPDATE messages SET recent=0 WHERE folder_id=? AND uid IN ({marks})",
                     (folder_id, *chunk))


def delete_messages(conn, folder_id, rows, modseq):
    """Remove message rows, leave tombstones at ``modseq``; usage follows."""
    for row in rows:
        conn.execute("DELETE FROM messages WHERE folder_id=? AND uid=?", (folder_id, row.uid))
        conn.execute("DELETE FROM message_mime WHERE folder_id=? AND uid=?",
                     (folder_id, row.uid))
        conn.execute("INSERT OR REPLACE INTO vanished (folder_id, uid, modseq) VALUES (?, ?, ?)",
                     (folder_id, row.uid, modseq))
    _adjust_usage(conn, -sum(r.size for r in rows), -len(rows))
    if rows:
        _prune_vanished(conn, folder_id)


def _prune_vanished(conn, folder_id):
    """Keep the newest TOMBSTONES_KEPT tombstones once there are a quarter
    more; raise the folder's vanished floor to the newest pruned modseq."""
    keep = TOMBSTONES_KEPT
    count = conn.execute("SELECT COUNT(*) FROM vanished WHERE folder_id=?",
                         (folder_id,)).fetchone()[0]
    if count <= keep + keep // 4:
        return
    cutoff = conn.execute("SELECT modseq FROM vanished WHERE folder_id=? "
                          "ORDER BY modseq DESC LIMIT 1 OFFSET ?", (folder_id, keep)).fetchone()[0]
    conn.execute("DELETE FROM vanished WHERE folder_id=? AND modseq<=?", (folder_id, cutoff))
    name = f"vanished_floor:{folder_id}"
    set_meta(conn, name, max(get_meta(conn, name, 0), cutoff))


def vanished_floor(conn, folder_id):
    """The modseq up to which tombstones of the folder were pruned (0: none)."""
    return get_meta(conn, f"vanished_floor:{folder_id}", 0)


def changed_since(conn, folder_id, modseq):
    """-> ([MessageInfo] with modseq > ``modseq``, [vanished UIDs] likewise)."""
    rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? "
                        "AND modseq>? ORDER BY uid", (folder_id, modseq))
    changed = [info_of(r) for r in rows]
    vanished = [r[0] for r in conn.execute(
        "SELECT uid FROM vanished WHERE folder_id=? AND modseq>? ORDER BY uid",
        (folder_id, modseq))]
    return changed, vanished


def saved_before(conn, folder_id, before):
    """-> [MessageInfo] saved into the folder before ``before``, ascending UID."""
    rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE folder_id=? "
                        "AND saved_at<? ORDER BY uid", (folder_id, before))
    return [info_of(r) for r in rows]


# --- cached MIME summaries -----------------------------------------------------------

MIME_FIELDS = ("hdr_from", "hdr_to", "hdr_cc", "hdr_bcc", "subject", "sent_date",
               "message_id", "in_reply_to", "refs")


def store_mime(conn, folder_id, uid, fields, structure):
    """Cache the decoded header ``fields`` (dict keyed by MIME_FIELDS) and the
    JSON-able ``structure`` of one message."""
    conn.execute(
        f"INSERT OR REPLACE INTO message_mime (folder_id, uid, {', '.join(MIME_FIELDS)}, "
        "structure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (folder_id, uid, *(fields.get(f) for f in MIME_FIELDS),
         json.dumps(structure, separators=(",", ":"))))


def cached_mime(conn, folder_id, uids, with_structure=True):
    """-> {uid: (fields dict, structure or None)} for the cached ones of ``uids``."""
    found = {}
    columns = ", ".join(MIME_FIELDS) + (", structure" if with_structure else "")
    for chunk in _chunks(sorted(set(uids)), 500):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT uid, {columns} FROM message_mime "
                                f"WHERE folder_id=? AND uid IN ({marks})", (folder_id, *chunk)):
            fields = dict(zip(MIME_FIELDS, row[1:1 + len(MIME_FIELDS)], strict=True))
            structure = json.loads(row[-1]) if with_structure else None
            found[row[0]] = (fields, structure)
    return found


def copy_mime(conn, src_folder_id, src_uid, dst_folder_id, dst_uid):
    conn.execute(
        f"INSERT OR REPLACE INTO message_mime (folder_id, uid, {', '.join(MIME_FIELDS)}, "
        f"structure) SELECT ?, ?, {', '.join(MIME_FIELDS)}, structure FROM message_mime "
        "WHERE folder_id=? AND uid=?", (dst_folder_id, dst_uid, src_folder_id, src_uid))


# --- subscriptions -------------------------------------------------------------------


def subscriptions(conn):
    return [r[0] for r in conn.execute("SELECT name FROM subscriptions ORDER BY name")]


def set_subscribed(conn, name, subscribed):
    if subscribed:
        conn.execute("INSERT OR IGNORE INTO subscriptions (name) VALUES (?)", (name,))
    else:
        conn.execute("DELETE FROM subscriptions WHERE name=?", (name,))


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]
