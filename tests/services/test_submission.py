"""SubmissionService: the sender rules, the rolling-hour recipient limit
(on task.Clock, and kept in the database across a restart), the fields a
message lacks, and the local/remote split."""

import os

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.config import Limits
from ktmail.model import Address
from ktmail.services.delivery import Envelope
from ktmail.services.submission import SubmissionService, field_names, from_addresses
from ktmail.store.memory import MemoryStore
from ktmail.store.sqlite import Database, InlineRunner, SQLiteStore
from tests.protocols.fakes import (
    ALICE,
    BOB,
    DOMAINS,
    FakeDeliveryService,
    FakeOutboundQueue,
    FakeSpool,
)


def service(clock, counters=None, outbound=None, delivery=None, **limits):
    return SubmissionService(
        delivery=delivery or FakeDeliveryService([ALICE, BOB]), outbound=outbound,
        counters=counters or MemoryStore(), limits=Limits(**limits), domains=DOMAINS,
        hostname="mail.example.test", clock=clock)


def finished_spool(data=b"From: alice@brev.fi\r\n\r\nhi\r\n"):
    spool = FakeSpool()
    spool.write(data)
    spool.finish()
    return spool


def envelope(*recipients, mailbox=ALICE):
    return Envelope(sender=str(mailbox.address),
                    recipients=tuple(Address.parse(r) if "@" in r else r for r in recipients),
                    authenticated=mailbox, protocol="ESMTPSA")


class SenderRules(unittest.TestCase):
    def setUp(self):
        self.service = service(task.Clock())

    def test_envelope_sender(self):
        """Only the mailbox's own address (any case) or <> passes."""
        self.service.check_sender(ALICE, "alice@brev.fi")
        self.service.check_sender(ALICE, "ALICE@Brev.Fi")
        self.service.check_sender(ALICE, "")
        for other in ("bob@pikaposti.fi", "alice@brev.fi.example", "alice", '"alice"@brev.fi'):
            with self.subTest(sender=other):
                self.assertRaises(errors.SenderRejected, self.service.check_sender, ALICE, other)

    def test_from_header(self):
        """From: must hold exactly the mailbox's address; the refusal says
        which address is allowed."""
        good = [b"From: alice@brev.fi\r\n\r\n",
                b"Subject: x\r\nFrom: \"Alice A.\"\r\n <alice@brev.fi>\r\n\r\nFrom: bob@x\r\n",
                b"FROM: <Alice@BREV.fi>\r\n"]
        for header in good:
            with self.subTest(header=header):
                self.service.check_from_header(ALICE, header)
        bad = [b"", b"Subject: x\r\n\r\nFrom: alice@brev.fi\r\n",
               b"From: bob@pikaposti.fi\r\n\r\n", b"From: <>\r\n\r\n",
               b"From: alice@brev.fi, bob@pikaposti.fi\r\n\r\n",
               b"From: a: alice@brev.fi;\r\n\r\n", b"From: \x00\xff\r\n\r\n",
               b"From: alice@brev.fi\r\nfrom: alice@brev.fi\r\n\r\n"]
        for header in bad:
            with self.subTest(header=header):
                e = self.assertRaises(errors.SenderRejected, self.service.check_from_header,
                                      ALICE, header)
                self.assertIn("alice@brev.fi", e.text)

    def test_header_helpers(self):
        """field_names and from_addresses read only the header block."""
        block = b"From: a@b.c\r\nX-Folded: one\r\n two\r\n\r\nDate: body\r\n"
        self.assertEqual(field_names(block), {"from", "x-folded", "date"})
        self.assertEqual(from_addresses(block), [["a@b.c"]])


class MissingHeaders(unittest.TestCase):
    def test_adds_what_is_missing(self):
        """Message-ID: and Date: are generated only when absent."""
        clock = task.Clock()
        clock.advance(1795737600)
        svc = service(clock)
        added = svc.missing_headers(b"From: alice@brev.fi\r\n\r\nbody")
        self.assertRegex(added, rb"^Message-ID: <[0-9a-f]{32}@mail\.example\.test>\r\n"
                                rb"Date: Fri, 27 Nov 2026 00:00:00 \+0000\r\n\Z")
        self.assertEqual(svc.missing_headers(b"Message-Id: <x@y>\r\nDATE: now\r\n\r\n"), b"")
        self.assertTrue(svc.missing_headers(b"Subject: x\r\n\r\nDate: in body\r\n")
                        .endswith(b"+0000\r\n"))


