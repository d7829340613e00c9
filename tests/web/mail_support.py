"""A webmail wired to real services over in-memory stores, for route tests.

``MailHarness`` is a WebHarness whose webmail has a MailboxService (over a
MemoryMailStore), a DeliveryService with the GTUBE stand-in spam filter,
and a SubmissionService whose outbound queue only records what it gets.
Everything runs inline on a ``task.Clock``: no threads, no sockets.
"""

import io
import os
import re
import secrets

import attrs
from twisted.internet import defer

from ktmail.model import Address
from ktmail.services.delivery import DeliveryService, Envelope
from ktmail.services.mailboxes import MailboxService
from ktmail.services.submission import SubmissionService
from ktmail.store.memory import MemoryMailStore
from ktmail.web.app import build_root
from tests.services.fakes import GtubeSpamFilter, inline
from tests.web.support import PW, Browser, WebHarness


class RecordingSpamFilter(GtubeSpamFilter):
    """GTUBE stand-in that remembers what users taught it."""

    def __init__(self):
        super().__init__(run_in_thread=inline)
        self.trained = []

    def train(self, mailbox, path, is_spam):
        with open(path, "rb") as f:
            head = f.read(4096)
        subject = re.search(rb"^Subject: (.*)$", head, re.MULTILINE)
        self.trained.append((mailbox.username, subject.group(1).strip().decode() if subject
                             else None, is_spam))
        return defer.succeed(None)


@attrs.define
class RecordingOutbound:
    """Stands in for the outbound queue: keeps the envelopes and bytes."""

    queued: list = attrs.Factory(list)

    def enqueue(self, envelope, spool):
        with open(spool.path, "rb") as f:
            self.queued.append((envelope, f.read()))
        return defer.succeed(f"q{len(self.queued)}")


class MailHarness(WebHarness):
    def __init__(self, testcase, extra_config="", limits=""):
        super().__init__(testcase, extra_config + ("\n[limits]\n" + limits if limits else ""))
        self.mail = MemoryMailStore(self.clock, files_dir=testcase.mktemp())
        self.accounts.mail = self.mail
        self.spam = RecordingSpamFilter()
        self.mailboxes = MailboxService(self.mail, self.spam, self.config.limits, self.clock)
        self.delivery = DeliveryService(self.store, self.mailboxes, self.spam,
                                        self.config.limits, self.config.domains, self.clock,
                                        os.path.abspath(testcase.mktemp()), inline)
        self.outbound = RecordingOutbound()
        self.submission = SubmissionService(
            delivery=self.delivery, outbound=self.outbound, counters=self.store,
            limits=self.config.limits, domains=self.config.domains,
            hostname=self.config.hostname, clock=self.clock)
        self.root = build_root(self.config, self.clock, self.accounts, self.auth, self.mail,
                               mailboxes=self.mailboxes, submission=self.submission,
                               delivery=self.delivery)
        self.sessions = self.root.web.sessions
        self.webmail = self.root.webmail

    def deliver(self, address, message, scan=True):
        """Deliver ``message`` (bytes, LF or CRLF) to ``address`` as SMTP would."""
        spool = self.delivery.new_spool()
        spool.write(message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        envelope = Envelope(sender="sender@example.org", recipients=(Address.parse(address),),
                            received_at=self.clock.seconds())
        result = self.ok(self.delivery.deliver(envelope, spool, scan_spam=scan))
        spool.discard()
        assert all(v is None for v in result.values()), result
        return result

    def messages(self, username, folder="INBOX"):
        """[(MessageInfo, bytes)] of a folder, ascending UID."""
        mailbox = self.ok(self.accounts.get_mailbox(username))
        live = self.ok(self.mailboxes.open_folder(mailbox, folder))
        try:
            out = []
            for info in live.infos():
                f = self.ok(live.open_message(info.uid))
                out.append((info, f.read()))
                f.close()
            return out
        finally:
            live.release()

    def browser(self, secure=True, **kwargs):
        return MailBrowser(self, secure=secure, **kwargs)


def message(subject="Hej", body="Hej på dig!\n", sender="Åsa Öberg <asa@example.org>",
            to="alice@brev.fi", extra="", date="Mon, 21 Sep 2026 10:00:00 +0200"):
    text = (f"From: {sender}\nTo: {to}\nSubject: {subject}\nDate: {date}\n"
            f"Message-ID: <{secrets.token_hex(6)}@example.org>\n{extra}"
            "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\n" + body)
    return text.encode("utf-8")


def multipart(fields):
    """-> (body, content type) of a multipart/form-data form: ``fields`` is a
    list of (name, text) or (name, (filename, content type, bytes))."""
    boundary = "----ktmailtest" + secrets.token_hex(8)
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, content_type, data = value
            out.write(f'Content-Disposition: form-data; name="{name}"; '
                      f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
                      .encode())
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(value.encode("utf-8"))
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class MailBrowser(Browser):
    def fetch(self, path):
        """GET ``path`` -> (response, body bytes): downloads, images."""
        d = self.stub.get(self.url(path), headers={"Accept-Language": [self.language]},
                          allow_redirects=False)
        response = self.harness.ok(self._pump(d))
        return response, self.harness.ok(self._pump(self.stub.content(response)))

    def login(self, username="alice_u", password=PW):
        page = self.login_webmail(username, password)
        assert page.status == 303, page.text()[:300]
        return self.follow(page)

    def compose_url(self, page):
        m = re.search(r'action="(/webmail/upload/compose/[0-9a-f]+)"', page.body)
        return m.group(1) if m else None

    def submit_compose(self, page, do="send", files=(), csrf="page", origin="same", **values):
        """Submit the compose form shown on ``page`` like a browser: its
        fields (changed by ``values``), ``files`` as (name, type, bytes)."""
        fields = [("csrf", page.csrf() if csrf == "page" else csrf)] if csrf else []
        for name in ("to", "cc", "bcc", "subject"):
            m = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page.body)
            from html import unescape
            fields.append((name, values.get(name, unescape(m.group(1)) if m else "")))
        m = re.search(r'<textarea[^>]*name="body"[^>]*>(.*?)</textarea>', page.body, re.DOTALL)
        from html import unescape
        fields.append(("body", values.get("body", unescape(m.group(1)) if m else "")))
        for f in files:
            fields.append(("files", f))
        if not files:
            fields.append(("files", ("", "application/octet-stream", b"")))
        fields.append(("do", do))
        body, content_type = multipart(fields)
        headers = {"Content-Type": [content_type]}
        if origin == "same":
            headers.update({"Origin": [f"{self.scheme}://{self.host}"],
                            "Sec-Fetch-Site": ["same-origin"]})
        elif origin:
            headers.update({"Origin": [origin], "Sec-Fetch-Site": ["cross-site"]})
        return self.request("POST", self.compose_url(page), data=body, headers=headers)
