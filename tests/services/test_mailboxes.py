"""The mailboxes service: live folders shared by every session, with the
changes of one session reaching all the others."""

import io
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.config import Limits
from ktmail.model import FLAGS_ADD, Address, Mailbox
from ktmail.services.mailboxes import MailboxService
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryMailStore
from ktmail.store.sqlite import InlineRunner

START = 1_700_000_000


def mailbox(id_=1, quota=10_000_000):
    return Mailbox(id=id_, customer_id=1, username=f"user{id_}",
                   address=Address("user%d" % id_, "sboksi.fi"), quota_bytes=quota,
                   created=START)


def message(n=1, body=b"Hello\r\n"):
    return io.BytesIO(b"Subject: message %d\r\n\r\n" % n + body)


class Session:
    """Records what a folder tells it, like an IMAP session would."""

    def __init__(self, name="session"):
        self.name = name
        self.events = []

    def __repr__(self):
        return f"<Session {self.name}>"

    def messages_added(self, folder, infos):
        self.events.append(("added", [i.uid for i in infos]))

    def flags_changed(self, folder, infos):
        self.events.append(("flags", {i.uid: set(i.flags) for i in infos}))

    def messages_expunged(self, folder, uids):
        self.events.append(("expunged", list(uids)))

    def folder_closed(self, folder):
        self.events.append(("closed", folder.name))


class RecordingSpamFilter:
    def __init__(self, fail=False):
        self.trained = []
        self.fail = fail

    def train(self, mailbox, path, is_spam):
        if self.fail:
            return defer.fail(RuntimeError("statistics unavailable"))
        with open(path, "rb") as f:
            self.trained.append((mailbox.id, f.read().split(b"\r\n", 1)[0], is_spam))
        return defer.succeed(None)


class MailboxServiceTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.store = self.make_store()
        self.spam = RecordingSpamFilter()
        self.service = MailboxService(self.store, self.spam, Limits(max_message_bytes=10_000),
                                      self.clock)
        self.box = mailbox()
        self.successResultOf(self.store.create_mailbox(self.box.id))

    def make_store(self):
        return MemoryMailStore(self.clock, files_dir=self.mktemp())

    def open(self, name="INBOX", listener=None):
        folder = self.successResultOf(self.service.open_folder(self.box, name))
        if listener is not None:
            folder.add_listener(listener)
        return folder

    def deliver(self, name="INBOX", n=1, **kwargs):
        return self.successResultOf(self.service.append(self.box, name, message(n), **kwargs))


