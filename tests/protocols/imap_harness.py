"""IMAP transcript helper: sessions over in-memory transports, against the
real services and either the in-memory mail store or the Maildir store.

    imap = IMAPHarness(self)                     # or IMAPHarness(self, maildir=True)
    c = imap.connect()                           # greeting read
    c.login()                                    # LOGIN alice_u + PASSWORD
    r = c.command("a1 SELECT INBOX")
    r.ok(); r.has("* 0 EXISTS")
    imap.deliver(b"Subject: hi\\r\\n\\r\\nbody\\r\\n")   # as SMTP delivery would

``command`` sends one command (literals included: ``c.command(line,
literals=[b"..."])`` waits for each continuation), runs what it started to
completion (the stores answer at once) and returns the ``Response``: the
untagged lines and the tagged one, with literals kept inline as bytes.
"""

import io
import os
import re

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides

from ktmail.config import Limits
from ktmail.model import Address
from ktmail.protocols.imap import ImapContext, IMAPFactory
from ktmail.services.auth import (
    AuthService,
    LoginThrottle,
    PasswordHasher,
    ThrottlePolicy,
)
from ktmail.services.delivery import Spool
from ktmail.services.mailboxes import MailboxService
from ktmail.store.maildir import MaildirStore
from ktmail.store.memory import MemoryMailStore, MemoryStore

START = 1_700_000_000
PASSWORD = "correct horse 7"
USERNAME = "alice_u"


def inline(fn, *args):
    return defer.maybeDeferred(fn, *args)


class RecordingSpam:
    def __init__(self):
        self.trained = []

    def train(self, mailbox, path, is_spam):
        with open(path, "rb") as f:
            self.trained.append((mailbox.username, f.read(), is_spam))
        return defer.succeed(None)


class Response:
    def __init__(self, testcase, lines, tag):
        self.testcase = testcase
        self.lines = lines
        self.tag = tag
        self.tagged = lines[-1] if lines else b""
        self.untagged = lines[:-1]

    def __repr__(self):
        return "\n".join(line.decode("utf-8", "replace") for line in self.lines)

    @property
    def text(self):
        return repr(self)

    def _status(self, status):
        expected = self.tag + b" " + status
        if not self.tagged.startswith(expected):
            self.testcase.fail(f"expected {expected!r}, got:\n{self}")
        return self

    def ok(self, code=None):
        self._status(b"OK")
        if code is not None:
            self.testcase.assertIn(code.encode() if isinstance(code, str) else code,
                                   self.tagged)
        return self

    def no(self, code=None):
        self._status(b"NO")
        if code is not None:
            self.testcase.assertIn(b"[" + (code.encode() if isinstance(code, str) else code),
                                   self.tagged)
        return self

    def bad(self):
        return self._status(b"BAD")

    def has(self, line):
        """One untagged line equals ``line`` exactly."""
        line = line.encode() if isinstance(line, str) else line
        if line not in self.untagged:
            self.testcase.fail(f"no line {line!r} in:\n{self}")
        return self

    def lacks(self, pattern):
        pattern = pattern.encode() if isinstance(pattern, str) else pattern
        for line in self.untagged:
            if re.search(pattern, line):
                self.testcase.fail(f"unexpected {line!r} in:\n{self}")
        return self

    def matching(self, pattern):
        """Untagged lines matching a regex (bytes or str)."""
        pattern = pattern.encode() if isinstance(pattern, str) else pattern
        return [line for line in self.untagged if re.search(pattern, line, re.DOTALL)]

    def search_result(self):
        found = self.matching(rb"^\* SEARCH")
        self.testcase.assertEqual(len(found), 1, f"expected one * SEARCH line:\n{self}")
        return [int(n) for n in found[0].split()[2:]]


