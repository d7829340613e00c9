"""The SMTP client of the outbound queue: one session, one message.

``SMTPDeliveryClient.deliver(host, address, port, sender, recipients,
message)`` connects (through an injected endpoint factory), speaks ESMTP
with Twisted's ``ESMTPClient`` state machine, and answers, as soon as the
reply to DATA arrives, with a ``SessionResult``: the reply for every
recipient (the RCPT refusal, or the reply to the end of DATA) and a
Deferred that fires when the connection has closed after QUIT. It raises
``SessionFailed`` when no recipient got an answer.

What it replaces in Twisted's client:
- the DATA writer (RFC 5321 §4.5.2): ``DataEncoder`` normalises every
  line ending to CRLF (bare CR and bare LF included) and dot-stuffs every
  line that begins with ".", carrying the "at line start" state across
  chunks. Twisted's ``transformChunk`` stuffs each 16 KiB chunk on its
  own, so a "." line on a chunk boundary ends DATA early and smuggles the
  rest to the remote server as commands;
- MAIL FROM parameters: ``SIZE=`` (RFC 1870) and ``BODY=8BITMIME``
  (RFC 6152) when the server offers them;
- TLS policy: opportunistic STARTTLS (RFC 3207) toward every server that
  offers it; the certificate is checked (chain against the system trust
  store, name with service_identity) but a failed check never stops the
  delivery: MX hosts rarely have certificates for their names, and
  bouncing such mail would be worse than sending it encrypted. One log line
  per session says "verified", "encrypted, unverified" or "plaintext". A
  failed TLS handshake is retried once without TLS (as Postfix does);
- MTA-STS (RFC 8461 §5): ``deliver(..., mta_sts="enforce")`` makes TLS
  mandatory for that session: a server that offers no STARTTLS, whose TLS
  handshake fails or whose certificate does not verify (chain and the MX
  host's name) gets no MAIL FROM; the session fails with a 4xx reply
  (``4.7.5``), and is not retried in plaintext. ``mta_sts="testing"``
  delivers as usual and logs what "enforce" would have refused.

The message streams from its file through a pull producer; the whole
message is never in memory.
"""

import ipaddress

from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IPullProducer
from twisted.logger import Logger
from twisted.mail import smtp
from zope.interface import implementer

from ktmail.services.messagetext import CHUNK, CRLFNormalizer
from ktmail.services.outbound import Reply, SessionFailed, SessionResult

log = Logger()

#: RFC 5321 §4.5.3.2 asks for minutes per reply; one figure for all of them
REPLY_TIMEOUT = 300
CONNECT_TIMEOUT = 30


class DataEncoder:
    """Message bytes -> the DATA stream of RFC 5321 §4.5.2, chunk by chunk.

    ``encode(chunk)`` for each chunk, then ``finish()`` for the end: a CRLF
    if the last line had none, and the terminating ".\\r\\n".
    """

    def __init__(self):
        self._normalizer = CRLFNormalizer()
        self._at_line_start = True

    def _stuff(self, data):
        if not data:
            return data
        if self._at_line_start and data.startswith(b"."):
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        self._at_line_start = data.endswith(b"\r\n")
        return data

    def encode(self, chunk):
        return self._stuff(self._normalizer.feed(chunk))

    def finish(self):
        data = self._stuff(self._normalizer.close())
        if not self._at_line_start:
            data += b"\r\n"
        return data + b".\r\n"


@implementer(IPullProducer)
class _DataProducer:
    """Streams ``message`` (prefix, then its file) through a DataEncoder."""

    def __init__(self, message, transport, on_progress):
        self.message = message
        self.transport = transport
        self.on_progress = on_progress
        self.encoder = DataEncoder()
        self.done = defer.Deferred()
        self._prefix = message.prefix

    def start(self):
        self.transport.registerProducer(self, False)
        return self.done

    def resumeProducing(self):
        if self.done.called:
            return
        if self._prefix:
            data, self._prefix = self._prefix, b""
        else:
            data = self.message.file.read(CHUNK)
        self.on_progress()
        if data:
            self.transport.write(self.encoder.encode(data))
            return
        self.transport.unregisterProducer()
        self.transport.write(self.encoder.finish())
        self.done.callback(None)

    def stopProducing(self):
        if not self.done.called:
            self.done.errback(ConnectionError("the connection closed during DATA"))


