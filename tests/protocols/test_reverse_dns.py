"""ReverseDNS: a PTR name is used only when it resolves back to the
client's address; failures and loopback give None; answers are cached."""

from twisted.internet import defer, task
from twisted.names import dns, error
from twisted.trial import unittest

from ktmail.protocols.reverse_dns import ReverseDNS


class FakeResolver:
    def __init__(self, ptr=None, a=None, aaaa=None):
        self.ptr, self.a, self.aaaa = ptr or {}, a or {}, aaaa or {}
        self.queries = []

    def _answer(self, table, name, make):
        self.queries.append(name)
        if name not in table:
            return defer.fail(error.DNSNameError(name))
        records = [make(v) for v in table[name]]
        return defer.succeed(([dns.RRHeader(name, type=r.TYPE, payload=r) for r in records],
                              [], []))

    def lookupPointer(self, name):
        return self._answer(self.ptr, name, lambda v: dns.Record_PTR(v))

    def lookupAddress(self, name):
        return self._answer(self.a, name, lambda v: dns.Record_A(v))

    def lookupIPV6Address(self, name):
        return self._answer(self.aaaa, name, lambda v: dns.Record_AAAA(v))


class ReverseDNSTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.resolver = FakeResolver(
            ptr={"7.113.0.203.in-addr.arpa": ["Mail.Example.org."],
                 "8.113.0.203.in-addr.arpa": ["liar.example.org"],
                 "9.113.0.203.in-addr.arpa": ["bad name (x)"],
                 "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa":
                     ["v6.example.org"]},
            a={"mail.example.org": ["203.0.113.7"], "liar.example.org": ["192.0.2.1"]},
            aaaa={"v6.example.org": ["2001:db8::7"]})
        self.rdns = ReverseDNS(self.resolver, self.clock)

    def name(self, ip):
        return self.successResultOf(self.rdns(ip))

    def test_confirmed_name(self):
        """A PTR name whose A record is the client's address is returned, lower-case."""
        self.assertEqual(self.name("203.0.113.7"), "mail.example.org")
        self.assertEqual(self.name("2001:db8::7"), "v6.example.org")

    def test_unconfirmed_or_odd_names(self):
        """A PTR name pointing elsewhere, a malformed one, or none: None."""
        self.assertIsNone(self.name("203.0.113.8"))
        self.assertIsNone(self.name("203.0.113.9"))
        self.assertIsNone(self.name("198.51.100.1"))
        self.assertIsNone(self.name("not an ip"))

    def test_loopback_not_looked_up(self):
        """Loopback clients cost no query."""
        self.assertIsNone(self.name("127.0.0.1"))
        self.assertEqual(self.resolver.queries, [])

    def test_cache(self):
        """A second connection within the hour asks no question; later it does."""
        self.name("203.0.113.7")
        asked = len(self.resolver.queries)
        self.name("203.0.113.7")
        self.assertEqual(len(self.resolver.queries), asked)
        self.clock.advance(3601)
        self.name("203.0.113.7")
        self.assertGreater(len(self.resolver.queries), asked)
