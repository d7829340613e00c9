"""Attacks against a real ``twistd ktmail`` on loopback, with figures:

    python -m bench.attack_bench [bruteforce|slowloris ...]

- **brute force**: 1,000 wrong passwords for one mailbox from one address
  (127.0.0.2), over IMAP, POP3, SMTP submission and the webmail at once,
  while the mailbox's owner logs in from another address (127.0.0.1)
  over each of them in turn. Prints the attacker's attempts per second,
  how many passwords it got checked, when the first refusal came, and the
  owner's login latency during the attack.
- **slowloris**: 500 connections that send nothing or a byte now and
  then, spread over every listener from 20 addresses (127.0.0.10-29), held
  open while the owner logs in over each protocol; then 500 from one
  address to IMAP, of which only the per-client cap is admitted. Prints
  the owner's login latency, how many connections were held, refused at
  once, and how long the held ones lived.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client can
bind any of those addresses and look like another host; the daemon's
default ``connection_limit_exempt`` covers only 127.0.0.1 and ::1.

The drivers here are used by tests/test_end_to_end_attacks.py too.
"""

import base64
import http.client
import os
import re
import select
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

from tests.e2e import PASSWORD, KtmailDaemon

OWNER = ("alice_u", "alice@brev.fi")
LEGIT = "127.0.0.1"
ATTACKER = "127.0.0.2"
OK, WRONG, THROTTLED = "ok", "wrong", "throttled"


def daemon_for_attacks(root, **limits):
    """A daemon with every listener and the owner's mailbox."""
    d = KtmailDaemon(root, limits=limits)
    d.start()
    d.add_mailboxes([OWNER])
    return d


def _tls():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Line:
    """A line-oriented client connection from a chosen source address."""

    def __init__(self, port, source, use_tls, timeout=30):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0))
        if use_tls:
            sock = _tls().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data + b"\r\n")

    def line(self):
        data = self.reader.readline()
        if not data:
            raise ConnectionError("closed by the server")
        return data.rstrip(b"\r\n")

    def close(self):
        try:
            self.reader.close()
            self.sock.close()
        except OSError:
            pass


class IMAPLogin:
    name = "imap"

    def __init__(self, daemon, source):
        self.port, self.source = daemon.ports["imap"], source
        self.conn = None
        self.n = 0

    def attempt(self, username, password):
        for _ in range(3):
            try:
                return self._attempt(username, password)
            except (OSError, ConnectionError):
                self.close()
        raise ConnectionError("IMAP keeps closing")

    def _attempt(self, username, password):
        if self.conn is None:
            self.conn = _Line(self.port, self.source, True)
            self.conn.line()
        self.n += 1
        tag = b"a%d" % self.n
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        self.conn.send(tag + f' LOGIN {username} "{quoted}"'.encode())
        while True:
            line = self.conn.line()
            if line.startswith(tag + b" "):
                break
        if line.startswith(tag + b" OK"):
            self.conn.send(b"z LOGOUT")
            self.close()
            return OK
        return THROTTLED if b"[UNAVAILABLE]" in line else WRONG

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class POP3Login:
    name = "pop3"

    def __init__(self, daemon, source):
        self.port, self.source = daemon.ports["pop3"], source
        self.conn = None

    def attempt(self, username, password):
        for _ in range(3):
            try:
                return self._attempt(username, password)
            except (OSError, ConnectionError):
                self.close()
        raise ConnectionError("POP3 keeps closing")

    def _attempt(self, username, password):
        if self.conn is None:
            self.conn = _Line(self.port, self.source, True)
            self.conn.line()
        self.conn.send(f"USER {username}".encode())
        self.conn.line()
        self.conn.send(f"PASS {password}".encode())
        line = self.conn.line()
        if line.startswith(b"+OK"):
            self.conn.send(b"QUIT")
            self.conn.line()
            self.close()
            return OK
        return THROTTLED if b"[SYS/TEMP]" in line else WRONG

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SMTPLogin:
    """Submission: a new session each time (three failures close one)."""

    name = "smtp"

    def __init__(self, daemon, source):
        self.port, self.source = daemon.ports["submission"], source

    def attempt(self, username, password):
        conn = _Line(self.port, self.source, True)
        try:
            conn.line()
            conn.send(b"EHLO attack.example")
            while not conn.line().startswith(b"250 "):
                pass
            blob = base64.b64encode(f"\0{username}\0{password}".encode())
            conn.send(b"AUTH PLAIN " + blob)
            line = conn.line()
            conn.send(b"QUIT")
        finally:
            conn.close()
        if line.startswith(b"235"):
            return OK
        return THROTTLED if line.startswith(b"454") else WRONG

    def close(self):
        pass


