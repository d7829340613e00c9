"""The HTTP transport of the web listener: body-size guard, upload split and
security headers, for every request before any page code runs.

Invariants:

- a request body larger than its path's limit is refused with 413 as soon
  as ``Content-Length`` says so (before a byte of it is read), or, for a
  chunked body, as soon as the excess arrives; nothing beyond the limit
  is buffered. Forms get ``form_limit`` (a few MiB); paths under
  ``upload_prefixes`` get ``upload_limit`` (a 50 MiB message plus MIME
  overhead);
- bodies on upload paths are never parsed by twisted.web (whose
  multipart parser holds the whole body in memory several times over):
  twisted.web spools them to a temporary file as they arrive and the page
  reads ``request.content`` with a streaming parser; at most
  ``max_uploads`` of them run at once (503 beyond that);
- every answer carries a strict Content-Security-Policy (no inline script
  or style, no framing), ``nosniff``, ``same-origin`` referrers and ``no-store``
  unless a page says otherwise; HSTS when the request came over TLS.
"""

from twisted.web import http, server

MiB = 1024 * 1024

SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'"),
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",  # "no-referrer" would make POSTs send Origin: null
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=(), payment=()",
    b"cache-control": b"no-store",
}


class GuardedRequest(server.Request):
    """A Request that enforces its site's body limits and adds the headers."""

    _refused = False
    _upload = False
    _limit = None
    _received = 0

    def gotLength(self, length):
        site = self.channel.site
        path = getattr(self.channel, "_path", b"") or b""
        self._upload = site.is_upload_path(path)
        self._limit = site.upload_limit if self._upload else site.form_limit
        if length is not None and length > self._limit:
            self._refuse(413, b"Content Too Large", self._too_large_text(site))
            return
        if self._upload:
            if site.active_uploads >= site.max_uploads:
                self._refuse(503, b"Service Unavailable",
                             b"Too many uploads at once; try again in a minute.\n")
                return
            # stream to a temporary file; the page parses it
            self._parsePOSTFormSubmission = False
            site.active_uploads += 1
            self.notifyFinish().addBoth(site.upload_done)
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self._refuse(413, b"Content Too Large", self._too_large_text(self.channel.site))
            return
        super().handleContentChunk(data)

    def _too_large_text(self, site):
        if self._upload:
            mb = (site.upload_limit - MiB) // MiB
            return (f"The attachments are larger than the limit of {mb} MB in total; go back "
                    f"and choose smaller files.\n").encode()
        return b"The request is too large for this server.\n"

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self, code, reason, body):
        """Answer at once and close: the rest of the body is never read."""
        self._refused = True
        if self.content is not None:
            self.content.close()
            self.content = None
        # no "100 Continue" after this answer
        self.requestHeaders.removeHeader(b"expect")
        head = [b"HTTP/1.1 %d %s" % (code, reason),
                b"Content-Type: text/plain; charset=utf-8",
                b"Content-Length: %d" % len(body),
                b"Connection: close"]
        head += [k + b": " + v for k, v in SECURITY_HEADERS.items()]
        self.channel.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.channel.loseConnection()

    def process(self):
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        if self.isSecure():
            self.setHeader(b"strict-transport-security", b"max-age=31536000")
        super().process()


#: while a request body arrives, at least this many bytes per ``timeOut``
#: seconds (about 270 bytes/s with the default minute: any real link does
#: far better; a "slow POST" trickling a byte a minute does not)
MIN_BODY_BYTES_PER_PERIOD = 16 * 1024


class GuardedChannel(http.HTTPChannel):
    """An HTTPChannel that does not wait for ever on a slow client.

    Twisted's channel resets its idle timer on every byte, so a client
    sending a byte a minute (slowloris), or a request body a byte a minute,
    would hold the connection for days. Here a request's head must be
    complete within ``timeOut`` seconds of its first byte, and while its
    body arrives each ``timeOut`` seconds must bring at least
    MIN_BODY_BYTES_PER_PERIOD bytes; either failing aborts the connection.
    Between requests Twisted's idle timer (``timeOut``) applies."""

    _stall_timer = None
    _reading_body = False
    _body_bytes = 0

    def dataReceived(self, data):
        if self._reading_body:
            self._body_bytes += len(data)
        elif self._stall_timer is None and data and not self._handlingRequest:
            self._arm(self._stalled)                # a head: a deadline from its first byte
        super().dataReceived(data)

    def allHeadersReceived(self):
        self._disarm()
        super().allHeadersReceived()
        if self.length != 0 and self.transport is not None and not self._handlingRequest:
            self._reading_body = True               # length N, or None when chunked
            self._body_bytes = 0
            self._arm(self._body_check)

    def allContentReceived(self):
        self._reading_body = False
        self._disarm()
        super().allContentReceived()

    def connectionLost(self, reason):
        self._reading_body = False
        self._disarm()
        super().connectionLost(reason)

    def _arm(self, what):
        self._disarm()
        if self.timeOut:
            self._stall_timer = self.callLater(self.timeOut, what)

    def _disarm(self):
        if self._stall_timer is not None:
            if self._stall_timer.active():
                self._stall_timer.cancel()
            self._stall_timer = None

    def _body_check(self):
        self._stall_timer = None
        if self._body_bytes < MIN_BODY_BYTES_PER_PERIOD:
            return self._stalled()
        self._body_bytes = 0
        self._arm(self._body_check)

    def _stalled(self):
        self._stall_timer = None
        self._reading_body = False
        if self.transport is not None:
            self.transport.abortConnection()


class GuardedSite(server.Site):
    """``Site`` with the body limits of GuardedRequest, the timers of
    GuardedChannel and no tracebacks."""

    requestFactory = GuardedRequest
    displayTracebacks = False

    def protocol(self):
        # Twisted's own factory (_genericHTTPChannelProtocolFactory), with
        # our channel: the wrapper negotiates HTTP/2 where available
        return http._GenericHTTPChannelProtocol(GuardedChannel())

    def __init__(self, resource, *, form_limit=2 * MiB, upload_limit=51 * MiB,
                 upload_prefixes=(), max_uploads=20, **kwargs):
        super().__init__(resource, **kwargs)
        self.form_limit = form_limit
        self.upload_limit = upload_limit
        self.upload_prefixes = tuple(p.encode() if isinstance(p, str) else p
                                     for p in upload_prefixes)
        self.max_uploads = max_uploads
        self.active_uploads = 0

    def is_upload_path(self, path):
        path = path.split(b"?", 1)[0]
        return any(path.startswith(p) for p in self.upload_prefixes)

    def upload_done(self, result=None):
        self.active_uploads -= 1

    def refusal(self, per_client):
        """A 503 answer for a connection the listener does not admit."""
        body = (b"Too many connections from your address; try again in a minute.\n"
                if per_client else b"The server is too busy; try again in a minute.\n")
        head = [b"HTTP/1.1 503 Service Unavailable",
                b"Content-Type: text/plain; charset=utf-8",
                b"Content-Length: %d" % len(body),
                b"Retry-After: 60",
                b"Connection: close"]
        return b"\r\n".join(head) + b"\r\n\r\n" + body
