"""Transcript helper for POP3 sessions over an in-memory transport, and a
small ktmail (memory stores, real auth and maildrop services) to talk to:

    box = POP3Fixture(self)                  # alice_u with PASSWORD, empty INBOX
    box.deliver(b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
    pop = box.connect()                      # greeting read
    pop.send("USER alice_u").expect("+OK")
    pop.send("PASS " + PASSWORD).expect("+OK Logged in")
    body = pop.send("RETR 1").expect_multiline("+OK 25 octets")

``expect(prefix)`` reads the next single-line response and checks its
start; ``expect_multiline(prefix)`` reads a multi-line one and returns its
body exactly as sent (still dot-stuffed, CRLF, terminator removed);
``unstuff(body)`` undoes the stuffing. Pull producers (RETR, TOP, long
listings) are driven by ``pump()``, which every read does first.
"""

import io

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides

from ktmail.config import Limits
from ktmail.model import INBOX, Address
from ktmail.protocols.pop3 import POP3Factory
from ktmail.services.auth import (
    AuthService,
    LoginThrottle,
    PasswordHasher,
    ThrottlePolicy,
)
from ktmail.services.mailboxes import MailboxService
from ktmail.services.maildrop import MaildropService
from ktmail.services.ratelimit import Window
from ktmail.store.memory import MemoryMailStore, MemoryStore
from tests.protocols.transcript import LineTranscript
from tests.services.fakes import inline

PASSWORD = "correct horse 7"
HOSTNAME = "mail.example.test"


class POP3Fixture:
    """Accounts, a memory mail store and a POP3 factory over them."""

    def __init__(self, testcase, chunk_size=16384, failure_delay=1.0, **factory_options):
        self.testcase = testcase
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.accounts = MemoryStore()
        self.mail = MemoryMailStore(self.clock)
        hasher = PasswordHasher(run_in_thread=inline)
        policy = ThrottlePolicy(per_address=Window(10, 600), per_username=Window(30, 900),
                                failure_delay=failure_delay)
        self.auth = AuthService(self.accounts, hasher,
                                LoginThrottle(self.accounts, self.clock, policy), self.clock)
        password_hash = testcase.successResultOf(hasher.hash(PASSWORD))
        customer = testcase.successResultOf(
            self.accounts.add_customer("kund1001", password_hash, 0.0))
        self.accounts_by_name = {}
        for username, address in (("alice_u", "alice@brev.fi"), ("bob_u", "bob@pikaposti.fi")):
            mailbox = testcase.successResultOf(self.accounts.add_mailbox(
                customer.id, username, Address.parse(address), password_hash,
                1048576000, 0.0, 5))
            testcase.successResultOf(self.mail.create_mailbox(mailbox.id))
            self.accounts_by_name[username] = mailbox
        self.mailboxes = MailboxService(self.mail, None, Limits(), self.clock)
        self.maildrops = MaildropService(self.mailboxes)
        self.factory = POP3Factory(self.auth, self.maildrops, self.clock, HOSTNAME,
                                   chunk_size=chunk_size, **factory_options)

    def mailbox_id(self, username="alice_u"):
        return self.accounts_by_name[username].id

    def deliver(self, data, username="alice_u", flags=()):
        """Add a message to INBOX as delivery does (through the mailboxes
        service) -> its UID."""
        stored = self.testcase.successResultOf(self.mailboxes.append(
            self.accounts_by_name[username], INBOX, io.BytesIO(data), flags=flags))
        return stored.info.uid

    def imap_session(self, username="alice_u"):
        """An IMAP-like user of the live INBOX: -> (LiveFolder, listener);
        ``listener.events`` records what it is told."""
        folder = self.testcase.successResultOf(
            self.mailboxes.open_folder(self.accounts_by_name[username], INBOX))
        listener = RecordingListener()
        folder.add_listener(listener)
        return folder, listener

    def inbox_messages(self, username="alice_u"):
        """-> [MessageInfo] of INBOX now."""
        snapshot = self.testcase.successResultOf(
            self.mail.open_folder(self.mailbox_id(username), INBOX))
        return list(snapshot.messages)

    def connect(self, peer="203.0.113.7", tls=True):
        return POP3Transcript(self.testcase, self.factory, peer, tls=tls)

    def login(self, username="alice_u", peer="203.0.113.7"):
        pop = self.connect(peer)
        pop.send(f"USER {username}").expect("+OK")
        pop.send(f"PASS {PASSWORD}").expect("+OK Logged in")
        return pop


class RecordingListener:
    """An IFolderListener that records its calls, as an IMAP session in
    IDLE would turn them into untagged responses."""

    def __init__(self):
        self.events = []

    def messages_added(self, folder, infos):
        self.events.append(("added", [i.uid for i in infos]))

    def flags_changed(self, folder, infos):
        self.events.append(("flags", [(i.uid, sorted(i.flags)) for i in infos]))

    def messages_expunged(self, folder, uids):
        self.events.append(("expunged", list(uids)))

    def folder_closed(self, folder):
        self.events.append(("closed", None))


class POP3Transcript(LineTranscript):
    def __init__(self, testcase, factory, peer="203.0.113.7", greet=True, tls=True):
        self.testcase = testcase
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
        if tls:   # as on 995 (implicit TLS)
            alsoProvides(self.transport, ISSLTransport)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self._read = 0
        self.last = None
        if greet:
            self.expect("+OK")

    def drop(self):
        """The client goes away without QUIT."""
        self.transport.loseConnection()
        self.protocol.connectionLost(None)

    # --- reading ---

    def pump(self):
        """Drive the registered pull producer (a message being sent) to its end."""
        for _ in range(1_000_000):
            producer = self.transport.producer
            if producer is None or self.transport.streaming:
                return
            producer.resumeProducing()
        self.testcase.fail("the producer never finished")

    def _line(self, pos):
        data = self.transport.value()
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None, pos
        return data[pos:end], end + 2

    def expect(self, prefix):
        """The next single-line response starts with ``prefix``."""
        self.pump()
        line, pos = self._line(self._read)
        if line is None:
            self.testcase.fail(f"expected a response {prefix!r}, got none "
                               f"(unread: {self.unread()!r})")
        self.last = line.decode("utf-8")
        self._read = pos
        if not self.last.startswith(prefix):
            self.testcase.fail(f"expected {prefix!r}, got {self.last!r}")
        return self

    def expect_multiline(self, prefix="+OK"):
        """The next response is multi-line and its first line starts with
        ``prefix`` -> its body as sent (dot-stuffed, CRLF), without the
        terminating ".\\r\\n"."""
        self.expect(prefix)
        data = self.transport.value()
        if data[self._read:self._read + 3] == b".\r\n":
            self._read += 3
            return b""
        end = data.find(b"\r\n.\r\n", self._read)
        if end < 0:
            self.testcase.fail(f"the multi-line response has no end: {self.unread()[:200]!r}")
        body = data[self._read:end + 2]
        self._read = end + 5
        return body

    def lines(self, prefix="+OK"):
        """A multi-line response's body as a list of str lines."""
        return self.expect_multiline(prefix).decode("utf-8").split("\r\n")[:-1]

    def unread(self):
        self.pump()
        return self.transport.value()[self._read:]

    def expect_nothing(self):
        pending = self.unread()
        if pending:
            self.testcase.fail(f"expected no response, got {pending!r}")
        return self


def unstuff(body):
    """Undo RFC 1939 §3 byte-stuffing of a multi-line response body."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
