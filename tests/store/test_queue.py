"""Contract tests of IQueueStore, run against the disk store and the memory
fake alike, plus the disk store's crash-recovery rules."""

import os
import subprocess
import sys

import attrs
from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from ktmail import errors
from ktmail.model import DELIVERED, QueuedRecipient, QueueEntry
from ktmail.store import IQueueStore
from ktmail.store.memory import MemoryQueueStore
from ktmail.store.queue import DiskQueueStore, entry_from_json, entry_to_json
from ktmail.store.sqlite import InlineRunner

MESSAGE = b"From: a@sboksi.fi\r\nSubject: hi\r\n\r\nbody\r\n"


def make_entry(entry_id="abc123", created=1000.0, recipients=("x@example.net",)):
    return QueueEntry(
        id=entry_id, sender="a@sboksi.fi", created=created, size=len(MESSAGE),
        dkim_header=b"DKIM-Signature: v=1; d=sboksi.fi\r\n",
        recipients=tuple(QueuedRecipient(address=r, next_attempt=created)
                         for r in recipients))


class QueueStoreContract:
    def make_store(self):
        raise NotImplementedError

    def setUp(self):
        self.store = self.make_store()
        self.spool = self.mktemp()
        with open(self.spool, "wb") as f:
            f.write(MESSAGE)

    def test_interface(self):
        """The store provides IQueueStore."""
        verifyObject(IQueueStore, self.store)

    @defer.inlineCallbacks
    def test_add_then_read_back(self):
        """An added entry reads back equal, with its message bytes, even
        after the caller deleted its spool file."""
        entry = make_entry()
        yield self.store.add(entry, self.spool)
        os.unlink(self.spool)
        self.assertEqual((yield self.store.get("abc123")), entry)
        f = yield self.store.open_message("abc123")
        with f:
            self.assertEqual(f.read(), MESSAGE)
        self.assertEqual((yield self.store.list_entries()), [entry])

    @defer.inlineCallbacks
    def test_add_twice_refused(self):
        """A second entry with the same id is refused (DSN ids rely on it)."""
        yield self.store.add_bytes(make_entry(), MESSAGE)
        yield self.assertFailure(self.store.add_bytes(make_entry(), b"other"),
                                 errors.AlreadyExists)
        f = yield self.store.open_message("abc123")
        with f:
            self.assertEqual(f.read(), MESSAGE)

    @defer.inlineCallbacks
    def test_list_oldest_first(self):
        """list_entries returns the oldest entry first."""
        yield self.store.add_bytes(make_entry("new", created=2000.0), MESSAGE)
        yield self.store.add_bytes(make_entry("old", created=1000.0), MESSAGE)
        self.assertEqual([e.id for e in (yield self.store.list_entries())], ["old", "new"])

    @defer.inlineCallbacks
    def test_update_applies_change(self):
        """update applies the change and returns the new entry."""
        yield self.store.add_bytes(make_entry(recipients=("x@a.net", "y@b.net")), MESSAGE)

        def deliver_x(entry):
            return entry.replace_recipient(
                attrs.evolve(entry.recipient("x@a.net"), state=DELIVERED, reply="250 ok"))
        new = yield self.store.update("abc123", deliver_x)
        self.assertEqual(new.recipient("x@a.net").state, DELIVERED)
        self.assertEqual((yield self.store.get("abc123")), new)

    @defer.inlineCallbacks
    def test_update_of_removed_entry(self):
        """Updating an entry that was removed meanwhile answers None."""
        self.assertIsNone((yield self.store.update("gone", lambda e: e)))

    @defer.inlineCallbacks
    def test_remove(self):
        """A removed entry is gone; removing it again is NotFound."""
        yield self.store.add_bytes(make_entry(), MESSAGE)
        yield self.store.remove("abc123")
        yield self.assertFailure(self.store.get("abc123"), errors.NotFound)
        yield self.assertFailure(self.store.remove("abc123"), errors.NotFound)
        self.assertEqual((yield self.store.list_entries()), [])

    @defer.inlineCallbacks
    def test_bad_ids_are_not_found(self):
        """Ids outside [a-z0-9-] (e.g. paths) are simply not found."""
        for bad in ("../ktmail", "", "A", "x/y", "a" * 65):
            yield self.assertFailure(self.store.get(bad), errors.NotFound)
            yield self.assertFailure(self.store.remove(bad), errors.NotFound)

    @defer.inlineCallbacks
    def test_change_token(self):
        """notify_changed changes the change token."""
        before = yield self.store.change_token()
        yield self.store.notify_changed()
        middle = yield self.store.change_token()
        yield self.store.notify_changed()
        after = yield self.store.change_token()
        self.assertNotEqual(before, middle)
        self.assertNotEqual(middle, after)


