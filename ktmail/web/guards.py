"""What runs around every page handler: login, CSRF, form decoding and the
one mapping of errors to what a person sees.

Handlers of the portal and the webmail are Klein methods wrapped by one of

- ``@page(kind)``: a GET page that needs a logged-in ``kind`` session;
  without one the browser goes to that surface's login page;
- ``@action(kind)``: a state-changing POST: same-origin check (``Origin``
  and ``Sec-Fetch-Site``), a live session, and the session's CSRF token
  in the ``csrf`` field, all before the handler runs;
- ``@login_action``: the login POST itself (no session yet): same-origin
  check and the double-submit login token.

Every POST route of every surface carries one of these (a test walks the
route tables); a route that needs none says why in ``csrf_exempt``.

``describe_error(_, exc)`` is the web's single mapping of ktmail errors to
(field, translated text); ``failure_page`` turns anything a handler raised
into a calm page: KtmailErrors with their text, anything else a 500 whose
detail goes only to the log.
"""

import functools
from urllib.parse import urlsplit

import attrs
from twisted.logger import Logger
from twisted.web.template import tags
from werkzeug.exceptions import HTTPException

from ktmail import errors
from ktmail.model import MAX_PASSWORD_BYTES, MIN_PASSWORD_LENGTH, USERNAME_RULES
from ktmail.web import pages, sessions
from ktmail.web.i18n import Catalogues

log = Logger()

#: where each kind of session logs in
LOGIN_PAGES = {sessions.CUSTOMER: "/admin/", sessions.MAILBOX: "/webmail/"}


def N_(message):
    """Marks a message for the catalogue without translating it here."""
    return message


#: model.USERNAME_RULES, marked for the catalogue (a test keeps them equal)
USERNAME_RULES_TEXT = N_("2-32 characters: lower-case letters a-z, digits, '.', '_' or '-', "
                         "starting with a letter")


class BadForm(Exception):
    """The request body is not a form we can read (not UTF-8, …)."""


@attrs.define
class WebContext:
    """What every web surface shares: sessions, languages, the clock."""

    sessions: sessions.SessionStore
    catalogues: Catalogues
    clock: object   # IReactorTime

    def translator(self, request):
        return self.catalogues.for_request(request)

    def session(self, request, kind):
        return self.sessions.get(sessions.session_id_from(request, kind), kind)

    def start_session(self, request, kind, account, account_id):
        """Log in: a new session with a new id (the old one is dropped)."""
        session = self.sessions.create(kind, account, account_id,
                                       replacing=sessions.session_id_from(request, kind))
        sessions.set_session_cookie(request, session)
        return session

    def end_session(self, request, kind):
        session_id = sessions.session_id_from(request, kind)
        if session_id:
            self.sessions.destroy(session_id)
        sessions.clear_session_cookie(request, kind)

    def login_token(self, request):
        """The token for a login form; sets its cookie (no server state)."""
        nonce = sessions.login_nonce_from(request)
        if not nonce or len(nonce) > 64:
            nonce = self.sessions.new_login_nonce()
            sessions.set_login_cookie(request, nonce)
        return self.sessions.login_token(nonce)


def client_address(request):
    """The client's IP (the throttle key), as the TCP peer sees it."""
    peer = request.getClientAddress()
    return getattr(peer, "host", "") or ""


