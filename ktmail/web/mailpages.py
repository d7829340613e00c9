"""The pieces of the webmail's pages, built with twisted.web.template tags
(everything a message or a person wrote is escaped by the flattener):
the folder list, the quota bar, the message list, the reading view and the
compose form. No I/O here: ``webmail.py`` gathers the data and calls these.

URLs: a folder appears in paths with ``/`` written as ``.`` (a folder
name can never hold a dot, model.normalize_folder_name), so one path
segment names it whatever its depth: ``/webmail/f/Kvitton.2026/``.
"""

import email.utils
import re
import time
from urllib.parse import quote, urlencode

from twisted.web.template import Tag, tags

from ktmail.model import INBOX, SEPARATOR
from ktmail.services import messageview
from ktmail.web.pages import fmt

ROOT = "/webmail/"
MiB = 1024 * 1024
SPECIAL_ORDER = (INBOX, "Drafts", "Sent", "Spam", "Trash")


def N_(message):
    return message


FOLDER_TITLES = {INBOX: N_("Inbox"), "Drafts": N_("Drafts"), "Sent": N_("Sent"),
                 "Spam": N_("Spam"), "Trash": N_("Trash")}
#: line icons (24×24, drawn with the text colour); inline SVG needs no request
ICON_PATHS = {
    INBOX: "M3 13h5l2 3h4l2-3h5M5.5 5h13L21 13v6H3v-6z",
    "Drafts": "M4 20h4L19.5 8.5l-4-4L4 16zM13.5 6.5l4 4",
    "Sent": "M3 11.5 21 3l-8.5 18-2-7.5z",
    "Spam": "M12 3.5 21 19H3zM12 10v4.5M12 16.8v.4",
    "Trash": "M4 7h16M9.5 7V4.5h5V7M6 7l1 13h10l1-13",
    "folder": "M3 6h6.5l2 2.5H21V19H3z",
    "clip": ("M16.5 7.5 9 15a2 2 0 0 0 3 3l7.5-7.5a4 4 0 0 0-5.7-5.7L6.3 12.3"
             "a6 6 0 0 0 8.5 8.5L20 15.5"),
}


def icon(name, label=None):
    attributes = {"viewBox": "0 0 24 24", "width": "18", "height": "18", "class": "icon",
                  "fill": "none", "stroke": "currentColor", "stroke-width": "1.8",
                  "stroke-linecap": "round", "stroke-linejoin": "round"}
    if label:
        attributes.update({"role": "img", "aria-label": label})
    else:
        attributes["aria-hidden"] = "true"
    children = [Tag("title")(label)] if label else []
    return Tag("svg")(**attributes)(*children, Tag("path")(d=ICON_PATHS[name]))
MONTHS = (N_("Jan"), N_("Feb"), N_("Mar"), N_("Apr"), N_("May"), N_("Jun"), N_("Jul"),
          N_("Aug"), N_("Sep"), N_("Oct"), N_("Nov"), N_("Dec"))


# --- URLs ----------------------------------------------------------------------------------


def folder_token(name):
    return name.replace(SEPARATOR, ".")


def folder_from_token(token):
    return token.replace(".", SEPARATOR)


def folder_url(name, suffix="", **query):
    url = f"{ROOT}f/{quote(folder_token(name), safe='')}/{suffix}"
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return url + ("?" + urlencode(query) if query else "")


def message_url(name, uid, suffix="", **query):
    return folder_url(name, f"{uid}" + (f"/{suffix}" if suffix else ""), **query)


# --- words and numbers -----------------------------------------------------------------------


def folder_title(_, name):
    if name in FOLDER_TITLES:
        return _(FOLDER_TITLES[name])
    return name.rsplit(SEPARATOR, 1)[-1]


def folder_path_title(_, name):
    if name in FOLDER_TITLES:
        return _(FOLDER_TITLES[name])
    return name.replace(SEPARATOR, " / ")


def human_size(n):
    if n < 1000:
        return f"{n} B"
    if n < 1000 * 1024:
        return f"{max(1, round(n / 1024))} kB"
    value = n / MiB
    return f"{value:.1f} MB" if value < 10 else f"{value:.0f} MB"


