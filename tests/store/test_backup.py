"""store/backup.py on a data directory laid out by hand: what is copied,
with which modes, and what happens to messages that are renamed, moved
or deleted while the copy runs."""

import os
import sqlite3
import stat

from twisted.trial import unittest

from ktmail.config import DatabaseConfig
from ktmail.store.backup import BackupError, DataBackup
from ktmail.store.folder_index import INDEX_FILENAME, LOCK_FILENAME


def write(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class BackupTests(unittest.TestCase):
    def setUp(self):
        self.data = os.path.abspath(self.mktemp())
        box = self.box = os.path.join(self.data, "mail", "1")
        for folder in ("", ".Archive"):
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(box, folder, sub))
        write(os.path.join(box, ".Archive", "maildirfolder"), b"")
        write(os.path.join(box, "ktmail-uidvalidity"), b"1700000000\n")
        write(os.path.join(box, LOCK_FILENAME), b"")
        with sqlite3.connect(os.path.join(box, INDEX_FILENAME)) as db:
            db.execute("CREATE TABLE t (x)")
            db.execute("INSERT INTO t VALUES (42)")
        for name in ("1.a,S=5:2,S", "2.b,S=5:2,", "3.c,S=5:2,", "4.d,S=5:2,"):
            write(os.path.join(box, "cur", name), b"msg " + name[:1].encode())
        write(os.path.join(box, "new", "5.e,S=5"), b"msg 5")
        write(os.path.join(box, "tmp", "6.f"), b"half a mess")
        with sqlite3.connect(os.path.join(self.data, "ktmail.db")) as db:
            db.execute("CREATE TABLE mailboxes (id)")
        write(os.path.join(self.data, "queue", "abc.json"), b"{}")
        write(os.path.join(self.data, "queue", "abc.msg"), b"m")
        write(os.path.join(self.data, "queue", ".lock"), b"")
        write(os.path.join(self.data, "dkim", "brev.fi", "k1.key"), b"KEY")
        self.database = DatabaseConfig(kind="sqlite", path=os.path.join(self.data, "ktmail.db"))

    def test_copy(self):
        """Database and indexes through SQLite's backup API, message files,
        folders, small files, queue and DKIM keys; nothing from tmp/, no
        lock files; everything private; RESTORE.txt says what to do."""
        dest = os.path.abspath(self.mktemp())
        summary = DataBackup(self.data, self.database).run(dest, "now")
        self.assertEqual((summary.mailboxes, summary.messages, summary.queue_files,
                          summary.dkim_files), (1, 5, 2, 1))
        out = os.path.join(dest, "mail", "1")
        self.assertEqual(sorted(os.listdir(os.path.join(out, "cur"))),
                         ["1.a,S=5:2,S", "2.b,S=5:2,", "3.c,S=5:2,", "4.d,S=5:2,"])
        self.assertEqual(os.listdir(os.path.join(out, "tmp")), [])
        self.assertTrue(os.path.exists(os.path.join(out, ".Archive", "maildirfolder")))
        self.assertTrue(os.path.isdir(os.path.join(out, ".Archive", "new")))
        self.assertFalse(os.path.exists(os.path.join(out, LOCK_FILENAME)))
        self.assertFalse(os.path.exists(os.path.join(dest, "queue", ".lock")))
        with sqlite3.connect(os.path.join(out, INDEX_FILENAME)) as db:
            self.assertEqual(db.execute("SELECT x FROM t").fetchone(), (42,))
        for directory, dirs, files in os.walk(dest):
            self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700, directory)
            for name in files:
                self.assertEqual(stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode),
                                 0o600, name)
        with open(os.path.join(dest, "RESTORE.txt")) as f:
            self.assertIn("ktmail.db in this backup", f.read())

    def test_changes_during_the_copy(self):
        """Between the listing and the copy one message gets a flag (renamed),
        one is moved to Archive under a new name (IMAP MOVE), one is
        deleted and one is delivered: the renamed and the moved one are in
        the backup once each, under their new names; the deleted one is not;
        the new one is."""
        box = self.box

        class Meddling(DataBackup):
            meddled = False

            def _message(inner, path, target, rel, summary, copied):
                if not Meddling.meddled:
                    Meddling.meddled = True
                    os.rename(os.path.join(box, "cur", "2.b,S=5:2,"),
                              os.path.join(box, "cur", "2.b,S=5:2,F"))
                    os.rename(os.path.join(box, "cur", "3.c,S=5:2,"),
                              os.path.join(box, ".Archive", "cur", "9.z,S=5:2,"))
                    os.unlink(os.path.join(box, "cur", "4.d,S=5:2,"))
                    write(os.path.join(box, "new", "7.g,S=5"), b"msg 7")
                return DataBackup._message(path, target, rel, summary, copied)

        dest = os.path.abspath(self.mktemp())
        Meddling(self.data, self.database).run(dest, "now")
        out = os.path.join(dest, "mail", "1")
        self.assertEqual(sorted(os.listdir(os.path.join(out, "cur"))),
                         ["1.a,S=5:2,S", "2.b,S=5:2,F"])
        self.assertEqual(os.listdir(os.path.join(out, ".Archive", "cur")), ["9.z,S=5:2,"])
        self.assertEqual(sorted(os.listdir(os.path.join(out, "new"))), ["5.e,S=5", "7.g,S=5"])

    def test_refusals(self):
        """DEST must be new or empty and outside the data directory."""
        busy = self.mktemp()
        write(os.path.join(busy, "x"))
        with self.assertRaises(BackupError):
            DataBackup(self.data, self.database).run(busy, "now")
        with self.assertRaises(BackupError):
            DataBackup(self.data, self.database).run(os.path.join(self.data, "bk"), "now")

    def test_postgresql(self):
        """With PostgreSQL the database is left to pg_dump: RESTORE.txt says
        how, without the URL's password; the Maildirs are still copied."""
        database = DatabaseConfig(kind="postgresql",
                                  url="postgresql://ktmail:s3cret@db.example/ktmail")
        dest = os.path.abspath(self.mktemp())
        summary = DataBackup(self.data, database, sqlite_indexes=False).run(dest, "now")
        with open(os.path.join(dest, "RESTORE.txt")) as f:
            note = f.read()
        self.assertIn("pg_dump", note)
        self.assertNotIn("s3cret", note)
        self.assertFalse(os.path.exists(os.path.join(dest, "ktmail.db")))
        self.assertEqual(summary.messages, 5)
