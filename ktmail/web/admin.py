"""The "Manage services" portal at /admin/: a customer manages its mailboxes.

Invariants: only a customer login opens it (mailbox credentials are
refused by AuthService, which looks in the customer table only); a
customer sees and changes only its own mailboxes (every mailbox route
looks the username up among the session's customer's mailboxes); every
change goes through AccountService, the same service ``ktmail-admin``
uses, so the rules (five mailboxes, username and address rules, password
length) cannot differ; every change is a POST checked by ``guards.action``.
"""

import time

import attrs
from klein import Klein
from twisted.internet import defer
from twisted.web.template import tags

from ktmail import errors
from ktmail.model import (
    MIN_PASSWORD_LENGTH,
    USERNAME_RULES,
    check_password,
    normalize_username,
)
from ktmail.web import clientconfig, guards, pages
from ktmail.web.guards import action, login_action, page
from ktmail.web.pages import FormErrors, field, fmt, post_form
from ktmail.web.sessions import CUSTOMER, MAILBOX

DAY = 86400
#: show "will be deleted on DATE" when DATE is this close
DELETION_NOTICE_DAYS = 60
MiB = 1024 * 1024
ROOT = "/admin/"


def day(t):
    """A calendar date in the server's time zone: 2026-11-27."""
    return time.strftime("%Y-%m-%d", time.localtime(t))


def megabytes(n):
    value = n / MiB
    return f"{value:.0f}" if value >= 100 or value == 0 else f"{value:.1f}"


