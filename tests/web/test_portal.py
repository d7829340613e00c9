"""The "Manage services" portal at /admin/, driven like a browser through
StubTreq: login, mailboxes, passwords, deletion, and its security rules."""

from twisted.trial import unittest

from ktmail import errors
from ktmail.web.admin import DAY
from ktmail.web.sessions import CUSTOMER, MAILBOX
from tests.web.support import PW, WebHarness


class PortalTestCase(unittest.TestCase):
    def setUp(self):
        self.h = WebHarness(self)
        self.h.customer("kund1001")
        self.browser = self.h.browser()

    def logged_in(self):
        page = self.browser.login_portal()
        self.assertEqual(page.status, 303, page.text()[:400])
        return self.browser.follow(page)

    def create(self, username, local_part, domain="brev.fi", password=PW, password2=None):
        self.browser.get("/admin/mailboxes/new")
        return self.browser.post("/admin/mailboxes/new", {
            "username": username, "local_part": local_part, "domain": domain,
            "password": password, "password2": password if password2 is None else password2})


class LoginTests(PortalTestCase):
    def test_login_page_is_a_form_without_a_session(self):
        """GET /admin/ shows the login form; it creates no session (only a
        login cookie for the form token)."""
        page = self.browser.get("/admin/")
        self.assertEqual(page.status, 200)
        self.assertIn("<form", page.body)
        self.assertIn('action="/admin/login"', page.body)
        self.assertEqual(len(self.h.sessions), 0)
        self.assertTrue(page.csrf())

    def test_customer_logs_in_and_sees_the_mailbox_list(self):
        """The customer's own credentials open the portal."""
        page = self.logged_in()
        self.assertEqual(page.status, 200)
        self.assertIn("Dina e-postlådor", page.text())
        self.assertIn("0 av 5 e-postlådor används", page.text())
        self.assertEqual(len(self.h.sessions), 1)

    def test_mailbox_credentials_are_refused(self):
        """A mailbox's username and password never open the portal."""
        self.h.mailbox("alice_u", "alice@brev.fi")
        page = self.browser.login_portal("alice_u", PW)
        self.assertEqual(page.status, 401)
        self.assertIn("Fel användarnamn eller lösenord.", page.alerts()[0])
        self.assertEqual(len(self.h.sessions), 0)
        self.assertEqual(self.browser.get("/admin/mailboxes/new").status, 303)

    def test_wrong_password_is_refused_and_the_login_is_kept(self):
        """A wrong password shows the form again with the login filled in."""
        page = self.browser.login_portal("kund1001", "wrong password")
        self.assertEqual(page.status, 401)
        self.assertIn('value="kund1001"', page.body)
        self.assertNotIn("wrong password", page.body)

    def test_throttled_login_says_when_to_try_again(self):
        """After too many failures the shared throttle refuses, and the page
        says so clearly (429 with Retry-After)."""
        for _ in range(10):
            self.browser.login_portal("kund1001", "wrong password")
        page = self.browser.login_portal("kund1001", PW)
        self.assertEqual(page.status, 429)
        self.assertIn("För många misslyckade inloggningar", page.text())
        self.assertTrue(page.header("retry-after"))

    def test_login_needs_the_form_token(self):
        """A login POST without the token of its login cookie is refused
        (login CSRF), as is one from another origin."""
        self.browser.get("/admin/")
        page = self.browser.post("/admin/login", {"login": "kund1001", "password": PW},
                                 csrf="forged")
        self.assertEqual(page.status, 403)
        page = self.browser.post("/admin/login", {"login": "kund1001", "password": PW},
                                 origin="https://evil.example")
        self.assertEqual(page.status, 403)
        self.assertEqual(len(self.h.sessions), 0)

    def test_login_rotates_the_session_id(self):
        """Logging in again gives a new session id and ends the old one, and
        a session id planted in the browser before login is never used."""
        form = self.browser.get("/admin/")
        self.browser.post("/admin/login", {"login": "kund1001", "password": PW})
        (first,) = list(self.h.sessions._sessions)
        page = self.browser.post("/admin/login", {"login": "kund1001", "password": PW},
                                 csrf=form.csrf())
        self.assertEqual(page.status, 303)
        (second,) = list(self.h.sessions._sessions)
        self.assertNotEqual(first, second)
        self.assertIn(f"__Host-ktmail_admin={second};", page.cookies()[0])

        planted = self.h.browser()
        form = planted.get("/admin/")
        page = planted.post("/admin/login", {"login": "kund1001", "password": PW},
                            headers={"Cookie": ["__Host-ktmail_admin=attacker-chosen"]})
        self.assertNotIn("attacker-chosen", " ".join(page.cookies()))
        self.assertNotIn("attacker-chosen", self.h.sessions._sessions)

    def test_cookie_attributes(self):
        """The session cookie is HttpOnly, SameSite=Strict, Path=/, Secure
        with the __Host- prefix over TLS, and has no Secure on plain HTTP."""
        page = self.browser.login_portal()
        (cookie,) = [c for c in page.cookies() if "ktmail_admin" in c]
        self.assertTrue(cookie.startswith("__Host-ktmail_admin="))
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
            self.assertIn(attribute, cookie)
        session_id = cookie.split(";")[0].split("=", 1)[1]
        self.assertNotIn(session_id, self.browser.follow(page).body)

        plain = self.h.browser(secure=False)
        page = plain.login_portal()
        (cookie,) = [c for c in page.cookies() if "ktmail_admin" in c]
        self.assertTrue(cookie.startswith("ktmail_admin="))
        self.assertNotIn("Secure", cookie)
        self.assertIn("SameSite=strict", cookie)

    def test_logout_ends_the_session(self):
        """Logging out ends the session on the server, not only the cookie."""
        self.logged_in()
        page = self.browser.post("/admin/logout")
        self.assertEqual(page.status, 303)
        self.assertEqual(len(self.h.sessions), 0)
        self.assertIn("Logga in", self.browser.get("/admin/").text())


