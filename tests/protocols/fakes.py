"""Small stand-ins for the delivery service, its spools and the outbound
queue, with the behaviour INTERFACES.md promises, plus builders for the
SMTP factories under test. They record what they were given so that tests
can say what reached the store."""

import attrs
from twisted.internet import defer, task

from ktmail import errors
from ktmail.config import Limits
from ktmail.model import Address, Mailbox
from ktmail.protocols.smtp import InboundSMTPFactory, SubmissionSMTPFactory
from ktmail.services.auth import (
    AuthService,
    LoginThrottle,
    PasswordHasher,
    ThrottlePolicy,
)
from ktmail.services.submission import SubmissionService
from ktmail.store.memory import MemoryStore

DOMAINS = ("brev.fi", "sboksi.fi", "pikaposti.fi")
PASSWORD = "correct horse 7"


def mailbox(mailbox_id, username, address):
    return Mailbox(id=mailbox_id, customer_id=1, username=username,
                   address=Address.parse(address), quota_bytes=1048576000, created=0.0)


class FakeSpool:
    """A spool in memory; ``data`` is exactly what would be on disk."""

    def __init__(self):
        self.path = "<memory>"
        self.data = bytearray()
        self.finished = False
        self.discarded = False
        #: set to a Deferred (or a failure) to control finish()
        self.finish_result = None

    @property
    def size(self):
        return len(self.data)

    def write(self, data):
        assert not self.finished and not self.discarded, "write after finish/discard"
        self.data += data

    def finish(self):
        self.finished = True
        if self.finish_result is not None:
            return self.finish_result
        return defer.succeed(None)

    def discard(self):
        self.discarded = True


@attrs.define
class Delivered:
    envelope: object
    message: bytes
    scan_spam: bool


class FakeDeliveryService:
    """DeliveryService: hosted domains, known mailboxes, full mailboxes."""

    def __init__(self, mailboxes=(), domains=DOMAINS):
        self.domains = domains
        self.mailboxes = {m.address: m for m in mailboxes}
        self.full = set()
        self.spools = []
        self.delivered = []
        self.checked = []
        #: when a list, check_recipient answers later: (address, Deferred) pairs
        self.pending_checks = None
        #: Address -> error returned for it by deliver()
        self.failures = {}
        #: when a list, deliver() answers later: Deferreds fired by the test
        self.pending_deliveries = None

    def new_spool(self):
        spool = FakeSpool()
        self.spools.append(spool)
        return spool

    def _check(self, address):
        if address.domain not in self.domains:
            raise errors.RelayDenied()
        if address not in self.mailboxes:
            raise errors.NoSuchMailbox()
        if address in self.full:
            raise errors.QuotaExceeded()
        return self.mailboxes[address]

    def check_recipient(self, address):
        self.checked.append(address)
        if self.pending_checks is not None:
            d = defer.Deferred()
            self.pending_checks.append((address, d))
            return d.addCallback(lambda _: self._check(address))
        return defer.maybeDeferred(self._check, address)

    def deliver(self, envelope, spool, scan_spam=True):
        assert spool.finished, "deliver() before spool.finish()"
        results = {}
        for rcpt in envelope.recipients:
            results[rcpt] = self.failures.get(rcpt)
        stored = [r for r, e in results.items() if e is None]
        if stored:
            self.delivered.append(Delivered(
                attrs.evolve(envelope, recipients=tuple(stored)), bytes(spool.data), scan_spam))
        if self.pending_deliveries is not None:
            d = defer.Deferred()
            self.pending_deliveries.append(d)
            return d.addCallback(lambda _: results)
        return defer.succeed(results)


class FakeOutboundQueue:
    def __init__(self):
        self.queued = []

    def enqueue(self, envelope, spool):
        assert spool.finished
        self.queued.append(Delivered(envelope, bytes(spool.data), False))
        return defer.succeed(f"Q{len(self.queued)}")


ALICE = mailbox(1, "alice_u", "alice@brev.fi")
BOB = mailbox(2, "bob_u", "bob@pikaposti.fi")
POSTMASTER = mailbox(3, "postmaster_u", "postmaster@brev.fi")


def inbound_factory(delivery=None, clock=None, **overrides):
    """An MX factory over a fake delivery service (alice, bob, postmaster)."""
    kwargs = dict(hostname="mx.example.test", clock=clock or task.Clock(),
                  max_message_bytes=52428800,
                  delivery=delivery or FakeDeliveryService([ALICE, BOB, POSTMASTER]),
                  tls_context=object(), postmaster_domain="brev.fi")
    kwargs.update(overrides)
    return InboundSMTPFactory(**kwargs)


def synchronous(fn, *args):
    return defer.maybeDeferred(fn, *args)


_HASH = {}


class SubmissionWorld:
    """A submission factory with real Auth and Submission services over a
    MemoryStore holding alice_u and bob_u (password PASSWORD)."""

    def __init__(self, clock=None, limits=None, outbound=None, throttle=None,
                 max_message_bytes=52428800, **overrides):
        self.clock = clock or task.Clock()
        self.store = MemoryStore()
        self.delivery = FakeDeliveryService([ALICE, BOB, POSTMASTER])
        self.outbound = outbound
        self.limits = limits or Limits()
        hasher = PasswordHasher(synchronous)
        if "hash" not in _HASH:
            _HASH["hash"] = hasher.hash(PASSWORD).result
        customer = self.store.add_customer("kund1", _HASH["hash"], 0.0).result
        for m in (ALICE, BOB):
            self.store.add_mailbox(customer.id, m.username, m.address, _HASH["hash"],
                                   m.quota_bytes, 0.0, 5)
        self.throttle = LoginThrottle(self.store, self.clock,
                                      throttle or ThrottlePolicy(failure_delay=0))
        self.auth = AuthService(self.store, hasher, self.throttle, self.clock)
        self.submission = SubmissionService(
            delivery=self.delivery, outbound=outbound, counters=self.store,
            limits=self.limits, domains=DOMAINS, hostname="mail.example.test", clock=self.clock)
        kwargs = dict(hostname="mail.example.test", clock=self.clock,
                      max_message_bytes=max_message_bytes, delivery=self.delivery,
                      auth=self.auth, submission=self.submission, postmaster_domain="brev.fi")
        kwargs.update(overrides)
        self.factory = SubmissionSMTPFactory(**kwargs)
