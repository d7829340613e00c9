"""End-to-end harness: a real ``twistd -n ktmail --config F`` on loopback,
provisioned with ``ktmail-admin``, for tests that drive it with real mail
clients (smtplib, swaks, msmtp, imaplib, mbsync, fetchmail, Chromium ...).

    from tests.e2e import DaemonTestCase, PASSWORD

    class InboundTests(DaemonTestCase):
        listeners = ("smtp", "imap")                   # the rest stay off
        limits = {"smtp_recipients_per_hour": 5}       # [limits] overrides
        mailboxes = (("alice_u", "alice@brev.fi"),)    # created with PASSWORD

        def test_something(self):
            d = self.daemon                            # started on first use
            with d.smtp() as s: ...                    # smtplib.SMTP to [listen] smtp
            d.wait_for_message("alice_u", subject="hello")

One daemon serves every test of a class (started when a test first asks
for it, stopped when the test process ends); tests that restart or break
it make their own: ``d = KtmailDaemon(self.mktemp()); self.addCleanup(d.stop)``.
Every port is a free loopback port; the certificate is a fresh self-signed
``CN=localhost`` (also ``IP:127.0.0.1``), in ``d.cert``, to give clients as
their CA. Nothing here touches the global reactor: clients are blocking.
"""

import atexit
import glob
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time

from twisted.trial import unittest

