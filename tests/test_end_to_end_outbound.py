"""End to end: a real ``twistd -n ktmail`` with ``[relay] smarthost``
pointing at a loopback fake remote server delivers, DKIM-signed, a message
that was put in its queue by ``OutboundQueue.enqueue`` in another process
(this one), the way submission will; ``ktmail-admin``-style changes reach
the daemon through the queue's change token."""

import os
import signal
import sys

import dkim
from twisted.internet import defer, reactor, task
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
    timeout = 90

    @defer.inlineCallbacks
    def test_queued_message_reaches_the_smarthost_signed(self):
        """The daemon picks up a newly queued message within seconds, sends
        it to the smarthost, the signature verifies, and the queue empties."""
        mx = FakeMX(name="relay.example")
        port = yield mx.listen(self)
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        config = os.path.join(root, "ktmail.ini")
        with open(config, "w") as f:
            f.write(CONFIG.format(port=port))
        data_dir = os.path.join(root, "data")

        daemon = _Daemon()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        process = reactor.spawnProcess(
            daemon, twistd, [twistd, "-n", "--pidfile=", "ktmail", "--config", config],
            env=dict(os.environ), path=os.path.dirname(os.path.dirname(__file__)))

        @defer.inlineCallbacks
        def stop():
            if daemon.ended.called:
                return
            process.signalProcess(signal.SIGTERM)
            yield daemon.ended
        self.addCleanup(stop)
        yield wait_for(lambda: b"outbound queue: empty" in daemon.output, "the daemon to start")

        store = DiskQueueStore(data_dir, InlineRunner())
        keys = DiskDkimKeyStore(data_dir, InlineRunner())
        signer = DkimSigner(keys, InlineRunner(), reactor, ["sboksi.fi"], "mail.ktnet.fi")
        queue = OutboundQueue(store, signer, None, None, None, reactor, "mail.ktnet.fi",
                              ["sboksi.fi"])
        spool = FakeSpool(os.path.join(root, "spool"))
        spool.write(MESSAGE)
        yield spool.finish()
        queue_id = yield queue.enqueue(
            FakeEnvelope("anna@sboksi.fi", (Address.parse("bob@example.net"),)), spool)
        spool.discard()
        yield store.notify_changed()

        yield wait_for(lambda: mx.messages, "the smarthost to receive the message")
        [got] = mx.messages
        self.assertEqual(got["rcpts"], ["bob@example.net"])
        _, txt = yield keys.public_record("sboksi.fi")
        self.assertTrue(dkim.verify(got["data"], dnsfunc=lambda n, timeout=5: txt.encode()))
        yield wait_for(lambda: not store.list_entries().result, "the queue to empty")
        yield wait_for(lambda: b"done: 1 delivered" in daemon.output, "the log line")
        self.assertIn(f"{queue_id} to <bob@example.net>: delivered".encode(), daemon.output)
        self.assertIn(b"SMTP to 127.0.0.1 [127.0.0.1]: plaintext (STARTTLS not offered)",
                      daemon.output)
        yield stop()
