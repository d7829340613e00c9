"""SMTP end to end: a real ``twistd ktmail`` on loopback, driven by
Python's smtplib, Debian's swaks (port 25, plain and STARTTLS) and msmtp
(submission, implicit TLS), and by raw sockets for the framing attacks.
The mail is checked where it lands: the mailbox's Maildir."""

import email
import email.policy
import os
import socket
import ssl
import subprocess
import time

from tests.e2e import PASSWORD, DaemonTestCase, KtmailDaemon, require_binary

ALICE = ("alice_u", "alice@brev.fi")
BOB = ("bob_u", "bob@pikaposti.fi")


def message(sender, to, subject, body="Hello from the end-to-end test.\r\n", extra=""):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@e2e.example>\r\n"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0200\r\n{extra}\r\n{body}").encode()


def smtp_code(fn):
    import smtplib
    try:
        fn()
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return code, text.decode()
    except (smtplib.SMTPResponseException, smtplib.SMTPSenderRefused) as e:
        return e.smtp_code, e.smtp_error.decode()
    return 250, ""


class RawSession:
    """A plain socket speaking SMTP, for what clients would not send."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.file = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError("connection closed")
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return "\n".join(lines)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def close(self):
        self.file.close()
        self.sock.close()


class InboundMX(DaemonTestCase):
    listeners = ("smtp",)
    limits = {"max_message_bytes": 1048576}
    mailboxes = (ALICE, BOB)

    def test_extensions(self):
        """Port 25 advertises SIZE (the configured limit), PIPELINING,
        8BITMIME, ENHANCEDSTATUSCODES, STARTTLS and no AUTH."""
        with self.daemon.smtp() as s:
            for keyword in ("pipelining", "8bitmime", "enhancedstatuscodes", "starttls",
                            "chunking", "smtputf8"):
                self.assertTrue(s.has_extn(keyword), keyword)
            self.assertEqual(s.esmtp_features["size"], "1048576")
            self.assertFalse(s.has_extn("auth"))
            s.starttls(context=self.daemon.client_tls())
            s.ehlo("client.example.org")
            self.assertFalse(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"))

    def test_size_declared_too_big(self):
        """MAIL with SIZE= over the limit: 552 5.3.4."""
        with self.daemon.smtp() as s:
            code, text = s.docmd("MAIL FROM:<big@example.org> SIZE=2000000")
            self.assertEqual((code, text[:5]), (552, b"5.3.4"))

    def test_recipient_rules(self):
        """Unknown local user 550 5.1.1; foreign domain 554 5.7.1."""
        with self.daemon.smtp() as s:
            s.mail("someone@example.org")
            self.assertEqual(s.rcpt("nobody@brev.fi")[0], 550)
            code, text = s.rcpt("victim@example.net")
            self.assertEqual((code, text[:5]), (554, b"5.7.1"))
            code, text = s.rcpt("<@brev.fi:victim@example.net>")
            self.assertEqual(code, 554)

    def test_smtplib_delivers_to_inbox(self):
        """A message sent with smtplib is in alice's INBOX, CRLF, with our
        Received: line first (ESMTP) and the body intact."""
        with self.daemon.smtp() as s:
            s.sendmail("friend@example.org", [ALICE[1]],
                       message("friend@example.org", ALICE[1], "e2e-smtplib",
                               body="..dot line\r\nbye\r\n"))
        stored = self.daemon.wait_for_message(ALICE[0], "e2e-smtplib")
        self.assertNotIn(b"\n", stored.replace(b"\r\n", b""))
        self.assertIn(b"Received: from client.example.org ([127.0.0.1])\r\n\tby "
                      b"mail.example.test (ktmail) with ESMTP id ", stored)
        self.assertIn(b"\r\n\r\n..dot line\r\nbye\r\n", stored)

    def test_gtube_is_scanned_into_spam(self):
        """Mail from the internet is spam-scanned: the GTUBE test message
        lands in the Spam folder with X-Spam-Status: Yes, not in INBOX."""
        gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
        with self.daemon.smtp() as s:
            s.sendmail("spammer@example.org", [ALICE[1]],
                       message("spammer@example.org", ALICE[1], "e2e-gtube",
                               body=f"Buy now!\r\n{gtube}\r\n"))
        stored = self.daemon.wait_for_message(ALICE[0], "e2e-gtube", folder="Spam")
        self.assertIn(b"X-Spam-Status: Yes", stored)
        self.assertEqual([m for m in self.daemon.messages(ALICE[0]) if b"e2e-gtube" in m], [])

    def test_swaks_plain_and_starttls(self):
        """swaks delivers over plain SMTP and over STARTTLS; the second
        message's Received: line says ESMTPS with the TLS version."""
        swaks = require_binary("swaks")
        port = str(self.daemon.ports["smtp"])
        for subject, tls in (("e2e-swaks-plain", []), ("e2e-swaks-tls", ["--tls"])):
            result = subprocess.run(
                [swaks, "--server", "127.0.0.1", "--port", port, "--from", "friend@example.org",
                 "--to", ALICE[1], "--helo", "swaks.example.org", "--header",
                 f"Subject: {subject}", "--body", "Sent by swaks.", *tls],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            if tls:
                self.assertIn("TLS started", result.stdout)
        self.assertIn(b"with ESMTP id", self.daemon.wait_for_message(ALICE[0], "e2e-swaks-plain"))
        stored = self.daemon.wait_for_message(ALICE[0], "e2e-swaks-tls")
        self.assertRegex(stored, rb"\(using TLSv1\.[23] with cipher \S+\)\r\n\tby "
                                 rb"mail\.example\.test \(ktmail\) with ESMTPS id")

    def test_swaks_unknown_recipient(self):
        """swaks reports the 550 for an unknown mailbox and fails."""
        swaks = require_binary("swaks")
        result = subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(self.daemon.ports["smtp"]),
             "--from", "friend@example.org", "--to", "nobody@brev.fi"],
            capture_output=True, text=True, timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("550 5.1.1", result.stdout)

    def test_starttls_injection(self):
        """Commands sent in the same segment as STARTTLS are not run inside
        TLS: after the handshake the first reply is the EHLO's."""
        raw = RawSession(self.daemon.ports["smtp"])
        self.addCleanup(raw.close)
        raw.reply()
        raw.send("EHLO attacker.example\r\n")
        raw.reply()
        raw.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@brev.fi>\r\n")
        self.assertTrue(raw.reply().startswith("220 2.0.0"))
        context = ssl.create_default_context(cafile=self.daemon.cert)
        tls = context.wrap_socket(raw.sock, server_hostname="localhost")
        tls.sendall(b"EHLO attacker.example\r\n")
        reader = tls.makefile("rb")
        first = reader.readline()
        self.assertTrue(first.startswith(b"250-mail.example.test"), first)
        while not reader.readline().startswith(b"250 "):
            pass
        tls.sendall(b"RCPT TO:<alice@brev.fi>\r\n")
        self.assertTrue(reader.readline().startswith(b"503 5.5.1"))
        tls.close()

    def test_bare_lf_smuggling(self):
        """A body with `\\n.\\n` and a second transaction after it: the
        server waits for the real end, refuses the message (550), and no
        smuggled message reaches bob."""
        raw = RawSession(self.daemon.ports["smtp"])
        self.addCleanup(raw.close)
        raw.reply()
        raw.send("EHLO attacker.example\r\n")
        raw.reply()
        raw.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@brev.fi>\r\nDATA\r\n")
        for _ in range(3):
            raw.reply()
        raw.send("Subject: e2e-first\r\n\r\nhi\n.\nMAIL FROM:<evil@example.org>\n"
                 "RCPT TO:<bob@pikaposti.fi>\nDATA\nSubject: e2e-smuggled\n\nowned\n.\n")
        raw.send("\r\n.\r\n")
        self.assertTrue(raw.reply().startswith("550 5.6.0"))
        raw.send("QUIT\r\n")
        raw.reply()
        self.assertEqual([m for m in self.daemon.messages(BOB[0]) if b"e2e-smuggled" in m], [])
        self.assertEqual([m for m in self.daemon.messages(ALICE[0]) if b"e2e-first" in m], [])

    def test_oversize_without_size_parameter(self):
        """Twice the limit without SIZE=: read to the end, refused with 552
        5.3.4; the session stays usable."""
        with self.daemon.smtp() as s:
            s.mail("big@example.org")
            s.rcpt(ALICE[1])
            code, _ = s.docmd("DATA")
            self.assertEqual(code, 354)
            line = b"x" * 998 + b"\r\n"
            s.send(b"Subject: e2e-big\r\n\r\n" + line * 2100 + b".\r\n")
            code, text = s.getreply()
            self.assertEqual((code, text[:5]), (552, b"5.3.4"))
            self.assertEqual(s.noop()[0], 250)


