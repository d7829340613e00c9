"""The PROXY protocol (haproxy's ``send-proxy`` v1 and ``send-proxy-v2``) in
front of any listener: ``[listen] imap = haproxy:ssl:993`` and so on.

A load balancer that forwards TCP hides the client: every connection comes
from the balancer. With the PROXY protocol it first sends a header naming
the client; logs, the login throttle and ``Received:`` must see that
address. Twisted's own ``haproxy:`` endpoint starts the wrapped protocol
as soon as the TCP connection exists, before the header has arrived, so a
protocol that reads ``transport.getPeer()`` when it starts (an SMTP
greeting, a session's log context) would see the balancer. Here the
wrapped protocol (the TLS layer, for implicit-TLS listeners, and inside it
the mail protocol) is started only once the header has been read, so
``getPeer()`` is the client's address from its very first moment.

Invariants: nothing reaches the wrapped protocol before a complete, valid
header; a connection without one (a client that bypasses the balancer) is
closed, so nobody can pass itself off as another address; a header that
does not arrive within ``timeout`` seconds closes the connection. A v2
``LOCAL`` header (the balancer's own health check) leaves the real peer.

The header parsers are Twisted's (``twisted.protocols.haproxy``).
"""

import ipaddress

from twisted.internet.address import UNIXAddress
from twisted.internet.protocol import Protocol
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import directlyProvides, providedBy

PREFIX = "haproxy:"
#: seconds a new connection may take to send its PROXY header
HEADER_TIMEOUT = 10.0
_V1_START = b"PROXY "


def split_description(description):
    """``haproxy:<endpoint>`` -> (``<endpoint>``, True); anything else ->
    (description, False)."""
    if description.startswith(PREFIX):
        return description[len(PREFIX):], True
    return description, False


def _valid_addresses(info):
    """Twisted's v1 parser takes any word for an address: only IPs may pass."""
    for addr in (info.source, info.destination):
        host = getattr(addr, "host", None)
        if host is not None and not isinstance(addr, UNIXAddress):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                return False
    return True


class ProxyHeaderProtocol(policies.ProtocolWrapper):
    """Reads the PROXY header, then starts the wrapped protocol."""

    def __init__(self, factory, wrapped_protocol):
        super().__init__(factory, wrapped_protocol)
        self._buffer = b""
        self._parser = None
        self._info = None
        self._started = False
        self._timer = None

    def makeConnection(self, transport):
        # ProtocolWrapper.makeConnection, less starting the wrapped protocol
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._too_slow)

    def _too_slow(self):
        self._timer = None
        self.transport.loseConnection()

    def _refuse(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer = b""
        self.transport.loseConnection()

    def dataReceived(self, data):
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            self._buffer += data
            head = self._buffer
            if len(head) >= 16 and head[:12] == V2Parser.PREFIX:
                self._parser = V2Parser()
            elif head[:len(_V1_START)] == _V1_START:
                self._parser = V1Parser()
            elif (len(head) >= 16 or not (V2Parser.PREFIX.startswith(head[:12])
                                          or _V1_START.startswith(head[:len(_V1_START)]))):
                self._refuse()
                return
            else:
                return  # the start of a header: wait for more
            data, self._buffer = self._buffer, b""
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self._refuse()
            return
        if info is None:
            return
        if not _valid_addresses(info):
            self._refuse()
            return
        self._info = info
        self._started = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wrappedProtocol.makeConnection(self)
        if remaining and self.connected:
            self.wrappedProtocol.dataReceived(remaining)

    def getPeer(self):
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self.transport.getPeer()

    def getHost(self):
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()

    def connectionLost(self, reason):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._started:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)


class ProxyHeaderFactory(policies.WrappingFactory):
    """Wraps a listener's factory: each connection starts with a PROXY header.
    ``clock``: IReactorTime for the header timeout."""

    protocol = ProxyHeaderProtocol

    def __init__(self, wrapped_factory, clock, timeout=HEADER_TIMEOUT):
        super().__init__(wrapped_factory)
        self.clock = clock
        self.timeout = timeout

    def logPrefix(self):
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        return f"{inner() if inner else type(self.wrappedFactory).__name__} (PROXY)"
