"""``ktmail-admin backup DEST`` against a running daemon that is taking
mail meanwhile, and a restore by RESTORE.txt's steps: the accounts, every
message that was there before the backup (same UIDVALIDITY, same UIDs,
same bytes), the folders and the outbound queue come back."""

import imaplib
import os
import shutil
import smtplib
import sqlite3
import stat
import threading

from twisted.trial import unittest

from tests.e2e import PASSWORD, KtmailDaemon

ALICE = ("alice_u", "alice@brev.fi")
BOB = ("bob_u", "bob@brev.fi")


def message(subject, to=ALICE[1], size=2000):
    return (f"From: sender@example.org\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n"
            + "backup body line\r\n" * (size // 18)).encode()


class BackupTests(unittest.TestCase):
    def setUp(self):
        self.d = KtmailDaemon(self.mktemp(), listeners=("smtp", "submission", "imap"))
        self.addCleanup(self.d.stop)
        self.d.start()
        self.d.add_mailboxes([ALICE, BOB])

    def imap(self, user=ALICE[0]):
        m = imaplib.IMAP4_SSL("localhost", self.d.ports["imap"], ssl_context=self.d.client_tls())
        m.login(user, PASSWORD)
        return m

    def snapshot(self, folder):
        """(UIDVALIDITY, {uid: message bytes}) of a folder, over IMAP."""
        m = self.imap()
        m.select(folder, readonly=True)
        validity = int(m.response("UIDVALIDITY")[1][0])
        _typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
        messages = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(item[0].split(b"UID ")[1].split()[0])
                messages[uid] = item[1]
        m.logout()
        return validity, messages

    def test_backup_while_running_and_restore(self):
        """See the module docstring."""
        d = self.d
        with d.smtp() as s:
            for i in range(30):
                s.sendmail("sender@example.org", [ALICE[1]], message(f"before {i}"))
        m = self.imap()
        m.create("Archive")
        for i in range(5):
            m.append("Archive", "(\\Seen)", None, message(f"archived {i}", size=90_000))
        m.select("INBOX")
        m.uid("STORE", "1:3", "+FLAGS", "(\\Flagged)")
        m.logout()
        with d.submission(ALICE[0]) as s:   # one remote recipient: waits in the queue
            s.sendmail(ALICE[1], ["friend@example.net"], message("queued", "friend@example.net")
                       .replace(b"From: sender@example.org", b"From: alice@brev.fi"))
        before = {folder: self.snapshot(folder) for folder in ("INBOX", "Archive")}
        self.assertEqual(len(before["INBOX"][1]), 30)

        # mail keeps arriving and being moved while the backup runs
        stop = threading.Event()

        def storm():
            n = 0
            with smtplib.SMTP("127.0.0.1", d.ports["smtp"], timeout=30) as s:
                while not stop.is_set():
                    s.sendmail("sender@example.org", [BOB[1]], message(f"during {n}", BOB[1]))
                    n += 1
        worker = threading.Thread(target=storm)
        worker.start()
        dest = os.path.join(d.root, "backup-1")
        try:
            result = d.admin("backup", dest)
        finally:
            stop.set()
            worker.join(30)
        self.assertIn("mail: 2 mailboxes", result.stdout)
        self.assertIn("RESTORE.txt", result.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(dest).st_mode), 0o700)
        with sqlite3.connect(os.path.join(dest, "ktmail.db")) as db:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(db.execute("SELECT count(*) FROM mailboxes").fetchone()[0], 2)
        with open(os.path.join(dest, "RESTORE.txt"), encoding="utf-8") as f:
            note = f.read()
        self.assertIn("cp -a", note)
        again = d.admin("backup", dest, check=False)
        self.assertEqual(again.returncode, 1)
        self.assertIn("not an empty directory", again.stderr)

        # restore as RESTORE.txt says
        d.stop()
        shutil.move(d.data_dir, d.data_dir + ".old")
        shutil.copytree(dest, d.data_dir, symlinks=True)
        os.unlink(os.path.join(d.data_dir, "RESTORE.txt"))
        d.start()
        for folder, (validity, messages) in before.items():
            now_validity, now_messages = self.snapshot(folder)
            self.assertEqual(now_validity, validity, folder)
            for uid, data in messages.items():
                self.assertEqual(now_messages.get(uid), data, (folder, uid))
        m = self.imap()
        m.select("INBOX", readonly=True)
        _typ, flagged = m.uid("SEARCH", "FLAGGED")
        self.assertEqual(flagged[0].split(), [b"1", b"2", b"3"])
        m.logout()
        self.imap(BOB[0]).logout()   # the accounts came back
        queue = d.admin("queue", "list").stdout
        self.assertIn("friend@example.net", queue)
