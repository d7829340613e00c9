"""The webmail in a real headless Chromium against a real ``twistd ktmail``.

Mail arrives over SMTP (port 25, smtplib); Alice reads it, opens an
attachment, looks at a hostile HTML message (nothing runs, nothing is
fetched from the internet), writes to Bob with an attachment (it arrives
in Bob's Inbox and in Alice's Sent), moves a message to Spam and back,
runs into the hourly sending limit and logs out. Screenshots of the main
pages at desktop and phone widths go to tests/artefacts/webmail/.
"""

import base64
import os
import pathlib
import re
from urllib.parse import urlsplit

from tests.e2e import PASSWORD, DaemonTestCase
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, skip_reason

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

ARTEFACTS = pathlib.Path(__file__).resolve().parent.parent / "artefacts" / "webmail"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 300 + b"\n%%EOF\n"

HOSTILE = b"""From: "Styrelsen" <styrelsen@example.org>
To: alice@brev.fi
Subject: =?utf-8?q?Protokoll_fr=C3=A5n_m=C3=B6tet?=
Date: Mon, 21 Sep 2026 10:00:00 +0200
Message-ID: <hostile.1@example.org>
MIME-Version: 1.0
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: text/html; charset=utf-8

<html><head><style>@import url(http://evil.example/x.css); body{background:url(http://evil.example/bg.png)}</style>
<script>alert("script")</script><meta http-equiv="refresh" content="0;url=http://evil.example/">
<link rel="stylesheet" href="http://evil.example/y.css"></head>
<body onload="alert('onload')">
<div style="position:fixed;top:0;left:0;width:100%;height:100%;background:red;z-index:99999">OVERLAY</div>
<p style="width:expression(alert('expr'))">H\xc3\xa4r \xc3\xa4r protokollet fr\xc3\xa5n m\xc3\xb6tet.</p>
<a href="javascript:alert('href')" id="jslink">Klicka h\xc3\xa4r</a>
<img src="http://tracker.example/pixel.gif" onerror="alert('onerror')">
<img src="https://tracker.example/p2.png"><img src="cid:logo@ktmail.test" alt="logo">
<iframe src="http://evil.example/frame"></iframe><form action="http://evil.example/"><input name="pw"></form>
<svg onload="alert('svg')"><script>alert('svg2')</script></svg>
<object data="http://evil.example/o.swf"></object>
</body></html>
--rel
Content-Type: image/png
Content-ID: <logo@ktmail.test>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==
--rel--
"""


def with_pdf():
    body = base64.encodebytes(PDF).decode()
    return f"""From: =?utf-8?q?Elbolaget_=C3=96st?= <faktura@example.org>
To: alice@brev.fi
Subject: =?utf-8?q?Din_faktura_f=C3=B6r_mars?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hej Alice!

Här är fakturan för mars. Betala senast den 30:e.
--mix
Content-Type: application/pdf; name="=?utf-8?q?faktura_m=C3=A4rz.pdf?="
Content-Disposition: attachment; filename*=utf-8''faktura%20m%C3%A4rs%20%C3%A5%C3%A4%C3%B6.pdf
Content-Transfer-Encoding: base64

{body}--mix--
""".encode()


