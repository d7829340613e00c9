"""Crafted messages for the spam filter tests: one clean personal message
and one clean newsletter that fire nothing, and ``variant()`` to change
headers or body of the clean message."""

import base64

RECEIVED = ("from mail.example.org (mail.example.org [80.69.12.34]) by mx.ktnet.fi "
            "with ESMTPS; Tue, 03 Mar 2026 10:00:05 +0000")

CLEAN_HEADERS = [
    ("Received", RECEIVED),
    ("From", "Maija Virtanen <maija@example.org>"),
    ("To", "Matti <matti@sboksi.fi>"),
    ("Subject", "Kokous torstaina"),
    ("Date", "Tue, 03 Mar 2026 09:59:58 +0000"),
    ("Message-ID", "<20260303095958.abc123@example.org>"),
    ("MIME-Version", "1.0"),
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Transfer-Encoding", "8bit"),
]

CLEAN_BODY = """Hei Matti,

siirretäänkö torstain kokous kello kymmeneen? Esityslista on sama kuin viime
viikolla, ja Pekka tuo mukanaan budjettiluvut. Kerro, sopiiko aika sinulle.

Terveisin
Maija
"""


def build(headers, body):
    """Raw CRLF message bytes from [(name, value)] and a str or bytes body."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    if isinstance(body, str):
        body = body.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    return head.encode("utf-8") + b"\r\n" + body


def variant(set_headers=(), remove=(), add=(), body=None, content_type=None):
    """The clean message with some headers set, removed or added and/or
    another body (and Content-Type)."""
    headers = list(CLEAN_HEADERS)
    remove = {r.lower() for r in remove}
    replacements = {name.lower(): (name, value) for name, value in set_headers}
    if content_type is not None:
        replacements["content-type"] = ("Content-Type", content_type)
    out = []
    for name, value in headers:
        if name.lower() in remove:
            continue
        if name.lower() in replacements:
            out.append(replacements.pop(name.lower()))
        else:
            out.append((name, value))
    out.extend(replacements.values())
    out.extend(add)
    return build(out, CLEAN_BODY if body is None else body)


def html_message(html, text=None, extra_headers=()):
    """A message whose body is HTML (with a plain alternative when ``text``)."""
    if text is None:
        return variant(set_headers=extra_headers, body=html,
                       content_type="text/html; charset=utf-8")
    body = ("--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text +
            "\r\n--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html +
            "\r\n--ALT--\r\n")
    return variant(set_headers=extra_headers, body=body,
                   content_type='multipart/alternative; boundary="ALT"')


def with_attachment(filename, content, content_type="application/octet-stream"):
    """The clean message with one base64 attachment."""
    encoded = base64.encodebytes(content).decode("ascii")
    body = ("--MIX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + CLEAN_BODY +
            f"\r\n--MIX\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + encoded + "\r\n--MIX--\r\n")
    return variant(body=body, content_type='multipart/mixed; boundary="MIX"')


NEWSLETTER_HTML = """<html><body>
<div style="display:none">Kevään uutuudet ja tapahtumat</div>
<h1>Kirjaston uutiskirje, maaliskuu</h1>
<p>Hei lukija! Maaliskuussa kirjastossa on lukupiiri, satutunti lapsille ja
kirjailijavieras. Katso koko ohjelma <a href="https://click.mailer.example.net/t/123">
tapahtumakalenterista</a>.</p>
<p><img src="https://cdn.example.net/logo.png" alt="logo"></p>
<p><a href="https://www.kirjasto.example.fi/uutiskirje/peru">Peru uutiskirjeen tilaus</a></p>
</body></html>"""

NEWSLETTER_TEXT = """Kirjaston uutiskirje, maaliskuu

Hei lukija! Maaliskuussa kirjastossa on lukupiiri, satutunti lapsille ja
kirjailijavieras. Katso koko ohjelma tapahtumakalenterista:
https://click.mailer.example.net/t/123

Peru uutiskirjeen tilaus: https://www.kirjasto.example.fi/uutiskirje/peru
"""


def newsletter():
    """A modern, well-made bulk message (List-Unsubscribe, DKIM, alternative)."""
    return html_message(NEWSLETTER_HTML, NEWSLETTER_TEXT, extra_headers=[
        ("From", "Kirjasto <uutiskirje@kirjasto.example.fi>"),
        ("Subject", "Kirjaston uutiskirje: maaliskuun tapahtumat"),
        ("List-Unsubscribe", "<https://www.kirjasto.example.fi/uutiskirje/peru>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ])
