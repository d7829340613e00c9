"""Page layout and form widgets, built with twisted.web.template tags.

Every value goes into the page through ``tags`` children or attributes,
which the flattener escapes, so no text a user typed can become markup.
There is no string-built HTML and no Plating (whose ``?json=1`` would
answer with the slot data). Pages work without JavaScript; the script in
/static only adds hints (password strength, typed-address check).
"""

import re
from urllib.parse import quote

import attrs
from twisted.web.template import Tag, flatten, tags

from ktmail.web.i18n import LANGUAGES

STATIC = "/static"


def render(request, root, status=200):
    """Flatten ``root`` to a UTF-8 HTML answer (all-synchronous tags)."""
    out = []
    failures = []
    flatten(request, root, out.append).addErrback(failures.append)
    if failures:
        failures[0].raiseException()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    return b"<!DOCTYPE html>\n" + b"".join(out)


def redirect(request, location, status=303):
    """See Other: after a POST the browser GETs ``location`` (a local path)."""
    request.setResponseCode(status)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b""


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fmt(text, **parts):
    """A translated sentence with tags in it: ``fmt(_("Hello {name}"),
    name=tags.strong(name))``. Placeholders are replaced by the given tags
    or text; the rest stays plain text, escaped when flattened."""
    out = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        out.append(text[pos:m.start()])
        out.append(parts.get(m.group(1), m.group(0)))
        pos = m.end()
    out.append(text[pos:])
    return [p for p in out if p != ""]


@attrs.define
class FormErrors:
    """Errors of one form submission: per field, and for the whole form."""

    fields: dict = attrs.field(factory=dict)
    general: list = attrs.field(factory=list)

    def add(self, field, text):
        if field and field not in self.fields:
            self.fields[field] = text
        elif not field:
            self.general.append(text)

    def __bool__(self):
        return bool(self.fields or self.general)

    def get(self, field):
        return self.fields.get(field)


def error_summary(_, errors):
    if not errors:
        return ""
    items = list(errors.general)
    if errors.fields and not errors.general:
        items.append(_("Please correct the marked fields."))
    return tags.div(class_="alert alert-error", role="alert", tabindex="-1",
                    id="form-errors")(*[tags.p(i) for i in items])


def field(label, name, *, value="", error=None, type="text", hint=None, autocomplete=None,
          required=True, autofocus=False, inputmode=None, maxlength=None, extra=None,
          suffix=None):
    """A labelled input with its hint and its error next to it."""
    described = []
    children = [tags.label(label, for_=f"f-{name}")]
    if hint:
        described.append(f"h-{name}")
        children.append(tags.p(hint, class_="hint", id=f"h-{name}"))
    if error:
        described.append(f"e-{name}")
        children.append(tags.p(error, class_="field-error", id=f"e-{name}"))
    attributes = {"id": f"f-{name}", "name": name, "type": type}
    if type != "password" and value:
        attributes["value"] = value
    if autocomplete:
        attributes["autocomplete"] = autocomplete
    if required:
        attributes["required"] = "required"
    if autofocus:
        attributes["autofocus"] = "autofocus"
    if inputmode:
        attributes["inputmode"] = inputmode
    if maxlength:
        attributes["maxlength"] = str(maxlength)
    if described:
        attributes["aria-describedby"] = " ".join(described)
    if error:
        attributes["aria-invalid"] = "true"
    attributes.update(extra or {})
    control = tags.input(**attributes)
    if suffix is not None:
        control = tags.div(class_="input-group")(control, suffix)
    children.append(control)
    return tags.div(class_="field" + (" has-error" if error else ""))(*children)


def select(label, name, options, *, value=None, error=None, hint=None):
    """A labelled <select>; ``options`` is a list of (value, text)."""
    choices = []
    for option_value, text in options:
        attributes = {"value": option_value}
        if option_value == value:
            attributes["selected"] = "selected"
        choices.append(tags.option(text, **attributes))
    attributes = {"id": f"f-{name}", "name": name}
    if error:
        attributes["aria-invalid"] = "true"
        attributes["aria-describedby"] = f"e-{name}"
    children = [tags.label(label, for_=f"f-{name}")]
    if hint:
        children.append(tags.p(hint, class_="hint"))
    if error:
        children.append(tags.p(error, class_="field-error", id=f"e-{name}"))
    children.append(tags.select(**attributes)(*choices))
    return tags.div(class_="field" + (" has-error" if error else ""))(*children)


