"""End to end: a real ``twistd -n ktmail`` on loopback with implicit TLS,
driven by Python's imaplib, Debian's isync (mbsync) and offlineimap3."""

import hashlib
import imaplib
import os
import re
import socket
import ssl
import subprocess
import time

from twisted.trial import unittest

from tests.e2e import PASSWORD, DaemonTestCase, KtmailDaemon, require_binary


def message(n, folder="INBOX", size=0):
    body = b"Message number %d in %s.\r\n" % (n, folder.encode())
    if size:
        body += b"x" * 76 + b"\r\n" * (size // 78)
    return (b"From: Sender %d <sender%d@example.org>\r\n" % (n, n)
            + b"To: alice@brev.fi\r\nSubject: test %d %s\r\n" % (n, folder.encode())
            + b"Message-ID: <%d.%s@example.org>\r\n" % (n, hashlib.md5(folder.encode())
                                                        .hexdigest().encode())
            + b"Date: Fri, 27 Nov 2026 10:00:00 +0200\r\n\r\n" + body)


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_reset(pid):
    """Reset the process's peak RSS (VmHWM) to its RSS now -> that RSS (KiB)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return status_kib(pid, "VmRSS")


class RawIMAP:
    """A blocking TLS connection for what imaplib cannot do (IDLE, LITERAL+
    pipelining)."""

    def __init__(self, daemon, username):
        self.sock = daemon.client_tls().wrap_socket(
            socket.create_connection(("localhost", daemon.ports["imap"]), timeout=30),
            server_hostname="localhost")
        self.buffer = b""
        self.read_until(b"\r\n")
        self.send(b'l LOGIN %s "%s"\r\n' % (username.encode(), PASSWORD.encode()))
        self.read_until(b"l OK")

    def send(self, data):
        self.sock.sendall(data)

    def read_until(self, marker, timeout=30):
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker!r} in {self.buffer[-500:]!r}")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before {marker!r}")
            self.buffer += chunk
        before, _, self.buffer = self.buffer.partition(marker)
        rest, _sep, self.buffer = self.buffer.partition(b"\r\n")
        return before + marker + rest

    def append_many(self, folder, messages):
        """Pipelined LITERAL+ APPENDs (RFC 7888): no round trip per message."""
        for n, data in enumerate(messages):
            self.send(b'a%d APPEND "%s" {%d+}\r\n%s\r\n' % (n, folder.encode(), len(data), data))
        self.read_until(b"a%d OK" % (len(messages) - 1), timeout=120)

    def close(self):
        try:
            self.send(b"z LOGOUT\r\n")
            self.read_until(b"z OK")
        finally:
            self.sock.close()


class ImaplibTests(DaemonTestCase):
    listeners = ("imap",)
    mailboxes = (("alice_u", "alice@brev.fi"), ("bob_u", "bob@brev.fi"),
                 ("carol_u", "carol@brev.fi"), ("dave_u", "dave@brev.fi"))

    def imap(self, username="alice_u"):
        m = imaplib.IMAP4_SSL("localhost", self.daemon.ports["imap"],
                              ssl_context=self.daemon.client_tls(), timeout=60)
        m.login(username, PASSWORD)
        self.addCleanup(m.shutdown)
        return m

    def test_a_session_with_imaplib(self):
        """SPEC §4 over real TLS: capabilities, special-use folders, quota in
        KiB, APPEND with APPENDUID, SEARCH, FETCH, STORE, UID MOVE with
        COPYUID, EXPUNGE, nested and non-ASCII folders."""
        m = self.imap()
        caps = set(m.capability()[1][0].decode().upper().split())
        for need in ("IMAP4REV1", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE", "SPECIAL-USE",
                     "QUOTA", "ID", "ENABLE", "UNSELECT", "CHILDREN", "LITERAL+",
                     "APPENDLIMIT=52428800"):
            self.assertIn(need, caps)
        _, lines = m.list()
        self.assertIn(b'(\\HasNoChildren \\Junk) "/" Spam', lines)
        typ, data = m.getquotaroot("INBOX")
        self.assertEqual(data, [[b'INBOX ""'], [b'"" (STORAGE 0 1024000)']])
        typ, data = m.append("Drafts", "(\\Draft)", None, message(1, "Drafts"))
        self.assertRegex(data[0], rb"^\[APPENDUID \d+ 1\]")
        m.select("Drafts")
        typ, data = m.uid("SEARCH", None, "SUBJECT", '"test 1 Drafts"')
        self.assertEqual(data, [b"1"])
        typ, data = m.uid("FETCH", "1", "(FLAGS RFC822.SIZE BODY.PEEK[])")
        self.assertIn(b"\\Draft", data[0][0])
        self.assertEqual(data[0][1], message(1, "Drafts"))
        m.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        typ, data = m.uid("MOVE", "1", "Trash")
        self.assertEqual(typ, "OK")
        m.select("Trash")
        typ, data = m.uid("SEARCH", None, "FLAGGED")
        self.assertEqual(data, [b"1"])
        m.store("1", "+FLAGS", "(\\Deleted)")
        typ, data = m.expunge()
        self.assertEqual(data, [b"1"])
        self.assertEqual(m.create("Kvitton/F&APY-rs&AOQ-kring")[0], "OK")
        _, lines = m.list('""', "Kvitton/*")
        self.assertEqual(lines, [b'(\\HasNoChildren) "/" Kvitton/F&APY-rs&AOQ-kring'])
        self.assertEqual(m.select('"Kvitton/F&APY-rs&AOQ-kring"')[0], "OK")

    def test_qresync_with_imaplib(self):
        """RFC 7162 against the daemon (Maildir store, index on disk): a
        client that remembers UIDVALIDITY and HIGHESTMODSEQ resynchronises
        an unchanged folder with no FETCH or VANISHED at all, and after
        changes made by another session learns exactly the removed UIDs
        (VANISHED (EARLIER)) and the changed flags, also after a restart
        of the daemon."""
        def connect():
            client = imaplib.IMAP4_SSL("localhost", self.daemon.ports["imap"],
                                       ssl_context=self.daemon.client_tls(), timeout=60)
            client.login("bob_u", PASSWORD)
            return client
        other = connect()
        other.create("Resync")   # a folder of its own: UIDs from 1 whatever ran before
        for n in range(20):
            other.append("Resync", None, None, message(n))
        m = connect()
        self.assertIn(b"QRESYNC", m.capability()[1][0].split())
        self.assertEqual(m.enable("QRESYNC")[0], "OK")
        self.assertEqual(m.select("Resync")[0], "OK")
        validity = int(m.untagged_responses["UIDVALIDITY"][-1])
        modseq = int(m.untagged_responses["HIGHESTMODSEQ"][-1])
        m.unselect()

        def resync():
            for key in ("VANISHED", "FETCH"):
                m.untagged_responses.pop(key, None)
            typ, _ = m._simple_command("SELECT", "Resync", f"(QRESYNC ({validity} {modseq} 1:20))")
            self.assertEqual(typ, "OK")
            return (m.untagged_responses.pop("VANISHED", []),
                    m.untagged_responses.pop("FETCH", []))
        self.assertEqual(resync(), ([], []))
        other.select("Resync")
        other.store("3,5", "+FLAGS", "(\\Deleted)")
        other.expunge()
        other.store("1", "+FLAGS", "(\\Flagged)")
        vanished, fetched = resync()
        self.assertEqual(vanished, [b"(EARLIER) 3,5"])
        self.assertEqual(len(fetched), 1)
        self.assertRegex(fetched[0], rb"^1 \(UID 1 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)$")
        m.logout()
        other.logout()
        self.daemon.restart()
        m = connect()
        m.enable("QRESYNC")
        m.select("Resync")
        vanished, fetched = resync()
        self.assertEqual((vanished, len(fetched)), ([b"(EARLIER) 3,5"], 1))
        m.logout()

    def test_idle_sees_another_session_within_a_second(self):
        """Issue 4: an APPEND, a flag change and an expunge in one session
        reach another session in IDLE within a second."""
        watcher = RawIMAP(self.daemon, "bob_u")
        self.addCleanup(watcher.sock.close)
        watcher.send(b"s SELECT INBOX\r\n")
        watcher.read_until(b"s OK")
        watcher.send(b"i IDLE\r\n")
        watcher.read_until(b"+ idling")
        m = self.imap("bob_u")
        start = time.monotonic()
        m.append("INBOX", None, None, message(1))
        self.assertIn(b"* 1 EXISTS", watcher.read_until(b"EXISTS", timeout=1))
        m.select("INBOX")
        m.store("1", "+FLAGS", "(\\Deleted)")
        watcher.read_until(b"FETCH (UID 1 FLAGS (\\Deleted", timeout=1)
        m.expunge()
        watcher.read_until(b"* 1 EXPUNGE", timeout=1)
        self.assertLess(time.monotonic() - start, 3)
        watcher.send(b"DONE\r\n")
        watcher.read_until(b"i OK")
        watcher.close()

    def test_fifty_mib_append_and_fetch(self):
        """SPEC §1: a 50 MiB message goes in with APPEND and comes back byte
        for byte; one byte more is refused with [TOOBIG] before upload."""
        data = message(1, size=50 * 1024 * 1024 - 4096)
        self.assertLess(len(data), 52428800)
        m = self.imap("carol_u")
        pid = self.daemon.pid
        before = peak_reset(pid)
        typ, result = m.append("INBOX", None, None, data)
        self.assertEqual(typ, "OK", result)
        append_growth = status_kib(pid, "VmHWM") - before
        m.select("INBOX", readonly=True)
        before = peak_reset(pid)
        typ, fetched = m.fetch("1", "(BODY.PEEK[])")
        fetch_growth = status_kib(pid, "VmHWM") - before
        self.assertEqual(hashlib.sha256(fetched[0][1]).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        # issue 4: the daemon's resident memory grows by less than 20 MiB
        self.assertLess(append_growth, 20 * 1024, "APPEND held the message in memory")
        self.assertLess(fetch_growth, 20 * 1024, "FETCH held the message in memory")
        raw = RawIMAP(self.daemon, "carol_u")
        self.addCleanup(raw.sock.close)
        raw.send(b"t APPEND INBOX {52428801}\r\n")
        self.assertIn(b"NO [TOOBIG]", raw.read_until(b"t NO"))
        raw.close()

    def test_wrong_logins(self):
        """SPEC §1: the address is not a username; wrong passwords fail with
        [AUTHENTICATIONFAILED]."""
        m = imaplib.IMAP4_SSL("localhost", self.daemon.ports["imap"],
                              ssl_context=self.daemon.client_tls(), timeout=30)
        self.addCleanup(m.shutdown)
        with self.assertRaisesRegex(imaplib.IMAP4.error, "AUTHENTICATIONFAILED"):
            m.login("alice@brev.fi", PASSWORD)
        with self.assertRaisesRegex(imaplib.IMAP4.error, "AUTHENTICATIONFAILED"):
            m.login("alice_u", "wrong password")


def mbsync_config(daemon, root, username):
    local = os.path.join(root, f"mbsync-{username}")
    os.makedirs(local, exist_ok=True)
    path = os.path.join(root, f"mbsyncrc-{username}")
    with open(path, "w") as f:
        f.write(f"""IMAPAccount ktmail
Host localhost
Port {daemon.ports['imap']}
User {username}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {daemon.cert}
AuthMechs LOGIN PLAIN

IMAPStore remote
Account ktmail

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    return path, local


_COUNTERS = re.compile(r"C: 1/1\s+B: (\d+)/\d+\s+F: \+(\d+)/\d+ \*(\d+)/\d+ #(\d+)/\d+\s+"
                       r"N: \+(\d+)/\d+ \*(\d+)/\d+ #(\d+)/\d+")


def run_mbsync(config):
    """mbsync under a pseudo-terminal (it prints its counters only there,
    CLIENT-NOTES) -> (far +new *flags #expunged, near +new *flags #expunged)."""
    result = subprocess.run(["script", "-qec", f"mbsync -c {config} -a", "/dev/null"],
                            check=False, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"mbsync failed ({result.returncode}):\n{result.stdout[-3000:]}")
    found = _COUNTERS.findall(result.stdout)
    if not found:
        raise AssertionError(f"no mbsync counters in:\n{result.stdout[-3000:]}")
    _boxes, *numbers = (int(n) for n in found[-1])
    return tuple(numbers[:3]), tuple(numbers[3:])


def maildir_files(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) in ("cur", "new"):
            folder = os.path.relpath(os.path.dirname(dirpath), root)
            for name in files:
                out.setdefault(folder, []).append(os.path.join(dirpath, name))
    return out


class SyncClientTests(DaemonTestCase):
    listeners = ("imap",)
    mailboxes = (("mb_u", "mb@brev.fi"), ("oi_u", "oi@brev.fi"), ("mz_u", "mz@brev.fi"))

    def server_counts(self, username):
        m = imaplib.IMAP4_SSL("localhost", self.daemon.ports["imap"],
                              ssl_context=self.daemon.client_tls(), timeout=60)
        m.login(username, PASSWORD)
        counts = {}
        try:
            for line in m.list()[1]:
                name = line.rsplit(b' "/" ', 1)[1].decode().strip('"')
                _typ, data = m.status(f'"{name}"', "(MESSAGES)")
                counts[name] = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        finally:
            m.logout()
        return counts

    def test_mbsync_two_way_sync_of_500_messages(self):
        """Issue 4: mbsync syncs a 500-message mailbox with folders both ways
        (server -> local and local -> server, then flags and deletions both
        ways), and a last sync transfers nothing."""
        require_binary("mbsync")
        d = self.daemon
        raw = RawIMAP(d, "mb_u")
        self.addCleanup(raw.sock.close)
        for folder in ("Projects/2026", "Kvitton/F&APY-rs&AOQ-kring"):
            raw.send(b'c CREATE "%s"\r\n' % folder.encode())
            raw.read_until(b"c OK")
        raw.append_many("INBOX", [message(n) for n in range(200)])
        raw.append_many("Projects/2026", [message(n, "Projects") for n in range(100)])
        raw.append_many("Kvitton/F&APY-rs&AOQ-kring", [message(n, "Kvitton") for n in range(50)])
        raw.close()
        config, local = mbsync_config(d, self.mktemp(), "mb_u")
        # 150 messages exist only locally: a folder the server does not have yet
        for n in range(150):
            path = os.path.join(local, "Local", "Notes")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
            with open(os.path.join(path, "cur", f"17000000{n:02d}.local{n}.host:2,S"),
                      "wb") as f:
                f.write(message(n, "Local/Notes").replace(b"\r\n", b"\n"))
        far, near = run_mbsync(config)
        self.assertEqual((far[0], near[0]), (150, 350))
        counts = self.server_counts("mb_u")
        self.assertEqual(sum(counts.values()), 500)
        self.assertEqual(counts["Local/Notes"], 150)
        self.assertEqual(counts["INBOX"], 200)
        # changes on both sides
        m = imaplib.IMAP4_SSL("localhost", d.ports["imap"], ssl_context=d.client_tls())
        m.login("mb_u", PASSWORD)
        m.select("INBOX")
        m.store("1:10", "+FLAGS", "(\\Flagged)")
        m.store("191:200", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.logout()

        def subject_of(path):
            with open(path, "rb") as f:
                return re.search(rb"Subject: test (\d+) ", f.read()).group(1)
        by_subject = {subject_of(p): p for p in maildir_files(local)["INBOX"]}
        for n in range(100, 105):  # messages nobody touched on the server
            os.unlink(by_subject[b"%d" % n])
        far, near = run_mbsync(config)
        self.assertEqual(far[1], 5, "local deletions reach the server (as \\Deleted)")
        self.assertEqual(near[1], 20, "server flags and expunges reach the local side")
        counts = self.server_counts("mb_u")
        self.assertEqual(counts["INBOX"], 185)
        files = maildir_files(local)
        self.assertEqual(sum(len(v) for v in files.values()), 485)
        flagged = [p for p in files["INBOX"] if "F" in p.rsplit(":2,", 1)[-1]]
        self.assertEqual(sorted(int(subject_of(p)) for p in flagged), list(range(10)))
        far, near = run_mbsync(config)
        self.assertEqual((far, near), ((0, 0, 0), (0, 0, 0)), "the last sync moved something")

    def test_mbsync_syncs_compressed(self):
        """Issue 8: mbsync turns COMPRESS=DEFLATE (RFC 4978) on when it is
        offered, pipelines its commands inside the compressed stream, and a
        full sync both ways completes (its protocol trace shows it)."""
        require_binary("mbsync")
        raw = RawIMAP(self.daemon, "mz_u")
        self.addCleanup(raw.sock.close)
        raw.append_many("INBOX", [message(n, size=20000) for n in range(40)])
        raw.close()
        config, local = mbsync_config(self.daemon, self.mktemp(), "mz_u")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(local, "Local", sub), exist_ok=True)
        for n in range(10):
            with open(os.path.join(local, "Local", "cur", f"17000001{n:02d}.l{n}.host:2,S"),
                      "wb") as f:
                f.write(message(n, "Local").replace(b"\r\n", b"\n"))
        result = subprocess.run(["mbsync", "-Dn", "-c", config, "-a"], check=False,
                                capture_output=True, text=True, timeout=300,
                                stdin=subprocess.DEVNULL)
        trace = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, trace[-3000:])
        self.assertRegex(trace, r"\d+ COMPRESS DEFLATE")
        self.assertRegex(trace, r"\d+ OK DEFLATE active")
        self.assertEqual(len(maildir_files(local)["INBOX"]), 40)
        self.assertEqual(self.server_counts("mz_u")["Local"], 10)

    def test_offlineimap_sync(self):
        """offlineimap3 syncs folders with UTF-8 local names, then a second
        run copies nothing."""
        require_binary("offlineimap")
        d = self.daemon
        raw = RawIMAP(d, "oi_u")
        self.addCleanup(raw.sock.close)
        raw.send(b'c CREATE "Kvitton/F&APY-rs&AOQ-kring"\r\n')
        raw.read_until(b"c OK")
        raw.append_many("INBOX", [message(n) for n in range(30)])
        raw.append_many("Kvitton/F&APY-rs&AOQ-kring", [message(n, "K") for n in range(10)])
        raw.close()
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        config = os.path.join(root, "offlineimaprc")
        with open(config, "w") as f:
            f.write(f"""[general]
accounts = ktmail
metadata = {root}/meta

[Account ktmail]
localrepository = local
remoterepository = remote
utf8foldernames = yes

[Repository local]
type = Maildir
localfolders = {root}/mail
sep = /

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {d.ports['imap']}
remoteuser = oi_u
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {d.cert}
""")

        def run():
            # offlineimap is a Debian Python program: keep our interpreter's
            # settings (trial -j sets PYTHONPATH) out of its way
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            result = subprocess.run(["offlineimap", "-c", config, "-o", "-u", "basic"],
                                    check=False, capture_output=True, text=True, timeout=300,
                                    stdin=subprocess.DEVNULL, env=env)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            return result.stdout + result.stderr
        output = run()
        self.assertEqual(output.count("Copy message"), 40, output)
        files = maildir_files(os.path.join(root, "mail"))
        self.assertEqual(len(files["INBOX"]), 30)
        self.assertEqual(len(files["Kvitton/Försäkring"]), 10)
        output = run()
        self.assertNotIn("Copy message", output)
        self.assertNotIn("flag", output.lower().replace("utf8foldernames", ""))