class WebLogin:
    """The webmail's login form (with its cookie and token), over keep-alive."""

    name = "web"

    def __init__(self, daemon, source):
        self.port, self.source = daemon.ports["web"], source
        self.conn = None
        self.cookies = {}
        self.token = None

    def attempt(self, username, password):
        for _ in range(3):
            try:
                return self._attempt(username, password)
            except (OSError, http.client.HTTPException):
                self.close()
        raise ConnectionError("the web listener keeps closing")

    def _request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data

    def _attempt(self, username, password):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                                   source_address=(self.source, 0))
        if self.token is None:
            _status, page = self._request("GET", "/webmail/")
            found = re.search(rb'name="csrf" value="([^"]+)"', page)
            self.token = found.group(1).decode()
        body = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrf": self.token})
        status, _page = self._request(
            "POST", "/webmail/login", body,
            {"Content-Type": "application/x-www-form-urlencoded",
             "Origin": f"http://127.0.0.1:{self.port}", "Sec-Fetch-Site": "same-origin"})
        if status in (302, 303):
            self.close()
            return OK
        if status == 429:
            return THROTTLED
        if status == 401:
            return WRONG
        raise http.client.HTTPException(f"unexpected status {status}")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.cookies, self.token = {}, None


PROTOCOLS = (IMAPLogin, POP3Login, SMTPLogin, WebLogin)


class BruteForce:
    """Figures of one run (see ``run``)."""

    def __init__(self, daemon, attempts=1000, attacker=ATTACKER, legit=LEGIT):
        self.daemon = daemon
        self.attempts = attempts
        self.attacker = attacker
        self.legit = legit
        self.outcomes = []          # (protocol, outcome, seconds since the start)
        self.legit_logins = []      # (protocol, outcome, latency)
        self.baseline = []          # the same, before the attack
        self.lock = threading.Lock()
        self.duration = 0.0
        self.correct_password_after = {}

    def _attacker(self, cls, count, start):
        client = cls(self.daemon, self.attacker)
        try:
            for i in range(count):
                outcome = client.attempt(OWNER[0], f"guess-{cls.name}-{i}")
                with self.lock:
                    self.outcomes.append((cls.name, outcome, time.monotonic() - start))
        finally:
            client.close()

    def _owner(self, stop):
        while not stop.is_set():
            for cls in PROTOCOLS:
                begun = time.monotonic()
                outcome = cls(self.daemon, self.legit).attempt(OWNER[0], PASSWORD)
                with self.lock:
                    self.legit_logins.append((cls.name, outcome, time.monotonic() - begun))
                stop.wait(0.2)

    def run(self):
        """The attack: one thread per protocol, ``attempts`` in all, with
        the owner logging in meanwhile; afterwards the attacker tries the
        right password once on each protocol."""
        for _ in range(3):
            for cls in PROTOCOLS:
                begun = time.monotonic()
                outcome = cls(self.daemon, self.legit).attempt(OWNER[0], PASSWORD)
                self.baseline.append((cls.name, outcome, time.monotonic() - begun))
        start = time.monotonic()
        stop = threading.Event()
        owner = threading.Thread(target=self._owner, args=(stop,))
        owner.start()
        share = self.attempts // len(PROTOCOLS)
        workers = [threading.Thread(target=self._attacker, args=(cls, share, start))
                   for cls in PROTOCOLS]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.duration = time.monotonic() - start
        stop.set()
        owner.join()
        for cls in PROTOCOLS:
            self.correct_password_after[cls.name] = cls(self.daemon, self.attacker).attempt(
                OWNER[0], PASSWORD)
        return self

    # --- figures ---

    def checked(self):
        """Passwords the attacker got an answer about (not refused unheard)."""
        return sum(1 for _, outcome, _ in self.outcomes if outcome == WRONG)

    def first_refusal(self):
        times = [t for _, outcome, t in self.outcomes if outcome == THROTTLED]
        return min(times) if times else None

    def report(self):
        latencies = [t for _, outcome, t in self.legit_logins if outcome == OK]
        by_protocol = {}
        for name, outcome, t in self.legit_logins:
            by_protocol.setdefault(name, []).append(t)
        lines = [
            f"attacker: {len(self.outcomes)} wrong passwords from {self.attacker} in "
            f"{self.duration:.1f} s = {len(self.outcomes) / self.duration:.0f} attempts/s",
            f"  passwords actually checked: {self.checked()}; refused unheard: "
            f"{len(self.outcomes) - self.checked()}; first refusal after "
            f"{self.first_refusal():.1f} s",
            "  the right password from the attacker's address afterwards: "
            + ", ".join(f"{k} {v}" for k, v in self.correct_password_after.items()),
            f"owner from {self.legit}: {len(latencies)} of {len(self.legit_logins)} logins "
            f"ok during the attack; latency median {statistics.median(latencies) * 1000:.0f} "
            f"ms, max {max(latencies) * 1000:.0f} ms (before the attack: median "
            f"{statistics.median(t for _, _, t in self.baseline) * 1000:.0f} ms, max "
            f"{max(t for _, _, t in self.baseline) * 1000:.0f} ms)",
            "  per protocol (median ms): " + ", ".join(
                f"{k} {statistics.median(v) * 1000:.0f}" for k, v in by_protocol.items()),
        ]
        return "\n".join(lines)


def _slow_connection(port, source, trickle):
    sock = socket.socket()
    sock.setblocking(True)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    if trickle:
        sock.send(trickle[:1])
    return sock