class LiveFolderTests(MailboxServiceTestCase):
    def test_sessions_share_one_live_folder(self):
        """Two sessions selecting the same folder get the same object, loaded once."""
        self.deliver()
        a, b = self.open(), self.open()
        self.assertIs(a, b)
        self.assertEqual((a.users, a.uids, len(a)), (2, [1], 1))
        self.assertEqual(a.info(1).uid, 1)
        self.assertIsNone(a.info(2))

    def test_delivery_reaches_every_listener_at_once(self):
        """A delivery (or APPEND) into an open folder is told to every session."""
        first, second = Session("a"), Session("b")
        folder = self.open(listener=first)
        folder.add_listener(second)
        self.deliver(n=1)
        self.deliver(n=2)
        self.assertEqual(first.events, [("added", [1]), ("added", [2])])
        self.assertEqual(second.events, first.events)
        self.assertEqual((folder.uids, folder.uidnext), ([1, 2], 3))

    def test_own_changes_are_not_echoed(self):
        """The session that made a change gets the result, not a notification;
        every other session gets one."""
        self.deliver()
        me, other = Session("me"), Session("other")
        folder = self.open(listener=me)
        folder.add_listener(other)
        result = self.successResultOf(folder.set_flags([1], ["\\Seen"], FLAGS_ADD, origin=me))
        self.assertEqual([i.uid for i in result.changed], [1])
        self.assertEqual(me.events, [])
        self.assertEqual(other.events, [("flags", {1: {"\\Seen"}})])
        self.assertTrue(folder.info(1).seen)
        self.assertEqual(folder.highestmodseq, result.highestmodseq)

    def test_expunge_reaches_other_sessions(self):
        """EXPUNGE in one session removes the message for everybody."""
        for n in range(3):
            self.deliver(n=n)
        me, other = Session(), Session()
        folder = self.open(listener=me)
        folder.add_listener(other)
        result = self.successResultOf(folder.expunge([1, 3], origin=me))
        self.assertEqual(result.uids, (1, 3))
        self.assertEqual(other.events, [("expunged", [1, 3])])
        self.assertEqual(folder.uids, [2])
        self.assertEqual(me.events, [])

    def test_pop3_style_expunge_without_a_live_folder(self):
        """Deleting through the service also works when nobody has the folder open."""
        self.deliver()
        result = self.successResultOf(self.service.expunge(self.box, "INBOX", [1]))
        self.assertEqual(result.uids, (1,))
        self.assertEqual(self.open().uids, [])

    def test_copy_and_move_reach_both_folders(self):
        """COPY adds to the destination's sessions; MOVE also expunges from the
        source's sessions; the UID map is returned for COPYUID."""
        self.deliver(n=1)
        self.deliver(n=2)
        inbox_session, trash_session = Session(), Session()
        inbox = self.open(listener=inbox_session)
        trash = self.open("Trash", listener=trash_session)
        copied = self.successResultOf(inbox.copy_to([1], "Trash"))
        self.assertEqual(copied.uid_map, ((1, 1),))
        moved = self.successResultOf(inbox.move_to([2], "Trash"))
        self.assertEqual(moved.uid_map, ((2, 2),))
        self.assertEqual(trash_session.events, [("added", [1]), ("added", [2])])
        self.assertEqual(inbox_session.events, [("expunged", [2])])
        self.assertEqual((inbox.uids, trash.uids), ([1], [1, 2]))

    def test_copy_over_quota_is_refused(self):
        """COPY that does not fit in the quota fails whole (IMAP [OVERQUOTA])."""
        self.box = mailbox(quota=50)
        self.deliver()
        inbox = self.open()
        self.failureResultOf(inbox.copy_to([1], "Trash"), errors.QuotaExceeded)
        self.assertEqual(self.open("Trash").uids, [])

    def test_append_refuses_too_big_and_over_quota(self):
        """APPEND above the message size limit is TooBig; over the quota it is
        QuotaExceeded; nothing is stored."""
        self.failureResultOf(self.service.append(self.box, "INBOX", io.BytesIO(b"x" * 10_001)),
                             errors.TooBig)
        small = mailbox(quota=10)
        self.failureResultOf(self.service.append(small, "INBOX", message()),
                             errors.QuotaExceeded)
        self.assertEqual(self.open().uids, [])

    def test_recent_belongs_to_the_first_session(self):
        """\\Recent: the first session to claim gets the new messages, the
        second gets none (RFC 3501 §2.3.2); arrivals later are claimable again."""
        self.deliver()
        folder = self.open()
        self.assertEqual(folder.status.recent, 1)
        self.assertEqual(folder.take_recent(), {1})
        self.assertEqual(folder.take_recent(), set())
        self.assertFalse(folder.info(1).recent)
        self.deliver(n=2)
        self.assertEqual(folder.take_recent(), {2})
        status = self.successResultOf(self.store.folder_status(self.box.id, "INBOX"))
        self.assertEqual(status.recent, 0)

    def test_status_and_unseen(self):
        """The live folder answers STATUS/SELECT figures without the store."""
        for n in range(3):
            self.deliver(n=n)
        folder = self.open()
        self.successResultOf(folder.set_flags([1], ["\\Seen"], FLAGS_ADD))
        status = folder.status
        self.assertEqual((status.messages, status.unseen, status.uidnext), (3, 2, 4))
        self.assertEqual(folder.first_unseen_uid(), 2)
        self.assertEqual(folder.uids_between(2, 10), [2, 3])
        self.assertEqual(folder.index_of(3), 2)
        self.assertEqual(status.size, sum(i.size for i in folder.infos()))
        same = self.successResultOf(self.service.folder_status(self.box, "INBOX"))
        self.assertEqual(same, status)

    def test_quota_status(self):
        """Quota figures for IMAP QUOTA (KiB) and the webmail bar."""
        stored = self.deliver()
        quota = self.successResultOf(self.service.quota(self.box))
        self.assertEqual((quota.used_bytes, quota.messages, quota.limit_bytes),
                         (stored.info.size, 1, 10_000_000))
        self.assertEqual(quota.used_kib, 1)
        self.assertEqual(quota.limit_kib, 9765)
        self.assertAlmostEqual(quota.fraction, stored.info.size / 10_000_000)

    def test_details_come_from_the_store_cache(self):
        """Header fields and structure for FETCH ENVELOPE/BODYSTRUCTURE."""
        self.deliver(n=7)
        details = self.successResultOf(self.open().details([1]))
        self.assertEqual(details[1].subject, "message 7")


