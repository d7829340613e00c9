"""DKIM signing of outbound mail (RFC 6376), with dkimpy.

The body is hashed while it streams from the file (``messagetext``), so
only the header block is held in memory; dkimpy canonicalizes the headers
and makes the RSA-SHA256 signature over them and our body hash. The scan
and the signature run on a thread. Canonicalization is relaxed/relaxed.

The signing domain is the From: header's domain when we may sign for it
(a hosted domain or the host name), else the envelope sender's, else the
host name: DMARC alignment needs the From: domain.
"""

import base64
import email.utils

import dkim
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.services.messagetext import MessageScan

log = Logger()

#: the signature covers these when present (frozen ones twice, so that
#: none can be added after signing)
SIGN_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                b"in-reply-to", b"references", b"mime-version", b"content-type",
                b"content-transfer-encoding", b"content-disposition", b"list-unsubscribe")
FROZEN = (b"from", b"subject", b"date", b"to", b"cc", b"reply-to", b"message-id")


class _HeaderOnlySigner(dkim.DKIM):
    """dkimpy's DKIM.sign with the body hash supplied by the caller."""

    def sign_with_body_hash(self, selector, domain, private_pem, body_hash, timestamp):
        pk = dkim.crypto.parse_pem_private_key(private_pem)
        canon = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        present = [name for name, _ in self.headers]
        lowered = {n.lower() for n in present}
        include = [h for h in SIGN_HEADERS if h in lowered]
        include += [h for h in FROZEN if h in lowered]
        if b"from" not in include:
            raise dkim.ParameterError("The From header field MUST be signed")
        self.include_headers = tuple(include)
        self.hasher = dkim.HASH_ALGORITHMS[self.signature_algorithm]
        fields = [
            (b"v", b"1"),
            (b"a", self.signature_algorithm),
            (b"c", canon.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(timestamp)).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            (b"b", b"0" * 60),
        ]
        value = self.gen_header(fields, include, canon, b"DKIM-Signature", pk)
        return b"DKIM-Signature: " + value


def _from_domain(headers):
    for name, value in headers:
        if name.lower() == b"from":
            text = value.decode("utf-8", "replace").replace("\r\n", "")
            addresses = email.utils.getaddresses([text])
            if addresses and "@" in addresses[0][1]:
                return addresses[0][1].rpartition("@")[2].lower().rstrip(">")
    return None


class DkimSigner:
    """``sign(file_opener, sender)`` -> Deferred[(dkim_header, eight_bit, size)].

    ``file_opener()`` opens the message for reading (called on a thread).
    ``dkim_header`` is b"" when the message cannot be signed (no From:
    header, or a header block over 1 MiB); that is logged.
    """

    def __init__(self, keys, run_in_thread, clock, signing_domains, default_domain):
        self.keys = keys
        self._run = run_in_thread
        self.clock = clock
        self.signing_domains = frozenset(signing_domains) | {default_domain}
        self.default_domain = default_domain

    @staticmethod
    def _scan(file_opener):
        with file_opener() as f:
            return MessageScan.of_file(f)

    def signing_domain(self, headers, sender):
        from_domain = _from_domain(headers)
        if from_domain in self.signing_domains:
            return from_domain
        sender_domain = sender.rpartition("@")[2].lower()
        if sender_domain in self.signing_domains:
            return sender_domain
        return self.default_domain

    @defer.inlineCallbacks
    def sign(self, file_opener, sender):
        scan = yield self._run(self._scan, file_opener)
        if not scan.header_complete:
            log.warn("outbound message not DKIM-signed: header block too large")
            return b"", scan.eight_bit, scan.size
        try:
            signer = _HeaderOnlySigner(scan.headers + b"\r\n")
        except dkim.DKIMException as e:
            log.warn("outbound message not DKIM-signed: {reason}", reason=str(e))
            return b"", scan.eight_bit, scan.size
        domain = self.signing_domain(signer.headers, sender)
        selector, pem = yield self.keys.private_key(domain)
        now = self.clock.seconds()
        try:
            header = yield self._run(signer.sign_with_body_hash, selector.encode("ascii"),
                                     domain.encode("ascii"), pem, scan.body_hash, now)
        except dkim.DKIMException as e:
            log.warn("outbound message not DKIM-signed: {reason}", reason=str(e))
            return b"", scan.eight_bit, scan.size
        return header, scan.eight_bit, scan.size


def published_record(keys, domain, signing_domains):
    """-> Deferred[(DNS name, TXT value)] for ``domain``'s key (created on
    first use); ValidationError for a domain we do not sign for."""
    domain = domain.strip().lower().rstrip(".")
    if domain not in signing_domains:
        return defer.fail(errors.ValidationError(
            f"ktmail does not sign mail for '{domain}': give one of the hosted domains "
            "or the host name."))
    return keys.public_record(domain)
