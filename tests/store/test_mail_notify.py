"""Folder change notifications between nodes (PostgreSQL LISTEN/NOTIFY):
a change committed through one node reaches the other's live folders, and
its listeners, within a second."""

import io
import time

from twisted.internet import defer, reactor, task, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from ktmail.config import Limits
from ktmail.model import FLAGS_ADD, Address, Mailbox
from ktmail.services import deferred
from ktmail.services.mailboxes import MailboxService
from ktmail.store.maildir import MaildirStore
from ktmail.store.sqlite import InlineRunner
from tests import postgresql

MAILBOX = 21
BOX = Mailbox(id=MAILBOX, customer_id=1, username="anna", address=Address("anna", "brev.fi"),
              quota_bytes=10_000_000, created=0.0)


def message(n):
    return io.BytesIO(b"Subject: message %d\r\n\r\nHello\r\n" % n)


class Session:
    """Records what a live folder tells it, like an IDLE session would."""

    def __init__(self):
        self.events = []
        self.arrived = defer.Deferred()

    def messages_added(self, folder, infos):
        self.events.append(("added", [i.uid for i in infos]))
        if not self.arrived.called:
            self.arrived.callback(time.monotonic())

    def flags_changed(self, folder, infos):
        self.events.append(("flags", {i.uid: set(i.flags) for i in infos}))

    def messages_expunged(self, folder, uids):
        self.events.append(("expunged", list(uids)))

    def folder_closed(self, folder):
        self.events.append(("closed", folder.name))


class NoSpamTraining:
    def train(self, mailbox, path, is_spam):
        return defer.succeed(None)


def wait_for(condition, timeout=5.0):
    """-> Deferred fired once ``condition()`` is true (polled on the reactor)."""
    deadline = time.monotonic() + timeout

    async def poll():
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting")
            await task.deferLater(reactor, 0.02, lambda: None)
    return defer.Deferred.fromCoroutine(poll())


class PayloadTests(unittest.TestCase):
    def test_payloads(self):
        """'<mailbox id>:<folder>' is parsed; anything else is ignored."""
        from ktmail.store.mail_notify import parse_payload
        self.assertEqual(parse_payload("7:INBOX"), (7, "INBOX"))
        self.assertEqual(parse_payload("7:Kvitton/a:b"), (7, "Kvitton/a:b"))
        for bad in ("", "INBOX", "x:INBOX", "7:", ":INBOX"):
            self.assertIsNone(parse_payload(bad))


class Node:
    """One ktmail node's mail side: its Database, thread pool, Maildir
    store (indexes in PostgreSQL), mailboxes service and change feed."""

    def __init__(self, testcase, url, data_dir):
        from ktmail.store.folder_index_pg import index_backend
        from ktmail.store.mail_notify import FolderChangeFeed
        from ktmail.store.postgresql import Database

        pool = ThreadPool(minthreads=1, maxthreads=4, name="test-node")
        pool.start()
        testcase.addCleanup(pool.stop)

        def run(fn, *args):
            return threads.deferToThreadPool(reactor, pool, fn, *args)
        self.db = Database(url, InlineRunner())
        testcase.addCleanup(self.db.close)
        self.store = MaildirStore(data_dir, reactor, run, index_backend=index_backend(self.db))
        self.mailboxes = MailboxService(self.store, NoSpamTraining(),
                                        Limits(max_message_bytes=10_000), reactor)
        self.changes = []
        self.resyncs = []
        self.feed = FolderChangeFeed(url, reactor, self.changed,
                                     lambda: self.resyncs.append("resync"),
                                     own_pids=self.db.backend_pids)

    def changed(self, mailbox_id, name):
        self.changes.append((mailbox_id, name))
        self.mailboxes.folder_changed(mailbox_id, name)

    def start_feed(self, testcase):
        self.feed.startService()
        testcase.addCleanup(self.feed.stopService)
        return threads.deferToThread(self.feed.listening.wait, 10)


class AcrossNodesTests(unittest.TestCase):
    def setUp(self):
        self.url = postgresql.empty_database()
        data_dir = self.mktemp()
        self.node_a = Node(self, self.url, data_dir)
        self.node_b = Node(self, self.url, data_dir)

    @deferred
    async def test_delivery_on_one_node_reaches_a_session_on_the_other_within_a_second(self):
        """Node B has INBOX open with a listening session (IMAP IDLE); a
        message added through node A reaches that session in well under a
        second, without waiting for the periodic refresh."""
        await self.node_a.store.create_mailbox(MAILBOX)
        await self.node_b.start_feed(self)
        folder = await self.node_b.mailboxes.open_folder(BOX, "INBOX")
        session = Session()
        folder.add_listener(session)
        started = time.monotonic()
        await self.node_a.mailboxes.append(BOX, "INBOX", message(1))
        arrived = await session.arrived
        self.assertLess(arrived - started, 1.0)
        self.assertEqual(session.events, [("added", [1])])
        self.assertEqual(folder.uids, [1])

    @deferred
    async def test_flags_and_expunges_reach_the_other_node(self):
        """A flag change and an expunge through node A reach node B's session."""
        await self.node_a.store.create_mailbox(MAILBOX)
        for n in (1, 2):
            await self.node_a.store.add_message(MAILBOX, "INBOX", message(n))
        await self.node_b.start_feed(self)
        folder = await self.node_b.mailboxes.open_folder(BOX, "INBOX")
        session = Session()
        folder.add_listener(session)
        folder_a = await self.node_a.mailboxes.open_folder(BOX, "INBOX")
        await folder_a.set_flags([1], {"\\Seen"}, FLAGS_ADD)
        await folder_a.expunge([2])
        await wait_for(lambda: ("expunged", [2]) in session.events)
        self.assertIn(("flags", {1: {"\\Seen"}}), session.events)
        self.assertEqual(folder.uids, [1])

    @deferred
    async def test_own_changes_are_not_echoed(self):
        """A node's own changes are not handed back to it by its feed; a
        change made by the other node is."""
        await self.node_a.store.create_mailbox(MAILBOX)
        await self.node_b.start_feed(self)
        await self.node_b.store.add_message(MAILBOX, "INBOX", message(1))
        await self.node_a.store.add_message(MAILBOX, "INBOX", message(2))
        await wait_for(lambda: self.node_b.changes)
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(self.node_b.changes, [(MAILBOX, "INBOX")])

    @deferred
    async def test_a_lost_connection_is_followed_by_a_resync(self):
        """When the feed's connection is killed, it reconnects and asks for
        a look at everything (notifications may have been missed)."""
        import psycopg
        await self.node_b.start_feed(self)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'ktmail-feed'")
        await wait_for(lambda: self.node_b.resyncs, timeout=10)
        await threads.deferToThread(self.node_b.feed.listening.wait, 10)
        await self.node_a.store.create_mailbox(MAILBOX)
        await self.node_a.store.add_message(MAILBOX, "INBOX", message(1))
        await wait_for(lambda: (MAILBOX, "INBOX") in self.node_b.changes)
