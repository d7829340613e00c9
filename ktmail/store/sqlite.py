"""All SQL of the service database (SQLite, WAL mode).

Owns ``<data_dir>/ktmail.db``: customers, mailboxes, counters, audit log,
the spam filter's Bayes statistics, and whatever later migrations add. Invariants:

- every statement runs inside ``Database.run_interaction`` (one transaction
  per call, ``BEGIN IMMEDIATE`` for writes so that check-then-insert rules
  such as the five-mailbox cap are atomic, also across processes such as
  ``ktmail-admin`` running beside the daemon);
- interactions run on a thread pool, never on the reactor thread
  (``InlineRunner`` exists for the CLI and for unit tests);
- the schema is changed only by numbered, append-only files in ``schema/``;
  ``PRAGMA user_version`` records the last one applied.

Functions named ``*_txn`` take a connection and run inside a transaction.
"""

import os
import re
import sqlite3
import sys
import threading
from importlib import resources

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

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

SCHEMA_PACKAGE = "ktmail.store.schema"
_MIGRATION_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql\Z")


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


def connect(path):
    """Open a connection with the settings every ktmail connection uses."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # a committed account change survives power loss
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn):
    """Apply the schema files not yet applied. Safe against a concurrent
    migrator (the daemon and ``ktmail-admin`` starting together)."""
    for number, name, sql in migrations():
        if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                conn.execute("ROLLBACK")
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(sql):
    """Split a schema file into statements (they contain no ';' in literals)."""
    text = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


class ThreadRunner:
    """Runs database work on its own thread pool; results come back as Deferreds."""

    def __init__(self, reactor, max_threads=4):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=max_threads, name="ktmail-db")
        self._started = False

    def start(self):
        if not self._started:
            self._started = True
            self._pool.start()

    def stop(self):
        if self._started:
            self._started = False
            self._pool.stop()

    def __call__(self, fn, *args):
        self.start()
        return threads.deferToThreadPool(self._reactor, self._pool, fn, *args)


class InlineRunner:
    """Runs database work in the calling thread (CLI, unit tests)."""

    def start(self):
        pass

    def stop(self):
        pass

    def __call__(self, fn, *args):
        return defer.maybeDeferred(fn, *args)


class Database:
    """One SQLite file; a connection per worker thread; one transaction per call."""

    def __init__(self, path, runner):
        self.path = path
        self._runner = runner
        self._local = threading.local()
        self._connections = []
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        conn = connect(path)
        try:
            migrate(conn)
        finally:
            conn.close()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _interact(self, write, fn, args):
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def run_interaction(self, fn, *args, write=True):
        """Run ``fn(conn, *args)`` in one transaction off the reactor thread."""
        return self._runner(self._interact, write, fn, args)

    def ping(self):
        """-> Deferred that fails when the database cannot be read."""
        return self.run_interaction(lambda conn: conn.execute("SELECT 1").fetchone(),
                                    write=False)

    def close(self):
        self._runner.stop()
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


# --- accounts -------------------------------------------------------------------

def _name_taken_txn(conn, name):
    return (conn.execute("SELECT 1 FROM customers WHERE login=?", (name,)).fetchone()
            or conn.execute("SELECT 1 FROM mailboxes WHERE username=?", (name,)).fetchone())


def add_customer_txn(conn, login, password_hash, now):
    if _name_taken_txn(conn, login):
        raise errors.AlreadyExists(f"The name '{login}' is already taken; choose another.",
                                   field="login")
    cur = conn.execute("INSERT INTO customers (login, password_hash, created) VALUES (?, ?, ?)",
                       (login, password_hash, now))
    return Customer(id=cur.lastrowid, login=login, created=now)


def customer_password_hash_txn(conn, login):
    row = conn.execute("SELECT id, login, created, password_hash FROM customers WHERE login=?",
                       (login,)).fetchone()
    if row is None:
        raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
    return customer_from_row(row), row[3]


def get_customer_txn(conn, login):
    return customer_password_hash_txn(conn, login)[0]


def get_customer_by_id_txn(conn, customer_id):
    row = conn.execute("SELECT id, login, created FROM customers WHERE id=?",
                       (customer_id,)).fetchone()
    if row is None:
        raise errors.NoSuchCustomer()
    return customer_from_row(row)


def set_customer_password_txn(conn, login, password_hash):
    if conn.execute("UPDATE customers SET password_hash=? WHERE login=?",
                    (password_hash, login)).rowcount != 1:
        raise errors.NoSuchCustomer(f"There is no customer '{login}'.")


def list_customers_txn(conn):
    return [customer_from_row(r) for r in
            conn.execute("SELECT id, login, created FROM customers ORDER BY login")]


def remove_customer_txn(conn, login):
    customer = get_customer_txn(conn, login)
    removed = list_mailboxes_txn(conn, customer.id)
    conn.execute("DELETE FROM mailboxes WHERE customer_id=?", (customer.id,))
    conn.execute("DELETE FROM customers WHERE id=?", (customer.id,))
    return removed


def add_mailbox_txn(conn, customer_id, username, address, password_hash, quota_bytes, now,
                    limit):
    get_customer_by_id_txn(conn, customer_id)
    (count,) = conn.execute("SELECT COUNT(*) FROM mailboxes WHERE customer_id=?",
                            (customer_id,)).fetchone()
    if count >= limit:
        raise errors.LimitReached(
            f"This customer already has {count} mailboxes, the most allowed ({limit}); "
            "remove one first.")
    if _name_taken_txn(conn, username):
        raise errors.AlreadyExists(f"The username '{username}' is already taken; choose another.",
                                   field="username")
    if conn.execute("SELECT 1 FROM mailboxes WHERE local_part=? AND domain=?",
                    (address.local, address.domain)).fetchone():
        raise errors.AlreadyExists(f"The address {address} is already taken; choose another.",
                                   field="address")
    cur = conn.execute(
        "INSERT INTO mailboxes (customer_id, username, local_part, domain, password_hash, "
        "quota_bytes, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (customer_id, username, address.local, address.domain, password_hash, quota_bytes, now))
    return get_mailbox_txn(conn, cur.lastrowid)


def get_mailbox_txn(conn, mailbox_id):
    return one_mailbox(conn, "id=?", (mailbox_id,), "No such mailbox.")


def get_mailbox_by_username_txn(conn, username):
    return one_mailbox(conn, "username=?", (username,), f"There is no mailbox '{username}'.")


def get_mailbox_by_address_txn(conn, address):
    return one_mailbox(conn, "local_part=? AND domain=?", (address.local, address.domain),
                        f"There is no mailbox {address}.")


def mailbox_password_hash_txn(conn, username):
    mailbox = get_mailbox_by_username_txn(conn, username)
    (password_hash,) = conn.execute("SELECT password_hash FROM mailboxes WHERE id=?",
                                    (mailbox.id,)).fetchone()
    return mailbox, password_hash


def set_mailbox_password_txn(conn, mailbox_id, password_hash):
    if conn.execute("UPDATE mailboxes SET password_hash=? WHERE id=?",
                    (password_hash, mailbox_id)).rowcount != 1:
        raise errors.NoSuchMailbox()


def list_mailboxes_txn(conn, customer_id=None):
    order = " ORDER BY domain, local_part"
    if customer_id is None:
        rows = conn.execute(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes" + order)
    else:
        rows = conn.execute(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE customer_id=?"
                            + order, (customer_id,))
    return [mailbox_from_row(r) for r in rows]


def remove_mailbox_txn(conn, mailbox_id, inactive_since=None):
    mailbox = get_mailbox_txn(conn, mailbox_id)
    if inactive_since is not None and mailbox.last_activity > inactive_since:
        return None
    conn.execute("DELETE FROM mailboxes WHERE id=?", (mailbox_id,))
    return mailbox


def record_login_txn(conn, mailbox_id, now):
    conn.execute("UPDATE mailboxes SET last_login=?, warnings_sent='' WHERE id=?",
                 (now, mailbox_id))


def record_warning_txn(conn, mailbox_id, days_before):
    mailbox = get_mailbox_txn(conn, mailbox_id)
    conn.execute("UPDATE mailboxes SET warnings_sent=? WHERE id=?",
                 (warnings_with(mailbox, days_before), mailbox_id))


# --- counters and audit ------------------------------------------------------------


def add_event_txn(conn, key, now, count):
    conn.execute("INSERT INTO events (key, at, count) VALUES (?, ?, ?)", (key, now, count))


def events_since_txn(conn, key, since):
    return [tuple(r) for r in conn.execute(
        "SELECT at, count FROM events WHERE key=? AND at>=? ORDER BY at", (key, since))]


def take_event_txn(conn, key, now, count, window, limit):
    # runs under BEGIN IMMEDIATE: no other writer between the sum and the insert
    events = [tuple(r) for r in conn.execute(
        "SELECT at, count FROM events WHERE key=? AND at>? ORDER BY at", (key, now - window))]
    taken = sum(n for _, n in events) + count <= limit
    if taken:
        add_event_txn(conn, key, now, count)
    return taken, events


def clear_events_txn(conn, key):
    conn.execute("DELETE FROM events WHERE key=?", (key,))


def prune_events_txn(conn, before):
    return conn.execute("DELETE FROM events WHERE at<?", (before,)).rowcount


def add_audit_txn(conn, now, actor, action, target, detail):
    conn.execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                 (now, actor, action, target, detail))


def list_audit_txn(conn, limit):
    return [tuple(r) for r in conn.execute(
        "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
        (limit,))]


class SQLiteStore(AccountTransactions):
    """IAccountStore, ICounterStore and IAuditLog over one Database."""

    txns = sys.modules[__name__]


# --- spam filter statistics (migration 003) ------------------------------------------

# SQLite allows at least 32766 host parameters; stay far below in one statement
_IN_CHUNK = 500


def load_spam_stats_txn(conn, scopes, tokens):
    tokens = list(tokens)
    result = {}
    for scope in scopes:
        row = conn.execute("SELECT nspam, nham FROM spam_totals WHERE scope=?",
                           (scope,)).fetchone()
        nspam, nham = row if row else (0, 0)
        counts = {}
        if row:
            for i in range(0, len(tokens), _IN_CHUNK):
                chunk = tokens[i:i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                for token, s, h in conn.execute(
                        f"SELECT token, nspam, nham FROM spam_tokens WHERE scope=? "
                        f"AND token IN ({marks})", (scope, *chunk)):
                    counts[token] = (s, h)
        result[scope] = (nspam, nham, counts)
    return result


def _count_txn(conn, scope, tokens, column, delta, day=0):
    """Add ``delta`` (+1/-1) to ``column`` (nspam/nham) of the scope's tokens and total."""
    if delta > 0:
        conn.executemany(
            f"INSERT INTO spam_tokens (scope, token, {column}, day) VALUES (?, ?, 1, ?) "
            f"ON CONFLICT (scope, token) DO UPDATE SET {column} = {column} + 1, "
            f"day = MAX(day, excluded.day)",
            [(scope, t, day) for t in tokens])
        conn.execute(
            f"INSERT INTO spam_totals (scope, {column}) VALUES (?, 1) "
            f"ON CONFLICT (scope) DO UPDATE SET {column} = {column} + 1", (scope,))
    else:
        conn.executemany(
            f"UPDATE spam_tokens SET {column} = MAX({column} - 1, 0) WHERE scope=? AND token=?",
            [(scope, t) for t in tokens])
        conn.execute(f"UPDATE spam_totals SET {column} = MAX({column} - 1, 0) WHERE scope=?",
                     (scope,))
        conn.execute("DELETE FROM spam_tokens WHERE scope=? AND nspam=0 AND nham=0", (scope,))