def megabytes(n):
    value = n / MiB
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def short_date(_, seconds, now):
    """Today: 14:05; this year: 12 Mar; earlier: 2024-03-12 (server's time zone)."""
    if seconds is None:
        return ""
    t, today = time.localtime(seconds), time.localtime(now)
    if t[:3] == today[:3]:
        return time.strftime("%H:%M", t)
    if t.tm_year == today.tm_year and seconds <= now + 86400:
        return f"{t.tm_mday} {_(MONTHS[t.tm_mon - 1])}"
    return time.strftime("%Y-%m-%d", t)


def full_date(seconds):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else ""


def iso_date(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds)) if seconds else ""


def display_name(text):
    """The person in a decoded From:/To: value: its name, else the address."""
    if not text:
        return ""
    first = text.split(",")[0] if "<" not in text.split(",")[0] or "," not in text else text
    name, address = email.utils.parseaddr(first)
    return name or address or text


# --- the frame: folders and quota ------------------------------------------------------------


def folder_nav(_, folders, current, counts):
    """The folder list: ``folders`` in display order, ``counts`` name -> unseen."""
    items = []
    for name in folders:
        depth = name.count(SEPARATOR) if name not in FOLDER_TITLES else 0
        unseen = counts.get(name, 0)
        label = [icon(name if name in ICON_PATHS else "folder"),
                 tags.span(folder_title(_, name), class_="fname")]
        if unseen and name not in ("Sent", "Drafts", "Trash"):
            label.append(tags.span(str(unseen), class_="count-badge",
                                   title=_.n("{n} unread", "{n} unread", unseen).format(n=unseen)))
        attributes = {"href": folder_url(name), "class": f"folder depth-{min(depth, 6)}"}
        if name == current:
            attributes["aria-current"] = "page"
            attributes["class"] += " current"
        items.append(tags.li(tags.a(**attributes)(*label)))
    return tags.nav(class_="folders", **{"aria-label": _("Folders")})(
        tags.ul(*items),
        tags.p(tags.a(_("Manage folders"), href=ROOT + "folders", class_="quiet-link")))


def quota_bar(_, quota):
    used, limit = quota.used_bytes, quota.limit_bytes
    percent = min(100, round(100 * quota.fraction))
    level = "danger" if quota.fraction >= 0.95 else "warn" if quota.fraction >= 0.8 else "ok"
    return tags.div(class_=f"quota quota-{level}")(
        tags.label(_("Storage"), for_="quota-meter", class_="quota-label"),
        tags.meter(id="quota-meter", value=str(used), min="0", max=str(limit),
                   low=str(int(limit * 0.8)), high=str(int(limit * 0.95)), optimum="0"),
        tags.p(_("{used} MB of {limit} MB ({percent} %)").format(
            used=megabytes(used), limit=megabytes(limit), percent=percent), class_="quota-text"))


def quota_banner(_, quota):
    if quota.fraction >= 0.95:
        return tags.div(class_="alert alert-error banner", role="alert")(tags.p(
            _("Your mailbox is almost full ({percent} %). New mail will be refused when it "
              "is full: delete old mail, empty the Trash or save attachments elsewhere.").format(
                percent=min(100, round(100 * quota.fraction)))))
    if quota.fraction >= 0.8:
        return tags.div(class_="alert alert-warn banner", role="status")(tags.p(
            _("Your mailbox is {percent} % full. Delete mail you do not need, and empty the "
              "Trash.").format(percent=round(100 * quota.fraction))))
    return ""


def sidebar(_, folders, current, counts, quota):
    return tags.aside(class_="mail-side")(
        tags.a(_("Write"), href=ROOT + "compose", class_="btn btn-primary compose-btn",
               accesskey="n", **{"data-key": "c"}),
        tags.details(class_="folder-menu", open="open")(
            tags.summary(_("Folders")),
            folder_nav(_, folders, current, counts)),
        quota_bar(_, quota))


# --- the message list ------------------------------------------------------------------------