@implementer(IOpenSSLClientConnectionCreator)
class OpportunisticTLS:
    """A TLS client connection that records, rather than enforces, whether
    the server's certificate is valid for ``host``."""

    def __init__(self, host, trust_store=None):
        self.host = host
        self.chain_ok = True
        self.connection = None
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION)
        if trust_store is None:
            ctx.set_default_verify_paths()
        else:
            ctx.load_verify_locations(trust_store)   # a CA bundle file (tests)
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._context = ctx

    def _verify(self, connection, certificate, errno, depth, ok):
        if not ok:
            self.chain_ok = False
        return True  # never abort the handshake: see the module docstring

    def clientConnectionForTLS(self, tls_protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            connection.set_tlsext_host_name(self.host.encode("idna"))
        self.connection = connection
        return connection

    def problem(self):
        """Why the certificate is not valid for ``host``, or None."""
        if not self.chain_ok:
            return "untrusted certificate chain"
        try:
            try:
                ipaddress.ip_address(self.host)
                verify_ip_address(self.connection, self.host)
            except ValueError:
                verify_hostname(self.connection, self.host)
        except (VerificationError, CertificateError):
            return f"certificate not for {self.host}"
        return None

    def status(self):
        """"verified", or "encrypted, unverified (why)"."""
        version = self.connection.get_protocol_version_name()
        problem = self.problem()
        if problem:
            return f"encrypted, unverified ({problem}), {version}"
        return f"verified, {version}"


class _DeliveryProtocol(smtp.ESMTPClient):
    timeout = REPLY_TIMEOUT
    heloFallback = True
    requireAuthentication = False
    requireTransportSecurity = False

    def __init__(self, session):
        smtp.ESMTPClient.__init__(self, None, session.tls, identity=session.helo)
        self.session = session
        self.callLater = session.clock.callLater
        self._extensions = {}
        self._mail_sent = False
        self._tls_started = False

    # EHLO reply: remember what the server offers (SIZE, 8BITMIME, STARTTLS)
    def esmtpState_serverConfig(self, code, resp):
        self._extensions = {}
        for line in resp.splitlines():
            parts = line.split(None, 1)
            if parts:
                self._extensions[parts[0].upper()] = parts[1] if len(parts) > 1 else None
        return smtp.ESMTPClient.esmtpState_serverConfig(self, code, resp)

    def esmtpState_starttls(self, code, resp):
        self._tls_started = True
        return smtp.ESMTPClient.esmtpState_starttls(self, code, resp)

    def smtpState_from(self, code, resp):
        if self._mail_sent:
            return self._disconnectFromServer()   # one message per session
        self._mail_sent = True
        self._from = self.session.sender
        self._failresponse = self.smtpTransferFailed
        self.session.log_tls(self)
        if not self.session.tls_policy_allows(self):
            return self._disconnectFromServer()
        message = self.session.message
        params = b""
        if b"SIZE" in self._extensions:
            params += b" SIZE=%d" % message.size
        if message.eight_bit and b"8BITMIME" in self._extensions:
            params += b" BODY=8BITMIME"
        self.sendLine(b"MAIL FROM:<" + self.session.sender.encode("utf-8") + b">" + params)
        self._expected = [250]
        self._okresponse = self.smtpState_to

    def getMailTo(self):
        return [r.encode("utf-8") for r in self.session.recipients]

    def smtpState_toOrData(self, code, resp):
        # quoteaddr() of Twisted would re-parse the address; send it as given
        if self.lastAddress is not None:
            self.toAddressesResult.append((self.lastAddress, code, resp))
            if code in smtp.SUCCESS:
                self.successAddresses.append(self.lastAddress)
        try:
            self.lastAddress = next(self.toAddresses)
        except StopIteration:
            if self.successAddresses:
                self.sendLine(b"DATA")
                self._expected = [354]
                self._okresponse = self.smtpState_data
            else:
                return self.smtpState_msgSent(code, b"No recipients accepted")
        else:
            self.sendLine(b"RCPT TO:<" + self.lastAddress + b">")

    def smtpState_data(self, code, resp):
        producer = _DataProducer(self.session.message, self.transport, self.resetTimeout)

        def failed(reason):
            self.sendError(smtp.SMTPClientError(-1, b"transfer failed: "
                                                + str(reason.value).encode(), isFatal=True))
        producer.start().addErrback(failed)
        self._expected = smtp.SUCCESS
        self._okresponse = self.smtpState_msgSent

    def sentMail(self, code, resp, numOk, addresses, log):
        self.session.transaction_done(code, resp, addresses)

    def sendError(self, exc):
        code = getattr(exc, "code", -1)
        resp = getattr(exc, "resp", b"") or b""
        if isinstance(resp, str):
            resp = resp.encode("utf-8", "replace")
        self.session.session_failed(code, resp)
        smtp.ESMTPClient.sendError(self, exc)

    def connectionLost(self, reason=protocol.connectionDone):
        smtp.ESMTPClient.connectionLost(self, reason)
        self.session.connection_lost(self, reason)
        if not self.closed.called:
            self.closed.callback(None)


def _reply(code, resp, host):
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
    text = " ".join(text.split()) or "(no text)"
    return Reply(code, text, host)


class _Session:
    """The state of one ``deliver`` call and its one result."""

    def __init__(self, client, host, address, sender, recipients, message, use_tls,
                 mta_sts=None):
        self.clock = client.clock
        self.helo = client.helo_name.encode("ascii")
        self.host = host
        self.address = address
        self.sender = sender
        self.recipients = list(recipients)
        self.message = message
        self.tls = OpportunisticTLS(host, client.trust_store) if use_tls else None
        self.mta_sts = mta_sts
        self.result = defer.Deferred()
        self.closed = None
        self.tls_failed = False

    def tls_policy_allows(self, proto):
        """RFC 8461 §5: under an "enforce" policy, go on only over TLS with
        a certificate valid for the MX host; else fail the session (4xx)."""
        if self.mta_sts not in ("enforce", "testing"):
            return True
        if not proto._tls_started or self.tls is None or self.tls.connection is None:
            problem = "no STARTTLS"
        else:
            problem = self.tls.problem()
        if problem is None:
            return True
        if self.mta_sts == "testing":
            log.info("SMTP to {host} [{ip}]: MTA-STS testing: enforce would refuse "
                     "({problem})", host=self.host, ip=self.address, problem=problem)
            return True
        self.session_failed(451, f"4.7.5 MTA-STS: {self.host} [{self.address}]: {problem}")
        return False

    def log_tls(self, proto):
        if proto._tls_started and self.tls.connection is not None:
            status = self.tls.status()
        elif self.tls is None:
            status = "plaintext (TLS failed before; retried without it)"
        else:
            status = "plaintext (STARTTLS not offered)"
        log.info("SMTP to {host} [{ip}]: {status}", host=self.host, ip=self.address,
                 status=status)

    def transaction_done(self, code, resp, addresses):
        if self.result.called:
            return
        if not addresses:
            # MAIL FROM refused: nothing was said about any recipient
            return self.session_failed(code, resp)
        data_reply = _reply(code, resp, self.host)
        replies = {}
        for address, rcode, rresp in addresses:
            rcpt = address.decode("utf-8") if isinstance(address, bytes) else str(address)
            replies[rcpt] = data_reply if rcode in smtp.SUCCESS else _reply(rcode, rresp,
                                                                            self.host)
        self.result.callback(SessionResult(replies, self.closed))

    def session_failed(self, code, resp):
        if self.result.called:
            return
        if not 400 <= code < 600:
            text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
            reply = Reply(451, f"4.4.2 Session with {self.host} [{self.address}] failed: "
                          f"{' '.join(text.split()) or 'connection lost'}")
        else:
            reply = _reply(code, resp, self.host)
        self.result.errback(SessionFailed(reply))

    def connection_lost(self, proto, reason):
        if self.result.called:
            return
        if proto._tls_started and not proto._mail_sent:
            self.tls_failed = True
        self.session_failed(-1, str(reason.value).encode("utf-8", "replace"))


class _OneProtocolFactory(protocol.ClientFactory):
    def __init__(self, proto):
        self.proto = proto

    def buildProtocol(self, addr):
        self.proto.factory = self
        return self.proto


def tcp_endpoint_factory(reactor, timeout=CONNECT_TIMEOUT):
    """Production endpoints: plain TCP to the address we resolved."""
    def connect_to(address, port):
        if ":" in address:
            return endpoints.TCP6ClientEndpoint(reactor, address, port, timeout=timeout)
        return endpoints.TCP4ClientEndpoint(reactor, address, port, timeout=timeout)
    return connect_to


class SMTPDeliveryClient:
    """``deliver(...)`` -> Deferred[SessionResult] (see the module
    docstring). ``endpoint_factory(address, port)`` gives the client
    endpoint to connect to; tests point it at a loopback fake server."""

    def __init__(self, endpoint_factory, clock, helo_name, starttls=True, trust_store=None):
        self.endpoint_factory = endpoint_factory
        #: CA bundle file to verify servers against; None: the system's
        self.trust_store = trust_store
        self.clock = clock
        self.helo_name = helo_name
        self.starttls = starttls
        self._closing = set()   # Deferreds that fire when a connection is gone

    def idle(self):
        """-> Deferred fired when every connection has closed (its QUIT
        follows the result, so it may outlive ``deliver``)."""
        return defer.DeferredList(list(self._closing))

    def deliver(self, host, address, port, sender, recipients, message, mta_sts=None):
        """``mta_sts``: None, "enforce" or "testing" (see the module docstring)."""
        return defer.Deferred.fromCoroutine(
            self._deliver(host, address, port, sender, recipients, message, mta_sts))

    async def _deliver(self, host, address, port, sender, recipients, message, mta_sts):
        session = await self._session(host, address, port, sender, recipients, message,
                                      self.starttls or mta_sts == "enforce", mta_sts)
        try:
            return await session.result
        except SessionFailed:
            if not session.tls_failed:
                raise
            if mta_sts == "enforce":
                # RFC 8461 §5: never fall back to plaintext under "enforce"
                raise SessionFailed(Reply(451, f"4.7.5 MTA-STS: {host} [{address}]: "
                                          "TLS handshake failed")) from None
        log.info("SMTP to {host} [{ip}]: TLS handshake failed; retrying without TLS",
                 host=host, ip=address)
        message.rewind()
        session = await self._session(host, address, port, sender, recipients, message, False,
                                      mta_sts)
        return await session.result

    async def _session(self, host, address, port, sender, recipients, message, use_tls,
                       mta_sts=None):
        session = _Session(self, host, address, sender, recipients, message, use_tls,
                           mta_sts)
        proto = _DeliveryProtocol(session)
        closed = proto.closed = session.closed = defer.Deferred()
        self._closing.add(closed)
        closed.addBoth(lambda _: self._closing.discard(closed))
        try:
            await self.endpoint_factory(address, port).connect(_OneProtocolFactory(proto))
        except Exception as e:
            closed.callback(None)
            reason = " ".join(str(e).split()) or type(e).__name__
            raise SessionFailed(Reply(451, f"4.4.1 No connection to {host} [{address}]: "
                                      f"{reason}")) from None
        return session
