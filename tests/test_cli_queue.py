"""``ktmail-admin queue ...`` and ``ktmail-admin dkim show``, run as a
subprocess against a temporary config, the way an operator runs them."""

import os
import subprocess
import sys
import time

from twisted.trial import unittest

from ktmail.model import DELIVERED, QueuedRecipient, QueueEntry
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.queue import DiskQueueStore
from ktmail.store.sqlite import InlineRunner

CONFIG = """\
[ktmail]
hostname = mail.ktnet.fi
data_dir = data
[listen]
smtp =
submission =
imap =
pop3 =
web =
"""


class QueueCommandTests(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "ktmail.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.data_dir = os.path.join(self.dir, "data")
        self.store = DiskQueueStore(self.data_dir, InlineRunner())
        now = time.time()
        self.entry = QueueEntry(
            id="5eed0123456789ab", sender="anna@sboksi.fi", created=now - 7260, size=2048,
            recipients=(
                QueuedRecipient("bob@example.net", attempts=3, next_attempt=now + 1800,
                                last_error="451 4.7.1 Greylisted", remote_mta="mx.example.net"),
                QueuedRecipient("eve@example.org", state=DELIVERED, attempts=1,
                                reply="250 2.0.0 Ok: queued as 42")))
        self.store.add_bytes(self.entry, b"Subject: x\r\n\r\ny\r\n")

    def admin(self, *args):
        return subprocess.run(
            [sys.executable, "-m", "ktmail.cli", "--config", self.config, *args],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)

    def test_list(self):
        """queue list shows id, age, sender, size and every recipient with
        its state, attempts, next attempt and last error."""
        done = self.admin("queue", "list")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        lines = done.stdout.splitlines()
        self.assertEqual(lines[0], "5eed0123456789ab  age 2h01m  from <anna@sboksi.fi>  2.0 kB")
        self.assertRegex(lines[1], r"^    bob@example\.net  pending  3 attempt\(s\)  next "
                                   r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 29m\)  "
                                   r"last error: 451 4\.7\.1 Greylisted$")
        self.assertEqual(lines[2], "    eve@example.org  delivered  1 attempt(s)  "
                                   "250 2.0.0 Ok: queued as 42")
        self.assertEqual(lines[3], "1 message(s) queued, 1 recipient(s) waiting")

    def test_retry_one(self):
        """queue retry ID makes its waiting recipients due now and tells a
        running daemon (the change token moves)."""
        token = self.store.change_token().result
        done = self.admin("queue", "retry", self.entry.id)
        self.assertEqual((done.returncode, done.stdout),
                         (0, "1 message(s) will be tried again within seconds\n"))
        entry = self.store.get(self.entry.id).result
        self.assertLessEqual(entry.recipient("bob@example.net").next_attempt, time.time())
        self.assertNotEqual(self.store.change_token().result, token)

    def test_retry_unknown(self):
        """An unknown id is refused with exit status 1 and one line."""
        done = self.admin("queue", "retry", "feedfeedfeedfeed")
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr,
                         "ktmail-admin: There is no queued message 'feedfeedfeedfeed'.\n")

    def test_remove(self):
        """queue remove ID deletes the message; a second time it is refused."""
        done = self.admin("queue", "remove", self.entry.id)
        self.assertEqual((done.returncode, done.stdout),
                         (0, "message 5eed0123456789ab removed (1 recipient(s) had not "
                             "received it)\n"))
        self.assertEqual(self.store.list_entries().result, [])
        self.assertEqual(self.admin("queue", "remove", self.entry.id).returncode, 1)

    def test_usage_error(self):
        """A missing argument is a usage error (exit status 2)."""
        self.assertEqual(self.admin("queue", "remove").returncode, 2)

    def test_dkim_show(self):
        """dkim show prints the TXT record of the domain's key, created on
        first use with mode 600; other domains are refused."""
        done = self.admin("dkim", "show", "sboksi.fi")
        self.assertEqual(done.returncode, 0, done.stderr)
        name, value = DiskDkimKeyStore(self.data_dir, InlineRunner()).public_record(
            "sboksi.fi").result
        self.assertEqual(name, "ktmail._domainkey.sboksi.fi")
        printed = done.stdout.strip()
        self.assertTrue(printed.startswith(f"{name}. IN TXT ( \"v=DKIM1; k=rsa; p="), printed)
        joined = "".join(part for part in printed.split('"')[1::2])
        self.assertEqual(joined, value)
        key = os.path.join(self.data_dir, "dkim", "sboksi.fi.ktmail.pem")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        refused = self.admin("dkim", "show", "gmail.com")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("does not sign mail for 'gmail.com'", refused.stderr)
