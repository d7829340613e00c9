"""SMTP load generator and memory check for the ktmail listeners.

    python -m bench.smtp_bench                   # load (ktmail, then smtp-sink), then memory
    python -m bench.smtp_bench --load --seconds 5 --concurrency 1,10,50
    python -m bench.smtp_bench --rss             # only: a 50 MiB message through 25 and 465

Load: N concurrent senders, each on its own connection, send messages in a
loop (MAIL, RCPT, DATA pipelined as RFC 2920 allows, then the body) for a
fixed time, to the MX (spam-scanned) and to submission (TLS, AUTH once per
connection, local recipients: not scanned); the size mix is 70% 4 KiB, 25% 64 KiB, 5% 1 MiB. Printed per
concurrency level: messages/second accepted (250 after DATA, i.e. fsynced
into a Maildir for ktmail) and p50/p99 latency from MAIL to that 250. The
same load then runs against Postfix's ``smtp-sink`` (which discards every
message) as the ceiling of what this client and machine can do.

RSS: the daemon's resident memory is sampled every 20 ms while one message
of 50 MiB (minus 64 KiB) goes through the MX (DATA), the MX (BDAT) and
submission, from the first byte of the message to the reply after it is
stored; printed as growth over the RSS just before the message (the
session is set up first: AUTH's argon2 hash alone takes 19 MiB on a
worker thread).

The daemon is a real ``twistd ktmail`` started by tests/e2e.py on free
loopback ports in a temporary directory, removed afterwards. Keep runs
short: the machine may be shared.
"""

import argparse
import asyncio
import base64
import os
import platform
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from tests.e2e import PASSWORD, KtmailDaemon, free_port, require_binary

SIZE_MIX = ((0.70, 4 * 1024), (0.25, 64 * 1024), (0.05, 1024 * 1024))
RECIPIENTS = [(f"bench{i}_u", f"bench{i}@brev.fi") for i in range(5)]


