"""Webmail: the folder list, the message list and reading messages."""

import base64
import re

from twisted.trial import unittest

from ktmail.services.retention import DAY
from tests.web.mail_support import MailHarness, message

HTML_ATTACK = b"""From: Spammer <s@example.org>
To: alice@brev.fi
Subject: =?utf-8?q?Vinst_=C3=A5t_dig?=
MIME-Version: 1.0
Content-Type: multipart/related; boundary="rel"

--rel
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<html><head><style>@import url(http://evil.example/x.css);</style>
<script>alert(1)</script></head><body onload=3D"alert(2)">
<div style=3D"position:fixed;top:0;left:0;width:100%;height:100%">overlay</div>
<a href=3D"javascript:alert(3)">klicka</a>
<img src=3D"http://tracker.example/p.gif"><img src=3D"cid:logo@x">
<p>K=E4ra kund, h=E4r =E4r din vinst.</p></body></html>
--rel
Content-Type: image/png
Content-ID: <logo@x>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==
--rel--
"""


def with_attachment(data, filename="r\u00e4kning \u00e5\u00e4\u00f6.pdf"):
    encoded = base64.encodebytes(data).decode()
    return f"""From: Bank <bank@example.org>
To: alice@brev.fi
Subject: Din =?utf-8?b?csOka25pbmc=?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mix"

--mix
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Här är din räkning.
--mix
Content-Type: application/pdf
Content-Disposition: attachment; filename*=utf-8''{"r%C3%A4kning%20%C3%A5%C3%A4%C3%B6.pdf"}
Content-Transfer-Encoding: base64

{encoded}--mix--
""".encode()


class ReadingTestCase(unittest.TestCase):
    def setUp(self):
        self.h = MailHarness(self)
        self.h.customer("kund1001")
        self.alice = self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser = self.h.browser()


