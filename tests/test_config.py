"""The ini of SPEC §3: every problem reported at once, each naming its key."""

import os

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from ktmail.config import (
    DEFAULT_DOMAINS,
    ConfigError,
    Limits,
    load_config,
    parse_config,
)

_LIMIT_KEYS = set(attrs.fields_dict(Limits))

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"

SPEC_EXAMPLE = """\
[ktmail]
hostname = mail.ktnet.fi             ; greeting, Received:, HELO name
data_dir = var                       ; Maildirs, account database, outbound queue
domains = sboksi.fi minmail.fi livenet.fi message.fi 2me.fi myhome.fi mybusiness.fi brev.fi pikaposti.fi
tls_cert = certs/server.pem
tls_key = certs/server.key

[listen]
smtp = tcp:25
submission = ssl:465
imap = ssl:993
pop3 = ssl:995
web = ssl:443

[limits]
max_message_bytes = 52428800
mailbox_quota_bytes = 1048576000
mailboxes_per_customer = 5
smtp_recipients_per_hour = 200
webmail_recipients_per_hour = 100
spam_retention_days = 60
inactive_delete_days = 183

[relay]
smarthost =                          ; host:port for all outbound mail; empty = deliver by MX lookup

[clients]                            ; optional: what autoconfig and the help page tell mail clients
incoming_host = mail.ktnet.fi        ; IMAP and POP3 server name; default: hostname
outgoing_host = smtp.ktnet.fi        ; submission server name; default: hostname
"""


class ConfigTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(os.path.join(self.dir, "certs"))
        for name, text in (("server.pem", CERT), ("server.key", KEY)):
            with open(os.path.join(self.dir, "certs", name), "w") as f:
                f.write(text)

    def write(self, text):
        path = os.path.join(self.dir, "ktmail.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def problems(self, text):
        with self.assertRaises(ConfigError) as ctx:
            load_config(self.write(text))
        return ctx.exception.problems

    def test_spec_example_loads_with_its_values(self):
        """The example of SPEC §3, comments included, loads; paths are
        relative to the config file's folder."""
        config = load_config(self.write(SPEC_EXAMPLE))
        self.assertEqual(config.hostname, "mail.ktnet.fi")
        self.assertEqual(config.domains, DEFAULT_DOMAINS)
        self.assertEqual(config.data_dir, os.path.join(os.path.abspath(self.dir), "var"))
        self.assertEqual(config.tls.cert,
                         os.path.join(os.path.abspath(self.dir), "certs", "server.pem"))
        self.assertEqual(config.listen.submission, "ssl:465")
        self.assertEqual(config.limits.max_message_bytes, 52428800)
        self.assertEqual(config.limits.mailbox_quota_bytes, 1048576000)
        self.assertEqual(config.limits.inactive_delete_days, 183)
        self.assertIsNone(config.relay.smarthost)
        self.assertEqual(config.clients.incoming_host, "mail.ktnet.fi")
        self.assertEqual(config.clients.outgoing_host, "smtp.ktnet.fi")
        self.assertEqual(config.spam.required_score, 5.0)

    def test_defaults_are_the_production_values(self):
        """Only the host name is required; the rest defaults to SPEC §3."""
        config = load_config(self.write(
            "[ktmail]\nhostname = Mail.Example.FI\ntls_cert = certs/server.pem\n"
            "tls_key = certs/server.key\n"))
        self.assertEqual(config.hostname, "mail.example.fi")
        self.assertEqual(config.listen.smtp, "tcp:25")
        self.assertEqual(config.listen.imap, "ssl:993")
        self.assertEqual(config.listen.web, "ssl:443")
        self.assertEqual(config.limits.smtp_recipients_per_hour, 200)
        self.assertEqual(config.clients.incoming_host, "mail.example.fi")

    def test_every_problem_is_reported_at_once_naming_its_key(self):
        """Unknown keys, missing keys and bad values all come back together,
        one line each, with section.key."""
        problems = self.problems(
            "[ktmail]\nhostnme = x\n[limits]\nmax_message_bytes = lots\n"
            "mailboxes_per_customer = -1\n[listen]\nimap = foo:1\nweb = tcp:http\n"
            "[relay]\nsmarthost = a:b:c\n[bogus]\nx = 1\n")
        text = "\n".join(problems)
        for key in ("ktmail.hostnme", "ktmail.hostname", "limits.max_message_bytes",
                    "limits.mailboxes_per_customer", "listen.imap", "listen.web",
                    "relay.smarthost", "[bogus]"):
            self.assertIn(key, text)
        self.assertTrue(all("\n" not in p for p in problems))

    def test_tls_files_required_by_tls_listeners_and_checked(self):
        """ssl: listeners and STARTTLS on 25 need a readable PEM pair."""
        problems = self.problems("[ktmail]\nhostname = h.fi\n")
        self.assertIn("ktmail.tls_cert: missing (required by listen.smtp, listen.submission, "
                      "listen.imap, listen.pop3, listen.web)", problems)
        problems = self.problems("[ktmail]\nhostname = h.fi\ntls_cert = nope.pem\n"
                                 "tls_key = certs/server.key\n")
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("ktmail.tls_cert: cannot read"))

    def test_no_tls_needed_when_only_plain_listeners(self):
        """A config with only tcp: listeners other than smtp runs without a certificate."""
        config = load_config(self.write(
            "[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\n"
            "web = tcp:8080\n"))
        self.assertIsNone(config.tls)
        self.assertEqual(config.listen.enabled(), [("web", "tcp:8080")])

    def test_sizes_accept_units_and_smarthost_host_port(self):
        """Byte sizes take plain numbers or units; smarthost is host[:port]."""
        config = parse_config(
            "[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\n"
            "web =\n[limits]\nmax_message_bytes = 50MiB\n[relay]\nsmarthost = relay.isp.fi:587\n")
        self.assertEqual(config.limits.max_message_bytes, 52428800)
        self.assertEqual(config.relay.smarthost, ("relay.isp.fi", 587))
        config = parse_config(
            "[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\n"
            "web =\n[relay]\nsmarthost = [2001:db8::1]\n")
        self.assertEqual(config.relay.smarthost, ("2001:db8::1", 25))

    def test_postmaster_is_a_hosted_address(self):
        """[ktmail] postmaster names a mailbox on a hosted domain, or nothing."""
        base = ("[ktmail]\nhostname = h.fi\npostmaster = {}\n"
                "[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\nweb =\n")
        self.assertEqual(str(parse_config(base.format("Ops@Brev.fi")).postmaster), "ops@brev.fi")
        self.assertIsNone(parse_config(base.format("")).postmaster)
        with self.assertRaises(ConfigError) as ctx:
            parse_config(base.format("ops@example.com"))
        self.assertEqual(ctx.exception.problems, [
            "ktmail.postmaster: ops@example.com is not on a hosted domain (see ktmail.domains)"])
        with self.assertRaises(ConfigError) as ctx:
            parse_config(base.format("nobody"))
        self.assertIn("ktmail.postmaster: 'nobody' is not an e-mail address", ctx.exception.problems[0])

    def test_domains_are_validated(self):
        """A bad or repeated domain is named."""
        problems = self.problems("[ktmail]\nhostname = h.fi\ndomains = a.fi bad_domain a.fi\n"
                                 "[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\nweb =\n")
        self.assertEqual(problems, ["ktmail.domains: 'bad_domain' is not a domain name; "
                                    "'a.fi' is listed twice"])

    def test_spam_scores_section_is_free_form_but_checked(self):
        """[spam_scores] takes NAME = number; names and numbers are checked."""
        config = parse_config(
            "[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\n"
            "web =\n[spam]\nrequired_score = 6.5\n[spam_scores]\nGTUBE = 1000\n")
        self.assertEqual(config.spam.required_score, 6.5)
        self.assertEqual(config.spam.score_overrides(), {"GTUBE": 1000.0})
        with self.assertRaises(ConfigError) as ctx:
            parse_config("[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\n"
                         "imap =\npop3 =\nweb =\n[spam_scores]\nX = many\n")
        self.assertEqual(ctx.exception.problems, ["spam_scores.X: 'many' is not a number"])

    def test_unreadable_or_broken_file(self):
        """A missing file or broken ini syntax is one clear line."""
        with self.assertRaises(ConfigError) as ctx:
            load_config(os.path.join(self.dir, "missing.ini"))
        self.assertIn("cannot read the config file", ctx.exception.summary())
        problems = self.problems("hostname = x\n")
        self.assertEqual(len(problems), 1)
        self.assertIn("not a valid ini file", problems[0])


