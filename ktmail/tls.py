"""TLS: certificate loading into context factories, TLS 1.2 or later only.

``server_context(tls_config)`` is used for implicit-TLS listeners (``ssl:``
endpoints without their own key) and for STARTTLS on port 25.
"""

from twisted.internet import ssl

# Mozilla's "intermediate" TLS 1.2 list; TLS 1.3 suites are always on.
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def load_pem(tls_config):
    """-> (PrivateCertificate) from the configured PEM files."""
    with open(tls_config.cert, "rb") as f:
        cert_pem = f.read()
    with open(tls_config.key, "rb") as f:
        key_pem = f.read()
    return ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)


def chain_certificates(tls_config):
    """Intermediate certificates that follow the leaf in the cert file."""
    with open(tls_config.cert, "rb") as f:
        data = f.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + b for b in data.split(marker)[1:]]
    return [ssl.Certificate.loadPEM(b).original for b in blocks[1:]]


def server_context(tls_config):
    """A server context factory: TLS >= 1.2, modern ciphers."""
    private = load_pem(tls_config)
    return ssl.CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        extraCertChain=chain_certificates(tls_config),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS),
    )


def as_plain_endpoint(description):
    """For an ``ssl:`` listener that uses the configured certificate, the
    same listener as ``tcp:`` (ktmail then wraps the factory in TLS itself,
    so that every listener shares one context, TLS >= 1.2, that can be
    reloaded); None for every other description."""
    prefix = ""
    if description.startswith("haproxy:"):
        prefix, description = "haproxy:", description[len("haproxy:"):]
    if description.startswith("ssl:") and "privateKey=" not in description:
        return prefix + "tcp:" + description[len("ssl:"):]
    return None
