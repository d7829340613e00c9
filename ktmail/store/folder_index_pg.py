"""The folder indexes in PostgreSQL: all of their SQL, and the per-mailbox handle.

For several nodes that share the Maildirs on a network file system (NFS,
CephFS), where SQLite files are not safe: with ``[store] database =
postgresql://...`` the Maildir store keeps each mailbox's index here
(schema_pg/003_mail_index.sql) instead of in ``ktmail-index.sqlite``.

The functions have the names, arguments and results of store/folder_index.py
(which store/maildir.py calls through ``PostgresFolderIndex.functions``);
their ``conn`` is a ``MailboxConnection``: the locked connection plus the
mailbox id that scopes every statement. Pure helpers (flags, row types)
are folder_index's own.

Invariants, beyond folder_index's (exact usage, UIDNEXT and HIGHESTMODSEQ
only grow, a UID never handed out twice under one UIDVALIDITY):
- a mailbox's rows change only while its session-level advisory lock
  (``LOCK_MAIL_INDEX``, mailbox id) is held on the connection that changes
  them, so the critical sections of every node and ``ktmail-admin`` run one
  at a time, exactly as ``flock`` serialises processes on one host;
- every change that raises a folder's HIGHESTMODSEQ, and every folder
  deleted or renamed, sends ``NOTIFY ktmail_mail, '<mailbox id>:<folder>'``
  in the same transaction: other nodes hear of it once it is committed
  (store/mail_notify.py listens).
"""

import json
import sys
from contextlib import contextmanager

import psycopg

from ktmail.model import MessageInfo
from ktmail.store import folder_index
from ktmail.store.folder_index import (  # noqa: F401 - the same helpers for maildir.py
    CREATED,
    DELETED_BIT,
    FLAG_BITS,
    OPENED,
    SAME,
    SEEN_BIT,
    FolderRow,
    MessageRow,
    encode_flags,
    flags_of,
    info_of,
    infos_from_raw,
    message_key,
    row_info,
)
from ktmail.store.postgresql import LOCK_MAIL_INDEX

#: the channel of folder change notifications
CHANNEL = "ktmail_mail"


class MailboxConnection:
    """What the index functions get as ``conn``: statements of one mailbox
    on the connection that holds its lock."""

    def __init__(self, handle):
        self._handle = handle
        self.mailbox_id = handle.mailbox_id

    def execute(self, sql, params=()):
        pg = self._handle.pg
        if pg is None:
            raise RuntimeError("mail index used outside its lock")
        return pg.execute(sql, params)


class PostgresFolderIndex:
    """The index of one mailbox in PostgreSQL (the twin of
    folder_index.SQLiteFolderIndex; see there for the calling sequence).

    ``lock()`` takes the mailbox's advisory lock on this thread's connection
    of ``db`` (a store.postgresql.Database); everything until ``unlock()``
    runs on that connection, on the same thread.
    """

    functions = sys.modules[__name__]

    def __init__(self, db, mailbox_id):
        self.db = db
        self.mailbox_id = int(mailbox_id)
        #: the locked connection, None outside lock()/unlock()
        self.pg = None
        self.conn = MailboxConnection(self)
        self._generation = None

    def lock(self):
        pg = self.db.connection()
        try:
            pg.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_MAIL_INDEX, self.mailbox_id))
        except psycopg.Error:
            self.db.discard_if_broken(pg)
            raise
        self.pg = pg

    def unlock(self):
        pg, self.pg = self.pg, None
        if pg is None:
            return
        try:
            pg.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_MAIL_INDEX, self.mailbox_id))
        except psycopg.Error:
            # a lost connection took its locks with it
            self.db.discard_if_broken(pg)

    def open(self):
        """Under the lock: -> CREATED when the mailbox has no index yet (or
        an unfinished one: no INBOX row), OPENED when it is new to this
        handle or was rebuilt by someone else, else SAME."""
        row = self.pg.execute(
            "SELECT generation, EXISTS (SELECT 1 FROM mail_folders WHERE mailbox_id=%s "
            "AND name='INBOX') FROM mail_indexes WHERE mailbox_id=%s",
            (self.mailbox_id, self.mailbox_id)).fetchone()
        if row is None:
            (generation,) = self.pg.execute(
                "INSERT INTO mail_indexes (mailbox_id) VALUES (%s) RETURNING generation",
                (self.mailbox_id,)).fetchone()
            row = (generation, False)
        generation, has_inbox = row
        if not has_inbox:
            self._generation = generation
            return CREATED
        if generation == self._generation:
            return SAME
        self._generation = generation
        return OPENED

    @contextmanager
    def transaction(self):
        with self.pg.transaction():
            yield self.conn

    def close(self):
        self._generation = None

    def forget(self):
        """Under the lock: drop every row of the mailbox's index."""
        with self.pg.transaction():
            for table in ("mail_folders", "mail_subscriptions", "mail_meta", "mail_indexes"):
                self.pg.execute(f"DELETE FROM {table} WHERE mailbox_id=%s", (self.mailbox_id,))
        self._generation = None


