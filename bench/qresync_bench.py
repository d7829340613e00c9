"""CONDSTORE/QRESYNC resynchronisation of a 10,000-message folder (issue 8).

A real ``twistd -n ktmail`` with implicit TLS on loopback; a client that
remembers UIDVALIDITY and HIGHESTMODSEQ reselects the folder with
``SELECT INBOX (QRESYNC (...))`` (RFC 7162 §3.2.5), compared with what a
client without CONDSTORE must do to learn the same: ``UID FETCH 1:* (UID
FLAGS)``. Figures: bytes the server sent for the command (IMAP bytes,
before TLS) and the time to its tagged OK, for an unchanged folder and
after light changes by another session (flags of 50 messages, 20
expunged). ``python -m bench.qresync_bench [--messages N]``.
"""

import argparse
import asyncio
import re
import sys
import tempfile
import time

from bench.imap_load import Client, fill_maildir, machine, report, tls_context
from tests.e2e import KtmailDaemon

LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class CountingClient(Client):
    """imap_load's client, counting the bytes of each command's answer."""

    async def command(self, text, literal=None):
        self.tags += 1
        tag = b"t%d" % self.tags
        self.writer.write(tag + b" " + text + b"\r\n")
        self.received = 0
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("closed")
            self.received += len(line)
            m = LITERAL.search(line)
            if m:
                self.received += len(await self.reader.readexactly(int(m.group(1))))
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines
            lines.append(line)


async def measure(daemon, messages):
    context = tls_context(daemon)
    client = await CountingClient.connect(daemon.ports["imap"], context)
    await client.login("sync_u")
    await client.command(b"ENABLE QRESYNC")
    start = time.perf_counter()
    lines = await client.command(b"SELECT INBOX")
    report("first SELECT of the folder (indexes every file: one-off)",
           f"{time.perf_counter() - start:.2f}", "s")
    text = b"".join(lines)
    validity = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))
    known = b"1:%d" % messages

    async def timed(label, command):
        start = time.perf_counter()
        out = await client.command(command)
        seconds = time.perf_counter() - start
        report(f"{label}: bytes", client.received, "B")
        report(f"{label}: time", f"{seconds * 1000:.1f}", "ms")
        return out

    qresync = b"SELECT INBOX (QRESYNC (%d %d %s))" % (validity, modseq, known)
    for n in range(3):
        await timed(f"unchanged, QRESYNC SELECT #{n + 1}", qresync)
    await timed("unchanged, without CONDSTORE: UID FETCH 1:* (UID FLAGS)",
                b"UID FETCH 1:* (UID FLAGS)")

    other = await CountingClient.connect(daemon.ports["imap"], context)
    await other.login("sync_u")
    await other.command(b"SELECT INBOX")
    step = max(1, messages // 50)
    await other.command(b"UID STORE " + b",".join(b"%d" % u for u in range(7, messages, step))
                        + b" +FLAGS.SILENT (\\Flagged)")
    doomed = b",".join(b"%d" % u for u in range(3, messages, max(1, messages // 20)))
    await other.command(b"UID STORE " + doomed + b" +FLAGS.SILENT (\\Deleted)")
    await other.command(b"UID EXPUNGE " + doomed)
    await other.close()
    lines = await timed("lightly changed, QRESYNC SELECT", qresync)
    report("lightly changed: FETCH lines / VANISHED (EARLIER) lines",
           f"{sum(1 for line in lines if b' FETCH ' in line)} / "
           f"{sum(1 for line in lines if line.startswith(b'* VANISHED'))}", "")
    await timed("lightly changed, without CONDSTORE: UID FETCH 1:* (UID FLAGS)",
                b"UID FETCH 1:* (UID FLAGS)")
    await client.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    args = ap.parse_args(argv)
    root = tempfile.mkdtemp(prefix="ktmail-qresync-bench-")
    daemon = KtmailDaemon(root, listeners=("imap",))
    print(f"machine: {machine()}")
    try:
        daemon.start()
        daemon.add_mailboxes([("sync_u", "sync@brev.fi")])
        fill_maildir(daemon.maildir("sync_u"), args.messages)
        asyncio.run(measure(daemon, args.messages))
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
