"""The webmail at /webmail/: read, write and file mail in the browser.

Invariants:
- only mailbox credentials open it (AuthService looks in the mailbox table
  only, records the login and so resets the inactivity clock); the session
  is a ``MAILBOX`` session, separate from any portal session;
- every request looks the session's mailbox up again: a mailbox removed
  (portal, ``ktmail-admin``) or re-created under the same username ends the
  session at its next request;
- every change is a POST checked by ``guards.action`` (same origin, live
  session, CSRF token), or, for the compose form (a streamed upload that
  twisted.web never parses), by the same checks done here with the token
  as the form's first field;
- all mail goes through the services: folders and messages through
  MailboxService live folders (IMAP sessions see every change at once,
  moves into and out of Spam train the filter), sending through
  SubmissionService (sender = the mailbox's address, the webmail's hourly
  recipient limit, remote recipients via the outbound queue);
- a message's HTML is shown only sanitised (web/htmlmail.py) in a sandboxed
  frame whose document has its own strict CSP; attachments are streamed
  from the message file and decoded on the way, never loaded whole, and
  always sent as downloads (or, for plain raster images, shown under the
  site's CSP with ``nosniff``);
- nothing of a message (subject, addresses, text) and no password is
  logged.
"""

import collections
import os
import re
import secrets
from urllib.parse import quote, urlsplit

import attrs
from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.template import tags
from zope.interface import implementer

from ktmail import errors
from ktmail.model import (
    FLAGS_ADD,
    FLAGS_REMOVE,
    INBOX,
    SEEN,
    SPAM_FOLDER,
    normalize_folder_name,
)
from ktmail.services import compose, messageview
from ktmail.services import search as mailsearch
from ktmail.services.delivery import Envelope
from ktmail.services.retention import days_until_expiry
from ktmail.web import guards, htmlmail, mailpages, pages, uploads
from ktmail.web.guards import action, login_action, page
from ktmail.web.mailpages import folder_title, folder_url, message_url
from ktmail.web.pages import FormErrors, field, fmt, post_form
from ktmail.web.sessions import MAILBOX
from ktmail.web.site import SECURITY_HEADERS

log = Logger()

ROOT = "/webmail/"
#: paths whose bodies are streamed to disk, never parsed in memory
#: (attachments, up to the message size limit; see web/site.py)
UPLOAD_PREFIXES = (ROOT + "upload",)
PAGE_SIZE = 50
FLAGGED = "\\Flagged"
ANSWERED = "\\Answered"
DRAFT = "\\Draft"
TRASH, SENT, DRAFTS = "Trash", "Sent", "Drafts"
MAX_COMPOSE_PER_SESSION = 20
MAX_GRANTS = 20_000
SORTS = ("date", "from", "subject", "size")
FORBIDDEN_IN_NAMES = ". / \\ * %"
SAFE_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp")


class MailboxGone(Exception):
    """The session's mailbox no longer exists (or is another one now)."""


@attrs.define
class ComposeState:
    """A message being written, kept in the session until sent or discarded."""

    id: str
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    attachments: list = attrs.Factory(list)       # of compose.Attachment
    in_reply_to: str | None = None
    references: str | None = None
    #: (folder, uid) of the message answered: flagged \Answered once sent
    answering: tuple | None = None
    #: UID of this message's last saved copy in Drafts
    saved_uid: int | None = None

    @property
    def attachment_bytes(self):
        return sum(a.size for a in self.attachments)


@attrs.frozen
class MailContext:
    mailbox: object
    quota: object
    folders: tuple          # names in display order
    unseen: dict            # name -> unseen messages