class SessionExpiryTests(PortalTestCase):
    def test_idle_session_expires(self):
        """After 30 minutes without a request the session has ended."""
        self.logged_in()
        self.h.clock.advance(29 * 60)
        self.assertIn("Dina e-postlådor", self.browser.get("/admin/").text())
        self.h.clock.advance(29 * 60)
        self.assertIn("Dina e-postlådor", self.browser.get("/admin/").text())
        self.h.clock.advance(31 * 60)
        page = self.browser.get("/admin/")
        self.assertIn('action="/admin/login"', page.body)
        self.assertEqual(len(self.h.sessions), 0)

    def test_session_ends_after_its_lifetime_even_when_used(self):
        """No session lives longer than 12 hours, however busy."""
        self.logged_in()
        for _ in range(12 * 4):
            self.h.clock.advance(15 * 60)
            self.browser.get("/admin/")
        self.h.clock.advance(60)
        self.assertIn('action="/admin/login"', self.browser.get("/admin/").body)

    def test_post_after_expiry_goes_to_the_login_page(self):
        """A form sent after the session ended changes nothing and leads to
        the login page with a note."""
        self.logged_in()
        self.browser.get("/admin/mailboxes/new")
        self.h.clock.advance(31 * 60)
        page = self.browser.post("/admin/mailboxes/new", {
            "username": "alice_u", "local_part": "alice", "domain": "brev.fi",
            "password": PW, "password2": PW})
        self.assertEqual(page.location, "/admin/?expired=1")
        self.assertIn("Du har loggats ut", self.browser.follow(page).text())
        self.assertEqual(self.h.ok(self.h.accounts.list_mailboxes()), [])