class WebmailInChromiumTests(DaemonTestCase):
    skip = skip_reason()
    listeners = ("smtp", "web")
    limits = {"webmail_recipients_per_hour": 3}  # noqa: RUF012 (DaemonTestCase reads it)
    mailboxes = (("alice_u", "alice@brev.fi"), ("bob_u", "bob@brev.fi"))

    def setUp(self):
        self.d = self.daemon
        self.base = f"http://127.0.0.1:{self.d.ports['web']}"
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": os.path.abspath(self.mktemp())})
        self.addCleanup(self.browser.close)
        #: requests to anything but the daemon, and dialogs opened
        self.remote = []
        self.dialogs = []

    def smtp_send(self, data, to="alice@brev.fi"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        with self.d.smtp() as s:
            s.sendmail("sender@example.org", [to], data)

    def new_page(self, viewport=DESKTOP, locale="sv-SE"):
        context = self.browser.new_context(viewport=viewport, locale=locale,
                                           base_url=self.base, accept_downloads=True)
        self.addCleanup(context.close)

        def guard(route):
            host = urlsplit(route.request.url).hostname
            if host not in ("127.0.0.1", "localhost"):
                self.remote.append(route.request.url)
                return route.abort()
            return route.continue_()
        context.route("**/*", guard)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error"
                and not m.text.startswith("Failed to load resource")
                and errors.append(m.text))
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message),
                                          dialog.accept()))
        self.addCleanup(lambda: self.assertEqual(
            errors, [], "script or CSP errors:\n" + "\n".join(errors)))
        return page

    def shot(self, page, name):
        page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)

    def log_in(self, page, username="alice_u"):
        page.goto("/webmail/")
        page.get_by_label("Användarnamn").fill(username)
        page.get_by_label("Lösenord").fill(PASSWORD)
        page.get_by_role("button", name="Logga in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Inkorg")

    def no_sideways_scrolling(self, page):
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        self.assertLessEqual(overflow, 0, page.url)

    def test_a_day_with_the_webmail(self):
        self.smtp_send(with_pdf())
        self.smtp_send(HOSTILE)
        page = self.new_page()
        page.goto("/webmail/")
        self.shot(page, "desktop-1-login")
        self.log_in(page)
        expect(page.locator("tr.msg.unread")).to_have_count(2)
        expect(page.locator(".folder.current .count-badge")).to_have_text("2")
        self.shot(page, "desktop-2-inbox")

        # read the message from SMTP and open its attachment
        page.get_by_role("link", name="Din faktura för mars").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Din faktura för mars")
        expect(page.locator(".plain-body")).to_contain_text("Betala senast den 30:e.")
        expect(page.locator(".message-head")).to_contain_text("Elbolaget Öst")
        expect(page.locator(".attachment")).to_contain_text("faktura märs åäö.pdf")
        self.shot(page, "desktop-3-read")
        with page.expect_download() as download:
            page.locator(".attachment").get_by_role("link", name="Ladda ner").click()
        self.assertEqual(download.value.suggested_filename, "faktura märs åäö.pdf")
        with open(download.value.path(), "rb") as f:
            self.assertEqual(f.read(), PDF)

        # the hostile HTML message: shown, inert, nothing fetched from outside
        page.get_by_role("link", name="Tillbaka till Inkorg").click()
        inline_images = []
        page.on("response", lambda r: "/webmail/inline/" in r.url
                and inline_images.append((r.status, r.headers.get("content-type"))))
        page.get_by_role("link", name="Protokoll från mötet").click()
        frame = page.frame_locator("iframe.html-body")
        expect(frame.locator("body")).to_contain_text("Här är protokollet från mötet.")
        expect(frame.locator("img[alt=logo]")).to_have_count(1)
        self.assertEqual(frame.locator(
            "script, iframe, object, form, svg, link, meta[http-equiv]").count(), 0)
        page.wait_for_timeout(300)
        # the cid: image came from the message (the frame sends no cookie: a token)
        self.assertEqual(inline_images, [(200, "image/png")])
        self.shot(page, "desktop-4-html-message")
        # the page around the frame still works (no overlay outside the frame)
        page.get_by_role("button", name="Markera som oläst").click()
        expect(page.locator("tr.msg.unread")).to_have_count(1)
        self.assertEqual(self.remote, [])
        self.assertEqual(self.dialogs, [])
        # pictures from the internet only when asked
        page.get_by_role("link", name="Protokoll från mötet").click()
        page.get_by_role("link", name="Visa bilderna").click()
        expect(page.locator("iframe.html-body")).to_have_count(1)
        page.wait_for_timeout(500)
        self.assertTrue(any("tracker.example" in url for url in self.remote), self.remote)
        self.assertFalse(any("evil.example" in url for url in self.remote), self.remote)
        self.assertEqual(self.dialogs, [])
        self.remote.clear()

        # write to Bob with an attachment: he gets it, Alice keeps a copy
        attachment = pathlib.Path(self.mktemp() + "-semester åäö.txt")
        attachment.write_bytes("Resplan för sommaren\n".encode() * 2000)
        page.get_by_role("link", name="Skriv", exact=True).click()
        expect(page.get_by_text("Du kan skicka till 3 mottagare till den här timmen.")
               ).to_be_visible()
        page.get_by_label("Till", exact=True).fill("Bob Berg <bob@brev.fi>")
        page.get_by_label("Ämne").fill("Semester på Åland")
        page.get_by_label("Meddelande").fill("Hej Bob!\nHär är resplanen.\n/Alice")
        page.locator("#f-files").set_input_files(str(attachment))   # attached at once
        expect(page.locator(".attachments-list")).to_contain_text("semester åäö.txt")
        expect(page.get_by_label("Ämne")).to_have_value("Semester på Åland")
        self.shot(page, "desktop-5-compose")
        page.get_by_role("button", name="Skicka", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text(
            "Meddelandet har skickats till 1 mottagare.")
        page.get_by_role("link", name="Skickat").click()
        expect(page.locator("tr.msg")).to_contain_text("Semester på Åland")
        self.d.wait_for_message("bob_u", "Semester")
        bob = self.new_page()
        self.log_in(bob, "bob_u")
        bob.get_by_role("link", name="Semester på Åland").click()
        expect(bob.locator(".plain-body")).to_contain_text("Här är resplanen.")
        expect(bob.locator(".attachment")).to_contain_text("semester åäö.txt")

        # Spam and back
        page.get_by_role("link", name="Inkorg").first.click()
        page.locator("tr.msg", has_text="Din faktura").get_by_role("checkbox").check()
        page.get_by_role("button", name="Skräppost", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("flyttat till Skräppost")
        page.locator(".folders").get_by_role("link", name="Skräppost").click()
        expect(page.locator("tr.msg")).to_contain_text("raderas om 60 dagar")
        self.shot(page, "desktop-6-spam")
        page.locator("tr.msg", has_text="Din faktura").get_by_role("checkbox").check()
        page.get_by_role("button", name="Inte skräppost").click()
        expect(page.get_by_role("status")).to_contain_text("flyttat till Inkorgen")
        page.locator(".folders").get_by_role("link", name="Inkorg").click()
        expect(page.locator("tr.msg", has_text="Din faktura")).to_have_count(1)

        # the hourly limit: 1 used, 2 left
        # ktmail.js binds its keys at DOMContentLoaded, after the rows can
        # already be seen
        page.wait_for_load_state("domcontentloaded")
        page.keyboard.press("c")                                  # c: write
        expect(page.get_by_role("heading", level=1)).to_have_text("Skriv ett meddelande")
        page.get_by_label("Till", exact=True).fill(
            "bob@brev.fi, one@example.com, two@example.com")
        page.get_by_label("Ämne").fill("Till många")
        page.get_by_role("button", name="Skicka", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text(
            "Du kan skicka till 2 mottagare till den här timmen, men meddelandet har 3.")
        page.get_by_label("Till", exact=True).fill("bob@brev.fi, one@example.com")
        page.get_by_role("button", name="Skicka", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("skickats till 2 mottagare")
        page.get_by_role("link", name="Skriv", exact=True).click()
        expect(page.get_by_text("Du har nått gränsen på 3 mottagare i timmen")).to_be_visible()
        page.get_by_label("Till", exact=True).fill("bob@brev.fi")
        page.get_by_role("button", name="Skicka", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text("Du kan skicka igen om")
        self.shot(page, "desktop-7-hourly-limit")

        # phone width: the main pages fit
        phone = self.new_page(viewport=PHONE)
        self.log_in(phone)
        self.shot(phone, "phone-1-inbox")
        self.no_sideways_scrolling(phone)
        phone.get_by_role("link", name="Din faktura för mars").click()
        self.shot(phone, "phone-2-read")
        self.no_sideways_scrolling(phone)
        phone.get_by_role("link", name="Skriv", exact=True).click()
        self.shot(phone, "phone-3-compose")
        self.no_sideways_scrolling(phone)
        phone.goto("/webmail/folders")
        self.no_sideways_scrolling(phone)
        self.shot(phone, "phone-4-folders")

        page.get_by_role("button", name="Logga ut").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Logga in till din e-post")
        page.goto("/webmail/f/INBOX/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Logga in till din e-post")
        self.assertEqual(self.remote, [])
        self.assertEqual(self.dialogs, [])
        sent = self.d.messages("alice_u", "Sent")
        self.assertEqual(len(sent), 2)
        self.assertTrue(all(re.search(rb"^From: alice@brev.fi\r$", m, re.MULTILINE)
                            for m in sent))


