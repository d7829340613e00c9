"""The stores of the service database as calls of a backend's transaction
functions.

store/sqlite.py and store/postgresql.py each hold the SQL of their database
as functions ``<name>_txn(conn, ...)``, with the same names and arguments.
The classes here map IAccountStore, ICounterStore, IAuditLog and
ISpamStatsStore onto one such transaction per call, once for both
backends. A backend subclasses them with ``txns`` set to its module; its
``db`` has ``run_interaction(fn, *args, write=...)``, which runs
``fn(conn, *args)`` in one transaction off the reactor thread (``write``
lets SQLite start a read without taking the write lock). The account rows
are read and written the same way by both (``mailbox_from_row`` ...); only
the SQL around them differs.
"""

from zope.interface import implementer

from ktmail import errors
from ktmail.model import Address, Customer, Mailbox
from ktmail.store import IAccountStore, IAuditLog, ICounterStore, ISpamStatsStore


class _Transactions:
    #: the backend module holding the ``*_txn`` functions
    txns = None

    def __init__(self, db):
        self.db = db

    def _read(self, fn, *args):
        return self.db.run_interaction(fn, *args, write=False)

    def _write(self, fn, *args):
        return self.db.run_interaction(fn, *args, write=True)


@implementer(IAccountStore, ICounterStore, IAuditLog)
class AccountTransactions(_Transactions):
    """IAccountStore, ICounterStore and IAuditLog over one database."""

    # IAccountStore
    def add_customer(self, login, password_hash, now):
        return self._write(self.txns.add_customer_txn, login, password_hash, now)

    def get_customer(self, login):
        return self._read(self.txns.get_customer_txn, login)

    def get_customer_by_id(self, customer_id):
        return self._read(self.txns.get_customer_by_id_txn, customer_id)

    def customer_password_hash(self, login):
        return self._read(self.txns.customer_password_hash_txn, login)

    def set_customer_password(self, login, password_hash):
        return self._write(self.txns.set_customer_password_txn, login, password_hash)

    def list_customers(self):
        return self._read(self.txns.list_customers_txn)

    def remove_customer(self, login):
        return self._write(self.txns.remove_customer_txn, login)

    def add_mailbox(self, customer_id, username, address, password_hash, quota_bytes, now,
                    limit):
        return self._write(self.txns.add_mailbox_txn, customer_id, username, address,
                           password_hash, quota_bytes, now, limit)

    def get_mailbox(self, mailbox_id):
        return self._read(self.txns.get_mailbox_txn, mailbox_id)

    def get_mailbox_by_username(self, username):
        return self._read(self.txns.get_mailbox_by_username_txn, username)

    def get_mailbox_by_address(self, address):
        return self._read(self.txns.get_mailbox_by_address_txn, address)

    def mailbox_password_hash(self, username):
        return self._read(self.txns.mailbox_password_hash_txn, username)

    def set_mailbox_password(self, mailbox_id, password_hash):
        return self._write(self.txns.set_mailbox_password_txn, mailbox_id, password_hash)

    def list_mailboxes(self, customer_id=None):
        return self._read(self.txns.list_mailboxes_txn, customer_id)

    def remove_mailbox(self, mailbox_id, inactive_since=None):
        return self._write(self.txns.remove_mailbox_txn, mailbox_id, inactive_since)

    def record_login(self, mailbox_id, now):
        return self._write(self.txns.record_login_txn, mailbox_id, now)

    def record_warning(self, mailbox_id, days_before):
        return self._write(self.txns.record_warning_txn, mailbox_id, days_before)

    # ICounterStore
    def add_event(self, key, now, count=1):
        return self._write(self.txns.add_event_txn, key, now, count)

    def events_since(self, key, since):
        return self._read(self.txns.events_since_txn, key, since)

    def take_event(self, key, now, count, window, limit):
        return self._write(self.txns.take_event_txn, key, now, count, window, limit)

    def clear_events(self, key):
        return self._write(self.txns.clear_events_txn, key)

    def prune_events(self, before):
        return self._write(self.txns.prune_events_txn, before)

    # IAuditLog
    def add_audit(self, now, actor, action, target, detail=""):
        return self._write(self.txns.add_audit_txn, now, actor, action, target, detail)

    def list_audit(self, limit=100):
        return self._read(self.txns.list_audit_txn, limit)


@implementer(ISpamStatsStore)
class SpamStatsTransactions(_Transactions):
    """ISpamStatsStore over one database."""

    def load_stats(self, scopes, tokens):
        return self._read(self.txns.load_spam_stats_txn, tuple(scopes), tuple(tokens))

    def learn(self, scopes, message_key, tokens, is_spam, now=0.0):
        return self._write(self.txns.learn_spam_txn, tuple(scopes), message_key,
                           tuple(tokens), bool(is_spam), now)

    def prune(self, before):
        return self._write(self.txns.prune_spam_txn, before)

    def forget_scope(self, scope):
        return self._write(self.txns.forget_spam_scope_txn, scope)


# --- the account rows, as both backends' SQL reads and writes them ---------------------

MAILBOX_COLUMNS = ("id, customer_id, username, local_part, domain, quota_bytes, created, "
                   "last_login, warnings_sent")


def mailbox_from_row(row):
    """A Mailbox from the MAILBOX_COLUMNS of one row."""
    (id_, customer_id, username, local, domain, quota, created, last_login, warnings) = row
    return Mailbox(
        id=id_, customer_id=customer_id, username=username,
        address=Address(local, domain), quota_bytes=quota, created=created,
        last_login=last_login,
        warnings_sent=tuple(sorted((int(w) for w in warnings.split(",") if w), reverse=True)))


def customer_from_row(row):
    """A Customer from (id, login, created, ...)."""
    return Customer(id=row[0], login=row[1], created=row[2])


def one_mailbox(conn, where, args, missing):
    """The one mailbox matching ``where`` (SQL with the backend's
    placeholders); NoSuchMailbox(``missing``) when there is none."""
    row = conn.execute(f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE {where}",
                       args).fetchone()
    if row is None:
        raise errors.NoSuchMailbox(missing)
    return mailbox_from_row(row)


def warnings_with(mailbox, days_before):
    """The warnings_sent column once the ``days_before`` warning is sent too."""
    return ",".join(str(d) for d in sorted(set(mailbox.warnings_sent) | {int(days_before)}))