class RestartTests(unittest.TestCase):
    def test_uids_and_uidvalidity_survive_a_restart(self):
        """SPEC §5: after a restart UIDVALIDITY and every UID are the same."""
        d = KtmailDaemon(self.mktemp(), listeners=("imap",))
        self.addCleanup(d.stop)
        d.start()
        d.add_mailboxes([("alice_u", "alice@brev.fi")])

        def snapshot():
            m = imaplib.IMAP4_SSL("localhost", d.ports["imap"], ssl_context=d.client_tls())
            m.login("alice_u", PASSWORD)
            try:
                m.select("INBOX", readonly=True)
                return m.response("UIDVALIDITY")[1], m.uid("SEARCH", None, "ALL")[1]
            finally:
                m.logout()
        raw = RawIMAP(d, "alice_u")
        raw.append_many("INBOX", [message(n) for n in range(20)])
        raw.send(b"s SELECT INBOX\r\nx STORE 2:5 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\n")
        raw.read_until(b"e OK")
        raw.close()
        before = snapshot()
        self.assertEqual(len(before[1][0].split()), 16)
        d.restart()
        self.assertEqual(snapshot(), before)

    def test_no_tls_no_clear_text_password(self):
        """SPEC §2: the imap listener speaks TLS from the first byte."""
        d = KtmailDaemon(self.mktemp(), listeners=("imap",))
        self.addCleanup(d.stop)
        d.start()
        with socket.create_connection(("127.0.0.1", d.ports["imap"]), timeout=10) as s:
            s.sendall(b"a CAPABILITY\r\n")
            try:
                data = s.recv(100)
            except (TimeoutError, ConnectionResetError):
                data = b""
            self.assertNotIn(b"* OK", data)
        with ssl.create_default_context(cafile=d.cert).wrap_socket(
                socket.create_connection(("localhost", d.ports["imap"])),
                server_hostname="localhost") as s:
            self.assertIn(b"AUTH=PLAIN", s.recv(1000))