def sort_link(_, folder, label, key, state):
    """A column heading that sorts by ``key`` (again: the other way round)."""
    active = state["sort"] == key
    order = "asc" if active and state["order"] == "desc" else "desc"
    if not active:
        order = "desc" if key in ("date", "size") else "asc"
    arrow = ""
    if active:
        arrow = " ↓" if state["order"] == "desc" else " ↑"
    attributes = {"href": folder_url(folder, sort=key, order=order, q=state.get("q"),
                                     field=state.get("field"))}
    if active:
        attributes["aria-sort"] = "descending" if state["order"] == "desc" else "ascending"
    return tags.a(**attributes)(label, arrow)


def message_row(_, folder, info, summary, now, show_to, spam_days):
    fields = summary.fields if summary is not None else {}
    who = fields.get("hdr_to") if show_to else fields.get("hdr_from")
    subject = fields.get("subject") or _("(no subject)")
    unread = not info.seen
    flagged = "\\Flagged" in info.flags
    has_attachment = False
    if summary is not None and summary.structure is not None:
        has_attachment = any(p.is_attachment for p in summary.structure.walk()
                             if not p.is_multipart)
    classes = ["msg"] + (["unread"] if unread else []) + (["flagged"] if flagged else [])
    uid = info.uid
    date = fields.get("sent_date") or info.internal_date
    if folder in ("Sent", "Drafts"):
        date = info.internal_date
    marks = []
    if unread:
        marks.append(tags.span("●", class_="mark-unread", title=_("Unread")))
    if flagged:
        marks.append(tags.span("★", class_="mark-flag", title=_("Flagged")))
    if "\\Answered" in info.flags:
        marks.append(tags.span("↩", class_="mark-answered", title=_("Answered")))
    extra = []
    if has_attachment:
        extra.append(tags.span(icon("clip", _("Has attachments")), class_="mark-attachment"))
    if spam_days is not None:
        extra.append(tags.span(_.n("deleted in {n} day", "deleted in {n} days",
                                   spam_days).format(n=spam_days), class_="expiry"))
    label = _("Select message {subject}").format(subject=subject)
    return tags.tr(class_=" ".join(classes), **{"data-uid": str(uid)})(
        tags.td(class_="c-select")(tags.input(type="checkbox", name="uid", value=str(uid),
                                              form="list-actions", **{"aria-label": label})),
        tags.td(class_="c-marks")(*marks),
        tags.td(class_="c-who")(
            tags.span(_("To:") + " ", class_="to-label") if show_to else "",
            display_name(who) or _("(unknown)")),
        tags.td(class_="c-subject")(
            tags.a(subject, href=message_url(folder, uid), class_="open"), *extra),
        tags.td(class_="c-date")(tags.time(short_date(_, date, now), datetime=iso_date(date),
                                           title=full_date(date))),
        tags.td(class_="c-size")(human_size(info.size)))


def move_options(_, folders, current):
    return [tags.option(folder_path_title(_, name), value=name)
            for name in folders if name != current]


def list_toolbar(_, folder, folders, csrf_token, action_url):
    """The actions on the selected messages (one form; the checkboxes in
    the table belong to it by their ``form`` attribute)."""
    buttons = [tags.button(_("Mark read"), type="submit", name="act", value="read",
                           class_="btn btn-quiet"),
               tags.button(_("Mark unread"), type="submit", name="act", value="unread",
                           class_="btn btn-quiet"),
               tags.button(_("Flag"), type="submit", name="act", value="flag",
                           class_="btn btn-quiet"),
               tags.button(_("Remove flag"), type="submit", name="act", value="unflag",
                           class_="btn btn-quiet")]
    if folder == "Spam":
        buttons.append(tags.button(_("Not spam"), type="submit", name="act", value="notspam",
                                   class_="btn btn-quiet"))
    else:
        buttons.append(tags.button(_("Spam"), type="submit", name="act", value="spam",
                                   class_="btn btn-quiet"))
    if folder in ("Trash", "Spam"):
        buttons.append(tags.button(_("Delete for good"), type="submit", name="act",
                                   value="delete", class_="btn btn-danger-quiet",
                                   **{"data-confirm": _("Delete the selected messages for "
                                                        "good? This cannot be undone.")}))
    else:
        buttons.append(tags.button(_("Delete"), type="submit", name="act", value="delete",
                                   class_="btn btn-danger-quiet"))
    return tags.form(method="post", action=action_url, id="list-actions",
                     class_="toolbar list-toolbar")(
        tags.input(type="hidden", name="csrf", value=csrf_token),
        tags.label(class_="select-all")(
            tags.input(type="checkbox", id="select-all", hidden="hidden"),
            tags.span(_("All"))),
        tags.div(class_="toolbar-buttons")(*buttons),
        tags.div(class_="move")(
            tags.label(_("Move to"), for_="move-target", class_="visually-hidden"),
            tags.select(id="move-target", name="target")(
                tags.option(_("Move to…"), value=""), *move_options(_, folders, folder)),
            tags.button(_("Move"), type="submit", name="act", value="move",
                        class_="btn btn-quiet")))


