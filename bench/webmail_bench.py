"""Webmail figures (issue 9): the message list of a 10,000-message folder
and opening a 10 MB message, through the real web stack.

A Maildir store (inline runner: the figures are CPU and disk time, without
thread hand-offs) holds a mailbox whose INBOX has N messages; the webmail
is the daemon's (build_root with MailboxService), driven in memory by
treq's StubTreq with a logged-in session. Timed:

- first list page after a restart (folder loaded into the live folder,
  50 summaries parsed from the index), then the same page again (warm);
- the list sorted by sender and by subject (every summary of the folder);
- the last page (page 200 of 10,000);
- a search in the subject field over the whole folder;
- opening a 10 MB message (a short text and a 10 MB attachment): the first
  time (parsed once into the index) and again; then streaming its
  attachment, decoded, to the client.

Usage: python -m bench.webmail_bench [N] (default 10000). Prints figures.
"""

import base64
import io
import os
import re
import shutil
import sys
import tempfile
import time

from treq.testing import StubTreq
from twisted.internet import defer

from bench.store_bench import WallClock, calibrate, result
from ktmail.config import parse_config
from ktmail.model import Address
from ktmail.services.accounts import AccountService
from ktmail.services.auth import AuthService, LoginThrottle, PasswordHasher
from ktmail.services.mailboxes import MailboxService
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryStore
from ktmail.store.sqlite import InlineRunner
from ktmail.web.app import build_root, make_site

HOST = "mail.example.test"
PW = "bench password 1"


def inline(fn, *args):
    return defer.maybeDeferred(fn, *args)


def fill(cur, count):
    body = ("From: Anna {n} <anna{n}@example.com>\r\nTo: bo@brev.fi\r\n"
            "Subject: =?utf-8?q?M=C3=B6te_nummer_{n}?=\r\n"
            "Date: Mon, 13 Nov 2023 10:00:00 +0200\r\nMessage-ID: <{n}@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "Hej där, vi ses på mötet.\r\n" * 40)
    now = int(time.time()) - 86400
    for n in range(count):
        data = body.format(n=n).encode("utf-8")
        name = f"{now - n}.M{n}P1Q{n}Rbench.bench,S={len(data)}:2,{'S' if n % 3 else ''}"
        path = os.path.join(cur, name)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (now - count + n, now - count + n))


def big_message(size):
    payload = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (b"From: Bertil <b@example.com>\r\nTo: bo@brev.fi\r\nSubject: Stor bilaga\r\n"
            b"Date: Mon, 13 Nov 2023 10:00:00 +0200\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nH\xc3\xa4r kommer filen.\r\n"
            b"--b1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=data.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--b1--\r\n")


class Client:
    def __init__(self, root, limits):
        self.stub = StubTreq(root.resource())
        agent = self.stub._agent
        agent._serverFactory = make_site(root, limits, reactor=agent._memoryReactor)
        self.cookies = {}
        self.token = None

    def request(self, method, path, data=None, headers=None):
        all_headers = {"Origin": [f"https://{HOST}"], "Sec-Fetch-Site": ["same-origin"]}
        all_headers.update(headers or {})
        d = self.stub.request(method, f"https://{HOST}{path}", data=data, headers=all_headers,
                              cookies=self.cookies, allow_redirects=False)
        for _ in range(100000):
            if d.called:
                break
            self.stub.flush()
        response = result(d)
        for cookie in response.cookies():
            self.cookies[cookie.name] = cookie.value
        d = self.stub.content(response)
        for _ in range(100000):
            if d.called:
                break
            self.stub.flush()
        body = result(d)
        return response.code, body

    def get(self, path):
        code, body = self.request("GET", path)
        assert code == 200, (code, path, body[:300])
        found = re.search(rb'name="csrf" value="([^"]+)"', body)
        if found:
            self.token = found.group(1).decode()
        return body


def timed(label, fn, figures):
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    figures.append((label, elapsed))
    print(f"{label:<52} {elapsed:8.3f} s", flush=True)
    return value


