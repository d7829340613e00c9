"""All SQL of the service database when it is PostgreSQL (``[store] database
= postgresql://...``), for several ktmail nodes sharing one database.

Owns the same data as store/sqlite.py (customers, mailboxes, counters,
audit log, spam statistics) plus, in store/folder_index_pg.py, the folder
indexes that SQLite keeps in one file per mailbox. Invariants:

- every statement runs off the reactor thread: ``Database.run_interaction``
  runs one transaction per call on a thread pool (``InlineRunner`` for the
  CLI and unit tests), one connection per worker thread (psycopg 3);
- check-then-write rules hold across nodes: account changes take one
  transaction-scoped advisory lock (the name namespace and the
  five-mailbox cap, like SQLite's ``BEGIN IMMEDIATE``), ``take_event``
  takes a lock per counter key, spam learning one per scope; READ
  COMMITTED does the rest;
- text is ordered bytewise (``COLLATE "C"``), as SQLite orders it, whatever
  the database's locale;
- the schema is changed only by numbered, append-only files in
  ``schema_pg/``, recorded in ``schema_migrations``; concurrent migrators
  (two nodes starting together) are serialised by an advisory lock.

Functions named ``*_txn`` take a psycopg connection inside a transaction.
The connection URL may hold a password: it is never logged or put in an
error text (``config.redact_url``).
"""

import re
import sys
import threading
import zlib
from importlib import resources

import psycopg
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import Customer
from ktmail.store.transactions import (
    MAILBOX_COLUMNS,
    AccountTransactions,
    SpamStatsTransactions,
    customer_from_row,
    mailbox_from_row,
    one_mailbox,
    warnings_with,
)

log = Logger()

SCHEMA_PACKAGE = "ktmail.store.schema_pg"
_MIGRATION_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql\Z")

#: first key of the two-key advisory locks ktmail takes (the second is an
#: id); one-key (bigint) locks are a separate space, used for counter keys
LOCK_MIGRATIONS = 0x6B74_0001
LOCK_ACCOUNTS = 0x6B74_0002
LOCK_SPAM_SCOPE = 0x6B74_0003
LOCK_MAIL_INDEX = 0x6B74_0004
#: seconds a new connection may take
CONNECT_TIMEOUT = 10


def migrations():
    """[(number, name, sql)] of the bundled schema files, in order."""
    found = []
    for entry in resources.files(SCHEMA_PACKAGE).iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema files are not numbered 001.. without gaps: {numbers}")
    return found


def connect(url):
    """A new autocommit connection (transactions are opened explicitly)."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name="ktmail")
    except psycopg.OperationalError as e:
        # psycopg's text names host, port and user, never the password
        raise errors.StoreUnavailable(
            f"The database cannot be reached: {str(e).strip().splitlines()[0]}") from None


def migrate(conn):
    """Apply the schema files not yet applied, each in its own transaction.
    Safe against a concurrent migrator (another node starting)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                 "number INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for number, name, sql in migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_MIGRATIONS,))
            if conn.execute("SELECT 1 FROM schema_migrations WHERE number=%s",
                            (number,)).fetchone():
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                         (number, name))


class Database:
    """One PostgreSQL database; a connection per worker thread; one
    transaction per ``run_interaction``."""

    def __init__(self, url, runner):
        self._url = url
        self._runner = runner
        self._local = threading.local()
        self._connections = []
        self._lock = threading.Lock()
        conn = connect(url)
        try:
            migrate(conn)
        finally:
            conn.close()

    def connection(self):
        """This thread's connection (autocommit), opened or reopened as needed."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._forget(conn)
            conn = self._local.conn = connect(self._url)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _forget(self, conn):
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.close()
        except psycopg.Error:
            pass
        self._local.conn = None

    def discard_if_broken(self, conn):
        """After an error: drop ``conn`` if it is no longer usable, so that
        the next use of this thread reconnects."""
        if conn.closed or conn.broken:
            self._forget(conn)

    def backend_pids(self):
        """Server process ids of this object's open connections (a node
        ignores the notifications its own connections sent)."""
        with self._lock:
            return {c.info.backend_pid for c in self._connections if not c.closed}

    def _interact(self, fn, args):
        conn = self.connection()
        try:
            with conn.transaction():
                return fn(conn, *args)
        except psycopg.OperationalError as e:
            self.discard_if_broken(conn)
            raise errors.StoreUnavailable(
                "The database is not reachable; try again in a moment.") from e

    def run_interaction(self, fn, *args, write=True):
        """Run ``fn(conn, *args)`` in one transaction off the reactor thread.
        (``write`` is accepted for the SQLite signature; PostgreSQL needs no
        different start for writes.)"""
        return self._runner(self._interact, fn, args)

    def ping(self):
        """-> Deferred that fails when the database cannot be read."""
        return self.run_interaction(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self):
        self._runner.stop()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except psycopg.Error:
                    pass
            self._connections.clear()


def _accounts_lock_txn(conn):
    """Serialise account changes across nodes (names, addresses, the cap)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_ACCOUNTS,))