PLAIN = "[ktmail]\nhostname = h.fi\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\nweb =\n"


class DatabaseConfigTests(unittest.TestCase):
    """[store] database: one key chooses SQLite (the default) or PostgreSQL."""

    def test_default_is_the_sqlite_file_in_data_dir(self):
        """Without [store], the database is <data_dir>/ktmail.db, as always."""
        config = parse_config(PLAIN, "/etc/ktmail/ktmail.ini")
        self.assertIsNone(config.database)
        self.assertEqual(config.database_config.kind, "sqlite")
        self.assertEqual(config.database_config.path, "/etc/ktmail/var/ktmail.db")

    def test_sqlite_path_is_relative_to_the_config_file(self):
        """sqlite:PATH names the file, relative to the config file's folder."""
        config = parse_config(PLAIN + "[store]\ndatabase = sqlite:db/accounts.db\n",
                              "/etc/ktmail/ktmail.ini")
        self.assertEqual(config.database_config.kind, "sqlite")
        self.assertEqual(config.database_config.path, "/etc/ktmail/db/accounts.db")
        self.assertFalse(config.database_config.is_postgresql)

    def test_postgresql_url_is_kept_and_never_shown_with_its_password(self):
        """A postgresql:// URL is used as given; its repr and display() hide
        the password."""
        url = "postgresql://ktmail:s3cret@db.ktnet.fi:5433/ktmail?sslmode=require"
        config = parse_config(PLAIN + f"[store]\ndatabase = {url}\n")
        database = config.database_config
        self.assertTrue(database.is_postgresql)
        self.assertEqual(database.url, url)
        self.assertEqual(database.display(),
                         "postgresql://ktmail:***@db.ktnet.fi:5433/ktmail?sslmode=require")
        self.assertNotIn("s3cret", repr(config))
        self.assertNotIn("s3cret", repr(database))

    def test_bad_database_values_are_named_without_the_password(self):
        """A URL without a database or host, a bad port, or an unknown scheme
        is one problem line for store.database, with the password masked."""
        for value, expected in (
                ("postgresql://u:pw1@db.fi/", "names no database"),
                ("postgresql://u:pw1@db.fi:99x/k", "bad host or port"),
                ("postgresql://u:pw1@/k", "names no host"),
                ("mysql://u:pw1@db.fi/k", "neither sqlite:PATH nor postgresql://"),
                ("sqlite:", "must not be empty")):
            with self.assertRaises(ConfigError) as ctx:
                parse_config(PLAIN + f"[store]\ndatabase = {value}\n")
            (problem,) = ctx.exception.problems
            self.assertTrue(problem.startswith("store.database: "), problem)
            self.assertIn(expected, problem)
            self.assertNotIn("pw1", problem)

    def test_unix_socket_host_in_the_query_is_accepted(self):
        """postgresql:///ktmail?host=/run/postgresql (a local socket) is valid."""
        config = parse_config(
            PLAIN + "[store]\ndatabase = postgresql:///ktmail?host=/run/postgresql\n")
        self.assertTrue(config.database_config.is_postgresql)