class ListTests(ReadingTestCase):
    def test_login_lands_in_the_inbox_with_folders_and_quota(self):
        """After logging in the user sees the Inbox, the folders with their
        unread counts, and the storage bar."""
        self.h.deliver("alice@brev.fi", message("Första"))
        self.h.deliver("alice@brev.fi", message("Andra"))
        page = self.browser.login()
        self.assertEqual(page.status, 200)
        text = page.text()
        self.assertIn("Inkorg", text)
        for folder in ("Utkast", "Skickat", "Skräppost", "Papperskorg"):
            self.assertIn(folder, text)
        self.assertRegex(page.body, r'aria-current="page"[^>]*>.*?Inkorg.*?count-badge[^>]*>2<')
        self.assertIn("Första", text)
        self.assertIn("Åsa Öberg", text)
        self.assertIn("0.0 MB av 1000 MB", text)
        self.assertIn('<meter id="quota-meter"', page.body)

    def test_newest_first_and_paging(self):
        """The list shows 50 messages a page, newest first, with links to
        older pages."""
        for n in range(60):
            self.h.deliver("alice@brev.fi", message(f"Nummer {n:02d}"))
            self.h.clock.advance(60)
        page = self.browser.login()
        subjects = re.findall(r"Nummer (\d\d)", page.text())
        self.assertEqual(subjects[:3], ["59", "58", "57"])
        self.assertEqual(len(subjects), 50)
        self.assertIn("1–50 av 60", page.text())
        page = self.browser.get("/webmail/f/INBOX/?page=2")
        subjects = re.findall(r"Nummer (\d\d)", page.text())
        self.assertEqual(subjects, [f"{n:02d}" for n in range(9, -1, -1)])

    def test_sorting_by_subject_sender_and_size(self):
        """Column headings sort by subject, sender and size, both ways."""
        self.h.deliver("alice@brev.fi", message("Banan", sender="Cecilia <c@example.org>"))
        self.h.deliver("alice@brev.fi", message("Äpple", sender="Adam <a@example.org>",
                                                body="x" * 5000))
        self.h.deliver("alice@brev.fi", message("Citron", sender="Bertil <b@example.org>"))
        self.browser.login()

        def order(path):
            return re.findall(r"(Banan|Äpple|Citron)", self.browser.get(path).text())

        self.assertEqual(order("/webmail/f/INBOX/?sort=subject&order=asc"),
                         ["Banan", "Citron", "Äpple"])
        self.assertEqual(order("/webmail/f/INBOX/?sort=from&order=asc"),
                         ["Äpple", "Citron", "Banan"])
        self.assertEqual(order("/webmail/f/INBOX/?sort=size&order=desc")[0], "Äpple")

    def test_unread_and_flagged_markers(self):
        """Unread messages are marked; reading one clears the mark and the
        count; flagged ones carry a star."""
        self.h.deliver("alice@brev.fi", message("Oläst"))
        page = self.browser.login()
        self.assertIn('class="msg unread"', page.body)
        self.browser.get("/webmail/f/INBOX/1")
        page = self.browser.get("/webmail/f/INBOX/")
        self.assertNotIn("unread", re.search(r'<tr class="msg[^"]*"', page.body).group())
        self.assertNotIn("count-badge", page.body)
        form = {"act": "flag", "back": "/webmail/f/INBOX/"}
        self.browser.request("POST", "/webmail/f/INBOX/act", data={
            **form, "uid": "1", "csrf": page.csrf()}, headers={
            "Origin": ["https://mail.example.test"], "Sec-Fetch-Site": ["same-origin"]})
        page = self.browser.get("/webmail/f/INBOX/")
        self.assertIn('class="msg flagged"', page.body)
        self.assertIn("★", page.text())

    def test_search_by_sender_subject_and_body(self):
        """The search box finds messages by sender, recipient, subject and
        text (case-insensitive, åäö included)."""
        self.h.deliver("alice@brev.fi", message("Faktura mars",
                                                sender="Elbolaget <el@example.org>"))
        self.h.deliver("alice@brev.fi", message("Middag", body="Vi ses på Örnens krog.\n"))
        self.h.deliver("alice@brev.fi", message("Annat", to="bob@brev.fi, alice@brev.fi"))
        self.browser.login()

        def found(query):
            return re.findall(r"(Faktura mars|Middag|Annat)",
                              self.browser.get(f"/webmail/f/INBOX/?{query}").text())

        self.assertEqual(found("q=elbolaget&field=from"), ["Faktura mars"])
        self.assertEqual(found("q=%C3%B6rnens&field=body"), ["Middag"])
        self.assertEqual(found("q=bob&field=to"), ["Annat"])
        self.assertEqual(found("q=faktura"), ["Faktura mars"])
        self.assertEqual(found("q=ingenting+alls"), [])
        self.assertIn("Inga meddelanden matchar", self.browser.get(
            "/webmail/f/INBOX/?q=zzz").text())

    def test_unknown_folder_is_404(self):
        self.browser.login()
        self.assertEqual(self.browser.get("/webmail/f/Finns%20inte/").status, 404)
        self.assertEqual(self.browser.get("/webmail/f/INBOX/99").status, 404)

    def test_not_logged_in_goes_to_the_login(self):
        """Every mail page needs a session."""
        for path in ("/webmail/f/INBOX/", "/webmail/f/INBOX/1", "/webmail/compose",
                     "/webmail/folders"):
            page = self.browser.get(path)
            self.assertEqual((page.status, page.location), (303, "/webmail/"), path)

    def test_removed_mailbox_ends_the_session(self):
        """A mailbox removed while logged in: the next request logs out."""
        self.browser.login()
        self.h.ok(self.h.accounts.remove_mailbox("alice_u", "test", "test"))
        page = self.browser.get("/webmail/f/INBOX/")
        self.assertEqual(page.location, "/webmail/?expired=1")
        self.assertEqual(self.browser.get("/webmail/f/INBOX/").location, "/webmail/")

    def test_quota_warning_banners(self):
        """At 80 % a warning, at 95 % an alert, on every page."""
        h = MailHarness(self, limits="mailbox_quota_bytes = 100000")
        h.customer("kund1001")
        h.mailbox("alice_u", "alice@brev.fi")
        browser = h.browser()
        browser.login()
        h.deliver("alice@brev.fi", message("Stor", body="x" * 81000), scan=False)
        page = browser.get("/webmail/folders")
        self.assertIn("Din e-postlåda är 81 % full", page.text())
        h.deliver("alice@brev.fi", message("Större", body="y" * 15000), scan=False)
        page = browser.get("/webmail/f/INBOX/")
        self.assertRegex(page.text(), r"Din e-postlåda är nästan full \(9\d %\)")