# --- accounts -------------------------------------------------------------------

def _name_taken_txn(conn, name):
    return (conn.execute("SELECT 1 FROM customers WHERE login=%s", (name,)).fetchone()
            or conn.execute("SELECT 1 FROM mailboxes WHERE username=%s", (name,)).fetchone())


def add_customer_txn(conn, login, password_hash, now):
    _accounts_lock_txn(conn)
    if _name_taken_txn(conn, login):
        raise errors.AlreadyExists(f"The name '{login}' is already taken; choose another.",
                                   field="login")
    (id_,) = conn.execute(
        "INSERT INTO customers (login, password_hash, created) VALUES (%s, %s, %s) "
        "RETURNING id", (login, password_hash, now)).fetchone()
    return Customer(id=id_, login=login, created=now)


def customer_password_hash_txn(conn, login):
    row = conn.execute("SELECT id, login, created, password_hash FROM customers WHERE login=%s",
                       (login,)).fetchone()
    if row is None:
        raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
    return customer_from_row(row), row[3]


def get_customer_txn(conn, login):
    return customer_password_hash_txn(conn, login)[0]


def get_customer_by_id_txn(conn, customer_id):
    row = conn.execute("SELECT id, login, created FROM customers WHERE id=%s",
                       (customer_id,)).fetchone()
    if row is None:
        raise errors.NoSuchCustomer()
    return customer_from_row(row)


def set_customer_password_txn(conn, login, password_hash):
    if conn.execute("UPDATE customers SET password_hash=%s WHERE login=%s",
                    (password_hash, login)).rowcount != 1:
        raise errors.NoSuchCustomer(f"There is no customer '{login}'.")


def list_customers_txn(conn):
    return [customer_from_row(r) for r in conn.execute(
        'SELECT id, login, created FROM customers ORDER BY login COLLATE "C"')]


def remove_customer_txn(conn, login):
    _accounts_lock_txn(conn)
    customer = get_customer_txn(conn, login)
    removed = list_mailboxes_txn(conn, customer.id)
    conn.execute("DELETE FROM mailboxes WHERE customer_id=%s", (customer.id,))
    conn.execute("DELETE FROM customers WHERE id=%s", (customer.id,))
    return removed


def add_mailbox_txn(conn, customer_id, username, address, password_hash, quota_bytes, now,
                    limit):
    # one lock for every account change: the count below cannot change
    # before the insert commits, on any node
    _accounts_lock_txn(conn)
    get_customer_by_id_txn(conn, customer_id)
    (count,) = conn.execute("SELECT COUNT(*) FROM mailboxes WHERE customer_id=%s",
                            (customer_id,)).fetchone()
    if count >= limit:
        raise errors.LimitReached(
            f"This customer already has {count} mailboxes, the most allowed ({limit}); "
            "remove one first.")
    if _name_taken_txn(conn, username):
        raise errors.AlreadyExists(f"The username '{username}' is already taken; choose another.",
                                   field="username")
    if conn.execute("SELECT 1 FROM mailboxes WHERE local_part=%s AND domain=%s",
                    (address.local, address.domain)).fetchone():
        raise errors.AlreadyExists(f"The address {address} is already taken; choose another.",
                                   field="address")
    (id_,) = conn.execute(
        "INSERT INTO mailboxes (customer_id, username, local_part, domain, password_hash, "
        "quota_bytes, created) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (customer_id, username, address.local, address.domain, password_hash, quota_bytes,
         now)).fetchone()
    return get_mailbox_txn(conn, id_)