class Submission(DaemonTestCase):
    listeners = ("submission",)
    limits = {"smtp_recipients_per_hour": 50}
    mailboxes = (ALICE, BOB)

    def test_auth_rules(self):
        """465: AUTH PLAIN LOGIN offered; MAIL before AUTH 530 5.7.0; wrong
        password 535 5.7.8; the e-mail address is not a username."""
        s = self.daemon.submission()
        try:
            self.assertEqual(set(s.esmtp_features["auth"].upper().split()), {"PLAIN", "LOGIN"})
            self.assertFalse(s.has_extn("starttls"))
            code, text = s.docmd(f"MAIL FROM:<{ALICE[1]}>")
            self.assertEqual((code, text[:5]), (530, b"5.7.0"))
            code, text = smtp_code(lambda: s.login(ALICE[0], "wrong password"))
            self.assertEqual((code, text[:5]), (535, "5.7.8"))
        finally:
            s.close()
        s = self.daemon.submission()
        try:
            code, _ = smtp_code(lambda: s.login(ALICE[1], PASSWORD))
            self.assertEqual(code, 535)
        finally:
            s.close()

    def test_sender_checks(self):
        """MAIL FROM another address 553 5.7.1; a From: header of another
        address 550 5.7.1 at the end of DATA."""
        s = self.daemon.submission(ALICE[0])
        try:
            code, text = s.docmd(f"MAIL FROM:<{BOB[1]}>")
            self.assertEqual((code, text[:5]), (553, b"5.7.1"))
            s.rset()
            code, text = smtp_code(lambda: s.sendmail(
                ALICE[1], [BOB[1]], message(BOB[1], BOB[1], "e2e-spoof")))
            self.assertEqual((code, text[:5]), (550, "5.7.1"))
        finally:
            s.quit()

    def test_smtplib_local_delivery(self):
        """alice sends to bob with smtplib: in bob's INBOX, unscanned,
        Received: says ESMTPSA; the Message-ID: and Date: the message lacked
        were added."""
        data = f"From: {ALICE[1]}\r\nTo: {BOB[1]}\r\nSubject: e2e-submit\r\n\r\nHi\r\n"
        with self.daemon.submission(ALICE[0]) as s:
            s.sendmail(ALICE[1], [BOB[1]], data.encode())
        stored = self.daemon.wait_for_message(BOB[0], "e2e-submit")
        self.assertIn(b"with ESMTPSA id", stored)
        self.assertNotIn(b"X-Spam-Status", stored)
        parsed = email.message_from_bytes(stored, policy=email.policy.SMTP)
        self.assertTrue(parsed["Message-ID"].endswith("@mail.example.test>"))
        self.assertEqual(len(parsed.get_all("Date")), 1)

    def msmtp(self, user, password, recipient, data):
        msmtp = require_binary("msmtp")
        config = os.path.join(self.daemon.root, f"msmtprc-{time.time_ns()}")
        with open(config, "w") as f:
            f.write(f"account default\nhost localhost\nport {self.daemon.ports['submission']}\n"
                    f"tls on\ntls_starttls off\ntls_trust_file {self.daemon.cert}\n"
                    f"auth on\nuser {user}\npassword {password}\nfrom {ALICE[1]}\n")
        os.chmod(config, 0o600)
        return subprocess.run([msmtp, "-C", config, recipient], input=data,
                              capture_output=True, timeout=60)

    def test_msmtp_implicit_tls(self):
        """msmtp (implicit TLS, AUTH) delivers alice's message to bob, with
        one Message-ID: and one Date: (msmtp adds them; ktmail adds none more)."""
        data = (f"From: Alice <{ALICE[1]}>\r\nTo: {BOB[1]}\r\nSubject: e2e-msmtp\r\n\r\n"
                "Sent by msmtp.\r\n").encode()
        result = self.msmtp(ALICE[0], PASSWORD, BOB[1], data)
        self.assertEqual(result.returncode, 0, result.stderr)
        stored = self.daemon.wait_for_message(BOB[0], "e2e-msmtp")
        parsed = email.message_from_bytes(stored, policy=email.policy.SMTP)
        self.assertEqual(len(parsed.get_all("Message-ID")), 1)
        self.assertEqual(len(parsed.get_all("Date")), 1)

    def test_remote_recipient_is_queued(self):
        """A remote recipient is accepted only into the outbound queue (the
        test smarthost is closed, so it stays there): ktmail-admin queue
        list shows it, DKIM-signed for alice's domain."""
        with self.daemon.submission(ALICE[0]) as s:
            s.sendmail(ALICE[1], ["Friend@example.org"],
                       message(ALICE[1], "Friend@example.org", "e2e-remote"))
        listing = self.daemon.admin("queue", "list").stdout
        self.assertIn(f"from <{ALICE[1]}>", listing)
        self.assertIn("Friend@example.org", listing)

    def test_msmtp_wrong_password(self):
        """msmtp with a wrong password fails and reports the 535."""
        require_binary("msmtp")
        result = self.msmtp(ALICE[0], "not the password", BOB[1], b"Subject: x\r\n\r\nx\r\n")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"535", result.stderr)


class SubmissionLimitAcrossRestart(DaemonTestCase):
    def test_hourly_limit_survives_restart(self):
        """With 2 recipients per hour: two used, the daemon restarted, the
        third recipient still gets 451 4.7.1."""
        daemon = KtmailDaemon(self.mktemp(), ("submission",),
                              {"smtp_recipients_per_hour": 2})
        self.addCleanup(daemon.stop)
        daemon.start()
        daemon.add_mailboxes([ALICE, BOB])
        with daemon.submission(ALICE[0]) as s:
            s.sendmail(ALICE[1], [BOB[1], ALICE[1]], message(ALICE[1], BOB[1], "e2e-rate"))
        daemon.restart()
        with daemon.submission(ALICE[0]) as s:
            s.mail(ALICE[1])
            code, text = s.rcpt(BOB[1])
        self.assertEqual((code, text[:5]), (451, b"4.7.1"))
        self.assertIn(b"sending works again at", text)