def strength_hint(_, id):
    """Where the script shows how strong a new password looks."""
    return tags.p("", class_="strength", id=id, **{
        "aria-live": "polite", "data-weak": _("Weak password"),
        "data-fair": _("Fair password; longer is better"),
        "data-good": _("Strong password")})


def post_form(action, csrf_token, *children, class_="form", **attributes):
    """A POST form carrying the CSRF token (every state change is a POST)."""
    return tags.form(method="post", action=action, class_=class_, **attributes)(
        tags.input(type="hidden", name="csrf", value=csrf_token), *children)


def button(text, *, kind="primary", name=None, value=None, **attributes):
    attributes = dict(attributes)
    if name:
        attributes["name"] = name
        attributes["value"] = value or ""
    return tags.button(text, type="submit", class_=f"btn btn-{kind}", **attributes)


def notice(text, kind="ok"):
    if not text:
        return ""
    return tags.div(class_=f"alert alert-{kind}", role="status")(tags.p(text))


def language_switch(_, here):
    """Links to the same page in every language (cookie set by /lang/)."""
    links = []
    for code, name in LANGUAGES.items():
        if code == _.lang:
            links.append(tags.span(name, class_="lang current", lang=code,
                                   **{"aria-current": "true"}))
        else:
            links.append(tags.a(name, href=f"/lang/{code}?next={quote(here, safe='/')}", class_="lang",
                                lang=code, hreflang=code))
    return tags.nav(class_="langs", **{"aria-label": _("Language")})(*links)


def layout(_, *, title, section, content, here="/", home="/", account=None,
           logout=None, csrf_token=None, wide=False, sidebar=None, banner=""):
    """The page around ``content``: header with section name, language
    switch and (when logged in) the account and a log-out button. With a
    ``sidebar`` (the webmail's folders) the page is two columns wide, the
    ``banner`` (e.g. a quota warning) above both."""
    right = [language_switch(_, here)]
    if account and logout and csrf_token:
        right.append(tags.form(method="post", action=logout, class_="logout")(
            tags.input(type="hidden", name="csrf", value=csrf_token),
            tags.span(account, class_="who"),
            tags.button(_("Log out"), type="submit", class_="btn btn-quiet")))
    return tags.html(lang=_.lang)(
        tags.head(
            tags.meta(charset="utf-8"),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.meta(name="color-scheme", content="light dark"),
            tags.title(title if title == section else f"{title} · {section}"),
            tags.link(rel="stylesheet", href=f"{STATIC}/ktmail.css"),
            tags.link(rel="icon", href=f"{STATIC}/icon.svg", type="image/svg+xml"),
            tags.script(src=f"{STATIC}/ktmail.js", defer="defer"),
        ),
        tags.body(
            tags.a(_("Skip to content"), href="#main", class_="skip"),
            tags.header(class_="topbar")(tags.div(
                class_="wrap topbar-inner" + (" app-top" if sidebar is not None else ""))(
                tags.a(href=home, class_="brand")(
                    tags.img(src=f"{STATIC}/icon.svg", alt="", width="28", height="28"),
                    tags.span(section)),
                tags.div(class_="topbar-right")(*right))),
            Tag("main")(id="main", class_="wrap app", tabindex="-1")(
                banner, tags.div(class_="app-grid")(
                    sidebar, tags.div(class_="app-main")(tags.h1(title), content)))
            if sidebar is not None else
            Tag("main")(id="main", class_="wrap" + (" wide" if wide else ""))(
                tags.h1(title), content),
            tags.footer(class_="wrap footer")(
                tags.a(_("Help with mail programs"), href="/help"),
                " · ", tags.a(_("Webmail"), href="/webmail/"),
                " · ", tags.a(_("Manage services"), href="/admin/")),
        ),
    )
