"""Operations end to end: a real ``twistd -n --logger
ktmail.logs.json_observer ktmail`` with the metrics listener, driven over
every protocol; then its JSON log and ``/metrics`` are read.

- every log line is JSON; the structured events (connection, login,
  delivery, submission, outbound, deletion) are there with their stable
  fields (ktmail/services/events.py);
- no password (right or wrong, plain or in an AUTH PLAIN blob) and no
  message body text appears anywhere in the log;
- ``/metrics`` counts the same things and shows the gauges.
"""

import base64
import imaplib
import json
import poplib
import re
import time
import urllib.request

from twisted.trial import unittest

from bench.attack_bench import (
    OK,
    WRONG,
    IMAPLogin,
    POP3Login,
    SMTPLogin,
    WebLogin,
)
from tests.e2e import LISTENERS, PASSWORD, KtmailDaemon

ALICE = ("alice_u", "alice@brev.fi")
BOB = ("bob_u", "bob@brev.fi")
WRONG_PASSWORD = "Wr0ng-Pa55-qZx"
BODY_INBOUND = "Inbound-body-marker-7f3a9c"
BODY_SUBMITTED = "Submitted-body-marker-51d0e2"

FIELDS = {
    "connection": {"listener", "client", "outcome", "seconds"},
    "login": {"protocol", "kind", "username", "client", "outcome"},
    "delivery": {"channel", "mailbox", "folder", "uid", "size", "verdict", "score"},
    "submission": {"protocol", "username", "recipients", "size"},
    "outbound": {"id", "recipient", "outcome"},
    "deletion": {"what", "mailbox", "folder", "count", "reason"},
}


def message(sender, to, subject, body):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
            f"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\n{body}\r\n")


