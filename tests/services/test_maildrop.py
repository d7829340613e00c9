"""POP3 maildrops: the lock, the snapshot, UIDLs, marks and the UPDATE
state (RFC 1939 §5, §6, §7, §8), over the memory store and the Maildir."""

import io
import os

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import FLAGS_ADD, INBOX, SEEN, Address, FolderSnapshot, Mailbox
from ktmail.services.maildrop import MaildropService, StoreInbox, uidl_for_key
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryMailStore
from ktmail.store.sqlite import InlineRunner

MAILBOX = Mailbox(id=7, customer_id=1, username="alice_u", address=Address("alice", "brev.fi"),
                  quota_bytes=1048576000, created=0.0)


class UidlTests(unittest.TestCase):
    def test_own_keys_are_used_as_they_are(self):
        """RFC 1939 §7: a key of 1-70 printable characters is the unique-id."""
        key = "1764240000.M123456P4242Q1R0a1b2c3d.mail,S=1234"
        self.assertEqual(uidl_for_key(key), key)

    def test_other_keys_are_hashed(self):
        """Keys too long for RFC 1939 §7, or with spaces or other characters,
        become a stable 64-character hex digest."""
        long_key = "1764240000.M123456P4242Q1R0a1b2c3d." + "h" * 40 + ",S=52428800"
        for key in (long_key, "a file name,S=12", "k\u00e4se,S=3", "x" * 71):
            uidl = uidl_for_key(key)
            self.assertRegex(uidl, r"\A[0-9a-f]{64}\Z")
            self.assertEqual(uidl, uidl_for_key(key))
        self.assertNotEqual(uidl_for_key("x" * 71), uidl_for_key("x" * 72))


class RecordingInbox(StoreInbox):
    """StoreInbox that records the calls and can hold add_seen."""

    def __init__(self, store):
        super().__init__(store)
        self.seen_calls = []
        self.expunged = []
        self.hold_seen = None

    def add_seen(self, mailbox_id, uids):
        self.seen_calls.append(list(uids))
        d = super().add_seen(mailbox_id, uids)
        if self.hold_seen is not None:
            held, self.hold_seen = self.hold_seen, None
            return held.addCallback(lambda _: d)
        return d

    def expunge(self, mailbox_id, uids):
        self.expunged.append(list(uids))
        return super().expunge(mailbox_id, uids)


class MaildropTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryMailStore(self.clock)
        self.successResultOf(self.store.create_mailbox(MAILBOX.id))
        self.uids = [self.add(b"Subject: %d\r\n\r\n%d\r\n" % (i, i)) for i in range(3)]
        self.inbox = RecordingInbox(self.store)
        self.service = MaildropService(self.inbox)

    def add(self, data, folder=INBOX):
        return self.successResultOf(
            self.store.add_message(MAILBOX.id, folder, io.BytesIO(data))).info.uid

    def inbox_uids(self):
        return [m.uid for m in self.successResultOf(
            self.store.open_folder(MAILBOX.id, INBOX)).messages]

    def test_inbox_only(self):
        """SPEC §1: POP3 sees INBOX, not Spam or other folders."""
        self.add(b"Subject: spam\r\n\r\n", folder="Spam")
        drop = self.successResultOf(self.service.open(MAILBOX))
        self.assertEqual(len(drop), 3)

    def test_lock(self):
        """RFC 1939 §8: one maildrop per mailbox at a time; MailboxInUse for
        the second; close() releases it, and only once."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        self.failureResultOf(self.service.open(MAILBOX), errors.MailboxInUse)
        self.assertTrue(self.service.in_use(MAILBOX.id))
        drop.close()
        self.assertFalse(self.service.in_use(MAILBOX.id))
        second = self.successResultOf(self.service.open(MAILBOX))
        drop.close()          # a stale close does not release the new holder
        self.assertTrue(self.service.in_use(MAILBOX.id))
        second.close()

    def test_lock_is_taken_before_the_snapshot_loads(self):
        """Two logins racing while the INBOX loads: the second gets
        MailboxInUse; a failed load releases the lock."""
        loading = defer.Deferred()
        self.inbox.load = lambda mailbox_id: loading
        first = self.service.open(MAILBOX)
        self.failureResultOf(self.service.open(MAILBOX), errors.MailboxInUse)
        loading.errback(errors.StoreUnavailable())
        self.failureResultOf(first, errors.StoreUnavailable)
        self.assertFalse(self.service.in_use(MAILBOX.id))

    def test_commit_removes_the_marked_and_releases_before_firing(self):
        """RFC 1939 §6: commit() expunges exactly the marked messages and the
        lock is free when its Deferred fires."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.delete(2)
        released = []
        d = drop.commit()
        d.addCallback(lambda n: released.append((n, self.service.in_use(MAILBOX.id))))
        self.assertEqual(released, [(1, False)])
        self.assertEqual(self.inbox_uids(), [self.uids[0], self.uids[2]])

    def test_commit_after_an_index_rebuild_matches_by_key(self):
        """When UIDVALIDITY changed meanwhile (index rebuilt, new UIDs), the
        marked messages are found by their Maildir key, never by old UID."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.delete(1)
        snapshot = self.successResultOf(self.store.open_folder(MAILBOX.id, INBOX))
        # the same messages, renumbered 101, 102, 103 under a new UIDVALIDITY
        rebuilt = FolderSnapshot(
            status=attrs.evolve(snapshot.status, uidvalidity=snapshot.status.uidvalidity + 1),
            messages=tuple(m._replace(uid=m.uid + 100) for m in snapshot.messages))
        self.inbox.status = lambda mailbox_id: defer.succeed(rebuilt.status)
        self.inbox.load = lambda mailbox_id: defer.succeed(rebuilt)
        self.successResultOf(drop.commit())
        self.assertEqual(self.inbox.expunged, [[self.uids[0] + 100]])

    def test_seen_marks_are_coalesced_and_settle_before_commit(self):
        """Retrieved messages are marked \\Seen; marks made while a store call
        is running go together in the next one; commit waits for them."""
        hold = self.inbox.hold_seen = defer.Deferred()
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        drop.retrieved(2)
        drop.retrieved(3)
        drop.retrieved(2)
        drop.delete(3)
        committed = drop.commit()
        self.assertNoResult(committed)
        hold.callback(None)
        self.successResultOf(committed)
        self.assertEqual(self.inbox.seen_calls, [[self.uids[0]], [self.uids[1], self.uids[2]]])
        flags = {m.uid: m.flags for m in self.successResultOf(
            self.store.open_folder(MAILBOX.id, INBOX)).messages}
        self.assertEqual(flags, {self.uids[0]: frozenset({SEEN}),
                                 self.uids[1]: frozenset({SEEN})})

    def test_already_seen_messages_are_not_marked_again(self):
        """A message that was \\Seen at login costs no store call."""
        self.successResultOf(self.store.set_flags(MAILBOX.id, INBOX, [self.uids[0]], {SEEN},
                                                  FLAGS_ADD))
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        self.assertEqual(self.inbox.seen_calls, [])

    def test_close_removes_nothing(self):
        """RFC 1939 §6: a session that ends without QUIT removes nothing."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.delete(1)
        drop.delete(2)
        drop.close()
        self.assertEqual(self.inbox.expunged, [])
        self.assertEqual(self.inbox_uids(), self.uids)

    def test_gone_message(self):
        """A message expunged by another session cannot be opened:
        NoSuchMessage saying so."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        self.successResultOf(self.store.expunge(MAILBOX.id, INBOX, [self.uids[0]]))
        failure = self.failureResultOf(drop.open_message(1), errors.NoSuchMessage)
        self.assertIn("removed from the mailbox by another session", failure.value.text)
        f = self.successResultOf(drop.open_message(2))
        self.assertEqual(f.read(), b"Subject: 1\r\n\r\n1\r\n")


class MaildirUidlStabilityTests(unittest.TestCase):
    """SPEC §5: POP3 UIDLs are stable, so a client that leaves mail on the
    server never downloads a message twice."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.data_dir = self.mktemp()
        self.store = self.new_store()
        self.successResultOf(self.store.create_mailbox(MAILBOX.id))
        for i in range(3):
            self.successResultOf(self.store.add_message(
                MAILBOX.id, INBOX, io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % i)))

    def new_store(self):
        return MaildirStore(self.data_dir, self.clock, InlineRunner())

    def uidls(self):
        service = MaildropService(StoreInbox(self.store))
        drop = self.successResultOf(service.open(MAILBOX))
        try:
            return [uidl for _, uidl in drop.unique_ids()]
        finally:
            drop.close()

    def test_uidls_survive_flags_restarts_and_index_rebuilds(self):
        """UIDLs are the Maildir keys (file names before ":2,"), unchanged
        by IMAP flag changes (the files are renamed), a restart, and a lost
        index (rebuilt with new UIDs and UIDVALIDITY)."""
        before = self.uidls()
        self.assertEqual(len(set(before)), 3)
        files = os.listdir(os.path.join(self.store.mailbox_path(MAILBOX.id), "new"))
        self.assertEqual(sorted(before), sorted(name.split(":")[0] for name in files))
        snapshot = self.successResultOf(self.store.open_folder(MAILBOX.id, INBOX))
        uids = [m.uid for m in snapshot.messages]
        self.successResultOf(self.store.set_flags(MAILBOX.id, INBOX, uids[:2],
                                                  {SEEN, "\\Flagged"}, FLAGS_ADD))
        self.successResultOf(self.store.claim_recent(MAILBOX.id, INBOX))
        self.assertEqual(self.uidls(), before)
        self.store = self.new_store()
        self.assertEqual(self.uidls(), before)
        root = self.store.mailbox_path(MAILBOX.id)
        uidvalidity = snapshot.status.uidvalidity
        self.store = None
        for name in os.listdir(root):
            if name.startswith("ktmail-index.sqlite"):
                os.unlink(os.path.join(root, name))
        self.store = self.new_store()
        self.assertEqual(self.uidls(), before)
        rebuilt = self.successResultOf(self.store.folder_status(MAILBOX.id, INBOX))
        self.assertNotEqual(rebuilt.uidvalidity, uidvalidity)
