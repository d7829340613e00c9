"""IMAP load generator and large-folder figures (issue 4).

Starts a real ``twistd -n ktmail`` (implicit TLS on loopback, the test
harness of tests/e2e.py) and measures it from a separate client process:

1. load: N concurrent sessions, each looping through the steps of Dovecot's
   imaptest default profile (LOGIN, SELECT, FETCH flags, FETCH a body,
   STORE, APPEND, EXPUNGE, LOGOUT); commands per second for N = 1, 10, 50;
2. a 100,000-message INBOX (files written into the Maildir as an import
   would): SELECT after a restart (index on disk), SELECT again, and
   ``UID FETCH 1:* (UID FLAGS)``, timed at the client up to the tagged OK;
3. resident memory of the daemon with 1,000 idle authenticated connections;
4. the daemon's peak RSS growth during a 50 MiB APPEND and during its FETCH.

Usage: python -m bench.imap_load [--sessions 1,10,50] [--seconds 10]
       [--messages 100000] [--idle 1000] [--only load,big,idle,large]
Prints one line per figure; bench/RESULTS.md records them with the machine.
"""

import argparse
import asyncio
import os
import platform
import random
import re
import resource
import shutil
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e import PASSWORD, KtmailDaemon

LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


def message(n, size=0):
    body = b"Hello number %d.\r\n" % n + (b"y" * 76 + b"\r\n") * (size // 78)
    return (b"From: Bench <bench@example.org>\r\nTo: load@brev.fi\r\n"
            b"Subject: load %d\r\nMessage-ID: <%d.%d@bench>\r\n\r\n" % (n, n, time.time_ns())
            + body)


class Client:
    """A minimal asyncio IMAP client: one command at a time, literals read."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.tags = 0
        self.commands = 0

    @classmethod
    async def connect(cls, port, context):
        reader, writer = await asyncio.open_connection("localhost", port, ssl=context,
                                                       server_hostname="localhost",
                                                       limit=1 << 20)
        client = cls(reader, writer)
        await reader.readline()
        return client

    async def command(self, text, literal=None):
        self.tags += 1
        tag = b"t%d" % self.tags
        if literal is not None:
            self.writer.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal
                              + b"\r\n")
        else:
            self.writer.write(tag + b" " + text + b"\r\n")
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            m = LITERAL.search(line)
            if m:
                await self.reader.readexactly(int(m.group(1)))
            if line.startswith(tag + b" "):
                self.commands += 1
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines
            lines.append(line)

    async def login(self, username):
        await self.command(b'LOGIN %s "%s"' % (username.encode(), PASSWORD.encode()))

    async def close(self):
        try:
            await self.command(b"LOGOUT")
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()


def tls_context(daemon):
    return ssl.create_default_context(cafile=daemon.cert)


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def report(label, value, unit):
    print(f"{label:<62} {value:>12} {unit}", flush=True)


# --- 1. load ---------------------------------------------------------------------------


async def session_loop(port, context, username, deadline, counter, rounds=10):
    """imaptest's default profile, roughly: a session logs in and selects
    INBOX, then repeatedly reads flags and a message, changes flags,
    appends and expunges, and logs out after ``rounds`` rounds."""
    while time.monotonic() < deadline:
        client = await Client.connect(port, context)
        try:
            await client.login(username)
            lines = await client.command(b"SELECT INBOX")
            exists = next(int(m.group(1)) for line in lines
                          if (m := re.match(rb"\* (\d+) EXISTS", line)))
            for _ in range(rounds):
                if time.monotonic() >= deadline:
                    break
                if exists:
                    await client.command(b"FETCH 1:* (UID FLAGS)")
                    n = random.randint(1, exists)
                    await client.command(b"FETCH %d (UID RFC822.SIZE BODY.PEEK[])" % n)
                    await client.command(b"STORE %d +FLAGS (\\Seen \\Flagged)" % n)
                    await client.command(b"FETCH %d (ENVELOPE BODYSTRUCTURE)" % n)
                await client.command(b"APPEND INBOX", message(random.randint(1, 10**6), 2000))
                lines = await client.command(b"NOOP")
                for line in lines:
                    if m := re.match(rb"\* (\d+) EXISTS", line):
                        exists = int(m.group(1))
                if exists > 20:
                    await client.command(b"STORE 1 +FLAGS.SILENT (\\Deleted)")
                    lines = await client.command(b"EXPUNGE")
                    exists -= sum(1 for line in lines if line.endswith(b" EXPUNGE\r\n"))
        finally:
            counter[0] += client.commands
            await client.close()
            counter[0] += 1


async def load(daemon, sessions, seconds):
    context = tls_context(daemon)
    counter = [0]
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    await asyncio.gather(*(session_loop(daemon.ports["imap"], context, f"load{i % 5}_u",
                                        deadline, counter) for i in range(sessions)))
    return counter[0] / (time.monotonic() - start)


# --- 2. a large folder -------------------------------------------------------------------


def fill_maildir(path, count):
    body = (b"From: Anna <anna@example.com>\r\nTo: big@brev.fi\r\nSubject: message %d\r\n"
            b"Date: Mon, 13 Nov 2023 10:00:00 +0200\r\n\r\n" + b"Hello there.\r\n" * 40)
    cur = os.path.join(path, "cur")
    now = int(time.time()) - 86400
    for n in range(count):
        data = body % n
        name = f"{now}.M{n}P1Q{n}Rbench.bench,S={len(data)}:2,{'S' if n % 3 else ''}"
        with open(os.path.join(cur, name), "wb") as f:
            f.write(data)


async def timed_command(daemon, username, commands):
    """Log in, then time each command (up to its tagged OK) -> [seconds]."""
    client = await Client.connect(daemon.ports["imap"], tls_context(daemon))
    await client.login(username)
    out = []
    for text in commands:
        start = time.perf_counter()
        lines = await client.command(text)
        out.append((time.perf_counter() - start, len(lines)))
    await client.close()
    return out


# --- 3. idle connections -------------------------------------------------------------------


async def idle_connections(daemon, count):
    context = tls_context(daemon)
    clients = []
    for i in range(count):
        client = await Client.connect(daemon.ports["imap"], context)
        await client.login(f"idle{i % 5}_u")
        await client.command(b"SELECT INBOX")
        clients.append(client)
    return clients


# --- 4. a 50 MiB message -------------------------------------------------------------------


async def big_message(daemon, pid):
    data = message(1, 50 * 1024 * 1024 - 1000)
    client = await Client.connect(daemon.ports["imap"], tls_context(daemon))
    await client.login("big_u")
    await client.command(b"SELECT Drafts")
    before = rss_kib(pid)
    reset_peak(pid)
    start = time.perf_counter()
    await client.command(b"APPEND Drafts", data)
    append_time = time.perf_counter() - start
    append_peak = rss_kib(pid, "VmHWM") - before
    before = rss_kib(pid)
    reset_peak(pid)
    start = time.perf_counter()
    await client.command(b"UID FETCH * (BODY.PEEK[])")
    fetch_time = time.perf_counter() - start
    fetch_peak = rss_kib(pid, "VmHWM") - before
    await client.close()
    return append_time, append_peak, fetch_time, fetch_peak


def reset_peak(pid):
    """Reset the peak RSS (VmHWM) of ``pid`` to its current RSS (Linux)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", default="1,10,50")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--restarts", type=int, default=3,
                    help="times the daemon is restarted to time the first SELECT")
    ap.add_argument("--only", default="load,large,idle,big")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 256)), hard))
    root = tempfile.mkdtemp(prefix="ktmail-imap-bench-")
    # the idle connections share five mailboxes: above the default
    # imap_sessions_per_mailbox (20), which guards each mailbox, not memory
    daemon = KtmailDaemon(root, listeners=("imap",),
                          limits={"imap_sessions_per_mailbox": max(20, args.idle)})
    print(f"machine: {machine()}")
    try:
        daemon.start()
        users = [(f"load{i}_u", f"load{i}@brev.fi") for i in range(5)]
        daemon.add_mailboxes(users)
        daemon.add_mailboxes([(f"idle{i}_u", f"idle{i}@brev.fi") for i in range(5)],
                             customer="kund1002")
        daemon.add_mailboxes([("big_u", "big@brev.fi")], customer="kund1003")
        pid = daemon.pid
        if "load" in only:
            for sessions in (int(n) for n in args.sessions.split(",")):
                rate = asyncio.run(load(daemon, sessions, args.seconds))
                report(f"load: {sessions} concurrent sessions", f"{rate:.0f}", "commands/s")
        if "large" in only:
            start = time.perf_counter()
            fill_maildir(daemon.maildir("big_u"), args.messages)
            report(f"large: wrote {args.messages} message files",
                   f"{time.perf_counter() - start:.1f}", "s")
            (first, _), = asyncio.run(timed_command(daemon, "big_u", [b"EXAMINE INBOX"]))
            report("large: first SELECT (indexes every file: one-off)", f"{first:.2f}", "s")
            for n in range(args.restarts):
                daemon.restart()
                pid = daemon.pid
                (cold, _), = asyncio.run(timed_command(daemon, "big_u", [b"EXAMINE INBOX"]))
                report(f"large: SELECT after a restart #{n + 1} (index on disk)",
                       f"{cold:.2f}", "s")
            times = asyncio.run(timed_command(daemon, "big_u", [
                b"SELECT INBOX", b"UID FETCH 1:* (UID FLAGS)",
                b"FETCH 1:* (FLAGS)", b"UID SEARCH UNSEEN",
                b"UID FETCH 99000:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"]))
            labels = ["SELECT again (folder loaded)", "UID FETCH 1:* (UID FLAGS)",
                      "FETCH 1:* (FLAGS)", "UID SEARCH UNSEEN",
                      "UID FETCH 99000:* (... HEADER.FIELDS (SUBJECT))"]
            for label, (seconds, lines) in zip(labels, times, strict=True):
                report(f"large: {label} [{lines} lines]", f"{seconds:.2f}", "s")
        if "idle" in only:
            before = rss_kib(pid)

            async def hold():
                clients = await idle_connections(daemon, args.idle)
                await asyncio.sleep(2)
                after = rss_kib(pid)
                for client in clients:
                    client.writer.close()
                return after
            after = asyncio.run(hold())
            time.sleep(2)
            closed = rss_kib(pid)
            report(f"idle: daemon RSS before {args.idle} connections", f"{before / 1024:.0f}",
                   "MiB")
            report(f"idle: daemon RSS with {args.idle} idle logged-in connections",
                   f"{after / 1024:.0f}", "MiB")
            # what stays is the allocator keeping argon2's 19 MiB per login thread
            report("idle: daemon RSS after they closed", f"{closed / 1024:.0f}", "MiB")
        if "big" in only:
            time.sleep(1)
            a_time, a_peak, f_time, f_peak = asyncio.run(big_message(daemon, pid))
            report("big: 50 MiB APPEND", f"{a_time:.2f}", "s")
            report("big: peak RSS growth during the APPEND", f"{a_peak / 1024:.1f}", "MiB")
            report("big: 50 MiB FETCH BODY.PEEK[]", f"{f_time:.2f}", "s")
            report("big: peak RSS growth during the FETCH", f"{f_peak / 1024:.1f}", "MiB")
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
