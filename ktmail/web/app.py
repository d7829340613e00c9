"""The root of the web listener: mounts every web surface and ``/healthz``.

    /                 a start page pointing at the three below
    /admin/           the "Manage services" portal (web/admin.py)
    /webmail/         the webmail (web/webmail.py)
    /help             settings for mail programs (web/clientconfig.py)
    /.well-known/autoconfig/mail/config-v1.1.xml, /mail/config-v1.1.xml
                      Thunderbird autoconfig
    /autodiscover/autodiscover.xml   Outlook Autodiscover (POST)
    /lang/<code>      the language switch (a cookie, then back)
    /static/          CSS, script, icon; no directory listing
    /healthz          200 when the database answers

``make_site`` wraps it in the GuardedSite (body limits, headers). Errors:
each surface maps them in ``guards.failure_page``; anything else is a 500
with the detail in the log only.
"""

import json
import os
from urllib.parse import urlsplit

import attrs
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import ForbiddenResource, NoResource, Resource
from twisted.web.template import tags

from ktmail.services.clientsetup import ClientSettings
from ktmail.web import guards, pages
from ktmail.web.admin import AdminPortal
from ktmail.web.clientconfig import ClientConfigPages
from ktmail.web.i18n import LANG_COOKIE, LANGUAGES, Catalogues
from ktmail.web.sessions import SessionStore
from ktmail.web.site import GuardedSite
from ktmail.web.uploads import UploadStore
from ktmail.web.webmail import UPLOAD_PREFIXES, Webmail

log = Logger()

STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                ".svg": b"image/svg+xml", ".png": b"image/png", ".ico": b"image/x-icon"}
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class StaticFiles(Resource):
    """/static/: the few small files of ``directory``, read once at start.
    Only those names answer (no listing, no path can leave the folder);
    cacheable for an hour."""

    isLeaf = True

    def __init__(self, directory):
        super().__init__()
        self.files = {}
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            kind = STATIC_TYPES.get(os.path.splitext(name)[1])
            if kind and os.path.isfile(path):
                with open(path, "rb") as f:
                    self.files[name.encode()] = (kind, f.read())

    def render_GET(self, request):
        name = b"/".join(request.postpath)
        if name not in self.files:
            return (ForbiddenResource() if not name else NoResource()).render(request)
        kind, body = self.files[name]
        request.setHeader(b"content-type", kind)
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return body

    render_HEAD = render_GET


def local_path(text, default="/"):
    """``text`` if it is a path on this site (no scheme, no host), else
    ``default``: redirects never lead elsewhere."""
    if not text or not text.startswith("/") or text.startswith("//") or "\\" in text:
        return default
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in text):
        return default
    return text