def learn_spam_txn(conn, scopes, message_key, tokens, is_spam, now=0.0):
    tokens = sorted(set(tokens))
    day = int(now // 86400)
    outcome = {}
    for scope in scopes:
        row = conn.execute("SELECT is_spam FROM spam_learned WHERE scope=? AND message_key=?",
                           (scope, message_key)).fetchone()
        if row is not None and bool(row[0]) == bool(is_spam):
            outcome[scope] = "already"
            continue
        if row is not None:
            _count_txn(conn, scope, tokens, "nspam" if row[0] else "nham", -1)
        _count_txn(conn, scope, tokens, "nspam" if is_spam else "nham", +1, day)
        conn.execute("INSERT OR REPLACE INTO spam_learned (scope, message_key, is_spam, day) "
                     "VALUES (?, ?, ?, ?)", (scope, message_key, int(bool(is_spam)), day))
        outcome[scope] = "relearned" if row is not None else "learned"
    return outcome


def prune_spam_txn(conn, before):
    day = int(before // 86400)
    dropped = conn.execute("DELETE FROM spam_tokens WHERE nspam + nham <= 1 AND day < ?",
                           (day,)).rowcount
    return dropped + conn.execute("DELETE FROM spam_learned WHERE day < ?", (day,)).rowcount


def forget_spam_scope_txn(conn, scope):
    for table in ("spam_tokens", "spam_totals", "spam_learned"):
        conn.execute(f"DELETE FROM {table} WHERE scope=?", (scope,))


class SQLiteSpamStatsStore(SpamStatsTransactions):
    """ISpamStatsStore over one Database."""

    txns = sys.modules[__name__]

