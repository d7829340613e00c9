"""The PostgreSQL server the tests use: ``KTMAIL_TEST_POSTGRESQL`` holds its
URL (``.ci/pg-cluster start DIR`` starts a throwaway one and prints it;
``.ci/run`` does that for CI).

Unset, the PostgreSQL tests are skipped, saying so. Set but unreachable,
they fail: a CI that meant to test PostgreSQL must not pass without it.

Each test process (``trial -j`` runs several) gets a database of its own,
made on first use on the server ``KTMAIL_TEST_POSTGRESQL`` names. Every test
gets it empty: the first use in a process drops and re-creates the schema
(so the migrations run from 001 as on a new server); each later use
truncates every table.
"""

import os
import urllib.parse

from twisted.trial.unittest import SkipTest

from ktmail.config import redact_url

URL_VARIABLE = "KTMAIL_TEST_POSTGRESQL"

_schema_reset = False
_own_url = None


def _server_url():
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        raise SkipTest(f"no PostgreSQL for the tests: set {URL_VARIABLE} "
                       "(.ci/pg-cluster start DIR prints it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise SkipTest("psycopg is not installed (pip install -e '.[test]')") from None
    return url


def postgresql_url():
    """The URL of this test process's own database on the test server
    (made on first use), or SkipTest when no server is configured."""
    global _own_url
    url = _server_url()
    if _own_url is None:
        import psycopg

        name = f"ktmail_test_{os.getpid()}"
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise AssertionError(f"{URL_VARIABLE}={redact_url(url)} is not reachable: "
                                 f"{str(e).strip()}") from None
        with conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        _own_url = urllib.parse.urlunsplit(
            urllib.parse.urlsplit(url)._replace(path="/" + name))
    return _own_url


def empty_database():
    """-> the URL of the test database, emptied (see the module docstring)."""
    global _schema_reset
    import psycopg

    url = postgresql_url()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise AssertionError(f"{URL_VARIABLE}={redact_url(url)} is not reachable: "
                             f"{str(e).strip()}") from None
    with conn:
        if not _schema_reset:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
            _schema_reset = True
        else:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'")]
            if tables:
                conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return url


def open_database(testcase, runner=None):
    """A ``store.postgresql.Database`` over the emptied test database,
    closed at the end of ``testcase``."""
    from ktmail.store.postgresql import Database
    from ktmail.store.sqlite import InlineRunner

    db = Database(empty_database(), runner or InlineRunner())
    testcase.addCleanup(db.close)
    return db


def reopen_database(testcase, runner=None):
    """Another ``Database`` over the test database as it is (a restarted
    node, another node), closed at the end of ``testcase``."""
    from ktmail.store.postgresql import Database
    from ktmail.store.sqlite import InlineRunner

    db = Database(postgresql_url(), runner or InlineRunner())
    testcase.addCleanup(db.close)
    return db
