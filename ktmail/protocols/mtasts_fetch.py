"""The HTTPS client of MTA-STS (RFC 8461 §3.3): ``HTTPSPolicyFetcher(url)``
-> Deferred[bytes], the body of a policy file.

What it insists on, failing (``FetchError`` or the transport's error)
otherwise:
- HTTPS with full certificate validation: the chain against the system
  trust store (or an injected trust root) and the host name
  (``BrowserLikePolicyForHTTPS``);
- a ``200`` answer; redirects are not followed (§3.3 forbids them);
- ``Content-Type: text/plain`` (parameters such as charset allowed);
- at most ``max_size`` bytes of body, and the whole exchange within
  ``timeout`` seconds.

It interprets nothing: parsing is ``services.mtasts.parse_policy``.
"""

from twisted.internet import defer, endpoints, protocol
from twisted.python import failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ktmail import __version__

FETCH_TIMEOUT = 15
MAX_SIZE = 64 * 1024


class FetchError(Exception):
    """The server answered, but not with an acceptable policy file."""


def _timed_out(result, timeout):
    return failure.Failure(FetchError(f"no answer within {timeout} s"))


class _CappedBody(protocol.Protocol):
    def __init__(self, finished, max_size):
        self.finished = finished
        self.max_size = max_size
        self.parts = []
        self.size = 0

    def dataReceived(self, data):
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.max_size:
            self.finished.errback(FetchError(f"policy larger than {self.max_size} bytes"))
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason):
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


@implementer(IAgentEndpointFactory)
class _FixedAddressEndpoints:
    """Connects every request to ``(address, port)`` while TLS still checks
    the name in the URL (tests: a loopback HTTPS server)."""

    def __init__(self, reactor, address, port, tls_policy):
        self.reactor = reactor
        self.address = address
        self.port = port
        self.tls_policy = tls_policy

    def endpointForURI(self, uri):
        tcp = endpoints.TCP4ClientEndpoint(self.reactor, self.address, self.port, timeout=10)
        creator = self.tls_policy.creatorForNetloc(uri.host, uri.port)
        return endpoints.wrapClientTLS(creator, tcp)


class HTTPSPolicyFetcher:
    """``fetcher(url)`` -> Deferred[bytes]. ``trust_root``: an
    ``IOpenSSLTrustRoot`` (e.g. ``ssl.Certificate``) or None for the
    system's; ``connect_to``: (address, port) to send every request to,
    for tests only."""

    def __init__(self, reactor, trust_root=None, timeout=FETCH_TIMEOUT, max_size=MAX_SIZE,
                 connect_to=None):
        self.reactor = reactor
        self.timeout = timeout
        self.max_size = max_size
        policy = BrowserLikePolicyForHTTPS(trustRoot=trust_root)
        if connect_to is None:
            self.agent = Agent(reactor, contextFactory=policy, connectTimeout=timeout)
        else:
            self.agent = Agent.usingEndpointFactory(
                reactor, _FixedAddressEndpoints(reactor, *connect_to, policy))

    def __call__(self, url):
        d = defer.Deferred.fromCoroutine(self._fetch(url))
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=_timed_out)
        return d

    async def _fetch(self, url):
        if not url.startswith("https://"):
            raise FetchError("MTA-STS policies are fetched over HTTPS only")
        headers = Headers({b"User-Agent": [f"ktmail/{__version__}".encode()]})
        response = await self.agent.request(b"GET", url.encode("ascii"), headers)
        if response.code != 200:
            response.deliverBody(protocol.Protocol())   # discard, close
            raise FetchError(f"HTTP status {response.code}")
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if ctype.split(b";")[0].strip().lower() != b"text/plain":
            response.deliverBody(protocol.Protocol())
            raise FetchError(f"content type {ctype[:60].decode('latin-1')!r}, "
                             "not text/plain")
        if isinstance(response.length, int) and response.length > self.max_size:
            response.deliverBody(protocol.Protocol())
            raise FetchError(f"policy larger than {self.max_size} bytes")
        finished = defer.Deferred()
        response.deliverBody(_CappedBody(finished, self.max_size))
        return await finished