def search_form(_, folder, state):
    fields = [("all", _("Everywhere")), ("from", _("Sender")), ("to", _("Recipient")),
              ("subject", _("Subject")), ("body", _("Message text"))]
    options = []
    for value, text in fields:
        attributes = {"value": value}
        if state.get("field", "all") == value:
            attributes["selected"] = "selected"
        options.append(tags.option(text, **attributes))
    return tags.form(method="get", action=folder_url(folder), class_="search", role="search")(
        tags.label(_("Search"), for_="q", class_="visually-hidden"),
        tags.input(type="search", id="q", name="q", value=state.get("q") or "",
                   placeholder=_("Search in {folder}").format(folder=folder_title(_, folder)),
                   **{"data-key": "/"}),
        tags.label(_("Search in"), for_="search-field", class_="visually-hidden"),
        tags.select(id="search-field", name="field")(*options),
        tags.button(_("Search"), type="submit", class_="btn btn-quiet"))


def pager(_, folder, state, page, pages, total, start, shown):
    if total == 0:
        return ""
    links = []
    common = {k: state.get(k) for k in ("sort", "order", "q", "field")}
    if page > 1:
        links.append(tags.a(_("← Newer") if state["sort"] == "date" and
                            state["order"] == "desc" else _("← Previous"),
                            href=folder_url(folder, page=page - 1, **common), rel="prev",
                            class_="btn btn-quiet", **{"data-key": "p"}))
    links.append(tags.span(_("{first}–{last} of {total}").format(
        first=start + 1, last=start + shown, total=total), class_="page-info"))
    if page < pages:
        links.append(tags.a(_("Older →") if state["sort"] == "date" and
                            state["order"] == "desc" else _("Next →"),
                            href=folder_url(folder, page=page + 1, **common), rel="next",
                            class_="btn btn-quiet", **{"data-key": "n"}))
    return tags.nav(class_="pager", **{"aria-label": _("Pages")})(*links)


# --- reading ----------------------------------------------------------------------------------


def address_list(_, pairs):
    out = []
    for i, (name, address) in enumerate(pairs):
        if i:
            out.append(", ")
        if name:
            out.append(tags.span(name, class_="person", title=address))
            if address:
                out.append(tags.span(f" <{address}>", class_="addr"))
        else:
            out.append(tags.span(address, class_="person"))
    return out


_URL_IN_TEXT = re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


def linkified(text):
    """Plain text with its http(s) URLs as links (all parts escaped)."""
    out = []
    pos = 0
    for m in _URL_IN_TEXT.finditer(text):
        out.append(text[pos:m.start()])
        out.append(tags.a(m.group(), href=m.group(), rel="noopener noreferrer nofollow",
                          target="_blank"))
        pos = m.end()
    out.append(text[pos:])
    return out


