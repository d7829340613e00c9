"""IAccountStore / ICounterStore / IAuditLog contract, run against the
SQLite store and the in-memory fake alike."""

import os
import threading

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from ktmail import errors
from ktmail.model import Address
from ktmail.store import IAccountStore, IAuditLog, ICounterStore
from ktmail.store.memory import MemoryStore
from ktmail.store.sqlite import Database, InlineRunner, SQLiteStore, connect, migrate
from tests import postgresql

A = Address("alice", "brev.fi")
B = Address("bob", "brev.fi")


class AccountStoreContract:
    """Mixed into a TestCase whose make_store() returns a fresh store."""

    def make_store(self):
        raise NotImplementedError

    def setUp(self):
        self.store = self.make_store()

    def test_provides_the_interfaces(self):
        """The implementation declares and fully provides its contracts."""
        for iface in (IAccountStore, ICounterStore, IAuditLog):
            self.assertTrue(verifyObject(iface, self.store))

    @defer.inlineCallbacks
    def test_customer_lifecycle(self):
        """Customers are added, found, listed in order, re-passworded, removed."""
        c = yield self.store.add_customer("kund2", "h1", 100.0)
        yield self.store.add_customer("kund1", "h0", 101.0)
        self.assertEqual((yield self.store.get_customer("kund2")), c)
        self.assertEqual((yield self.store.get_customer_by_id(c.id)), c)
        self.assertEqual([x.login for x in (yield self.store.list_customers())],
                         ["kund1", "kund2"])
        yield self.store.set_customer_password("kund2", "h2")
        self.assertEqual((yield self.store.customer_password_hash("kund2")), (c, "h2"))
        yield self.store.remove_customer("kund2")
        yield self.assertFailure(self.store.get_customer("kund2"), errors.NoSuchCustomer)
        yield self.assertFailure(self.store.remove_customer("kund2"), errors.NoSuchCustomer)
        yield self.assertFailure(self.store.set_customer_password("nobody", "h"),
                                 errors.NoSuchCustomer)

    @defer.inlineCallbacks
    def test_mailbox_lifecycle(self):
        """A mailbox is found by id, username and address, and removed."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        m = yield self.store.add_mailbox(c.id, "alice_u", A, "mh", 1000, 5.0, 5)
        self.assertEqual((m.username, m.address, m.quota_bytes, m.created, m.last_login),
                         ("alice_u", A, 1000, 5.0, None))
        self.assertEqual((yield self.store.get_mailbox(m.id)), m)
        self.assertEqual((yield self.store.get_mailbox_by_username("alice_u")), m)
        self.assertEqual((yield self.store.get_mailbox_by_address(A)), m)
        self.assertEqual((yield self.store.mailbox_password_hash("alice_u")), (m, "mh"))
        yield self.store.set_mailbox_password(m.id, "mh2")
        self.assertEqual((yield self.store.mailbox_password_hash("alice_u"))[1], "mh2")
        self.assertEqual((yield self.store.remove_mailbox(m.id)), m)
        for lookup in (self.store.get_mailbox(m.id),
                       self.store.get_mailbox_by_username("alice_u"),
                       self.store.get_mailbox_by_address(A)):
            yield self.assertFailure(lookup, errors.NoSuchMailbox)

    @defer.inlineCallbacks
    def test_mailbox_cap_is_enforced_by_the_insert(self):
        """The limit passed in is the most mailboxes a customer may have."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        for i in range(3):
            yield self.store.add_mailbox(c.id, f"user{i}", Address(f"u{i}", "brev.fi"), "h",
                                         1, 1.0, 3)
        e = yield self.assertFailure(
            self.store.add_mailbox(c.id, "user9", Address("u9", "brev.fi"), "h", 1, 1.0, 3),
            errors.LimitReached)
        self.assertIn("3", e.text)
        self.assertEqual(len((yield self.store.list_mailboxes(c.id))), 3)

    @defer.inlineCallbacks
    def test_names_and_addresses_are_unique(self):
        """Usernames are unique service-wide and share one namespace with
        customer logins; an address belongs to one mailbox."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        d = yield self.store.add_customer("other", "h", 1.0)
        yield self.store.add_mailbox(c.id, "alice_u", A, "h", 1, 1.0, 5)
        e = yield self.assertFailure(self.store.add_mailbox(d.id, "alice_u", B, "h", 1, 1.0, 5),
                                     errors.AlreadyExists)
        self.assertEqual(e.field, "username")
        e = yield self.assertFailure(self.store.add_mailbox(d.id, "bob_u", A, "h", 1, 1.0, 5),
                                     errors.AlreadyExists)
        self.assertEqual(e.field, "address")
        yield self.assertFailure(self.store.add_mailbox(d.id, "kund", B, "h", 1, 1.0, 5),
                                 errors.AlreadyExists)
        yield self.assertFailure(self.store.add_customer("alice_u", "h", 1.0),
                                 errors.AlreadyExists)
        yield self.assertFailure(self.store.add_mailbox(999, "zed", B, "h", 1, 1.0, 5),
                                 errors.NoSuchCustomer)

    @defer.inlineCallbacks
    def test_removing_a_customer_removes_its_mailboxes(self):
        """remove_customer returns and deletes the customer's mailboxes only."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        d = yield self.store.add_customer("other", "h", 1.0)
        m1 = yield self.store.add_mailbox(c.id, "alice_u", A, "h", 1, 1.0, 5)
        m2 = yield self.store.add_mailbox(d.id, "bob_u", B, "h", 1, 1.0, 5)
        self.assertEqual((yield self.store.remove_customer("kund")), [m1])
        self.assertEqual((yield self.store.list_mailboxes()), [m2])

    @defer.inlineCallbacks
    def test_login_and_warnings(self):
        """A login sets last_login and clears the inactivity warnings."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        m = yield self.store.add_mailbox(c.id, "alice_u", A, "h", 1, 1.0, 5)
        yield self.store.record_warning(m.id, 30)
        yield self.store.record_warning(m.id, 7)
        m = yield self.store.get_mailbox(m.id)
        self.assertEqual(m.warnings_sent, (30, 7))
        self.assertEqual(m.last_activity, 1.0)
        yield self.store.record_login(m.id, 50.0)
        m = yield self.store.get_mailbox(m.id)
        self.assertEqual((m.last_login, m.warnings_sent, m.last_activity), (50.0, (), 50.0))

    @defer.inlineCallbacks
    def test_conditional_removal_loses_to_a_login(self):
        """remove_mailbox(inactive_since=T) removes only a mailbox unused since T."""
        c = yield self.store.add_customer("kund", "h", 1.0)
        m = yield self.store.add_mailbox(c.id, "alice_u", A, "h", 1, 10.0, 5)
        yield self.store.record_login(m.id, 100.0)
        self.assertIsNone((yield self.store.remove_mailbox(m.id, inactive_since=99.0)))
        self.assertEqual((yield self.store.get_mailbox(m.id)).id, m.id)
        removed = yield self.store.remove_mailbox(m.id, inactive_since=100.0)
        self.assertEqual(removed.id, m.id)
        yield self.assertFailure(self.store.get_mailbox(m.id), errors.NoSuchMailbox)

    @defer.inlineCallbacks
    def test_events_windows(self):
        """Events are returned from a time on, cleared per key and pruned."""
        yield self.store.add_event("k", 10.0)
        yield self.store.add_event("k", 20.0, 3)
        yield self.store.add_event("other", 15.0)
        self.assertEqual((yield self.store.events_since("k", 0)), [(10.0, 1), (20.0, 3)])
        self.assertEqual((yield self.store.events_since("k", 15.0)), [(20.0, 3)])
        self.assertEqual((yield self.store.prune_events(12.0)), 1)
        self.assertEqual((yield self.store.events_since("k", 0)), [(20.0, 3)])
        yield self.store.clear_events("k")
        self.assertEqual((yield self.store.events_since("k", 0)), [])
        self.assertEqual((yield self.store.events_since("other", 0)), [(15.0, 1)])

    @defer.inlineCallbacks
    def test_take_event_records_only_what_fits_the_window(self):
        """take_event counts the events later than now - window: it records
        while they fit the limit, refuses (recording nothing) after, and
        returns the events it counted."""
        self.assertEqual((yield self.store.take_event("k", 100.0, 2, 60.0, 3)), (True, []))
        self.assertEqual((yield self.store.take_event("k", 110.0, 2, 60.0, 3)),
                         (False, [(100.0, 2)]))
        self.assertEqual((yield self.store.take_event("k", 110.0, 1, 60.0, 3)),
                         (True, [(100.0, 2)]))
        # at 160 the event of 100 has left the window (it must be later than 100)
        self.assertEqual((yield self.store.take_event("k", 160.0, 2, 60.0, 3)),
                         (True, [(110.0, 1)]))
        self.assertEqual((yield self.store.events_since("k", 0)),
                         [(100.0, 2), (110.0, 1), (160.0, 2)])
        self.assertEqual((yield self.store.take_event("other", 160.0, 4, 60.0, 3)),
                         (False, []))

    @defer.inlineCallbacks
    def test_audit_log_newest_first(self):
        """Audit entries come back newest first, limited."""
        yield self.store.add_audit(1.0, "ops", "mailbox.remove", "alice_u", "by operator")
        yield self.store.add_audit(2.0, "lifecycle", "mailbox.remove", "bob_u")
        self.assertEqual((yield self.store.list_audit()),
                         [(2.0, "lifecycle", "mailbox.remove", "bob_u", ""),
                          (1.0, "ops", "mailbox.remove", "alice_u", "by operator")])
        self.assertEqual(len((yield self.store.list_audit(limit=1))), 1)


class MemoryStoreContractTests(AccountStoreContract, unittest.TestCase):
    def make_store(self):
        return MemoryStore()


class SQLiteStoreContractTests(AccountStoreContract, unittest.TestCase):
    def make_store(self):
        path = os.path.join(self.mktemp(), "ktmail.db")
        db = Database(path, InlineRunner())
        self.addCleanup(db.close)
        return SQLiteStore(db)


class PostgresStoreContractTests(AccountStoreContract, unittest.TestCase):
    def make_store(self):
        from ktmail.store.postgresql import PostgresStore
        return PostgresStore(postgresql.open_database(self))


class SQLiteSpecificTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_data_survives_a_new_database_object(self):
        """What is committed is there for the next process (daemon restart,
        ktmail-admin beside the daemon)."""
        path = os.path.join(self.mktemp(), "ktmail.db")
        db = Database(path, InlineRunner())
        c = yield SQLiteStore(db).add_customer("kund", "h", 1.0)
        db.close()
        db = Database(path, InlineRunner())
        self.addCleanup(db.close)
        self.assertEqual((yield SQLiteStore(db).get_customer("kund")), c)

    def test_migrations_are_idempotent_and_recorded(self):
        """Running the migrations twice is harmless; user_version records them."""
        path = os.path.join(self.mktemp(), "ktmail.db")
        os.makedirs(os.path.dirname(path))
        conn = connect(path)
        migrate(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        migrate(conn)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], version)
        self.assertGreaterEqual(version, 1)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        conn.close()

    def test_cap_holds_under_concurrent_processes(self):
        """Two connections racing to add the last allowed mailbox: exactly one
        wins (BEGIN IMMEDIATE makes check-then-insert atomic)."""
        path = os.path.join(self.mktemp(), "ktmail.db")
        db = Database(path, InlineRunner())
        self.addCleanup(db.close)
        store = SQLiteStore(db)
        customer = self.successResultOf(store.add_customer("kund", "h", 1.0))
        outcomes = []
        barrier = threading.Barrier(8)

        def racer(i):
            own = Database(path, InlineRunner())
            barrier.wait()
            d = SQLiteStore(own).add_mailbox(customer.id, f"racer{i}",
                                             Address(f"r{i}", "brev.fi"), "h", 1, 1.0, 5)
            d.addCallbacks(lambda _: outcomes.append("ok"),
                           lambda f: outcomes.append(f.type.__name__))
            own.close()

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(outcomes), ["LimitReached"] * 3 + ["ok"] * 5)


class PostgresSpecificTests(unittest.TestCase):
    """What several nodes sharing one PostgreSQL rely on."""

    def setUp(self):
        from ktmail.store.postgresql import Database, PostgresStore
        self.url = postgresql.empty_database()
        self.Database, self.PostgresStore = Database, PostgresStore

    def node(self):
        """A store as one node has it: its own Database (connections)."""
        db = self.Database(self.url, InlineRunner())
        self.addCleanup(db.close)
        return self.PostgresStore(db)

    def race(self, count, attempt):
        """Run ``attempt(i, store) -> Deferred`` on ``count`` threads, each
        with its own node, released together. -> sorted outcomes."""
        stores = [self.node() for _ in range(count)]
        outcomes = []
        barrier = threading.Barrier(count)

        def racer(i):
            barrier.wait()
            d = attempt(i, stores[i])
            d.addCallbacks(outcomes.append, lambda f: outcomes.append(f.type.__name__))

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(map(str, outcomes))

    def test_mailbox_cap_holds_across_nodes(self):
        """Eight nodes racing to add mailboxes for one customer whose cap is
        five: exactly five succeed."""
        customer = self.successResultOf(self.node().add_customer("kund", "h", 1.0))
        outcomes = self.race(8, lambda i, store: store.add_mailbox(
            customer.id, f"racer{i}", Address(f"r{i}", "brev.fi"), "h", 1, 1.0, 5).addCallback(
                lambda _: "ok"))
        self.assertEqual(outcomes, ["LimitReached"] * 3 + ["ok"] * 5)

    def test_one_name_is_taken_once_across_nodes(self):
        """A customer login and a mailbox username racing for one name on
        different nodes: one wins, the other is AlreadyExists."""
        customer = self.successResultOf(self.node().add_customer("kund", "h", 1.0))

        def attempt(i, store):
            if i % 2:
                d = store.add_customer("samename", "h", 1.0)
            else:
                d = store.add_mailbox(customer.id, "samename", Address(f"s{i}", "brev.fi"), "h",
                                      1, 1.0, 5)
            return d.addCallback(lambda _: "ok")
        self.assertEqual(self.race(6, attempt), ["AlreadyExists"] * 5 + ["ok"])

    def test_take_event_is_atomic_across_nodes(self):
        """Ten nodes each taking 30 of a 200 window at once: six get it, and
        the store holds exactly 180."""
        outcomes = self.race(10, lambda i, store: store.take_event(
            "sent:smtp:1", 1000.0, 30, 3600.0, 200).addCallback(lambda r: r[0]))
        self.assertEqual(outcomes, ["False"] * 4 + ["True"] * 6)
        events = self.successResultOf(self.node().events_since("sent:smtp:1", 0))
        self.assertEqual(sum(n for _, n in events), 180)

    def test_migrations_are_recorded_and_rerun_harmlessly(self):
        """A second node starting on a migrated database changes nothing."""
        self.node()
        self.node()
        import psycopg
        with psycopg.connect(self.url) as conn:
            numbers = [r[0] for r in conn.execute(
                "SELECT number FROM schema_migrations ORDER BY number")]
        from ktmail.store.postgresql import migrations
        self.assertEqual(numbers, [n for n, _, _ in migrations()])