@attrs.define(slots=False)  # Klein binds routes through the instance __dict__
class AdminPortal:
    web: guards.WebContext
    accounts: object     # services.accounts.AccountService
    auth: object         # services.auth.AuthService
    mail: object         # store.IMailStore (usage only)
    limits: object       # config.Limits
    domains: tuple
    settings: object     # services.clientsetup.ClientSettings
    app = Klein()

    # --- helpers --------------------------------------------------------------------

    def _page(self, request, _, title, content, session=None, here=ROOT, status=200):
        return pages.render(request, pages.layout(
            _, title=title, section=_("Manage services"), content=content, here=here,
            home=ROOT, account=session.account if session else None,
            logout=ROOT + "logout", csrf_token=session.csrf_token if session else None),
            status=status)

    async def _own_mailbox(self, session, username):
        """The session customer's mailbox ``username``; NoSuchMailbox otherwise."""
        for mailbox in await self.accounts.list_mailboxes(session.account_id):
            if mailbox.username == username:
                return mailbox
        raise errors.NoSuchMailbox()

    def _actor(self, session):
        return f"portal:{session.account}"

    @app.handle_errors(Exception)
    def failed(self, request, failure):
        return guards.failure_page(self.web, request, failure)

    # --- login ---------------------------------------------------------------------

    def _login_page(self, request, _, form=None, errors_=None, status=200):
        form = form or {}
        errors_ = errors_ or FormErrors()
        expired = b"expired" in (request.args or {})
        content = [
            tags.p(_("Here you create and remove your mailboxes, change their passwords "
                     "and find the settings for your devices."), class_="lead"),
            pages.notice(_("You were logged out. Please log in again.") if expired else "",
                         kind="info"),
            tags.section(class_="card narrow")(
                pages.error_summary(_, errors_),
                post_form(ROOT + "login", self.web.login_token(request),
                          field(_("Customer account"), "login", value=form.get("login", ""),
                                autocomplete="username", autofocus=True,
                                hint=_("The customer account you got from customer "
                                       "service, not a mailbox's username.")),
                          field(_("Password"), "password", type="password",
                                autocomplete="current-password"),
                          pages.button(_("Log in")))),
            tags.p(fmt(_("Looking for your mail? Go to {webmail}."),
                       webmail=tags.a(_("Webmail"), href="/webmail/")), class_="aside"),
        ]
        return self._page(request, _, _("Log in to Manage services"), content, status=status)

    @app.route("/", methods=["GET", "HEAD"])
    async def home(self, request):
        _ = self.web.translator(request)
        session = self.web.session(request, CUSTOMER)
        if session is None:
            return self._login_page(request, _)
        return await self._dashboard(request, session, _)

    @app.route("/login", methods=["POST"])
    @login_action
    async def login(self, request, _, form):
        try:
            customer = await self.auth.authenticate_customer(
                form.get("login", ""), form.get("password", ""),
                guards.client_address(request))
        except (errors.AuthFailed, errors.LoginThrottled) as e:
            found = FormErrors()
            found.add(None, guards.describe_error(_, e)[1])
            if isinstance(e, errors.LoginThrottled) and e.retry_after:
                request.setHeader(b"retry-after", str(int(e.retry_after)).encode())
            return self._login_page(request, _, form, found, status=guards.error_status(e))
        self.web.start_session(request, CUSTOMER, customer.login, customer.id)
        return pages.redirect(request, ROOT)

    @app.route("/login", methods=["GET"])
    def login_get(self, request):
        return pages.redirect(request, ROOT)

    @app.route("/logout", methods=["POST"])
    @action(CUSTOMER)
    async def logout(self, request, session, _, form):
        self.web.end_session(request, CUSTOMER)
        return pages.redirect(request, ROOT)

    # --- the mailbox list -------------------------------------------------------------

    async def _dashboard(self, request, session, _):
        mailboxes = await self.accounts.list_mailboxes(session.account_id)
        usage = await defer.gatherResults(
            [self._usage(m) for m in mailboxes]) if mailboxes else []
        now = self.web.clock.seconds()
        limit = self.limits.mailboxes_per_customer
        cards = [self._mailbox_card(_, session, m, used, now)
                 for m, used in zip(mailboxes, usage)]
        if not cards:
            cards = [tags.p(_("You have no mailboxes yet. Create the first one: it takes a "
                              "minute."), class_="empty")]
        can_add = len(mailboxes) < limit
        toolbar = tags.div(class_="toolbar")(
            tags.p(_.n("{n} of {limit} mailbox in use", "{n} of {limit} mailboxes in use",
                       limit).format(n=len(mailboxes), limit=limit), class_="count"),
            tags.a(_("New mailbox"), href=ROOT + "mailboxes/new",
                   class_="btn btn-primary" + ("" if can_add else " btn-disabled"),
                   **({} if can_add else {"aria-disabled": "true"})))
        content = [
            pages.notice(session.pop_notice()),
            toolbar,
            tags.div(class_="mailboxes")(*cards),
            tags.section(class_="card quiet")(
                tags.h2(_("Your account")),
                tags.ul(class_="links")(
                    tags.li(tags.a(_("Change the password of your customer account"),
                                   href=ROOT + "account/password")),
                    tags.li(tags.a(_("Settings for mail programs and phones"),
                                   href="/help")),
                    tags.li(tags.a(_("Open the webmail"), href="/webmail/")))),
        ]
        return self._page(request, _, _("Your mailboxes"), content, session)

    def _usage(self, mailbox):
        """Bytes used, or None when the store cannot tell right now."""
        d = defer.maybeDeferred(self.mail.usage, mailbox.id)

        def unknown(failure):
            guards.log.failure("usage of mailbox {id} unknown", failure, id=mailbox.id)
        return d.addErrback(unknown)

    def _mailbox_card(self, _, session, m, used, now):
        base = f"{ROOT}mailboxes/{m.username}/"
        quota_mb = megabytes(m.quota_bytes)
        rows = [
            (_("Username"), tags.code(m.username)),
            (_("Storage"), [tags.meter(value=str(used), min="0", max=str(m.quota_bytes),
                                       high=str(int(m.quota_bytes * 0.8)),
                                       optimum="0"),
                            " ", _("{used} MB of {quota} MB").format(
                                used=megabytes(used), quota=quota_mb)]
             if used is not None else _("unknown just now")),
            (_("Last login"), day(m.last_login) if m.last_login else _("never")),
        ]
        delete_at = m.last_activity + self.limits.inactive_delete_days * DAY
        warning = ""
        if delete_at - now <= DELETION_NOTICE_DAYS * DAY:
            warning = tags.p(class_="warning")(
                _("Will be deleted on {date} unless someone logs in.").format(
                    date=day(delete_at)))
        return tags.article(class_="card mailbox")(
            tags.h2(str(m.address), class_="address"),
            tags.dl(*[[tags.dt(k), tags.dd(v)] for k, v in rows]),
            warning,
            tags.div(class_="actions")(
                tags.a(_("Change password"), href=base + "password", class_="btn btn-quiet"),
                tags.a(_("Set up on iPhone/iPad"), href=base + "profile.mobileconfig",
                       class_="btn btn-quiet", download=f"{m.username}.mobileconfig"),
                tags.a(_("Delete"), href=base + "delete", class_="btn btn-danger-quiet")))

    # --- create --------------------------------------------------------------------

    def _create_page(self, request, _, session, form=None, found=None, status=200,
                     count=None):
        form = form or {}
        found = found or FormErrors()
        limit = self.limits.mailboxes_per_customer
        full = count is not None and count >= limit
        domain = form.get("domain") or self.domains[0]
        password_hint = _("At least {n} characters. A few unrelated words are strong and "
                          "easy to remember.").format(n=MIN_PASSWORD_LENGTH)
        content = [
            pages.notice(_("You already have {n} mailboxes, the most allowed. Remove one "
                           "before adding another.").format(n=limit) if full else "",
                         kind="info"),
            tags.section(class_="card")(
                pages.error_summary(_, found),
                post_form(
                    ROOT + "mailboxes/new", session.csrf_token,
                    tags.fieldset(
                        tags.legend(_("E-mail address")),
                        tags.div(class_="address-row")(
                            field(_("Name before the @"), "local_part",
                                  value=form.get("local_part", ""),
                                  error=found.get("local_part"), autocomplete="off",
                                  maxlength=64, autofocus=True,
                                  extra={"autocapitalize": "none", "spellcheck": "false"}),
                            tags.span("@", class_="at", **{"aria-hidden": "true"}),
                            pages.select(_("Domain"), "domain",
                                         [(d, d) for d in self.domains], value=domain,
                                         error=found.get("domain")))),
                    field(_("Username"), "username", value=form.get("username", ""),
                          error=found.get("username"), autocomplete="off", maxlength=32,
                          hint=_("For logging in to the mailbox: ") + _(USERNAME_RULES)
                          + ".",
                          extra={"autocapitalize": "none", "spellcheck": "false"}),
                    field(_("Password"), "password", type="password",
                          error=found.get("password"), autocomplete="new-password",
                          hint=password_hint,
                          extra={"minlength": str(MIN_PASSWORD_LENGTH),
                                 "data-strength": "s-password"}),
                    pages.strength_hint(_, "s-password"),
                    field(_("Password again"), "password2", type="password",
                          error=found.get("password2"), autocomplete="new-password",
                          extra={"data-same-as": "f-password",
                                 "data-differ": _("The two passwords differ.")}),
                    tags.div(class_="buttons")(
                        pages.button(_("Create mailbox")),
                        tags.a(_("Cancel"), href=ROOT, class_="btn btn-quiet"))))]
        return self._page(request, _, _("New mailbox"), content, session,
                          here=ROOT + "mailboxes/new", status=status)

    @app.route("/mailboxes/new", methods=["GET", "HEAD"])
    @page(CUSTOMER)
    async def create_form(self, request, session, _):
        count = len(await self.accounts.list_mailboxes(session.account_id))
        return self._create_page(request, _, session, count=count)

    @app.route("/mailboxes/new", methods=["POST"])
    @action(CUSTOMER)
    async def create(self, request, session, _, form):
        found = FormErrors()
        password = form.get("password", "")
        # every field checked with the model's rules, so all problems show at once;
        # AccountService checks them again with the cap and uniqueness
        checks = [
            lambda: self.accounts.parse_address(local_part=form.get("local_part", ""),
                                                domain=form.get("domain", "")),
            lambda: normalize_username(form.get("username", "")),
            lambda: check_password(password),
        ]
        for check in checks:
            try:
                check()
            except errors.ValidationError as e:
                found.add(*guards.describe_error(_, e, password=password))
        if "password" not in found.fields and password != form.get("password2", ""):
            found.add("password2", _("The two passwords differ; type the same one twice."))
        status = 400
        if not found:
            try:
                mailbox = await self.accounts.add_mailbox(
                    session.account, form.get("username", ""),
                    self.accounts.parse_address(local_part=form["local_part"],
                                                domain=form["domain"]),
                    password, self._actor(session))
            except errors.KtmailError as e:
                if isinstance(e, errors.NoSuchCustomer):
                    raise
                found.add(*guards.describe_error(
                    _, e, password=password, limit=self.limits.mailboxes_per_customer))
                status = guards.error_status(e)
            else:
                session.data["notice"] = _(
                    "Mailbox {address} created. Its username is {username}.").format(
                        address=str(mailbox.address), username=mailbox.username)
                return pages.redirect(request, ROOT)
        return self._create_page(request, _, session, form, found, status=status)

    # --- delete --------------------------------------------------------------------

    def _delete_page(self, request, _, session, mailbox, error=None, status=200):
        address = str(mailbox.address)
        content = [
            tags.section(class_="card danger")(
                tags.p(fmt(_("The mailbox {address} and all its mail will be deleted for "
                             "good: every message in every folder. This cannot be undone."),
                           address=tags.strong(address)), class_="lead"),
                tags.p(_("Mail sent to the address afterwards will be refused.")),
                post_form(
                    f"{ROOT}mailboxes/{mailbox.username}/delete", session.csrf_token,
                    field(_("To confirm, type the address"), "confirm", error=error,
                          autocomplete="off", autofocus=True,
                          hint=fmt(_("Type {address}"), address=tags.code(address)),
                          extra={"data-confirm": address, "autocapitalize": "none",
                                 "spellcheck": "false"}),
                    tags.div(class_="buttons")(
                        pages.button(_("Delete mailbox and all its mail"), kind="danger"),
                        tags.a(_("Cancel"), href=ROOT, class_="btn btn-quiet"))))]
        return self._page(request, _, _("Delete {address}?").format(address=address),
                          content, session, here=f"{ROOT}mailboxes/{mailbox.username}/delete",
                          status=status)

    @app.route("/mailboxes/<username>/delete", methods=["GET", "HEAD"])
    @page(CUSTOMER)
    async def delete_form(self, request, session, _, username):
        mailbox = await self._own_mailbox(session, username)
        return self._delete_page(request, _, session, mailbox)

    @app.route("/mailboxes/<username>/delete", methods=["POST"])
    @action(CUSTOMER)
    async def delete(self, request, session, _, form, username):
        mailbox = await self._own_mailbox(session, username)
        typed = form.get("confirm", "").strip().lower()
        if typed != str(mailbox.address):
            return self._delete_page(
                request, _, session, mailbox, status=400,
                error=_("That is not the address of this mailbox; nothing was deleted."))
        await self.accounts.remove_mailbox(mailbox.username, self._actor(session),
                                           "by the customer in the portal")
        session.data["notice"] = _("Mailbox {address} and all its mail have been "
                                   "deleted.").format(address=str(mailbox.address))
        return pages.redirect(request, ROOT)

    # --- passwords -----------------------------------------------------------------

    def _password_fields(self, _, found, current=False):
        items = []
        if current:
            items.append(field(_("Current password"), "current", type="password",
                               error=found.get("current"), autocomplete="current-password",
                               autofocus=True))
        items += [
            field(_("New password"), "password", type="password", error=found.get("password"),
                  autocomplete="new-password", autofocus=not current,
                  hint=_("At least {n} characters. A few unrelated words are strong and "
                         "easy to remember.").format(n=MIN_PASSWORD_LENGTH),
                  extra={"minlength": str(MIN_PASSWORD_LENGTH),
                         "data-strength": "s-password"}),
            pages.strength_hint(_, "s-password"),
            field(_("New password again"), "password2", type="password",
                  error=found.get("password2"), autocomplete="new-password",
                  extra={"data-same-as": "f-password",
                                 "data-differ": _("The two passwords differ.")}),
        ]
        return items

    def _check_new_password(self, _, form, found):
        password = form.get("password", "")
        try:
            check_password(password)
        except errors.ValidationError as e:
            found.add(*guards.describe_error(_, e, password=password))
        if "password" not in found.fields and password != form.get("password2", ""):
            found.add("password2", _("The two passwords differ; type the same one twice."))
        return password

    def _mailbox_password_page(self, request, _, session, mailbox, found=None, status=200):
        found = found or FormErrors()
        action_url = f"{ROOT}mailboxes/{mailbox.username}/password"
        content = [tags.section(class_="card")(
            tags.p(fmt(_("New password for {address} (username {username}). Mail programs "
                         "that use the old password will ask for the new one."),
                       address=tags.strong(str(mailbox.address)),
                       username=tags.code(mailbox.username))),
            pages.error_summary(_, found),
            post_form(action_url, session.csrf_token,
                      tags.input(type="text", name="username", value=mailbox.username,
                                 autocomplete="username", hidden="hidden", readonly="readonly"),
                      *self._password_fields(_, found),
                      tags.div(class_="buttons")(
                          pages.button(_("Change password")),
                          tags.a(_("Cancel"), href=ROOT, class_="btn btn-quiet"))))]
        return self._page(request, _, _("Change password"), content, session,
                          here=action_url, status=status)

    @app.route("/mailboxes/<username>/password", methods=["GET", "HEAD"])
    @page(CUSTOMER)
    async def mailbox_password_form(self, request, session, _, username):
        mailbox = await self._own_mailbox(session, username)
        return self._mailbox_password_page(request, _, session, mailbox)

    @app.route("/mailboxes/<username>/password", methods=["POST"])
    @action(CUSTOMER)
    async def mailbox_password(self, request, session, _, form, username):
        mailbox = await self._own_mailbox(session, username)
        found = FormErrors()
        password = self._check_new_password(_, form, found)
        if found:
            return self._mailbox_password_page(request, _, session, mailbox, found, 400)
        await self.accounts.set_mailbox_password(mailbox.username, password,
                                                 self._actor(session))
        # whoever was logged into the webmail with the old password is out
        self.web.sessions.destroy_account(MAILBOX, mailbox.username)
        session.data["notice"] = _("The password of {address} has been changed.").format(
            address=str(mailbox.address))
        return pages.redirect(request, ROOT)

    def _account_password_page(self, request, _, session, found=None, status=200):
        found = found or FormErrors()
        url = ROOT + "account/password"
        content = [tags.section(class_="card narrow")(
            tags.p(fmt(_("The password of your customer account {login}, the one you log in "
                         "here with."), login=tags.code(session.account))),
            pages.error_summary(_, found),
            post_form(url, session.csrf_token,
                      tags.input(type="text", name="login", value=session.account,
                                 autocomplete="username", hidden="hidden", readonly="readonly"),
                      *self._password_fields(_, found, current=True),
                      tags.div(class_="buttons")(
                          pages.button(_("Change password")),
                          tags.a(_("Cancel"), href=ROOT, class_="btn btn-quiet"))))]
        return self._page(request, _, _("Your password"), content, session, here=url,
                          status=status)

    @app.route("/account/password", methods=["GET", "HEAD"])
    @page(CUSTOMER)
    async def account_password_form(self, request, session, _):
        return self._account_password_page(request, _, session)

    @app.route("/account/password", methods=["POST"])
    @action(CUSTOMER)
    async def account_password(self, request, session, _, form):
        found = FormErrors()
        try:
            await self.auth.authenticate_customer(session.account, form.get("current", ""),
                                                  guards.client_address(request))
        except errors.AuthFailed:
            found.add("current", _("That is not your current password."))
        except errors.LoginThrottled as e:
            found.add("current", guards.describe_error(_, e)[1])
        password = self._check_new_password(_, form, found)
        if found:
            return self._account_password_page(request, _, session, found, 400)
        await self.accounts.set_customer_password(session.account, password,
                                                  self._actor(session))
        self.web.sessions.destroy_account(CUSTOMER, session.account, keep=session.id)
        session.data["notice"] = _("Your password has been changed.")
        return pages.redirect(request, ROOT)

    # --- device set-up ---------------------------------------------------------------

    @app.route("/mailboxes/<username>/profile.mobileconfig", methods=["GET"])
    @page(CUSTOMER)
    async def apple_profile(self, request, session, _, username):
        mailbox = await self._own_mailbox(session, username)
        request.setHeader(b"content-type", b"application/x-apple-aspen-config")
        request.setHeader(b"content-disposition",
                          f'attachment; filename="{mailbox.username}.mobileconfig"'.encode())
        return clientconfig.apple_profile(self.settings, mailbox, _("Mail"))

