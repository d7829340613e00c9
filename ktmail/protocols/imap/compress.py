"""COMPRESS=DEFLATE (RFC 4978): the compression layer of an IMAP session.

Owns the two deflate streams of a connection once ``COMPRESS DEFLATE``
succeeded: ``DeflateTransport`` sits between the session and its
transport (TLS under it: compression comes before encryption, RFC 4978
§6) and compresses what the session writes; ``Inflater`` turns the
client's compressed bytes back into the session's input.

Invariants:
- raw deflate (RFC 1951, no zlib header), as RFC 4978 §3 says;
- every ``write`` ends with a sync flush (Z_SYNC_FLUSH, RFC 4978 §4): each
  response, or each slice of a long one, reaches the client whole at once,
  so a client never waits for bytes held in the compressor; nothing is
  held here between writes, and back-pressure (``registerProducer``) is
  the transport's own;
- the client's input is inflated in slices of at most ``SLICE`` bytes,
  and only while the session wants input (``wanted()``): a small
  compressed burst that inflates to gigabytes is never held in memory
  (the unread rest stays compressed, and the transport is paused by the
  session as for plain input).
"""

import zlib

from zope.interface import directlyProvidedBy, directlyProvides, providedBy

#: inflated bytes handed to the session at once
SLICE = 64 * 1024
#: compression level: a good ratio for mail text at a modest CPU cost
LEVEL = 6


class DeflateTransport:
    """A transport wrapper that deflates every write (see the module docstring).
    Everything else (producers, peer, closing) is the wrapped transport's."""

    def __init__(self, transport):
        self.transport = transport
        self._deflate = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        # whatever the wrapped transport offers (ISSLTransport ...) stays visible
        directlyProvides(self, *(list(providedBy(transport)) + list(directlyProvidedBy(self))))

    def write(self, data):
        if not data:
            return
        out = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(out)

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def __getattr__(self, name):
        return getattr(self.transport, name)


class Inflater:
    """The client's deflate stream: ``feed`` compressed bytes, then ``drain``
    hands inflated slices to ``deliver`` while ``wanted()`` says so."""

    def __init__(self, deliver, wanted):
        self._inflate = zlib.decompressobj(-15)
        self._pending = b""
        self._deliver = deliver
        self._wanted = wanted

    def feed(self, data):
        self._pending += data

    @property
    def pending(self):
        return len(self._pending)

    def drain(self):
        """Inflate and deliver while wanted. zlib.error on a corrupt stream."""
        while self._wanted():
            chunk = self._inflate.decompress(self._pending, SLICE)
            self._pending = self._inflate.unconsumed_tail
            if not chunk:
                return
            self._deliver(chunk)