class CsrfTests(PortalTestCase):
    def test_post_without_token_is_refused(self):
        """A state change without the page's token is refused and changes nothing."""
        self.logged_in()
        page = self.browser.post("/admin/mailboxes/new", {
            "username": "alice_u", "local_part": "alice", "domain": "brev.fi",
            "password": PW, "password2": PW}, csrf=None)
        self.assertEqual(page.status, 403)
        self.assertIn("Formuläret har gått ut", page.text())
        self.assertEqual(self.h.ok(self.h.accounts.list_mailboxes()), [])

    def test_post_from_another_origin_is_refused_even_with_the_token(self):
        """Origin / Sec-Fetch-Site from another site is refused."""
        self.logged_in()
        self.browser.get("/admin/mailboxes/new")
        token = self.browser.last.csrf()
        for headers in ({"Origin": ["https://evil.example"]},
                        {"Sec-Fetch-Site": ["cross-site"]},
                        {"Origin": ["null"]}):
            page = self.browser.post("/admin/mailboxes/new", {
                "username": "alice_u", "local_part": "alice", "domain": "brev.fi",
                "password": PW, "password2": PW}, csrf=token, origin=None, headers=headers)
            self.assertEqual(page.status, 403, headers)
        self.assertEqual(self.h.ok(self.h.accounts.list_mailboxes()), [])

    def test_token_is_not_the_session_id_and_belongs_to_its_session(self):
        """The token differs from the session id, and one session's token
        does not work in another."""
        self.logged_in()
        (session,) = self.h.sessions._sessions.values()
        self.assertNotEqual(session.csrf_token, session.id)
        other = self.h.browser()
        other.login_portal()
        page = other.post("/admin/logout", csrf=session.csrf_token)
        self.assertEqual(page.status, 403)

    def test_every_post_route_checks_csrf(self):
        """Every POST route of every surface is wrapped by a CSRF guard or
        says why it needs none."""
        from ktmail.web.admin import AdminPortal
        from ktmail.web.app import WebRoot
        from ktmail.web.webmail import Webmail
        unguarded = []
        for cls in (AdminPortal, Webmail, WebRoot):
            for rule in cls.app.url_map.iter_rules():
                if not rule.methods or not rule.methods & {"POST", "PUT", "PATCH", "DELETE"}:
                    continue
                handler = getattr(cls, rule.endpoint.removesuffix("_branch"))
                if not (getattr(handler, "csrf_checked", False)
                        or getattr(handler, "csrf_exempt", "")):
                    unguarded.append(f"{cls.__name__} {rule.rule}")
        self.assertEqual(unguarded, [])
        self.assertTrue(AdminPortal.create.csrf_checked)


