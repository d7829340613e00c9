"""What only the Maildir store has: the files on disk, what other tools and
crashes leave there, index loss, other processes, and real threads."""

import io
import os
import shutil
import sqlite3
import threading

from twisted.internet import defer, reactor, task, threads
from twisted.python.threadpool import ThreadPool
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import FLAGS_ADD, MailUsage
from ktmail.services import deferred
from ktmail.store import folder_index, maildir
from ktmail.store.maildir import MaildirStore
from ktmail.store.sqlite import InlineRunner

MAILBOX = 3
START = 1_700_000_000


def message(n=1, size=0):
    return io.BytesIO(b"Subject: message %d\r\n\r\n" % n + b"x" * size + b"\r\n")


def listing(path):
    return sorted(os.listdir(path))


class MaildirTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.data_dir = self.mktemp()
        self.store = self.new_store()
        self.successResultOf(self.store.create_mailbox(MAILBOX))
        self.root = self.store.mailbox_path(MAILBOX)

    def new_store(self):
        return MaildirStore(self.data_dir, self.clock, InlineRunner())

    def restart(self):
        self.store = self.new_store()

    async def add(self, folder="INBOX", source=None, **kwargs):
        stored = await self.store.add_message(MAILBOX, folder, source or message(), **kwargs)
        return stored.info

    async def snapshot(self, folder="INBOX"):
        return await self.store.open_folder(MAILBOX, folder)

    def drop_file(self, subdir, name, data, folder_dir=""):
        """Write a message the way another Maildir tool would."""
        path = os.path.join(self.root, folder_dir, subdir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class LayoutTests(MaildirTestCase):
    def test_mailbox_layout(self):
        """A new mailbox is Maildir++: cur new tmp for INBOX, a dot directory
        with maildirfolder for each other folder, and the index beside them."""
        entries = listing(self.root)
        for name in ("cur", "new", "tmp", ".Sent", ".Drafts", ".Trash", ".Spam",
                     folder_index.INDEX_FILENAME):
            self.assertIn(name, entries)
        self.assertEqual(listing(os.path.join(self.root, ".Spam")),
                         ["cur", "maildirfolder", "new", "tmp"])
        self.assertEqual(self.store.mailbox_path(MAILBOX),
                         os.path.join(self.data_dir, "mail", str(MAILBOX)))

    @deferred
    async def test_folder_names_on_disk_are_modified_utf7(self):
        """Kvitton/Försäkring is the directory .Kvitton.F&APY-rs&AOQ-kring, as
        Dovecot writes it; '&' is '&-'."""
        await self.store.create_folder(MAILBOX, "Kvitton/Försäkring")
        await self.store.create_folder(MAILBOX, "R&D")
        entries = listing(self.root)
        self.assertIn(".Kvitton", entries)
        self.assertIn(".Kvitton.F&APY-rs&AOQ-kring", entries)
        self.assertIn(".R&-D", entries)

    @deferred
    async def test_message_file_names(self):
        """A delivered message is new/<unique>,S=<size>; flags rename it into
        cur/ with :2,<letters> in ASCII order; the key stays the same."""
        info = await self.add()
        [name] = listing(os.path.join(self.root, "new"))
        self.assertEqual(name, info.key)
        self.assertTrue(name.endswith(f",S={info.size}"))
        self.assertIn(f"P{os.getpid()}Q", name)
        await self.store.set_flags(MAILBOX, "INBOX", [info.uid],
                                   ["\\Seen", "\\Answered", "\\Flagged", "$Forwarded"],
                                   FLAGS_ADD)
        self.assertEqual(listing(os.path.join(self.root, "new")), [])
        self.assertEqual(listing(os.path.join(self.root, "cur")), [info.key + ":2,FPRS"])
        [loaded] = (await self.snapshot()).messages
        self.assertEqual(loaded.key, info.key)

    @deferred
    async def test_append_with_flags_goes_to_cur(self):
        """A message added with flags goes straight to cur/ with its letters."""
        info = await self.add(flags=["\\Draft", "\\Seen", "Custom"])
        self.assertEqual(listing(os.path.join(self.root, "cur")), [info.key + ":2,DS"])

    @deferred
    async def test_claiming_recent_moves_new_to_cur(self):
        """The first session to open a folder takes new/ messages to cur/."""
        info = await self.add()
        await self.store.claim_recent(MAILBOX, "INBOX")
        self.assertEqual(listing(os.path.join(self.root, "cur")), [info.key + ":2,"])

    @deferred
    async def test_internal_date_is_the_file_mtime(self):
        """The INTERNALDATE is kept as the file's mtime (as Dovecot does), so a
        rebuilt index finds it again."""
        info = await self.add(internal_date=1_600_000_000.0)
        st = os.stat(os.path.join(self.root, "new", info.key))
        self.assertEqual(st.st_mtime, 1_600_000_000.0)

    @deferred
    async def test_copy_is_a_hard_link(self):
        """COPY links the file instead of copying 50 MB."""
        info = await self.add()
        await self.store.copy_messages(MAILBOX, "INBOX", [info.uid], "Trash")
        self.assertEqual(os.stat(os.path.join(self.root, "new", info.key)).st_nlink, 2)

    @deferred
    async def test_copy_falls_back_to_copying(self):
        """Where hard links fail, COPY copies the file."""
        info = await self.add()

        def no_link(src, dst):
            raise OSError(maildir.errno.EXDEV, "cross-device link")
        self.patch(maildir.os, "link", no_link)
        result = await self.store.copy_messages(MAILBOX, "INBOX", [info.uid], "Trash")
        f = await self.store.open_message(MAILBOX, "Trash", result.uid_map[0][1])
        with f:
            self.assertEqual(len(f.read()), info.size)
        self.assertEqual(os.stat(os.path.join(self.root, "new", info.key)).st_nlink, 1)

    @deferred
    async def test_clean_spooled_message_is_linked_not_copied(self):
        """A spooled APPEND literal that already has CRLF line endings is
        hard-linked into the Maildir (a 50 MiB message is not written twice);
        one with bare LFs is copied and repaired."""
        spool_dir = os.path.join(self.data_dir, "spool")
        os.makedirs(spool_dir)
        clean = os.path.join(spool_dir, "clean")
        with open(clean, "wb") as f:
            f.write(b"Subject: clean\r\n\r\nbody\r\n")
        info = await self.add(source=clean)
        self.assertEqual(os.stat(clean).st_nlink, 2)
        os.unlink(clean)  # the caller discards its spool; the message stays
        f = await self.store.open_message(MAILBOX, "INBOX", info.uid)
        with f:
            self.assertEqual(f.read(), b"Subject: clean\r\n\r\nbody\r\n")
        bare = os.path.join(spool_dir, "bare")
        with open(bare, "wb") as f:
            f.write(b"Subject: bare\n\nbody\n")
        info = await self.add(source=bare)
        self.assertEqual(os.stat(bare).st_nlink, 1)
        self.assertEqual(info.size, len(b"Subject: bare\r\n\r\nbody\r\n"))

    @deferred
    async def test_mail_is_private(self):
        """Mailbox directories are 0700 and message files 0600, whatever the umask."""
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        info = await self.add()
        self.assertEqual(os.stat(self.root).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(self.root, "new", info.key)).st_mode & 0o777,
                         0o600)
        self.assertEqual(os.stat(os.path.join(self.root, folder_index.INDEX_FILENAME))
                         .st_mode & 0o777, 0o600)

    @deferred
    async def test_folder_dirs_and_files_are_readable_by_other_tools(self):
        """Every message is a plain file in cur/ or new/ of its folder."""
        await self.store.create_folder(MAILBOX, "Work")
        await self.add("Work")
        self.assertEqual(len(listing(os.path.join(self.root, ".Work", "new"))), 1)
        self.assertTrue(os.path.exists(os.path.join(self.root, ".Work", "maildirfolder")))