class SpamTrainingTests(MailboxServiceTestCase):
    def test_moving_into_spam_trains_spam_and_out_trains_ham(self):
        """A user moving a message into Spam teaches the filter it is spam;
        moving one out teaches it is ham; other moves teach nothing."""
        self.deliver(n=1)
        self.deliver(n=2)
        inbox = self.open()
        self.successResultOf(inbox.move_to([1], "Spam"))
        self.successResultOf(inbox.copy_to([2], "Trash"))
        spam = self.open("Spam")
        self.successResultOf(spam.move_to([1], "INBOX"))
        self.assertEqual(self.spam.trained, [(1, b"Subject: message 1", True),
                                             (1, b"Subject: message 1", False)])

    def test_copy_into_spam_trains_too(self):
        """Clients that 'move' by COPY + EXPUNGE train the filter as well."""
        self.deliver()
        self.successResultOf(self.open().copy_to([1], "Spam"))
        self.assertEqual([t[2] for t in self.spam.trained], [True])

    def test_training_failure_does_not_fail_the_move(self):
        """If the filter cannot learn, the move still succeeds (and is logged)."""
        self.spam.fail = True
        self.deliver()
        result = self.successResultOf(self.open().move_to([1], "Spam"))
        self.assertEqual(result.uid_map, ((1, 1),))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class OutsideChangeTests(MailboxServiceTestCase):
    def test_refresh_picks_up_changes_made_elsewhere(self):
        """Changes by another process (the store used directly, as ktmail-admin
        does) reach the listeners on refresh."""
        self.deliver(n=1)
        self.deliver(n=2)
        session = Session()
        folder = self.open(listener=session)
        self.successResultOf(self.store.add_message(self.box.id, "INBOX", message(3)))
        self.successResultOf(self.store.set_flags(self.box.id, "INBOX", [2], ["\\Flagged"],
                                                  FLAGS_ADD))
        self.successResultOf(self.store.expunge(self.box.id, "INBOX", [1]))
        self.successResultOf(folder.refresh())
        self.assertEqual(session.events, [("expunged", [1]), ("flags", {2: {"\\Flagged"}}),
                                          ("added", [3])])
        self.assertEqual(folder.uids, [2, 3])
        self.successResultOf(folder.refresh())
        self.assertEqual(len(session.events), 3)

    def test_a_modseq_gap_triggers_a_refresh(self):
        """When an own change shows that something else changed the folder
        meanwhile, the live folder catches up by itself."""
        self.deliver(n=1)
        session = Session()
        folder = self.open(listener=session)
        self.successResultOf(self.store.add_message(self.box.id, "INBOX", message(2)))
        self.deliver(n=3)
        self.assertEqual(folder.uids, [1, 2, 3])
        self.assertEqual(session.events, [("added", [2, 3])])

    def test_a_notified_change_is_looked_at_even_during_a_refresh(self):
        """folder_changed (another node's change) while a look at the store
        is under way, a look that began before the change: one more look
        follows it, so the change reaches the listeners at once."""
        session = Session()
        folder = self.open(listener=session)
        original = self.store.changes_since
        gate = defer.Deferred()

        def answered_late(*args):
            early = self.successResultOf(original(*args))
            return gate.addCallback(lambda _: early)
        self.store.changes_since = answered_late
        folder.refresh()
        self.successResultOf(self.store.add_message(self.box.id, "INBOX", message(1)))
        self.service.folder_changed(self.box.id, "INBOX")
        self.service.folder_changed(self.box.id, "INBOX")
        self.store.changes_since = original
        gate.callback(None)
        self.assertEqual(session.events, [("added", [1])])

    def test_a_notification_for_a_folder_not_loaded_is_ignored(self):
        """folder_changed for a folder nobody has open here does nothing."""
        self.service.folder_changed(self.box.id, "Sent")
        self.service.folder_changed(999, "INBOX")
        self.assertIsNone(self.service.live_folder(self.box, "Sent"))

    def test_reopening_refreshes(self):
        """Opening a folder that is already live brings it up to date."""
        folder = self.open()
        self.successResultOf(self.store.add_message(self.box.id, "INBOX", message()))
        self.assertIs(self.open(), folder)
        self.assertEqual(folder.uids, [1])

    def test_recreated_folder_closes_the_live_one(self):
        """A folder deleted and created again elsewhere (new UIDVALIDITY) is
        closed for its sessions; opening it again gives the new one."""
        self.successResultOf(self.service.create_folder(self.box, "Work"))
        session = Session()
        folder = self.open("Work", listener=session)
        self.successResultOf(self.store.delete_folder(self.box.id, "Work"))
        self.successResultOf(self.store.create_folder(self.box.id, "Work"))
        again = self.open("Work")
        self.assertEqual(session.events, [("closed", "Work")])
        self.assertIsNot(again, folder)
        self.assertNotEqual(again.uidvalidity, folder.uidvalidity)


