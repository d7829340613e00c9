"""POP3 against a real ``twistd -n ktmail`` over TLS, with Python's poplib
and Debian's fetchmail and mpop (installed by .ci/run).

Mail is put into the INBOX the way another Maildir tool would (a file
written to tmp/ and renamed into new/), so these tests need no SMTP
listener; the daemon picks the files up on the next login.
"""

import base64
import hashlib
import os
import poplib
import secrets
import socket
import subprocess
import time

from tests.e2e import PASSWORD, DaemonTestCase, require_binary
from tests.protocols.pop3_transcript import unstuff

ALICE = ("alice_u", "alice@brev.fi")
BOB = ("bob_u", "bob@pikaposti.fi")
CAROL = ("carol_u", "carol@sboksi.fi")
DAVE = ("dave_u", "dave@minmail.fi")
ERIN = ("erin_u", "erin@livenet.fi")


def message(subject, body="Hello over POP3.\r\n"):
    return (f"From: sender@example.org\r\nTo: someone@brev.fi\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@example.org>\r\n\r\n{body}").encode()


def pad(n):
    """``n`` bytes of CRLF lines of at most 1000 x (n >= 2)."""
    lines = []
    while n > 1002:
        k = 1000 if n - 1002 >= 2 else n - 4
        lines.append(b"x" * k + b"\r\n")
        n -= k + 2
    lines.append(b"x" * (n - 2) + b"\r\n")
    return b"".join(lines)


def drop_into_inbox(daemon, username, data, folder="INBOX"):
    """Deliver like a Maildir tool: write into tmp/, rename into new/."""
    base = daemon.maildir(username, folder)
    name = f"{time.time_ns()}.P{os.getpid()}R{secrets.token_hex(4)}.e2e"
    with open(os.path.join(base, "tmp", name), "wb") as f:
        f.write(data)
    os.rename(os.path.join(base, "tmp", name), os.path.join(base, "new", name))


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


