"""End to end: ``ktmail-admin spam score`` and ``spam rules`` run as real
subprocesses against a temporary configuration, and a bad [spam_scores]
name stops ``twistd ktmail`` at start-up."""

import os
import subprocess
import sys
import time

from twisted.trial import unittest

from ktmail.services.spam.rules import GTUBE
from tests.services.spam_samples import CLEAN_BODY, variant

CONFIG = """\
[ktmail]
hostname = mx.ktnet.test
data_dir = {data_dir}

[listen]
smtp =
submission =
imap =
pop3 =
web =

[spam]
required_score = 5.0
{extra}
"""


class SpamCommandTests(unittest.TestCase):
    def write_config(self, extra=""):
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "ktmail.ini")
        with open(path, "w") as f:
            f.write(CONFIG.format(data_dir=os.path.join(folder, "var"), extra=extra))
        return path

    def admin(self, config, *args, stdin=b""):
        return subprocess.run([sys.executable, "-m", "ktmail.cli", "--config", config, *args],
                              input=stdin, capture_output=True, timeout=60, check=False)

    def test_gtube_scores_as_spam(self):
        """GTUBE on stdin: first line 'spam SCORE', then the rule that fired."""
        result = self.admin(self.write_config(), "spam", "score",
                            stdin=variant(body=CLEAN_BODY + GTUBE + "\n"))
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[0], "spam 1000.0")
        self.assertEqual(lines[1].split()[:2], ["GTUBE", "1000.0"])
        self.assertIn("Generic Test for Unsolicited Bulk Email", lines[1])

    def test_clean_message_scores_as_ham(self):
        """A clean message: 'ham 0.0' and no rule lines."""
        result = self.admin(self.write_config(), "spam", "score", stdin=variant())
        self.assertEqual((result.returncode, result.stdout), (0, b"ham 0.0\n"))

    def test_rules_and_scores_come_from_the_config(self):
        """[spam_scores] and required_score change what the command says."""
        config = self.write_config("[spam_scores]\nMISSING_DATE = 6.0\n")
        result = self.admin(config, "spam", "score", stdin=variant(remove=["Date"]))
        self.assertEqual(result.stdout.decode().splitlines()[0], "spam 6.0")
        listing = self.admin(config, "spam", "rules").stdout.decode()
        self.assertRegex(listing, r"(?m)^MISSING_DATE\s+6\.0\s+Missing Date: header$")

    def test_unknown_rule_is_refused(self):
        """An unknown rule name in [spam_scores] is refused with a line naming it."""
        config = self.write_config("[spam_scores]\nNO_SUCH_RULE = 2\n")
        result = self.admin(config, "spam", "score", stdin=variant())
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"spam_scores.NO_SUCH_RULE", result.stderr)

    def test_empty_input_is_refused(self):
        """No message on stdin: exit 1 with a reason."""
        result = self.admin(self.write_config(), "spam", "score")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"no message on standard input", result.stderr)

    def twistd(self, config):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        return [twistd, "-n", "--pidfile=", "ktmail", "--config", config], root

    def test_daemon_starts_with_the_filter(self):
        """twistd ktmail starts with a [spam_scores] override (filter, DNS
        resolver and database wired) and serves /healthz."""
        config = self.write_config("[spam_scores]\nMISSING_DATE = 2\n")
        with open(config) as f:
            text = f.read().replace("web =\n", "web = tcp:0:interface=127.0.0.1\n")
        with open(config, "w") as f:
            f.write(text)
        args, root = self.twistd(config)
        log = os.path.join(os.path.dirname(config), "twistd.log")
        with open(log, "wb") as out:
            daemon = subprocess.Popen(args, cwd=root, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            started = False
            while time.monotonic() < deadline and daemon.poll() is None:
                with open(log, "rb") as f:
                    if b"starting on" in f.read():
                        started = True
                        break
                time.sleep(0.2)
            with open(log, "rb") as f:
                output = f.read()
            self.assertTrue(started, output.decode("utf-8", "replace")[-2000:])
            self.assertNotIn(b"Traceback", output)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)

    def test_daemon_refuses_unknown_rule_at_start(self):
        """twistd ktmail stops at start-up on an unknown [spam_scores] name."""
        config = self.write_config("[spam_scores]\nNO_SUCH_RULE = 2\n")
        args, root = self.twistd(config)
        result = subprocess.run(args, capture_output=True, timeout=60, check=False, cwd=root)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"spam_scores.NO_SUCH_RULE", result.stderr + result.stdout)
