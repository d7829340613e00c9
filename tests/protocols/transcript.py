"""Transcript helper for SMTP sessions over an in-memory transport:

    smtp = SMTPTranscript(factory)
    smtp.expect("220 ")
    smtp.send("EHLO client.example.org").expect("250 ")
    smtp.send("RCPT TO:<x@y>").expect("550 5.1.1")

``expect(prefix)`` takes the next complete reply (all its lines) and
checks that its last line starts with ``prefix``; ``last`` holds the text.
"""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.testing import StringTransport
from zope.interface import alsoProvides, directlyProvides


class FakeTLSHandle:
    def get_protocol_version_name(self):
        return "TLSv1.3"

    def get_cipher_name(self):
        return "TLS_AES_256_GCM_SHA384"


class TLSCapableTransport(StringTransport):
    """A StringTransport that can "start TLS": it records the context and
    from then on provides ISSLTransport, like Twisted's TCP transport."""

    def __init__(self, peer, implicit_tls=False):
        host = peer
        address = IPv6Address("TCP", host, 40000) if ":" in host else IPv4Address(
            "TCP", host, 40000)
        super().__init__(peerAddress=address)
        self.tls_started_with = None
        directlyProvides(self, ITLSTransport)
        if implicit_tls:
            alsoProvides(self, ISSLTransport)

    def startTLS(self, context):
        self.tls_started_with = context
        alsoProvides(self, ISSLTransport)

    def getHandle(self):
        return FakeTLSHandle()


class LineTranscript:
    """What the SMTP and POP3 transcripts share: a client typing lines into
    ``self.protocol`` over ``self.transport``."""

    def send(self, line):
        """Send one command line (CRLF added)."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        return self.send_raw(line + b"\r\n")

    def send_raw(self, data):
        """Send bytes exactly as given, in one segment."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.protocol.dataReceived(data)
        return self

    @property
    def closed(self):
        return self.transport.disconnecting


class SMTPTranscript(LineTranscript):
    def __init__(self, testcase, factory, peer="203.0.113.7", tls=False, greet=True):
        self.testcase = testcase
        self.transport = TLSCapableTransport(peer, implicit_tls=tls)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self._read = 0
        self.last = None
        if greet:
            self.expect("220 ")

    # --- reading ----------------------------------------------------------------

    def _pending_lines(self):
        data = self.transport.value()[self._read:]
        return data

    def replies(self):
        """Every complete reply not read yet, each as a list of lines."""
        out = []
        while True:
            reply = self._take()
            if reply is None:
                return out
            out.append(reply)

    def _take(self):
        data = self.transport.value()
        pos = self._read
        lines = []
        while True:
            end = data.find(b"\r\n", pos)
            if end < 0:
                return None
            line = data[pos:end].decode("utf-8")
            pos = end + 2
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                self._read = pos
                return lines

    def expect(self, prefix):
        """The next reply's last line starts with ``prefix``."""
        reply = self._take()
        if reply is None:
            self.testcase.fail(f"expected a reply {prefix!r}, got none yet "
                               f"(unread: {self._pending_lines()!r})")
        self.last = "\n".join(reply)
        if not reply[-1].startswith(prefix):
            self.testcase.fail(f"expected {prefix!r}, got {self.last!r}")
        return self

    def expect_nothing(self):
        """No (complete) reply is waiting."""
        pending = self._pending_lines()
        if pending:
            self.testcase.fail(f"expected no reply yet, got {pending!r}")
        return self

    def ehlo(self, name="client.example.org"):
        """EHLO -> the extension keywords (upper-case first words) advertised."""
        self.send(f"EHLO {name}").expect("250 ")
        lines = self.last.split("\n")[1:]
        return {line[4:].split(" ")[0].upper(): line[4:] for line in lines}

    def message(self, sender, recipients, body):
        """MAIL, RCPT..., DATA and the (dot-stuffed) body, expecting 250s and 354."""
        self.send(f"MAIL FROM:<{sender}>").expect("250 ")
        for rcpt in recipients:
            self.send(f"RCPT TO:<{rcpt}>").expect("250 ")
        self.send("DATA").expect("354 ")
        if isinstance(body, str):
            body = body.encode("utf-8")
        return self.send_raw(body + b".\r\n")
