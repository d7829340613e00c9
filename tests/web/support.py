"""An in-memory ktmail web listener and a browser-like client for route tests.

``WebHarness`` wires the real web surfaces to in-memory stores and a
``task.Clock``; ``Browser`` talks to them through treq's StubTreq (no
sockets), keeps cookies like a browser, and sends same-origin headers and
the page's CSRF token on POSTs unless a test says otherwise.
"""

import os
import re
from html import unescape

import attrs
from treq.testing import StubTreq
from twisted.internet import defer, task

from ktmail.config import parse_config
from ktmail.services.accounts import AccountService
from ktmail.services.auth import AuthService, LoginThrottle, ThrottlePolicy
from ktmail.store.memory import MemoryStore
from ktmail.web.app import build_root, make_site
from tests.services.fakes import RecordingMailStore, fast_hasher

PW = "correct horse 7"
HOST = "mail.example.test"
PORTS = {"imap": 10993, "pop3": 10995, "submission": 10465}
START = 1_790_000_000.0


class UsageMailStore(RecordingMailStore):
    """RecordingMailStore that reports a set number of bytes per mailbox."""

    def __init__(self):
        super().__init__()
        self.used = {}

    def usage(self, mailbox_id):
        return defer.succeed(self.used.get(mailbox_id, 0))


def config_text(pem, extra=""):
    return f"""[ktmail]
hostname = {HOST}
tls_cert = {pem}
tls_key = {pem}
[listen]
smtp =
submission = ssl:{PORTS['submission']}:interface=127.0.0.1
imap = ssl:{PORTS['imap']}
pop3 = haproxy:ssl:port={PORTS['pop3']}
web = tcp:8080:interface=127.0.0.1
[clients]
incoming_host = imap.example.test
outgoing_host = smtp.example.test
{extra}"""


class WebHarness:
    def __init__(self, testcase, extra_config=""):
        self.tc = testcase
        root = os.path.abspath(testcase.mktemp())
        os.makedirs(root)
        pem = os.path.join(root, "dummy.pem")
        with open(pem, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")
        self.config = parse_config(config_text(pem, extra_config),
                                   os.path.join(root, "ktmail.ini"))
        self.clock = task.Clock()
        self.clock.advance(START)
        self.store = MemoryStore()
        self.mail = UsageMailStore()
        hasher = fast_hasher()
        throttle = LoginThrottle(self.store, self.clock, ThrottlePolicy(failure_delay=0))
        self.auth = AuthService(self.store, hasher, throttle, self.clock)
        self.accounts = AccountService(self.store, self.mail, self.store, hasher,
                                       self.config.domains, self.config.limits, self.clock)
        self.root = build_root(self.config, self.clock, self.accounts, self.auth, self.mail)
        self.sessions = self.root.web.sessions

    def ok(self, d):
        return self.tc.successResultOf(d)

    def customer(self, login="kund1001", password=PW):
        return self.ok(self.accounts.add_customer(login, password, "test"))

    def mailbox(self, username, address, customer="kund1001", password=PW):
        return self.ok(self.accounts.add_mailbox(customer, username, address, password,
                                                 "test"))

    def browser(self, secure=True, **kwargs):
        return Browser(self, secure=secure, **kwargs)


@attrs.frozen
class Page:
    status: int
    headers: object
    body: str

    def header(self, name):
        values = self.headers.getRawHeaders(name) or []
        return values[0] if values else None

    def cookies(self):
        return self.headers.getRawHeaders("set-cookie") or []

    @property
    def location(self):
        return self.header("location")

    def csrf(self):
        m = re.search(r'name="csrf" value="([^"]+)"', self.body)
        return m.group(1) if m else None

    def text(self):
        """The visible text, tags removed, entities decoded, spaces folded."""
        body = re.sub(r"<(script|style)\b.*?</\1>", " ", self.body, flags=re.DOTALL)
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())

    def field_error(self, name):
        """The error shown next to field ``name`` (None when there is none)."""
        m = re.search(rf'<p class="field-error" id="e-{name}">(.*?)</p>', self.body, re.DOTALL)
        return unescape(m.group(1)) if m else None

    def alerts(self):
        return [unescape(re.sub(r"<[^>]+>", "", m))
                for m in re.findall(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', self.body,
                                    re.DOTALL)]


class Browser:
    """One browser: its own cookie jar, same-origin requests by default."""

    def __init__(self, harness, secure=True, host=HOST, language="sv"):
        self.harness = harness
        self.scheme = "https" if secure else "http"
        self.host = host
        self.language = language
        self.stub = StubTreq(harness.root.resource())
        agent = self.stub._agent
        # the daemon's Site (body limits, headers) instead of StubTreq's plain one
        agent._serverFactory = make_site(harness.root, harness.config.limits,
                                         reactor=agent._memoryReactor)
        self.last = None

    def url(self, path):
        return f"{self.scheme}://{self.host}{path}"

    def request(self, method, path, data=None, headers=None):
        all_headers = {"Accept-Language": [self.language]} if self.language else {}
        all_headers.update(headers or {})
        d = self.stub.request(method, self.url(path), data=data, headers=all_headers,
                              allow_redirects=False)
        response = self.harness.ok(self._pump(d))
        body = self.harness.ok(self._pump(self.stub.content(response)))
        page = Page(response.code, response.headers, body.decode("utf-8"))
        if response.code == 200 and "text/html" in (page.header("content-type") or ""):
            self.last = page
        return page

    def _pump(self, d):
        """Move bytes until ``d`` fires (streamed answers need several rounds)."""
        for _ in range(1000):
            if d.called:
                break
            self.stub.flush()
        return d

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, form=None, csrf="page", origin="same", headers=None):
        """POST ``form`` like a browser submitting a page of this site:
        ``csrf="page"`` takes the token from the last page shown."""
        form = dict(form or {})
        if csrf == "page":
            csrf = self.last.csrf() if self.last else None
        if csrf is not None:
            form["csrf"] = csrf
        all_headers = {}
        if origin == "same":
            all_headers = {"Origin": [f"{self.scheme}://{self.host}"],
                           "Sec-Fetch-Site": ["same-origin"]}
        elif origin:
            all_headers = {"Origin": [origin], "Sec-Fetch-Site": ["cross-site"]}
        all_headers.update(headers or {})
        return self.request("POST", path, data=form, headers=all_headers)

    def follow(self, page):
        assert page.status in (301, 302, 303), (page.status, page.text()[:300])
        return self.get(page.location)

    def login_portal(self, login="kund1001", password=PW):
        self.get("/admin/")
        return self.post("/admin/login", {"login": login, "password": password})

    def login_webmail(self, username, password=PW):
        self.get("/webmail/")
        return self.post("/webmail/login", {"username": username, "password": password})