def is_open(sock):
    """Still open from the server's side (nothing to read, no EOF)?"""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return True
        return sock.recv(4096, socket.MSG_PEEK) != b""
    except OSError:
        return False


class Slowloris:
    """Figures of one run (see ``run``)."""

    LISTENERS = ("imap", "pop3", "submission", "smtp", "web")
    #: the first byte each slow client sends (half of them send nothing)
    FIRST_BYTE = {"imap": b"\x16", "pop3": b"\x16", "submission": b"\x16", "smtp": b"E",
                  "web": b"G"}

    def __init__(self, daemon, connections=500, sources=20, legit=LEGIT):
        self.daemon = daemon
        self.connections = connections
        self.sources = [f"127.0.0.{10 + i}" for i in range(sources)]
        self.legit = legit
        self.socks = []             # (listener, socket, opened at)
        self.legit_logins = []
        self.held_at_login = 0
        self.lifetimes = {}

    def open_all(self):
        per_listener = self.connections // len(self.LISTENERS)
        for listener in self.LISTENERS:
            port = self.daemon.ports[listener]
            for i in range(per_listener):
                source = self.sources[i % len(self.sources)]
                trickle = self.FIRST_BYTE[listener] if i % 2 else b""
                self.socks.append((listener, _slow_connection(port, source, trickle),
                                   time.monotonic()))

    def trickle(self):
        """One more byte on every other connection (a slow client, not a dead one)."""
        for n, (listener, sock, _) in enumerate(self.socks):
            if n % 2 and is_open(sock):
                try:
                    sock.send(b"\x03" if listener in ("imap", "pop3", "submission") else b"x")
                except OSError:
                    pass

    def owner_logs_in(self):
        for cls in PROTOCOLS:
            begun = time.monotonic()
            outcome = cls(self.daemon, self.legit).attempt(OWNER[0], PASSWORD)
            self.legit_logins.append((cls.name, outcome, time.monotonic() - begun))

    def held(self):
        return sum(1 for _, sock, _ in self.socks if is_open(sock))

    def wait_until_dropped(self, listeners, timeout):
        """Seconds each connection of ``listeners`` lived, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        pending = [(name, sock, opened) for name, sock, opened in self.socks
                   if name in listeners]
        while pending and time.monotonic() < deadline:
            still = []
            for name, sock, opened in pending:
                if is_open(sock):
                    still.append((name, sock, opened))
                else:
                    self.lifetimes.setdefault(name, []).append(time.monotonic() - opened)
            pending = still
            time.sleep(0.2)
        return len(pending)

    def close(self):
        for _, sock, _ in self.socks:
            sock.close()

    def run(self, wait_for=("imap", "pop3", "submission", "web"), timeout=90):
        self.open_all()
        time.sleep(0.5)
        self.trickle()
        self.held_at_login = self.held()
        self.owner_logs_in()
        self.still_held_after_login = self.held()
        self.left_open = self.wait_until_dropped(wait_for, timeout)
        return self

    def report(self):
        latencies = [t for _, outcome, t in self.legit_logins if outcome == OK]
        lines = [
            f"slowloris: {len(self.socks)} connections from {len(self.sources)} addresses "
            f"over {', '.join(self.LISTENERS)}; {self.held_at_login} held open when the "
            "owner logged in",
            f"owner: {len(latencies)} of {len(self.legit_logins)} logins ok while they were "
            "held: " + ", ".join(f"{name} {t * 1000:.0f} ms"
                                 for name, _, t in self.legit_logins),
            "held connections dropped by the server after (s, median/max): " + ", ".join(
                f"{name} {statistics.median(v):.1f}/{max(v):.1f}"
                for name, v in sorted(self.lifetimes.items())),
        ]
        return "\n".join(lines)


def one_address_flood(daemon, listener="imap", connections=500, source=ATTACKER):
    """500 connections from one address: -> (held, refused at once)."""
    socks = [_slow_connection(daemon.ports[listener], source, b"") for _ in range(connections)]
    time.sleep(1.0)
    held = sum(1 for s in socks if is_open(s))
    for s in socks:
        s.close()
    return held, connections - held


def main(argv=None):
    what = (argv if argv is not None else sys.argv[1:]) or ["bruteforce", "slowloris"]
    root = tempfile.mkdtemp(prefix="ktmail-attack-bench-")
    status = 0
    if "bruteforce" in what:
        d = daemon_for_attacks(os.path.join(root, "bruteforce"))
        try:
            print(BruteForce(d).run().report(), flush=True)
        finally:
            d.stop()
    if "slowloris" in what:
        d = daemon_for_attacks(os.path.join(root, "slowloris"), tls_handshake_timeout=30,
                               web_idle_timeout=60)
        try:
            run = Slowloris(d).run(timeout=120)
            print(run.report(), flush=True)
            run.close()
            held, refused = one_address_flood(d)
            print(f"500 connections to IMAP from one address: {held} held "
                  f"(imap_connections_per_client), {refused} refused at once", flush=True)
        finally:
            d.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