class MemoryQueueStoreTests(QueueStoreContract, unittest.TestCase):
    def make_store(self):
        return MemoryQueueStore()


class DiskQueueStoreTests(QueueStoreContract, unittest.TestCase):
    def make_store(self):
        self.data_dir = self.mktemp()
        return DiskQueueStore(self.data_dir, InlineRunner())

    def test_json_round_trip(self):
        """The on-disk form keeps every field."""
        entry = attrs.evolve(make_entry(), eight_bit=True, delay_notified=True, dsn_count=2)
        self.assertEqual(entry_from_json(entry_to_json(entry)), entry)

    @defer.inlineCallbacks
    def test_recover_drops_half_written_files(self):
        """After a crash, recover() deletes temporary files and messages
        whose entry was never committed, and keeps committed entries."""
        yield self.store.add_bytes(make_entry(), MESSAGE)
        root = os.path.join(self.data_dir, "queue")
        for name in ("orphan.msg", "abc123.json.tmp", "other.json.tmp"):
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"x")
        self.assertEqual((yield self.store.recover()), 3)
        self.assertEqual(sorted(n for n in os.listdir(root) if not n.startswith(".")),
                         ["abc123.json", "abc123.msg"])
        self.assertEqual((yield self.store.get("abc123")), make_entry())

    @defer.inlineCallbacks
    def test_files_are_private(self):
        """Queue files are readable by the service user only."""
        yield self.store.add_bytes(make_entry(), MESSAGE)
        root = os.path.join(self.data_dir, "queue")
        self.assertEqual(os.stat(root).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(root, "abc123.json")).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(root, "abc123.msg")).st_mode & 0o777, 0o600)


class QueueClaimContract:
    """Mixed into a TestCase whose make_store() returns a fresh store and
    other_process() another store over the same queue (another node)."""

    @defer.inlineCallbacks
    def test_a_claimed_entry_cannot_be_claimed_again_until_released(self):
        """claim() is exclusive: a second claim, from this or another
        process, gets None until the first is released."""
        store = self.make_store()
        other = self.other_process(store)
        yield store.add_bytes(make_entry(), MESSAGE)
        first = yield store.claim("abc123")
        self.assertIsNotNone(first)
        self.assertIsNone((yield store.claim("abc123")))
        self.assertIsNone((yield other.claim("abc123")))
        yield first.release()
        again = yield other.claim("abc123")
        self.assertIsNotNone(again)
        yield again.release()


class MemoryQueueClaimTests(QueueClaimContract, unittest.TestCase):
    def make_store(self):
        return MemoryQueueStore()

    def other_process(self, store):
        return store


class DiskQueueClaimTests(QueueClaimContract, unittest.TestCase):
    def make_store(self):
        self.data_dir = self.mktemp()
        return DiskQueueStore(self.data_dir, InlineRunner())

    def other_process(self, store):
        return DiskQueueStore(self.data_dir, InlineRunner())

    @defer.inlineCallbacks
    def test_a_claim_dies_with_its_process(self):
        """A process killed while it holds a claim (kill -9 during a round)
        leaves the entry free for another node at once."""
        store = self.make_store()
        yield store.add_bytes(make_entry(), MESSAGE)
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import fcntl, os, sys, time\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
             "fcntl.flock(fd, fcntl.LOCK_EX)\n"
             "print('held', flush=True)\n"
             "time.sleep(60)\n",
             os.path.join(self.data_dir, "queue", "abc123.lock")],
            stdout=subprocess.PIPE)
        self.addCleanup(holder.wait)
        self.addCleanup(lambda: holder.poll() is None and holder.kill())
        self.assertEqual(holder.stdout.readline(), b"held\n")
        self.assertIsNone((yield store.claim("abc123")))
        holder.kill()
        holder.wait()
        claim = yield store.claim("abc123")
        self.assertIsNotNone(claim)
        yield claim.release()

    @defer.inlineCallbacks
    def test_releasing_after_removal_leaves_no_lock_file(self):
        """A round that removed its entry leaves no lock file behind."""
        store = self.make_store()
        yield store.add_bytes(make_entry(), MESSAGE)
        claim = yield store.claim("abc123")
        yield store.remove("abc123")
        yield claim.release()
        root = os.path.join(self.data_dir, "queue")
        self.assertEqual([n for n in os.listdir(root) if not n.startswith(".")], [])
