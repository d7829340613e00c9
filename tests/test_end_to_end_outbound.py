"""End to end: a real ``twistd -n ktmail`` with ``[relay] smarthost``
pointing at a loopback fake remote server delivers, DKIM-signed, a message
that was put in its queue by ``OutboundQueue.enqueue`` in another process
(this one), the way submission will; ``ktmail-admin``-style changes reach
the daemon through the queue's change token."""

import os
import signal
import sys

import dkim
from twisted.internet import defer, reactor, task, utils
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from ktmail.model import Address
from ktmail.services.dkim import DkimSigner
from ktmail.services.outbound import OutboundQueue
from ktmail.store.dkimkeys import DiskDkimKeyStore
from ktmail.store.queue import DiskQueueStore
from ktmail.store.sqlite import InlineRunner
from tests.fake_mx import FakeMX
from tests.services.test_outbound import MESSAGE, FakeEnvelope, FakeSpool

CONFIG = """\
[ktmail]
hostname = mail.ktnet.fi
data_dir = data
[listen]
smtp =
submission =
imap =
pop3 =
web =
[relay]
smarthost = 127.0.0.1:{port}
"""


class _Daemon(ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


@defer.inlineCallbacks
def wait_for(condition, what, timeout=30.0):
    for _ in range(int(timeout * 10)):
        if condition():
            return
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class OutboundEndToEndTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.mx = FakeMX(name="relay.example")
        port = yield self.mx.listen(self)
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(self.root)
        self.config = os.path.join(self.root, "ktmail.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(port=port))
        self.data_dir = os.path.join(self.root, "data")
        self.store = DiskQueueStore(self.data_dir, InlineRunner())
        self.keys = DiskDkimKeyStore(self.data_dir, InlineRunner())

    @defer.inlineCallbacks
    def start_daemon(self):
        """``twistd -n ktmail``; fires once its queue scheduler has started."""
        daemon = _Daemon()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        daemon.process = reactor.spawnProcess(
            daemon, twistd, [twistd, "-n", "--pidfile=", "ktmail", "--config", self.config],
            env=dict(os.environ), path=os.path.dirname(os.path.dirname(__file__)))
        self.addCleanup(self.kill, daemon, signal.SIGTERM)
        yield wait_for(lambda: b"outbound queue: " in daemon.output, "the daemon to start")
        return daemon

    @defer.inlineCallbacks
    def kill(self, daemon, signo):
        if not daemon.ended.called:
            daemon.process.signalProcess(signo)
            yield daemon.ended

    @defer.inlineCallbacks
    def enqueue(self):
        """What submission does: OutboundQueue.enqueue, from another process."""
        signer = DkimSigner(self.keys, InlineRunner(), reactor, ["sboksi.fi"], "mail.ktnet.fi")
        queue = OutboundQueue(self.store, signer, None, None, None, reactor, "mail.ktnet.fi",
                              ["sboksi.fi"])
        spool = FakeSpool(os.path.join(self.root, "spool"))
        spool.write(MESSAGE)
        yield spool.finish()
        queue_id = yield queue.enqueue(
            FakeEnvelope("anna@sboksi.fi", (Address.parse("bob@example.net"),)), spool)
        spool.discard()
        yield self.store.notify_changed()
        return queue_id

    @defer.inlineCallbacks
    def test_queued_message_reaches_the_smarthost_signed(self):
        """The daemon picks up a newly queued message within seconds, sends
        it to the smarthost, the signature verifies, and the queue empties."""
        daemon = yield self.start_daemon()
        queue_id = yield self.enqueue()
        yield wait_for(lambda: self.mx.messages, "the smarthost to receive the message")
        [got] = self.mx.messages
        self.assertEqual(got["rcpts"], ["bob@example.net"])
        _, txt = yield self.keys.public_record("sboksi.fi")
        self.assertTrue(dkim.verify(got["data"], dnsfunc=lambda n, timeout=5: txt.encode()))
        yield wait_for(lambda: not self.store.list_entries().result, "the queue to empty")
        yield wait_for(lambda: b"done: 1 delivered" in daemon.output, "the log line")
        self.assertIn(f"{queue_id} to <bob@example.net>: delivered".encode(), daemon.output)
        self.assertIn(b"SMTP to 127.0.0.1 [127.0.0.1]: plaintext (STARTTLS not offered)",
                      daemon.output)

    @defer.inlineCallbacks
    def test_kill_9_then_operator_retry(self):
        """A message the smarthost deferred survives kill -9 of the daemon;
        after a restart, `ktmail-admin queue retry` makes the new daemon
        deliver it at once, exactly once."""
        self.mx.rcpt_replies["bob@example.net"] = [b"451 4.3.0 Try again later", b"250 ok"]
        daemon = yield self.start_daemon()
        queue_id = yield self.enqueue()

        def deferred_once():
            entries = self.store.list_entries().result
            return entries and entries[0].recipient("bob@example.net").attempts == 1
        yield wait_for(deferred_once, "the first, deferred attempt")
        yield self.kill(daemon, signal.SIGKILL)

        yield self.start_daemon()
        admin = yield utils.getProcessOutputAndValue(
            sys.executable, ["-m", "ktmail.cli", "--config", self.config, "queue", "retry",
                             queue_id], env=dict(os.environ))
        self.assertEqual(admin, (b"1 message(s) will be tried again within seconds\n", b"", 0))
        yield wait_for(lambda: self.mx.messages, "the retried delivery")
        yield wait_for(lambda: not self.store.list_entries().result, "the queue to empty")
        self.assertEqual(len(self.mx.messages), 1)