def main(count=10_000, big_mb=10):
    base = tempfile.mkdtemp(prefix="ktmail-webmail-bench-")
    figures = []
    print(f"{'calibration: sum(range(10**7))':<52} {calibrate():8.3f} s", flush=True)
    try:
        pem = os.path.join(base, "dummy.pem")
        with open(pem, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
        config = parse_config(
            f"[ktmail]\nhostname = {HOST}\ndata_dir = {base}/var\ntls_cert = {pem}\n"
            f"tls_key = {pem}\n[listen]\nsmtp =\nsubmission =\nimap =\npop3 =\nweb =\n",
            os.path.join(base, "ktmail.ini"))
        clock = WallClock()
        accounts_store = MemoryStore()
        mail = MaildirStore(config.data_dir, clock, InlineRunner())
        hasher = PasswordHasher(run_in_thread=inline)
        auth = AuthService(accounts_store, hasher, LoginThrottle(accounts_store, clock), clock)
        accounts = AccountService(accounts_store, mail, accounts_store, hasher, config.domains,
                                  config.limits, clock)
        result(accounts.add_customer("kund1", PW, "bench"))
        mailbox = result(accounts.add_mailbox("kund1", "bo_u", Address("bo", "brev.fi"), PW,
                                              "bench"))
        cur = os.path.join(mail.mailbox_path(mailbox.id), "cur")
        timed(f"write {count} message files", lambda: fill(cur, count), figures)
        mailboxes = MailboxService(mail, None, config.limits, clock)
        root = build_root(config, clock, accounts, auth, mail, mailboxes=mailboxes)
        client = Client(root, config.limits)
        client.get("/webmail/")
        found = re.search(rb'name="csrf" value="([^"]+)"', client.request("GET", "/webmail/")[1])
        code, _ = client.request("POST", "/webmail/login", data={
            "username": "bo_u", "password": PW, "csrf": found.group(1).decode()})
        assert code == 303, code
        timed("index build (first look at the folder, a one-off)",
              lambda: result(mail.open_folder(mailbox.id, "INBOX")), figures)
        timed("summaries of every message (parsed once, cached)",
              lambda: result(mail.message_details(mailbox.id, "INBOX", range(1, count + 1),
                                                  with_structure=True)), figures)
        page = timed("list: first page, newest first (cold live folder)",
                     lambda: client.get("/webmail/f/INBOX/"), figures)
        assert page.count(b'class="msg') == 50, page.count(b'class="msg')
        timed("list: first page again (warm)", lambda: client.get("/webmail/f/INBOX/"), figures)
        timed(f"list: last page (page {count // 50})",
              lambda: client.get(f"/webmail/f/INBOX/?page={count // 50}"), figures)
        timed("list: sorted by sender", lambda: client.get(
            "/webmail/f/INBOX/?sort=from&order=asc"), figures)
        timed("list: sorted by subject", lambda: client.get(
            "/webmail/f/INBOX/?sort=subject&order=asc"), figures)
        page = timed("list: search subject for 'nummer 4711'", lambda: client.get(
            "/webmail/f/INBOX/?q=nummer+4711&field=subject"), figures)
        assert b"nummer 4711" in page
        timed("list: search message text (reads every file)", lambda: client.get(
            "/webmail/f/INBOX/?q=zzzz&field=body"), figures)

        raw_size = big_mb * 1024 * 1024 * 3 // 4 * 76 // 78   # base64 grows it to ~big_mb
        message = big_message(raw_size)
        stored = result(mailboxes.append(mailbox, "INBOX", _bytes_file(message)))
        uid = stored.info.uid
        size = stored.info.size / 1024 / 1024
        page = timed(f"open a {size:.1f} MB message (first time)",
                     lambda: client.get(f"/webmail/f/INBOX/{uid}"), figures)
        assert "Här kommer filen.".encode() in page
        timed(f"open the {size:.1f} MB message again",
              lambda: client.get(f"/webmail/f/INBOX/{uid}"), figures)
        code, body = timed(f"download its {raw_size / 1024 / 1024:.1f} MB attachment, decoded",
                           lambda: client.request("GET", f"/webmail/f/INBOX/{uid}/part/2"),
                           figures)
        assert code == 200 and len(body) == raw_size, (code, len(body))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _bytes_file(data):
    return io.BytesIO(data)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
