"""The outbound queue end to end inside one process: enqueue -> scheduler
(task.Clock) -> MX routing (stub resolver) -> the real SMTP client over
loopback -> a scripted fake remote MX; DSNs to a fake local mailbox."""

import email
import os

import attrs
import dkim
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail import errors
from ktmail.model import Address
from ktmail.protocols.smtp_client import SMTPDeliveryClient
from ktmail.services.dkim import DkimSigner
from ktmail.services.outbound import (
    BUSY,
    DeliveryServiceBounces,
    OutboundQueue,
    OutboundScheduler,
    RetryPolicy,
)
from ktmail.services.routing import MXRouter
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.queue import DiskQueueStore
from ktmail.store.sqlite import InlineRunner
from tests.fake_mx import FakeMX, LoopbackEndpoints, StubResolver

HOST = "mail.ktnet.fi"
DOMAINS = ("sboksi.fi", "minmail.fi")
START = 1_700_000_000.0
MESSAGE = (b"From: Anna <anna@sboksi.fi>\r\nTo: bob@example.net\r\nSubject: Hello\r\n"
           b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <m1@sboksi.fi>\r\n\r\n"
           b"Hi Bob,\r\n.a line with a leading dot\r\nbye\r\n")
_KEYS = {}


@attrs.frozen
class FakeEnvelope:
    sender: str
    recipients: tuple
    received_at: float = 0.0


class FakeSpool:
    """The Spool API of INTERFACES.md over a plain file."""

    def __init__(self, path):
        self.path = path
        self.size = 0
        self._file = open(path, "wb")

    def write(self, data):
        self._file.write(data)
        self.size += len(data)

    def finish(self):
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return defer.succeed(None)

    def discard(self):
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class LocalMailboxes:
    """The injected deliver_local: records DSNs delivered to our users."""

    def __init__(self):
        self.delivered = []   # (Address, bytes)
        self.errors = {}      # address -> KtmailError to raise

    def __call__(self, recipient, message_file):
        if str(recipient) in self.errors:
            return defer.fail(self.errors[str(recipient)])
        self.delivered.append((recipient, message_file.read()))
        return defer.succeed(None)

    def reports(self):
        return [email.message_from_bytes(data) for _, data in self.delivered]


class Harness:
    """Builds the queue, the scheduler and their collaborators over one data dir."""

    def __init__(self, testcase, data_dir, clock, resolver, endpoints, smarthost=None,
                 local=None, mta_sts=None, trust_store=None):
        self.testcase = testcase
        self.clock = clock
        self.store = DiskQueueStore(data_dir, InlineRunner())
        self.keys = DiskDkimKeyStore(data_dir, InlineRunner())
        self._reuse_key(data_dir)
        signer = DkimSigner(self.keys, InlineRunner(), clock, DOMAINS, HOST)
        self.local = local or LocalMailboxes()
        self.endpoints = endpoints
        self.client = SMTPDeliveryClient(endpoints, clock, HOST, trust_store=trust_store)
        self.queue = OutboundQueue(
            self.store, signer, MXRouter(resolver, smarthost, shuffle=lambda hosts: None),
            self.client, self.local, clock, HOST, DOMAINS, mta_sts=mta_sts)
        self.scheduler = OutboundScheduler(self.queue, clock)
        self.scheduler.startService()
        testcase.addCleanup(self.stop)

    def _reuse_key(self, data_dir):
        """Generating RSA keys is slow: every test shares one key per domain."""
        path = os.path.join(data_dir, "dkim", "sboksi.fi.ktmail.pem")
        if "sboksi.fi" in _KEYS and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(_KEYS["sboksi.fi"])

    @defer.inlineCallbacks
    def stop(self):
        yield self.scheduler.when_idle()
        if self.scheduler.running:
            yield self.scheduler.stopService()
        yield self.client.idle()

    @defer.inlineCallbacks
    def enqueue(self, recipients, message=MESSAGE, sender="anna@sboksi.fi"):
        path = self.testcase.mktemp()
        spool = FakeSpool(path)
        spool.write(message)
        yield spool.finish()
        queue_id = yield self.queue.enqueue(
            FakeEnvelope(sender, tuple(Address.parse(r) for r in recipients)), spool)
        spool.discard()
        if "sboksi.fi" not in _KEYS:
            _KEYS["sboksi.fi"] = (yield self.keys.private_key("sboksi.fi"))[1]
        return queue_id

    @defer.inlineCallbacks
    def advance(self, seconds):
        """Let ``seconds`` pass, in steps, finishing every round that falls due."""
        yield self.scheduler.when_idle()
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            pending = [c.getTime() for c in self.clock.getDelayedCalls()
                       if c.getTime() <= end]
            step = (min(pending) if pending else end) - self.clock.seconds()
            self.clock.advance(max(step, 0))
            yield self.scheduler.when_idle()
            if not pending:
                break

    def entries(self):
        return self.store.list_entries()


