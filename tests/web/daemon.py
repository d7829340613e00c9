"""A real ``twistd -n ktmail`` on loopback for the browser tests.

Minimal on purpose: a config with free ports, the daemon as a subprocess,
``ktmail-admin`` for provisioning, and clean-up registered on the test.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
HOSTNAME = "mail.example.test"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, testcase):
        self.testcase = testcase
        self.root = os.path.abspath(testcase.mktemp())
        os.makedirs(self.root)
        self.ports = {name: free_port() for name in ("web", "imap", "pop3", "submission")}
        self.config = os.path.join(self.root, "ktmail.ini")
        cert, key = (os.path.join(self.root, n) for n in ("server.pem", "server.key"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        p = self.ports
        with open(self.config, "w") as f:
            f.write(f"[ktmail]\nhostname = {HOSTNAME}\ndata_dir = var\n"
                    f"tls_cert = {cert}\ntls_key = {key}\n"
                    f"[listen]\nsmtp =\n"
                    f"submission = ssl:{p['submission']}:interface=127.0.0.1\n"
                    f"imap = ssl:{p['imap']}:interface=127.0.0.1\n"
                    f"pop3 = ssl:{p['pop3']}:interface=127.0.0.1\n"
                    f"web = tcp:{p['web']}:interface=127.0.0.1\n")
        self.base = f"http://127.0.0.1:{p['web']}"
        self.log_path = os.path.join(self.root, "twistd.log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "w")
        self.testcase.addCleanup(log.close)
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "ktmail", "--config", self.config],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        self.testcase.addCleanup(self.stop)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.testcase.fail(f"the daemon did not start:\n{self.log()}")
            time.sleep(0.2)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def admin(self, *args, password=None):
        r = subprocess.run([sys.executable, "-m", "ktmail.cli", "--config", self.config, *args],
                           input=(password + "\n") if password is not None else "",
                           capture_output=True, text=True, timeout=120, cwd=self.root)
        if r.returncode != 0:
            self.testcase.fail(f"ktmail-admin {' '.join(args)}: {r.stderr}")
        return r.stdout
