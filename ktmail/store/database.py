"""The service database the config names (``[store] database``), opened with
the stores that live in it.

SQLite (the default, ``<data_dir>/ktmail.db``): accounts, counters, audit
log and spam statistics in one file; each Maildir keeps its own index file.
PostgreSQL: the same stores on the server, plus every folder index
(store/folder_index_pg.py) and folder change notifications
(store/mail_notify.py), for several nodes sharing one data directory.
"""

import attrs

from ktmail import errors


@attrs.frozen
class Stores:
    """What ``open_stores`` gives the composition root."""

    #: sqlite.Database or postgresql.Database: run_interaction, ping, close
    db: object
    #: IAccountStore, ICounterStore and IAuditLog
    accounts: object
    #: ISpamStatsStore
    spam_stats: object
    #: MaildirStore's ``index_backend``: None for the SQLite file of each mailbox
    index_backend: object = None
    #: the PostgreSQL URL for the folder change feed; None with SQLite
    notify_url: str | None = attrs.field(default=None, repr=False)


def open_stores(database, runner):
    """Open (and migrate) the database of ``database`` (config.DatabaseConfig)
    with ``runner`` (a ThreadRunner in the daemon). ValidationError when
    PostgreSQL is configured but psycopg is missing; StoreUnavailable when
    the server cannot be reached."""
    if database.is_postgresql:
        try:
            from ktmail.store import folder_index_pg, postgresql
        except ImportError:
            raise errors.ValidationError(
                "store.database: PostgreSQL needs psycopg 3; install it with "
                "pip install 'ktmail[postgresql]'") from None
        db = postgresql.Database(database.url, runner)
        return Stores(db=db, accounts=postgresql.PostgresStore(db),
                      spam_stats=postgresql.PostgresSpamStatsStore(db),
                      index_backend=folder_index_pg.index_backend(db),
                      notify_url=database.url)
    from ktmail.store import sqlite
    db = sqlite.Database(database.path, runner)
    return Stores(db=db, accounts=sqlite.SQLiteStore(db),
                  spam_stats=sqlite.SQLiteSpamStatsStore(db))


def folder_change_feed(stores, reactor, on_change, on_resync):
    """The service that tells this node about folder changes made by other
    nodes (PostgreSQL only; None with SQLite, where ``refresh_all`` every few
    seconds catches changes made by ktmail-admin)."""
    if stores.notify_url is None:
        return None
    from ktmail.store.mail_notify import FolderChangeFeed
    return FolderChangeFeed(stores.notify_url, reactor, on_change, on_resync,
                            own_pids=stores.db.backend_pids)
