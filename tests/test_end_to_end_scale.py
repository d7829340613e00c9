"""Two ``twistd ktmail`` nodes sharing one PostgreSQL and one data directory
(as two machines behind a load balancer share a database server and an NFS
export), each on its own loopback ports.

What issue 12 promises: a message delivered through node A's SMTP appears
in an IDLE session on node B; the hourly send limit counts submissions
made through both nodes; killing node A (kill -9) during a delivery storm
loses nothing acknowledged and node B keeps serving.
"""

import json
import os
import re
import smtplib
import threading
import time
import urllib.request

from twisted.trial import unittest

from tests import postgresql
from tests.e2e import PASSWORD, KtmailDaemon
from tests.test_end_to_end_imap import RawIMAP

ALICE = ("alice_u", "alice@brev.fi")
BOB = ("bob_u", "bob@brev.fi")


def _has_module(name):
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


HAS_SMTP = _has_module("ktmail.protocols.smtp")
HAS_IMAP = _has_module("ktmail.protocols.imap")


def require(*needed):
    missing = [name for name, present in (("smtp", HAS_SMTP), ("imap", HAS_IMAP))
               if name in needed and not present]
    if missing:
        raise unittest.SkipTest(f"the {' and '.join(missing)} listener(s) are not in this tree "
                                "yet (ktmail.protocols." + missing[0] + ")")


def listeners():
    found = ["pop3", "web"]
    if HAS_SMTP:
        found[:0] = ["smtp", "submission"]
    if HAS_IMAP:
        found.append("imap")
    return tuple(found)


def message(subject, to="alice@brev.fi", sender="sender@example.org", size=0):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n"
            + "Hello from the test.\r\n" + "x" * size + "\r\n").encode()


class Node(KtmailDaemon):
    """A ktmail node whose database is the test PostgreSQL."""

    def __init__(self, root, url, data_dir=None, limits=None):
        super().__init__(root, listeners(), limits,
                         extra_config=f"\n[store]\ndatabase = {url}\n")
        self.url = url
        if data_dir is not None:
            # share another node's data directory (Maildirs, queue, spool)
            with open(self.config, encoding="utf-8") as f:
                text = f.read()
            with open(self.config, "w", encoding="utf-8") as f:
                f.write(text.replace("data_dir = var\n", f"data_dir = {data_dir}\n", 1))
            self.data_dir = data_dir

    def mailbox_id(self, username):
        import psycopg
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT id FROM mailboxes WHERE username=%s",
                               (username,)).fetchone()
        if row is None:
            raise KeyError(username)
        return row[0]

    def healthz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['web']}/healthz",
                                    timeout=10) as r:
            return r.status, json.loads(r.read())