class RestartTests(MaildirTestCase):
    @deferred
    async def test_uids_and_uidvalidity_survive_a_restart(self):
        """A new store object (a restarted daemon) sees the same UIDs,
        UIDVALIDITY and UIDNEXT."""
        for n in range(3):
            await self.add(source=message(n))
        await self.store.expunge(MAILBOX, "INBOX", [3])
        before = await self.snapshot()
        self.restart()
        after = await self.snapshot()
        self.assertEqual(after.messages, before.messages)
        self.assertEqual(after.status.uidvalidity, before.status.uidvalidity)
        self.assertEqual(after.status.uidnext, 4)
        self.assertEqual((await self.add()).uid, 4)

    @deferred
    async def test_lost_index_is_rebuilt_with_new_uidvalidity(self):
        """Without its index the mailbox is rebuilt from the Maildir: every
        message and folder is back, flags from the file names, usage exact,
        and UIDVALIDITY changes because the old UIDs cannot be known."""
        await self.store.create_folder(MAILBOX, "Kvitton/Försäkring")
        a = await self.add(flags=["\\Seen"], internal_date=1_600_000_000.0)
        await self.add("Kvitton/Försäkring")
        before = await self.snapshot()
        usage = await self.store.mail_usage(MAILBOX)
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(self.root, folder_index.INDEX_FILENAME + suffix)
            if os.path.exists(path):
                os.unlink(path)
        self.restart()
        after = await self.snapshot()
        self.assertNotEqual(after.status.uidvalidity, before.status.uidvalidity)
        self.assertGreater(after.status.uidvalidity, before.status.uidvalidity)
        [rebuilt] = after.messages
        self.assertEqual((rebuilt.key, rebuilt.flags, rebuilt.size, rebuilt.internal_date),
                         (a.key, {"\\Seen"}, a.size, 1_600_000_000.0))
        self.assertEqual(await self.store.mail_usage(MAILBOX), usage)
        names = [f.name for f in await self.store.list_folders(MAILBOX)]
        self.assertIn("Kvitton/Försäkring", names)
        self.assertEqual(len((await self.snapshot("Kvitton/Försäkring")).messages), 1)

    @deferred
    async def test_index_lost_while_running_is_rebuilt(self):
        """The running store notices its index file was deleted and rebuilds."""
        await self.add()
        before = await self.snapshot()
        os.unlink(os.path.join(self.root, folder_index.INDEX_FILENAME))
        after = await self.snapshot()
        self.assertNotEqual(after.status.uidvalidity, before.status.uidvalidity)
        self.assertEqual(len(after.messages), 1)

    @deferred
    async def test_corrupt_index_is_set_aside_and_rebuilt(self):
        """An unreadable index is kept aside for inspection and rebuilt."""
        await self.add()
        self.store = None
        path = os.path.join(self.root, folder_index.INDEX_FILENAME)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 100)
        self.restart()
        self.assertEqual(len((await self.snapshot()).messages), 1)
        self.assertTrue(any(".unusable-" in n for n in os.listdir(self.root)))