def content_disposition(kind, filename):
    """RFC 6266 with an RFC 8187 ``filename*`` for any non-ASCII name."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", filename) or "download"
    value = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value.encode("ascii")


def order_folders(names):
    special = [n for n in mailpages.SPECIAL_ORDER if n in names]
    rest = sorted((n for n in names if n not in mailpages.SPECIAL_ORDER),
                  key=lambda n: [p.casefold() for p in n.split("/")])
    return tuple(special + rest)


def _read_view(fileobj, structure, with_text=True):
    try:
        return messageview.read_view(fileobj, structure, with_text)
    finally:
        fileobj.close()


def _read_part_text(fileobj, part):
    try:
        return messageview.part_text(fileobj, part)
    finally:
        fileobj.close()


def _copy_part(fileobj, part, path):
    """Decode one part into a new file at ``path`` (forwards, drafts)."""
    reader = messageview.PartReader(fileobj, part)
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as out:
            while True:
                data = reader.read(messageview.CHUNK)
                if not data:
                    break
                out.write(data)
                size += len(data)
    finally:
        reader.close()
    return size


@implementer(IPushProducer)
class _PartStreamer:
    """Writes a PartReader to a request as fast as the client takes it: a
    streaming producer, paused by the transport when its buffer is full,
    so a 50 MiB attachment never sits in memory."""

    def __init__(self, reader, request):
        self.reader = reader
        self.request = request
        self.paused = False
        self.finished = False
        self._busy = False
        self.done = defer.Deferred()

    def start(self):
        self.request.notifyFinish().addErrback(lambda _failure: self.stopProducing())
        self.request.registerProducer(self, True)
        self.resumeProducing()
        return self.done

    def resumeProducing(self):
        self.paused = False
        if self._busy:
            return
        self._busy = True
        try:
            while not self.paused and not self.finished:
                data = self.reader.read(messageview.CHUNK)
                if not data:
                    self._finish()
                    break
                self.request.write(data)
        finally:
            self._busy = False

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self._finish()

    def _finish(self):
        if not self.finished:
            self.finished = True
            self.request.unregisterProducer()
            self.done.callback(None)


@attrs.define(slots=False)  # Klein binds routes through the instance __dict__
class Webmail:
    web: guards.WebContext
    auth: object            # services.auth.AuthService
    accounts: object = None        # services.accounts.AccountService
    mailboxes: object = None       # services.mailboxes.MailboxService
    submission: object = None      # services.submission.SubmissionService (None: no sending)
    delivery: object = None        # services.delivery.DeliveryService (spools)
    uploads: object = None         # web.uploads.UploadStore
    limits: object = None          # config.Limits
    hostname: str = "localhost"
    run_in_thread: object = None   # fn, *args -> Deferred
    spam_rules: object = None      # services.spam.RuleSet (scores in the spam panel)
    app = Klein()
    _grants: collections.OrderedDict = attrs.field(factory=collections.OrderedDict,
                                                   init=False)

    # --- the frame around every page -----------------------------------------------------

    def _login_frame(self, request, _, title, content, status=200):
        return pages.render(request, pages.layout(
            _, title=title, section=_("Webmail"), content=content, here=ROOT, home=ROOT),
            status=status)

    def _frame(self, request, _, session, ctx, title, content, here, current=None,
               status=200):
        return pages.render(request, pages.layout(
            _, title=title, section=_("Webmail"), content=[
                pages.notice(session.pop_notice()), content, mailpages.keyboard_help(_)],
            here=here, home=ROOT + "f/INBOX/", account=str(ctx.mailbox.address),
            logout=ROOT + "logout", csrf_token=session.csrf_token,
            sidebar=mailpages.sidebar(_, ctx.folders, current, ctx.unseen, ctx.quota),
            banner=mailpages.quota_banner(_, ctx.quota)), status=status)

    @app.handle_errors(Exception)
    def failed(self, request, failure):
        if failure.check(MailboxGone):
            self.web.end_session(request, MAILBOX)
            return pages.redirect(request, ROOT + "?expired=1")
        if failure.check(errors.NoSuchFolder, errors.NoSuchMessage):
            _ = self.web.translator(request)
            return guards.failure_page(
                self.web, request, None, status=404, title=_("Not found"),
                text=_("That folder or message does not exist (any more)."))
        return guards.failure_page(self.web, request, failure)

    async def _mailbox(self, session):
        try:
            mailbox = await self.accounts.get_mailbox(session.account)
        except errors.NoSuchMailbox:
            raise MailboxGone() from None
        if mailbox.id != session.account_id:
            raise MailboxGone()
        return mailbox

    async def _context(self, session):
        mailbox = await self._mailbox(session)
        infos = await self.mailboxes.list_folders(mailbox)
        names = order_folders([i.name for i in infos])
        statuses = await defer.DeferredList(
            [self.mailboxes.folder_status(mailbox, n) for n in names], consumeErrors=True)
        unseen = {n: s.unseen for n, (ok, s) in zip(names, statuses) if ok}
        quota = await self.mailboxes.quota(mailbox)
        return MailContext(mailbox=mailbox, quota=quota, folders=names, unseen=unseen)

    def _folder_name(self, token):
        try:
            return normalize_folder_name(mailpages.folder_from_token(token))
        except errors.ValidationError:
            raise errors.NoSuchFolder() from None

    def _back(self, form, default):
        """The page to return to after an action (a webmail path only)."""
        back = form.get("back") or ""
        parts = urlsplit(back)
        if (back.startswith(ROOT) and not parts.scheme and not parts.netloc
                and "\\" not in back and not any(ord(c) < 32 for c in back)):
            return back
        return default

    def _describe(self, _, exc):
        """-> (field, text) for the errors of mail operations."""
        if isinstance(exc, errors.QuotaExceeded):
            return exc.field, _("The mailbox is full. Delete some mail (and empty the Trash), "
                                "then try again.")
        if isinstance(exc, errors.TooBig):
            return exc.field, _("The message is larger than the {mb} MB limit.").format(
                mb=self._max_mb())
        if isinstance(exc, errors.RateLimited):
            limit = self.limits.webmail_recipients_per_hour
            if exc.retry_at:
                minutes = max(1, int((exc.retry_at - self.web.clock.seconds() + 59) // 60))
                return None, _.n(
                    "Sending limit reached: at most {limit} recipients per hour. You can "
                    "send again in {n} minute.",
                    "Sending limit reached: at most {limit} recipients per hour. You can "
                    "send again in {n} minutes.", minutes).format(limit=limit, n=minutes)
            return None, _("At most {limit} recipients per hour: send to fewer at once.").format(
                limit=limit)
        if isinstance(exc, errors.AlreadyExists):
            return "name", _("A folder with that name exists already; choose another.")
        if isinstance(exc, errors.FolderProtected):
            return None, _("The folders Inbox, Sent, Drafts, Trash and Spam are needed and "
                           "cannot be removed or renamed.")
        if isinstance(exc, errors.NoSuchFolder):
            return None, _("That folder does not exist (any more).")
        if isinstance(exc, errors.OutboundUnavailable):
            return None, _("Mail to other domains cannot be sent just now; try again in a "
                           "few minutes.")
        if isinstance(exc, errors.SenderRejected):
            return None, _("You can send only as your own address.")
        return guards.describe_error(_, exc)

    def _max_mb(self):
        return mailpages.megabytes(self.limits.max_message_bytes)

    # --- login ---------------------------------------------------------------------------

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
        return self._login_frame(request, _, _("Log in to your mail"), content, status=status)

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request):
        _ = self.web.translator(request)
        session = self.web.session(request, MAILBOX)
        if session is None:
            return self._login_page(request, _)
        return pages.redirect(request, folder_url(INBOX))

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
        return pages.redirect(request, folder_url(INBOX))

    @app.route("/login", methods=["GET"])
    def login_get(self, request):
        return pages.redirect(request, ROOT)

    @app.route("/logout", methods=["POST"])
    @action(MAILBOX)
    async def logout(self, request, session, _, form):
        self._drop_all_compose(session)
        self.web.end_session(request, MAILBOX)
        return pages.redirect(request, ROOT)

    # --- the message list ----------------------------------------------------------------

    def _list_state(self, request):
        args = request.args or {}

        def arg(name, default=""):
            values = args.get(name.encode())
            if not values:
                return default
            try:
                return values[0].decode("utf-8")
            except UnicodeDecodeError:
                return default
        sort = arg("sort", "date")
        sort = sort if sort in SORTS else "date"
        order = arg("order", "desc")
        order = order if order in ("asc", "desc") else "desc"
        try:
            page_number = max(1, int(arg("page", "1")))
        except ValueError:
            page_number = 1
        q = " ".join(arg("q").split())[:200]
        search_field = arg("field", "all")
        if search_field not in ("all", "from", "to", "subject", "body"):
            search_field = "all"
        return {"sort": sort, "order": order, "page": page_number, "q": q,
                "field": search_field if q else None}

    @staticmethod
    def _query(words, search_field):
        def one(word):
            keys = {"from": [mailsearch.HeaderHas("from", word)],
                    "to": [mailsearch.HeaderHas("to", word), mailsearch.HeaderHas("cc", word),
                           mailsearch.HeaderHas("bcc", word)],
                    "subject": [mailsearch.HeaderHas("subject", word)],
                    "body": [mailsearch.BodyHas(word)]}
            if search_field == "all":
                found = [k for name in ("from", "to", "subject", "body") for k in keys[name]]
            else:
                found = keys[search_field]
            node = found[-1]
            for key in reversed(found[:-1]):
                node = mailsearch.Or(key, node)
            return node
        return mailsearch.And(tuple(one(w) for w in words))

    async def _matching(self, live, infos, state):
        if not state["q"]:
            return infos
        query = self._query(state["q"].split()[:8], state["field"])
        scope = mailsearch.Scope(last_position=len(infos),
                                 last_uid=infos[-1].uid if infos else 0)
        positions = await mailsearch.search(live, query, list(enumerate(infos, 1)), scope)
        return [infos[p - 1] for p in positions]

    async def _sorted(self, live, infos, state, show_to):
        reverse = state["order"] == "desc"
        if state["sort"] == "date":
            return sorted(infos, key=lambda i: (i.internal_date, i.uid), reverse=reverse)
        if state["sort"] == "size":
            return sorted(infos, key=lambda i: (i.size, i.uid), reverse=reverse)
        details = await live.details([i.uid for i in infos], with_structure=False)
        if state["sort"] == "from":
            name = "hdr_to" if show_to else "hdr_from"

            def key(info):
                summary = details.get(info.uid)
                value = summary.fields.get(name) if summary else None
                return (mailpages.display_name(value or "").casefold(), info.uid)
        else:
            def key(info):
                summary = details.get(info.uid)
                value = (summary.fields.get("subject") if summary else None) or ""
                return (compose._REPLY_PREFIX.sub("", value).strip().casefold(), info.uid)
        return sorted(infos, key=key, reverse=reverse)

    @app.route("/f/<folder>/", methods=["GET", "HEAD"])
    @page(MAILBOX)
    async def folder_page(self, request, session, _, folder):
        name = self._folder_name(folder)
        ctx = await self._context(session)
        state = self._list_state(request)
        show_to = name in (SENT, DRAFTS)
        live = await self.mailboxes.open_folder(ctx.mailbox, name)
        try:
            infos = await self._matching(live, live.infos(), state)
            ordered = await self._sorted(live, infos, state, show_to)
            total = len(ordered)
            pages_total = max(1, -(-total // PAGE_SIZE))
            number = min(state["page"], pages_total)
            start = (number - 1) * PAGE_SIZE
            shown = ordered[start:start + PAGE_SIZE]
            details = await live.details([i.uid for i in shown], with_structure=True)
        finally:
            live.release()
        now = self.web.clock.seconds()
        retention = self.limits.spam_retention_days
        rows = [mailpages.message_row(
            _, name, info, details.get(info.uid), now, show_to,
            days_until_expiry(info.saved_at, now, retention) if name == SPAM_FOLDER else None)
            for info in shown]
        here = folder_url(name, **{k: state[k] for k in ("sort", "order", "q", "field")},
                          page=number if number > 1 else None)
        if rows:
            table = tags.table(class_="messages")(
                tags.thead(tags.tr(
                    tags.th(tags.span(_("Select"), class_="visually-hidden"), class_="c-select"),
                    tags.th(tags.span(_("Status"), class_="visually-hidden"), class_="c-marks"),
                    tags.th(mailpages.sort_link(_, name, _("To") if show_to else _("From"),
                                                "from", state), class_="c-who"),
                    tags.th(mailpages.sort_link(_, name, _("Subject"), "subject", state),
                            class_="c-subject"),
                    tags.th(mailpages.sort_link(_, name, _("Date"), "date", state),
                            class_="c-date"),
                    tags.th(mailpages.sort_link(_, name, _("Size"), "size", state),
                            class_="c-size"))),
                tags.tbody(*rows))
        elif state["q"]:
            table = tags.p(_("No messages match your search."), class_="empty")
        else:
            table = tags.p(_("This folder is empty."), class_="empty")
        header = [mailpages.search_form(_, name, state)]
        if name in (TRASH, SPAM_FOLDER) and total and not state["q"]:
            header.append(post_form(folder_url(name, "empty"), session.csrf_token,
                                    tags.button(_("Empty {folder}").format(
                                        folder=folder_title(_, name)), type="submit",
                                        class_="btn btn-danger-quiet", **{
                                            "data-confirm": _("Delete every message in {folder} "
                                                              "for good?").format(
                                                folder=folder_title(_, name))}),
                                    class_="empty-folder"))
        notes = []
        if name == SPAM_FOLDER:
            notes.append(tags.p(_.n("Messages in Spam are deleted {n} day after they arrive.",
                                    "Messages in Spam are deleted {n} days after they arrive.",
                                    retention).format(n=retention), class_="hint"))
        if state["q"]:
            notes.append(tags.p(fmt(_.n("{n} message found. {clear}", "{n} messages found. "
                                        "{clear}", total),
                                    n=str(total),
                                    clear=tags.a(_("Show all"), href=folder_url(name))),
                                class_="hint"))
        content = [
            tags.div(class_="list-head")(*header),
            *notes,
            mailpages.list_toolbar(_, name, ctx.folders, session.csrf_token,
                                   folder_url(name, "act")) if rows else "",
            tags.input(type="hidden", name="back", value=here, form="list-actions"),
            table,
            mailpages.pager(_, name, state, number, pages_total, total, start, len(shown)),
        ]
        title = folder_title(_, name) if name in mailpages.FOLDER_TITLES else \
            mailpages.folder_path_title(_, name)
        return self._frame(request, _, session, ctx, title, content, here, current=name)

    # --- actions on messages ----------------------------------------------------------------

    @staticmethod
    def _selected(request):
        uids = []
        for value in (request.args or {}).get(b"uid", [])[:10_000]:
            try:
                uids.append(int(value))
            except ValueError:
                continue
        return sorted({u for u in uids if u > 0})

    async def _apply(self, _, mailbox, name, uids, act, target):
        """Do ``act`` to ``uids`` of folder ``name``. -> the notice text."""
        live = await self.mailboxes.open_folder(mailbox, name)
        try:
            uids = [u for u in uids if live.info(u) is not None]
            if not uids:
                return _("No message was selected.")
            n = len(uids)
            if act in ("read", "unread", "flag", "unflag"):
                flag = SEEN if act in ("read", "unread") else FLAGGED
                mode = FLAGS_ADD if act in ("read", "flag") else FLAGS_REMOVE
                await live.set_flags(uids, {flag}, mode)
                return {"read": _.n("{n} message marked read.", "{n} messages marked read.", n),
                        "unread": _.n("{n} message marked unread.",
                                      "{n} messages marked unread.", n),
                        "flag": _.n("{n} message flagged.", "{n} messages flagged.", n),
                        "unflag": _.n("Flag removed from {n} message.",
                                      "Flag removed from {n} messages.", n)}[act].format(n=n)
            if act == "delete" and name in (TRASH, SPAM_FOLDER):
                await live.expunge(uids)
                return _.n("{n} message deleted for good.", "{n} messages deleted for good.",
                           n).format(n=n)
            if act == "delete":
                target = TRASH
            elif act == "spam":
                target = SPAM_FOLDER
            elif act == "notspam":
                target = INBOX
            elif act == "move":
                if not target:
                    return _("Choose the folder to move the messages to.")
                target = normalize_folder_name(target)
            else:
                return _("Nothing was done.")
            if target == name:
                return _("The messages are in {folder} already.").format(
                    folder=mailpages.folder_path_title(_, target))
            if act == "spam" or act == "notspam":
                # read mail that is moved is what the user looked at
                await live.set_flags(uids, {SEEN}, FLAGS_ADD)
            await live.move_to(uids, target)
            if act == "spam":
                return _.n("{n} message moved to Spam. The filter learns from it.",
                           "{n} messages moved to Spam. The filter learns from them.",
                           n).format(n=n)
            if act == "notspam":
                return _.n("{n} message moved to the Inbox. The filter learns from it.",
                           "{n} messages moved to the Inbox. The filter learns from them.",
                           n).format(n=n)
            return _.n("{n} message moved to {folder}.", "{n} messages moved to {folder}.",
                       n).format(n=n, folder=mailpages.folder_path_title(_, target))
        finally:
            live.release()

    @app.route("/f/<folder>/act", methods=["POST"])
    @action(MAILBOX)
    async def act(self, request, session, _, form, folder):
        name = self._folder_name(folder)
        mailbox = await self._mailbox(session)
        back = self._back(form, folder_url(name))
        if form.get("after") and form.get("act") in ("delete", "spam", "notspam", "move"):
            back = self._back({"back": form["after"]}, back)
        try:
            session.data["notice"] = await self._apply(
                _, mailbox, name, self._selected(request), form.get("act", ""),
                form.get("target", ""))
        except errors.KtmailError as e:
            session.data["notice"] = self._describe(_, e)[1]
        return pages.redirect(request, back)

    @app.route("/f/<folder>/empty", methods=["POST"])
    @action(MAILBOX)
    async def empty(self, request, session, _, form, folder):
        name = self._folder_name(folder)
        if name not in (TRASH, SPAM_FOLDER):
            return pages.redirect(request, folder_url(name))
        mailbox = await self._mailbox(session)
        live = await self.mailboxes.open_folder(mailbox, name)
        try:
            uids = list(live.uids)
            if uids:
                await live.expunge(uids)
        finally:
            live.release()
        session.data["notice"] = _.n("{n} message deleted for good.",
                                     "{n} messages deleted for good.", len(uids)).format(
                                         n=len(uids))
        return pages.redirect(request, folder_url(name))

    # --- reading -----------------------------------------------------------------------------

    async def _load(self, live, uid, with_text=True):
        """-> (MessageInfo, mime structure, MessageView) of a message."""
        info = live.info(uid)
        if info is None:
            raise errors.NoSuchMessage()
        details = await live.details([uid], with_structure=True)
        summary = details.get(uid)
        if summary is None or summary.structure is None:
            raise errors.NoSuchMessage()
        fileobj = await live.open_message(uid)
        view = await self.run_in_thread(_read_view, fileobj, summary.structure, with_text)
        return info, summary.structure, view

    def _rule_rows(self, report):
        from ktmail.services.spam import ALL_RULES
        rows = []
        for name in report.rules:
            rule = ALL_RULES.get(name)
            score = None
            if rule is not None and self.spam_rules is not None:
                score = self.spam_rules.score_of(rule)
            elif rule is not None:
                score = rule.score
            rows.append((name, rule.description if rule else "", score))
        return rows

    @app.route("/f/<folder>/<int:uid>", methods=["GET", "HEAD"])
    @page(MAILBOX)
    async def read(self, request, session, _, folder, uid):
        name = self._folder_name(folder)
        ctx = await self._context(session)
        live = await self.mailboxes.open_folder(ctx.mailbox, name)
        try:
            info, _structure, view = await self._load(live, uid)
            if not info.seen:
                await live.set_flags([uid], {SEEN}, FLAGS_ADD)
                info = live.info(uid) or info
                ctx = attrs.evolve(ctx, unseen={**ctx.unseen,
                                                name: max(0, ctx.unseen.get(name, 1) - 1)})
            position = live.index_of(uid)
            newer = live.uids[position + 1] if position is not None and \
                position + 1 < len(live.uids) else None
            older = live.uids[position - 1] if position else None
        finally:
            live.release()
        allow_remote = b"images" in (request.args or {})
        content = [self._message_actions(_, session, ctx, name, uid, info, newer, older),
                   self._message_head(_, name, view, info)]
        if view.spam is not None and (name == SPAM_FOLDER or view.spam.is_spam):
            days = None
            if name == SPAM_FOLDER:
                days = days_until_expiry(info.saved_at, self.web.clock.seconds(),
                                         self.limits.spam_retention_days)
            content.append(mailpages.spam_panel(_, view.spam, self._rule_rows(view.spam), days))
        elif name == SPAM_FOLDER:
            days = days_until_expiry(info.saved_at, self.web.clock.seconds(),
                                     self.limits.spam_retention_days)
            content.append(tags.p(_.n("This message will be deleted in {n} day.",
                                      "This message will be deleted in {n} days.",
                                      days).format(n=days), class_="expiry"))
        body = []
        for part in view.body:
            if part.kind == "html":
                url = message_url(name, uid, f"html/{messageview.section_text(part.section)}",
                                  images="1" if allow_remote else None)
                body.append(mailpages.frame(_, url, _("Message text")))
            else:
                body.append(mailpages.plain_body(part.text))
            if part.truncated:
                body.append(tags.p(fmt(_("The text is longer than can be shown here. {raw}"),
                                       raw=tags.a(_("Download the whole message"),
                                                  href=message_url(name, uid, "raw"))),
                                   class_="hint"))
        if not body:
            body.append(tags.p(_("This message has no text."), class_="empty"))
        if view.has_html and not allow_remote:
            body.insert(0, mailpages.remote_notice(_, message_url(name, uid, images="1")))
        content.append(tags.article(class_="card message-body")(*body))
        attachments = [a for a in view.attachments
                       if not (a.inline and view.has_html)]
        if attachments:
            content.append(mailpages.attachment_list(_, name, uid, attachments))
        title = view.subject or _("(no subject)")
        if view.has_html:
            # the site's policy plus our own message documents in frames
            request.setHeader(b"content-security-policy",
                              SECURITY_HEADERS[b"content-security-policy"]
                              + b"; frame-src 'self'")
        return self._frame(request, _, session, ctx, title, content,
                           message_url(name, uid), current=name)

    def _message_actions(self, _, session, ctx, name, uid, info, newer, older):
        back = folder_url(name)
        links = [tags.a(_("← Back to {folder}").format(folder=folder_title(_, name)),
                        href=back, class_="btn btn-quiet", **{"data-key": "u"})]
        if name == DRAFTS:
            links.append(tags.a(_("Edit"), href=message_url(name, uid, "edit"),
                                class_="btn btn-primary", **{"data-key": "e"}))
        else:
            links += [tags.a(_("Reply"), href=message_url(name, uid, "reply"),
                             class_="btn btn-primary", **{"data-key": "r"}),
                      tags.a(_("Reply all"), href=message_url(name, uid, "replyall"),
                             class_="btn btn-quiet", **{"data-key": "a"}),
                      tags.a(_("Forward"), href=message_url(name, uid, "forward"),
                             class_="btn btn-quiet", **{"data-key": "f"})]
        flagged = FLAGGED in info.flags
        buttons = [
            tags.button(_("Remove flag") if flagged else _("Flag"), type="submit", name="act",
                        value="unflag" if flagged else "flag", class_="btn btn-quiet",
                        **{"data-key": "s"}),
            tags.button(_("Mark unread"), type="submit", name="act", value="unread",
                        class_="btn btn-quiet"),
        ]
        if name == SPAM_FOLDER:
            buttons.append(tags.button(_("Not spam"), type="submit", name="act",
                                       value="notspam", class_="btn btn-quiet"))
        else:
            buttons.append(tags.button(_("Spam"), type="submit", name="act", value="spam",
                                       class_="btn btn-quiet", **{"data-key": "!"}))
        if name in (TRASH, SPAM_FOLDER):
            buttons.append(tags.button(_("Delete for good"), type="submit", name="act",
                                       value="delete", class_="btn btn-danger-quiet", **{
                                           "data-key": "#",
                                           "data-confirm": _("Delete this message for good? "
                                                             "This cannot be undone.")}))
        else:
            buttons.append(tags.button(_("Delete"), type="submit", name="act", value="delete",
                                       class_="btn btn-danger-quiet", **{"data-key": "#"}))
        after_delete = message_url(name, older) if older else \
            message_url(name, newer) if newer else back
        nav = []
        if newer:
            nav.append(tags.a(_("Newer"), href=message_url(name, newer), rel="prev",
                              class_="btn btn-quiet", **{"data-key": "k"}))
        if older:
            nav.append(tags.a(_("Older"), href=message_url(name, older), rel="next",
                              class_="btn btn-quiet", **{"data-key": "j"}))
        return tags.div(class_="message-actions")(
            tags.div(class_="toolbar-buttons")(*links),
            tags.form(method="post", action=folder_url(name, "act"), class_="toolbar-buttons")(
                tags.input(type="hidden", name="csrf", value=session.csrf_token),
                tags.input(type="hidden", name="uid", value=str(uid)),
                tags.input(type="hidden", name="back", value=back),
                tags.input(type="hidden", name="after", value=after_delete),
                *buttons,
                tags.select(name="target", **{"aria-label": _("Move to")})(
                    tags.option(_("Move to…"), value=""),
                    *mailpages.move_options(_, ctx.folders, name)),
                tags.button(_("Move"), type="submit", name="act", value="move",
                            class_="btn btn-quiet")),
            tags.div(class_="toolbar-buttons nav-buttons")(*nav))

    def _message_head(self, _, name, view, info):
        rows = [(_("From"), mailpages.address_list(_, view.from_))]
        if view.to:
            rows.append((_("To"), mailpages.address_list(_, view.to)))
        if view.cc:
            rows.append((_("Cc"), mailpages.address_list(_, view.cc)))
        if view.bcc and name in (SENT, DRAFTS):
            rows.append((_("Bcc"), mailpages.address_list(_, view.bcc)))
        if view.reply_to and view.reply_to != view.from_:
            rows.append((_("Reply to"), mailpages.address_list(_, view.reply_to)))
        when = view.date or info.internal_date
        rows.append((_("Date"), tags.time(mailpages.full_date(when),
                                          datetime=mailpages.iso_date(when))))
        return tags.header(class_="card message-head")(
            tags.dl(*[[tags.dt(k), tags.dd(v)] for k, v in rows]),
            tags.p(tags.a(_("Download message"), href=message_url(name, info.uid, "raw"),
                          class_="quiet-link"), class_="raw-link"))

    # --- the frame document, parts and inline images -------------------------------------------

    def _origin(self, request):
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]{1,255}", host):
            return "'self'"
        return ("https://" if request.isSecure() else "http://") + host

    def _grant(self, session, mailbox, name, uid):
        """A token that lets the sandboxed frame (which sends no cookies)
        load the inline images of one message while the session lives."""
        grants = session.data.setdefault("grants", {})
        token = grants.get((name, uid))
        if token is None or token not in self._grants:
            token = secrets.token_urlsafe(24)
            grants[(name, uid)] = token
            self._grants[token] = (session.id, mailbox.id, name, uid)
            while len(self._grants) > MAX_GRANTS:
                self._grants.popitem(last=False)
        return token

    @app.route("/f/<folder>/<int:uid>/html/<section>", methods=["GET"])
    @page(MAILBOX)
    async def html_body(self, request, session, _, folder, uid, section):
        name = self._folder_name(folder)
        mailbox = await self._mailbox(session)
        allow_remote = b"images" in (request.args or {})
        structure, part, fileobj = await self._open_part(
            mailbox, name, uid, self._section(section),
            lambda part: part.media_type == "text" and part.media_subtype == "html")
        text, _truncated = await self.run_in_thread(_read_part_text, fileobj, part)
        cids = {}
        for leaf_section, leaf in messageview.leaves(structure):
            if leaf.content_id:
                cids[leaf.content_id.strip().strip("<>").strip()] = leaf_section
        token = self._grant(session, mailbox, name, uid) if cids else None

        def inline_url(content_id):
            found = cids.get(content_id)
            if found is None:
                return None
            return f"{ROOT}inline/{token}/{messageview.section_text(found)}"
        cleaned, _blocked = await self.run_in_thread(htmlmail.sanitize, text, inline_url,
                                                     allow_remote)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy",
                          htmlmail.frame_csp(self._origin(request), allow_remote).encode())
        request.setHeader(b"x-frame-options", b"SAMEORIGIN")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return htmlmail.document(cleaned)

    @staticmethod
    def _section(text):
        """A part number from a URL (``1.2``); NoSuchMessage when malformed."""
        try:
            return messageview.parse_section(text)
        except ValueError:
            raise errors.NoSuchMessage() from None

    async def _open_part(self, mailbox, name, uid, wanted, acceptable):
        """-> (the message's structure, its part ``wanted``, the open message
        file); NoSuchMessage when the message or the part is missing or
        ``acceptable(part)`` is false."""
        live = await self.mailboxes.open_folder(mailbox, name)
        try:
            if live.info(uid) is None:
                raise errors.NoSuchMessage()
            details = await live.details([uid], with_structure=True)
            structure = details[uid].structure
            part = structure.find(wanted)
            if part is None or not acceptable(part):
                raise errors.NoSuchMessage()
            return structure, part, await live.open_message(uid)
        finally:
            live.release()

    async def _send_part(self, request, fileobj, part, filename, view):
        """Stream one part, decoded, as a download (or a plain image)."""
        content_type = part.content_type if part is not None else "message/rfc822"
        if view and content_type in SAFE_IMAGES:
            request.setHeader(b"content-type", content_type.encode())
            request.setHeader(b"content-disposition", content_disposition("inline", filename))
        else:
            request.setHeader(b"content-type", b"application/octet-stream")
            request.setHeader(b"content-disposition",
                              content_disposition("attachment", filename))
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        reader = messageview.PartReader(fileobj, part)
        try:
            await _PartStreamer(reader, request).start()
        finally:
            reader.close()
        return b""

    @app.route("/f/<folder>/<int:uid>/part/<section>", methods=["GET"])
    @page(MAILBOX)
    async def part(self, request, session, _, folder, uid, section):
        name = self._folder_name(folder)
        mailbox = await self._mailbox(session)
        wanted = self._section(section)
        _structure, part, fileobj = await self._open_part(
            mailbox, name, uid, wanted, lambda part: not part.is_multipart)
        filename = part.filename or messageview.default_filename(part, wanted)
        return await self._send_part(request, fileobj, part, filename,
                                     b"view" in (request.args or {}))

    @app.route("/f/<folder>/<int:uid>/raw", methods=["GET"])
    @page(MAILBOX)
    async def raw(self, request, session, _, folder, uid):
        name = self._folder_name(folder)
        mailbox = await self._mailbox(session)
        live = await self.mailboxes.open_folder(mailbox, name)
        try:
            if live.info(uid) is None:
                raise errors.NoSuchMessage()
            details = await live.details([uid], with_structure=False)
            subject = details[uid].fields.get("subject") if uid in details else None
            fileobj = await live.open_message(uid)
        finally:
            live.release()
        filename = re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", subject or "message")[:80].strip()
        return await self._send_part(request, fileobj, None, (filename or "message") + ".eml",
                                     False)

    @app.route("/inline/<token>/<section>", methods=["GET"])
    async def inline(self, request, token, section):
        """An inline (cid:) image for a message frame: the frame is sandboxed
        and sends no cookie, so a token granted to the session stands in."""
        grant = self._grants.get(token)
        if grant is None:
            request.setResponseCode(404)
            return b""
        session_id, mailbox_id, name, uid = grant
        session = self.web.sessions.get(session_id, MAILBOX)
        if session is None or session.account_id != mailbox_id:
            self._grants.pop(token, None)
            request.setResponseCode(404)
            return b""
        try:
            mailbox = await self._mailbox(session)
            _structure, part, fileobj = await self._open_part(
                mailbox, name, uid, self._section(section),
                lambda part: part.media_type == "image")
        except (errors.KtmailError, MailboxGone, ValueError, KeyError):
            request.setResponseCode(404)
            return b""
        request.setHeader(b"cache-control", b"private, max-age=3600")
        return await self._send_part(request, fileobj, part, part.filename or "image", True)

    # --- writing: compose state ----------------------------------------------------------------

    def _drafts(self, session):
        return session.data.setdefault("compose", collections.OrderedDict())

    def _new_compose(self, session, **values):
        drafts = self._drafts(session)
        while len(drafts) >= MAX_COMPOSE_PER_SESSION:
            _id, old = drafts.popitem(last=False)
            self._remove_files(old.attachments)
        state = ComposeState(id=secrets.token_hex(8), **values)
        drafts[state.id] = state
        return state

    def _remove_files(self, attachments):
        for attachment in attachments:
            self.uploads.remove(attachment.path)

    def _drop_compose(self, session, state):
        self._drafts(session).pop(state.id, None)
        self._remove_files(state.attachments)

    def _drop_all_compose(self, session):
        for state in list(self._drafts(session).values()):
            self._drop_compose(session, state)

    def _compose_state(self, session, compose_id):
        state = self._drafts(session).get(compose_id)
        if state is None:
            raise errors.NotFound()
        return state

    async def _recipients_left(self, mailbox):
        """-> (recipients the webmail may still send to this hour, retry_at)."""
        if self.submission is None:
            return 0, None
        try:
            decision = await self.submission.reserve_recipient(mailbox, "webmail")
        except errors.RateLimited as e:
            return 0, e.retry_at
        return decision.remaining + 1, None

    @app.route("/compose", methods=["GET"])
    @page(MAILBOX)
    async def compose_new(self, request, session, _):
        await self._mailbox(session)
        to = ""
        values = (request.args or {}).get(b"to")
        if values:
            to = values[0].decode("utf-8", "replace")
            to = "" if compose._CONTROL.search(to) else to[:1000]
        state = self._new_compose(session, to=to)
        return pages.redirect(request, f"{ROOT}compose/{state.id}")

    async def _copy_attachments(self, live, uid, structure, attachments):
        copied = []
        for attachment in attachments:
            part = structure.find(attachment.section)
            if part is None:
                continue
            fileobj = await live.open_message(uid)
            path = self.uploads.new_path()
            size = await self.run_in_thread(_copy_part, fileobj, part, path)
            copied.append(compose.Attachment(filename=attachment.filename,
                                             content_type=attachment.content_type,
                                             path=path, size=size))
        return copied

    @staticmethod
    def _text_of(view):
        plain = [p.text for p in view.body if p.kind == "plain"]
        if plain:
            return "\n".join(plain)
        return "\n".join(messageview.html_to_text(p.text) for p in view.body)

    @app.route("/f/<folder>/<int:uid>/<any(reply,replyall,forward,edit):how>", methods=["GET"])
    @page(MAILBOX)
    async def respond(self, request, session, _, folder, uid, how):
        name = self._folder_name(folder)
        mailbox = await self._mailbox(session)
        live = await self.mailboxes.open_folder(mailbox, name)
        try:
            info, structure, view = await self._load(live, uid)
            text = self._text_of(view)
            when = mailpages.full_date(view.date or info.internal_date)
            sender = compose.format_addresses(view.from_) or _("(unknown)")
            if how in ("reply", "replyall"):
                to, cc = compose.reply_recipients(view, mailbox.address, how == "replyall")
                in_reply_to, references = compose.references_for(view)
                body = "\n\n" + _("On {date}, {sender} wrote:").format(
                    date=when, sender=sender) + "\n" + compose.quote(text) + "\n"
                state = self._new_compose(
                    session, to=compose.format_addresses(to), cc=compose.format_addresses(cc),
                    subject=compose.reply_subject(view.subject), body=body,
                    in_reply_to=in_reply_to, references=references, answering=(name, uid))
            elif how == "forward":
                header = [_("---------- Forwarded message ----------"),
                          _("From: {value}").format(value=sender),
                          _("Date: {value}").format(value=when),
                          _("Subject: {value}").format(value=view.subject)]
                if view.to:
                    header.append(_("To: {value}").format(
                        value=compose.format_addresses(view.to)))
                attachments = await self._copy_attachments(live, uid, structure,
                                                           view.attachments)
                state = self._new_compose(
                    session, subject=compose.forward_subject(view.subject),
                    body="\n\n" + "\n".join(header) + "\n\n" + text, attachments=attachments)
            else:
                attachments = await self._copy_attachments(live, uid, structure,
                                                           view.attachments)
                state = self._new_compose(
                    session, to=compose.format_addresses(view.to),
                    cc=compose.format_addresses(view.cc),
                    bcc=compose.format_addresses(view.bcc), subject=view.subject,
                    body=text, attachments=attachments,
                    saved_uid=uid if name == DRAFTS else None)
        finally:
            live.release()
        return pages.redirect(request, f"{ROOT}compose/{state.id}")

    # --- writing: the form ------------------------------------------------------------------------

    def _compose_page(self, request, _, session, ctx, state, left, retry_at, found=None,
                      status=200):
        found = found or FormErrors()
        budget = self.limits.max_message_bytes
        url = f"{ROOT}upload/compose/{state.id}"

        def area(label, name, value, rows, error=None, hint=None):
            children = [tags.label(label, for_=f"f-{name}")]
            if hint:
                children.append(tags.p(hint, class_="hint", id=f"h-{name}"))
            if error:
                children.append(tags.p(error, class_="field-error", id=f"e-{name}"))
            attributes = {"id": f"f-{name}", "name": name, "rows": str(rows)}
            if error:
                attributes["aria-invalid"] = "true"
            children.append(tags.textarea(**attributes)(value))
            return tags.div(class_="field" + (" has-error" if error else ""))(*children)

        attachment_items = [
            tags.li(class_="attachment")(
                mailpages.icon("clip"),
                tags.span(a.filename, class_="att-name"),
                tags.span(mailpages.human_size(a.size), class_="att-meta"),
                tags.button(_("Remove"), type="submit", name="do", value=f"remove-{i}",
                            class_="btn btn-quiet", formnovalidate="formnovalidate",
                            **{"aria-label": _("Remove {name}").format(name=a.filename)}))
            for i, a in enumerate(state.attachments)]
        used = state.attachment_bytes
        if self.submission is None:
            sending = tags.p(_("Sending is not available on this server just now; you can "
                               "save the message as a draft."), class_="warning")
        elif left <= 0:
            minutes = max(1, int(((retry_at or 0) - self.web.clock.seconds() + 59) // 60))
            sending = tags.p(_.n("You have reached the limit of {limit} recipients per hour. "
                                 "You can send again in {n} minute.",
                                 "You have reached the limit of {limit} recipients per hour. "
                                 "You can send again in {n} minutes.", minutes).format(
                limit=self.limits.webmail_recipients_per_hour, n=minutes), class_="warning")
        else:
            sending = tags.p(_.n("You can send to {n} more recipient this hour.",
                                 "You can send to {n} more recipients this hour.", left).format(
                n=left), class_="hint send-left")
        form = post_form(
            url, session.csrf_token,
            tags.div(class_="field from-field")(
                tags.span(_("From"), class_="label"), tags.strong(str(ctx.mailbox.address))),
            field(_("To"), "to", value=state.to, error=found.get("to"), required=False,
                  autocomplete="email", autofocus=not state.to, type="text",
                  hint=_("Separate addresses with commas."),
                  extra={"multiple": "multiple", "spellcheck": "false",
                         "autocapitalize": "none"}),
            tags.div(class_="cc-row")(
                field(_("Cc"), "cc", value=state.cc, error=found.get("cc"), required=False,
                      extra={"spellcheck": "false", "autocapitalize": "none"}),
                field(_("Bcc"), "bcc", value=state.bcc, error=found.get("bcc"),
                      required=False, hint=_("Hidden from the other recipients."),
                      extra={"spellcheck": "false", "autocapitalize": "none"})),
            field(_("Subject"), "subject", value=state.subject, error=found.get("subject"),
                  required=False, maxlength=compose.MAX_SUBJECT,
                  autofocus=bool(state.to) and not state.subject),
            area(_("Message"), "body", state.body, 16, error=found.get("body")),
            tags.fieldset(class_="attach")(
                tags.legend(_("Attachments")),
                tags.ul(class_="attachments-list")(*attachment_items) if attachment_items
                else "",
                tags.p(_("Up to {limit} MB in total ({used} MB used). Files are encoded for "
                         "sending, so a message can carry about {usable} MB of them.").format(
                    limit=self._max_mb(), used=mailpages.megabytes(used),
                    usable=mailpages.megabytes(
                        max(0, self.limits.max_message_bytes * 3 // 4 - 2 ** 20))),
                    class_="hint", id="h-files"),
                tags.p(found.get("files"), class_="field-error", id="e-files")
                if found.get("files") else "",
                tags.div(class_="attach-row")(
                    tags.label(_("Add files"), for_="f-files", class_="visually-hidden"),
                    tags.input(type="file", id="f-files", name="files", multiple="multiple",
                               **{"aria-describedby": "h-files", "data-autosubmit": "attach",
                                  "data-budget": str(max(0, budget - used)),
                                  "data-too-big": _("These files are larger than the {mb} MB "
                                                    "limit.").format(mb=self._max_mb())}),
                    tags.button(_("Attach"), type="submit", name="do", value="attach",
                                class_="btn btn-quiet", formnovalidate="formnovalidate",
                                id="attach-button"))),
            sending,
            tags.div(class_="buttons compose-buttons")(
                tags.button(_("Send"), type="submit", name="do", value="send",
                            class_="btn btn-primary", id="send-button",
                            **({"disabled": "disabled"} if self.submission is None else {})),
                tags.button(_("Save draft"), type="submit", name="do", value="save",
                            class_="btn btn-quiet", formnovalidate="formnovalidate"),
                tags.button(_("Discard"), type="submit", name="do", value="discard",
                            class_="btn btn-danger-quiet", formnovalidate="formnovalidate",
                            **{"data-confirm": _("Throw this message away?")})),
            enctype="multipart/form-data", class_="form compose-form",
            **{"data-ctrl-enter": "send-button"})
        content = [tags.section(class_="card compose")(pages.error_summary(_, found), form)]
        title = _("Write a message") if not state.subject else state.subject
        return self._frame(request, _, session, ctx, title, content,
                           f"{ROOT}compose/{state.id}", status=status)

    @app.route("/compose/<compose_id>", methods=["GET", "HEAD"])
    @page(MAILBOX)
    async def compose_page(self, request, session, _, compose_id):
        state = self._drafts(session).get(compose_id)
        if state is None:
            session.data["notice"] = _("That message was sent or thrown away already.")
            return pages.redirect(request, folder_url(INBOX))
        ctx = await self._context(session)
        left, retry_at = await self._recipients_left(ctx.mailbox)
        return self._compose_page(request, _, session, ctx, state, left, retry_at)

    @app.route("/upload/compose/<compose_id>", methods=["POST"])
    async def compose_post(self, request, compose_id):
        """The compose form: a streamed multipart upload. Same origin, a live
        session and the CSRF token (the form's first field) are checked
        before anything is kept."""
        _ = self.web.translator(request)
        if not guards.same_origin(request):
            return guards._forbidden(self.web, request, _)
        session = self.web.session(request, MAILBOX)
        if session is None:
            return pages.redirect(request, ROOT + "?expired=1")
        boundary = uploads.boundary_of(
            (request.getHeader(b"content-type") or b"").decode("latin-1"))
        if boundary is None or request.content is None:
            return guards._forbidden(self.web, request, _)
        state = self._drafts(session).get(compose_id)
        budget = self.limits.max_message_bytes - (state.attachment_bytes if state else 0)
        request.content.seek(0)
        found = FormErrors()
        try:
            fields, files = await self.run_in_thread(
                uploads.read_form_data, request.content, boundary,
                lambda token: self.web.sessions.check_csrf(session, token),
                self.uploads.new_path, max(0, budget))
        except uploads.TokenRejected:
            return guards._forbidden(self.web, request, _)
        except uploads.BadUpload:
            return guards.failure_page(self.web, request, None, status=400,
                                       title=_("Bad request"),
                                       text=_("The form could not be read; go back and try "
                                              "again."))
        except uploads.UploadTooLarge as e:
            fields, files = None, []
            found.add("files", _("The attachments are too large: at most {limit} MB in total, "
                                 "and there is room for {room} MB more.").format(
                limit=self._max_mb(), room=mailpages.megabytes(e.budget)))
        if state is None:
            self._remove_files(files)
            session.data["notice"] = _("That message was sent or thrown away already.")
            return pages.redirect(request, folder_url(INBOX))
        if fields is not None:
            for name in ("to", "cc", "bcc", "subject", "body"):
                setattr(state, name, (fields.get(name) or [""])[0])
        for upload in files:
            if upload.size == 0:
                self.uploads.remove(upload.path)
                continue
            state.attachments.append(compose.Attachment(
                filename=upload.filename, content_type=upload.content_type,
                path=upload.path, size=upload.size))
        do = (fields.get("do") or ["attach"])[0] if fields is not None else "attach"
        mailbox = await self._mailbox(session)
        if found:
            return await self._show_compose(request, _, session, state, found, 413)
        if do.startswith("remove-"):
            try:
                removed = state.attachments.pop(int(do[7:]))
                self.uploads.remove(removed.path)
            except (ValueError, IndexError):
                pass
            return pages.redirect(request, f"{ROOT}compose/{state.id}")
        if do == "discard":
            self._drop_compose(session, state)
            session.data["notice"] = _("The message was thrown away.")
            return pages.redirect(request, folder_url(INBOX))
        if do == "save":
            return await self._save_draft(request, _, session, mailbox, state)
        if do == "send":
            return await self._send(request, _, session, mailbox, state)
        return pages.redirect(request, f"{ROOT}compose/{state.id}")

    # the same-origin check, the session and the CSRF token (the first field of
    # the streamed form) are checked above, before anything is kept
    compose_post.csrf_checked = True

    async def _show_compose(self, request, _, session, state, found, status):
        ctx = await self._context(session)
        left, retry_at = await self._recipients_left(ctx.mailbox)
        return self._compose_page(request, _, session, ctx, state, left, retry_at, found,
                                  status)

    def _check_fields(self, _, state, found, for_sending):
        """-> {to, cc, bcc: pairs} after checking every field; errors into ``found``."""
        parsed = {}
        for name in ("to", "cc", "bcc"):
            try:
                parsed[name] = compose.parse_recipients(getattr(state, name), name)
            except errors.ValidationError as e:
                parsed[name] = ()
                if "control" in e.text:
                    found.add(name, _("Line breaks and control characters are not allowed "
                                      "here."))
                else:
                    bad = re.search(r"'(.*)'", e.text)
                    found.add(name, _("Not an e-mail address: {text}. Write addresses like "
                                      "name@example.fi, separated by commas.").format(
                        text=bad.group(1) if bad else getattr(state, name)))
        try:
            compose.check_header_text(state.subject, "subject")
        except errors.ValidationError:
            found.add("subject", _("Line breaks and control characters are not allowed in "
                                   "the subject."))
        if "\0" in state.body:
            found.add("body", _("The text holds characters that cannot be sent."))
        if for_sending and not found and not any(parsed.values()):
            found.add("to", _("Write at least one recipient."))
        return parsed

    async def _write_spool(self, mailbox, state, parsed, draft):
        spool = self.delivery.new_spool()
        try:
            await self.run_in_thread(
                lambda: compose.write_message(
                    spool, sender=mailbox.address, to=parsed["to"], cc=parsed["cc"],
                    bcc=parsed["bcc"] if draft else (), subject=state.subject,
                    body=state.body, attachments=state.attachments,
                    message_id=compose.new_message_id(self.hostname),
                    date=self.web.clock.seconds(), in_reply_to=state.in_reply_to,
                    references=state.references, draft=draft))
            await spool.finish()
        except BaseException:
            spool.discard()
            raise
        return spool

    async def _save_draft(self, request, _, session, mailbox, state):
        found = FormErrors()
        parsed = self._check_fields(_, state, found, for_sending=False)
        if found:
            return await self._show_compose(request, _, session, state, found, 400)
        spool = await self._write_spool(mailbox, state, parsed, draft=True)
        try:
            stored = await self.mailboxes.append(mailbox, DRAFTS, spool.path,
                                                 flags=(SEEN, DRAFT))
        except errors.KtmailError as e:
            found.add(*self._describe(_, e))
            return await self._show_compose(request, _, session, state, found,
                                            guards.error_status(e))
        finally:
            spool.discard()
        await self._forget_saved(mailbox, state)
        state.saved_uid = stored.info.uid
        session.data["notice"] = _("The draft was saved in Drafts.")
        return pages.redirect(request, f"{ROOT}compose/{state.id}")

    async def _forget_saved(self, mailbox, state):
        """Remove the previous saved copy of a draft (replaced or sent)."""
        if state.saved_uid is None:
            return
        try:
            await self.mailboxes.expunge(mailbox, DRAFTS, [state.saved_uid])
        except errors.KtmailError:
            pass
        state.saved_uid = None

    async def _send(self, request, _, session, mailbox, state):
        found = FormErrors()
        if self.submission is None:
            found.add(None, _("Sending is not available on this server just now."))
            return await self._show_compose(request, _, session, state, found, 503)
        parsed = self._check_fields(_, state, found, for_sending=True)
        recipients = []
        for name in ("to", "cc", "bcc"):
            for _name, address in parsed[name]:
                if address in recipients:
                    continue
                try:
                    recipients.append(await self.submission.check_recipient(mailbox, address))
                except errors.NoSuchMailbox:
                    found.add(name, _("There is no mailbox {address}; check the "
                                      "address.").format(address=str(address)))
                except errors.QuotaExceeded:
                    found.add(name, _("The mailbox {address} is full and cannot take mail "
                                      "now.").format(address=str(address)))
                except errors.KtmailError as e:
                    found.add(name, self._describe(_, e)[1])
        if not found:
            left, retry_at = await self._recipients_left(mailbox)
            if len(recipients) > left:
                if left <= 0:
                    found.add(None, self._describe(_, errors.RateLimited(retry_at=retry_at))[1])
                else:
                    found.add(None, _.n(
                        "You can send to {n} more recipient this hour, but this message has "
                        "{m}. Remove some recipients or wait.",
                        "You can send to {n} more recipients this hour, but this message has "
                        "{m}. Remove some recipients or wait.", left).format(
                        n=left, m=len(recipients)))
        if found:
            return await self._show_compose(request, _, session, state, found, 400)
        spool = await self._write_spool(mailbox, state, parsed, draft=False)
        try:
            if spool.size > self.limits.max_message_bytes:
                found.add("files", _("With its attachments encoded for sending the message "
                                     "would be {size} MB; the most is {limit} MB. Remove an "
                                     "attachment.").format(
                    size=mailpages.megabytes(spool.size), limit=self._max_mb()))
                return await self._show_compose(request, _, session, state, found, 413)
            envelope = Envelope(sender=str(mailbox.address), recipients=tuple(recipients),
                                client_address=guards.client_address(request),
                                authenticated=mailbox, protocol="HTTP",
                                received_at=self.web.clock.seconds())
            try:
                results = await self.submission.submit(envelope, spool, channel="webmail")
            except errors.KtmailError as e:
                found.add(*self._describe(_, e))
                return await self._show_compose(request, _, session, state, found,
                                                guards.error_status(e))
            failed = {a: e for a, e in results.items() if e is not None}
            notices = []
            if len(failed) < len(results):
                bcc_line = b""
                if parsed["bcc"]:
                    bcc_line = ("Bcc: " + ", ".join(str(a) for _n, a in parsed["bcc"])
                                ).encode("ascii") + b"\r\n"
                try:
                    await self.mailboxes.append(mailbox, SENT, spool.path, flags=(SEEN,),
                                                prefix=bcc_line)
                except errors.KtmailError as e:
                    notices.append(_("The message was sent, but no copy could be kept in "
                                     "Sent: {reason}").format(reason=self._describe(_, e)[1]))
        finally:
            spool.discard()
        sent = len(results) - len(failed)
        if sent:
            notices.insert(0, _.n("Message sent to {n} recipient.",
                                  "Message sent to {n} recipients.", sent).format(n=sent))
        for address, error in failed.items():
            notices.append(_("Not delivered to {address}: {reason}").format(
                address=str(address), reason=self._describe(_, error)[1]))
        if sent:
            await self._mark_answered(mailbox, state)
            await self._forget_saved(mailbox, state)
            self._drop_compose(session, state)
            session.data["notice"] = " ".join(notices)
            return pages.redirect(request, folder_url(INBOX))
        found.add(None, " ".join(notices))
        return await self._show_compose(request, _, session, state, found, 400)

    async def _mark_answered(self, mailbox, state):
        if state.answering is None:
            return
        name, uid = state.answering
        try:
            live = await self.mailboxes.open_folder(mailbox, name)
        except errors.KtmailError:
            return
        try:
            if live.info(uid) is not None:
                await live.set_flags([uid], {ANSWERED}, FLAGS_ADD)
        finally:
            live.release()

    # --- folders ---------------------------------------------------------------------------------

    def _folders_page(self, request, _, session, ctx, counts, found=None, form=None,
                      status=200):
        found = found or FormErrors()
        form = form or {}
        rows = []
        for name in ctx.folders:
            messages, unseen = counts.get(name, (0, 0))
            protected = name in mailpages.FOLDER_TITLES
            actions = ""
            if not protected:
                actions = tags.div(class_="folder-actions")(
                    post_form(ROOT + "folders/rename", session.csrf_token,
                              tags.input(type="hidden", name="name", value=name),
                              tags.label(_("New name"), for_=f"rename-{name}",
                                         class_="visually-hidden"),
                              tags.input(type="text", id=f"rename-{name}", name="new",
                                         value=name, required="required",
                                         **{"aria-label": _("New name for {folder}").format(
                                             folder=name)}),
                              tags.button(_("Rename"), type="submit", class_="btn btn-quiet"),
                              class_="inline-form"),
                    post_form(ROOT + "folders/delete", session.csrf_token,
                              tags.input(type="hidden", name="name", value=name),
                              tags.button(_("Delete"), type="submit",
                                          class_="btn btn-danger-quiet", **{
                                              "data-confirm": _("Delete the folder {folder} "
                                                                "and every message in "
                                                                "it?").format(folder=name)}),
                              class_="inline-form"))
            rows.append(tags.tr(
                tags.td(tags.a(mailpages.folder_path_title(_, name), href=folder_url(name))),
                tags.td(str(messages), class_="num"),
                tags.td(str(unseen), class_="num"),
                tags.td(actions)))
        parents = [("", _("(top level)"))] + [
            (n, mailpages.folder_path_title(_, n)) for n in ctx.folders
            if n not in ("Drafts", "Sent", "Spam", "Trash")]
        content = [
            pages.error_summary(_, found),
            tags.section(class_="card")(
                tags.h2(_("New folder")),
                post_form(ROOT + "folders/create", session.csrf_token,
                          tags.div(class_="address-row")(
                              field(_("Name"), "name", value=form.get("name", ""),
                                    error=found.get("name"), maxlength=100,
                                    hint=_("Letters, digits and spaces; not {chars}").format(
                                        chars=FORBIDDEN_IN_NAMES)),
                              tags.span("", class_="at"),
                              pages.select(_("Inside"), "parent", parents,
                                           value=form.get("parent", ""))),
                          pages.button(_("Create folder")))),
            tags.section(class_="card")(
                tags.table(class_="folder-table")(
                    tags.thead(tags.tr(tags.th(_("Folder")), tags.th(_("Messages"),
                                                                     class_="num"),
                                       tags.th(_("Unread"), class_="num"), tags.th(""))),
                    tags.tbody(*rows))),
        ]
        return self._frame(request, _, session, ctx, _("Folders"), content, ROOT + "folders",
                           status=status)

    async def _folder_counts(self, ctx):
        results = await defer.DeferredList(
            [self.mailboxes.folder_status(ctx.mailbox, n) for n in ctx.folders],
            consumeErrors=True)
        return {n: (s.messages, s.unseen) for n, (ok, s) in zip(ctx.folders, results) if ok}

    @app.route("/folders", methods=["GET", "HEAD"])
    @page(MAILBOX)
    async def folders(self, request, session, _):
        ctx = await self._context(session)
        return self._folders_page(request, _, session, ctx, await self._folder_counts(ctx))

    def _folder_error(self, _, exc):
        if isinstance(exc, errors.ValidationError):
            return "name", _("Not a valid folder name. These characters cannot be used: "
                             "{chars}; nor control characters, nor a space first or "
                             "last.").format(chars=FORBIDDEN_IN_NAMES)
        return self._describe(_, exc)

    async def _folder_change(self, request, session, _, form, change, done):
        ctx = await self._context(session)
        try:
            await change(ctx.mailbox)
        except errors.KtmailError as e:
            found = FormErrors()
            found.add(*self._folder_error(_, e))
            return self._folders_page(request, _, session, ctx, await self._folder_counts(ctx),
                                      found, form, status=guards.error_status(e))
        session.data["notice"] = done
        return pages.redirect(request, ROOT + "folders")

    @app.route("/folders/create", methods=["POST"])
    @action(MAILBOX)
    async def folder_create(self, request, session, _, form):
        leaf = form.get("name", "").strip()
        parent = form.get("parent", "")
        name = f"{parent}/{leaf}" if parent and leaf else leaf

        async def create(mailbox):
            if "/" in leaf or not leaf:
                raise errors.ValidationError(field="name")
            await self.mailboxes.create_folder(mailbox, name)
            await self.mailboxes.subscribe(mailbox, name)
        return await self._folder_change(request, session, _, form, create,
                                         _("Folder {folder} created.").format(folder=name))

    @app.route("/folders/rename", methods=["POST"])
    @action(MAILBOX)
    async def folder_rename(self, request, session, _, form):
        old, new = form.get("name", ""), form.get("new", "").strip()

        async def rename(mailbox):
            if old in mailpages.FOLDER_TITLES:
                raise errors.FolderProtected()
            await self.mailboxes.rename_folder(mailbox, old, new)
        return await self._folder_change(request, session, _, form, rename,
                                         _("Folder {old} renamed to {new}.").format(
                                             old=old, new=new))

    @app.route("/folders/delete", methods=["POST"])
    @action(MAILBOX)
    async def folder_delete(self, request, session, _, form):
        name = form.get("name", "")

        async def delete(mailbox):
            if name in mailpages.FOLDER_TITLES:
                raise errors.FolderProtected()
            await self.mailboxes.delete_folder(mailbox, name)
        return await self._folder_change(request, session, _, form, delete,
                                         _("Folder {folder} deleted.").format(folder=name))