def plain_body(text):
    """Plain text with quoted lines (``>``) in a quieter colour."""
    blocks = []
    quoted_lines = []
    normal = []

    def flush_normal():
        if normal:
            blocks.append(tags.span(linkified("\n".join(normal) + "\n")))
            normal.clear()

    def flush_quoted():
        if quoted_lines:
            blocks.append(tags.span(linkified("\n".join(quoted_lines) + "\n"), class_="quoted"))
            quoted_lines.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(">"):
            flush_normal()
            quoted_lines.append(line)
        else:
            flush_quoted()
            normal.append(line)
    flush_normal()
    flush_quoted()
    return tags.pre(class_="plain-body")(*blocks)


def attachment_list(_, folder, uid, attachments):
    items = []
    for a in attachments:
        url = message_url(folder, uid, f"part/{messageview.section_text(a.section)}")
        viewable = a.content_type in ("image/png", "image/jpeg", "image/gif", "image/webp")
        links = [tags.a(_("Download"), href=url, download=a.filename, class_="btn btn-quiet")]
        if viewable:
            links.insert(0, tags.a(_("Open"), href=url + "?view=1", target="_blank",
                                   rel="noopener", class_="btn btn-quiet"))
        items.append(tags.li(class_="attachment")(
            icon("clip"),
            tags.span(class_="att-name")(a.filename),
            tags.span(f"{human_size(a.size)} · {a.content_type}", class_="att-meta"),
            tags.span(class_="att-links")(*links)))
    return tags.section(class_="attachments", **{"aria-label": _("Attachments")})(
        tags.h2(_.n("{n} attachment", "{n} attachments", len(attachments)).format(
            n=len(attachments))),
        tags.ul(*items))


def spam_panel(_, report, rules, days_left):
    """"Why is this spam?": the verdict and the rules that fired."""
    rows = []
    for name, description, score in rules:
        rows.append(tags.tr(tags.td(tags.code(name)), tags.td(_(description) if description else ""),
                            tags.td("" if score is None else f"{score:+.1f}", class_="num")))
    summary_text = _("Why is this spam?") if report.is_spam else _("Spam check")
    score = ""
    if report.score is not None and report.required is not None:
        score = tags.p(_("Score {score:.1f}; {required:.1f} or more counts as spam.").format(
            score=report.score, required=report.required))
    return tags.details(class_="card spam-panel", **({"open": "open"} if report.is_spam else {}))(
        tags.summary(summary_text),
        score,
        tags.table(class_="rules")(
            tags.thead(tags.tr(tags.th(_("Rule")), tags.th(_("What it found")),
                               tags.th(_("Points"), class_="num"))),
            tags.tbody(*rows)) if rows else tags.p(_("No rule fired.")),
        tags.p(_.n("This message will be deleted in {n} day.",
                   "This message will be deleted in {n} days.", days_left).format(n=days_left),
               class_="expiry") if days_left is not None else "")


def frame(_, url, title):
    """The sandboxed frame of an HTML body: no scripts, no same-origin
    access, popups (links) open outside the sandbox."""
    return Tag("iframe")(src=url, title=title, class_="html-body",
                         sandbox="allow-popups allow-popups-to-escape-sandbox",
                         referrerpolicy="no-referrer", loading="lazy")


def remote_notice(_, url):
    return tags.div(class_="alert alert-info images-blocked", role="status")(
        tags.p(fmt(_("Pictures from the internet are not shown, so that the sender cannot see "
                     "when you read the message. {show}"),
                   show=tags.a(_("Show pictures"), href=url))))


def keyboard_help(_):
    """The list of keys, shown by the script when "?" is pressed."""
    keys = [("c", _("Write a message")), ("/", _("Search")), ("j / k", _("Next / previous")),
            ("o", _("Open")), ("x", _("Select")), ("r", _("Reply")), ("a", _("Reply all")),
            ("f", _("Forward")), ("#", _("Delete")), ("u", _("Back to the list")),
            ("Ctrl+Enter", _("Send")), ("?", _("Show or hide this help"))]
    return Tag("template")(id="keyboard-help")(
        tags.div(class_="card kbd-help", role="dialog",
                 **{"aria-label": _("Keyboard shortcuts")})(
            tags.h2(_("Keyboard shortcuts")),
            tags.dl(*[[tags.dt(tags.kbd(k)), tags.dd(text)] for k, text in keys])))
