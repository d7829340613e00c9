"""The operator-only listener (``[listen] metrics``): Prometheus metrics at
``GET /metrics`` and a liveness answer at ``GET /``.

It is meant for the monitoring network or localhost (``tcp:9100:interface=
127.0.0.1``), never the internet: it has no login. What it shows is
services/metrics.py's; nothing here reads a store.
"""

from twisted.logger import Logger
from twisted.web import resource, server

from ktmail.web.site import GuardedSite

log = Logger()

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class MetricsPage(resource.Resource):
    isLeaf = True

    def __init__(self, report):
        super().__init__()
        self.report = report

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE)
        d = self.report.text()

        def done(text):
            if not request._disconnected:
                request.write(text.encode("utf-8"))
                request.finish()

        def failed(failure):
            log.failure("rendering /metrics failed", failure)
            if not request._disconnected:
                request.setResponseCode(500)
                request.write(b"metrics are unavailable; see the log\n")
                request.finish()
        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class OperatorRoot(resource.Resource):
    def __init__(self, report):
        super().__init__()
        self.putChild(b"metrics", MetricsPage(report))

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ktmail: metrics at /metrics\n"

    def getChild(self, path, request):
        if path == b"":
            return self
        return resource.NoResource()


def make_metrics_site(report, **kwargs):
    """The Site of the metrics listener."""
    return GuardedSite(OperatorRoot(report), **kwargs)
