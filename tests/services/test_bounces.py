"""AfterDataBounces: recipients that failed after their message was
accepted are reported to the sender in an RFC 3464 DSN, queued with the
null sender; the null sender itself is never answered."""

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.model import Address
from ktmail.services.bounces import AfterDataBounces
from ktmail.services.delivery import Envelope
from tests.protocols.fakes import ALICE, BOB, FakeDeliveryService, FakeOutboundQueue

ORIGINAL = b"From: friend@example.org\r\nSubject: party\r\n\r\nsecret body\r\n"


class AfterDataBouncesTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1795737600)
        self.outbound = FakeOutboundQueue()
        self.delivery = FakeDeliveryService([ALICE, BOB])
        self.bounces = AfterDataBounces(self.outbound, self.delivery, "mx.example.test",
                                        self.clock)

    @defer.inlineCallbacks
    def test_dsn_for_the_failed_recipients(self):
        """The DSN goes from <> to the sender, names each failed recipient
        with its status, quotes the headers but not the body."""
        envelope = Envelope(sender="friend@Example.org", recipients=(ALICE.address, BOB.address),
                            received_at=1795737000)
        queue_id = yield self.bounces.report(
            envelope, {BOB.address: "552 5.2.2 The mailbox is full."}, ORIGINAL)
        self.assertEqual(queue_id, "Q1")
        [queued] = self.outbound.queued
        self.assertEqual(queued.envelope.sender, "")
        self.assertEqual(queued.envelope.recipients, (Address("friend", "example.org"),))
        self.assertIn(b"Final-Recipient: rfc822; bob@pikaposti.fi\r\nAction: failed\r\n"
                      b"Status: 5.2.2", queued.message)
        self.assertIn(b"Subject: party", queued.message)
        self.assertNotIn(b"secret body", queued.message)
        self.assertNotIn(b"alice@brev.fi", queued.message)
        self.assertTrue(self.delivery.spools[0].discarded)

    @defer.inlineCallbacks
    def test_null_sender_gets_nothing(self):
        """A message from <> (itself a DSN) is never answered."""
        envelope = Envelope(sender="", recipients=(BOB.address,))
        result = yield self.bounces.report(envelope, {BOB.address: "552 5.2.2 Full."}, ORIGINAL)
        self.assertIsNone(result)
        self.assertEqual(self.outbound.queued, [])
