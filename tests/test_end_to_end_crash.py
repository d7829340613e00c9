"""Crash safety (SPEC §5) against a real ``twistd ktmail``: a storm of
concurrent SMTP deliveries and IMAP APPENDs, ``kill -9`` in the middle,
a restart, and then proof that

- every message that got ``250`` (SMTP) or ``OK [APPENDUID v u]`` (IMAP)
  is in its mailbox exactly once and whole (byte for byte, as sent);
- every APPENDUID still names the same message (same UIDVALIDITY, the UID
  fetches the same bytes);
- no half message is visible: every file in ``cur/`` and ``new/`` is one
  whole message that a client sent, and IMAP shows exactly those files
  (whatever is left in ``tmp/`` is not a message to anyone).

Three storms with kills at different moments shake out timing.
"""

import glob
import hashlib
import imaplib
import os
import random
import re
import smtplib
import threading
import time

from twisted.trial import unittest

from tests.e2e import PASSWORD, KtmailDaemon

MAILBOXES = (("alice_u", "alice@brev.fi"), ("bob_u", "bob@brev.fi"))
ROUNDS = 3
_TEST_ID = re.compile(rb"^X-Test-Id: (\S+)\r$", re.MULTILINE)


def make_message(test_id, to, size):
    """A plain message with a unique X-Test-Id and a body of about ``size`` bytes."""
    rng = random.Random(test_id)
    words = [rng.choice(("lorem", "ipsum", "kaffe", "fibre", "mail", "router", "tack"))
             for _ in range(size // 6)]
    lines, line = [], []
    for word in words:
        line.append(word)
        if len(line) == 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line) or "end")
    body = "\r\n".join(lines)
    return (f"From: Storm Sender <storm@example.org>\r\nTo: {to}\r\n"
            f"Subject: storm {test_id}\r\nMessage-ID: <{test_id}@example.org>\r\n"
            f"X-Test-Id: {test_id}\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n"
            f"{body}\r\n").encode()


