"""A scriptable remote mail server for outbound tests: it listens on a
loopback port, answers as scripted (250 / 4xx / 5xx per command, per
recipient, per message), and records every command line and every message
exactly as it arrived (after removing the dot-stuffing, RFC 5321 §4.5.2).

It is written by hand on a LineReceiver rather than on Twisted's ESMTP
server so that the tests see the raw wire: a smuggled command after an
early end of DATA shows up in ``commands``.
"""

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.protocols.basic import LineReceiver


class FakeMX:
    def __init__(self, name="mx.example.net", tls_context=None,
                 extensions=(b"SIZE 52428800", b"8BITMIME", b"PIPELINING")):
        self.name = name
        self.tls_context = tls_context
        self.extensions = list(extensions)
        #: replies: a bytes reply, or a list consumed one per use (last repeats)
        self.greeting = b"220 " + name.encode() + b" ESMTP fake"
        self.mail_reply = b"250 2.1.0 Ok"
        self.rcpt_replies = {}           # address -> reply or [replies]
        self.data_reply = b"250 2.0.0 Ok: queued"
        self.commands = []               # every command line, in order
        self.messages = []               # {"mail_from", "rcpts", "data", "tls"}
        self.sessions = 0
        self.port = None
        #: answer STARTTLS with 220, then hang up (a broken TLS stack)
        self.broken_tls = False
        #: seconds to wait before answering the end of DATA
        self.data_delay = 0.0
        self.open_sessions = 0
        self.most_open_sessions = 0

    @staticmethod
    def _next(reply):
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        return reply

    @defer.inlineCallbacks
    def listen(self, testcase):
        factory = Factory.forProtocol(lambda: _FakeMXProtocol(self))
        endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        self.port = yield endpoint.listen(factory)
        testcase.addCleanup(self.port.stopListening)
        return self.port.getHost().port

    def received(self):
        """The accepted messages' data."""
        return [m["data"] for m in self.messages]


class _FakeMXProtocol(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, mx):
        self.mx = mx
        self.in_data = False
        self.tls = False
        self._reset()

    def _reset(self):
        self.mail_from = None
        self.rcpts = []
        self.lines = []

    def connectionMade(self):
        self.mx.sessions += 1
        self.mx.open_sessions += 1
        self.mx.most_open_sessions = max(self.mx.most_open_sessions, self.mx.open_sessions)
        greeting = self.mx._next(self.mx.greeting)
        self.sendLine(greeting)
        if not greeting.startswith(b"2"):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.mx.open_sessions -= 1

    def lineReceived(self, line):
        if self.in_data:
            if line == b"." and self.mx.data_delay:
                reactor.callLater(self.mx.data_delay, self._end_of_data)
                return
            if line == b".":
                self._end_of_data()
                return
            self.lines.append(line[1:] if line.startswith(b".") else line)
            return
        self._command(line)

    def _end_of_data(self):
        self.in_data = False
        reply = self.mx._next(self.mx.data_reply)
        if reply.startswith(b"2"):
            self.mx.messages.append({
                "mail_from": self.mail_from, "rcpts": list(self.rcpts),
                "data": b"".join(line + b"\r\n" for line in self.lines),
                "tls": self.tls})
        self._reset()
        self.sendLine(reply)

    def _command(self, line):
        self.mx.commands.append(line)
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if verb in (b"EHLO", b"HELO"):
            extensions = list(self.mx.extensions)
            if (self.mx.tls_context is not None or self.mx.broken_tls) and not self.tls:
                extensions.append(b"STARTTLS")
            if verb == b"HELO" or not extensions:
                self.sendLine(b"250 " + self.mx.name.encode())
                return
            self.sendLine(b"250-" + self.mx.name.encode())
            for ext in extensions[:-1]:
                self.sendLine(b"250-" + ext)
            self.sendLine(b"250 " + extensions[-1])
        elif verb == b"STARTTLS" and self.mx.broken_tls:
            self.sendLine(b"220 2.0.0 Ready to start TLS")
            self.transport.loseConnection()
        elif verb == b"STARTTLS" and self.mx.tls_context is not None:
            self.sendLine(b"220 2.0.0 Ready to start TLS")
            self.transport.startTLS(self.mx.tls_context)
            self.tls = True
        elif verb == b"MAIL":
            reply = self.mx._next(self.mx.mail_reply)
            if reply.startswith(b"2"):
                self.mail_from = arg[5:].decode()
            self.sendLine(reply)
        elif verb == b"RCPT":
            address = arg[3:].strip().strip(b"<>").decode()
            reply = self.mx._next(self.mx.rcpt_replies.get(address, b"250 2.1.5 Ok"))
            if reply.startswith(b"2"):
                self.rcpts.append(address)
            self.sendLine(reply)
        elif verb == b"DATA":
            if not self.rcpts:
                self.sendLine(b"554 5.5.1 No valid recipients")
                return
            self.in_data = True
            self.sendLine(b"354 End data with <CR><LF>.<CR><LF>")
        elif verb == b"RSET":
            self._reset()
            self.sendLine(b"250 2.0.0 Ok")
        elif verb == b"NOOP":
            self.sendLine(b"250 2.0.0 Ok")
        elif verb == b"QUIT":
            self.sendLine(b"221 2.0.0 Bye")
            self.transport.loseConnection()
        else:
            self.sendLine(b"502 5.5.2 Error: command not recognized")