BIN = os.path.dirname(sys.executable)
PASSWORD = "correct horse 7"
CUSTOMER = "kund1001"
LISTENERS = ("smtp", "submission", "imap", "pop3", "web")
DOMAINS = ("sboksi.fi minmail.fi livenet.fi message.fi 2me.fi myhome.fi mybusiness.fi "
           "brev.fi pikaposti.fi")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name):
    """The path of a client program, or skip the test when it is absent
    (CI installs them all: see .ci/run)."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)
    if path is None:
        raise unittest.SkipTest(f"{name} is not installed (apt-get install the package "
                                "listed in .ci/run)")
    return path


def require_delivery():
    """Skip when this tree has no delivery service yet (its branch is not
    merged): the daemon then refuses every recipient with 451."""
    from ktmail.services import delivery
    if not hasattr(delivery, "DeliveryService"):
        raise unittest.SkipTest("ktmail.services.delivery.DeliveryService does not exist "
                                "in this tree yet: nothing can be delivered")


def make_certificate(directory):
    """A self-signed CN=localhost pair -> (cert path, key path)."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class KtmailDaemon:
    """One ktmail process with its own config, data, certificate and ports.

    ``ports``: listener name -> port (only the enabled ones). ``config``,
    ``data_dir``, ``log``, ``cert`` are paths."""

    hostname = "mail.example.test"

    def __init__(self, root, listeners=LISTENERS, limits=None, extra_config="", twistd_args=()):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.cert, self.key = make_certificate(os.path.join(self.root, "certs"))
        self.ports = {name: free_port() for name in listeners}
        self.data_dir = os.path.join(self.root, "var")
        self.log = os.path.join(self.root, "twistd.log")
        self.config = os.path.join(self.root, "ktmail.ini")
        self.proc = None
        #: options between ``twistd`` and ``ktmail`` (e.g. --logger ...)
        self.twistd_args = tuple(twistd_args)
        #: customers added through this object
        self.customers = set()
        endpoints = {
            "smtp": "tcp:{}:interface=127.0.0.1", "submission": "ssl:{}:interface=127.0.0.1",
            "imap": "ssl:{}:interface=127.0.0.1", "pop3": "ssl:{}:interface=127.0.0.1",
            "web": "tcp:{}:interface=127.0.0.1", "metrics": "tcp:{}:interface=127.0.0.1"}
        listen = "\n".join(f"{name} = {endpoints[name].format(self.ports[name])}"
                           if name in self.ports else f"{name} ="
                           for name in LISTENERS + ("metrics",))
        limit_lines = "\n".join(f"{k} = {v}" for k, v in (limits or {}).items())
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(f"[ktmail]\nhostname = {self.hostname}\ndata_dir = var\n"
                    f"domains = {DOMAINS}\ntls_cert = certs/server.pem\n"
                    f"tls_key = certs/server.key\n\n[listen]\n{listen}\n\n"
                    f"[limits]\n{limit_lines}\n\n"
                    # nothing leaves the test machine: remote mail waits in the queue
                    f"[relay]\nsmarthost = 127.0.0.1:{free_port()}\n{extra_config}")

    # --- process ----------------------------------------------------------------

    def start(self, timeout=60):
        """Start twistd and wait until every listener accepts connections."""
        logfile = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "twistd"), "-n", "--pidfile=", *self.twistd_args, "ktmail",
             "--config", self.config],
            cwd=self.root, stdout=logfile, stderr=subprocess.STDOUT)
        logfile.close()
        deadline = time.monotonic() + timeout
        pending = dict(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"listeners never came up: {sorted(pending)}")
            for name, port in list(pending.items()):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    del pending[name]
                except OSError:
                    pass
            time.sleep(0.1)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    # --- provisioning (ktmail-admin) ----------------------------------------------

    def admin(self, *args, password=None, check=True):
        """Run ``ktmail-admin --config F ARGS`` (password on stdin)."""
        result = subprocess.run(
            [os.path.join(BIN, "ktmail-admin"), "--config", self.config, *args],
            input=(password + "\n") if password is not None else "",
            capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"ktmail-admin {' '.join(args)}: {result.stderr.strip()}")
        return result

    def add_mailboxes(self, mailboxes, customer=CUSTOMER, password=PASSWORD):
        """Create the customer (once) and ``(username, address)`` mailboxes."""
        if customer not in self.customers:
            self.admin("customer", "add", customer, password=password)
            self.customers.add(customer)
        for username, address in mailboxes:
            self.admin("mailbox", "add", customer, username, address, password=password)

    def mailbox_id(self, username):
        with sqlite3.connect(os.path.join(self.data_dir, "ktmail.db"), timeout=10) as db:
            row = db.execute("SELECT id FROM mailboxes WHERE username=?", (username,)).fetchone()
        if row is None:
            raise KeyError(username)
        return row[0]

    # --- the mail on disk ----------------------------------------------------------

    def maildir(self, username, folder="INBOX"):
        base = os.path.join(self.data_dir, "mail", str(self.mailbox_id(username)))
        return base if folder == "INBOX" else os.path.join(base, "." + folder.replace("/", "."))

    def messages(self, username, folder="INBOX"):
        """The bytes of every message in a folder (new/ and cur/), oldest first."""
        paths = []
        for sub in ("new", "cur"):
            paths += glob.glob(os.path.join(self.maildir(username, folder), sub, "*"))
        out = []
        for path in sorted(paths, key=lambda p: os.stat(p).st_mtime):
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def wait_for_message(self, username, subject, folder="INBOX", timeout=20):
        """The first message in ``folder`` whose Subject: contains ``subject``."""
        needle = subject.encode("utf-8")
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages(username, folder):
                head = message.split(b"\r\n\r\n", 1)[0]
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"subject:") and needle in line:
                        return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no message {subject!r} in {username}/{folder}")
            time.sleep(0.1)

    # --- clients ------------------------------------------------------------------

    def client_tls(self):
        """An ssl.SSLContext that trusts this daemon's certificate (host localhost)."""
        return ssl.create_default_context(cafile=self.cert)

    def smtp(self, helo="client.example.org"):
        """smtplib.SMTP to the MX listener, after EHLO."""
        s = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30)
        s.ehlo(helo)
        return s

    def submission(self, login=None, password=PASSWORD):
        """smtplib.SMTP_SSL to the submission listener, after EHLO (and AUTH)."""
        s = smtplib.SMTP_SSL("localhost", self.ports["submission"], timeout=30,
                             context=self.client_tls())
        s.ehlo("laptop.example.org")
        if login:
            s.login(login, password)
        return s


_shared = {}


def _stop_shared():
    for daemon in _shared.values():
        daemon.stop()


atexit.register(_stop_shared)


class DaemonTestCase(unittest.TestCase):
    """Tests against one shared daemon per class; see the module docstring."""

    listeners = LISTENERS
    limits = {}
    mailboxes = ()
    extra_config = ""

    @property
    def daemon(self):
        cls = type(self)
        if cls not in _shared:
            root = tempfile.mkdtemp(prefix=f"e2e-{cls.__name__}-", dir=os.getcwd())
            daemon = KtmailDaemon(root, self.listeners, self.limits, self.extra_config)
            daemon.start()
            _shared[cls] = daemon
            try:
                daemon.add_mailboxes(self.mailboxes)
            except Exception:
                daemon.stop()
                del _shared[cls]
                raise
        daemon = _shared[cls]
        if daemon.proc.poll() is not None:
            self.fail(f"the shared daemon died:\n{daemon.log_text()[-3000:]}")
        return daemon
