"""TLS end to end against a real ``twistd ktmail``: one policy on every
listener (TLS 1.2 or later, modern ciphers), implicit TLS with the
configured certificate or an ``ssl:`` listener's own ``privateKey=``, and
STARTTLS on 25; certificates replaced on disk and reloaded with SIGHUP
without dropping the connections that are open."""

import hashlib
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import time

from twisted.trial import unittest

from tests import e2e
from tests.e2e import PASSWORD, KtmailDaemon, make_certificate

ALICE = ("alice_u", "alice@brev.fi")


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(path):
    with open(path) as f:
        return fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))


def install(source_dir, cert, key):
    """Put a new pair in place the way certbot's deploy hooks do: write
    beside, then rename over the old files."""
    for src, dst in ((os.path.join(source_dir, "server.pem"), cert),
                     (os.path.join(source_dir, "server.key"), key)):
        shutil.copyfile(src, dst + ".new")
        os.replace(dst + ".new", dst)


def unverified():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_certificate(port, starttls=False):
    """SHA-256 of the certificate a new handshake on ``port`` gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if starttls:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"EHLO tls.example\r\n")
            while not reader.readline().startswith(b"250 "):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert reader.readline().startswith(b"220")
        with unverified().wrap_socket(sock, server_hostname="localhost") as tls:
            return fingerprint(tls.getpeercert(binary_form=True))


class TLSTests(unittest.TestCase):
    @property
    def d(self):
        """One daemon for both tests (stopped when the test process ends)."""
        cls = type(self)
        if cls not in e2e._shared:
            root = os.path.abspath(self.mktemp())
            d = KtmailDaemon(root, listeners=("smtp", "submission", "imap", "pop3"))
            # pop3 gets its own certificate through the endpoint (privateKey=/certKey=)
            d.own_cert, d.own_key = make_certificate(os.path.join(root, "own"))
            with open(d.config, encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"pop3 = ssl:(\d+):interface=127.0.0.1",
                          lambda m: f"pop3 = ssl:{m.group(1)}:interface=127.0.0.1:"
                                    f"privateKey={d.own_key}:certKey={d.own_cert}", text)
            with open(d.config, "w", encoding="utf-8") as f:
                f.write(text)
            e2e._shared[cls] = d
            d.start()
            d.add_mailboxes([ALICE])
        return e2e._shared[cls]

    def wait_for(self, port, wanted, starttls=False, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            seen = served_certificate(port, starttls)
            if seen == wanted or time.monotonic() > deadline:
                return seen
            time.sleep(0.2)

    def test_1_policy_on_every_listener(self):
        """TLS 1.1 is refused by the server (a protocol-version alert, not a
        client that gave up) on 993 (configured certificate), 995 (its own
        privateKey=) and STARTTLS on 25; TLS 1.2 with a modern cipher works;
        a static-RSA cipher without forward secrecy is refused."""
        d = self.d
        for name in ("imap", "pop3", "smtp"):
            old = unverified()
            old.set_ciphers("DEFAULT:@SECLEVEL=0")
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            with self.assertRaises(ssl.SSLError) as ctx:
                self.handshake(d.ports[name], old, starttls=name == "smtp")
            self.assertRegex(str(ctx.exception), r"(?i)protocol.version|unsupported.protocol",
                             name)
            tls12 = unverified()
            tls12.maximum_version = ssl.TLSVersion.TLSv1_2
            self.assertEqual(self.handshake(d.ports[name], tls12, name == "smtp"), "TLSv1.2")
            static_rsa = unverified()
            static_rsa.maximum_version = ssl.TLSVersion.TLSv1_2
            static_rsa.set_ciphers("AES128-SHA:AES256-GCM-SHA384")
            with self.assertRaises(ssl.SSLError):
                self.handshake(d.ports[name], static_rsa, name == "smtp")
        self.assertEqual(served_certificate(d.ports["pop3"]), pem_fingerprint(d.own_cert))
        self.assertEqual(served_certificate(d.ports["imap"]), pem_fingerprint(d.cert))

    def handshake(self, port, context, starttls=False):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            if starttls:
                reader = sock.makefile("rb")
                reader.readline()
                sock.sendall(b"EHLO tls.example\r\n")
                while not reader.readline().startswith(b"250 "):
                    pass
                sock.sendall(b"STARTTLS\r\n")
                reader.readline()
            with context.wrap_socket(sock, server_hostname="localhost") as tls:
                return tls.version()

    def test_2_sighup_reloads_without_dropping_connections(self):
        """Replace the certificate files, send SIGHUP: new handshakes on
        every listener (465, 993, STARTTLS on 25, and 995 with its own
        files) get the new certificates, while an IMAP session opened
        before goes on with the old one. A broken file on the next SIGHUP
        changes nothing: the last good certificate stays in service."""
        d = self.d
        old = pem_fingerprint(d.cert)
        session = imaplib.IMAP4_SSL("127.0.0.1", d.ports["imap"], ssl_context=unverified())
        self.addCleanup(session.shutdown)
        session.login(ALICE[0], PASSWORD)
        session.select("INBOX")
        self.assertEqual(fingerprint(session.sock.getpeercert(binary_form=True)), old)

        fresh_dir = os.path.join(d.root, "renewed")
        make_certificate(fresh_dir)
        install(fresh_dir, d.cert, d.key)
        own_dir = os.path.join(d.root, "own-renewed")
        make_certificate(own_dir)
        install(own_dir, d.own_cert, d.own_key)
        new, own_new = pem_fingerprint(d.cert), pem_fingerprint(d.own_cert)
        self.assertNotEqual(new, old)
        os.kill(d.pid, signal.SIGHUP)

        for name, wanted in (("imap", new), ("submission", new), ("pop3", own_new)):
            self.assertEqual(self.wait_for(d.ports[name], wanted), wanted, name)
        self.assertEqual(self.wait_for(d.ports["smtp"], new, starttls=True), new)
        # the session from before the reload is still there, on its old certificate
        self.assertEqual(session.noop()[0], "OK")
        self.assertEqual(session.select("INBOX")[0], "OK")
        self.assertEqual(fingerprint(session.sock.getpeercert(binary_form=True)), old)

        with open(d.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        os.kill(d.pid, signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "NOT reloaded" not in d.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.assertIn("TLS certificate NOT reloaded, the old one stays in use", d.log_text())
        self.assertEqual(served_certificate(d.ports["imap"]), new)
        self.assertIsNone(d.proc.poll())
        install(fresh_dir, d.cert, d.key)
