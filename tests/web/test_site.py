"""The HTTP transport under every page: body limits (413 before the body is
read), the streamed upload path, security headers, static files, errors."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.resource import Resource

from ktmail.web.site import GuardedSite, MiB
from tests.web.support import WebHarness


class Echo(Resource):
    """Answers with what twisted.web made of the body."""

    isLeaf = True

    def render_POST(self, request):
        request.content.seek(0, 2)
        size = request.content.tell()
        return f"args={len(request.args)} size={size}".encode()


class Connection:
    def __init__(self, site):
        self.transport = StringTransport()
        site.reactor = task.Clock()  # the idle timeout, never reached
        self.channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1234))
        self.channel.makeConnection(self.transport)

    def send(self, data):
        self.channel.dataReceived(data)
        return self.transport.value()


class BodyLimitTests(unittest.TestCase):
    def site(self):
        return GuardedSite(Echo(), form_limit=1 * MiB, upload_limit=5 * MiB,
                           upload_prefixes=["/webmail/upload"], max_uploads=1)

    def test_declared_oversize_body_is_refused_before_it_is_read(self):
        """Content-Length above the form limit: 413 at once, connection closed,
        nothing buffered."""
        conn = Connection(self.site())
        out = conn.send(b"POST /admin/login HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), out)
        self.assertNotIn(b"100 Continue", out)
        self.assertTrue(conn.transport.disconnecting)
        conn.send(b"x" * 65536)

    def test_chunked_body_is_cut_off_when_it_passes_the_limit(self):
        """A chunked body without a length is counted as it arrives."""
        conn = Connection(self.site())
        conn.send(b"POST /admin/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        out = b""
        for _ in range(20):
            out = conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if conn.transport.disconnecting:
                break
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:100])
        self.assertTrue(conn.transport.disconnecting)

    def test_small_form_passes(self):
        conn = Connection(self.site())
        body = b"a=1&b=2"
        out = conn.send(b"POST /admin/login HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.assertIn(b"200 OK", out)
        self.assertIn(b"args=2 size=7", out)

    def test_upload_path_has_its_own_limit_and_is_not_parsed(self):
        """Upload paths take bodies up to the upload limit, spooled to a file
        and left unparsed (a streaming parser reads request.content)."""
        site = self.site()
        conn = Connection(site)
        body = b"--b\r\nContent-Disposition: form-data; name=f\r\n\r\n" + b"y" * (2 * MiB) \
            + b"\r\n--b--\r\n"
        out = conn.send(b"POST /webmail/upload/1 HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body))
        self.assertEqual(out, b"")
        self.assertEqual(site.active_uploads, 1)
        # a second upload at once is turned away (max_uploads=1)
        other = Connection(site)
        refused = other.send(b"POST /webmail/upload/2 HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 10\r\n\r\n")
        self.assertTrue(refused.startswith(b"HTTP/1.1 503"))
        out = conn.send(body)
        self.assertIn(b"args=0 size=%d" % len(body), out)
        self.assertEqual(site.active_uploads, 0)
        out = Connection(site).send(b"POST /webmail/upload/3 HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: %d\r\n\r\n" % (6 * MiB))
        self.assertTrue(out.startswith(b"HTTP/1.1 413"))


class HeaderAndErrorTests(unittest.TestCase):
    def setUp(self):
        self.h = WebHarness(self)
        self.browser = self.h.browser()

    def test_security_headers_on_pages(self):
        page = self.browser.get("/admin/")
        csp = page.header("content-security-policy")
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                          "frame-ancestors 'none'", "form-action 'self'"):
            self.assertIn(directive, csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(page.header("x-frame-options"), "DENY")
        self.assertEqual(page.header("x-content-type-options"), "nosniff")
        self.assertEqual(page.header("referrer-policy"), "same-origin")
        self.assertEqual(page.header("cache-control"), "no-store")
        self.assertEqual(page.header("strict-transport-security"), "max-age=31536000")
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")
        self.assertNotIn("style=", page.body)
        self.assertNotIn("<script>", page.body)
        plain = self.h.browser(secure=False).get("/admin/")
        self.assertIsNone(plain.header("strict-transport-security"))

    def test_static_files_without_listing(self):
        """/static/ serves the stylesheet and script, cacheable; the folder
        itself is not listed and nothing outside it is reachable."""
        css = self.browser.get("/static/ktmail.css")
        self.assertEqual(css.status, 200)
        self.assertIn("text/css", css.header("content-type"))
        self.assertEqual(css.header("cache-control"), "public, max-age=3600")
        self.assertEqual(self.browser.get("/static/ktmail.js").status, 200)
        self.assertEqual(self.browser.get("/static/").status, 403)
        self.assertEqual(self.browser.get("/static/../app.py").status, 404)
        self.assertEqual(self.browser.get("/static/%2e%2e/app.py").status, 404)

    def test_unknown_page_is_a_calm_404(self):
        page = self.browser.get("/no/such/page")
        self.assertEqual(page.status, 404)
        self.assertIn("Sidan hittades inte", page.text())

    def test_unexpected_error_is_a_500_without_details(self):
        """A bug shows a generic page; the detail goes only to the log."""
        class Broken:
            def list_mailboxes(self, customer_id=None):
                raise RuntimeError("secret internal detail")
        self.h.customer()
        self.browser.login_portal()
        self.h.root.portal.accounts = Broken()
        page = self.browser.get("/admin/")
        self.assertEqual(page.status, 500)
        self.assertIn("Något gick fel", page.text())
        self.assertNotIn("secret internal detail", page.body)
        self.assertNotIn("Traceback", page.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_healthz(self):
        page = self.browser.get("/healthz")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.body, '{"status": "ok", "checks": {}}')

    def test_oversize_form_through_the_whole_stack(self):
        """A 3 MiB form body to the portal is answered 413."""
        page = self.browser.post("/admin/login", {"login": "x" * (3 * MiB), "password": "y"})
        self.assertEqual(page.status, 413)


class SlowClientTests(unittest.TestCase):
    """GuardedChannel: a client that trickles its request is cut off."""

    def connect(self):
        site = GuardedSite(Echo(), timeout=60)
        clock = task.Clock()
        site.reactor = clock
        transport = StringTransport()
        channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1234))
        channel.makeConnection(transport)
        return clock, channel, transport

    def test_a_request_head_a_byte_at_a_time(self):
        """Slowloris: a request head must be complete within the timeout
        of its first byte, however steadily its bytes come."""
        clock, channel, transport = self.connect()
        for byte in b"GET / HTTP/1.1\r\nHost: exa":
            channel.dataReceived(bytes([byte]))
            clock.advance(2)
        self.assertFalse(transport.disconnecting)
        clock.advance(10)
        self.assertTrue(transport.disconnected)

    def test_a_slow_body(self):
        """A body that brings less than MIN_BODY_BYTES_PER_PERIOD a minute
        ends the connection; a steady one is read."""
        clock, channel, transport = self.connect()
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 100000\r\n\r\n")
        channel.dataReceived(b"x" * 100)
        clock.advance(61)
        self.assertTrue(transport.disconnected)

    def test_a_steady_body_and_keep_alive(self):
        """A body arriving at a real-world pace is read to the end; the next
        request on the same connection works."""
        clock, channel, transport = self.connect()
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 60000\r\n\r\n")
        for _ in range(3):
            clock.advance(50)
            channel.dataReceived(b"x" * 20000)
        self.assertIn(b"size=60000", transport.value())
        self.assertFalse(transport.disconnecting)
        clock.advance(30)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
        self.assertIn(b"size=1", transport.value())
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