def get_mailbox_txn(conn, mailbox_id):
    return one_mailbox(conn, "id=%s", (mailbox_id,), "No such mailbox.")


def get_mailbox_by_username_txn(conn, username):
    return one_mailbox(conn, "username=%s", (username,), f"There is no mailbox '{username}'.")


def get_mailbox_by_address_txn(conn, address):
    return one_mailbox(conn, "local_part=%s AND domain=%s", (address.local, address.domain),
                        f"There is no mailbox {address}.")


def mailbox_password_hash_txn(conn, username):
    mailbox = get_mailbox_by_username_txn(conn, username)
    (password_hash,) = conn.execute("SELECT password_hash FROM mailboxes WHERE id=%s",
                                    (mailbox.id,)).fetchone()
    return mailbox, password_hash


def set_mailbox_password_txn(conn, mailbox_id, password_hash):
    if conn.execute("UPDATE mailboxes SET password_hash=%s WHERE id=%s",
                    (password_hash, mailbox_id)).rowcount != 1:
        raise errors.NoSuchMailbox()


def list_mailboxes_txn(conn, customer_id=None):
    order = ' ORDER BY domain COLLATE "C", local_part COLLATE "C"'
    if customer_id is None:
        rows = conn.execute(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes" + order)
    else:
        rows = conn.execute(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE customer_id=%s"
                            + order, (customer_id,))
    return [mailbox_from_row(r) for r in rows]


def remove_mailbox_txn(conn, mailbox_id, inactive_since=None):
    _accounts_lock_txn(conn)
    mailbox = get_mailbox_txn(conn, mailbox_id)
    if inactive_since is not None and mailbox.last_activity > inactive_since:
        return None
    conn.execute("DELETE FROM mailboxes WHERE id=%s", (mailbox_id,))
    return mailbox


def record_login_txn(conn, mailbox_id, now):
    conn.execute("UPDATE mailboxes SET last_login=%s, warnings_sent='' WHERE id=%s",
                 (now, mailbox_id))


def record_warning_txn(conn, mailbox_id, days_before):
    conn.execute("SELECT 1 FROM mailboxes WHERE id=%s FOR UPDATE", (mailbox_id,))
    mailbox = get_mailbox_txn(conn, mailbox_id)
    conn.execute("UPDATE mailboxes SET warnings_sent=%s WHERE id=%s",
                 (warnings_with(mailbox, days_before), mailbox_id))


# --- counters and audit ------------------------------------------------------------


def _key_lock(key):
    """A signed 64-bit advisory lock key for a counter key (CRC of its two
    halves: stable across processes, unlike hash())."""
    data = key.encode("utf-8")
    value = (zlib.crc32(data) << 32) | zlib.crc32(data[::-1])
    return value - (1 << 64) if value >= 1 << 63 else value


def add_event_txn(conn, key, now, count):
    conn.execute("INSERT INTO events (key, at, count) VALUES (%s, %s, %s)", (key, now, count))


def events_since_txn(conn, key, since):
    return [tuple(r) for r in conn.execute(
        "SELECT at, count FROM events WHERE key=%s AND at>=%s ORDER BY at", (key, since))]


def take_event_txn(conn, key, now, count, window, limit):
    # every node's take for this key waits here: the sum below is final
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key_lock(key),))
    events = [tuple(r) for r in conn.execute(
        "SELECT at, count FROM events WHERE key=%s AND at>%s ORDER BY at",
        (key, now - window))]
    taken = sum(n for _, n in events) + count <= limit
    if taken:
        add_event_txn(conn, key, now, count)
    return taken, events


def clear_events_txn(conn, key):
    conn.execute("DELETE FROM events WHERE key=%s", (key,))


def prune_events_txn(conn, before):
    return conn.execute("DELETE FROM events WHERE at<%s", (before,)).rowcount


def add_audit_txn(conn, now, actor, action, target, detail):
    conn.execute("INSERT INTO audit (at, actor, action, target, detail) "
                 "VALUES (%s, %s, %s, %s, %s)", (now, actor, action, target, detail))