class ForeignChangeTests(MaildirTestCase):
    @deferred
    async def test_files_dropped_into_new_get_new_uids(self):
        """A file another tool drops into new/ appears with the next UID, with
        CRLF line endings and a size in its name; so does one in cur/ with
        flags."""
        await self.add()
        await self.snapshot()
        self.drop_file("new", "1699999999.foreign.host", b"Subject: dropped\n\nhello\n")
        self.drop_file("cur", "1699999998.other.host:2,S", b"Subject: seen\r\n\r\nhi\r\n")
        snapshot = await self.snapshot()
        self.assertEqual([m.uid for m in snapshot.messages], [1, 2, 3])
        dropped = {m.uid: m for m in snapshot.messages}
        self.assertEqual(dropped[2].flags, {"\\Seen"})
        self.assertTrue(dropped[3].recent)
        f = await self.store.open_message(MAILBOX, "INBOX", 3)
        with f:
            data = f.read()
        self.assertEqual(data, b"Subject: dropped\r\n\r\nhello\r\n")
        self.assertEqual(dropped[3].size, len(data))
        self.assertIn(f",S={len(data)}", dropped[3].key)
        self.assertEqual((await self.store.mail_usage(MAILBOX)).messages, 3)

    @deferred
    async def test_files_removed_by_another_tool_are_expunged(self):
        """A message file deleted behind the store's back is expunged from the
        index (and reported as vanished), and usage follows."""
        a = await self.add()
        b = await self.add()
        os.unlink(os.path.join(self.root, "new", a.key))
        changes = await self.store.changes_since(MAILBOX, "INBOX", b.modseq)
        self.assertEqual(changes.vanished, (a.uid,))
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(b.size, 1))

    @deferred
    async def test_flags_changed_by_another_tool_win(self):
        """Flags in the file name win over the index."""
        a = await self.add(flags=["\\Seen", "Work"])
        os.rename(os.path.join(self.root, "cur", a.key + ":2,S"),
                  os.path.join(self.root, "cur", a.key + ":2,FT"))
        changes = await self.store.changes_since(MAILBOX, "INBOX", a.modseq)
        [changed] = changes.changed
        self.assertEqual(changed.flags, {"\\Flagged", "\\Deleted", "Work"})
        self.assertGreater(changed.modseq, a.modseq)

    @deferred
    async def test_folders_made_and_removed_by_other_tools(self):
        """A Maildir++ folder made by another tool is listed (and a UTF-8
        name is taken as it is); one removed disappears with its usage."""
        for name in (".Lists.Python", ".Räkningar"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(self.root, name, sub))
        self.drop_file("new", "1.x.host", b"Subject: a\r\n\r\n", ".Lists.Python")
        names = [f.name for f in await self.store.list_folders(MAILBOX)]
        self.assertIn("Lists/Python", names)
        self.assertIn("Räkningar", names)
        self.assertEqual(len((await self.snapshot("Lists/Python")).messages), 1)
        shutil.rmtree(os.path.join(self.root, ".Lists.Python"))
        names = [f.name for f in await self.store.list_folders(MAILBOX)]
        self.assertNotIn("Lists/Python", names)
        self.assertEqual((await self.store.mail_usage(MAILBOX)).messages, 0)

    @deferred
    async def test_another_process_changing_the_index_is_seen(self):
        """ktmail-admin (another store object, as in another process) expunges;
        the daemon's store reports it on its next look."""
        a = await self.add()
        b = await self.add()
        await self.snapshot()
        other = self.new_store()
        await other.expunge(MAILBOX, "INBOX", [a.uid])
        changes = await self.store.changes_since(MAILBOX, "INBOX", b.modseq)
        self.assertEqual(changes.vanished, (a.uid,))
        self.assertEqual([m.uid for m in (await self.snapshot()).messages], [b.uid])

    def settle(self):
        """Let the clock pass the directories' mtimes (they count as settled)."""
        newest = max(os.stat(os.path.join(self.root, d)).st_mtime for d in ("new", "cur"))
        self.clock.advance(max(0, newest - self.clock.seconds()) + 3600)

    @deferred
    async def test_only_the_changed_directory_is_listed(self):
        """A file dropped into new/ makes the store list new/ only, not a big cur/."""
        for n in range(3):
            await self.add(flags=["\\Seen"], source=message(n))
        self.settle()
        await self.snapshot()
        listed = []
        real_listdir = os.listdir
        self.patch(maildir.os, "listdir",
                   lambda path: listed.append(os.path.basename(path)) or real_listdir(path))
        self.drop_file("new", "1.dropped.host", b"Subject: x\r\n\r\n")
        snapshot = await self.snapshot()
        self.assertEqual([m.uid for m in snapshot.messages], [1, 2, 3, 4])
        self.assertEqual([d for d in listed if d in ("new", "cur")], ["new"])

    @deferred
    async def test_move_seen_in_one_directory_only_keeps_the_uid(self):
        """A message another tool moved from cur/ to new/ keeps its UID even if
        cur/'s mtime did not visibly change (timestamp granularity)."""
        info = await self.add(flags=["\\Seen"])
        self.settle()
        await self.snapshot()
        cur = os.path.join(self.root, "cur")
        before = os.stat(cur).st_mtime_ns
        os.rename(os.path.join(cur, info.key + ":2,S"),
                  os.path.join(self.root, "new", info.key))
        os.utime(cur, ns=(before, before))
        [moved] = (await self.snapshot()).messages
        self.assertEqual((moved.uid, moved.flags), (info.uid, frozenset()))

    @deferred
    async def test_unchanged_folder_is_not_rescanned(self):
        """Once a folder was scanned in this process and its directories did
        not change, loading it does not list the directories again."""
        await self.add()
        await self.store.claim_recent(MAILBOX, "INBOX")
        # a while later the mtimes of new/ and cur/ are settled
        newest = max(os.stat(os.path.join(self.root, d)).st_mtime for d in ("new", "cur"))
        self.clock.advance(max(0, newest - self.clock.seconds()) + 3600)
        await self.snapshot()
        scanned = []
        real_scandir = os.scandir
        self.patch(maildir.os, "scandir",
                   lambda path: scanned.append(path) or real_scandir(path))
        await self.snapshot()
        await self.store.folder_status(MAILBOX, "INBOX")
        self.assertEqual(scanned, [])


