"""The MTA-STS policy fetcher against a loopback HTTPS server whose
certificate comes from a test CA: certificate and name checks, no
redirects, text/plain only, the size cap and the time-out."""

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest
from twisted.web import resource, server

from ktmail.protocols.mtasts_fetch import FetchError, HTTPSPolicyFetcher
from tests.tls_ca import TestCA

URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"


class PolicyFile(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = POLICY
        self.content_type = b"text/plain; charset=utf-8"
        self.redirect = None
        self.hang = False
        self.chunked = False
        self.paths = []
        self.pending = []

    def render_GET(self, request):
        self.paths.append(request.path)
        if self.hang:
            self.pending.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET
        if self.redirect:
            request.redirect(self.redirect)
            return b""
        request.setHeader(b"content-type", self.content_type)
        if self.chunked:   # no Content-Length: the cap must hold while reading
            for i in range(0, len(self.body), 8192):
                request.write(self.body[i:i + 8192])
            request.finish()
            return server.NOT_DONE_YET
        return self.body


class FetcherTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.ca = TestCA(self.mktemp())
        self.resource = PolicyFile()
        yield self.listen(self.ca.server_options("mta-sts.example.com"))

    @defer.inlineCallbacks
    def listen(self, tls_options):
        site = server.Site(self.resource)
        endpoint = endpoints.SSL4ServerEndpoint(reactor, 0, tls_options, interface="127.0.0.1")
        self.port = yield endpoint.listen(site)
        self.addCleanup(self.port.stopListening)

    def fetcher(self, **kwargs):
        kwargs.setdefault("trust_root", self.ca.trust_root())
        return HTTPSPolicyFetcher(reactor, connect_to=("127.0.0.1", self.port.getHost().port),
                                  **kwargs)

    @defer.inlineCallbacks
    def test_fetches_the_policy(self):
        """A 200 text/plain answer from a verified server: its body."""
        self.assertEqual((yield self.fetcher()(URL)), POLICY)
        self.assertEqual(self.resource.paths, [b"/.well-known/mta-sts.txt"])

    @defer.inlineCallbacks
    def test_untrusted_certificate(self):
        """A server certificate from a CA we do not trust: failure."""
        yield self.assertFailure(self.fetcher(trust_root=TestCA(self.mktemp()).trust_root())(URL),
                                 Exception)
        self.assertEqual(self.resource.paths, [])

    @defer.inlineCallbacks
    def test_certificate_for_another_name(self):
        """A trusted certificate for another host name: failure."""
        yield self.port.stopListening()
        yield self.listen(self.ca.server_options("www.example.com"))
        yield self.assertFailure(self.fetcher()(URL), Exception)
        self.assertEqual(self.resource.paths, [])

    @defer.inlineCallbacks
    def test_redirect_not_followed(self):
        """A redirect is a failure, not followed (RFC 8461 §3.3)."""
        self.resource.redirect = b"https://mta-sts.example.com/other.txt"
        failure = yield self.assertFailure(self.fetcher()(URL), FetchError)
        self.assertIn("302", str(failure))
        self.assertEqual(len(self.resource.paths), 1)

    @defer.inlineCallbacks
    def test_content_type_must_be_text_plain(self):
        """text/html is refused."""
        self.resource.content_type = b"text/html"
        failure = yield self.assertFailure(self.fetcher()(URL), FetchError)
        self.assertIn("text/html", str(failure))

    @defer.inlineCallbacks
    def test_size_cap(self):
        """Over 64 KiB is refused, with or without a Content-Length."""
        self.resource.body = POLICY + b"x" * (64 * 1024)
        yield self.assertFailure(self.fetcher()(URL), FetchError)
        self.resource.chunked = True
        failure = yield self.assertFailure(self.fetcher()(URL), FetchError)
        self.assertIn("larger than 65536", str(failure))

    @defer.inlineCallbacks
    def test_timeout(self):
        """A server that does not answer: the fetch fails after the time-out."""
        self.resource.hang = True
        failure = yield self.assertFailure(self.fetcher(timeout=0.5)(URL), FetchError)
        self.assertIn("no answer within 0.5 s", str(failure))
        for request in self.resource.pending:
            request.channel.transport.loseConnection()

    def test_https_only(self):
        """A URL other than https:// is refused outright."""
        return self.assertFailure(self.fetcher()("http://mta-sts.example.com/x"), FetchError)