@attrs.define(slots=False)  # Klein binds routes through the instance __dict__
class WebRoot:
    """``health_checks``: name -> callable returning a Deferred that fails
    when that dependency (database, mail store) is unusable. The surfaces
    are optional so that a bare root (tests, health only) still serves."""

    health_checks: dict = attrs.field(factory=dict)
    web: object = None          # guards.WebContext
    portal: object = None       # admin.AdminPortal
    webmail: object = None      # webmail.Webmail
    clients: object = None      # clientconfig.ClientConfigPages
    app = Klein()

    def __attrs_post_init__(self):
        self._static = StaticFiles(STATIC_DIR)

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

    @app.handle_errors(Exception)
    def failed(self, request, failure):
        if self.web is None:
            log.failure("web request failed", failure)
            request.setResponseCode(500)
            return b"Internal error\n"
        return guards.failure_page(self.web, request, failure)

    # --- the surfaces ------------------------------------------------------------------

    @app.route("/", methods=["GET", "HEAD"])
    def start(self, request):
        _ = self.web.translator(request)
        choices = [
            ("/webmail/", _("Webmail"), _("Read and send mail in the browser.")),
            ("/admin/", _("Manage services"),
             _("Create mailboxes, change passwords, set up devices.")),
            ("/help", _("Help"), _("Settings for mail programs and phones.")),
        ]
        content = tags.div(class_="choices")(*[
            tags.a(href=href, class_="card choice")(tags.h2(title), tags.p(text))
            for href, title, text in choices])
        return pages.render(request, pages.layout(
            _, title=_("Your e-mail"), section=_("Mail"), content=content, here="/"))

    @app.route("/admin", methods=["GET", "HEAD"])
    def admin_slash(self, request):
        return pages.redirect(request, "/admin/", status=301)

    @app.route("/admin/", branch=True)
    def admin_pages(self, request):
        return self.portal.app.resource()

    @app.route("/webmail", methods=["GET", "HEAD"])
    def webmail_slash(self, request):
        return pages.redirect(request, "/webmail/", status=301)

    @app.route("/webmail/", branch=True)
    def webmail_pages(self, request):
        return self.webmail.app.resource()

    @app.route("/static/", branch=True, methods=["GET", "HEAD"])
    def static(self, request):
        return self._static

    @app.route("/lang/<code>", methods=["GET"])
    def language(self, request, code):
        """The language switch: remembers the choice for a year and goes back."""
        values = request.args.get(b"next") or [b"/"]
        back = local_path(values[0].decode("utf-8", "replace"))
        if code in LANGUAGES:
            secure = request.isSecure()
            request.addCookie(LANG_COOKIE, code.encode(), path=b"/", max_age=b"31536000",
                              secure=secure, httpOnly=True, sameSite="lax")
        return pages.redirect(request, back)

    # --- client set-up -------------------------------------------------------------------

    @app.route("/.well-known/autoconfig/mail/config-v1.1.xml", methods=["GET", "HEAD"])
    @app.route("/mail/config-v1.1.xml", methods=["GET", "HEAD"])
    def autoconfig(self, request):
        return self.clients.autoconfig(request)

    @app.route("/autodiscover/autodiscover.xml", methods=["POST"])
    @app.route("/Autodiscover/Autodiscover.xml", methods=["POST"])
    def autodiscover(self, request):
        return self.clients.autodiscover(request)

    autodiscover.csrf_exempt = ("a lookup by mail programs: changes nothing, reads no "
                                "cookie, tells only what /help shows anyway")

    @app.route("/help", methods=["GET", "HEAD"])
    def help(self, request):
        return self.clients.help(request)

    def resource(self):
        return self.app.resource()


def _inline(fn, *args):
    return defer.maybeDeferred(fn, *args)


def build_root(config, clock, accounts, auth, mail, health_checks=None, sessions=None,
               mailboxes=None, submission=None, delivery=None, run_in_thread=None,
               spam_rules=None):
    """Every web surface wired to the services of one daemon. Without
    ``mailboxes`` the webmail can only log in; without ``submission`` it
    cannot send. ``run_in_thread`` runs file reading and sanitising (inline
    when None, as in tests)."""
    web = guards.WebContext(sessions=sessions or SessionStore(clock),
                            catalogues=Catalogues(), clock=clock)
    settings = ClientSettings.from_config(config)
    uploads = UploadStore(os.path.join(config.data_dir, "webmail"))
    return WebRoot(
        health_checks=health_checks or {}, web=web,
        portal=AdminPortal(web=web, accounts=accounts, auth=auth, mail=mail,
                           limits=config.limits, domains=config.domains, settings=settings),
        webmail=Webmail(web=web, auth=auth, accounts=accounts, mailboxes=mailboxes,
                        submission=submission, delivery=delivery, uploads=uploads,
                        limits=config.limits, hostname=config.hostname,
                        run_in_thread=run_in_thread or _inline, spam_rules=spam_rules),
        clients=ClientConfigPages(web=web, accounts=accounts, settings=settings))


def make_site(root, limits=None, **kwargs):
    """The Site for the web listener: forms capped at 2 MiB, webmail
    uploads streamed up to the message size limit (plus MIME overhead)."""
    upload_limit = (limits.max_message_bytes if limits else 50 * 1024 * 1024) + 1024 * 1024
    return GuardedSite(root.resource(), upload_limit=upload_limit,
                       upload_prefixes=UPLOAD_PREFIXES, **kwargs)