class CrashTests(MaildirTestCase):
    @deferred
    async def test_failure_before_the_rename_leaves_nothing(self):
        """A delivery that fails between writing tmp/ and the rename leaves no
        message, no tmp file, and no usage."""
        def crash(src, dst):
            raise OSError("simulated crash before rename")
        self.patch(maildir, "publish", crash)
        with self.assertRaises(OSError):
            await self.add()
        self.assertEqual((await self.snapshot()).messages, ())
        self.assertEqual(listing(os.path.join(self.root, "tmp")), [])
        self.assertEqual(listing(os.path.join(self.root, "new")), [])
        self.assertEqual(await self.store.mail_usage(MAILBOX), MailUsage(0, 0))

    @deferred
    async def test_failure_before_the_index_commit_leaves_nothing(self):
        """If the index cannot record a published message, the file is taken
        back: the delivery failed as a whole and the message will not appear
        later as an unknown file."""
        def broken(*args):
            raise sqlite3.OperationalError("disk I/O error")
        self.patch(folder_index, "insert_message", broken)
        with self.assertRaises(sqlite3.OperationalError):
            await self.add()
        self.restart()
        self.assertEqual((await self.snapshot()).messages, ())
        self.assertEqual(listing(os.path.join(self.root, "new")), [])

    @deferred
    async def test_killed_between_write_and_rename(self):
        """A process killed after writing tmp/ but before the rename leaves a
        tmp file that no listing shows, and the next start removes it."""
        await self.add()
        dead_pid = 2 ** 22 + 12345  # above pid_max: never a running process
        host = maildir._host_part()
        orphan = self.drop_file("tmp", f"{START}.M1P{dead_pid}Q1Rabcd.{host}",
                                b"Subject: half\r\n\r\nhal")
        self.assertEqual(len((await self.snapshot()).messages), 1)
        self.restart()
        self.assertEqual(len((await self.snapshot()).messages), 1)
        self.assertEqual(await self.store.clean_stale_files(), 1)
        self.assertFalse(os.path.exists(orphan))

    @deferred
    async def test_killed_between_rename_and_commit(self):
        """A file published but never indexed (killed before the commit) is
        found on the next start and gets a UID: nothing acknowledged is lost."""
        await self.add()
        self.drop_file("new", f"{START}.M2P1Q9Rab.{maildir._host_part()},S=20",
                       b"Subject: late\r\n\r\nxx")
        self.restart()
        snapshot = await self.snapshot()
        self.assertEqual([m.uid for m in snapshot.messages], [1, 2])
        self.assertEqual((await self.store.mail_usage(MAILBOX)).messages, 2)

    @deferred
    async def test_stale_tmp_clean_up(self):
        """Clean-up removes tmp/ files older than 36 hours and files of dead
        processes of this host, in every folder; it keeps fresh files of
        running processes and of other hosts."""
        host = maildir._host_part()
        now = START
        fresh_foreign = self.drop_file("tmp", f"{now}.M1P1Q1Rab.other-host", b"x")
        old_foreign = self.drop_file("tmp", "anything", b"x", ".Sent")
        os.utime(old_foreign, (now - 37 * 3600, now - 37 * 3600))
        ours_alive = self.drop_file("tmp", f"{now}.M1P{os.getpid()}Q7Rab.{host}", b"x")
        for path in (fresh_foreign, ours_alive):
            os.utime(path, (now - 3600, now - 3600))
        dead = self.drop_file("tmp", f"{now}.M1P{2 ** 22 + 7}Q1Rab.{host}", b"x", ".Spam")
        self.assertEqual(await self.store.clean_stale_files(), 2)
        self.assertFalse(os.path.exists(old_foreign))
        self.assertFalse(os.path.exists(dead))
        self.assertTrue(os.path.exists(fresh_foreign))
        self.assertTrue(os.path.exists(ours_alive))

    @deferred
    async def test_interrupted_removals_are_finished(self):
        """Leftovers of a mailbox or folder removal interrupted by a crash
        are deleted at start."""
        await self.store.create_folder(MAILBOX, "Gone")
        os.rename(os.path.join(self.root, ".Gone"),
                  os.path.join(self.root, maildir.DELETED_PREFIX + "x"))
        os.makedirs(os.path.join(self.data_dir, "mail", ".removed-9-abc", "cur"))
        await self.store.clean_stale_files()
        self.assertNotIn(maildir.DELETED_PREFIX + "x", os.listdir(self.root))
        self.assertNotIn(".removed-9-abc", os.listdir(os.path.join(self.data_dir, "mail")))