class MailboxTests(PortalTestCase):
    def setUp(self):
        super().setUp()
        self.logged_in()

    def test_create_five_then_the_sixth_is_refused(self):
        """Five mailboxes are created; the sixth is refused by the account
        service and the form says why, keeping what was typed."""
        for i in range(5):
            page = self.create(f"user{i}", f"user{i}")
            self.assertEqual(page.status, 303, page.text()[:500])
            page = self.browser.follow(page)
            self.assertIn(f"E-postlådan user{i}@brev.fi har skapats", page.alerts()[0])
        self.assertIn("5 av 5 e-postlådor används", page.text())
        page = self.browser.get("/admin/mailboxes/new")
        self.assertIn("Du har redan 5 e-postlådor", page.text())
        page = self.create("user5", "user5")
        self.assertEqual(page.status, 409)
        self.assertIn("Du har redan 5 e-postlådor, det högsta antalet.",
                      page.alerts()[-1])
        self.assertIn('value="user5"', page.body)
        self.assertEqual(len(self.h.ok(self.h.accounts.list_mailboxes())), 5)

    def test_validation_errors_are_shown_next_to_their_fields(self):
        """Every bad field is named next to itself, all at once."""
        page = self.create("1bad name", "a..b", password="short", password2="other")
        self.assertEqual(page.status, 400)
        self.assertIn("Inte ett giltigt användarnamn.", page.field_error("username"))
        self.assertIn("2–32 tecken", page.field_error("username"))
        self.assertIn("Inte en giltig adress", page.field_error("local_part"))
        self.assertEqual(page.field_error("password"), "För kort: använd minst 8 tecken.")
        self.assertIsNone(page.field_error("domain"))
        page = self.create("alice_u", "alice", domain="example.com")
        self.assertEqual(page.field_error("domain"), "Välj en av våra domäner.")
        page = self.create("alice_u", "alice", password2="something else")
        self.assertIn("Lösenorden är olika", page.field_error("password2"))
        self.assertEqual(self.h.ok(self.h.accounts.list_mailboxes()), [])

    def test_taken_username_and_address_are_shown_at_their_fields(self):
        """Uniqueness (checked by the store) maps to the field that clashed."""
        self.h.customer("kund2002")
        self.h.mailbox("taken_u", "taken@brev.fi", customer="kund2002")
        page = self.create("taken_u", "fresh")
        self.assertEqual(page.field_error("username"),
                         "Användarnamnet är upptaget; välj ett annat.")
        page = self.create("fresh_u", "taken")
        self.assertEqual(page.field_error("local_part"), "Adressen är upptagen; välj en annan.")

    def test_list_shows_usage_last_login_and_the_deletion_date(self):
        """Each mailbox shows address, username, storage of 1000 MB, last
        login, and the inactivity deletion date once it is within 60 days."""
        alice = self.h.mailbox("alice_u", "alice@brev.fi")
        self.h.mail.used[alice.id] = 150 * 1024 * 1024
        page = self.browser.get("/admin/")
        text = page.text()
        self.assertIn("alice@brev.fi", text)
        self.assertIn("alice_u", text)
        self.assertIn("150 MB av 1000 MB", text)
        self.assertIn("Senaste inloggning aldrig", text)
        self.assertNotIn("Raderas", text)

        self.h.clock.advance(124 * DAY)
        self.browser.login_portal()
        text = self.browser.get("/admin/").text()
        self.assertIn("Raderas", text)
        from ktmail.web.admin import day
        self.assertIn(day(alice.created + 183 * DAY), text)

        self.h.ok(self.h.auth.authenticate_mailbox("alice_u", PW, "192.0.2.1", "imap"))
        text = self.browser.get("/admin/").text()
        self.assertNotIn("Raderas", text)
        self.assertIn(f"Senaste inloggning {day(self.h.clock.seconds())}", text)

    def test_names_are_shown_inert(self):
        """Text that looks like markup is shown as text, never run."""
        self.h.customer("kund2002")
        page = self.create("alice_u", "alice", domain='"><script>alert(1)</script>')
        self.assertNotIn("<script>alert(1)</script>", page.body)
        self.assertIn("&lt;script&gt;", page.body)
        page = self.create('x"><script>alert(2)</script>', "bob")
        self.assertNotIn("<script>alert(2)</script>", page.body)
        self.assertIn('value="x&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"', page.body)
        self.h.mailbox("o_brien", "o'brien&co+{x}@brev.fi")
        page = self.browser.get("/admin/")
        self.assertIn("o'brien&amp;co+{x}@brev.fi", page.body)

    def test_another_customers_mailbox_is_out_of_reach(self):
        """Mailbox pages answer 404 for mailboxes of other customers."""
        self.h.customer("kund2002")
        self.h.mailbox("theirs_u", "theirs@brev.fi", customer="kund2002")
        for path in ("/admin/mailboxes/theirs_u/delete", "/admin/mailboxes/theirs_u/password",
                     "/admin/mailboxes/theirs_u/profile.mobileconfig"):
            self.assertEqual(self.browser.get(path).status, 404, path)
        self.browser.get("/admin/")
        page = self.browser.post("/admin/mailboxes/theirs_u/delete",
                                 {"confirm": "theirs@brev.fi"})
        self.assertEqual(page.status, 404)
        self.assertEqual(len(self.h.ok(self.h.accounts.list_mailboxes())), 1)