class DeferredResults:
    """A store whose operations take effect at once, in call order, but whose
    answers arrive later, in that same order (like the Maildir store's
    per-mailbox queue on a thread pool)."""

    def __init__(self, store):
        self._store = store
        self.pending = []

    def __getattr__(self, name):
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            result = []
            method(*args, **kwargs).addBoth(result.append)
            answer = defer.Deferred()
            self.pending.append((answer, result[0]))
            return answer
        return call

    def answer_all(self):
        while self.pending:
            answer, result = self.pending.pop(0)
            answer.callback(result)


class OrderingTests(MailboxServiceTestCase):
    def test_uids_reach_listeners_in_order_despite_an_outside_change(self):
        """An outside change (UID 2) lands between what the live folder knows
        and two deliveries in flight (UIDs 3, 4): listeners still get 2, 3, 4
        in ascending order, never 3 before 2."""
        self.deliver(n=1)
        session = Session()
        folder = self.open(listener=session)
        inner = self.store
        self.service.store = DeferredResults(inner)
        self.successResultOf(inner.add_message(self.box.id, "INBOX", message(2)))
        third = self.service.append(self.box, "INBOX", message(3))
        fourth = self.service.append(self.box, "INBOX", message(4))
        self.service.store.answer_all()  # 3 arrives, a gap: catch-up queued after 4
        self.service.store.answer_all()  # 4 (ignored while catching up), then the catch-up
        self.assertEqual(self.successResultOf(third).info.uid, 3)
        self.assertEqual(self.successResultOf(fourth).info.uid, 4)
        added = [uid for kind, uids in session.events if kind == "added" for uid in uids]
        self.assertEqual(added, [2, 3, 4])
        self.assertEqual(folder.uids, [1, 2, 3, 4])
        self.assertEqual(folder.highestmodseq,
                         self.successResultOf(inner.folder_status(self.box.id, "INBOX"))
                         .highestmodseq)

    def test_a_refresh_racing_an_own_change_tells_nothing_twice(self):
        """A refresh answered after an own STORE brings that change again;
        listeners hear of it once."""
        self.deliver(n=1)
        other = Session()
        folder = self.open(listener=other)
        self.service.store = DeferredResults(self.store)
        flagged = folder.set_flags([1], ["\\Flagged"], FLAGS_ADD)
        refreshed = folder.refresh()
        self.service.store.answer_all()
        self.successResultOf(flagged)
        self.successResultOf(refreshed)
        self.assertEqual(other.events, [("flags", {1: {"\\Flagged"}})])


