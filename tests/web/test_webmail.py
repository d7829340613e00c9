"""The webmail's door: mailbox logins only, with the shared throttle."""

from twisted.trial import unittest

from tests.web.mail_support import MailHarness
from tests.web.support import PW


class WebmailLoginTests(unittest.TestCase):
    def setUp(self):
        self.h = MailHarness(self)
        self.h.customer("kund1001")
        self.alice = self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser = self.h.browser()

    def test_login_page(self):
        page = self.browser.get("/webmail/")
        self.assertEqual(page.status, 200)
        self.assertIn("<form", page.body)
        self.assertIn('action="/webmail/login"', page.body)
        self.assertEqual(self.browser.get("/webmail").location, "/webmail/")

    def test_mailbox_login_records_the_login(self):
        """A mailbox's username and password open the webmail and reset the
        inactivity clock."""
        self.h.clock.advance(3600)
        page = self.browser.login_webmail("alice_u")
        self.assertEqual(page.status, 303)
        self.assertEqual(page.location, "/webmail/f/INBOX/")
        page = self.browser.follow(page)
        self.assertIn("alice@brev.fi", page.text())
        self.assertIn("<h1>Inkorg</h1>", page.body)
        mailbox = self.h.ok(self.h.accounts.get_mailbox("alice_u"))
        self.assertEqual(mailbox.last_login, self.h.clock.seconds())
        self.assertEqual(self.browser.post("/webmail/logout").status, 303)
        self.assertIn('action="/webmail/login"', self.browser.get("/webmail/").body)

    def test_customer_credentials_and_addresses_are_refused(self):
        """The customer's admin login, and the address instead of the
        username, do not open a mailbox."""
        for username in ("kund1001", "alice@brev.fi"):
            page = self.browser.login_webmail(username, PW)
            self.assertEqual(page.status, 401, username)
            self.assertIn("Fel användarnamn eller lösenord.", page.text())
        self.assertEqual(len(self.h.sessions), 0)

    def test_shared_throttle(self):
        """Failures on the portal count for the webmail too (same client)."""
        for _ in range(10):
            self.browser.login_portal("kund1001", "nope nope")
        page = self.browser.login_webmail("alice_u")
        self.assertEqual(page.status, 429)

    def test_english_pages(self):
        """With Accept-Language: en (or the switch) the webmail is in English."""
        browser = self.h.browser(language="en")
        page = browser.follow(browser.login_webmail("alice_u"))
        self.assertIn("<h1>Inbox</h1>", page.body)
        for text in ("Write", "Drafts", "Storage", "Search in Inbox"):
            self.assertIn(text, page.body)
