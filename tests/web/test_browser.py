"""The portal in a real headless Chromium against a real ``twistd ktmail``.

A customer logs in, creates five mailboxes, sees the sixth refused, deletes
one after typing its address, changes a password and logs into the webmail
with it. Screenshots of the main pages at desktop and phone widths go to
tests/artefacts/ (git-ignored) for people to look at.
"""

import os
import pathlib
import shutil

from twisted.trial import unittest

from tests.web.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
# CLIENT-NOTES.md: without the background-networking flags Chromium tries to
# reach the internet
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTEFACTS = pathlib.Path(__file__).resolve().parent.parent / "artefacts" / "web"
PW = "correct horse 7"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None


def skip_reason():
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        return "Debian's chromium is not installed (.ci/run installs it)"
    if sync_playwright is None:
        return "playwright is not installed (it is in the test extra)"
    return None


class PortalInChromiumTests(unittest.TestCase):
    skip = skip_reason()

    def setUp(self):
        self.daemon = Daemon(self).start()
        self.daemon.admin("customer", "add", "kund1001", password=PW)
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        self.playwright = sync_playwright().start()
        self.addCleanup(self.playwright.stop)
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": os.path.abspath(self.mktemp())})
        self.addCleanup(self.browser.close)

    def new_page(self, viewport=DESKTOP, locale="sv-SE"):
        context = self.browser.new_context(viewport=viewport, locale=locale,
                                           base_url=self.daemon.base)
        self.addCleanup(context.close)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # pages answer 400/409 on purpose (refused forms); their sub-resources never may
        page.on("console", lambda m: m.type == "error"
                and not m.text.startswith("Failed to load resource")
                and errors.append(m.text))
        page.on("response", lambda r: r.status >= 400 and r.request.resource_type != "document"
                and errors.append(f"{r.status} {r.url}"))
        self.addCleanup(lambda: self.assertEqual(errors, [], "script or CSP errors"))
        return page

    def shot(self, page, name):
        page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)

    def log_in(self, page):
        page.goto("/admin/")
        page.get_by_label("Kundkonto").fill("kund1001")
        page.get_by_label("Lösenord").fill(PW)
        page.get_by_role("button", name="Logga in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Dina e-postlådor")

    def create(self, page, local_part, username, domain="brev.fi"):
        page.goto("/admin/mailboxes/new")
        page.get_by_label("Namnet före @").fill(local_part)
        page.get_by_label("Domän").select_option(domain)
        page.get_by_label("Användarnamn").fill(username)
        page.get_by_label("Lösenord", exact=True).fill(PW)
        page.get_by_label("Lösenordet igen").fill(PW)
        page.get_by_role("button", name="Skapa e-postlåda").click()

    def test_customer_manages_mailboxes(self):
        page = self.new_page()
        page.goto("/admin/")
        self.shot(page, "desktop-1-login")
        # by keyboard alone: the login field has the focus, Tab, Enter
        expect(page.locator(":focus")).to_have_attribute("id", "f-login")
        page.keyboard.type("kund1001")
        page.keyboard.press("Tab")
        page.keyboard.type(PW)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1)).to_have_text("Dina e-postlådor")
        expect(page.get_by_text("0 av 5 e-postlådor används")).to_be_visible()
        self.shot(page, "desktop-2-empty")

        domains = ["brev.fi", "sboksi.fi", "pikaposti.fi", "2me.fi", "minmail.fi"]
        for i, domain in enumerate(domains):
            self.create(page, f"person{i}", f"person{i}_u", domain)
            expect(page.get_by_role("status")).to_contain_text(
                f"E-postlådan person{i}@{domain} har skapats")
        expect(page.get_by_text("5 av 5 e-postlådor används")).to_be_visible()
        self.shot(page, "desktop-3-five-mailboxes")

        # the sixth is refused by the service, the form says why
        self.create(page, "sixth", "sixth_u")
        expect(page.get_by_role("alert")).to_contain_text("Du har redan 5 e-postlådor")
        self.shot(page, "desktop-4-sixth-refused")

        # a bad form shows each problem next to its field
        page.goto("/admin/")
        page.locator("article", has_text="person0@brev.fi").get_by_role(
            "link", name="Radera").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Radera person0@brev.fi?")
        page.get_by_label("Skriv adressen för att bekräfta").fill("person0")
        page.get_by_role("button", name="Radera e-postlådan och all dess e-post").click()
        expect(page.locator("#e-confirm")).to_contain_text("ingenting raderades")
        self.shot(page, "desktop-5-delete-confirm")
        page.get_by_label("Skriv adressen för att bekräfta").fill("person0@brev.fi")
        page.get_by_role("button", name="Radera e-postlådan och all dess e-post").click()
        expect(page.get_by_role("status")).to_contain_text("har raderats")
        expect(page.get_by_text("4 av 5 e-postlådor används")).to_be_visible()
        self.assertNotIn("person0@brev.fi", page.locator(".mailboxes").inner_text())

        # change a mailbox's password, then use it in the webmail
        page.locator("article", has_text="person1@sboksi.fi").get_by_role(
            "link", name="Byt lösenord").click()
        page.get_by_label("Nytt lösenord", exact=True).fill("short")
        page.get_by_label("Nytt lösenord igen").fill("short")
        page.locator("form.form").evaluate("f => f.noValidate = true")
        page.get_by_role("button", name="Byt lösenord").click()
        expect(page.locator("#e-password")).to_have_text("⚠ För kort: använd minst 8 tecken."
                                                         .removeprefix("⚠ "))
        page.get_by_label("Nytt lösenord", exact=True).fill("a new pass phrase")
        expect(page.locator("#s-password")).to_have_text("Starkt lösenord")
        page.get_by_label("Nytt lösenord igen").fill("a new pass phrase")
        self.shot(page, "desktop-6-new-password")
        page.get_by_role("button", name="Byt lösenord").click()
        expect(page.get_by_role("status")).to_contain_text(
            "Lösenordet för person1@sboksi.fi har bytts")

        page.goto("/webmail/")
        page.get_by_label("Användarnamn").fill("person1_u")
        page.get_by_label("Lösenord").fill("a new pass phrase")
        page.get_by_role("button", name="Logga in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Inkorg")
        expect(page.get_by_text("person1@sboksi.fi")).to_be_visible()

        # the admin's own password
        page.goto("/admin/account/password")
        page.get_by_label("Nuvarande lösenord").fill(PW)
        page.get_by_label("Nytt lösenord", exact=True).fill("customer pass 2")
        page.get_by_label("Nytt lösenord igen").fill("customer pass 2")
        page.get_by_role("button", name="Byt lösenord").click()
        expect(page.get_by_role("status")).to_contain_text("Ditt lösenord har bytts")

        page.get_by_role("button", name="Logga ut").first.click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Logga in för att hantera tjänster")

        listing = self.daemon.admin("mailbox", "list", "kund1001")
        self.assertEqual(sorted(line.split("\t")[0] for line in listing.splitlines()),
                         ["person1_u", "person2_u", "person3_u", "person4_u"])

    def test_pages_at_phone_width_and_in_english(self):
        """The main pages fit a phone screen (no sideways scrolling) and the
        switch turns them into English."""
        self.daemon.admin("mailbox", "add", "kund1001", "anna_u", "anna.andersson@brev.fi",
                          password=PW)
        page = self.new_page(viewport=PHONE)
        page.goto("/admin/")
        self.shot(page, "phone-1-login")
        self.log_in(page)
        self.shot(page, "phone-2-mailboxes")
        page.goto("/admin/mailboxes/new")
        page.get_by_label("Lösenord", exact=True).fill("kort")
        self.shot(page, "phone-3-new-mailbox")
        page.goto("/help")
        self.shot(page, "phone-4-help")
        for path in ("/admin/", "/admin/mailboxes/new", "/help", "/webmail/", "/"):
            page.goto(path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            self.assertLessEqual(overflow, 0, path)
        page.goto("/admin/")
        page.get_by_role("link", name="English").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your mailboxes")
        self.shot(page, "phone-5-english")

        desktop = self.new_page(locale="en-GB")
        desktop.goto("/help")
        expect(desktop.get_by_role("heading", level=1)).to_have_text("Setting up a mail program")
        self.shot(desktop, "desktop-7-help-english")
        desktop.goto("/")
        self.shot(desktop, "desktop-8-start")