class ReadTests(ReadingTestCase):
    def test_reading_marks_seen_and_shows_headers_and_text(self):
        """Opening a message shows its decoded headers and text and sets
        \\Seen through the live folder (IMAP sessions see it)."""
        self.h.deliver("alice@brev.fi", message("=?utf-8?q?Hej_fr=C3=A5n_=C3=85re?=",
                                                body="Rad ett\n> citat\nhttps://example.org/a\n"))
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/1")
        self.assertEqual(page.status, 200)
        self.assertIn("<h1>Hej från Åre</h1>", page.body)
        self.assertIn("Åsa Öberg", page.text())
        self.assertIn('<span class="quoted">&gt; citat', page.body)
        self.assertIn('<a href="https://example.org/a" rel="noopener noreferrer nofollow"',
                      page.body)
        (info, _data), = self.h.messages("alice_u")
        self.assertIn("\\Seen", info.flags)

    def test_html_message_is_sanitised_in_a_sandboxed_frame(self):
        """HTML mail: the page embeds a sandboxed frame; the frame's document
        has no script, no remote image, its own strict CSP; the cid: image
        comes from the message through a token URL."""
        self.h.deliver("alice@brev.fi", HTML_ATTACK)
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/1")
        frame = re.search(r'<iframe[^>]*>', page.body).group()
        self.assertIn('sandbox="allow-popups allow-popups-to-escape-sandbox"', frame)
        self.assertNotIn("allow-scripts", frame)
        self.assertNotIn("allow-same-origin", frame)
        self.assertIn("Bilder från internet visas inte", page.text())
        src = re.search(r'src="([^"]+)"', frame).group(1).replace("&amp;", "&")
        doc = self.browser.get(src)
        self.assertEqual(doc.status, 200)
        csp = doc.header("content-security-policy")
        self.assertIn("default-src 'none'", csp)
        self.assertIn("sandbox", csp)
        self.assertNotIn("script-src", csp)
        self.assertNotIn("http:", csp.split("img-src")[1].split(";")[0])
        self.assertEqual(doc.header("x-frame-options"), "SAMEORIGIN")
        for bad in ("<script", "alert", "onload", "javascript:", "position", "@import",
                    "tracker.example", "evil.example"):
            self.assertNotIn(bad, doc.body)
        self.assertIn("Kära kund, här är din vinst.", doc.body)
        cid = re.search(r'<img src="(/webmail/inline/[^"]+)"', doc.body).group(1)
        response, image = self.h.browser().fetch(cid)  # no cookie: the frame sends none
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["image/png"])
        self.assertTrue(image.startswith(b"\x89PNG"))
        # remote images when the reader asks
        allowed = self.browser.get(src.split("?")[0] + "?images=1")
        self.assertIn("http://tracker.example/p.gif", allowed.body)
        self.assertIn("https:", allowed.header("content-security-policy"))

    def test_inline_token_dies_with_the_session(self):
        self.h.deliver("alice@brev.fi", HTML_ATTACK)
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/1")
        src = re.search(r'<iframe[^>]*src="([^"]+)"', page.body).group(1).replace("&amp;", "&")
        cid = re.search(r'<img src="(/webmail/inline/[^"]+)"',
                        self.browser.get(src).body).group(1)
        self.assertEqual(self.h.browser().fetch(cid)[0].code, 200)
        self.browser.get("/webmail/f/INBOX/")
        self.assertEqual(self.browser.post("/webmail/logout").status, 303)
        self.assertEqual(self.h.browser().fetch(cid)[0].code, 404)

    def test_attachment_listed_and_streamed_decoded(self):
        """An attachment is listed with its UTF-8 name and size and downloads
        decoded, with an RFC 6266 Content-Disposition."""
        data = bytes(range(256)) * 400
        self.h.deliver("alice@brev.fi", with_attachment(data))
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/1")
        self.assertIn("räkning åäö.pdf", page.text())
        self.assertIn("Din räkning", page.text())
        link = re.search(r'href="(/webmail/f/INBOX/1/part/2)"', page.body).group(1)
        response, body = self.browser.fetch(link)
        self.assertEqual(body, data)
        disposition = response.headers.getRawHeaders("content-disposition")[0]
        self.assertEqual(disposition, "attachment; filename=\"r_kning ___.pdf\"; "
                         "filename*=UTF-8''r%C3%A4kning%20%C3%A5%C3%A4%C3%B6.pdf")
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/octet-stream"])

    def test_whole_message_download(self):
        self.h.deliver("alice@brev.fi", message("Källa"))
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/1/raw")
        self.assertEqual(page.status, 200)
        self.assertIn("Subject: Källa", page.body)
        self.assertIn('filename="K_lla.eml"', page.header("content-disposition"))

    def test_spam_panel_and_expiry(self):
        """A message in Spam shows why it is spam (the rules that fired) and
        when it will be deleted."""
        gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
        self.h.deliver("alice@brev.fi", message("Köp nu", body=gtube + "\n"))
        self.h.clock.advance(10 * DAY)
        self.browser.login()
        page = self.browser.get("/webmail/f/Spam/")
        self.assertIn("raderas om 50 dagar", page.text())
        page = self.browser.get("/webmail/f/Spam/1")
        self.assertIn("Varför är det här skräppost?", page.text())
        self.assertIn("GTUBE", page.text())
        # the rule's description in the page's language
        self.assertIn("GTUBE, teststrängen för skräppost (alltid skräppost)", page.text())
        self.assertIn("Meddelandet raderas om 50 dagar.", page.text())
