"""POP3 maildrops: the lock, the snapshot, UIDLs, marks and the UPDATE
state (RFC 1939 §5, §6, §7, §8), over the memory store and the Maildir."""

import io
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.config import Limits
from ktmail.model import FLAGS_ADD, INBOX, SEEN, Address, Mailbox
from ktmail.services.mailboxes import MailboxService
from ktmail.services.maildrop import MaildropService, uidl_for_key
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


class MaildropTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryMailStore(self.clock)
        self.successResultOf(self.store.create_mailbox(MAILBOX.id))
        self.mailboxes = MailboxService(self.store, None, Limits(), self.clock)
        self.uids = [self.add(b"Subject: %d\r\n\r\n%d\r\n" % (i, i)) for i in range(3)]
        self.service = MaildropService(self.mailboxes)
        self.seen_calls = []
        self.hold_seen = None
        set_flags = self.store.set_flags

        def recording_set_flags(mailbox_id, name, uids, flags, mode, unchanged_since=None):
            self.seen_calls.append(sorted(uids))
            d = set_flags(mailbox_id, name, uids, flags, mode, unchanged_since)
            if self.hold_seen is not None:
                held, self.hold_seen = self.hold_seen, None
                return held.addCallback(lambda _: d)
            return d
        self.store.set_flags = recording_set_flags

    def add(self, data, folder=INBOX):
        return self.successResultOf(
            self.mailboxes.append(MAILBOX, folder, io.BytesIO(data))).info.uid

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
        self.store.open_folder = lambda mailbox_id, name: loading
        first = self.service.open(MAILBOX)
        self.failureResultOf(self.service.open(MAILBOX), errors.MailboxInUse)
        loading.errback(errors.StoreUnavailable())
        self.failureResultOf(first, errors.StoreUnavailable)
        self.assertFalse(self.service.in_use(MAILBOX.id))

    def test_the_live_folder_is_held_for_the_session(self):
        """The maildrop uses the shared live INBOX while it is open and gives
        it back at the end."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        live = self.mailboxes.live_folder(MAILBOX, INBOX)
        self.assertEqual(live.users, 1)
        drop.close()
        self.assertEqual(live.users, 0)

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

    def test_imap_sessions_see_the_seen_flags_and_the_expunges(self):
        """Through the live INBOX, another session (IMAP, in IDLE) is told of
        the \\Seen flags and of the removals at QUIT."""
        imap = self.successResultOf(self.mailboxes.open_folder(MAILBOX, INBOX))
        told = []

        class Listener:
            def messages_added(self, folder, infos):
                told.append(("added", [i.uid for i in infos]))

            def flags_changed(self, folder, infos):
                told.append(("flags", [(i.uid, sorted(i.flags)) for i in infos]))

            def messages_expunged(self, folder, uids):
                told.append(("expunged", list(uids)))

            def folder_closed(self, folder):
                told.append(("closed", None))
        imap.add_listener(Listener())
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(2)
        drop.delete(1)
        drop.delete(3)
        self.assertEqual(self.successResultOf(drop.commit()), 2)
        self.assertEqual(told, [("flags", [(self.uids[1], [SEEN])]),
                                ("expunged", [self.uids[0], self.uids[2]])])
        self.assertEqual(imap.uids, [self.uids[1]])

    def test_seen_marks_are_applied_once_at_the_end(self):
        """Retrieved messages are marked \\Seen in one store call when the
        session ends, before the removals; messages being removed are not
        marked."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        for n in (1, 2, 3, 2):
            drop.retrieved(n)
        drop.delete(3)
        self.assertEqual(self.seen_calls, [])
        hold = self.hold_seen = defer.Deferred()
        committed = drop.commit()
        self.assertNoResult(committed)
        self.assertEqual(self.inbox_uids(), self.uids)      # removal waits for \Seen
        hold.callback(None)
        self.assertEqual(self.successResultOf(committed), 1)
        self.assertEqual(self.seen_calls, [[self.uids[0], self.uids[1]]])
        flags = {m.uid: m.flags for m in self.successResultOf(
            self.store.open_folder(MAILBOX.id, INBOX)).messages}
        self.assertEqual(flags, {self.uids[0]: frozenset({SEEN}),
                                 self.uids[1]: frozenset({SEEN})})

    def test_a_dropped_session_marks_seen_but_removes_nothing(self):
        """Without QUIT the retrieved messages still become \\Seen (they did
        reach the client, as with Dovecot) and nothing is removed; the lock
        is free at once."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        drop.retrieved(2)
        drop.delete(2)
        hold = self.hold_seen = defer.Deferred()
        drop.close()
        self.assertFalse(self.service.in_use(MAILBOX.id))
        hold.callback(None)
        self.assertEqual(self.seen_calls, [[self.uids[0], self.uids[1]]])
        self.assertEqual(self.inbox_uids(), self.uids)
        self.assertEqual(self.mailboxes.live_folder(MAILBOX, INBOX).users, 0)

    def test_already_seen_messages_are_not_marked_again(self):
        """A message that was \\Seen at login costs no store call."""
        self.successResultOf(self.store.set_flags(MAILBOX.id, INBOX, [self.uids[0]], {SEEN},
                                                  FLAGS_ADD))
        self.seen_calls.clear()
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        self.assertEqual(self.seen_calls, [])

    def test_a_failed_seen_mark_is_logged_and_commit_goes_on(self):
        """\\Seen is a courtesy: its failure is logged, and QUIT still removes
        the marked messages."""
        self.store.set_flags = lambda *args, **kw: defer.fail(errors.StoreUnavailable())
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        drop.delete(2)
        self.assertEqual(self.successResultOf(drop.commit()), 1)
        self.assertEqual(len(self.flushLoggedErrors(errors.StoreUnavailable)), 1)

    def test_close_removes_nothing(self):
        """RFC 1939 §6: a session that ends without QUIT removes nothing."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.delete(1)
        drop.delete(2)
        drop.close()
        self.assertEqual(self.inbox_uids(), self.uids)

    def test_mailbox_removed_during_the_session(self):
        """When the mailbox is removed while a POP3 session is open (the
        portal, ktmail-admin), its messages cannot be opened any more and
        QUIT has nothing left to remove: no error, the lock is released."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        drop.retrieved(1)
        drop.delete(2)
        self.successResultOf(self.store.remove_mailbox(MAILBOX.id))
        self.mailboxes.close_mailbox(MAILBOX)
        self.failureResultOf(drop.open_message(1), errors.NoSuchMailbox)
        self.assertEqual(self.successResultOf(drop.commit()), 0)
        self.assertFalse(self.service.in_use(MAILBOX.id))

    def test_gone_message(self):
        """A message expunged by another session cannot be opened:
        NoSuchMessage saying so; the others can."""
        drop = self.successResultOf(self.service.open(MAILBOX))
        imap = self.successResultOf(self.mailboxes.open_folder(MAILBOX, INBOX))
        self.successResultOf(imap.expunge([self.uids[0]]))
        failure = self.failureResultOf(drop.open_message(1), errors.NoSuchMessage)
        self.assertIn("removed from the mailbox by another session", failure.value.text)
        f = self.successResultOf(drop.open_message(2))
        self.assertEqual(f.read(), b"Subject: 1\r\n\r\n1\r\n")


class MaildirTests(unittest.TestCase):
    """Over the real Maildir store. SPEC §5: POP3 UIDLs are stable, so a
    client that leaves mail on the server never downloads a message twice."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.data_dir = self.mktemp()
        self.restart()
        self.successResultOf(self.store.create_mailbox(MAILBOX.id))
        for i in range(3):
            self.successResultOf(self.store.add_message(
                MAILBOX.id, INBOX, io.BytesIO(b"Subject: %d\r\n\r\nbody\r\n" % i)))

    def restart(self):
        self.store = MaildirStore(self.data_dir, self.clock, InlineRunner())
        self.mailboxes = MailboxService(self.store, None, Limits(), self.clock)
        self.service = MaildropService(self.mailboxes)

    def uidls(self):
        drop = self.successResultOf(self.service.open(MAILBOX))
        try:
            return [uidl for _, uidl in drop.unique_ids()]
        finally:
            drop.close()

    def lose_the_index(self):
        root = self.store.mailbox_path(MAILBOX.id)
        for name in os.listdir(root):
            if name.startswith("ktmail-index.sqlite"):
                os.unlink(os.path.join(root, name))

    def keys_on_disk(self):
        root = self.store.mailbox_path(MAILBOX.id)
        return sorted(name.split(":")[0] for sub in ("new", "cur")
                      for name in os.listdir(os.path.join(root, sub)))

    def test_uidls_survive_flags_restarts_and_index_rebuilds(self):
        """UIDLs are the Maildir keys (file names before ":2,"), unchanged
        by IMAP flag changes (the files are renamed), a restart, and a lost
        index (rebuilt with new UIDs and UIDVALIDITY)."""
        before = self.uidls()
        self.assertEqual(len(set(before)), 3)
        self.assertEqual(sorted(before), self.keys_on_disk())
        snapshot = self.successResultOf(self.store.open_folder(MAILBOX.id, INBOX))
        uids = [m.uid for m in snapshot.messages]
        self.successResultOf(self.store.set_flags(MAILBOX.id, INBOX, uids[:2],
                                                  {SEEN, "\\Flagged"}, FLAGS_ADD))
        self.successResultOf(self.store.claim_recent(MAILBOX.id, INBOX))
        self.assertEqual(self.uidls(), before)
        self.restart()
        self.assertEqual(self.uidls(), before)
        self.lose_the_index()
        self.restart()
        self.assertEqual(self.uidls(), before)
        rebuilt = self.successResultOf(self.store.folder_status(MAILBOX.id, INBOX))
        self.assertNotEqual(rebuilt.uidvalidity, snapshot.status.uidvalidity)

    def test_quit_after_an_index_rebuild_removes_the_right_message(self):
        """When the index is rebuilt during a session (new UIDVALIDITY, the
        UIDs renumbered), QUIT finds the marked messages by Maildir key and
        never removes another message that now has the old UID."""
        keys = self.keys_on_disk()
        drop = self.successResultOf(self.service.open(MAILBOX))
        # another process removes message 1 (its file) and the index is lost:
        # the rebuild numbers the remaining two 1 and 2
        root = self.store.mailbox_path(MAILBOX.id)
        first = self.successResultOf(self.store.message_path(MAILBOX.id, INBOX, 1))
        os.unlink(first)
        self.lose_the_index()
        drop.delete(2)             # the snapshot's second message: keys[1]
        self.assertEqual(self.successResultOf(drop.commit()), 1)
        self.assertEqual(self.keys_on_disk(), [keys[2]])
        self.assertTrue(os.path.isdir(root))
