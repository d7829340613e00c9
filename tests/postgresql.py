"""The PostgreSQL server the tests use: ``KTMAIL_TEST_POSTGRESQL`` holds its
URL (``.ci/pg-cluster start DIR`` starts a throwaway one and prints it;
``.ci/run`` does that for CI).

Unset, the PostgreSQL tests are skipped, saying so. Set but unreachable,
they fail: a CI that meant to test PostgreSQL must not pass without it.

Every test gets the database empty: the first use in a test run drops and
re-creates the schema (so the migrations run from 001 as on a new server);
each later use truncates every table.
"""

import os

from twisted.trial.unittest import SkipTest

from ktmail.config import redact_url

URL_VARIABLE = "KTMAIL_TEST_POSTGRESQL"

_schema_reset = False


def postgresql_url():
    """The test server's URL, or SkipTest when none is configured."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    if not url:
        raise SkipTest(f"no PostgreSQL for the tests: set {URL_VARIABLE} "
                       "(.ci/pg-cluster start DIR prints it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise SkipTest("psycopg is not installed (pip install -e '.[test]')") from None
    return url


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
