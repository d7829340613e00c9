"""MTA-STS (RFC 8461) in the outbound queue, end to end inside one
process: stub resolver (MX, A, TXT), stub HTTPS fetcher, task.Clock, the
real SMTP client over loopback to a fake MX whose certificate comes from a
test CA injected as the client's trust store."""

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from ktmail.model import PENDING
from ktmail.services.mtasts import PolicyResolver
from ktmail.store.mtasts import DiskMTASTSCache
from ktmail.store.sqlite import InlineRunner
from tests.fake_mx import FakeMX, LoopbackEndpoints, StubResolver
from tests.services.test_mtasts import StubFetcher
from tests.services.test_outbound import START, Harness
from tests.tls_ca import TestCA

URL = "https://mta-sts.example.net/.well-known/mta-sts.txt"
TXT = {"_mta-sts.example.net": ["v=STSv1; id=20240101"]}


def policy(mode, *mx, max_age=86400):
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx]
    return ("\r\n".join(lines + [f"max_age: {max_age}"]) + "\r\n").encode()


class MTASTSDeliveryTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(START)
        self.ca = TestCA(self.mktemp())
        self.mx = FakeMX(tls_context=self.ca.server_options("mx.example.net"))
        port = yield self.mx.listen(self)
        self.resolver = StubResolver(mx={"example.net": [(10, "mx.example.net")]},
                                     a={"mx.example.net": ["192.0.2.10"]}, txt=dict(TXT))
        self.endpoints = LoopbackEndpoints({"192.0.2.10": port})
        self.fetcher = StubFetcher({URL: policy("enforce", "*.example.net")})
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def harness(self, **kwargs):
        policies = PolicyResolver(self.resolver, self.fetcher,
                                  DiskMTASTSCache(self.data_dir, InlineRunner()), self.clock)
        return Harness(self, self.data_dir, self.clock, self.resolver, self.endpoints,
                       mta_sts=policies, trust_store=self.ca.ca_path, **kwargs)

    def logged(self, key):
        return [e[key] for e in self.events if key in e]

    @defer.inlineCallbacks
    def deliver_once(self, **kwargs):
        h = self.harness(**kwargs)
        yield h.enqueue(["bob@example.net"])
        yield h.scheduler.when_idle()
        return h, (yield h.entries())

    @defer.inlineCallbacks
    def test_no_txt_record_delivers_as_before(self):
        """No _mta-sts record: delivered as before (opportunistic; here
        even over an unverifiable certificate), logged as mta-sts=absent."""
        del self.resolver.txt["_mta-sts.example.net"]
        self.mx.tls_context = TestCA(self.mktemp()).server_options("mx.example.net")
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual(self.fetcher.urls, [])
        self.assertEqual(self.logged("mta_sts"), ["absent"])

    @defer.inlineCallbacks
    def test_enforce_matching_mx_with_verified_tls(self):
        """enforce + an MX the policy names + a certificate that verifies:
        delivered over TLS."""
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(len(self.mx.messages), 1)
        self.assertTrue(self.mx.messages[0]["tls"])
        self.assertEqual(self.fetcher.urls, [URL])
        self.assertEqual(self.logged("mta_sts"), ["enforce"])
        self.assertTrue(any(s.startswith("verified") for s in self.logged("status")))

    @defer.inlineCallbacks
    def test_enforce_no_matching_mx_defers(self):
        """enforce + no MX host matching the policy: nobody is contacted;
        the recipient is deferred (4xx) with the reason, and retried."""
        self.fetcher.bodies[URL] = policy("enforce", "mx.elsewhere.example")
        _, [entry] = yield self.deliver_once()
        self.assertEqual(self.endpoints.attempts, [])
        [r] = entry.recipients
        self.assertEqual(r.state, PENDING)
        self.assertEqual(r.last_error,
                         "451 4.7.5 MTA-STS policy of example.net: no MX host matches")
        self.assertGreater(r.next_attempt, START)

    @defer.inlineCallbacks
    def test_enforce_skips_unlisted_mx(self):
        """enforce: an MX of better preference that the policy does not
        name is not tried; the listed one gets the message."""
        self.resolver.mx["example.net"] = [(5, "evil.attacker.example"),
                                           (10, "mx.example.net")]
        self.resolver.a["evil.attacker.example"] = ["192.0.2.66"]
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(self.endpoints.attempts, ["192.0.2.10"])
        self.assertEqual(len(self.mx.messages), 1)

    @defer.inlineCallbacks
    def test_enforce_unverified_certificate_is_temporary_failure(self):
        """enforce + a certificate from an untrusted CA: no MAIL FROM is
        sent, no plaintext retry; the recipient is deferred with 4.7.5."""
        self.mx.tls_context = TestCA(self.mktemp()).server_options("mx.example.net")
        _, [entry] = yield self.deliver_once()
        self.assertEqual(self.mx.messages, [])
        self.assertEqual(self.mx.sessions, 1)
        self.assertFalse([c for c in self.mx.commands if c.startswith(b"MAIL")])
        [r] = entry.recipients
        self.assertEqual(r.state, PENDING)
        self.assertEqual(r.last_error, "451 4.7.5 MTA-STS: mx.example.net [192.0.2.10]: "
                         "untrusted certificate chain")

    @defer.inlineCallbacks
    def test_enforce_wrong_name_is_temporary_failure(self):
        """enforce + a trusted certificate for another name: deferred."""
        self.mx.tls_context = self.ca.server_options("other.example.net")
        _, [entry] = yield self.deliver_once()
        self.assertEqual(self.mx.messages, [])
        self.assertIn("certificate not for mx.example.net", entry.recipients[0].last_error)

    @defer.inlineCallbacks
    def test_enforce_without_starttls_is_temporary_failure(self):
        """enforce + a server that offers no STARTTLS: deferred, nothing
        sent in plaintext."""
        self.mx.tls_context = None
        _, [entry] = yield self.deliver_once()
        self.assertEqual(self.mx.messages, [])
        self.assertIn("4.7.5 MTA-STS: mx.example.net [192.0.2.10]: no STARTTLS",
                      entry.recipients[0].last_error)

    @defer.inlineCallbacks
    def test_enforce_broken_tls_not_retried_in_plaintext(self):
        """enforce + a TLS handshake that fails: no plaintext second try."""
        self.mx.tls_context = None
        self.mx.broken_tls = True
        _, [entry] = yield self.deliver_once()
        self.assertEqual(self.mx.sessions, 1)
        self.assertEqual(self.mx.messages, [])
        self.assertIn("TLS handshake failed", entry.recipients[0].last_error)

    @defer.inlineCallbacks
    def test_testing_mode_delivers_and_logs(self):
        """testing: an unlisted MX with an untrusted certificate still gets
        the message; the log says what enforce would have refused."""
        self.fetcher.bodies[URL] = policy("testing", "mx.elsewhere.example")
        self.mx.tls_context = TestCA(self.mktemp()).server_options("mx.example.net")
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(len(self.mx.messages), 1)
        self.assertEqual(self.logged("mta_sts"), ["testing"])
        self.assertEqual(self.logged("hosts"), ["mx.example.net"])
        self.assertEqual(self.logged("problem"), ["untrusted certificate chain"])

    @defer.inlineCallbacks
    def test_testing_mode_broken_tls_falls_back_and_logs(self):
        """testing + a TLS handshake that fails: the plaintext second try
        delivers, and the log says enforce would have refused it."""
        self.fetcher.bodies[URL] = policy("testing", "mx.example.net")
        self.mx.tls_context = None
        self.mx.broken_tls = True
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(self.mx.sessions, 2)
        self.assertEqual(self.logged("problem"), ["no STARTTLS"])

    @defer.inlineCallbacks
    def test_mode_none(self):
        """mode none: delivered as without a policy, logged mta-sts=none."""
        self.fetcher.bodies[URL] = policy("none")
        self.mx.tls_context = None
        _, entries = yield self.deliver_once()
        self.assertEqual(entries, [])
        self.assertEqual(self.logged("mta_sts"), ["none"])

    @defer.inlineCallbacks
    def test_cached_enforce_policy_used_when_fetch_fails(self):
        """A cached enforce policy still applies when a new id's policy
        cannot be fetched: an unlisted MX gets nothing."""
        h = self.harness()
        yield h.enqueue(["bob@example.net"])
        yield h.scheduler.when_idle()
        self.assertEqual(len(self.mx.messages), 1)
        self.resolver.txt["_mta-sts.example.net"] = ["v=STSv1; id=20240202"]
        self.fetcher.bodies[URL] = ConnectionRefusedError("blocked")
        self.resolver.mx["example.net"] = [(10, "evil.attacker.example")]
        self.resolver.a["evil.attacker.example"] = ["192.0.2.66"]
        yield h.enqueue(["bob@example.net"])
        yield h.scheduler.when_idle()
        self.assertEqual(len(self.fetcher.urls), 2)
        self.assertEqual(self.endpoints.attempts, ["192.0.2.10"])
        [entry] = yield h.entries()
        self.assertIn("no MX host matches", entry.recipients[0].last_error)

    @defer.inlineCallbacks
    def test_smarthost_ignores_mta_sts(self):
        """With a smarthost, no TXT lookup and no policy: sent as is."""
        self.resolver.a["relay.isp.example"] = ["192.0.2.10"]
        self.mx.tls_context = None
        _, entries = yield self.deliver_once(smarthost=("relay.isp.example", 25))
        self.assertEqual(entries, [])
        self.assertNotIn("TXT", [kind for kind, _ in self.resolver.queries])
        self.assertEqual(self.fetcher.urls, [])