class ConfigFuzzTests(unittest.TestCase):
    """Whatever the file says, the loader either returns a Config or raises
    ConfigError whose every line names what is wrong; nothing else."""

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "certs"))
        for name, text in (("server.pem", CERT), ("server.key", KEY)):
            with open(os.path.join(self.dir, "certs", name), "w") as f:
                f.write(text)
        self.path = os.path.join(self.dir, "ktmail.ini")

    def load(self, text):
        try:
            return parse_config(text, self.path)
        except ConfigError as e:
            self.assertTrue(e.problems)
            for line in e.problems:
                self.assertNotIn("\n", line)
                self.assertRegex(line, r"^(\[.*\]: |\S+\.\S.*?: |not a valid ini file)", line)
            return None

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([
        "=", ":", "[", "]", "\n", ";", "#", " ", "\t", "%(x)s", "\\", "\x00", "é", "ssl:",
        "tcp:99999", "haproxy:", "50MiB", "-1", "0", "1e9", "nan", "[limits]\n", "[listen]\n",
        "imap_idle_timeout = 1\n", "connection_limit_exempt = 10.0.0.0/33\n",
        "max_header_bytes = 1kb\n", "database = postgresql://u:secret@/\n", "[store]\n",
        "[spam_scores]\nX = 1\n", "tls_cert = /nonexistent\n"])), max_size=12))
    def test_mutated_spec_example(self, edits):
        """The SPEC example with pieces inserted anywhere."""
        text = SPEC_EXAMPLE
        for position, piece in edits:
            at = position % (len(text) + 1)
            text = text[:at] + piece + text[at:]
        config = self.load(text)
        if config is not None:
            self.assertTrue(config.hostname)
            self.assertNotIn("secret", repr(config))

    def test_regression_nul_in_a_path(self):
        """Found by the fuzzer: a NUL character in tls_cert reached open()
        (ValueError) instead of becoming a problem line."""
        text = SPEC_EXAMPLE.replace("tls_cert = certs/server.pem",
                                    "tls_cert = certs/ser\x00ver.pem")
        self.assertNotEqual(text, SPEC_EXAMPLE)
        with self.assertRaises(ConfigError) as caught:
            parse_config(text, self.path)
        self.assertEqual(["ktmail.tls_cert: a path cannot contain a NUL character"],
                         [p for p in caught.exception.problems if "tls_cert" in p])

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=400))
    def test_random_text(self, text):
        """Any text at all."""
        self.load(text)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(sorted(_LIMIT_KEYS)), st.text(max_size=30))
    def test_any_limit_value(self, key, value):
        """Every [limits] key with any value: a Config whose value is sane,
        or one line naming limits.<key>."""
        text = SPEC_EXAMPLE.replace("[limits]\n", f"[limits]\n{key} = {value}\n")
        try:
            config = parse_config(text, self.path)
        except ConfigError as e:
            self.assertTrue(all(p.startswith(("limits.", "not a valid ini file"))
                                for p in e.problems), e.problems)
            return
        parsed = getattr(config.limits, key)
        if isinstance(parsed, int):
            self.assertGreater(parsed, 0)

    def test_regression_multi_line_value_is_reported_on_one_line(self):
        """Found by the fuzzer: a value continued on an indented line was
        quoted with its line break, splitting the problem over two lines."""
        text = SPEC_EXAMPLE.replace("hostname = mail.ktnet.fi",
                                    "hostname = mail.ktnet.fi\n  greeting")
        with self.assertRaises(ConfigError) as ctx:
            parse_config(text, self.path)
        self.assertEqual(ctx.exception.problems,
                         ["ktmail.hostname: 'mail.ktnet.fi\\ngreeting' is not a host name"])