class POP3EndToEndTests(DaemonTestCase):
    listeners = ("pop3",)
    mailboxes = (ALICE, BOB, CAROL, DAVE, ERIN)

    def pop3(self, username=None, password=PASSWORD):
        d = self.daemon
        p = poplib.POP3_SSL("localhost", d.ports["pop3"], context=d.client_tls(), timeout=30)
        if username:
            p.user(username)
            p.pass_(password)
        self.addCleanup(p.close)
        return p

    def subjects_on_server(self, username):
        p = self.pop3(username)
        try:
            count, _ = p.stat()
            out = []
            for i in range(1, count + 1):
                for line in p.top(i, 0)[1]:
                    if line.startswith(b"Subject: "):
                        out.append(line[9:].decode())
            return sorted(out)
        finally:
            p.quit()

    # --- poplib ----------------------------------------------------------------------

    def test_poplib_session_over_tls(self):
        """poplib over implicit TLS: CAPA (RFC 2449), USER/PASS, STAT, LIST,
        UIDL, TOP, RETR with dot-stuffing at 16 KiB boundaries, DELE, QUIT;
        UIDLs are the same in the next session; wrong credentials answer
        -ERR [AUTH]; AUTH PLAIN works."""
        d = self.daemon
        head = message("poplib one", "")
        # "." lines at offsets 16384 and 65536: the starts of read chunks
        body = pad(16384 - len(head)) + b".dot at 16384\r\n"
        body += pad(65536 - len(head) - len(body)) + b".\r\n"
        first = head + body + b"..two dots\r\nend\r\n"
        self.assertEqual(first[16384:16385] + first[65536:65537], b"..")
        drop_into_inbox(d, "alice_u", first)
        drop_into_inbox(d, "alice_u", message("poplib two"))
        p = self.pop3()
        caps = p.capa()
        for need in ("USER", "UIDL", "TOP", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
            self.assertIn(need, caps)
        self.assertEqual(caps["SASL"], ["PLAIN"])
        self.assertEqual(caps["EXPIRE"], ["NEVER"])
        self.assertNotIn("CELERITY", caps)
        with self.assertRaises(poplib.error_proto) as refused:
            p.user("alice_u")
            p.pass_("wrong password")
        self.assertIn(b"-ERR [AUTH]", refused.exception.args[0])
        p.user("alice_u")
        p.pass_(PASSWORD)
        count, octets = p.stat()
        self.assertEqual(count, 2)
        sizes = [int(line.split()[1]) for line in p.list()[1]]
        self.assertEqual(sum(sizes), octets)
        uidls = p.uidl()[1]
        _, lines, _ = p.retr(1)
        self.assertEqual(b"\r\n".join(lines) + b"\r\n", first)
        self.assertIn(b".dot at 16384", lines)
        self.assertIn(b".", lines)
        self.assertIn(b"..two dots", lines)
        top = p.top(2, 0)[1]
        self.assertIn(b"Subject: poplib two", top)
        p.dele(2)
        self.assertEqual(p.stat()[0], 1)
        p.quit()
        again = self.pop3("alice_u")
        self.assertEqual(again.uidl()[1], uidls[:1])
        again.quit()
        plain = self.pop3()
        blob = base64.b64encode(b"\0alice_u\0" + PASSWORD.encode()).decode()
        self.assertTrue(plain._shortcmd("AUTH PLAIN " + blob).startswith(b"+OK"))
        self.assertEqual(plain.stat()[0], 1)
        plain.quit()

    def test_inbox_only_and_stable_uidls(self):
        """SPEC §1: POP3 shows INBOX, never the Spam folder; the UIDLs of a
        second session are those of the first (what the acceptance smoke
        checks)."""
        d = self.daemon
        drop_into_inbox(d, "erin_u", message("smoke-inbound"))
        drop_into_inbox(d, "erin_u", message("smoke-gtube"), folder="Spam")
        self.assertEqual(self.subjects_on_server("erin_u"), ["smoke-inbound"])
        p = self.pop3("erin_u")
        uidls = p.uidl()[1]
        p.quit()
        p = self.pop3("erin_u")
        self.assertEqual(p.uidl()[1], uidls)
        p.quit()

    def test_lock_and_reconnect_at_once(self):
        """A second session for a mailbox in use gets -ERR [IN-USE]; right
        after QUIT the next login gets in (the lock is free before +OK)."""
        drop_into_inbox(self.daemon, "bob_u", message("lock"))
        first = self.pop3("bob_u")
        second = self.pop3()
        second.user("bob_u")
        with self.assertRaises(poplib.error_proto) as in_use:
            second.pass_(PASSWORD)
        self.assertIn(b"-ERR [IN-USE]", in_use.exception.args[0])
        first.quit()
        for _ in range(20):
            p = self.pop3("bob_u")
            p.quit()

    def test_50_mib_retr_streams_with_back_pressure(self):
        """A 50 MiB message goes out whole and exact (un-stuffed, it is the
        stored file), with "." lines at 16 KiB boundaries, while the
        daemon's memory stays flat: a client that stops reading holds the
        server back instead of filling its memory."""
        d = self.daemon
        line = b"z" * 1022 + b"\r\n"
        chunk = line * 15 + b"." + b"w" * 1021 + b"\r\n"     # 16 KiB, "." line at its end
        data = b"Subject: big\r\n\r\n" + chunk * (50 * 64 - 1)
        drop_into_inbox(d, "carol_u", data)
        digest = hashlib.sha256(data).hexdigest()
        raw = socket.create_connection(("localhost", d.ports["pop3"]), timeout=60)
        sock = d.client_tls().wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"USER carol_u\r\nPASS {PASSWORD}\r\n".encode())
        reader.readline()
        self.assertTrue(reader.readline().startswith(b"+OK Logged in; 1 message"))
        before = rss_kib(d.pid)
        peak_before = rss_kib(d.pid, "VmHWM")
        sock.sendall(b"RETR 1\r\n")
        self.assertEqual(reader.readline(), f"+OK {len(data)} octets\r\n".encode())
        received = [reader.read(1 << 20)]
        time.sleep(1.5)          # the client stops reading: back-pressure
        stalled = rss_kib(d.pid)
        while not received[-1].endswith(b"\r\n.\r\n"):
            piece = reader.read1(1 << 20)
            self.assertTrue(piece, "the connection closed before the end")
            received.append(piece)
        body = b"".join(received)[:-3]
        peak_after = rss_kib(d.pid, "VmHWM")
        self.assertEqual(body.count(b"\r\n.."), data.count(b"\r\n."))
        self.assertEqual(hashlib.sha256(unstuff(body)).hexdigest(), digest)
        self.assertLess(stalled - before, 20 * 1024, "memory grew while the client stalled")
        self.assertLess(peak_after - peak_before, 20 * 1024, "the message was buffered")
        sock.sendall(b"QUIT\r\n")
        self.assertTrue(reader.readline().startswith(b"+OK"))

    # --- fetchmail -------------------------------------------------------------------

    def fetchmail(self, username, keep, workdir):
        """Run fetchmail once over TLS -> (exit status, downloaded messages)."""
        binary = require_binary("fetchmail")
        d = self.daemon
        os.makedirs(os.path.join(workdir, "out"), exist_ok=True)
        rc = os.path.join(workdir, "fetchmailrc")
        with open(rc, "w") as f:
            f.write(f'set no bouncemail\n'
                    f'poll localhost port {d.ports["pop3"]} protocol POP3 uidl\n'
                    f'  user "{username}" there with password "{PASSWORD}"\n'
                    f'  ssl sslcertck sslcertfile "{d.cert}"\n'
                    f'  {"keep" if keep else "nokeep"}\n'
                    f'  mda "/bin/sh -c \'cat > $(mktemp -p {workdir}/out msg.XXXXXX)\'"\n')
        os.chmod(rc, 0o600)
        before = set(os.listdir(os.path.join(workdir, "out")))
        result = subprocess.run(
            [binary, "-f", rc, "--idfile", os.path.join(workdir, "fetchids"),
             "--pidfile", os.path.join(workdir, "fetchmail.pid"), "--nosyslog", "--nodetach",
             "-v"],
            env={"HOME": workdir, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            check=False, capture_output=True, text=True, timeout=120)
        self.last_fetchmail_output = result.stdout + result.stderr
        if result.returncode not in (0, 1):     # 1: no mail, which is not an error
            self.fail(f"fetchmail exited {result.returncode}:\n{result.stdout}\n"
                      f"{result.stderr}\n{d.log_text()[-2000:]}")
        new = sorted(set(os.listdir(os.path.join(workdir, "out"))) - before)
        messages = []
        for name in new:
            with open(os.path.join(workdir, "out", name), "rb") as f:
                messages.append(f.read())
        return result.returncode, messages

    @staticmethod
    def subjects(messages):
        out = []
        for m in messages:
            for line in m.split(b"\n"):
                if line.startswith(b"Subject: "):
                    out.append(line[9:].strip().decode())
        return sorted(out)

    def test_fetchmail_keeping_mail_on_the_server(self):
        """fetchmail with keep + uidl: the first run downloads everything,
        the second nothing, the third only what arrived meanwhile; the mail
        stays on the server."""
        workdir = os.path.abspath(self.mktemp())
        for i in range(3):
            drop_into_inbox(self.daemon, "dave_u", message(f"keep {i}"))
        status, got = self.fetchmail("dave_u", keep=True, workdir=workdir)
        self.assertEqual((status, self.subjects(got)), (0, ["keep 0", "keep 1", "keep 2"]))
        status, got = self.fetchmail("dave_u", keep=True, workdir=workdir)
        self.assertEqual((status, got), (1, []))
        drop_into_inbox(self.daemon, "dave_u", message("keep 3"))
        status, got = self.fetchmail("dave_u", keep=True, workdir=workdir)
        self.assertEqual((status, self.subjects(got)), (0, ["keep 3"]))
        self.assertEqual(self.subjects_on_server("dave_u"),
                         ["keep 0", "keep 1", "keep 2", "keep 3"])

    def test_fetchmail_deleting_mail(self):
        """fetchmail without keep: one run downloads and deletes everything
        (DELE then QUIT), the next finds nothing, and the INBOX is empty."""
        workdir = os.path.abspath(self.mktemp())
        for i in range(2):
            drop_into_inbox(self.daemon, "alice_u", message(f"take {i}"))
        before = self.subjects_on_server("alice_u")
        status, got = self.fetchmail("alice_u", keep=False, workdir=workdir)
        self.assertEqual(status, 0)
        self.assertEqual(self.subjects(got), before)
        status, got = self.fetchmail("alice_u", keep=False, workdir=workdir)
        self.assertEqual((status, got), (1, []))
        self.assertEqual(self.subjects_on_server("alice_u"), [])

    # --- mpop ------------------------------------------------------------------------

    def test_mpop_leaves_mail_on_the_server(self):
        """mpop with "keep on" and its UIDL file: downloads once, then
        nothing new (RFC 1939 UIDL used as intended)."""
        binary = require_binary("mpop")
        d = self.daemon
        workdir = os.path.abspath(self.mktemp())
        out = os.path.join(workdir, "mbox")
        os.makedirs(workdir)
        drop_into_inbox(d, "bob_u", message("mpop 1"))
        rc = os.path.join(workdir, "mpoprc")
        with open(rc, "w") as f:
            f.write(f"account test\nhost localhost\nport {d.ports['pop3']}\n"
                    f"tls on\ntls_starttls off\ntls_trust_file {d.cert}\n"
                    f"auth plain\nuser bob_u\npassword {PASSWORD}\nkeep on\n"
                    f"uidls_file {workdir}/uidls\ndelivery mbox {out}\n")
        os.chmod(rc, 0o600)

        def run():
            result = subprocess.run([binary, "-C", rc, "-q", "test"], check=False,
                                    capture_output=True, text=True, timeout=120,
                                    env={"HOME": workdir})
            if result.returncode != 0:
                self.fail(f"mpop exited {result.returncode}: {result.stderr}")
            with open(out, "rb") as f:
                return f.read().count(b"\nSubject: mpop")
        self.assertEqual(run(), 1)
        self.assertEqual(run(), 1)
        drop_into_inbox(d, "bob_u", message("mpop 2"))
        self.assertEqual(run(), 2)