class Ledger:
    """What the clients tried and what the server acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempted = {}   # test id -> message bytes
        self.smtp_acked = {}  # test id -> username
        self.appended = {}    # test id -> (username, folder, uidvalidity, uid)

    def attempt(self, test_id, data):
        with self.lock:
            self.attempted[test_id] = data


def smtp_storm(daemon, ledger, name, stop):
    rng = random.Random(name)
    n = 0
    try:
        with smtplib.SMTP("127.0.0.1", daemon.ports["smtp"], timeout=20) as s:
            s.ehlo("storm.example.org")
            while not stop.is_set():
                username, address = rng.choice(MAILBOXES)
                test_id = f"{name}-{n:05d}z"
                n += 1
                data = make_message(test_id, address, rng.choice((600, 3000, 40_000, 150_000)))
                ledger.attempt(test_id, data)
                s.sendmail("storm@example.org", [address], data)
                with ledger.lock:
                    ledger.smtp_acked[test_id] = username
    except (OSError, smtplib.SMTPException):
        return  # the daemon was killed


def imap_storm(daemon, ledger, name, stop):
    rng = random.Random(name)
    username, _address = MAILBOXES[int(name[-1]) % 2]
    n = 0
    try:
        m = imaplib.IMAP4_SSL("localhost", daemon.ports["imap"], ssl_context=daemon.client_tls(),
                              timeout=20)
        m.login(username, PASSWORD)
        while not stop.is_set():
            folder = rng.choice(("INBOX", "Archive"))
            test_id = f"{name}-{n:05d}z"
            n += 1
            data = make_message(test_id, "x@example.org",
                                rng.choice((500, 5000, 70_000, 200_000)))
            ledger.attempt(test_id, data)
            typ, answer = m.append(folder, None, None, data)
            found = re.search(rb"\[APPENDUID (\d+) (\d+)\]", answer[0] or b"")
            if typ == "OK" and found:
                with ledger.lock:
                    ledger.appended[test_id] = (username, folder, int(found.group(1)),
                                                int(found.group(2)))
    except (OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
        return


def header_lines_only(prefix):
    """Trace fields that delivery puts before a message: whole header lines."""
    if not prefix:
        return True
    if not prefix.endswith(b"\r\n"):
        return False
    return all(re.match(rb"([!-9;-~]+:|[ \t])", line) for line in prefix[:-2].split(b"\r\n"))


class CrashSafetyTests(unittest.TestCase):
    def setUp(self):
        self.daemon = KtmailDaemon(self.mktemp(), listeners=("smtp", "imap"))
        self.addCleanup(self.daemon.stop)
        self.daemon.start()
        self.daemon.add_mailboxes(MAILBOXES)
        for username, _ in MAILBOXES:
            m = self.imap(username)
            m.create("Archive")
            m.logout()

    def imap(self, username):
        m = imaplib.IMAP4_SSL("localhost", self.daemon.ports["imap"],
                              ssl_context=self.daemon.client_tls(), timeout=30)
        m.login(username, PASSWORD)
        return m

    def storm_and_kill(self, ledger, round_number, seconds):
        stop = threading.Event()
        workers = [threading.Thread(target=smtp_storm, args=(self.daemon, ledger,
                                                             f"r{round_number}s{i}", stop))
                   for i in range(3)]
        workers += [threading.Thread(target=imap_storm, args=(self.daemon, ledger,
                                                              f"r{round_number}i{i}", stop))
                    for i in range(3)]
        for w in workers:
            w.start()
        time.sleep(seconds)
        os.kill(self.daemon.pid, 9)
        self.daemon.proc.wait()
        stop.set()
        for w in workers:
            w.join(30)
        self.daemon.start()

    def test_kill_minus_nine_during_a_storm(self):
        """See the module docstring; three rounds, each killed at a random
        moment between 0.8 and 2.5 seconds into the storm."""
        ledger = Ledger()
        rng = random.Random()
        for round_number in range(ROUNDS):
            self.storm_and_kill(ledger, round_number, rng.uniform(0.8, 2.5))
        self.assertGreater(len(ledger.smtp_acked), 10, "the storm delivered too little")
        self.assertGreater(len(ledger.appended), 10, "the storm appended too little")
        self.check_files(ledger)
        self.check_acknowledged_smtp(ledger)
        self.check_appenduids(ledger)

    def stored_files(self, username):
        """{path: bytes} of every visible message file of every folder."""
        base = self.daemon.maildir(username)
        paths = []
        for folder in [base] + glob.glob(os.path.join(base, ".*")):
            for sub in ("cur", "new"):
                paths += glob.glob(os.path.join(folder, sub, "*"))
        out = {}
        for path in paths:
            with open(path, "rb") as f:
                out[path] = f.read()
        return out

    def check_files(self, ledger):
        """Every visible file is one whole message a client sent; IMAP
        sees as many messages as there are files."""
        for username, _ in MAILBOXES:
            files = self.stored_files(username)
            for path, data in files.items():
                found = _TEST_ID.search(data)
                self.assertIsNotNone(found, f"{path} is not one of the test messages")
                sent = ledger.attempted.get(found.group(1).decode())
                self.assertIsNotNone(sent, path)
                self.assertTrue(data.endswith(sent), f"{path} is not whole")
                self.assertTrue(header_lines_only(data[:len(data) - len(sent)]), path)
            m = self.imap(username)
            shown = 0
            for folder in ("INBOX", "Archive", "Spam"):
                typ, count = m.select(folder, readonly=True)
                self.assertEqual(typ, "OK")
                shown += int(count[0])
            m.logout()
            self.assertEqual(shown, len(files), username)

    def check_acknowledged_smtp(self, ledger):
        """Each 250 is exactly one whole copy in its mailbox."""
        copies = {}
        for username, _ in MAILBOXES:
            for data in self.stored_files(username).values():
                test_id = _TEST_ID.search(data).group(1).decode()
                copies.setdefault(test_id, []).append((username, data))
        for test_id, username in ledger.smtp_acked.items():
            found = copies.get(test_id, [])
            self.assertEqual(len(found), 1, f"{test_id}: {len(found)} copies")
            self.assertEqual(found[0][0], username)
            self.assertTrue(found[0][1].endswith(ledger.attempted[test_id]))

    def check_appenduids(self, ledger):
        """Each APPENDUID still fetches the message it was given for,
        under the same UIDVALIDITY, and that message exists once."""
        by_box = {}
        for test_id, (username, folder, validity, uid) in ledger.appended.items():
            by_box.setdefault((username, folder), []).append((test_id, validity, uid))
        for (username, folder), entries in by_box.items():
            m = self.imap(username)
            m.select(folder, readonly=True)
            validity_now = int(re.search(rb"\d+", m.response("UIDVALIDITY")[1][0]).group())
            for test_id, validity, uid in entries:
                self.assertEqual(validity, validity_now, (folder, test_id))
                typ, data = m.uid("FETCH", str(uid), "(BODY.PEEK[])")
                self.assertEqual(typ, "OK")
                body = data[0][1] if data and isinstance(data[0], tuple) else None
                want = ledger.attempted[test_id]
                self.assertIsNotNone(body, f"UID {uid} of {folder} is gone ({test_id})")
                self.assertEqual(hashlib.sha256(body).hexdigest(),
                                 hashlib.sha256(want).hexdigest(), (folder, uid, test_id))
                typ, found = m.uid("SEARCH", "HEADER", "X-Test-Id", test_id)
                self.assertEqual(found[0].split(), [str(uid).encode()], test_id)
            m.logout()