class FolderLifeTests(MailboxServiceTestCase):
    def test_delete_and_rename_close_live_folders(self):
        """Deleting or renaming a folder tells its sessions; renaming a parent
        closes its subfolders too."""
        for name in ("Old", "Work/Sub"):
            self.successResultOf(self.service.create_folder(self.box, name))
        old, sub = Session(), Session()
        self.open("Old", listener=old)
        self.open("Work/Sub", listener=sub)
        self.successResultOf(self.service.delete_folder(self.box, "Old"))
        self.successResultOf(self.service.rename_folder(self.box, "Work", "Jobb"))
        self.assertEqual(old.events, [("closed", "Old")])
        self.assertEqual(sub.events, [("closed", "Work/Sub")])
        names = [f.name for f in self.successResultOf(self.service.list_folders(self.box))]
        self.assertIn("Jobb/Sub", names)

    def test_renaming_inbox_empties_the_live_inbox(self):
        """RENAME INBOX: INBOX sessions see every message expunged."""
        self.deliver()
        session = Session()
        self.open(listener=session)
        self.successResultOf(self.service.rename_folder(self.box, "INBOX", "Saved"))
        self.assertEqual(session.events, [("expunged", [1])])
        self.assertEqual(self.open("Saved").uids, [1])

    def test_removed_mailbox_closes_its_folders(self):
        """The account removal hook tells every session of the mailbox."""
        session = Session()
        self.open(listener=session)
        self.open("Sent", listener=session)
        self.service.close_mailbox(self.box)
        self.assertEqual(sorted(session.events), [("closed", "INBOX"), ("closed", "Sent")])
        self.assertIsNone(self.service.live_folder(self.box, "INBOX"))

    def test_released_folders_stay_loaded_for_a_while(self):
        """A released folder stays loaded (quick re-select) up to the idle limits."""
        self.service.idle_folders = 2
        self.successResultOf(self.service.create_folder(self.box, "A"))
        folders = [self.open(name) for name in ("INBOX", "Sent", "A")]
        for folder in folders:
            folder.release()
        self.assertIsNone(self.service.live_folder(self.box, "INBOX"))
        self.assertIs(self.service.live_folder(self.box, "A"), folders[2])
        self.assertIs(self.open("A"), folders[2])

    def test_concurrent_opens_load_once(self):
        """Sessions selecting a folder while it loads share the one load."""
        loads = []
        real_open = self.store.open_folder
        gate = defer.Deferred()

        def slow_open(mailbox_id, name):
            loads.append(name)
            return gate.addCallback(lambda _: real_open(mailbox_id, name))
        self.store.open_folder = slow_open
        first = self.service.open_folder(self.box, "INBOX")
        second = self.service.open_folder(self.box, "INBOX")
        gate.callback(None)
        self.assertIs(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual(loads, ["INBOX"])

    def test_bad_and_missing_folder_names(self):
        """Opening a missing or invalid folder fails with the store's error."""
        self.failureResultOf(self.service.open_folder(self.box, "Nowhere"), errors.NoSuchFolder)
        self.failureResultOf(self.service.open_folder(self.box, "../x"), errors.ValidationError)


class MaildirIntegrationTests(MailboxServiceTestCase):
    """The same service over the real Maildir store."""

    def make_store(self):
        self.data_dir = self.mktemp()
        return MaildirStore(self.data_dir, self.clock, InlineRunner())

    def test_file_dropped_by_another_tool_reaches_listeners(self):
        """A message another Maildir tool drops into new/ reaches the open
        sessions on the next refresh, with the next UID."""
        self.deliver()
        session = Session()
        self.open(listener=session)
        new = os.path.join(self.store.mailbox_path(self.box.id), "new")
        with open(os.path.join(new, "1.dropped.host"), "wb") as f:
            f.write(b"Subject: dropped\r\n\r\nhi\r\n")
        self.successResultOf(self.service.refresh_all())
        self.assertEqual(session.events, [("added", [2])])

    def test_sessions_see_each_other_over_maildir(self):
        """Flags and expunges from one session reach another over Maildir."""
        self.deliver()
        self.deliver(n=2)
        me, other = Session(), Session()
        folder = self.open(listener=me)
        folder.add_listener(other)
        self.successResultOf(folder.set_flags([1, 2], ["\\Deleted"], FLAGS_ADD, origin=me))
        self.successResultOf(folder.expunge([1], origin=me))
        self.successResultOf(folder.move_to([2], "Spam", origin=me))
        self.assertEqual(other.events, [("flags", {1: {"\\Deleted"}, 2: {"\\Deleted"}}),
                                        ("expunged", [1]), ("expunged", [2])])
        self.assertEqual([t[2] for t in self.spam.trained], [True])
