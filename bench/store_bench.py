"""Large-folder figures of the Maildir store (issue 4: SELECT < 1 s on
100,000 messages).

Builds a mailbox whose INBOX holds N message files in cur/ (written the way
an import or another Maildir tool would), then times:

- index build: the first load indexes N unknown files (a one-off);
- cold load: a new store object (a restarted daemon) opens the folder: the
  index is read and the directories are listed once to check them;
- warm load: the same store opens it again with nothing changed;
- status: STATUS without loading the message list;
- flag change: +FLAGS \\Seen on one message, then changes_since;
- through the mailboxes service: the first SELECT after a restart (store
  cold load plus building the shared live folder) and a later SELECT of the
  live folder (what every further session gets).

It first prints a calibration figure (sum(range(10**7)) on one core) so
figures from different machines can be compared.

Usage: python -m bench.store_bench [N] (default 100000). Prints figures.
"""

import os
import shutil
import sys
import tempfile
import time

from ktmail.config import Limits
from ktmail.model import FLAGS_ADD, Address, Mailbox
from ktmail.services.mailboxes import MailboxService
from ktmail.store.maildir import MaildirStore
from ktmail.store.sqlite import InlineRunner

MAILBOX = 1


class WallClock:
    def seconds(self):
        return time.time()


def result(d):
    out = []
    d.addBoth(out.append)
    value = out[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def timed(label, fn, figures):
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    figures.append((label, elapsed))
    print(f"{label:<44} {elapsed:8.3f} s", flush=True)
    return value


def fill(cur, count):
    body = (b"From: Anna <anna@example.com>\r\nTo: bo@sboksi.fi\r\nSubject: message %d\r\n"
            b"Date: Mon, 13 Nov 2023 10:00:00 +0200\r\n\r\n" + b"Hello there.\r\n" * 40)
    now = int(time.time()) - 86400
    for n in range(count):
        data = body % n
        name = f"{now}.M{n}P1Q{n}Rbench.bench,S={len(data)}:2,{'S' if n % 3 else ''}"
        with open(os.path.join(cur, name), "wb") as f:
            f.write(data)


def calibrate():
    start = time.perf_counter()
    sum(range(10**7))
    return time.perf_counter() - start


def main(count=100_000):
    base = tempfile.mkdtemp(prefix="ktmail-store-bench-")
    figures = []
    print(f"{'calibration: sum(range(10**7))':<44} {calibrate():8.3f} s", flush=True)
    try:
        store = MaildirStore(base, WallClock(), InlineRunner())
        result(store.create_mailbox(MAILBOX))
        cur = os.path.join(store.mailbox_path(MAILBOX), "cur")
        timed(f"write {count} message files", lambda: fill(cur, count), figures)
        snapshot = timed("index build (first load, all files new)",
                         lambda: result(store.open_folder(MAILBOX, "INBOX")), figures)
        assert len(snapshot.messages) == count, len(snapshot.messages)
        store = MaildirStore(base, WallClock(), InlineRunner())
        timed("cold load (restarted store, dirs checked)",
              lambda: result(store.open_folder(MAILBOX, "INBOX")), figures)
        timed("warm load (nothing changed)",
              lambda: result(store.open_folder(MAILBOX, "INBOX")), figures)
        timed("status (no message list)",
              lambda: result(store.folder_status(MAILBOX, "INBOX")), figures)
        mark = snapshot.status.highestmodseq
        timed("+FLAGS \\Seen on one message",
              lambda: result(store.set_flags(MAILBOX, "INBOX", [1], ["\\Seen"], FLAGS_ADD)),
              figures)
        changes = timed("changes since the load",
                        lambda: result(store.changes_since(MAILBOX, "INBOX", mark)), figures)
        assert [i.uid for i in changes.changed] == [1]
        timed("load after one flag change",
              lambda: result(store.open_folder(MAILBOX, "INBOX")), figures)
        timed("summaries of 1000 messages (parsed, cached)",
              lambda: result(store.message_details(MAILBOX, "INBOX", range(1, 1001))), figures)
        timed("summaries of the same 1000 (from the index)",
              lambda: result(store.message_details(MAILBOX, "INBOX", range(1, 1001))), figures)
        mailbox = Mailbox(id=MAILBOX, customer_id=1, username="bench",
                          address=Address("bench", "sboksi.fi"), quota_bytes=10**12, created=0)
        service = MailboxService(MaildirStore(base, WallClock(), InlineRunner()), None,
                                 Limits(), WallClock())
        live = timed("service: first SELECT after a restart",
                     lambda: result(service.open_folder(mailbox, "INBOX")), figures)
        timed("service: SELECT of the live folder",
              lambda: result(service.open_folder(mailbox, "INBOX")), figures)
        timed("service: first unseen + status of the live folder",
              lambda: (live.first_unseen_uid(), live.status), figures)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