class DeleteTests(PortalTestCase):
    def setUp(self):
        super().setUp()
        self.logged_in()
        self.alice = self.h.mailbox("alice_u", "alice@brev.fi")

    def test_confirmation_page_warns_that_all_mail_goes(self):
        page = self.browser.get("/admin/mailboxes/alice_u/delete")
        self.assertEqual(page.status, 200)
        self.assertIn("all dess e-post raderas för gott", page.text())
        self.assertIn("Skriv adressen för att bekräfta", page.text())

    def test_wrong_typed_address_deletes_nothing(self):
        """Typing anything but the address keeps the mailbox."""
        self.browser.get("/admin/mailboxes/alice_u/delete")
        page = self.browser.post("/admin/mailboxes/alice_u/delete", {"confirm": "alice"})
        self.assertEqual(page.status, 400)
        self.assertIn("ingenting raderades", page.field_error("confirm"))
        self.h.ok(self.h.accounts.get_mailbox("alice_u"))
        self.assertIn(self.alice.id, self.h.mail.mailboxes)

    def test_right_typed_address_deletes_mailbox_mail_and_its_sessions(self):
        """Typing the address (any case) removes the mailbox and its
        Maildir, audits who did it, and ends its webmail sessions."""
        webmail = self.h.browser()
        self.assertEqual(webmail.login_webmail("alice_u").status, 303)
        self.h.accounts.removal_hooks.append(
            lambda m: self.h.sessions.destroy_account(MAILBOX, m.username))
        self.browser.get("/admin/mailboxes/alice_u/delete")
        page = self.browser.post("/admin/mailboxes/alice_u/delete",
                                 {"confirm": " Alice@Brev.fi "})
        self.assertEqual(page.status, 303)
        self.assertIn("har raderats", self.browser.follow(page).alerts()[0])
        self.h.tc.failureResultOf(self.h.accounts.get_mailbox("alice_u"),
                                  errors.NoSuchMailbox)
        self.assertNotIn(self.alice.id, self.h.mail.mailboxes)
        audit = self.h.ok(self.h.store.list_audit())
        self.assertEqual(audit[0][1:4], ("portal:kund1001", "mailbox.remove", "alice_u"))
        self.assertIn("Logga in", webmail.get("/webmail/").text())


class PasswordTests(PortalTestCase):
    def setUp(self):
        super().setUp()
        self.logged_in()
        self.h.mailbox("alice_u", "alice@brev.fi")

    def test_change_a_mailbox_password(self):
        """The new password works for mail and the old one does not; webmail
        sessions with the old password end."""
        webmail = self.h.browser()
        webmail.login_webmail("alice_u")
        self.browser.get("/admin/mailboxes/alice_u/password")
        page = self.browser.post("/admin/mailboxes/alice_u/password",
                                 {"password": "new pass 1234", "password2": "new pass 1234"})
        self.assertEqual(page.status, 303)
        self.assertIn("Lösenordet för alice@brev.fi har bytts",
                      self.browser.follow(page).alerts()[0])
        self.h.ok(self.h.auth.authenticate_mailbox("alice_u", "new pass 1234", "192.0.2.9",
                                                   "imap"))
        self.h.tc.failureResultOf(
            self.h.auth.authenticate_mailbox("alice_u", PW, "192.0.2.9", "imap"),
            errors.AuthFailed)
        self.assertIn("Logga in", webmail.get("/webmail/").text())

    def test_mailbox_password_rules_show_at_the_field(self):
        self.browser.get("/admin/mailboxes/alice_u/password")
        page = self.browser.post("/admin/mailboxes/alice_u/password",
                                 {"password": "short", "password2": "short"})
        self.assertEqual(page.status, 400)
        self.assertEqual(page.field_error("password"), "För kort: använd minst 8 tecken.")

    def test_change_own_password_needs_the_current_one(self):
        """The admin's own password changes only with the current one; other
        portal sessions of the customer end, this one stays."""
        other = self.h.browser()
        other.login_portal()
        self.browser.get("/admin/account/password")
        page = self.browser.post("/admin/account/password", {
            "current": "not it at all", "password": "brand new pw", "password2": "brand new pw"})
        self.assertEqual(page.status, 400)
        self.assertEqual(page.field_error("current"), "Det är inte ditt nuvarande lösenord.")
        page = self.browser.post("/admin/account/password", {
            "current": PW, "password": "brand new pw", "password2": "brand new pw"})
        self.assertEqual(page.status, 303)
        self.assertIn("Ditt lösenord har bytts", self.browser.follow(page).alerts()[0])
        self.assertIn("Logga in", other.get("/admin/").text())
        self.assertEqual(len(self.h.sessions), 1)
        self.h.ok(self.h.auth.authenticate_customer("kund1001", "brand new pw", "192.0.2.9"))