def index_backend(db):
    """The ``index_backend`` for store.maildir.MaildirStore: every mailbox's
    index in ``db``."""
    return lambda path, mailbox_id: PostgresFolderIndex(db, mailbox_id)


def _notify(conn, name):
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{conn.mailbox_id}:{name}"))


# --- meta ----------------------------------------------------------------------------


def get_meta(conn, name, default=None):
    row = conn.execute("SELECT value FROM mail_meta WHERE mailbox_id=%s AND name=%s",
                       (conn.mailbox_id, name)).fetchone()
    return default if row is None else row[0]


def set_meta(conn, name, value):
    conn.execute("INSERT INTO mail_meta (mailbox_id, name, value) VALUES (%s, %s, %s) "
                 "ON CONFLICT (mailbox_id, name) DO UPDATE SET value = excluded.value",
                 (conn.mailbox_id, name, value))


def usage(conn):
    """-> (bytes, messages) of the whole mailbox."""
    return (get_meta(conn, "usage_bytes", 0) or 0, get_meta(conn, "usage_messages", 0) or 0)


def _adjust_usage(conn, delta_bytes, delta_messages):
    for name, delta in (("usage_bytes", delta_bytes), ("usage_messages", delta_messages)):
        if delta:
            conn.execute("INSERT INTO mail_meta (mailbox_id, name, value) VALUES (%s, %s, %s) "
                         "ON CONFLICT (mailbox_id, name) DO UPDATE "
                         "SET value = COALESCE(mail_meta.value, 0) + excluded.value",
                         (conn.mailbox_id, name, delta))


def recount_usage(conn):
    """Recompute the usage counters from the message rows (index rebuild)."""
    used_bytes, used_messages = conn.execute(
        "SELECT COALESCE(SUM(m.size), 0)::bigint, COUNT(*) FROM mail_messages m "
        "JOIN mail_folders f ON f.id = m.folder_id WHERE f.mailbox_id=%s",
        (conn.mailbox_id,)).fetchone()
    set_meta(conn, "usage_bytes", used_bytes)
    set_meta(conn, "usage_messages", used_messages)


# --- folders -------------------------------------------------------------------------

_FOLDER_COLUMNS = ("id, name, dirname, uidvalidity, uidnext, highestmodseq, new_mtime_ns, "
                   "cur_mtime_ns")


def folder_rows(conn):
    """-> [FolderRow] ordered by name (bytewise, as SQLite orders it)."""
    return [FolderRow(*r) for r in conn.execute(
        f'SELECT {_FOLDER_COLUMNS} FROM mail_folders WHERE mailbox_id=%s '
        f'ORDER BY name COLLATE "C"', (conn.mailbox_id,))]


def folder_row(conn, name):
    row = conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM mail_folders "
                       "WHERE mailbox_id=%s AND name=%s", (conn.mailbox_id, name)).fetchone()
    return None if row is None else FolderRow(*row)


def folder_row_by_id(conn, folder_id):
    row = conn.execute(f"SELECT {_FOLDER_COLUMNS} FROM mail_folders "
                       "WHERE mailbox_id=%s AND id=%s", (conn.mailbox_id, folder_id)).fetchone()
    return None if row is None else FolderRow(*row)


def insert_folder(conn, name, dirname, uidvalidity):
    row = conn.execute(f"INSERT INTO mail_folders (mailbox_id, name, dirname, uidvalidity) "
                       f"VALUES (%s, %s, %s, %s) RETURNING {_FOLDER_COLUMNS}",
                       (conn.mailbox_id, name, dirname, uidvalidity)).fetchone()
    return FolderRow(*row)


