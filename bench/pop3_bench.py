"""POP3 RETR throughput of ktmail over TLS, for a 1,000-message INBOX.

    python -m bench.pop3_bench                  # 1000 messages, size mix below
    python -m bench.pop3_bench --messages 200 --rounds 1

The INBOX is filled the way another Maildir tool would (files in cur/),
with a size mix of 70% 4 KiB, 25% 64 KiB, 5% 1 MiB (about 70 MB in all;
every message has lines that begin with "." so that stuffing is
exercised). Then one client over implicit TLS on loopback:

- login: USER/PASS to "+OK" (argon2 check, lock, INBOX snapshot);
- UIDL: the whole listing;
- RETR one at a time: RETR n, read to the terminating ".", next (as
  fetchmail and most clients do);
- RETR pipelined: all RETRs sent at once (RFC 2449 PIPELINING, as mpop
  does), read as they come;

and prints MB/s (10^6 bytes of message per second of wall time), messages
per second, and the daemon's CPU time per MB (from /proc). Every byte
received is checked against the stored size. Each RETR round ends with
RSET so the messages stay. The daemon is a real ``twistd ktmail`` started
by tests/e2e.py on free loopback ports in a temporary directory, removed
afterwards. Keep runs short: the machine may be shared.
"""

import argparse
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import time

from tests.e2e import PASSWORD, KtmailDaemon

SIZE_MIX = ((0.70, 4 * 1024), (0.25, 64 * 1024), (0.05, 1024 * 1024))
USER = ("bench_u", "bench@brev.fi")


def make_message(n, size):
    head = (f"From: sender@example.org\r\nTo: bench@brev.fi\r\nSubject: bench {n}\r\n"
            f"Message-ID: <{n}.{random.getrandbits(48):x}@bench.example>\r\n"
            "Date: Fri, 27 Nov 2026 10:00:00 +0200\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij .\r\n"
    dotted = b". a line that must be stuffed\r\n"
    block = line * 9 + dotted
    body = block * max(1, (size - len(head)) // len(block))
    return head + body


def fill_inbox(cur, count, rng):
    """-> total bytes written, as ``count`` files in ``cur``."""
    total = 0
    stamp = int(time.time()) - 3600
    for n in range(count):
        pick, acc = rng.random(), 0.0
        for share, size in SIZE_MIX:
            acc += share
            if pick <= acc:
                break
        data = make_message(n, size)
        name = f"{stamp}.M{n}P{os.getpid()}Q{n}Rbench.bench,S={len(data)}:2,"
        with open(os.path.join(cur, name), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Client:
    """A minimal POP3 client over TLS that reads responses in bulk."""

    def __init__(self, daemon):
        raw = socket.create_connection(("localhost", daemon.ports["pop3"]), timeout=120)
        self.sock = daemon.client_tls().wrap_socket(raw, server_hostname="localhost")
        self.buf = bytearray()
        self.line()

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed by the server")
        self.buf += data

    def line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return line
            self.fill()

    def command(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def multiline_body(self):
        """The body of a multi-line response (after its first line): -> the
        number of message bytes it carries (stuffing removed)."""
        start = 0
        while True:
            end = self.buf.find(b"\r\n.\r\n", max(0, start - 4))
            if end >= 0 or self.buf[:3] == b".\r\n":
                break
            start = len(self.buf)
            self.fill()
        if self.buf[:3] == b".\r\n":
            del self.buf[:3]
            return 0
        body = self.buf[:end + 2]
        del self.buf[:end + 5]
        return len(body) - body.count(b"\r\n..") - (1 if body[:2] == b".." else 0)


def run(args):
    rng = random.Random(1)
    root = tempfile.mkdtemp(prefix="bench-pop3-", dir=args.workdir)
    daemon = KtmailDaemon(root, listeners=("pop3",))
    try:
        daemon.start()
        daemon.add_mailboxes((USER,))
        total = fill_inbox(os.path.join(daemon.maildir(USER[0]), "cur"), args.messages, rng)
        print(f"INBOX: {args.messages} messages, {total / 1e6:.1f} MB "
              f"(mix {', '.join(f'{int(s * 100)}% {b // 1024} KiB' for s, b in SIZE_MIX)})")

        client = Client(daemon)
        client.command(f"USER {USER[0]}")
        start = time.perf_counter()
        reply = client.command(f"PASS {PASSWORD}")     # first login: indexes the files
        print(f"first login (index {args.messages} new files): "
              f"{time.perf_counter() - start:.3f} s  {reply.decode()}")
        client.command("QUIT")

        for round_no in range(1, args.rounds + 1):
            client = Client(daemon)
            client.command(f"USER {USER[0]}")
            start = time.perf_counter()
            client.command(f"PASS {PASSWORD}")
            login = time.perf_counter() - start
            start = time.perf_counter()
            client.command("UIDL")
            client.multiline_body()
            uidl = time.perf_counter() - start
            print(f"round {round_no}: login {login * 1000:.0f} ms (argon2 included), "
                  f"UIDL {uidl * 1000:.1f} ms")

            cpu0, start = cpu_seconds(daemon.pid), time.perf_counter()
            got = 0
            for n in range(1, args.messages + 1):
                client.command(f"RETR {n}")
                got += client.multiline_body()
            elapsed, cpu = time.perf_counter() - start, cpu_seconds(daemon.pid) - cpu0
            assert got == total, f"received {got} message bytes, stored {total}"
            print(f"  RETR one at a time: {total / 1e6 / elapsed:7.1f} MB/s "
                  f"{args.messages / elapsed:7.0f} msg/s  daemon CPU "
                  f"{cpu / (total / 1e6) * 1000:.1f} ms/MB")
            client.command("RSET")

            cpu0, start = cpu_seconds(daemon.pid), time.perf_counter()
            client.sock.sendall(b"".join(b"RETR %d\r\n" % n
                                         for n in range(1, args.messages + 1)))
            got = 0
            for _ in range(args.messages):
                reply = client.line()
                assert reply.startswith(b"+OK"), reply
                got += client.multiline_body()
            elapsed, cpu = time.perf_counter() - start, cpu_seconds(daemon.pid) - cpu0
            assert got == total, f"received {got} message bytes, stored {total}"
            print(f"  RETR pipelined:     {total / 1e6 / elapsed:7.1f} MB/s "
                  f"{args.messages / elapsed:7.0f} msg/s  daemon CPU "
                  f"{cpu / (total / 1e6) * 1000:.1f} ms/MB")
            client.command("RSET")
            client.command("QUIT")
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pop3_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="timed rounds after the first login (the first is cold-ish)")
    parser.add_argument("--workdir", default=None, help="where the temporary daemon lives")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    start = time.perf_counter()
    sum(range(10**7))
    print(f"calibration: sum(range(10**7)) {time.perf_counter() - start:.3f} s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