class ThreadedTests(unittest.TestCase):
    """The store on a real thread pool, as in the daemon."""

    def setUp(self):
        self.pool = ThreadPool(minthreads=4, maxthreads=8, name="test-mail")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.data_dir = self.mktemp()

    def store(self):
        def run(fn, *args):
            return threads.deferToThreadPool(reactor, self.pool, fn, *args)
        return MaildirStore(self.data_dir, reactor, run)

    @deferred
    async def test_quota_is_exact_under_concurrent_adds_and_deletes(self):
        """Many concurrent deliveries and expunges, through two store objects
        (the daemon and ktmail-admin): exactly what fits is stored, and the
        usage matches the files on disk."""
        first, second = self.store(), self.store()
        await first.create_mailbox(MAILBOX)
        size = len(message(0, 1000).getvalue())
        quota = size * 25
        seeded = [await first.add_message(MAILBOX, "INBOX", message(0, 1000))
                  for _ in range(5)]
        attempts = [store.add_message(MAILBOX, "INBOX", message(n, 1000), quota_bytes=quota)
                    for n in range(40) for store in [(first, second)[n % 2]]]
        deletes = [second.expunge(MAILBOX, "INBOX", [s.info.uid]) for s in seeded]
        results = await defer.DeferredList(attempts + deletes, consumeErrors=True)
        stored = [r for ok, r in results[:40] if ok]
        refused = [r for ok, r in results[:40] if not ok]
        self.assertTrue(all(f.check(errors.QuotaExceeded) for f in refused))
        self.assertTrue(all(ok for ok, _ in results[40:]))
        usage = await first.mail_usage(MAILBOX)
        root = first.mailbox_path(MAILBOX)
        on_disk = [os.path.getsize(os.path.join(root, sub, n))
                   for sub in ("new", "cur") for n in os.listdir(os.path.join(root, sub))]
        self.assertEqual(usage, MailUsage(sum(on_disk), len(on_disk)))
        self.assertEqual(usage.messages, len(stored))
        self.assertLessEqual(usage.bytes, quota)
        # deletes ran among the adds, so at least the 20 that fit at any time got in
        self.assertGreaterEqual(len(stored), 20)
        uids = [s.info.uid for s in stored]
        self.assertEqual(len(set(uids)), len(uids))

    def test_direct_calls_from_many_threads(self):
        """The locking holds without the per-mailbox queue too: raw calls from
        16 threads (two mailbox objects, like two processes) lose nothing."""
        clock = task.Clock()
        boxes = [maildir.MaildirMailbox(os.path.join(self.data_dir, "m"), clock,
                                        maildir._NameMaker(clock)) for _ in range(2)]
        os.makedirs(boxes[0].path)
        with boxes[0].locked():
            boxes[0].create_defaults()
        failures = []

        def deliver(box, n):
            try:
                staged = box.stage(message(n), b"")
                with box.locked():
                    box.commit_staged(staged, "INBOX", (), None, None)
            except Exception as e:  # collected for the assertion below
                failures.append(e)

        workers = [threading.Thread(target=deliver, args=(boxes[n % 2], n)) for n in range(16)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.assertEqual(failures, [])
        with boxes[1].locked():
            snapshot = boxes[1].open_folder("INBOX")
            usage = boxes[1].usage()
        self.assertEqual([m.uid for m in snapshot.messages], list(range(1, 17)))
        self.assertEqual(usage.messages, 16)
        for box in boxes:
            box.close()