class IMAPClient:
    def __init__(self, testcase, factory, tls=True, peer="203.0.113.9"):
        self.testcase = testcase
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        if tls:
            alsoProvides(self.transport, ISSLTransport)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self._read = 0
        self._tags = 0
        self.greeting = self.read_line()

    # raw access

    def send_raw(self, data):
        self.protocol.dataReceived(data.encode() if isinstance(data, str) else data)
        return self

    def unread(self):
        return self.transport.value()[self._read:]

    def read_line(self):
        """The next logical line (a literal is kept inline), or None."""
        data = self.transport.value()
        pos = self._read
        out = b""
        while True:
            end = data.find(b"\r\n", pos)
            if end < 0:
                return None
            line = data[pos:end]
            out += line
            pos = end + 2
            m = re.search(rb"\{(\d+)\}\Z", line)
            if not m:
                self._read = pos
                return out
            size = int(m.group(1))
            if len(data) < pos + size:
                return None
            out += b"\r\n" + data[pos:pos + size]
            pos += size

    def read_lines(self):
        out = []
        while (line := self.read_line()) is not None:
            out.append(line)
        return out

    @property
    def closed(self):
        return self.transport.disconnecting

    # commands

    def command(self, line, literals=()):
        """Send a command (and its literals) and read up to its tagged reply."""
        line = line.encode() if isinstance(line, str) else line
        tag = line.split(b" ", 1)[0]
        literals = list(literals)
        self.send_raw(line + b"\r\n")
        lines = []
        while literals:
            got = self.read_lines()
            lines.extend(l for l in got if not l.startswith(b"+"))
            if not any(l.startswith(b"+") for l in got):
                if any(l.startswith(tag + b" ") for l in got):
                    return Response(self.testcase, lines, tag)
                self.testcase.fail(f"no continuation for {line!r}: {got!r}")
            chunk = literals.pop(0)
            self.send_raw(chunk)
        return self.finish(tag, lines)

    def finish(self, tag, lines=None):
        lines = list(lines or [])
        for line in self.read_lines():
            lines.append(line)
            if line.startswith(tag + b" "):
                return Response(self.testcase, lines, tag)
        self.testcase.fail(f"no tagged reply for {tag!r}; got {lines!r}, unread "
                           f"{self.unread()[:300]!r}")

    def login(self, username=USERNAME, password=PASSWORD):
        return self.command(f"L1 LOGIN {username} \"{password}\"").ok()

    def select(self, name="INBOX"):
        return self.command(f"S1 SELECT {name}").ok()


class IMAPHarness:
    """Services wired like the daemon, over an in-memory (or Maildir) store."""

    def __init__(self, testcase, maildir=False, quota_bytes=1048576000,
                 max_message_bytes=52428800):
        self.testcase = testcase
        self.clock = task.Clock()
        self.clock.advance(START)
        if maildir:
            self.mail = MaildirStore(testcase.mktemp(), self.clock, inline)
        else:
            self.mail = MemoryMailStore(self.clock)
        self.accounts = MemoryStore()
        self.spam = RecordingSpam()
        self.limits = Limits(max_message_bytes=max_message_bytes)
        self.mailboxes = MailboxService(self.mail, self.spam, self.limits, self.clock)
        hasher = PasswordHasher(inline)
        self.auth = AuthService(self.accounts, hasher,
                                LoginThrottle(self.accounts, self.clock,
                                              ThrottlePolicy(failure_delay=0)), self.clock)
        customer = testcase.successResultOf(self.accounts.add_customer("kund1", "x", START))
        password_hash = testcase.successResultOf(hasher.hash(PASSWORD))
        self.mailbox = testcase.successResultOf(self.accounts.add_mailbox(
            customer.id, USERNAME, Address("alice", "sboksi.fi"), password_hash, quota_bytes,
            START, 5))
        testcase.successResultOf(self.mail.create_mailbox(self.mailbox.id))
        self.spool_dir = testcase.mktemp()
        os.makedirs(self.spool_dir)
        self.spools = []
        self.context = ImapContext(
            auth=self.auth, mailboxes=self.mailboxes, new_spool=self.new_spool,
            run_in_thread=inline, clock=self.clock, max_message_bytes=max_message_bytes,
            turn=lambda: defer.succeed(None))
        self.factory = IMAPFactory(self.context)

    def new_spool(self):
        spool = Spool(os.path.join(self.spool_dir, f"s{len(self.spools)}"), inline)
        self.spools.append(spool)
        return spool

    def connect(self, tls=True, login=False):
        client = IMAPClient(self.testcase, self.factory, tls=tls)
        if login:
            client.login()
        return client

    def deliver(self, data, folder="INBOX", flags=()):
        """Store a message the way the delivery service does. -> StoredMessage."""
        return self.testcase.successResultOf(self.mailboxes.append(
            self.mailbox, folder, io.BytesIO(data), flags=flags))

    def fill(self, count, folder="INBOX", body=b"Hello\r\n"):
        return [self.deliver(b"Subject: message %d\r\nFrom: bo@example.com\r\n\r\n" % n + body,
                             folder) for n in range(1, count + 1)]
