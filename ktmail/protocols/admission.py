"""Which connections a listener admits: the per-client and total caps that
every listener (SMTP, submission, IMAP, POP3, web) shares, and the one
"connection" log event per connection.

``AdmissionFactory`` wraps a listener's factory below TLS and above the
PROXY header (tap.listen builds the stack), so it sees the client's real
address and refuses the excess before any TLS handshake is paid for.
A refused connection gets the protocol's own refusal line when the
listener is plain text (``421 4.7.0`` / ``* BYE`` / ``-ERR`` / HTTP 503),
and is simply closed on an implicit-TLS listener (nothing can be said
before the handshake, and a handshake for every refused connection is
exactly the work a flood wants from us).

Invariants:
- at most ``per_client`` connections from one client (its address; an
  IPv6 client's /64) and at most ``total`` connections in all are open
  on a listener at any moment; clients in ``exempt`` networks are counted
  in the total but not capped per client;
- a refused connection never reaches the wrapped protocol and is counted
  nowhere;
- every connection, admitted or refused, ends in exactly one ``connection``
  event with stable fields: ``listener``, ``client``, ``outcome``
  (``closed``, ``refused-client``, ``refused-total``) and ``seconds``.
"""

import collections
import ipaddress

import attrs
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols import policies
from zope.interface import directlyProvides, providedBy

from ktmail.services.auth import client_key
from ktmail.services.events import CONNECTION

log = Logger()

CLOSED, REFUSED_CLIENT, REFUSED_TOTAL = "closed", "refused-client", "refused-total"


@attrs.frozen
class AdmissionPolicy:
    #: connections from one client address at once
    per_client: int
    #: connections at once, all clients together
    total: int
    #: networks (ipaddress objects or strings) not capped per client
    exempt: tuple = ()

    def __attrs_post_init__(self):
        object.__setattr__(self, "exempt", tuple(
            ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n
            for n in self.exempt))

    def is_exempt(self, address):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.exempt)


class Admission:
    """The open connections of one listener, by client."""

    def __init__(self, listener, policy):
        self.listener = listener
        self.policy = policy
        self.by_client = collections.Counter()
        self.open = 0

    def admit(self, address):
        """-> (None, key) when admitted (call ``release(key)`` at the end),
        or (REFUSED_CLIENT | REFUSED_TOTAL, None)."""
        key = client_key(address)
        if self.open >= self.policy.total:
            return REFUSED_TOTAL, None
        if (self.by_client[key] >= self.policy.per_client
                and not self.policy.is_exempt(address)):
            return REFUSED_CLIENT, None
        self.by_client[key] += 1
        self.open += 1
        return None, key

    def release(self, key):
        self.open -= 1
        self.by_client[key] -= 1
        if self.by_client[key] <= 0:
            del self.by_client[key]


class AdmittedProtocol(policies.ProtocolWrapper):
    """Starts the wrapped protocol only for an admitted connection."""

    _key = None
    _outcome = None
    _started_at = 0.0

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        factory = self.factory
        self._started_at = factory.clock.seconds()
        self._client = getattr(transport.getPeer(), "host", "") or ""
        refusal, self._key = factory.admission.admit(self._client)
        if refusal is not None:
            self._outcome = refusal
            if factory.refusal is not None:
                transport.write(factory.refusal(refusal == REFUSED_CLIENT))
            transport.loseConnection()
            return
        factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(self)

    def dataReceived(self, data):
        if self._key is not None:
            self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason):
        factory = self.factory
        if self._key is not None:
            factory.admission.release(self._key)
            self._key = None
            self._outcome = CLOSED
            super().connectionLost(reason)
        log.info("connection {listener} from {client}: {outcome} after {seconds:.1f} s",
                 ktmail_event=CONNECTION, listener=factory.admission.listener,
                 client=self._client, outcome=self._outcome,
                 seconds=factory.clock.seconds() - self._started_at)


class AdmissionFactory(policies.WrappingFactory):
    """``AdmissionFactory(wrapped, admission, clock, refusal=None)``.

    ``refusal(per_client: bool) -> bytes`` is what a refused client is told
    on a plain-text listener; None closes without a word (implicit TLS).
    """

    protocol = AdmittedProtocol
    noisy = False

    def __init__(self, wrapped_factory, admission, clock, refusal=None):
        super().__init__(wrapped_factory)
        self.admission = admission
        self.clock = clock
        self.refusal = refusal

    def logPrefix(self):
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        return inner() if inner else type(self.wrappedFactory).__name__
