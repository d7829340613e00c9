"""Every listener's connection caps (protocols/admission.py): per client
address and in total, the protocol's refusal line, the exempt networks,
and the one ``connection`` event per connection."""

from twisted.internet import protocol, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from ktmail.protocols.admission import (
    Admission,
    AdmissionFactory,
    AdmissionPolicy,
)
from ktmail.protocols.imap.server import ImapContext, IMAPFactory
from ktmail.protocols.pop3 import POP3Factory
from ktmail.web.site import GuardedSite
from tests.protocols.fakes import inbound_factory


class Echo(protocol.Protocol):
    """Says hello when it starts, so that a test can see it started."""

    def connectionMade(self):
        self.transport.write(b"hello\r\n")


def connect(factory, host):
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)
    transport = StringTransport(peerAddress=address)
    proto = factory.buildProtocol(address)
    proto.makeConnection(transport)
    return proto, transport


def close(proto):
    proto.connectionLost(Failure(ConnectionError("closed")))


class AdmissionTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def factory(self, per_client=2, total=5, exempt=("127.0.0.1/32", "::1/128"),
                refusal=lambda per_client: b"NO " + (b"client" if per_client else b"total")):
        self.admission = Admission("imap", AdmissionPolicy(per_client, total, exempt))
        return AdmissionFactory(protocol.Factory.forProtocol(Echo), self.admission,
                                self.clock, refusal)

    def test_per_client_cap(self):
        """The third connection from one address is told the refusal and
        closed, without the protocol ever starting; other addresses get in;
        once one closes, that address may connect again."""
        factory = self.factory()
        first, t1 = connect(factory, "203.0.113.7")
        _second, t2 = connect(factory, "203.0.113.7")
        third, t3 = connect(factory, "203.0.113.7")
        self.assertEqual((t1.value(), t2.value()), (b"hello\r\n", b"hello\r\n"))
        self.assertEqual(t3.value(), b"NO client")
        self.assertTrue(t3.disconnecting)
        close(third)
        _other, t4 = connect(factory, "198.51.100.1")
        self.assertEqual(t4.value(), b"hello\r\n")
        close(first)
        _again, t5 = connect(factory, "203.0.113.7")
        self.assertEqual(t5.value(), b"hello\r\n")
        self.assertEqual(self.admission.open, 3)

    def test_total_cap(self):
        """Past ``total`` open connections everyone is refused, exempt
        addresses included, until one closes."""
        factory = self.factory(per_client=10, total=3)
        opened = [connect(factory, f"192.0.2.{i}") for i in range(3)]
        _, refused = connect(factory, "127.0.0.1")
        self.assertEqual(refused.value(), b"NO total")
        close(opened[0][0])
        _, t = connect(factory, "127.0.0.1")
        self.assertEqual(t.value(), b"hello\r\n")

    def test_exempt_networks(self):
        """127.0.0.1 and ::1 (the host itself: monitoring, a local proxy)
        are not capped per client by default; 127.0.0.2 is, like any other
        address, so tests can play a client that is."""
        factory = self.factory(per_client=1, total=100)
        for _ in range(5):
            self.assertEqual(connect(factory, "127.0.0.1")[1].value(), b"hello\r\n")
            self.assertEqual(connect(factory, "::1")[1].value(), b"hello\r\n")
        connect(factory, "127.0.0.2")
        self.assertEqual(connect(factory, "127.0.0.2")[1].value(), b"NO client")
        none_exempt = self.factory(per_client=1, total=100, exempt=())
        connect(none_exempt, "127.0.0.1")
        self.assertEqual(connect(none_exempt, "127.0.0.1")[1].value(), b"NO client")

    def test_ipv6_clients_count_by_64(self):
        """Addresses in one IPv6 /64 (one customer's network) share a cap;
        another /64 does not."""
        factory = self.factory(per_client=2)
        connect(factory, "2001:db8:1:2::10")
        connect(factory, "2001:db8:1:2::20")
        self.assertEqual(connect(factory, "2001:db8:1:2:ffff::1")[1].value(), b"NO client")
        self.assertEqual(connect(factory, "2001:db8:1:3::1")[1].value(), b"hello\r\n")

    def test_tls_listener_closes_without_a_word(self):
        """On an implicit-TLS listener (refusal None) a refused connection
        is closed before any handshake: nothing is written."""
        factory = self.factory(per_client=1, refusal=None)
        connect(factory, "203.0.113.7")
        _, t = connect(factory, "203.0.113.7")
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)

    def test_one_connection_event_each(self):
        """Each connection ends in one ``connection`` event with the stable
        fields listener, client, outcome and seconds."""
        factory = self.factory(per_client=1)
        first, _ = connect(factory, "203.0.113.7")
        refused, _ = connect(factory, "203.0.113.7")
        close(refused)
        self.clock.advance(12)
        close(first)
        events = [e for e in self.events if e.get("ktmail_event") == "connection"]
        self.assertEqual([(e["listener"], e["client"], e["outcome"], e["seconds"])
                          for e in events],
                         [("imap", "203.0.113.7", "refused-client", 0),
                          ("imap", "203.0.113.7", "closed", 12)])

    def test_policy_validation_of_exempt_entries(self):
        """Exempt entries are networks; IPv4-mapped IPv6 clients count as
        their IPv4 address."""
        policy = AdmissionPolicy(1, 1, ("10.0.0.0/8",))
        self.assertTrue(policy.is_exempt("10.1.2.3"))
        self.assertTrue(policy.is_exempt("::ffff:10.1.2.3"))
        self.assertFalse(policy.is_exempt("11.0.0.1"))
        self.assertFalse(policy.is_exempt("not an address"))


class RefusalTexts(unittest.TestCase):
    """What each plain-text protocol says to a refused client."""

    def test_imap(self):
        """IMAP: an untagged BYE greeting (RFC 3501 §7.1.5) with [UNAVAILABLE]."""
        factory = IMAPFactory(ImapContext(auth=None, mailboxes=None, new_spool=None,
                                          run_in_thread=None, clock=task.Clock()))
        self.assertEqual(factory.refusal(True), b"* BYE [UNAVAILABLE] Too many connections "
                                                b"from your address; try again later.\r\n")

    def test_pop3(self):
        """POP3: -ERR [SYS/TEMP] (RFC 3206)."""
        factory = POP3Factory(None, None, task.Clock(), "mx.example.test")
        self.assertTrue(factory.refusal(False).startswith(b"-ERR [SYS/TEMP] "))

    def test_web(self):
        """The web: a whole HTTP 503 answer with Retry-After."""
        site = GuardedSite(None)
        answer = site.refusal(True)
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertIn(b"Retry-After: 60\r\n", answer)
        head, body = answer.split(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d" % len(body), head)

    def test_smtp(self):
        """SMTP: 421 4.7.0 with the host name (RFC 5321 §3.8)."""
        self.assertTrue(inbound_factory().refusal(True).startswith(
            b"421 4.7.0 mx.example.test Too many connections"))
