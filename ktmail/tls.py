"""TLS: certificates -> server contexts, one policy for every listener,
reloadable without dropping a connection.

Every TLS connection ktmail accepts, implicit (``ssl:`` listeners, with
the configured ``tls_cert``/``tls_key`` or their own ``privateKey=``) or
STARTTLS on port 25, gets its context from a ``ReloadableServerContext``:
TLS 1.2 or later, Mozilla's "intermediate" cipher list (TLS 1.3 suites
are always on), the leaf certificate plus the chain that follows it in
the PEM file.

Invariants:
- ``reload()`` builds the new context completely (and checks that the key
  matches the certificate) before it swaps it in; a bad file leaves the
  old context serving and says why in one line;
- connections keep the context they started with: a reload changes only
  the handshakes that start after it;
- a TLS connection whose handshake is not done ``handshake_timeout``
  seconds after it opened is aborted (a client that connects and sends
  nothing, or a byte a minute, costs a file descriptor for that long at
  most).
"""

import re

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
)
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from ktmail.config import TLSConfig

# Mozilla's "intermediate" TLS 1.2 list; TLS 1.3 suites are always on.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
#: seconds a client has to finish the TLS handshake
HANDSHAKE_TIMEOUT = 30.0


class CertificateError(Exception):
    """A certificate or key cannot be used; the text says which file and why."""


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError(f"cannot read the {what} {path}: {e.strerror}") from None


def _pem_certificates(data):
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + block for block in data.split(marker)[1:]]


def load_pem(tls_config):
    """-> PrivateCertificate from the configured PEM files."""
    cert_pem = _read(tls_config.cert, "certificate")
    key_pem = _read(tls_config.key, "key")
    try:
        return ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    except Exception as e:  # noqa: BLE001 - pyOpenSSL raises several types for bad PEM
        raise CertificateError(f"{tls_config.cert} / {tls_config.key}: not a usable "
                               f"certificate and key ({type(e).__name__})") from None


def chain_certificates(tls_config):
    """Intermediate certificates: those that follow the leaf in the cert
    file, then those of ``tls_config.chain``."""
    blocks = _pem_certificates(_read(tls_config.cert, "certificate"))[1:]
    if tls_config.chain:
        blocks += _pem_certificates(_read(tls_config.chain, "certificate chain"))
    try:
        return [ssl.Certificate.loadPEM(b).original for b in blocks]
    except Exception:  # noqa: BLE001 - as above
        raise CertificateError(f"{tls_config.cert}: a chain certificate is not "
                               "readable PEM") from None


def server_options(tls_config):
    """CertificateOptions for a server: TLS >= 1.2, modern ciphers.
    Raises CertificateError."""
    private = load_pem(tls_config)
    try:
        options = ssl.CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            extraCertChain=chain_certificates(tls_config),
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
        )
        options.getContext()  # builds the SSL.Context: the key must fit the certificate
    except SSL.Error as e:
        raise CertificateError(f"{tls_config.cert} / {tls_config.key}: the key does not "
                               f"match the certificate ({e})") from None
    return options


def describe(options):
    """One line about the certificate a context serves (subject, expiry,
    SHA-256 fingerprint), for the log."""
    cert = options.certificate
    subject = ",".join(f"{k.decode()}={v.decode()}" for k, v in
                       cert.get_subject().get_components())
    fingerprint = cert.digest("sha256").decode().replace(":", "").lower()
    expiry = cert.get_notAfter().decode()
    return (f"{subject} valid until {expiry[:4]}-{expiry[4:6]}-{expiry[6:8]} "
            f"sha256 {fingerprint[:16]}")


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ReloadableServerContext:
    """A server context factory whose certificate can be replaced while
    the daemon runs (see the module docstring). Usable wherever Twisted
    takes a context factory: TLSMemoryBIOFactory, ``startTLS``."""

    def __init__(self, tls_config):
        self.tls_config = tls_config
        self._options = server_options(tls_config)

    @property
    def options(self):
        return self._options

    def describe(self):
        return describe(self._options)

    def load(self):
        """Read the files again -> the new CertificateOptions (not yet in
        use). Blocking file I/O: run it off the reactor thread."""
        return server_options(self.tls_config)

    def swap(self, options):
        """Serve ``options`` to handshakes that start from now on."""
        self._options = options

    def reload(self):
        """load() and swap(); raises CertificateError and keeps the old one."""
        self.swap(self.load())

    def getContext(self):
        return self._options.getContext()

    def serverConnectionForTLS(self, tls_protocol):
        return SSL.Connection(self._options.getContext(), None)


def server_context(tls_config):
    """A ReloadableServerContext for ``tls_config``."""
    return ReloadableServerContext(tls_config)


class _DeadlineTLSProtocol(BufferingTLSTransport):
    _deadline = None

    def makeConnection(self, transport):
        timeout = self.factory.handshake_timeout
        if timeout:
            self._deadline = self.factory.deadline_clock.callLater(timeout, self._too_slow)
        super().makeConnection(transport)

    def _too_slow(self):
        self._deadline = None
        if not self._handshakeDone and self.transport is not None:
            self.transport.abortConnection()

    def dataReceived(self, data):
        super().dataReceived(data)
        if self._deadline is not None and self._handshakeDone:
            self._deadline.cancel()
            self._deadline = None

    def connectionLost(self, reason):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connectionLost(reason)


class ServerTLSFactory(TLSMemoryBIOFactory):
    """Implicit TLS around a listener's factory, with a handshake deadline.

    ``ServerTLSFactory(context, wrapped_factory, clock, handshake_timeout)``."""

    protocol = _DeadlineTLSProtocol

    def __init__(self, context, wrapped_factory, clock, handshake_timeout=HANDSHAKE_TIMEOUT):
        super().__init__(context, False, wrapped_factory, clock)
        self.deadline_clock = clock
        self.handshake_timeout = handshake_timeout


# --- endpoint descriptions --------------------------------------------------------------

_UNESCAPED_COLON = re.compile(r"(?<!\\):")
#: ssl: options that describe TLS (ktmail applies them itself)
_TLS_OPTIONS = {"privateKey", "certKey", "extraCertChain", "sslmethod", "dhParameters"}


def split_tls(description):
    """For an ``ssl:`` listener (``haproxy:ssl:`` too): -> (the same
    listener as ``tcp:``, the TLSConfig of its own ``privateKey=``/
    ``certKey=``/``extraCertChain=``, or None when it uses the configured
    certificate). Any other description -> (description, False): ktmail
    then wraps the factory in TLS itself, so that every listener has the
    same policy, a handshake deadline and a reloadable certificate."""
    prefix = ""
    if description.startswith("haproxy:"):
        prefix, description = "haproxy:", description[len("haproxy:"):]
    if not description.startswith("ssl:"):
        return prefix + description, False
    parts = _UNESCAPED_COLON.split(description)[1:]
    kept, own = [], {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key in _TLS_OPTIONS:
            own[key] = value.replace("\\:", ":")
        else:
            kept.append(part)
    tls_config = None
    if "privateKey" in own:
        tls_config = TLSConfig(cert=own.get("certKey") or own["privateKey"],
                               key=own["privateKey"], chain=own.get("extraCertChain"))
    return prefix + ":".join(["tcp"] + kept), tls_config