def list_audit_txn(conn, limit):
    return [tuple(r) for r in conn.execute(
        "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT %s",
        (limit,))]


class PostgresStore(AccountTransactions):
    """IAccountStore, ICounterStore and IAuditLog over one Database."""

    txns = sys.modules[__name__]


# --- spam filter statistics (schema_pg 002) -----------------------------------------


def load_spam_stats_txn(conn, scopes, tokens):
    tokens = list(tokens)
    result = {}
    for scope in scopes:
        row = conn.execute("SELECT nspam, nham FROM spam_totals WHERE scope=%s",
                           (scope,)).fetchone()
        nspam, nham = row if row else (0, 0)
        counts = {}
        if row and tokens:
            for token, s, h in conn.execute(
                    "SELECT token, nspam, nham FROM spam_tokens WHERE scope=%s "
                    "AND token = ANY(%s)", (scope, tokens)):
                counts[token] = (s, h)
        result[scope] = (nspam, nham, counts)
    return result


def _count_txn(conn, scope, tokens, column, delta, day=0):
    """Add ``delta`` (+1/-1) to ``column`` (nspam/nham) of the scope's tokens and total."""
    if delta > 0:
        conn.execute(
            f"INSERT INTO spam_tokens (scope, token, {column}, day) "
            f"SELECT %s, t, 1, %s FROM unnest(%s::bigint[]) AS t "
            f"ON CONFLICT (scope, token) DO UPDATE SET {column} = spam_tokens.{column} + 1, "
            f"day = GREATEST(spam_tokens.day, excluded.day)", (scope, day, tokens))
        conn.execute(
            f"INSERT INTO spam_totals (scope, {column}) VALUES (%s, 1) "
            f"ON CONFLICT (scope) DO UPDATE SET {column} = spam_totals.{column} + 1", (scope,))
    else:
        conn.execute(
            f"UPDATE spam_tokens SET {column} = GREATEST({column} - 1, 0) "
            f"WHERE scope=%s AND token = ANY(%s)", (scope, tokens))
        conn.execute(f"UPDATE spam_totals SET {column} = GREATEST({column} - 1, 0) "
                     f"WHERE scope=%s", (scope,))
        conn.execute("DELETE FROM spam_tokens WHERE scope=%s AND nspam=0 AND nham=0 "
                     "AND token = ANY(%s)", (scope, tokens))


def learn_spam_txn(conn, scopes, message_key, tokens, is_spam, now=0.0):
    tokens = sorted(set(tokens))
    day = int(now // 86400)
    outcome = {}
    for scope in sorted(set(scopes)):
        # one learner per scope at a time, on every node (sorted: no deadlock)
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPAM_SCOPE, scope & 0x7FFFFFFF))
    for scope in scopes:
        if scope in outcome:
            continue
        row = conn.execute("SELECT is_spam FROM spam_learned WHERE scope=%s AND message_key=%s",
                           (scope, message_key)).fetchone()
        if row is not None and row[0] == bool(is_spam):
            outcome[scope] = "already"
            continue
        if row is not None:
            _count_txn(conn, scope, tokens, "nspam" if row[0] else "nham", -1)
        _count_txn(conn, scope, tokens, "nspam" if is_spam else "nham", +1, day)
        conn.execute(
            "INSERT INTO spam_learned (scope, message_key, is_spam, day) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (scope, message_key) DO UPDATE "
            "SET is_spam = excluded.is_spam, day = excluded.day",
            (scope, message_key, bool(is_spam), day))
        outcome[scope] = "relearned" if row is not None else "learned"
    return outcome


def prune_spam_txn(conn, before):
    day = int(before // 86400)
    dropped = conn.execute("DELETE FROM spam_tokens WHERE nspam + nham <= 1 AND day < %s",
                           (day,)).rowcount
    return dropped + conn.execute("DELETE FROM spam_learned WHERE day < %s", (day,)).rowcount


def forget_spam_scope_txn(conn, scope):
    for table in ("spam_tokens", "spam_totals", "spam_learned"):
        conn.execute(f"DELETE FROM {table} WHERE scope=%s", (scope,))


class PostgresSpamStatsStore(SpamStatsTransactions):
    """ISpamStatsStore over one Database."""

    txns = sys.modules[__name__]

