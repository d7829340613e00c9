"""Streaming transforms of stored message bytes, chunk by chunk, so that a
50 MiB message is never held in memory.

- ``CRLFNormalizer``: every line ending becomes CRLF (RFC 5322 §2.3); bare
  CR and bare LF are line endings too, so that no later component can see
  a line break that another did not (the root of SMTP smuggling).
- ``RelaxedBodyHasher``: the DKIM "relaxed" body canonicalization (RFC 6376
  §3.4.4) hashed as the body streams past.
- ``MessageScan``: one pass over a message that yields its header block,
  the relaxed body hash, whether it has 8-bit bytes, and its size.

Pure: no I/O beyond the file object handed in, no clock.
"""

import hashlib
import re

CHUNK = 64 * 1024
#: larger header blocks are not parsed for DKIM (the body hash still covers
#: every byte; a message with such a header block goes out unsigned)
MAX_HEADER_BLOCK = 1024 * 1024

_SPACES = re.compile(rb"  +")


def _compress_wsp(data):
    """Every run of SP and HTAB -> one SP (the C-speed path when there are none)."""
    data = data.replace(b"\t", b" ")
    return _SPACES.sub(b" ", data) if b"  " in data else data


class CRLFNormalizer:
    """Feed chunks in, get CRLF-normalised chunks out; ``close()`` flushes.

    A chunk that ends in CR is held back until the next one tells whether a
    LF follows, so the output never ends inside a CRLF pair.
    """

    def __init__(self):
        self._pending_cr = False

    def feed(self, chunk):
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._pending_cr = True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk.replace(b"\n", b"\r\n")

    def close(self):
        if self._pending_cr:
            self._pending_cr = False
            return b"\r\n"
        return b""


class RelaxedBodyHasher:
    """SHA-256 of the relaxed-canonicalized body, fed CRLF-normalised
    chunks. Matches dkimpy's ``Relaxed.canonicalize_body`` byte for byte."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self._partial = b""
        self._empty_lines = 0

    def feed(self, chunk):
        data = self._partial + chunk
        cut = data.rfind(b"\r\n")
        if cut < 0:
            self._partial = data
            return
        self._partial = data[cut + 2:]
        # whole lines at once: compress WSP runs, drop WSP before CRLF
        lines = _compress_wsp(data[:cut + 2]).replace(b" \r\n", b"\r\n")
        text = lines.rstrip(b"\r\n")       # only CRLF pairs can end it (normalised input)
        trailing = (len(lines) - len(text)) // 2
        if not text:
            self._empty_lines += trailing   # empty lines: held back, maybe the end
            return
        if self._empty_lines:
            self._hash.update(b"\r\n" * self._empty_lines)
        self._hash.update(text + b"\r\n")
        self._empty_lines = trailing - 1

    def digest(self):
        """The body hash; call once, after the last ``feed``."""
        last = _compress_wsp(self._partial)
        if last:
            # a last line without CRLF: dkimpy compresses it and adds CRLF
            if self._empty_lines:
                self._hash.update(b"\r\n" * self._empty_lines)
            self._hash.update(last + b"\r\n")
        return self._hash.digest()


class MessageScan:
    """One streaming pass over a message (see module docstring)."""

    def __init__(self):
        self.headers = b""        # the header block, CRLF-normalised, without the blank line
        self.header_complete = False
        self.eight_bit = False
        self.size = 0
        self._normalizer = CRLFNormalizer()
        self._body = RelaxedBodyHasher()
        self._head = bytearray()
        self._in_body = False

    def feed(self, raw):
        self.size += len(raw)
        if not self.eight_bit and not raw.isascii():
            self.eight_bit = True
        self._route(self._normalizer.feed(raw))

    def _route(self, chunk):
        if self._in_body:
            self._body.feed(chunk)
            return
        self._head += chunk
        if self._head.startswith(b"\r\n"):
            end, skip = 0, 2           # no header fields at all
        else:
            end = self._head.find(b"\r\n\r\n")
            skip = 2                   # the blank line after the last field's CRLF
            if end >= 0:
                end += 2               # keep the last field's CRLF
        if end < 0:
            if len(self._head) > MAX_HEADER_BLOCK:
                # not signable: stop collecting (the hash no longer matters)
                self._head = bytearray()
                self._in_body = True
            return
        self.headers = bytes(self._head[:end])
        self.header_complete = end <= MAX_HEADER_BLOCK
        rest = bytes(self._head[end + skip:])
        self._head = bytearray()
        self._in_body = True
        self._body.feed(rest)

    def close(self):
        """Finish the pass; returns the relaxed body hash."""
        self._route(self._normalizer.close())
        if not self._in_body:
            # headers only, no blank line: the whole message is the header block
            self.headers = bytes(self._head)
            if self.headers and not self.headers.endswith(b"\r\n"):
                self.headers += b"\r\n"
            self.header_complete = len(self.headers) <= MAX_HEADER_BLOCK
            self._in_body = True
        return self._body.digest()

    @classmethod
    def of_file(cls, f):
        scan = cls()
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            scan.feed(chunk)
        scan.body_hash = scan.close()
        return scan


def header_block(f, limit=64 * 1024):
    """The (CRLF-normalised) header block of the message in ``f``, at most
    ``limit`` bytes, for DSNs' text/rfc822-headers part."""
    normalizer = CRLFNormalizer()
    head = b""
    while len(head) <= limit:
        chunk = f.read(8192)
        if not chunk:
            head += normalizer.close()
            break
        head += normalizer.feed(chunk)
        if head.startswith(b"\r\n"):
            return b""
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            return head[:end + 2]
    if head.startswith(b"\r\n"):
        return b""
    head = head[:limit]
    cut = head.rfind(b"\r\n")
    return head[:cut + 2] if cut >= 0 else b""
