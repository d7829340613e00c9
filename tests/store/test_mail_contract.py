"""The IMailStore contract, run against the Maildir store and the in-memory
fake alike (a test that passes against the fake means something)."""

import io

from twisted.internet import task
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import (
    DEFAULT_FOLDERS,
    FLAGS_ADD,
    FLAGS_REMOVE,
    FLAGS_REPLACE,
    SPECIAL_USE,
    MailUsage,
)
from ktmail.services import deferred
from ktmail.store import IMailStore, folder_index
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryMailStore
from ktmail.store.sqlite import InlineRunner
from tests import postgresql

MAILBOX = 7
START = 1_700_000_000

MESSAGE = (b"From: Anna Andersson <anna@example.com>\r\n"
           b"To: bo@sboksi.fi\r\n"
           b"Subject: =?utf-8?q?M=C3=B6te_p=C3=A5_fredag?=\r\n"
           b"Message-ID: <m1@example.com>\r\n"
           b"\r\n"
           b"Hej Bo!\r\n")


def message(n=1, body=b"Hello\r\n"):
    return io.BytesIO(b"Subject: message %d\r\n\r\n" % n + body)


class MailStoreContract:
    """Mixed into a TestCase that defines make_store() and restart()."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.store = self.make_store()
        self.successResultOf(self.store.create_mailbox(MAILBOX))

    async def add(self, folder="INBOX", source=None, **kwargs):
        stored = await self.store.add_message(MAILBOX, folder, source or message(), **kwargs)
        return stored.info

    async def uids(self, folder="INBOX"):
        snapshot = await self.store.open_folder(MAILBOX, folder)
        return [m.uid for m in snapshot.messages]

    def test_provides_the_interface(self):
        """The implementation declares IMailStore."""
        self.assertTrue(IMailStore.providedBy(self.store))

    # --- folders ---

    @deferred
    async def test_new_mailbox_has_the_default_folders(self):
        """A new mailbox has INBOX Sent Drafts Trash Spam, subscribed, with
        their RFC 6154 special-use attributes."""
        folders = {f.name: f for f in await self.store.list_folders(MAILBOX)}
        self.assertEqual(sorted(folders), sorted(DEFAULT_FOLDERS))
        self.assertTrue(all(f.subscribed for f in folders.values()))
        self.assertEqual({n: f.special_use for n, f in folders.items() if f.special_use},
                         SPECIAL_USE)

    @deferred
    async def test_create_mailbox_is_idempotent(self):
        """Creating an existing mailbox again changes nothing."""
        await self.add()
        await self.store.create_mailbox(MAILBOX)
        self.assertEqual(await self.uids(), [1])

    @deferred
    async def test_nested_folder_creates_its_parents(self):
        """CREATE A/B/C creates A and A/B too (RFC 3501 §6.3.3); parents
        know they have children."""
        status = await self.store.create_folder(MAILBOX, "Arkiv/2024/Maj")
        self.assertEqual((status.name, status.messages, status.uidnext), ("Arkiv/2024/Maj", 0, 1))
        folders = {f.name: f for f in await self.store.list_folders(MAILBOX)}
        self.assertIn("Arkiv", folders)
        self.assertIn("Arkiv/2024", folders)
        self.assertTrue(folders["Arkiv/2024"].has_children)
        self.assertFalse(folders["Arkiv/2024/Maj"].has_children)
        self.assertFalse(folders["Arkiv/2024/Maj"].subscribed)

    @deferred
    async def test_non_ascii_folder_names_round_trip(self):
        """Kvitton/Försäkring can be created, listed, opened and filled."""
        await self.store.create_folder(MAILBOX, "Kvitton/Försäkring")
        names = [f.name for f in await self.store.list_folders(MAILBOX)]
        self.assertIn("Kvitton/Försäkring", names)
        await self.add("Kvitton/Försäkring")
        self.assertEqual(await self.uids("Kvitton/Försäkring"), [1])

    @deferred
    async def test_bad_folder_names_are_refused(self):
        """Traversal, separators at the ends, empty levels, dots, control
        characters, wildcards and over-long names are refused."""
        for bad in ["", "..", "../etc", "a/../b", "/Abs", "Trailing/", "a//b", ".hidden",
                    "v1.2", "nul\x00byte", "tab\there", "star*", "per%cent", "back\\slash",
                    " padded", "x" * 300, "/".join(["d"] * 20)]:
            with self.assertRaises(errors.ValidationError, msg=repr(bad)):
                await self.store.create_folder(MAILBOX, bad)
        with self.assertRaises(errors.ValidationError):
            await self.store.open_folder(MAILBOX, "../1")
        names = sorted(f.name for f in await self.store.list_folders(MAILBOX))
        self.assertEqual(names, sorted(DEFAULT_FOLDERS))

    @deferred
    async def test_inbox_is_case_insensitive(self):
        """'inbox' is INBOX (RFC 3501 §5.1), and cannot be created again."""
        await self.add("inbox")
        self.assertEqual(await self.uids("Inbox"), [1])
        with self.assertRaises(errors.AlreadyExists):
            await self.store.create_folder(MAILBOX, "inbox")

    @deferred
    async def test_creating_an_existing_folder_is_refused(self):
        """CREATE of an existing name fails with AlreadyExists."""
        await self.store.create_folder(MAILBOX, "Work")
        with self.assertRaises(errors.AlreadyExists):
            await self.store.create_folder(MAILBOX, "Work")

    @deferred
    async def test_default_folders_cannot_be_deleted_or_renamed(self):
        """Sent, Drafts, Trash, Spam and INBOX are protected from DELETE;
        the four are protected from RENAME."""
        for name in DEFAULT_FOLDERS:
            with self.assertRaises(errors.FolderProtected):
                await self.store.delete_folder(MAILBOX, name)
        for name in DEFAULT_FOLDERS[1:]:
            with self.assertRaises(errors.FolderProtected):
                await self.store.rename_folder(MAILBOX, name, "Other")

    @deferred
    async def test_delete_folder_removes_its_messages_and_usage(self):
        """Deleting a folder deletes its messages; the usage follows."""
        await self.store.create_folder(MAILBOX, "Old")
        await self.add("Old")
        await self.store.delete_folder(MAILBOX, "Old")
        self.assertNotIn("Old", [f.name for f in await self.store.list_folders(MAILBOX)])
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(0, 0))
        with self.assertRaises(errors.NoSuchFolder):
            await self.store.open_folder(MAILBOX, "Old")
        with self.assertRaises(errors.NoSuchFolder):
            await self.store.delete_folder(MAILBOX, "Old")

    @deferred
    async def test_folder_with_subfolders_cannot_be_deleted(self):
        """DELETE of a folder that has subfolders is refused (delete them first)."""
        await self.store.create_folder(MAILBOX, "A/B")
        with self.assertRaises(errors.ValidationError):
            await self.store.delete_folder(MAILBOX, "A")
        await self.store.delete_folder(MAILBOX, "A/B")
        await self.store.delete_folder(MAILBOX, "A")

    @deferred
    async def test_recreated_folder_gets_a_new_uidvalidity(self):
        """A folder deleted and created again has a new UIDVALIDITY, so
        clients drop what they cached (RFC 3501 §2.3.1.1)."""
        first = await self.store.create_folder(MAILBOX, "Temp")
        await self.store.delete_folder(MAILBOX, "Temp")
        second = await self.store.create_folder(MAILBOX, "Temp")
        self.assertNotEqual(first.uidvalidity, second.uidvalidity)

    @deferred
    async def test_rename_keeps_messages_uids_and_subfolders(self):
        """RENAME moves a folder with its subfolders, keeps UIDs and
        UIDVALIDITY, and moves subscriptions along."""
        await self.store.create_folder(MAILBOX, "Projects/Alpha")
        await self.store.subscribe(MAILBOX, "Projects/Alpha")
        await self.add("Projects")
        before = await self.store.folder_status(MAILBOX, "Projects")
        await self.store.rename_folder(MAILBOX, "Projects", "Done/Projects")
        names = [f.name for f in await self.store.list_folders(MAILBOX)]
        self.assertIn("Done/Projects", names)
        self.assertIn("Done/Projects/Alpha", names)
        self.assertNotIn("Projects", names)
        after = await self.store.folder_status(MAILBOX, "Done/Projects")
        self.assertEqual((after.uidvalidity, after.messages), (before.uidvalidity, 1))
        self.assertEqual(await self.uids("Done/Projects"), [1])
        subscriptions = await self.store.list_subscriptions(MAILBOX)
        self.assertIn("Done/Projects/Alpha", subscriptions)
        self.assertNotIn("Projects/Alpha", subscriptions)

    @deferred
    async def test_rename_refusals(self):
        """RENAME onto an existing name, into itself, or of a missing folder fails."""
        await self.store.create_folder(MAILBOX, "A")
        await self.store.create_folder(MAILBOX, "B")
        with self.assertRaises(errors.AlreadyExists):
            await self.store.rename_folder(MAILBOX, "A", "B")
        with self.assertRaises(errors.ValidationError):
            await self.store.rename_folder(MAILBOX, "A", "A/Inner")
        with self.assertRaises(errors.NoSuchFolder):
            await self.store.rename_folder(MAILBOX, "Missing", "C")

    @deferred
    async def test_rename_inbox_moves_its_messages(self):
        """RENAME INBOX moves every INBOX message into a new folder and leaves
        INBOX empty (RFC 3501 §6.3.5)."""
        await self.add(flags=["\\Seen"])
        await self.add()
        await self.store.rename_folder(MAILBOX, "INBOX", "Old mail")
        self.assertEqual(await self.uids("INBOX"), [])
        moved = (await self.store.open_folder(MAILBOX, "Old mail")).messages
        self.assertEqual([m.uid for m in moved], [1, 2])
        self.assertEqual(moved[0].flags, {"\\Seen"})
        self.assertEqual(await self.uids(), [])
        self.assertEqual((await self.add()).uid, 3)

    @deferred
    async def test_subscriptions(self):
        """SUBSCRIBE/UNSUBSCRIBE are remembered, also for names that do not
        exist (RFC 3501 §6.3.6)."""
        await self.store.subscribe(MAILBOX, "Elsewhere/Later")
        await self.store.subscribe(MAILBOX, "Trash", False)
        subscriptions = await self.store.list_subscriptions(MAILBOX)
        self.assertIn("Elsewhere/Later", subscriptions)
        self.assertNotIn("Trash", subscriptions)
        folders = {f.name: f for f in await self.store.list_folders(MAILBOX)}
        self.assertFalse(folders["Trash"].subscribed)

    # --- adding and reading ---

    @deferred
    async def test_added_messages_get_ascending_uids(self):
        """Each add gets the next UID; UIDNEXT moves on; sizes are exact."""
        infos = [await self.add(source=message(n)) for n in range(1, 4)]
        self.assertEqual([i.uid for i in infos], [1, 2, 3])
        status = await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual((status.messages, status.uidnext, status.recent, status.unseen),
                         (3, 4, 3, 3))
        self.assertEqual(status.size, sum(i.size for i in infos))
        self.assertEqual(status.highestmodseq, max(i.modseq for i in infos))

    @deferred
    async def test_status_counts_deleted_messages(self):
        """STATUS DELETED (RFC 9051 §6.3.11): the messages carrying \\Deleted,
        as added and as flagged later."""
        await self.add(flags=["\\Deleted"])
        b = await self.add()
        await self.add(flags=["\\Seen"])
        self.assertEqual((await self.store.folder_status(MAILBOX, "INBOX")).deleted, 1)
        await self.store.set_flags(MAILBOX, "INBOX", [b.uid], ["\\Deleted"], FLAGS_ADD)
        status = await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual((status.messages, status.deleted), (3, 2))

    @deferred
    async def test_message_is_stored_with_crlf_and_prefix(self):
        """Line endings become CRLF (the bytes IMAP serves), the prefix comes
        first, and the size is the stored size."""
        info = await self.add(source=io.BytesIO(b"Subject: x\n\nline one\nline two\r\nend"),
                              prefix=b"Return-Path: <a@b.c>\r\n")
        f = await self.store.open_message(MAILBOX, "INBOX", info.uid)
        with f:
            data = f.read()
        self.assertEqual(data, b"Return-Path: <a@b.c>\r\nSubject: x\r\n\r\n"
                               b"line one\r\nline two\r\nend")
        self.assertEqual(info.size, len(data))

    @deferred
    async def test_add_from_a_path(self):
        """A message can be added from a file path (a spool file)."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(MESSAGE)
        info = await self.add(source=path)
        f = await self.store.open_message(MAILBOX, "INBOX", info.uid)
        with f:
            self.assertEqual(f.read(), MESSAGE)

    @deferred
    async def test_add_with_flags_and_internal_date(self):
        """APPEND's flags and date are kept; \\Recent is set."""
        info = await self.add(flags=["\\Seen", "\\flagged", "$Forwarded", "Work"],
                              internal_date=1_600_000_000.0)
        self.assertEqual(info.flags, {"\\Seen", "\\Flagged", "$Forwarded", "Work"})
        self.assertEqual(info.internal_date, 1_600_000_000.0)
        self.assertTrue(info.recent)
        self.assertEqual(info.saved_at, START)
        [loaded] = (await self.store.open_folder(MAILBOX, "INBOX")).messages
        self.assertEqual(loaded, info)

    @deferred
    async def test_bad_flags_are_refused(self):
        """Unknown system flags and keywords that are no IMAP atoms are refused."""
        for bad in (["\\Bogus"], ["two words"], ["par(en"], ['quo"te']):
            with self.assertRaises(errors.ValidationError):
                await self.add(flags=bad)
        self.assertEqual(await self.uids(), [])

    @deferred
    async def test_missing_things(self):
        """Unknown mailbox, folder and message give the matching errors."""
        with self.assertRaises(errors.NoSuchMailbox):
            await self.store.open_folder(999, "INBOX")
        with self.assertRaises(errors.NoSuchMailbox):
            await self.store.add_message(999, "INBOX", message())
        with self.assertRaises(errors.NoSuchFolder):
            await self.add("Nowhere")
        with self.assertRaises(errors.NoSuchMessage):
            await self.store.open_message(MAILBOX, "INBOX", 42)
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(0, 0))

    @deferred
    async def test_message_details(self):
        """The summary gives decoded header fields and the structure with
        the ENVELOPE."""
        info = await self.add(source=io.BytesIO(MESSAGE))
        details = await self.store.message_details(MAILBOX, "INBOX", [info.uid, 99])
        self.assertEqual(list(details), [info.uid])
        summary = details[info.uid]
        self.assertEqual(summary.subject, "Möte på fredag")
        self.assertEqual(summary.fields["hdr_from"], "Anna Andersson <anna@example.com>")
        self.assertEqual(summary.envelope.message_id, "<m1@example.com>")
        self.assertEqual(summary.structure.content_type, "text/plain")
        self.assertEqual(summary.structure.body_end, len(MESSAGE))
        lean = await self.store.message_details(MAILBOX, "INBOX", [info.uid],
                                                with_structure=False)
        self.assertIsNone(lean[info.uid].structure)
        self.assertEqual(lean[info.uid].subject, "Möte på fredag")

    @deferred
    async def test_read_messages(self):
        """read_messages hands each existing message's file, at its start,
        to the reader and gathers the answers by UID; unknown UIDs are left
        out, and the files of more messages than one batch are all read."""
        first = await self.add(source=io.BytesIO(MESSAGE))
        others = [await self.add(source=message(n)) for n in range(2, 140)]

        def reader(uid, f):
            return (uid, f.read(9))
        found = await self.store.read_messages(MAILBOX, "INBOX",
                                               [first.uid, 9999] + [o.uid for o in others],
                                               reader)
        self.assertEqual(sorted(found), sorted([first.uid] + [o.uid for o in others]))
        self.assertEqual(found[first.uid], (first.uid, b"From: Ann"))
        self.assertEqual(found[others[-1].uid], (others[-1].uid, b"Subject: "))
        with self.assertRaises(errors.NoSuchFolder):
            await self.store.read_messages(MAILBOX, "Nowhere", [1], reader)

    # --- flags ---

    @deferred
    async def test_set_flags_modes(self):
        """+FLAGS, -FLAGS and FLAGS change flags; each change gets a new modseq;
        changing nothing reports nothing."""
        a, b = await self.add(), await self.add()
        added = await self.store.set_flags(MAILBOX, "INBOX", [a.uid, b.uid], ["\\Seen"],
                                           FLAGS_ADD)
        self.assertEqual([i.uid for i in added.changed], [1, 2])
        self.assertTrue(all(i.flags == {"\\Seen"} for i in added.changed))
        self.assertGreater(added.changed[0].modseq, b.modseq)
        self.assertEqual(added.highestmodseq, added.changed[0].modseq)
        again = await self.store.set_flags(MAILBOX, "INBOX", [a.uid], ["\\Seen"], FLAGS_ADD)
        self.assertEqual(again.changed, ())
        replaced = await self.store.set_flags(MAILBOX, "INBOX", [a.uid],
                                              ["\\Deleted", "Later"], FLAGS_REPLACE)
        self.assertEqual(replaced.changed[0].flags, {"\\Deleted", "Later"})
        removed = await self.store.set_flags(MAILBOX, "INBOX", [a.uid, b.uid, 77],
                                             ["later", "Later", "\\Seen"], FLAGS_REMOVE)
        self.assertEqual({i.uid: i.flags for i in removed.changed},
                         {1: {"\\Deleted"}, 2: frozenset()})
        status = await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual(status.unseen, 2)
        snapshot = await self.store.open_folder(MAILBOX, "INBOX")
        self.assertEqual([m.flags for m in snapshot.messages], [{"\\Deleted"}, frozenset()])

    @deferred
    async def test_unchanged_since(self):
        """With UNCHANGEDSINCE, messages changed after it are refused and
        reported (RFC 7162 §3.1.3)."""
        a, b = await self.add(), await self.add()
        await self.store.set_flags(MAILBOX, "INBOX", [b.uid], ["\\Flagged"], FLAGS_ADD)
        result = await self.store.set_flags(MAILBOX, "INBOX", [a.uid, b.uid], ["\\Seen"],
                                            FLAGS_ADD, unchanged_since=b.modseq)
        self.assertEqual([i.uid for i in result.changed], [a.uid])
        self.assertEqual(result.modified, (b.uid,))

    @deferred
    async def test_claim_recent(self):
        """\\Recent belongs to the first who claims it."""
        await self.add()
        await self.add()
        self.assertEqual(await self.store.claim_recent(MAILBOX, "INBOX", [2]), (2,))
        self.assertEqual(await self.store.claim_recent(MAILBOX, "INBOX"), (1,))
        self.assertEqual(await self.store.claim_recent(MAILBOX, "INBOX"), ())
        status = await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual(status.recent, 0)

    # --- expunge, copy, move ---

    @deferred
    async def test_expunge(self):
        """EXPUNGE removes messages for good; UIDs are not reused; usage
        follows; the UIDs are reported as vanished."""
        infos = [await self.add(source=message(n)) for n in range(3)]
        result = await self.store.expunge(MAILBOX, "INBOX", [1, 3, 99])
        self.assertEqual(result.uids, (1, 3))
        self.assertEqual(await self.uids(), [2])
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(infos[1].size, 1))
        self.assertEqual((await self.add()).uid, 4)
        changes = await self.store.changes_since(MAILBOX, "INBOX", infos[-1].modseq)
        self.assertEqual(changes.vanished, (1, 3))
        self.assertEqual([i.uid for i in changes.changed], [4])
        nothing = await self.store.expunge(MAILBOX, "INBOX", [1])
        self.assertEqual(nothing.uids, ())

    @deferred
    async def test_old_tombstones_are_pruned_and_say_so(self):
        """Tombstones (RFC 7162 QRESYNC) are kept up to a bound per folder:
        past it the oldest go, and ``vanished_floor`` tells callers asking
        for changes since before the pruned ones that ``vanished`` is no
        longer complete (they must compare UID lists); newer questions get
        exact answers."""
        self.patch(folder_index, "TOMBSTONES_KEPT", 4)
        start = (await self.store.folder_status(MAILBOX, "INBOX")).highestmodseq
        for n in range(6):
            info = await self.add(source=message(n))
            await self.store.expunge(MAILBOX, "INBOX", [info.uid])
        # six tombstones, one per expunge: more than 4 + 4 // 4, so pruned to 4
        changes = await self.store.changes_since(MAILBOX, "INBOX", start)
        self.assertGreater(changes.vanished_floor, start)
        self.assertEqual(changes.vanished, (3, 4, 5, 6))
        recent = await self.store.changes_since(MAILBOX, "INBOX", changes.vanished_floor)
        self.assertEqual(recent.vanished, (3, 4, 5, 6))
        untouched = await self.store.changes_since(MAILBOX, "Sent", 0)
        self.assertEqual(untouched.vanished_floor, 0)

    @deferred
    async def test_copy(self):
        """COPY keeps flags and INTERNALDATE, sets \\Recent, gives the UID map
        (RFC 4315), counts towards usage, and leaves the source alone."""
        a = await self.add(flags=["\\Seen"], internal_date=1_500_000_000.0)
        await self.store.claim_recent(MAILBOX, "INBOX")
        await self.store.create_folder(MAILBOX, "Archive")
        self.clock.advance(60)
        result = await self.store.copy_messages(MAILBOX, "INBOX", [a.uid, 5], "Archive")
        status = await self.store.folder_status(MAILBOX, "Archive")
        self.assertEqual(result.uidvalidity, status.uidvalidity)
        self.assertEqual(result.uid_map, ((1, 1),))
        self.assertIsNone(result.source_highestmodseq)
        [copy] = result.added
        self.assertEqual((copy.flags, copy.internal_date, copy.recent, copy.saved_at),
                         ({"\\Seen"}, 1_500_000_000.0, True, START + 60))
        self.assertEqual(await self.uids(), [1])
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(2 * a.size, 2))
        f = await self.store.open_message(MAILBOX, "Archive", 1)
        with f:
            self.assertEqual(len(f.read()), a.size)
        details = await self.store.message_details(MAILBOX, "Archive", [1])
        self.assertEqual(details[1].subject, "message 1")

    @deferred
    async def test_move(self):
        """MOVE puts messages in the destination and expunges them from the
        source (RFC 6851), without changing usage."""
        a = await self.add(flags=["\\Flagged"])
        b = await self.add()
        result = await self.store.move_messages(MAILBOX, "INBOX", [b.uid, a.uid], "Trash")
        self.assertEqual(result.uid_map, ((1, 1), (2, 2)))
        self.assertEqual(await self.uids(), [])
        trash = (await self.store.open_folder(MAILBOX, "Trash")).messages
        self.assertEqual([m.flags for m in trash], [{"\\Flagged"}, frozenset()])
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(a.size + b.size, 2))
        changes = await self.store.changes_since(MAILBOX, "INBOX", b.modseq)
        self.assertEqual(changes.vanished, (1, 2))
        self.assertEqual(result.source_highestmodseq, changes.highestmodseq)

    @deferred
    async def test_copy_within_the_same_folder(self):
        """COPY into the folder itself makes a second message."""
        await self.add()
        result = await self.store.copy_messages(MAILBOX, "INBOX", [1], "INBOX")
        self.assertEqual(result.uid_map, ((1, 2),))
        self.assertEqual(await self.uids(), [1, 2])

    # --- quota ---

    @deferred
    async def test_quota_refuses_what_does_not_fit(self):
        """An add or copy that would pass the quota is refused whole; what
        fits exactly is accepted."""
        first = await self.add(quota_bytes=1000)
        with self.assertRaises(errors.QuotaExceeded):
            await self.add(quota_bytes=2 * first.size - 1)
        second = await self.add(quota_bytes=2 * first.size)
        with self.assertRaises(errors.QuotaExceeded):
            await self.store.copy_messages(MAILBOX, "INBOX", [1, 2], "Trash",
                                           quota_bytes=3 * first.size)
        self.assertEqual(await self.uids("Trash"), [])
        self.assertEqual(await self.store.mail_usage(MAILBOX),
                         MailUsage(first.size + second.size, 2))
        self.assertEqual(await self.store.usage(MAILBOX), first.size + second.size)

    @deferred
    async def test_usage_counts_every_folder(self):
        """Usage is all folders together."""
        a = await self.add()
        b = await self.add("Spam")
        c = await self.add("Sent", source=io.BytesIO(b"x" * 1000))
        self.assertEqual(await self.store.mail_usage(MAILBOX),
                         MailUsage(a.size + b.size + c.size, 3))

    # --- changes, expiry ---

    @deferred
    async def test_changes_since(self):
        """changes_since reports new and re-flagged messages after a modseq."""
        a = await self.add()
        mark = (await self.store.folder_status(MAILBOX, "INBOX")).highestmodseq
        b = await self.add()
        await self.store.set_flags(MAILBOX, "INBOX", [a.uid], ["\\Answered"], FLAGS_ADD)
        changes = await self.store.changes_since(MAILBOX, "INBOX", mark)
        self.assertEqual([(i.uid, i.flags) for i in changes.changed],
                         [(a.uid, {"\\Answered"}), (b.uid, frozenset())])
        self.assertEqual(changes.vanished, ())
        status = await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual((changes.uidvalidity, changes.uidnext, changes.highestmodseq),
                         (status.uidvalidity, status.uidnext, status.highestmodseq))
        nothing = await self.store.changes_since(MAILBOX, "INBOX",
                                                 changes.highestmodseq)
        self.assertEqual((nothing.changed, nothing.vanished), ((), ()))

    @deferred
    async def test_messages_saved_before(self):
        """Expiry sees when a message came into the folder, not its date."""
        old = await self.add("Spam", internal_date=1_000_000.0)
        self.clock.advance(86400)
        await self.add("Spam")
        await self.store.copy_messages(MAILBOX, "Spam", [old.uid], "Spam")
        found = await self.store.messages_saved_before(MAILBOX, "Spam", START + 3600)
        self.assertEqual([i.uid for i in found], [old.uid])

    # --- removal, restarts ---

    @deferred
    async def test_remove_mailbox(self):
        """Removing a mailbox removes everything; it is idempotent."""
        await self.add()
        await self.store.remove_mailbox(MAILBOX)
        await self.store.remove_mailbox(MAILBOX)
        with self.assertRaises(errors.NoSuchMailbox):
            await self.store.list_folders(MAILBOX)

    @deferred
    async def test_state_survives_a_restart(self):
        """UIDs, UIDVALIDITY, UIDNEXT, flags, subscriptions and usage are the
        same for a new store object on the same data."""
        await self.store.create_folder(MAILBOX, "Kvitton/Försäkring")
        await self.add(flags=["Work"])
        await self.add()
        await self.store.expunge(MAILBOX, "INBOX", [2])
        before = await self.store.open_folder(MAILBOX, "INBOX")
        usage = await self.store.mail_usage(MAILBOX)
        folders = await self.store.list_folders(MAILBOX)
        self.store = self.restart()
        after = await self.store.open_folder(MAILBOX, "INBOX")
        self.assertEqual(after, before)
        self.assertEqual(await self.store.mail_usage(MAILBOX), usage)
        self.assertEqual(await self.store.list_folders(MAILBOX), folders)
        self.assertEqual((await self.add()).uid, 3)


class MemoryMailStoreTests(MailStoreContract, unittest.TestCase):
    def make_store(self):
        return MemoryMailStore(self.clock, files_dir=self.mktemp())

    def restart(self):
        return self.store


class MaildirMailStoreTests(MailStoreContract, unittest.TestCase):
    def make_store(self):
        self.data_dir = self.mktemp()
        return MaildirStore(self.data_dir, self.clock, InlineRunner())

    def restart(self):
        return MaildirStore(self.data_dir, self.clock, InlineRunner())


class PostgresIndexMailStoreTests(MailStoreContract, unittest.TestCase):
    """The Maildir store with its folder indexes in PostgreSQL (nodes
    sharing the Maildirs)."""

    def make_store(self):
        from ktmail.store.folder_index_pg import index_backend
        self.data_dir = self.mktemp()
        db = postgresql.open_database(self)
        return MaildirStore(self.data_dir, self.clock, InlineRunner(),
                            index_backend=index_backend(db))

    def restart(self):
        from ktmail.store.folder_index_pg import index_backend
        return MaildirStore(self.data_dir, self.clock, InlineRunner(),
                            index_backend=index_backend(postgresql.reopen_database(self)))
