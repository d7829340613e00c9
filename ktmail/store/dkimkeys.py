"""Read-only view of the DKIM keys under ``<data_dir>/dkim/``.

The outbound queue owns the keys (it makes them and signs with them); this
module only derives what DNS must publish. Layout read here:
``<data_dir>/dkim/<domain>/<selector>.pem`` (or ``.key``), a PEM private
key (RSA or Ed25519), or ``<selector>.pub``, a PEM public key. Never
writes; a key that cannot be read is skipped, not fatal.
"""

import base64
import os
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

_SELECTOR = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z", re.IGNORECASE)


def _public_key(path):
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if path.endswith(".pub"):
        return serialization.load_pem_public_key(data)
    return serialization.load_pem_private_key(data, password=None).public_key()


def dkim_text(public_key):
    """The DKIM TXT value (RFC 6376 §3.6.1, RFC 8463) of a public key."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if isinstance(public_key, rsa.RSAPublicKey):
        der = public_key.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raise ValueError("not an RSA or Ed25519 key")


class DkimKeyDirectory:
    def __init__(self, data_dir):
        self.root = os.path.join(data_dir, "dkim")

    def public_records(self, domain):
        """-> [(selector, txt_value)] for ``domain``, sorted by selector."""
        folder = os.path.join(self.root, domain.lower())
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        found = {}
        for name in names:
            selector, ext = os.path.splitext(name)
            if ext not in (".pem", ".key", ".pub") or not _SELECTOR.match(selector):
                continue
            if selector in found:
                continue
            try:
                found[selector] = dkim_text(_public_key(os.path.join(folder, name)))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found.items())