class HourLimit(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1795737600)
        self.store = MemoryStore()
        self.service = service(self.clock, counters=self.store, smtp_recipients_per_hour=3,
                               webmail_recipients_per_hour=2)

    @defer.inlineCallbacks
    def test_reserve_only_looks(self):
        """reserve_recipient records nothing; pending counts the transaction."""
        yield self.service.reserve_recipient(ALICE, "smtp")
        yield self.service.reserve_recipient(ALICE, "smtp", pending=2)
        yield self.assertFailure(self.service.reserve_recipient(ALICE, "smtp", pending=3),
                                 errors.RateLimited)
        self.assertEqual((yield self.store.events_since("sent-smtp:1", 0)), [])

    @defer.inlineCallbacks
    def test_submit_counts_and_refuses_with_retry_time(self):
        """submit counts recipients; once the hour is full the next recipient
        is refused until the oldest leaves the window, and the text says when."""
        yield self.service.submit(envelope("bob@pikaposti.fi", "alice@brev.fi"),
                                  finished_spool())
        self.clock.advance(1200)
        yield self.service.submit(envelope("bob@pikaposti.fi"), finished_spool())
        e = yield self.assertFailure(self.service.reserve_recipient(ALICE, "smtp"),
                                     errors.RateLimited)
        self.assertEqual(e.retry_at, 1795737600 + 3600)
        self.assertIn("at 01:00 UTC (in 40 minutes)", e.text)
        self.clock.advance(2400)
        yield self.service.reserve_recipient(ALICE, "smtp", pending=1)

    @defer.inlineCallbacks
    def test_submit_refuses_over_the_limit(self):
        """submit itself refuses a message whose recipients no longer fit
        (a concurrent session used them), delivering nothing."""
        yield self.service.submit(envelope("bob@pikaposti.fi", "alice@brev.fi"),
                                  finished_spool())
        yield self.assertFailure(
            self.service.submit(envelope("bob@pikaposti.fi", "postmaster@brev.fi"),
                                finished_spool()), errors.RateLimited)
        self.assertEqual(len(self.service.delivery.delivered), 1)

    @defer.inlineCallbacks
    def test_channels_are_separate(self):
        """Webmail has its own limit and its own count."""
        yield self.service.submit(envelope("bob@pikaposti.fi", "alice@brev.fi"),
                                  finished_spool(), channel="webmail")
        yield self.assertFailure(self.service.reserve_recipient(ALICE, "webmail"),
                                 errors.RateLimited)
        yield self.service.reserve_recipient(ALICE, "smtp", pending=2)

    @defer.inlineCallbacks
    def test_too_many_at_once(self):
        """A request larger than the whole limit says so instead of a time."""
        e = yield self.assertFailure(self.service.reserve_recipient(ALICE, "smtp", pending=5),
                                     errors.RateLimited)
        self.assertIsNone(e.retry_at)
        self.assertIn("fewer recipients", e.text)


class LimitSurvivesRestart(unittest.TestCase):
    @defer.inlineCallbacks
    def test_count_is_in_the_database(self):
        """Recipients counted before a restart still count after it: the
        events are in the service database."""
        path = os.path.join(self.mktemp(), "ktmail.db")
        os.makedirs(os.path.dirname(path))
        clock = task.Clock()
        clock.advance(1000)
        db = Database(path, InlineRunner())
        svc = service(clock, counters=SQLiteStore(db), smtp_recipients_per_hour=2)
        yield svc.submit(envelope("bob@pikaposti.fi", "alice@brev.fi"), finished_spool())
        db.close()
        db = Database(path, InlineRunner())
        self.addCleanup(db.close)
        svc = service(clock, counters=SQLiteStore(db), smtp_recipients_per_hour=2)
        yield self.assertFailure(svc.reserve_recipient(ALICE, "smtp"), errors.RateLimited)
        clock.advance(3600)
        yield svc.reserve_recipient(ALICE, "smtp")


class Routing(unittest.TestCase):
    @defer.inlineCallbacks
    def test_recipients(self):
        """Hosted recipients are checked and lower-cased; remote ones pass
        as written when a queue runs, else OutboundUnavailable."""
        svc = service(task.Clock())
        self.assertEqual((yield svc.check_recipient(ALICE, Address("BOB", "pikaposti.fi"))),
                         BOB.address)
        yield self.assertFailure(svc.check_recipient(ALICE, Address("x", "brev.fi")),
                                 errors.NoSuchMailbox)
        yield self.assertFailure(svc.check_recipient(ALICE, Address("x", "example.org")),
                                 errors.OutboundUnavailable)
        svc = service(task.Clock(), outbound=FakeOutboundQueue())
        self.assertEqual((yield svc.check_recipient(ALICE, Address("X", "example.org"))),
                         Address("X", "example.org"))

    @defer.inlineCallbacks
    def test_split(self):
        """submit queues remote recipients and delivers local ones unscanned."""
        outbound = FakeOutboundQueue()
        svc = service(task.Clock(), outbound=outbound)
        results = yield svc.submit(envelope("friend@example.org", "bob@pikaposti.fi"),
                                   finished_spool())
        self.assertEqual(results, {Address("friend", "example.org"): None, BOB.address: None})
        self.assertEqual(outbound.queued[0].envelope.recipients,
                         (Address("friend", "example.org"),))
        [delivered] = svc.delivery.delivered
        self.assertEqual((delivered.envelope.recipients, delivered.scan_spam),
                         ((BOB.address,), False))

    @defer.inlineCallbacks
    def test_remote_without_queue_fails_those_recipients(self):
        """Without a queue, remote recipients fail temporarily; local ones
        are still delivered."""
        svc = service(task.Clock())
        results = yield svc.submit(envelope("friend@example.org", "bob@pikaposti.fi"),
                                   finished_spool())
        self.assertIsInstance(results[Address("friend", "example.org")],
                              errors.OutboundUnavailable)
        self.assertIsNone(results[BOB.address])

    @defer.inlineCallbacks
    def test_queue_failure_comes_first(self):
        """An unexpected queue failure aborts before anything local is
        stored, so the client's retry duplicates nothing."""
        outbound = FakeOutboundQueue()
        outbound.enqueue = lambda envelope, spool: defer.fail(RuntimeError("disk"))
        svc = service(task.Clock(), outbound=outbound)
        yield self.assertFailure(
            svc.submit(envelope("friend@example.org", "bob@pikaposti.fi"), finished_spool()),
            RuntimeError)
        self.assertEqual(svc.delivery.delivered, [])

    def test_envelope_is_not_mutated(self):
        """submit hands each side its own envelope copy."""
        env = envelope("friend@example.org", "bob@pikaposti.fi")
        svc = service(task.Clock(), outbound=FakeOutboundQueue())
        svc.submit(env, finished_spool())
        self.assertEqual(len(env.recipients), 2)
        self.assertTrue(attrs.has(type(env)))