def rename_folder(conn, folder_id, name, dirname):
    old = folder_row_by_id(conn, folder_id)
    conn.execute("UPDATE mail_folders SET name=%s, dirname=%s WHERE mailbox_id=%s AND id=%s",
                 (name, dirname, conn.mailbox_id, folder_id))
    if old is not None:
        _notify(conn, old.name)


def delete_folder(conn, folder_id):
    """Drop a folder with its messages, tombstones and cache; usage follows."""
    size, count = conn.execute(
        "SELECT COALESCE(SUM(size), 0)::bigint, COUNT(*) FROM mail_messages WHERE folder_id=%s",
        (folder_id,)).fetchone()
    row = conn.execute("DELETE FROM mail_folders WHERE mailbox_id=%s AND id=%s RETURNING name",
                       (conn.mailbox_id, folder_id)).fetchone()
    conn.execute("DELETE FROM mail_meta WHERE mailbox_id=%s AND name=%s",
                 (conn.mailbox_id, f"vanished_floor:{folder_id}"))
    _adjust_usage(conn, -size, -count)
    if row is not None:
        _notify(conn, row[0])


def set_dir_mtimes(conn, folder_id, new_mtime_ns, cur_mtime_ns):
    conn.execute("UPDATE mail_folders SET new_mtime_ns=%s, cur_mtime_ns=%s "
                 "WHERE mailbox_id=%s AND id=%s",
                 (new_mtime_ns, cur_mtime_ns, conn.mailbox_id, folder_id))


def next_modseq(conn, folder_id):
    """Raise the folder's HIGHESTMODSEQ by one and return the new value;
    other nodes are told once the transaction commits."""
    modseq, name = conn.execute(
        "UPDATE mail_folders SET highestmodseq=highestmodseq+1 WHERE mailbox_id=%s AND id=%s "
        "RETURNING highestmodseq, name", (conn.mailbox_id, folder_id)).fetchone()
    _notify(conn, name)
    return modseq


def take_uids(conn, folder_id, count):
    """Reserve ``count`` consecutive UIDs; -> the first one."""
    (after,) = conn.execute(
        "UPDATE mail_folders SET uidnext=uidnext+%s WHERE mailbox_id=%s AND id=%s "
        "RETURNING uidnext", (count, conn.mailbox_id, folder_id)).fetchone()
    return after - count


def folder_counts(conn, folder_id):
    """-> (messages, recent, unseen, bytes, deleted) of one folder."""
    return tuple(conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(recent), 0)::bigint, "
        f"COALESCE(SUM(CASE WHEN sysflags & {SEEN_BIT} = 0 THEN 1 ELSE 0 END), 0)::bigint, "
        "COALESCE(SUM(size), 0)::bigint, "
        f"COALESCE(SUM(CASE WHEN sysflags & {DELETED_BIT} != 0 THEN 1 ELSE 0 END), 0)::bigint "
        "FROM mail_messages WHERE folder_id=%s",
        (folder_id,)).fetchone())


# --- messages ------------------------------------------------------------------------

_MESSAGE_COLUMNS = ("uid, filename, subdir, sysflags, keywords, size, internal_date, "
                    "saved_at, modseq, recent")
_INFO_COLUMNS = ("uid, split_part(filename, ':', 1), sysflags, keywords, size, internal_date, "
                 "saved_at, modseq, recent")


def _uids(uids):
    return sorted({int(u) for u in uids})


def message_infos(conn, folder_id):
    """-> [MessageInfo] of a folder, ascending UID (the hot path of loading
    a folder; see folder_index.message_infos)."""
    rows = conn.execute(f"SELECT {_INFO_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                        "ORDER BY uid", (folder_id,)).fetchall()
    flag_sets = {}
    make = tuple.__new__
    out = []
    append = out.append
    for uid, key, sysflags, keywords, size, internal_date, saved_at, modseq, recent in rows:
        flags = flag_sets.get((sysflags, keywords))
        if flags is None:
            flags = flag_sets[(sysflags, keywords)] = flags_of(sysflags, keywords)
        append(make(MessageInfo, (uid, key, flags, size, internal_date, saved_at, modseq,
                                recent == 1)))
    return out


def raw_message_rows(conn, folder_id):
    """-> [tuple in _MESSAGE_COLUMNS order] of a folder, ascending UID."""
    return conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                        "ORDER BY uid", (folder_id,)).fetchall()


