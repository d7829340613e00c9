"""The root of the web listener: mounts every web surface and ``/healthz``.

One error mapper turns service errors into HTTP answers; anything else is
a 500 with the detail in the log only.
"""

import json

import attrs
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()


@attrs.define(slots=False)  # Klein binds routes through the instance __dict__
class WebRoot:
    """``health_checks``: name -> callable returning a Deferred that fails
    when that dependency (database, mail store) is unusable."""

    health_checks: dict = attrs.field(factory=dict)
    app = Klein()

    @app.route("/healthz", methods=["GET", "HEAD"])
    async def healthz(self, request):
        results = {}
        healthy = True
        for name, check in sorted(self.health_checks.items()):
            try:
                await defer.maybeDeferred(check)
                results[name] = "ok"
            except Exception:
                log.failure("health check {name} failed", name=name)
                results[name] = "failing"
                healthy = False
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps({"status": "ok" if healthy else "failing", "checks": results})

    def resource(self):
        return self.app.resource()