class OutboundTestCase(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(START)
        self.mx = FakeMX()
        port = yield self.mx.listen(self)
        self.resolver = StubResolver(mx={"example.net": [(10, "mx.example.net")]},
                                     a={"mx.example.net": ["192.0.2.10"]})
        self.endpoints = LoopbackEndpoints({"192.0.2.10": port})
        self.h = self.harness()

    def harness(self, **kwargs):
        return Harness(self, self.data_dir, self.clock, self.resolver, self.endpoints, **kwargs)


class DeliveryTests(OutboundTestCase):
    @defer.inlineCallbacks
    def test_delivered_first_try(self):
        """A queued message reaches the recipient's MX at once, DKIM-signed,
        with SIZE= and 8BITMIME as offered; then it leaves the queue."""
        queue_id = yield self.h.enqueue(["bob@example.net"])
        self.assertRegex(queue_id, r"^[0-9a-f]{16}$")
        yield self.h.scheduler.when_idle()
        self.assertEqual(len(self.mx.messages), 1)
        got = self.mx.messages[0]
        self.assertEqual(got["rcpts"], ["bob@example.net"])
        self.assertEqual(got["mail_from"], f"<anna@sboksi.fi> SIZE={len(got['data'])}")
        self.assertTrue(got["data"].startswith(b"DKIM-Signature: v=1; a=rsa-sha256"))
        self.assertTrue(got["data"].endswith(MESSAGE))
        self.assertEqual((yield self.h.entries()), [])
        self.assertEqual(self.h.local.delivered, [])

    @defer.inlineCallbacks
    def test_signature_verifies_at_the_remote(self):
        """What the remote MX received verifies with dkimpy against the
        TXT record that `ktmail-admin dkim show` prints."""
        yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        name, txt = yield self.h.keys.public_record("sboksi.fi")

        def dnsfunc(domain, timeout=5):
            self.assertEqual(domain, f"{name}.".encode())
            return txt.encode()
        self.assertTrue(dkim.verify(self.mx.messages[0]["data"], dnsfunc=dnsfunc))

    @defer.inlineCallbacks
    def test_eight_bit_message_declares_body(self):
        """A message with 8-bit bytes goes with BODY=8BITMIME when offered."""
        yield self.h.enqueue(["bob@example.net"], MESSAGE + "Grüße\r\n".encode())
        yield self.h.scheduler.when_idle()
        self.assertIn("BODY=8BITMIME", self.mx.messages[0]["mail_from"])

    @defer.inlineCallbacks
    def test_temporary_failure_then_success(self):
        """A 4xx is retried after 5 minutes (task.Clock), then delivered."""
        self.mx.rcpt_replies["bob@example.net"] = [b"451 4.7.1 Greylisted, come back later",
                                                   b"250 2.1.5 Ok"]
        queue_id = yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(self.mx.messages, [])
        [entry] = yield self.h.entries()
        rcpt = entry.recipient("bob@example.net")
        self.assertEqual((rcpt.state, rcpt.attempts), ("pending", 1))
        self.assertEqual(rcpt.last_error, "451 4.7.1 Greylisted, come back later")
        self.assertEqual(rcpt.next_attempt, START + 300)
        yield self.h.advance(299)
        self.assertEqual(self.mx.messages, [])
        yield self.h.advance(1)
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual((yield self.h.entries()), [])
        self.assertEqual(self.h.local.delivered, [])
        self.assertTrue(queue_id)

    @defer.inlineCallbacks
    def test_permanent_failure_gives_one_dsn(self):
        """A 5xx for two recipients gives exactly one DSN to the sender, with
        the remote's reply in it; the third recipient is delivered."""
        self.mx.rcpt_replies["nobody@example.net"] = b"550 5.1.1 <nobody@example.net>: no such user"
        self.mx.rcpt_replies["gone@example.net"] = b"550 5.1.1 <gone@example.net>: no such user"
        yield self.h.enqueue(["bob@example.net", "nobody@example.net", "gone@example.net"])
        yield self.h.advance(3600)
        self.assertEqual(self.mx.messages[0]["rcpts"], ["bob@example.net"])
        self.assertEqual(len(self.h.local.delivered), 1)
        recipient, data = self.h.local.delivered[0]
        self.assertEqual(recipient, Address("anna", "sboksi.fi"))
        report = self.h.local.reports()[0]
        self.assertEqual(report["From"], f"Mail Delivery System <MAILER-DAEMON@{HOST}>")
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        _, status, headers = report.get_payload()
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        blocks = [b for b in status.get_payload()[1:]]
        self.assertEqual([b["Final-Recipient"] for b in blocks],
                         ["rfc822; nobody@example.net", "rfc822; gone@example.net"])
        self.assertEqual(blocks[0]["Action"], "failed")
        self.assertEqual(blocks[0]["Status"], "5.1.1")
        self.assertEqual(blocks[0]["Remote-MTA"], "dns; mx.example.net")
        self.assertEqual(blocks[0]["Diagnostic-Code"],
                         "smtp; 550 5.1.1 <nobody@example.net>: no such user")
        self.assertEqual(headers.get_content_type(), "text/rfc822-headers")
        self.assertIn(b"Subject: Hello", data)
        self.assertNotIn(b"Hi Bob", data)   # headers only, not the body
        self.assertEqual((yield self.h.entries()), [])

    @defer.inlineCallbacks
    def test_rejected_data_fails_all_accepted(self):
        """A 5xx to the end of DATA fails every accepted recipient."""
        self.mx.data_reply = b"554 5.7.1 Message rejected as spam"
        yield self.h.enqueue(["bob@example.net", "carl@example.net"])
        yield self.h.advance(60)
        [report] = self.h.local.reports()
        self.assertEqual(report.as_bytes().count(b"554 5.7.1 Message rejected as spam"), 4)

    @defer.inlineCallbacks
    def test_null_sender_never_bounced(self):
        """A message from the null sender (a DSN) that fails is dropped
        with a log line, never bounced."""
        self.mx.rcpt_replies["bob@example.net"] = b"550 5.1.1 no such user"
        yield self.h.enqueue(["bob@example.net"], sender="")
        yield self.h.advance(3600)
        self.assertEqual(self.h.local.delivered, [])
        self.assertEqual((yield self.h.entries()), [])

    @defer.inlineCallbacks
    def test_five_days_of_temporary_failures(self):
        """Five days of 451: one delay notice after 4 hours, back-off 5, 10,
        20, 40 minutes then hourly, and at 5 days one expiry DSN."""
        self.mx.rcpt_replies["bob@example.net"] = b"451 4.3.0 Mailbox temporarily unavailable"
        yield self.h.enqueue(["bob@example.net"])
        yield self.h.advance(4 * 3600 - 1)
        self.assertEqual(self.h.local.delivered, [])
        yield self.h.advance(3600)
        [notice] = self.h.local.reports()
        self.assertEqual(notice["Subject"], "Delayed Mail (still being retried)")
        block = notice.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Action"], "delayed")
        self.assertIn("Will-Retry-Until", block)
        yield self.h.advance(5 * 86400 - 5 * 3600 - 60)
        self.assertEqual(len(self.h.local.delivered), 1)
        self.assertEqual(len((yield self.h.entries())), 1)
        yield self.h.advance(2 * 3600)
        self.assertEqual(len(self.h.local.delivered), 2)
        expiry = self.h.local.reports()[1]
        self.assertEqual(expiry["Subject"], "Undelivered Mail Returned to Sender")
        block = expiry.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Action"], "failed")
        self.assertEqual(block["Status"], "4.4.7")
        self.assertEqual(block["Diagnostic-Code"],
                         "smtp; 451 4.3.0 Mailbox temporarily unavailable")
        self.assertEqual((yield self.h.entries()), [])
        rcpts = [c for c in self.mx.commands if c.startswith(b"RCPT")]
        # 5+10+20+40 min, then hourly until 5 days: 4 + ~119 + the first try
        self.assertEqual(len(rcpts), 1 + 4 + (5 * 86400 - 75 * 60) // 3600 + 1)
        self.assertEqual(self.mx.messages, [])

    @defer.inlineCallbacks
    def test_restart_resumes_without_redelivery(self):
        """After a restart (new objects over the same queue directory) the
        recipient still pending is delivered and the one the remote had
        already accepted is not sent again."""
        other = FakeMX(name="mx.example.org")
        other_port = yield other.listen(self)
        self.resolver.mx["example.org"] = [(10, "mx.example.org")]
        self.resolver.a["mx.example.org"] = ["192.0.2.20"]
        self.endpoints.routes["192.0.2.20"] = other_port
        other.rcpt_replies["eve@example.org"] = [b"421 4.3.2 Shutting down", b"250 ok"]
        yield self.h.enqueue(["bob@example.net", "eve@example.org"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual(other.messages, [])
        yield self.h.stop()

        restarted = self.harness()
        yield restarted.scheduler.when_idle()
        yield restarted.advance(300)
        self.assertEqual(len(other.messages), 1)
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual((yield restarted.entries()), [])

    @defer.inlineCallbacks
    def test_retry_now(self):
        """retry_now makes a waiting recipient due at once; the running
        scheduler notices the change token and delivers."""
        self.mx.rcpt_replies["bob@example.net"] = [b"451 4.3.0 later", b"250 ok"]
        queue_id = yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        changed = yield self.h.queue.retry_now(queue_id)
        self.assertEqual(changed, 1)
        yield self.h.advance(5)   # one rescan interval, far less than the back-off
        self.assertEqual(len(self.mx.messages), 1)
        yield self.assertFailure(self.h.queue.retry_now("0123456789abcdef"), errors.NotFound)


class ConnectionLimitTests(OutboundTestCase):
    @defer.inlineCallbacks
    def test_at_most_two_sessions_per_destination(self):
        """Six messages to one slow domain: never more than two sessions to
        it at once, and all six are delivered."""
        self.mx.data_delay = 0.05
        for n in range(6):
            yield self.h.enqueue([f"user{n}@example.net"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(len(self.mx.messages), 6)
        self.assertEqual(self.mx.most_open_sessions, 2)


class RoutingTests(OutboundTestCase):
    @defer.inlineCallbacks
    def test_null_mx_bounces_at_once(self):
        """A domain with a null MX (RFC 7505) fails at once with 556 5.1.10,
        without any connection."""
        self.resolver.mx["nomail.example"] = [(0, b"")]
        yield self.h.enqueue(["x@nomail.example"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(self.endpoints.attempts, [])
        [report] = self.h.local.reports()
        block = report.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Status"], "5.1.10")
        self.assertIn("null MX", block["Diagnostic-Code"])
        self.assertEqual((yield self.h.entries()), [])

    @defer.inlineCallbacks
    def test_mx_fallback_in_preference_order(self):
        """Within one attempt every MX is tried in preference order: the
        first refuses connections, the second answers 421, the third takes
        the message."""
        third = FakeMX(name="mx3.example.com")
        second = FakeMX(name="mx2.example.com")
        second.greeting = b"421 4.3.2 Too busy"
        self.resolver.mx["example.com"] = [(30, "mx3.example.com"), (10, "mx1.example.com"),
                                           (20, "mx2.example.com")]
        self.resolver.a.update({"mx1.example.com": ["192.0.2.1"],
                                "mx2.example.com": ["192.0.2.2"],
                                "mx3.example.com": ["192.0.2.3"]})
        self.endpoints.routes["192.0.2.2"] = yield second.listen(self)
        self.endpoints.routes["192.0.2.3"] = yield third.listen(self)
        yield self.h.enqueue(["dan@example.com"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(self.endpoints.attempts, ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        self.assertEqual(len(third.messages), 1)
        self.assertEqual((yield self.h.entries()), [])

    @defer.inlineCallbacks
    def test_no_mx_falls_back_to_address(self):
        """A domain without MX records gets mail at its own A record
        (RFC 5321 §5.1 implicit MX)."""
        self.resolver.a["example.net"] = ["192.0.2.10"]
        del self.resolver.mx["example.net"]
        yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(len(self.mx.messages), 1)
        self.assertIn(("A", "example.net"), self.resolver.queries)

    @defer.inlineCallbacks
    def test_nonexistent_domain_bounces(self):
        """A domain that does not exist fails permanently (5.1.2)."""
        yield self.h.enqueue(["x@no-such-domain.example"])
        yield self.h.scheduler.when_idle()
        [report] = self.h.local.reports()
        self.assertEqual(report.get_payload()[1].get_payload()[1]["Status"], "5.1.2")

    @defer.inlineCallbacks
    def test_dns_trouble_is_temporary(self):
        """A DNS time-out is retried, not bounced."""
        self.resolver.fail.add("example.net")
        yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        [entry] = yield self.h.entries()
        self.assertIn("4.4.3", entry.recipient("bob@example.net").last_error)
        self.resolver.fail.clear()
        yield self.h.advance(300)
        self.assertEqual(len(self.mx.messages), 1)

    @defer.inlineCallbacks
    def test_smarthost_takes_everything(self):
        """With [relay] smarthost, every recipient goes there in one
        session, whatever their domains' MX."""
        yield self.h.stop()
        relay = FakeMX(name="relay.isp.example")
        self.endpoints.routes["198.51.100.7"] = yield relay.listen(self)
        h = self.harness(smarthost=("198.51.100.7", 2525))
        yield h.enqueue(["bob@example.net", "eve@example.org"])
        yield h.scheduler.when_idle()
        self.assertEqual(relay.sessions, 1)
        self.assertEqual(relay.messages[0]["rcpts"], ["bob@example.net", "eve@example.org"])
        self.assertEqual(self.mx.messages, [])


class RetryPolicyTests(unittest.TestCase):
    def test_back_off(self):
        """5 minutes doubling to an hour, then hourly, never past 5 days."""
        p = RetryPolicy()
        waits = [p.retry_at(n, 0, 0) for n in range(1, 8)]
        self.assertEqual(waits, [300, 600, 1200, 2400, 3600, 3600, 3600])
        self.assertEqual(p.retry_at(50, 5 * 86400 - 10, 0), 5 * 86400)


class LocalDSNAdapterTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_adapter_spools_and_delivers_without_spam_scan(self):
        """DeliveryServiceBounces copies the DSN into a spool and calls
        DeliveryService.deliver with scan_spam=False; a per-recipient
        error is raised."""
        import io
        calls = []
        test = self

        class FakeDelivery:
            def new_spool(self):
                return FakeSpool(test.mktemp())

            def deliver(self, envelope, spool, scan_spam=True):
                with open(spool.path, "rb") as f:
                    calls.append((envelope, f.read(), scan_spam))
                rcpt = envelope.recipients[0]
                return defer.succeed({rcpt: None if rcpt.local == "anna"
                                      else errors.NoSuchMailbox()})

        adapter = DeliveryServiceBounces(
            FakeDelivery(), lambda r: FakeEnvelope(sender="", recipients=(r,)))
        yield adapter(Address("anna", "sboksi.fi"), io.BytesIO(b"DSN"))
        self.assertEqual(calls, [(FakeEnvelope("", (Address("anna", "sboksi.fi"),)),
                                  b"DSN", False)])
        yield self.assertFailure(adapter(Address("gone", "sboksi.fi"), io.BytesIO(b"x")),
                                 errors.NoSuchMailbox)


class SharedQueueTests(OutboundTestCase):
    """Two nodes' schedulers over one queue directory (a shared file system)."""

    @defer.inlineCallbacks
    def test_an_entry_another_node_is_delivering_is_left_to_it(self):
        """While another node holds an entry's claim (its round runs), this
        node's round gives way (BUSY) and looks again a minute later: the
        message is sent exactly once."""
        other_node = DiskQueueStore(self.data_dir, InlineRunner())
        yield self.h.scheduler.when_idle()
        # the other node's round claims every entry as soon as it appears
        held = []
        original_add = self.h.store._add

        def add_and_claim_elsewhere(entry, write_message):
            original_add(entry, write_message)
            held.append(other_node._claim(entry.id))
        self.h.store._add = add_and_claim_elsewhere
        queue_id = yield self.h.enqueue(["bob@example.net"])
        yield self.h.scheduler.when_idle()
        self.assertEqual(self.mx.messages, [])
        self.assertEqual((yield self.h.queue.attempt(queue_id)), BUSY)
        self.assertEqual([e.id for e in (yield self.h.entries())], [queue_id])
        yield held[0].release()
        yield self.h.advance(60)
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual((yield self.h.entries()), [])
