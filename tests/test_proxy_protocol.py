"""Listeners behind a load balancer: a ``haproxy:`` endpoint takes the PROXY
protocol header (v1 or v2) before anything else, implicit TLS included, and
the protocols see the client's address from it (logs, throttling,
Received:), through ``transport.getPeer()``."""

import socket
import ssl
import struct

from twisted.application import service
from twisted.internet import protocol, reactor, threads
from twisted.trial import unittest

from ktmail import tap, tls
from ktmail.config import TLSConfig
from tests.e2e import make_certificate


class TellPeer(protocol.Protocol):
    """Writes the peer address it sees, as protocols read it."""

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.transport.write(f"{peer.host} {peer.port}\r\n".encode())
        self.transport.loseConnection()


def proxy_v1(source, port):
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 993\r\n".encode()


def proxy_v2(source, port):
    """A PROXY protocol v2 header (haproxy's send-proxy-v2) for TCP over IPv4."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack(
        "!HH", port, 993)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses))
            + addresses)


class Config:
    """The part of config.Config that tap.listen reads."""

    def __init__(self, **listen):
        self.listen = type("Listen", (), listen)()


class ProxyProtocolListenerTests(unittest.TestCase):
    def setUp(self):
        self.top = service.MultiService()
        self.top.startService()
        self.addCleanup(self.top.stopService)
        cert, key = make_certificate(self.mktemp())
        self.cert = cert
        self.tls_context = tls.server_context(TLSConfig(cert=cert, key=key))

    async def listen(self, description):
        svc = tap.listen(self.top, reactor, Config(test=description), "test",
                         protocol.Factory.forProtocol(TellPeer), self.tls_context)
        port = await svc._waitingForPort
        return port.getHost().port

    def exchange(self, port, header, use_tls):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(header)
            if use_tls:
                context = ssl.create_default_context(cafile=self.cert)
                with context.wrap_socket(sock, server_hostname="localhost") as secure:
                    return secure.recv(100)
            return sock.recv(100)

    async def test_plain_listener_sees_the_proxied_address(self):
        """haproxy:tcp: with a v1 and a v2 header: the protocol's peer is the
        client the balancer named, not the balancer."""
        port = await self.listen("haproxy:tcp:0:interface=127.0.0.1")
        for header in (proxy_v1("203.0.113.7", 40001), proxy_v2("198.51.100.9", 40002)):
            seen = await threads.deferToThread(self.exchange, port, header, False)
            self.assertIn(seen, (b"203.0.113.7 40001\r\n", b"198.51.100.9 40002\r\n"))
            self.assertEqual(seen.split()[0].decode(), header_source(header))

    async def test_implicit_tls_starts_after_the_proxy_header(self):
        """haproxy:ssl: (the 465/993/995 listeners) reads the PROXY header in
        the clear, then does TLS with the configured certificate; inside,
        the peer is the proxied client."""
        port = await self.listen("haproxy:ssl:0:interface=127.0.0.1")
        seen = await threads.deferToThread(self.exchange, port,
                                           proxy_v2("192.0.2.44", 51000), True)
        self.assertEqual(seen, b"192.0.2.44 51000\r\n")

    async def test_a_connection_without_the_header_is_refused(self):
        """A client that talks to a haproxy: listener directly (bypassing the
        balancer) gets nothing: it cannot pass itself off as anyone."""
        port = await self.listen("haproxy:tcp:0:interface=127.0.0.1")
        seen = await threads.deferToThread(self.exchange, port, b"EHLO me\r\n", False)
        self.assertEqual(seen, b"")


def header_source(header):
    if header.startswith(b"PROXY"):
        return header.split()[2].decode()
    return socket.inet_ntoa(header[16:20])


class ProxyHeaderUnitTests(unittest.TestCase):
    """The wrapper on an in-memory transport, with a fake clock."""

    def setUp(self):
        from twisted.internet import address, task
        from twisted.internet.testing import StringTransport

        from ktmail.proxy_protocol import ProxyHeaderFactory

        self.clock = task.Clock()
        self.seen = []
        received = self.received = []
        seen = self.seen

        class Recorder(protocol.Protocol):
            def connectionMade(self):
                seen.append(self.transport.getPeer().host)

            def dataReceived(self, data):
                received.append(data)

        factory = ProxyHeaderFactory(protocol.Factory.forProtocol(Recorder), self.clock)
        self.proto = factory.buildProtocol(address.IPv4Address("TCP", "10.0.0.1", 1))
        self.transport = StringTransport(peerAddress=address.IPv4Address("TCP", "10.0.0.1", 1))
        self.proto.makeConnection(self.transport)

    def test_the_protocol_starts_only_after_a_header_in_pieces(self):
        """A header arriving a byte at a time: the protocol starts once it is
        complete, already seeing the client's address, and gets the bytes
        that followed it."""
        data = proxy_v2("203.0.113.5", 1234) + b"EHLO x\r\n"
        for i in range(len(data) - 8):
            self.proto.dataReceived(data[i:i + 1])
            if i < 27:
                self.assertEqual(self.seen, [])
        self.proto.dataReceived(data[len(data) - 8:])
        self.assertEqual(self.seen, ["203.0.113.5"])
        self.assertEqual(b"".join(self.received), b"EHLO x\r\n")

    def test_a_header_that_never_comes_closes_the_connection(self):
        """Silence after connecting: closed after the header timeout, and the
        protocol was never started."""
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.seen, [])

    def test_a_bad_v1_header_closes_the_connection(self):
        """A v1 header with a malformed address is refused."""
        self.proto.dataReceived(b"PROXY TCP4 not.an.ip 127.0.0.1 1 2\r\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.seen, [])