def message_filenames(conn, folder_id, subdir):
    """-> [file name] of the messages of a folder in ``new`` or ``cur``."""
    return [r[0] for r in conn.execute(
        "SELECT filename FROM mail_messages WHERE folder_id=%s AND subdir=%s",
        (folder_id, subdir))]


def message_rows_by_filename(conn, folder_id, filenames):
    """-> [MessageRow] whose file name is one of ``filenames``."""
    names = sorted(set(filenames))
    if not names:
        return []
    return [MessageRow(*r) for r in conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
        "AND filename = ANY(%s)", (folder_id, names))]


def message_rows(conn, folder_id, uids=None):
    """-> [MessageRow] of a folder (all, or those of ``uids``), ascending UID."""
    if uids is None:
        rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                            "ORDER BY uid", (folder_id,))
    else:
        rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                            "AND uid = ANY(%s) ORDER BY uid", (folder_id, _uids(uids)))
    return [MessageRow(*r) for r in rows]


def recent_rows(conn, folder_id):
    """-> [MessageRow] still carrying ``\\Recent``, ascending UID."""
    return [MessageRow(*r) for r in conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s AND recent=1 "
        "ORDER BY uid", (folder_id,))]


def message_row(conn, folder_id, uid):
    row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages "
                       "WHERE folder_id=%s AND uid=%s", (folder_id, uid)).fetchone()
    return None if row is None else MessageRow(*row)


def insert_message(conn, folder_id, row):
    """Insert a MessageRow (its uid and modseq already reserved); usage follows."""
    conn.execute(f"INSERT INTO mail_messages (folder_id, {_MESSAGE_COLUMNS}) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (folder_id, row.uid, row.filename, row.subdir, row.sysflags, row.keywords,
                  row.size, row.internal_date, row.saved_at, row.modseq, int(row.recent)))
    _adjust_usage(conn, row.size, 1)


def update_message_file(conn, folder_id, uid, filename, subdir, sysflags, keywords,
                        modseq=None, recent=None):
    """Record a renamed file (new flags, or moved from new/ to cur/)."""
    sets = ["filename=%s", "subdir=%s", "sysflags=%s", "keywords=%s"]
    args = [filename, subdir, sysflags, keywords]
    if modseq is not None:
        sets.append("modseq=%s")
        args.append(modseq)
    if recent is not None:
        sets.append("recent=%s")
        args.append(int(recent))
    conn.execute(f"UPDATE mail_messages SET {', '.join(sets)} WHERE folder_id=%s AND uid=%s",
                 (*args, folder_id, uid))


def update_flags(conn, folder_id, uid, sysflags, keywords, modseq):
    conn.execute("UPDATE mail_messages SET sysflags=%s, keywords=%s, modseq=%s "
                 "WHERE folder_id=%s AND uid=%s", (sysflags, keywords, modseq, folder_id, uid))


def clear_recent(conn, folder_id, uids):
    uids = _uids(uids)
    if uids:
        conn.execute("UPDATE mail_messages SET recent=0 WHERE folder_id=%s AND uid = ANY(%s)",
                     (folder_id, uids))


def delete_messages(conn, folder_id, rows, modseq):
    """Remove message rows, leave tombstones at ``modseq``; usage follows."""
    uids = [r.uid for r in rows]
    if not uids:
        return
    conn.execute("DELETE FROM mail_messages WHERE folder_id=%s AND uid = ANY(%s)",
                 (folder_id, uids))
    conn.execute("DELETE FROM mail_message_mime WHERE folder_id=%s AND uid = ANY(%s)",
                 (folder_id, uids))
    conn.execute("INSERT INTO mail_vanished (folder_id, uid, modseq) "
                 "SELECT %s, u, %s FROM unnest(%s::bigint[]) AS u "
                 "ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = excluded.modseq",
                 (folder_id, modseq, uids))
    _adjust_usage(conn, -sum(r.size for r in rows), -len(rows))
    _prune_vanished(conn, folder_id)


def _prune_vanished(conn, folder_id):
    """folder_index._prune_vanished over PostgreSQL."""
    keep = folder_index.TOMBSTONES_KEPT
    count = conn.execute("SELECT COUNT(*) FROM mail_vanished WHERE folder_id=%s",
                         (folder_id,)).fetchone()[0]
    if count <= keep + keep // 4:
        return
    cutoff = conn.execute("SELECT modseq FROM mail_vanished WHERE folder_id=%s "
                          "ORDER BY modseq DESC LIMIT 1 OFFSET %s",
                          (folder_id, keep)).fetchone()[0]
    conn.execute("DELETE FROM mail_vanished WHERE folder_id=%s AND modseq<=%s",
                 (folder_id, cutoff))
    name = f"vanished_floor:{folder_id}"
    set_meta(conn, name, max(get_meta(conn, name, 0) or 0, cutoff))


