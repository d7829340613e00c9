"""HTML mail made safe to look at: sanitised with nh3 (the ammonia
sanitiser) and served as its own document for a sandboxed frame.

Invariants of what ``sanitize`` returns:
- no script in any form: no <script>, <style>, <iframe>, <object>, <form>,
  <meta>, <link>, <base> or SVG; no event-handler attributes; links only
  with http, https and mailto URLs, opening in a new tab without referrer;
- no request leaves for the network unless the reader asked
  (``allow_remote``): remote ``src`` values are dropped and counted, CSS
  ``url(...)`` is dropped from style attributes, ``cid:`` images point at
  ``inline_url(content_id)`` (a part of the same message, served by us);
- style attributes keep only layout and typography properties: nothing
  positioned (``position``), no ``behavior``/``-moz-binding``/
  ``expression()``, no ``@import``.

The document is then served under FRAME_CSP (no script, no network other
than our own inline parts, its own sandbox) and shown in an ``<iframe
sandbox>`` without allow-scripts or allow-same-origin: each layer alone
keeps the message inert.
"""

import re
from html import escape

import nh3

ALLOWED_TAGS = (set(nh3.ALLOWED_TAGS) | {"font", "big", "tfoot", "address"}) - {
    "map", "area", "details", "summary"}

_LAYOUT_ATTRIBUTES = {"align", "valign", "width", "height", "bgcolor", "border",
                      "cellpadding", "cellspacing", "dir", "lang", "title", "style", "class"}
ATTRIBUTES = {tag: set(values) for tag, values in nh3.ALLOWED_ATTRIBUTES.items()}
for _tag in ALLOWED_TAGS:
    ATTRIBUTES.setdefault(_tag, set()).update(_LAYOUT_ATTRIBUTES)
ATTRIBUTES["font"].update({"color", "face", "size"})
ATTRIBUTES["img"].update({"src", "alt"})
ATTRIBUTES["a"].update({"href", "name"})
ATTRIBUTES["td"].add("nowrap")
ATTRIBUTES["th"].add("nowrap")
ATTRIBUTES["body"] = set()

#: CSS properties kept in style attributes (layout and typography only)
STYLE_PROPERTIES = {
    "background", "background-color", "background-image", "background-repeat",
    "background-position", "background-size", "border", "border-bottom", "border-collapse",
    "border-color", "border-left", "border-radius", "border-right", "border-spacing",
    "border-style", "border-top", "border-width", "color", "direction", "display",
    "font", "font-family", "font-size", "font-style", "font-variant", "font-weight",
    "height", "letter-spacing", "line-height", "list-style", "list-style-type", "margin",
    "margin-bottom", "margin-left", "margin-right", "margin-top", "max-height", "max-width",
    "min-height", "min-width", "mso-line-height-rule", "opacity", "overflow", "padding",
    "padding-bottom", "padding-left", "padding-right", "padding-top", "table-layout",
    "text-align", "text-decoration", "text-indent", "text-transform", "vertical-align",
    "white-space", "width", "word-break", "word-spacing", "word-wrap", "overflow-wrap",
}

_DANGEROUS_CSS = re.compile(r"expression\s*\(|javascript:|@import|behavior|-moz-binding|\\",
                            re.IGNORECASE)
_URL = re.compile(r"url\s*\(", re.IGNORECASE)

#: the Content-Security-Policy of the message document: styles inline only,
#: images from data: and our inline parts (remote ones only when asked),
#: nothing else at all; sandboxed even when opened on its own
FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
             "font-src 'none'; form-action 'none'; base-uri 'none'; "
             "frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox")


def frame_csp(own_origin, allow_remote):
    """The CSP header value for a message document served from ``own_origin``."""
    images = f"data: {own_origin}"
    if allow_remote:
        images += " https: http:"
    return FRAME_CSP.format(images=images)


def _clean_style(value, allow_remote):
    kept = []
    for declaration in value.split(";"):
        name, colon, rest = declaration.partition(":")
        name = name.strip().lower()
        if not colon or name not in STYLE_PROPERTIES:
            continue
        rest = rest.strip()
        if _DANGEROUS_CSS.search(rest):
            continue
        if _URL.search(rest) and not allow_remote:
            continue
        kept.append(f"{name}: {rest}")
    return "; ".join(kept) or None


class _Filter:
    def __init__(self, inline_url, allow_remote):
        self.inline_url = inline_url
        self.allow_remote = allow_remote
        self.blocked = 0
        self.inline = 0

    def __call__(self, tag, attribute, value):
        if attribute == "style":
            cleaned = _clean_style(value, self.allow_remote)
            if cleaned is None and _URL.search(value) and not self.allow_remote:
                self.blocked += 1
            return cleaned
        if attribute in ("src", "background"):
            lowered = value.strip().lower()
            if lowered.startswith("cid:"):
                url = self.inline_url(value.strip()[4:].strip().strip("<>"))
                if url:
                    self.inline += 1
                return url
            if lowered.startswith("data:image/") and tag == "img":
                return value
            if lowered.startswith(("http://", "https://", "//")):
                if self.allow_remote:
                    return value
                self.blocked += 1
                return None
            return None
        if attribute == "class":
            return None  # class names of the sender mean nothing without its <style>
        return value


def sanitize(html, inline_url=lambda content_id: None, allow_remote=False):
    """-> (safe HTML fragment, number of remote images held back).

    ``inline_url(content_id)`` gives the URL of a ``cid:`` image of the same
    message, or None when it has no such part."""
    keep = _Filter(inline_url, allow_remote)
    attributes = {tag: set(values) for tag, values in ATTRIBUTES.items()}
    cleaned = nh3.clean(
        html, tags=ALLOWED_TAGS, attributes=attributes,
        clean_content_tags={"script", "style", "title", "head", "noscript", "template",
                            "textarea", "select", "svg", "math", "object", "iframe"},
        url_schemes={"http", "https", "mailto", "cid", "data"},
        link_rel="noopener noreferrer", attribute_filter=keep,
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True)
    return cleaned, keep.blocked


_DOCUMENT_STYLE = (
    "html{color-scheme:light}"
    "body{margin:0;padding:16px;background:#fff;color:#1c2430;"
    "font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;"
    "overflow-wrap:anywhere}"
    "img{max-width:100%;height:auto}table{max-width:100%}"
    "blockquote{margin:0 0 0 .8em;padding-left:.8em;border-left:3px solid #dde3ea}"
    "pre{white-space:pre-wrap}")


def document(fragment, title=""):
    """The whole message document for the frame (UTF-8)."""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{escape(title)}"
            f"</title><style>{_DOCUMENT_STYLE}</style></head><body>{fragment}</body></html>"
            ).encode()