class OperationsTests(unittest.TestCase):
    def setUp(self):
        self.d = KtmailDaemon(self.mktemp(), listeners=LISTENERS + ("metrics",),
                              twistd_args=("--logger", "ktmail.logs.json_observer"))
        self.addCleanup(self.d.stop)
        self.d.start()
        self.d.add_mailboxes([ALICE, BOB])

    def events(self):
        out = []
        for number, line in enumerate(self.d.log_text().splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                self.fail(f"log line {number} is not JSON: {line[:200]!r}")
        return out

    def wait_for_event(self, kind, timeout=20, **fields):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("ktmail_event") == kind and all(
                        event.get(k) == v for k, v in fields.items()):
                    return event
            time.sleep(0.2)
        self.fail(f"no {kind} event with {fields}")

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.d.ports['metrics']}/metrics",
                                    timeout=10) as response:
            self.assertEqual(response.headers["Content-Type"],
                             "text/plain; version=0.0.4; charset=utf-8")
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return text, values

    def drive_everything(self):
        d = self.d
        # inbound mail (spam-scanned) for alice
        with d.smtp() as s:
            s.sendmail("friend@example.org", [ALICE[1]],
                       message("friend@example.org", ALICE[1], "inbound one", BODY_INBOUND))
        d.wait_for_message(ALICE[0], "inbound one")
        # submission: one local recipient, one remote (queued; the smarthost is dead)
        with d.submission(ALICE[0]) as s:
            s.sendmail(ALICE[1], [BOB[1], "someone@example.net"],
                       message(ALICE[1], BOB[1], "submitted one", BODY_SUBMITTED))
        d.wait_for_message(BOB[0], "submitted one")
        # IMAP: read and delete alice's message
        m = imaplib.IMAP4_SSL("localhost", d.ports["imap"], ssl_context=d.client_tls())
        m.login(ALICE[0], PASSWORD)
        m.select("INBOX")
        m.fetch("1", "(BODY[])")
        m.store("1", "+FLAGS", "\\Deleted")
        m.expunge()
        m.logout()
        # POP3: bob downloads and deletes
        p = poplib.POP3_SSL("localhost", d.ports["pop3"], context=d.client_tls())
        p.user(BOB[0])
        p.pass_(PASSWORD)
        p.retr(1)
        p.dele(1)
        p.quit()
        # the webmail, right and wrong; wrong passwords on every protocol
        self.assertEqual(WebLogin(d, "127.0.0.1").attempt(ALICE[0], PASSWORD), OK)
        for cls in (IMAPLogin, POP3Login, SMTPLogin, WebLogin):
            client = cls(d, "127.0.0.1")
            self.assertEqual(client.attempt(BOB[0], WRONG_PASSWORD), WRONG)
            client.close()

    def test_json_log_events_metrics_and_no_secrets(self):
        """See the module docstring."""
        self.drive_everything()
        self.wait_for_event("outbound", outcome="deferred")
        self.wait_for_event("deletion", reason="pop3")
        text, values = self.metrics()
        for protocol in ("imap", "pop3", "smtp", "web"):
            self.assertGreaterEqual(
                values[f'ktmail_logins_total{{protocol="{protocol}",outcome="ok"}}'], 1, protocol)
            self.assertGreaterEqual(
                values[f'ktmail_logins_total{{protocol="{protocol}",outcome="failed"}}'], 1,
                protocol)
        for kind in ("inbound", "local", "submission"):
            self.assertGreaterEqual(values[f'ktmail_deliveries_total{{kind="{kind}"}}'], 1, kind)
        self.assertGreaterEqual(values['ktmail_outbound_results_total{outcome="deferred"}'], 1)
        self.assertEqual(values['ktmail_spam_verdicts_total{verdict="ham"}']
                         + values['ktmail_spam_verdicts_total{verdict="spam"}'], 1)
        self.assertGreaterEqual(
            values['ktmail_deletions_total{what="messages",reason="expunge"}'], 1)
        self.assertGreaterEqual(values['ktmail_deletions_total{what="messages",reason="pop3"}'],
                                1)
        self.assertEqual(values["ktmail_queue_messages"], 1)
        self.assertEqual(values["ktmail_queue_recipients"], 1)
        self.assertGreaterEqual(values["ktmail_queue_oldest_age_seconds"], 0)
        self.assertIn('ktmail_connections_open{listener="imap"}', values)
        self.assertGreaterEqual(values['ktmail_connections_total{listener="imap",'
                                       'outcome="closed"}'], 1)
        self.assertGreater(values["process_open_fds"], 0)
        self.assertIn("# TYPE ktmail_logins_total counter", text)
        self.assertIn("# TYPE ktmail_queue_messages gauge", text)

        self.d.stop()
        log = self.d.log_text()
        events = self.events()
        secrets = [PASSWORD, WRONG_PASSWORD, BODY_INBOUND, BODY_SUBMITTED]
        for user in (ALICE[0], BOB[0]):
            for password in (PASSWORD, WRONG_PASSWORD):
                secrets.append(base64.b64encode(f"\0{user}\0{password}".encode()).decode())
        for secret in secrets:
            self.assertNotIn(secret, log)
            self.assertNotIn(secret.replace(" ", "+"), log)   # form-encoded
        structured = [e for e in events if "ktmail_event" in e]
        for kind, fields in FIELDS.items():
            found = [e for e in structured if e["ktmail_event"] == kind]
            self.assertTrue(found, f"no {kind} event")
            for event in found:
                self.assertLessEqual(fields, set(event), (kind, event))
                self.assertTrue(event["time"].endswith("Z"))
                self.assertIn(event["level"], ("info", "warn"))
        listeners = {e["listener"] for e in structured if e["ktmail_event"] == "connection"}
        self.assertLessEqual({"smtp", "submission", "imap", "pop3", "web"}, listeners)
        logins = {(e["protocol"], e["outcome"]) for e in structured
                  if e["ktmail_event"] == "login"}
        for protocol in ("imap", "pop3", "smtp", "web"):
            self.assertIn((protocol, "ok"), logins)
            self.assertIn((protocol, "failed"), logins)
        channels = {e["channel"] for e in structured if e["ktmail_event"] == "delivery"}
        self.assertEqual(channels, {"inbound", "local"})
        self.assertFalse(re.search(r'"level": "(error|critical)"', log), "errors were logged")