def body(size, subject="bench", sender="sender@example.org"):
    """A CRLF message of about ``size`` bytes, already dot-stuffed."""
    head = (f"From: {sender}\r\nTo: bench@brev.fi\r\nSubject: {subject}\r\n"
            f"Message-ID: <{random.getrandbits(64):x}@bench.example>\r\n"
            "Date: Fri, 27 Nov 2026 10:00:00 +0200\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij .\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def read_reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by server")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def sender(port, deadline, bodies, recipients, latencies, errors, tls=None, auth=None,
                 mail_from="sender@example.org"):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None)
    try:
        await read_reply(reader)
        writer.write(b"EHLO bench.example.org\r\n")
        await read_reply(reader)
        if auth:
            writer.write(b"AUTH PLAIN " + base64.b64encode(auth) + b"\r\n")
            code, line = await read_reply(reader)
            if code != 235:
                raise RuntimeError(f"AUTH failed: {line!r}")
        rng = random.Random()
        while time.monotonic() < deadline:
            weights = [w for w, _ in SIZE_MIX]
            data = bodies[rng.choices(range(len(SIZE_MIX)), weights)[0]]
            rcpt = rng.choice(recipients)
            started = time.perf_counter()
            writer.write(f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            for _ in range(3):
                code, line = await read_reply(reader)
                if code >= 400:
                    raise RuntimeError(f"refused: {line!r}")
            writer.write(data)
            writer.write(b".\r\n")
            await writer.drain()
            code, line = await read_reply(reader)
            if code != 250:
                errors.append(line)
                continue
            latencies.append(time.perf_counter() - started)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_load(port, concurrency, seconds, recipients, **kwargs):
    bodies = [body(size, sender=kwargs.get("mail_from", "sender@example.org"))
              for _, size in SIZE_MIX]
    latencies, errors = [], []

    async def main():
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(sender(port, deadline, bodies, recipients, latencies, errors,
                                      **kwargs) for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99), errors


def report(name, concurrency, result):
    rate, p50, p99, errors = result
    print(f"{name:<22} {concurrency:>4} senders  {rate:8.1f} msg/s  p50 {p50 * 1000:8.1f} ms"
          f"  p99 {p99 * 1000:8.1f} ms  errors {len(errors)}", flush=True)


def ktmail_daemon(root, listeners=("smtp",)):
    # no hourly sending limit in the way of the submission load
    daemon = KtmailDaemon(root, listeners, {"smtp_recipients_per_hour": 10**9})
    daemon.start()
    daemon.add_mailboxes(RECIPIENTS[:5])
    return daemon


def smtp_sink(port):
    sink = require_binary("smtp-sink")
    user = "nobody"
    proc = subprocess.Popen([sink, "-c", "-u", user, f"127.0.0.1:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("smtp-sink did not start")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class PeakRSS:
    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def big_message(sender, size):
    head = (f"From: {sender}\r\nTo: bench0@brev.fi\r\nSubject: bench-50MiB\r\n"
            "Date: Fri, 27 Nov 2026 10:00:00 +0200\r\nMessage-ID: <big@bench.example>\r\n"
            "\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * ((size - len(head)) // len(line))


async def send_big(port, data, tls=None, auth=None, mail_from="sender@example.org",
                   chunked=False, pid=None):
    """Send one message; with ``pid``, -> (reply code, RSS before the message
    data in KiB, peak RSS until the reply in KiB), else (code, line). The
    session (TLS handshake, AUTH with its 19 MiB argon2 hash, MAIL, RCPT)
    is set up before the "before" sample: only the message is measured."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None)
    await read_reply(reader)
    writer.write(b"EHLO bench.example.org\r\n")
    await read_reply(reader)
    if auth:
        writer.write(b"AUTH PLAIN " + base64.b64encode(auth) + b"\r\n")
        await read_reply(reader)
    writer.write(f"MAIL FROM:<{mail_from}> SIZE={len(data)}\r\nRCPT TO:<bench0@brev.fi>\r\n"
                 .encode())
    for _ in range(2):
        code, line = await read_reply(reader)
        if code >= 400:
            raise RuntimeError(line)
    before = rss_kib(pid) if pid else 0
    peak = PeakRSS(pid) if pid else None
    if peak:
        peak.__enter__()
    view = memoryview(data)
    step = 1 << 20
    if chunked:
        for offset in range(0, len(data), step):
            piece = view[offset:offset + step]
            last = b" LAST" if offset + step >= len(data) else b""
            writer.write(b"BDAT %d%s\r\n" % (len(piece), last))
            writer.write(piece)
            await writer.drain()
        replies = (len(data) + step - 1) // step
    else:
        writer.write(b"DATA\r\n")
        await read_reply(reader)
        for offset in range(0, len(data), step):
            writer.write(view[offset:offset + step])
            await writer.drain()
        writer.write(b".\r\n")
        replies = 1
    for _ in range(replies):
        code, line = await read_reply(reader)
    if peak:
        peak.__exit__()
    writer.close()
    return (code, before, peak.peak) if pid else (code, line)


def rss_check(root):
    daemon = ktmail_daemon(root, ("smtp", "submission"))
    try:
        size = 50 * 1024 * 1024 - 64 * 1024
        tls = ssl.create_default_context(cafile=daemon.cert)
        cases = [
            ("MX 25, DATA", dict(port=daemon.ports["smtp"])),
            ("MX 25, BDAT 1 MiB chunks", dict(port=daemon.ports["smtp"], chunked=True)),
            ("submission 465, DATA", dict(port=daemon.ports["submission"], tls=tls,
                                          auth=f"\0bench0_u\0{PASSWORD}".encode(),
                                          mail_from="bench0@brev.fi")),
        ]
        # warm up every code path once with a small message
        for _, kwargs in cases:
            asyncio.run(send_big(data=big_message(kwargs.get("mail_from", "s@example.org"),
                                                  100000), **kwargs))
        for name, kwargs in cases:
            data = big_message(kwargs.get("mail_from", "sender@example.org"), size)
            started = time.perf_counter()
            code, before, peak = asyncio.run(send_big(data=data, pid=daemon.pid, **kwargs))
            elapsed = time.perf_counter() - started
            del data
            print(f"{name:<26} {size / 2**20:.1f} MiB  reply {code}  {elapsed:5.2f} s  "
                  f"RSS before {before / 1024:6.1f} MiB  peak {peak / 1024:6.1f} MiB  "
                  f"growth {(peak - before) / 1024:5.1f} MiB", flush=True)
    finally:
        daemon.stop()


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()}: {os.cpu_count()} cores {cpu}, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rss", action="store_true", help="only the 50 MiB memory check")
    parser.add_argument("--load", action="store_true", help="only the load runs")
    parser.add_argument("--no-sink", action="store_true", help="skip smtp-sink")
    args = parser.parse_args(argv)
    print(machine(), flush=True)
    root = tempfile.mkdtemp(prefix="ktmail-bench-")
    try:
        if not args.load:
            rss_check(os.path.join(root, "rss"))
        if args.rss:
            return 0
        levels = [int(n) for n in args.concurrency.split(",")]
        daemon = ktmail_daemon(os.path.join(root, "load"), ("smtp", "submission"))
        tls = ssl.create_default_context(cafile=daemon.cert)
        try:
            for n in levels:
                report("ktmail MX -> Maildir", n,
                       run_load(daemon.ports["smtp"], n, args.seconds,
                                [a for _, a in RECIPIENTS]))
            for n in levels:
                report("ktmail 465 -> Maildir", n,
                       run_load(daemon.ports["submission"], n, args.seconds,
                                [a for _, a in RECIPIENTS], tls=tls,
                                auth=f"\0bench0_u\0{PASSWORD}".encode(),
                                mail_from="bench0@brev.fi"))
        finally:
            daemon.stop()
        if not args.no_sink:
            port = free_port()
            sink = smtp_sink(port)
            try:
                for n in levels:
                    report("postfix smtp-sink", n,
                           run_load(port, n, args.seconds, [a for _, a in RECIPIENTS]))
            finally:
                sink.kill()
                sink.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