def vanished_floor(conn, folder_id):
    """The modseq up to which tombstones of the folder were pruned (0: none)."""
    return get_meta(conn, f"vanished_floor:{folder_id}", 0) or 0


def changed_since(conn, folder_id, modseq):
    """-> ([MessageInfo] with modseq > ``modseq``, [vanished UIDs] likewise)."""
    rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                        "AND modseq>%s ORDER BY uid", (folder_id, modseq)).fetchall()
    changed = [info_of(r) for r in rows]
    vanished = [r[0] for r in conn.execute(
        "SELECT uid FROM mail_vanished WHERE folder_id=%s AND modseq>%s ORDER BY uid",
        (folder_id, modseq))]
    return changed, vanished


def saved_before(conn, folder_id, before):
    """-> [MessageInfo] saved into the folder before ``before``, ascending UID."""
    rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM mail_messages WHERE folder_id=%s "
                        "AND saved_at<%s ORDER BY uid", (folder_id, before)).fetchall()
    return [info_of(r) for r in rows]


# --- cached MIME summaries -----------------------------------------------------------

MIME_FIELDS = folder_index.MIME_FIELDS
_MIME_COLUMNS = ", ".join(MIME_FIELDS)
#: an upsert's SET list: a row written again replaces the cached one
_MIME_UPDATES = ", ".join(f"{f} = excluded.{f}" for f in (*MIME_FIELDS, "structure"))


def store_mime(conn, folder_id, uid, fields, structure):
    """Cache the decoded header ``fields`` and the JSON-able ``structure``."""
    conn.execute(
        f"INSERT INTO mail_message_mime (folder_id, uid, {_MIME_COLUMNS}, structure) "
        f"VALUES (%s, %s, {', '.join(['%s'] * len(MIME_FIELDS))}, %s) "
        f"ON CONFLICT (folder_id, uid) DO UPDATE SET {_MIME_UPDATES}",
        (folder_id, uid, *(fields.get(f) for f in MIME_FIELDS),
         json.dumps(structure, separators=(",", ":"))))


def cached_mime(conn, folder_id, uids, with_structure=True):
    """-> {uid: (fields dict, structure or None)} for the cached ones of ``uids``."""
    uids = _uids(uids)
    if not uids:
        return {}
    columns = ", ".join(MIME_FIELDS) + (", structure" if with_structure else "")
    found = {}
    for row in conn.execute(f"SELECT uid, {columns} FROM mail_message_mime "
                            "WHERE folder_id=%s AND uid = ANY(%s)", (folder_id, uids)):
        fields = dict(zip(MIME_FIELDS, row[1:1 + len(MIME_FIELDS)], strict=True))
        structure = json.loads(row[-1]) if with_structure else None
        found[row[0]] = (fields, structure)
    return found


def copy_mime(conn, src_folder_id, src_uid, dst_folder_id, dst_uid):
    conn.execute(
        f"INSERT INTO mail_message_mime (folder_id, uid, {_MIME_COLUMNS}, structure) "
        f"SELECT %s, %s, {_MIME_COLUMNS}, structure FROM mail_message_mime "
        "WHERE folder_id=%s AND uid=%s "
        f"ON CONFLICT (folder_id, uid) DO UPDATE SET {_MIME_UPDATES}",
        (dst_folder_id, dst_uid, src_folder_id, src_uid))


# --- subscriptions -------------------------------------------------------------------


def subscriptions(conn):
    return [r[0] for r in conn.execute(
        'SELECT name FROM mail_subscriptions WHERE mailbox_id=%s ORDER BY name COLLATE "C"',
        (conn.mailbox_id,))]


def set_subscribed(conn, name, subscribed):
    if subscribed:
        conn.execute("INSERT INTO mail_subscriptions (mailbox_id, name) VALUES (%s, %s) "
                     "ON CONFLICT DO NOTHING", (conn.mailbox_id, name))
    else:
        conn.execute("DELETE FROM mail_subscriptions WHERE mailbox_id=%s AND name=%s",
                     (conn.mailbox_id, name))
