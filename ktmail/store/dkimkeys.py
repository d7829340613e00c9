"""DKIM signing keys on disk: ``<data_dir>/dkim/<domain>.<selector>.pem``.

One RSA 2048 key per signing domain, created on first use. Invariants: the
directory is mode 700 and every key file mode 600; a key file appears only
complete (written to a temporary name, fsynced, then hard-linked into
place, so that when the daemon and ``ktmail-admin`` create the same key at
once, the first one wins and both use it); keys are never overwritten.
Key generation and file I/O run through ``run_in_thread``.
"""

import base64
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from zope.interface import implementer

from ktmail.model import normalize_domain
from ktmail.store import IDkimKeyStore

DEFAULT_SELECTOR = "ktmail"
KEY_BITS = 2048


def txt_value(private_pem):
    """The DNS TXT value (RFC 6376 §3.6.1) for the key in ``private_pem``."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


@implementer(IDkimKeyStore)
class DiskDkimKeyStore:
    def __init__(self, data_dir, run_in_thread, selector=DEFAULT_SELECTOR):
        self.root = os.path.join(data_dir, "dkim")
        self.selector = selector
        self._run = run_in_thread
        self._cache = {}

    def _path(self, domain):
        return os.path.join(self.root, f"{domain}.{self.selector}.pem")

    def _load_or_create(self, domain):
        domain = normalize_domain(domain)
        path = self._path(domain)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        tmp = f"{path}.{os.getpid()}.{id(key)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # created meanwhile by another process: use that one
        finally:
            os.unlink(tmp)
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with open(path, "rb") as f:
            return f.read()

    def _private_key(self, domain):
        if domain not in self._cache:
            self._cache[domain] = self._load_or_create(domain)
        return self._cache[domain]

    def private_key(self, domain):
        return self._run(lambda: (self.selector, self._private_key(domain)))

    def public_record(self, domain):
        def record():
            pem = self._private_key(domain)
            return f"{self.selector}._domainkey.{normalize_domain(domain)}", txt_value(pem)
        return self._run(record)