class LanguageTests(PortalTestCase):
    def test_accept_language_chooses(self):
        """English for en, Swedish for sv and for languages without a catalogue."""
        for header, heading in (("en-GB,en;q=0.9", "Log in to Manage services"),
                                ("sv-FI", "Logga in för att hantera tjänster"),
                                ("fi, de;q=0.5", "Logga in för att hantera tjänster"),
                                ("de, en;q=0.3", "Log in to Manage services")):
            page = self.browser.get("/admin/", headers={"Accept-Language": [header]})
            self.assertIn(f"<h1>{heading}</h1>", page.body, header)
            self.assertIn(f'lang="{"en" if "Log in" in heading else "sv"}"', page.body)

    def test_switch_sets_a_cookie_and_returns(self):
        """The visible switch remembers the choice over Accept-Language and
        goes back to the page it was clicked on (never to another site)."""
        page = self.browser.get("/admin/")
        self.assertIn('href="/lang/en?next=/admin/"', page.body)
        page = self.browser.get("/lang/en?next=/admin/")
        self.assertEqual(page.location, "/admin/")
        self.assertIn("ktmail_lang=en", page.cookies()[0])
        page = self.browser.follow(page)
        self.assertIn("<h1>Log in to Manage services</h1>", page.body)
        for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            self.assertEqual(self.browser.get(f"/lang/sv?next={evil}").location, "/")

    def test_english_errors(self):
        """Errors come in the page's language."""
        self.browser.language = "en"
        self.logged_in()
        page = self.create("alice_u", "alice", password="short")
        self.assertEqual(page.field_error("password"), "Too short: use at least 8 characters.")


class AppleProfileTests(PortalTestCase):
    def test_profile_for_a_mailbox(self):
        """The .mobileconfig names the mailbox's username and the live hosts
        and ports, and holds no password."""
        import plistlib
        self.logged_in()
        self.h.mailbox("alice_u", "alice@brev.fi")
        page = self.browser.get("/admin/mailboxes/alice_u/profile.mobileconfig")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.header("content-type"), "application/x-apple-aspen-config")
        self.assertIn('filename="alice_u.mobileconfig"', page.header("content-disposition"))
        profile = plistlib.loads(page.body.encode())
        self.assertEqual(profile["PayloadType"], "Configuration")
        (account,) = profile["PayloadContent"]
        self.assertEqual(account["PayloadType"], "com.apple.mail.managed")
        self.assertEqual(account["EmailAccountType"], "EmailTypeIMAP")
        self.assertEqual(account["EmailAddress"], "alice@brev.fi")
        self.assertEqual(account["IncomingMailServerUsername"], "alice_u")
        self.assertEqual(account["IncomingMailServerHostName"], "imap.example.test")
        self.assertEqual(account["IncomingMailServerPortNumber"], 10993)
        self.assertEqual(account["OutgoingMailServerHostName"], "smtp.example.test")
        self.assertEqual(account["OutgoingMailServerPortNumber"], 10465)
        self.assertTrue(account["IncomingMailServerUseSSL"])
        self.assertTrue(account["OutgoingMailServerUseSSL"])
        self.assertNotIn("Password", page.body.replace("EmailAuthPassword", "")
                         .replace("OutgoingPasswordSameAsIncomingPassword", ""))
        again = self.browser.get("/admin/mailboxes/alice_u/profile.mobileconfig")
        self.assertEqual(plistlib.loads(again.body.encode())["PayloadUUID"],
                         profile["PayloadUUID"])


class CustomerSessionKindTests(PortalTestCase):
    def test_a_webmail_session_does_not_open_the_portal(self):
        """Portal and webmail sessions are separate kinds with separate cookies."""
        self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser.login_webmail("alice_u")
        self.assertEqual(self.browser.get("/admin/mailboxes/new").status, 303)
        (session,) = self.h.sessions._sessions.values()
        self.assertEqual(session.kind, MAILBOX)
        self.assertIsNone(self.h.sessions.get(session.id, CUSTOMER))
