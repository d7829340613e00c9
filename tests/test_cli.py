"""ktmail-admin as operators run it: a subprocess against a config file,
passwords on stdin, exit status 0 / 1 / 2 (SPEC §3)."""

import os
import subprocess
import sys

from twisted.trial import unittest

PW = "correct horse 7"


def write_config(root):
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "ktmail.ini")
    with open(path, "w") as f:
        f.write("[ktmail]\nhostname = mail.example.test\ndata_dir = var\n"
                "[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\nweb =\n"
                "[limits]\nmailboxes_per_customer = 2\n")
    return path


class AdminCommandTests(unittest.TestCase):
    def setUp(self):
        self.root = os.path.abspath(self.mktemp())
        self.config = write_config(self.root)

    def admin(self, *args, password=None):
        return subprocess.run(
            [sys.executable, "-m", "ktmail.cli", "--config", self.config, *args],
            input=(password + "\n") if password is not None else "",
            capture_output=True, text=True, timeout=120)

    def test_provisioning_round_trip(self):
        """customer add, mailbox add/list/remove, customer list/remove, with
        the cap from the config and a Maildir per mailbox."""
        r = self.admin("customer", "add", "kund1001", password=PW)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        for user, address in (("alice_u", "alice@brev.fi"), ("bob_u", "bob@pikaposti.fi")):
            r = self.admin("mailbox", "add", "kund1001", user, address, password=PW)
            self.assertEqual((r.returncode, r.stderr), (0, ""))
        r = self.admin("mailbox", "add", "kund1001", "carol_u", "carol@brev.fi", password=PW)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertIn("most allowed (2)", r.stderr)
        r = self.admin("mailbox", "list")
        self.assertEqual(r.returncode, 0)
        self.assertIn("alice_u\talice@brev.fi\tkund1001", r.stdout)
        self.assertIn("bob_u\tbob@pikaposti.fi\tkund1001", r.stdout)
        maildirs = os.listdir(os.path.join(self.root, "var", "mail"))
        self.assertEqual(len([d for d in maildirs if d.isdigit()]), 2)
        r = self.admin("mailbox", "remove", "bob_u")
        self.assertEqual(r.returncode, 0)
        self.assertNotIn("bob_u", self.admin("mailbox", "list", "kund1001").stdout)
        maildirs = os.listdir(os.path.join(self.root, "var", "mail"))
        self.assertEqual(len([d for d in maildirs if d.isdigit()]), 1)
        r = self.admin("customer", "list")
        self.assertIn("kund1001\t1 mailboxes", r.stdout)
        r = self.admin("customer", "remove", "kund1001")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(self.admin("mailbox", "list").stdout, "")

    def test_refusals_exit_1_with_one_line(self):
        """Refused operations exit 1 and say why on one stderr line."""
        self.admin("customer", "add", "kund1001", password=PW)
        cases = [
            (("mailbox", "add", "kund1001", "x_u", "x@example.com"), PW, "not one of our"),
            (("mailbox", "add", "kund1001", "x_u", "x@brev.fi"), "short", "too short"),
            (("mailbox", "add", "nobody", "x_u", "x@brev.fi"), PW, "no customer"),
            (("mailbox", "remove", "nobody_u"), None, "no mailbox"),
            (("customer", "add", "kund1001"), PW, "already taken"),
            (("customer", "add", "other"), None, "no password on standard input"),
        ]
        for args, password, reason in cases:
            r = self.admin(*args, password=password)
            self.assertEqual(r.returncode, 1, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn(reason, r.stderr.lower(), args)

    def test_usage_errors_exit_2(self):
        """Unknown commands and missing arguments are usage errors."""
        self.assertEqual(self.admin("bogus").returncode, 2)
        self.assertEqual(self.admin("mailbox", "add", "only-one").returncode, 2)

    def test_password_never_on_the_command_line_or_output(self):
        """The password is read from stdin and appears in no output or log."""
        r = self.admin("customer", "add", "kund1001", password=PW)
        self.assertNotIn(PW, r.stdout + r.stderr)

    def test_bad_config_exits_1_naming_the_key(self):
        with open(self.config, "a") as f:
            f.write("[relay]\nsmarthst = x\n")
        r = self.admin("customer", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("relay.smarthst: unknown key", r.stderr)