class TwoNodeTests(unittest.TestCase):
    """Each test starts its own pair of nodes over an emptied database."""

    limits = {}

    def setUp(self):
        url = postgresql.empty_database()
        root = os.path.abspath(self.mktemp())
        self.a = Node(os.path.join(root, "a"), url, limits=self.limits)
        self.b = Node(os.path.join(root, "b"), url, data_dir=self.a.data_dir,
                      limits=self.limits)
        for node in (self.a, self.b):
            node.start()
            self.addCleanup(node.stop)
        self.a.add_mailboxes([ALICE, BOB])

    def test_nodes_share_accounts_and_report_their_health(self):
        """A mailbox made through node A's ktmail-admin logs in on node B;
        both nodes' /healthz check the database and the shared storage; no
        SQLite file is made; the database password is in no log."""
        import poplib
        pop = poplib.POP3_SSL("localhost", self.b.ports["pop3"], timeout=30,
                              context=self.b.client_tls())
        pop.user("alice_u")
        pop.pass_(PASSWORD)
        self.assertEqual(pop.stat(), (0, 0))
        pop.quit()
        for node in (self.a, self.b):
            self.assertEqual(node.healthz(), (200, {"status": "ok", "checks": {
                "database": "ok", "storage": "ok"}}))
            password = node.url.split(":")[2].split("@")[0]
            self.assertNotIn(password, node.log_text())
            self.assertIn("service database: postgresql://ktmail:***@", node.log_text())
        self.assertFalse(os.path.exists(os.path.join(self.a.data_dir, "ktmail.db")))

    def test_mailbox_cap_holds_across_nodes(self):
        """Mailboxes made for one customer through both nodes' ktmail-admin:
        the fifth is the last, on either node."""
        for i, node in enumerate((self.a, self.b, self.a)):
            node.admin("mailbox", "add", "kund1001", f"extra{i}", f"extra{i}@brev.fi",
                       password=PASSWORD)
        refused = self.b.admin("mailbox", "add", "kund1001", "sixth", "sixth@brev.fi",
                               password=PASSWORD, check=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("5 mailboxes", refused.stderr)

    def test_delivery_through_node_a_reaches_idle_on_node_b(self):
        """A message to alice delivered by SMTP to node A shows up in an IMAP
        IDLE session on node B within a second of A's 250."""
        require("smtp", "imap")
        watcher = RawIMAP(self.b, "alice_u")
        self.addCleanup(watcher.sock.close)
        watcher.send(b"s SELECT INBOX\r\n")
        watcher.read_until(b"s OK")
        watcher.send(b"i IDLE\r\n")
        watcher.read_until(b"+ ")
        with self.a.smtp() as s:
            s.sendmail("sender@example.org", ["alice@brev.fi"], message("across nodes"))
            accepted = time.monotonic()
        self.assertIn(b"* 1 EXISTS", watcher.read_until(b"EXISTS", timeout=5))
        self.assertLess(time.monotonic() - accepted, 1.0)
        watcher.send(b"DONE\r\n")
        watcher.read_until(b"i OK")

    def test_killing_a_node_during_a_delivery_storm_loses_nothing_acknowledged(self):
        """Four clients deliver to both nodes; node A is killed with SIGKILL
        in the middle. Every message either node answered 250 to is in the
        Maildir afterwards (seen through node B), and node B keeps taking
        mail."""
        require("smtp")
        acknowledged, lock = [], threading.Lock()
        stop = threading.Event()

        def client(node, name):
            n = 0
            while not stop.is_set() and n < 200:
                subject = f"storm {name} {n}"
                try:
                    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=10) as s:
                        s.sendmail("sender@example.org", ["bob@brev.fi"],
                                   message(subject, to="bob@brev.fi", size=2000))
                except (OSError, smtplib.SMTPException):
                    if node is self.a:
                        return  # node A is gone
                    continue
                with lock:
                    acknowledged.append(subject)
                n += 1

        workers = [threading.Thread(target=client, args=(node, f"{tag}{i}"))
                   for tag, node in (("a", self.a), ("b", self.b)) for i in range(2)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(self.a.pid, 9)
        self.a.proc.wait()
        time.sleep(1)
        stop.set()
        for w in workers:
            w.join(60)
        self.assertGreaterEqual(len(acknowledged), 40)
        with self.b.smtp() as s:
            s.sendmail("sender@example.org", ["bob@brev.fi"],
                       message("after the crash", to="bob@brev.fi"))
        self.b.wait_for_message("bob_u", "after the crash")
        subjects = set()
        for data in self.b.messages("bob_u"):
            found = re.search(rb"^Subject: (.*)$", data, re.MULTILINE)
            subjects.add(found.group(1).decode().strip())
        missing = [s for s in acknowledged if s not in subjects]
        self.assertEqual(missing, [])
        if HAS_IMAP:
            import imaplib
            m = imaplib.IMAP4_SSL("localhost", self.b.ports["imap"],
                                  ssl_context=self.b.client_tls())
            m.login("bob_u", PASSWORD)
            _typ, data = m.select("INBOX")
            self.assertEqual(int(data[0]), len(subjects))
            m.logout()


class SharedSendLimitTests(unittest.TestCase):
    """SPEC §1: 200 recipients per mailbox per rolling hour over SMTP, across nodes."""

    def setUp(self):
        require("smtp")
        url = postgresql.empty_database()
        root = os.path.abspath(self.mktemp())
        limits = {"smtp_recipients_per_hour": 4}
        self.a = Node(os.path.join(root, "a"), url, limits=limits)
        self.b = Node(os.path.join(root, "b"), url, data_dir=self.a.data_dir, limits=limits)
        for node in (self.a, self.b):
            node.start()
            self.addCleanup(node.stop)
        self.a.add_mailboxes([ALICE, BOB])

    def test_hourly_limit_counts_submissions_through_both_nodes(self):
        """Two recipients through node A and two through node B use up a
        limit of four: the next recipient, on either node, is refused with
        451 4.7.1."""
        for node in (self.a, self.b):
            with node.submission("alice_u") as s:
                s.sendmail("alice@brev.fi", ["bob@brev.fi", "alice@brev.fi"],
                           message("sent", to="bob@brev.fi", sender="alice@brev.fi"))
        for node in (self.a, self.b):
            with node.submission("alice_u") as s:
                with self.assertRaises(smtplib.SMTPRecipientsRefused) as ctx:
                    s.sendmail("alice@brev.fi", ["bob@brev.fi"],
                               message("one too many", to="bob@brev.fi",
                                       sender="alice@brev.fi"))
                code, text = ctx.exception.recipients["bob@brev.fi"]
                self.assertEqual(code, 451)
                self.assertTrue(text.startswith(b"4.7.1"), text)
