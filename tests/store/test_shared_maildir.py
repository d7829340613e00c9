"""Two nodes on one shared Maildir tree, their folder indexes in one
PostgreSQL: delivery, flag changes, UID assignment and expunge stay correct
when both act on the same folder at once.

Each "node" is a MaildirStore with its own Database (connections) and its
own thread pool, as two daemons on two machines would have; they share
the data directory as two NFS clients share an export.
"""

import io
import os

from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import FLAGS_ADD, MailUsage
from ktmail.services import deferred
from ktmail.store.maildir import MaildirStore
from ktmail.store.sqlite import InlineRunner
from tests import postgresql

MAILBOX = 11


def message(n, body_bytes=200):
    return io.BytesIO(b"Subject: message %03d\r\n\r\n" % n + b"x" * body_bytes + b"\r\n")


class SharedMaildirTests(unittest.TestCase):
    def setUp(self):
        from ktmail.store.folder_index_pg import index_backend
        from ktmail.store.postgresql import Database

        self.index_backend, self.Database = index_backend, Database
        self.url = postgresql.empty_database()
        self.data_dir = self.mktemp()
        self.node_a = self.node()
        self.node_b = self.node()

    def node(self):
        pool = ThreadPool(minthreads=2, maxthreads=6, name="test-node")
        pool.start()
        self.addCleanup(pool.stop)

        def run(fn, *args):
            return threads.deferToThreadPool(reactor, pool, fn, *args)
        # the index takes this thread's connection of db on the node's pool
        db = self.Database(self.url, InlineRunner())
        self.addCleanup(db.close)
        return MaildirStore(self.data_dir, reactor, run, index_backend=self.index_backend(db))

    def files_on_disk(self, folder_dir):
        return sorted(os.path.getsize(os.path.join(folder_dir, sub, n))
                      for sub in ("new", "cur") for n in os.listdir(os.path.join(folder_dir, sub)))

    @deferred
    async def test_concurrent_deliveries_get_distinct_ascending_uids(self):
        """Forty deliveries into one INBOX, half through each node, all at
        once: forty distinct UIDs 1..40, every file indexed, usage exact, and
        both nodes see the same folder."""
        await self.node_a.create_mailbox(MAILBOX)
        adds = [(self.node_a, self.node_b)[n % 2].add_message(MAILBOX, "INBOX", message(n))
                for n in range(40)]
        stored = await defer.gatherResults(adds, consumeErrors=True)
        self.assertEqual(sorted(s.info.uid for s in stored), list(range(1, 41)))
        snapshot_a = await self.node_a.open_folder(MAILBOX, "INBOX")
        snapshot_b = await self.node_b.open_folder(MAILBOX, "INBOX")
        self.assertEqual(snapshot_a.messages, snapshot_b.messages)
        self.assertEqual(snapshot_a.status.uidnext, 41)
        on_disk = self.files_on_disk(self.node_a.mailbox_path(MAILBOX))
        self.assertEqual(await self.node_b.mail_usage(MAILBOX),
                         MailUsage(sum(on_disk), len(on_disk)))
        self.assertEqual(len(on_disk), 40)

    @deferred
    async def test_flag_changes_and_expunges_from_both_nodes(self):
        """Node A marks every even UID \\Seen while node B expunges every
        third, one message at a time, interleaved: afterwards the index and
        the file names agree, on both nodes."""
        await self.node_a.create_mailbox(MAILBOX)
        for n in range(30):
            await self.node_a.add_message(MAILBOX, "INBOX", message(n))
        work = []
        for uid in range(1, 31):
            if uid % 2 == 0:
                work.append(self.node_a.set_flags(MAILBOX, "INBOX", [uid], {"\\Seen"},
                                                  FLAGS_ADD))
            if uid % 3 == 0:
                work.append(self.node_b.expunge(MAILBOX, "INBOX", [uid]))
        await defer.gatherResults(work, consumeErrors=True)
        for node in (self.node_a, self.node_b):
            snapshot = await node.open_folder(MAILBOX, "INBOX")
            self.assertEqual([m.uid for m in snapshot.messages],
                             [u for u in range(1, 31) if u % 3])
            seen = [m.uid for m in snapshot.messages if "\\Seen" in m.flags]
            self.assertEqual(seen, [u for u in range(1, 31) if u % 2 == 0 and u % 3])
        root = self.node_a.mailbox_path(MAILBOX)
        cur = os.listdir(os.path.join(root, "cur"))
        self.assertEqual(sum(name.endswith(":2,S") for name in cur), len(seen))
        self.assertEqual(len(self.files_on_disk(root)), 20)
        changes = await self.node_b.changes_since(MAILBOX, "INBOX", 0)
        self.assertEqual(list(changes.vanished), list(range(3, 31, 3)))

    @deferred
    async def test_quota_is_exact_across_nodes(self):
        """Deliveries with a quota through both nodes at once: exactly what
        fits is stored and the usage matches the files."""
        await self.node_a.create_mailbox(MAILBOX)
        size = len(message(0).getvalue())
        quota = size * 15
        attempts = [(self.node_a, self.node_b)[n % 2].add_message(
            MAILBOX, "INBOX", message(n), quota_bytes=quota) for n in range(30)]
        results = await defer.DeferredList(attempts, consumeErrors=True)
        refused = [r for ok, r in results if not ok]
        self.assertEqual(len(refused), 15)
        self.assertTrue(all(f.check(errors.QuotaExceeded) for f in refused))
        on_disk = self.files_on_disk(self.node_a.mailbox_path(MAILBOX))
        self.assertEqual(await self.node_b.mail_usage(MAILBOX), MailUsage(quota, 15))
        self.assertEqual(sum(on_disk), quota)

    @deferred
    async def test_a_change_on_one_node_reaches_the_other_through_the_index(self):
        """What node A adds and flags, node B's changes_since reports, with
        the modseqs node A gave it."""
        await self.node_a.create_mailbox(MAILBOX)
        before = await self.node_b.folder_status(MAILBOX, "INBOX")
        stored = await self.node_a.add_message(MAILBOX, "INBOX", message(1))
        flagged = await self.node_a.set_flags(MAILBOX, "INBOX", [stored.info.uid],
                                              {"\\Flagged"}, FLAGS_ADD)
        changes = await self.node_b.changes_since(MAILBOX, "INBOX", before.highestmodseq)
        self.assertEqual([m.uid for m in changes.changed], [stored.info.uid])
        self.assertEqual(changes.changed[0].flags, frozenset({"\\Flagged"}))
        self.assertEqual(changes.highestmodseq, flagged.highestmodseq)

    @deferred
    async def test_moves_between_folders_from_both_nodes(self):
        """Node A moves messages INBOX -> Trash while node B moves others
        INBOX -> Archive: each message ends in exactly one folder."""
        await self.node_a.create_mailbox(MAILBOX)
        await self.node_a.create_folder(MAILBOX, "Archive")
        for n in range(20):
            await self.node_b.add_message(MAILBOX, "INBOX", message(n))
        await defer.gatherResults(
            [self.node_a.move_messages(MAILBOX, "INBOX", [uid], "Trash")
             for uid in range(1, 21, 2)]
            + [self.node_b.move_messages(MAILBOX, "INBOX", [uid], "Archive")
               for uid in range(2, 21, 2)], consumeErrors=True)
        counts = {name: len((await self.node_b.open_folder(MAILBOX, name)).messages)
                  for name in ("INBOX", "Trash", "Archive")}
        self.assertEqual(counts, {"INBOX": 0, "Trash": 10, "Archive": 10})
        self.assertEqual((await self.node_a.mail_usage(MAILBOX)).messages, 20)

    @deferred
    async def test_removed_mailbox_is_gone_for_the_other_node(self):
        """A mailbox removed through node A is NoSuchMailbox on node B, and
        its index rows are gone."""
        await self.node_a.create_mailbox(MAILBOX)
        await self.node_b.add_message(MAILBOX, "INBOX", message(1))
        await self.node_a.remove_mailbox(MAILBOX)
        with self.assertRaises(errors.NoSuchMailbox):
            await self.node_b.open_folder(MAILBOX, "INBOX")
        import psycopg
        with psycopg.connect(self.url) as conn:
            left = conn.execute("SELECT COUNT(*) FROM mail_folders WHERE mailbox_id=%s",
                                (MAILBOX,)).fetchone()[0]
        self.assertEqual(left, 0)