class StubResolver:
    """An IResolver with fixed answers: ``mx`` {domain: [(pref, host)]},
    ``a`` {host: [ip]}, ``txt`` {name: [str or [str, ...]]} (one item per
    record; a list is a record of several strings); unknown names do not
    exist (NXDOMAIN)."""

    def __init__(self, mx=None, a=None, fail=(), txt=None):
        self.mx = dict(mx or {})
        self.a = dict(a or {})
        self.txt = dict(txt or {})
        self.fail = set(fail)   # names whose lookups time out
        self.queries = []

    def _answer(self, name, records):
        return defer.succeed((records, [], []))

    def lookupMailExchange(self, name, timeout=None):
        self.queries.append(("MX", name))
        if name in self.fail:
            return defer.fail(dns_error.DNSServerError(name))
        if name not in self.mx and name not in self.a:
            return defer.fail(dns_error.DNSNameError(name))
        return self._answer(name, [
            dns.RRHeader(name=name, type=dns.MX, payload=dns.Record_MX(pref, host))
            for pref, host in self.mx.get(name, [])])

    def lookupAddress(self, name, timeout=None):
        self.queries.append(("A", name))
        if name not in self.a:
            return defer.fail(dns_error.DNSNameError(name))
        return self._answer(name, [
            dns.RRHeader(name=name, type=dns.A, payload=dns.Record_A(ip))
            for ip in self.a[name]])

    def lookupText(self, name, timeout=None):
        self.queries.append(("TXT", name))
        if name in self.fail:
            return defer.fail(dns_error.DNSServerError(name))
        if name not in self.txt:
            return defer.fail(dns_error.DNSNameError(name))
        return self._answer(name, [
            dns.RRHeader(name=name, type=dns.TXT, payload=dns.Record_TXT(
                *[p.encode() for p in ([r] if isinstance(r, str) else r)]))
            for r in self.txt[name]])

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(name, [])


class LoopbackEndpoints:
    """The injected connector: maps the addresses the resolver handed out
    to loopback ports (``routes`` {address: port}); an address without a
    port is refused. Records every connection attempt."""

    def __init__(self, routes=None):
        self.routes = dict(routes or {})
        self.attempts = []

    def __call__(self, address, port):
        self.attempts.append(address)
        if address not in self.routes:
            return _RefusingEndpoint()
        return endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.routes[address],
                                            timeout=5)


class _RefusingEndpoint:
    def connect(self, factory):
        from twisted.internet.error import ConnectionRefusedError
        return defer.fail(ConnectionRefusedError("Connection refused"))