def same_origin(request):
    """Did the browser send this from one of our own pages? (Fetch
    metadata first, then Origin; old clients send neither and are left
    to the token check.)"""
    fetch_site = request.getHeader(b"sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in (b"same-origin", b"none"):
        return False
    origin = request.getHeader(b"origin")
    if origin is None:
        return True
    host = request.getHeader(b"host")
    if origin == b"null" or host is None:
        return False
    try:
        netloc = urlsplit(origin.decode("ascii")).netloc
    except (UnicodeDecodeError, ValueError):
        return False
    return netloc.lower() == host.decode("ascii", "replace").lower()


def read_form(request):
    """{name: first value} of a submitted form, as text."""
    form = {}
    for key, values in (request.args or {}).items():
        try:
            name = key.decode("utf-8")
            form[name] = values[0].decode("utf-8") if values else ""
        except (UnicodeDecodeError, AttributeError):
            raise BadForm() from None
        if "\0" in form[name]:
            raise BadForm()
    return form


def _forbidden(web, request, _):
    return failure_page(web, request, None, status=403, title=_("This form has expired"),
                        text=_("The page was open too long or came from elsewhere. Go back, "
                               "reload the page and try again."))


def page(kind):
    """A GET page for a logged-in ``kind`` session:
    ``handler(self, request, session, _, **url_args)``."""
    def decorate(fn):
        @functools.wraps(fn)
        async def wrapper(self, request, *args, **kwargs):
            _ = self.web.translator(request)
            session = self.web.session(request, kind)
            if session is None:
                return pages.redirect(request, LOGIN_PAGES[kind])
            return await fn(self, request, session, _, *args, **kwargs)
        return wrapper
    return decorate


def action(kind):
    """A state-changing POST of a logged-in ``kind`` session:
    ``handler(self, request, session, _, form, **url_args)``."""
    def decorate(fn):
        @functools.wraps(fn)
        async def wrapper(self, request, *args, **kwargs):
            _ = self.web.translator(request)
            if not same_origin(request):
                return _forbidden(self.web, request, _)
            session = self.web.session(request, kind)
            if session is None:
                return pages.redirect(request, LOGIN_PAGES[kind] + "?expired=1")
            try:
                form = read_form(request)
            except BadForm:
                return _forbidden(self.web, request, _)
            if not self.web.sessions.check_csrf(session, form.get("csrf")):
                return _forbidden(self.web, request, _)
            return await fn(self, request, session, _, form, *args, **kwargs)
        wrapper.csrf_checked = True
        return wrapper
    return decorate


def login_action(fn):
    """The login POST: ``handler(self, request, _, form)``."""
    @functools.wraps(fn)
    async def wrapper(self, request, *args, **kwargs):
        _ = self.web.translator(request)
        if not same_origin(request):
            return _forbidden(self.web, request, _)
        try:
            form = read_form(request)
        except BadForm:
            return _forbidden(self.web, request, _)
        if not self.web.sessions.check_login_token(sessions.login_nonce_from(request),
                                                   form.get("csrf")):
            return _forbidden(self.web, request, _)
        return await fn(self, request, _, form, *args, **kwargs)
    wrapper.csrf_checked = True
    return wrapper


# --- the one error mapper ------------------------------------------------------------

def password_problem(_, password):
    """Why model.check_password refused ``password``, in the page's language."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return _("Too short: use at least {n} characters.").format(n=MIN_PASSWORD_LENGTH)
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return _("Too long: use at most {n} characters.").format(n=MAX_PASSWORD_BYTES)
    return _("Use letters, digits, spaces and punctuation only (no control characters).")


def describe_error(_, exc, *, password="", limit=None):
    """-> (form field or None, text to show) for a KtmailError."""
    field = exc.field
    if isinstance(exc, errors.LoginThrottled):
        minutes = max(1, ((exc.retry_after or 60) + 59) // 60)
        return None, _.n("Too many failed logins. Try again in {n} minute.",
                         "Too many failed logins. Try again in {n} minutes.",
                         minutes).format(n=minutes)
    if isinstance(exc, errors.AuthFailed):
        return None, _("Wrong username or password.")
    if isinstance(exc, errors.LimitReached):
        if limit:
            return None, _("You already have {n} mailboxes, the most allowed. Remove one "
                           "before adding another.").format(n=limit)
        return None, _("The limit has been reached.")
    if isinstance(exc, errors.AlreadyExists):
        if field == "address":
            return "local_part", _("That address is taken; choose another.")
        if field in ("username", "login"):
            return "username", _("That username is taken; choose another.")
        return field, _("That name is already taken; choose another.")
    if isinstance(exc, errors.ValidationError):
        if field == "username":
            return field, _("Not a valid username.") + " " + _(USERNAME_RULES) + "."
        if field in ("local_part", "address"):
            return "local_part", _("Not a valid address: use letters, digits and . _ - "
                                   "(at most 64, no dot first, last or twice in a row).")
        if field == "domain":
            return field, _("Choose one of our domains.")
        if field == "password":
            return field, password_problem(_, password)
    if isinstance(exc, errors.NotFound):
        return None, _("That mailbox does not exist (any more).")
    if isinstance(exc, errors.StoreUnavailable):
        return None, _("The service is busy; try again in a few minutes.")
    return field, _(exc.text)


_STATUS = [
    (errors.LoginThrottled, 429), (errors.AuthFailed, 401), (errors.NotFound, 404),
    (errors.AlreadyExists, 409), (errors.LimitReached, 409), (errors.StoreUnavailable, 503),
    (errors.KtmailError, 400),
]


def error_status(exc):
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def failure_page(web, request, failure, *, status=None, title=None, text=None):
    """The page for anything a handler did not handle itself."""
    _ = web.translator(request)
    exc = failure.value if failure is not None else None
    if isinstance(exc, HTTPException):
        status = exc.code
        if status == 404:
            title, text = _("Page not found"), _("There is no page at this address.")
        elif status == 405:
            title, text = _("Not allowed"), _("This page cannot be used that way.")
        else:
            title, text = _("Bad request"), _("The request could not be understood.")
    elif isinstance(exc, errors.KtmailError):
        status = error_status(exc)
        title, text = _("That did not work"), describe_error(_, exc)[1]
    elif exc is not None:
        log.failure("web request {method} {path} failed", failure,
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("utf-8", "replace"))
        status = 500
        title = _("Something went wrong")
        text = _("Something went wrong on our side. Please try again in a moment; if it "
                 "keeps happening, contact customer service.")
    body = [tags.p(text, class_="lead"), tags.p(tags.a(_("Back to the start page"), href="/"))]
    try:
        return pages.render(request, pages.layout(
            _, title=title, section=_("Mail"), content=body,
            here=request.path.decode("utf-8", "replace")), status=status or 400)
    except Exception:
        log.failure("rendering the error page failed")
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Something went wrong on our side. Please try again in a moment.\n"
