"""The webmail at /webmail/: login with a mailbox's username and password.

Invariants: only mailbox credentials open it (AuthService looks in the
mailbox table only, and records the login, which resets the inactivity
clock); the session is a ``MAILBOX`` session, separate from any portal
session in the same browser. Reading and writing mail are not here yet:
after logging in the user sees where to read mail meanwhile.
"""

import attrs
from klein import Klein
from twisted.web.template import tags

from ktmail import errors
from ktmail.web import guards, pages
from ktmail.web.guards import action, login_action
from ktmail.web.pages import FormErrors, field, fmt, post_form
from ktmail.web.sessions import MAILBOX

ROOT = "/webmail/"
#: paths whose bodies are streamed to disk, never parsed in memory
#: (attachments, up to the message size limit; see web/site.py)
UPLOAD_PREFIXES = (ROOT + "upload",)


@attrs.define(slots=False)  # Klein binds routes through the instance __dict__
class Webmail:
    web: guards.WebContext
    auth: object        # services.auth.AuthService
    app = Klein()

    def _page(self, request, _, title, content, session=None, status=200):
        return pages.render(request, pages.layout(
            _, title=title, section=_("Webmail"), content=content, here=ROOT, home=ROOT,
            account=session.account if session else None, logout=ROOT + "logout",
            csrf_token=session.csrf_token if session else None), status=status)

    @app.handle_errors(Exception)
    def failed(self, request, failure):
        return guards.failure_page(self.web, request, failure)

    def _login_page(self, request, _, form=None, found=None, status=200):
        form = form or {}
        found = found or FormErrors()
        expired = b"expired" in (request.args or {})
        content = [
            pages.notice(_("You were logged out. Please log in again.") if expired else "",
                         kind="info"),
            tags.section(class_="card narrow")(
                pages.error_summary(_, found),
                post_form(ROOT + "login", self.web.login_token(request),
                          field(_("Username"), "username", value=form.get("username", ""),
                                autocomplete="username", autofocus=True,
                                hint=_("The mailbox's username, not the e-mail address."),
                                extra={"autocapitalize": "none", "spellcheck": "false"}),
                          field(_("Password"), "password", type="password",
                                autocomplete="current-password"),
                          pages.button(_("Log in")))),
            tags.p(fmt(_("Forgot the username or the password? The mailbox's owner finds the "
                         "username and can set a new password in {portal}."),
                       portal=tags.a(_("Manage services"), href="/admin/")), class_="aside"),
        ]
        return self._page(request, _, _("Log in to your mail"), content, status=status)

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request):
        _ = self.web.translator(request)
        session = self.web.session(request, MAILBOX)
        if session is None:
            return self._login_page(request, _)
        content = [
            tags.section(class_="card")(
                tags.p(fmt(_("You are logged in as {username}."),
                           username=tags.code(session.account)), class_="lead"),
                tags.p(_("Reading and writing mail in the browser is not available yet. "
                         "Until it is, read your mail in a mail program or on your phone.")),
                tags.p(tags.a(_("How to set up a mail program"), href="/help",
                              class_="btn btn-primary")))]
        return self._page(request, _, _("Webmail"), content, session)

    @app.route("/login", methods=["POST"])
    @login_action
    async def login(self, request, _, form):
        try:
            mailbox = await self.auth.authenticate_mailbox(
                form.get("username", ""), form.get("password", ""),
                guards.client_address(request), "web")
        except (errors.AuthFailed, errors.LoginThrottled) as e:
            found = FormErrors()
            found.add(None, guards.describe_error(_, e)[1])
            if isinstance(e, errors.LoginThrottled) and e.retry_after:
                request.setHeader(b"retry-after", str(int(e.retry_after)).encode())
            return self._login_page(request, _, form, found, status=guards.error_status(e))
        self.web.start_session(request, MAILBOX, mailbox.username, mailbox.id)
        return pages.redirect(request, ROOT)

    @app.route("/login", methods=["GET"])
    def login_get(self, request):
        return pages.redirect(request, ROOT)

    @app.route("/logout", methods=["POST"])
    @action(MAILBOX)
    async def logout(self, request, session, _, form):
        self.web.end_session(request, MAILBOX)
        return pages.redirect(request, ROOT)
