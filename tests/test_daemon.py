"""`twistd ktmail` as operators start it: a real process on loopback."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from twisted.trial import unittest

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonStartTests(unittest.TestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)

    def start(self, config_text):
        path = os.path.join(self.root, "ktmail.ini")
        with open(path, "w") as f:
            f.write(config_text)
        log = open(os.path.join(self.root, "twistd.log"), "w+")
        self.addCleanup(log.close)
        proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "ktmail", "--config", path],
                                cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and (proc.terminate(), proc.wait(20)))
        return proc, log

    def test_web_listener_serves_healthz(self):
        """The daemon starts from the config and /healthz answers 200 with
        the database check."""
        port = free_port()
        proc, log = self.start(
            "[ktmail]\nhostname = mail.example.test\n"
            "[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\n"
            f"web = tcp:{port}:interface=127.0.0.1\n")
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    status, body = r.status, json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    self.fail(f"daemon did not serve /healthz:\n{log.read()}")
                time.sleep(0.2)
        self.assertEqual(status, 200)
        self.assertEqual(body, {"status": "ok", "checks": {"database": "ok", "storage": "ok"}})
        self.assertTrue(os.path.exists(os.path.join(self.root, "var", "ktmail.db")))

    def test_bad_config_stops_startup_with_one_line_per_problem(self):
        """A bad config never starts half-configured; the operator reads the keys."""
        proc, log = self.start("[ktmail]\nhostname = mail.example.test\n"
                               "[limits]\nspam_retention_days = soon\n[listen]\nimap = nope\n")
        self.assertNotEqual(proc.wait(60), 0)
        log.seek(0)
        output = log.read()
        self.assertIn("limits.spam_retention_days: 'soon' is not a whole number", output)
        self.assertIn("listen.imap: 'nope' is not an endpoint description", output)
        self.assertNotIn("Traceback", output)
