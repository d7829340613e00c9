"""Webmail: writing, replying, forwarding, drafts and sending through the
submission policy (sender, hourly limit, local delivery, outbound queue)."""

import email
import email.policy
import re

from twisted.trial import unittest

from ktmail.model import SEEN
from ktmail.services.submission import HOUR
from tests.web.mail_support import MailHarness, message
from tests.web.test_webmail_reading import with_attachment


def parsed(data):
    return email.message_from_bytes(data, policy=email.policy.default)


class ComposeTestCase(unittest.TestCase):
    limits = ""

    def setUp(self):
        self.h = MailHarness(self, limits=self.limits)
        self.h.customer("kund1001")
        self.alice = self.h.mailbox("alice_u", "alice@brev.fi")
        self.bob = self.h.mailbox("bob_u", "bob@brev.fi")
        self.browser = self.h.browser()
        self.browser.login()

    def compose(self, path="/webmail/compose"):
        page = self.browser.get(path)
        self.assertEqual(page.status, 303, page.text()[:200])
        page = self.browser.follow(page)
        self.assertEqual(page.status, 200)
        return page

    def send(self, page, **values):
        result = self.browser.submit_compose(page, **values)
        return result


class ComposeTests(ComposeTestCase):
    def test_send_to_a_local_mailbox_with_a_copy_in_sent(self):
        """A message with åäö in subject, text and an attachment's name is
        delivered to another local mailbox and kept in Sent; the From is the
        mailbox's own address; Message-ID and Date are set."""
        page = self.compose()
        self.assertIn("Du kan skicka till 100 mottagare till den här timmen.", page.text())
        result = self.send(page, to="Bob Berg <bob@brev.fi>", subject="Hälsningar från Åre",
                           body="Hej Bob!\nVi ses på fredag.",
                           files=[("bild åäö.txt", "text/plain", "innehåll".encode())])
        self.assertEqual(result.status, 303, result.text()[:500])
        page = self.browser.follow(result)
        self.assertIn("Meddelandet har skickats till 1 mottagare.", page.alerts()[0])
        (_info, data), = self.h.messages("bob_u")
        msg = parsed(data)
        self.assertEqual(msg["From"], "alice@brev.fi")
        self.assertEqual(msg["Subject"], "Hälsningar från Åre")
        self.assertTrue(msg["Message-ID"].endswith("@mail.example.test>"))
        self.assertTrue(msg["Date"])
        body, attachment = list(msg.iter_parts())
        self.assertIn("Vi ses på fredag.", body.get_content())
        self.assertEqual(attachment.get_filename(), "bild åäö.txt")
        self.assertEqual(attachment.get_payload(decode=True), "innehåll".encode())
        (sent_info, sent), = self.h.messages("alice_u", "Sent")
        self.assertIn(SEEN, sent_info.flags)
        self.assertEqual(parsed(sent)["Message-ID"], msg["Message-ID"])
        self.assertEqual(self.h.outbound.queued, [])

    def test_remote_recipients_go_to_the_outbound_queue_and_bcc_stays_hidden(self):
        page = self.compose()
        self.send(page, to="someone@example.com", cc="bob@brev.fi",
                  bcc="secret@example.net", subject="Till flera", body="Hej")
        (envelope, data), = self.h.outbound.queued
        self.assertEqual(sorted(str(a) for a in envelope.recipients),
                         ["secret@example.net", "someone@example.com"])
        self.assertEqual(envelope.sender, "alice@brev.fi")
        self.assertNotIn(b"secret@example.net", data)
        self.assertNotIn(b"Bcc", data)
        (_info, bob), = self.h.messages("bob_u")
        self.assertNotIn(b"secret@example.net", bob)
        (_info, sent), = self.h.messages("alice_u", "Sent")
        self.assertIn(b"Bcc: secret@example.net", sent)

    def test_header_injection_is_refused(self):
        """CR or LF in any header field is refused, nothing is sent."""
        page = self.compose()
        for field in ("to", "cc", "bcc", "subject"):
            value = "bob@brev.fi\r\nBcc: victim@example.com" if field != "subject" else \
                "Hej\r\nBcc: victim@example.com"
            values = {"to": "bob@brev.fi", field: value}
            result = self.send(page, subject=values.get("subject", "x"), **{
                k: v for k, v in values.items() if k != "subject"})
            self.assertEqual(result.status, 400, field)
            self.assertIn("Radbrytningar", result.text())
        self.assertEqual(self.h.messages("bob_u"), [])
        self.assertEqual(self.h.outbound.queued, [])

    def test_bad_and_unknown_recipients_are_named(self):
        page = self.compose()
        result = self.send(page, to="bob@brev.fi, inte-en-adress", subject="x", body="y")
        self.assertEqual(result.status, 400)
        self.assertIn("inte-en-adress", result.field_error("to"))
        result = self.send(result, to="nobody@brev.fi", subject="x", body="y")
        self.assertIn("nobody@brev.fi", result.field_error("to"))
        result = self.send(result, to="", subject="x", body="y")
        self.assertIn("minst en mottagare", result.field_error("to"))
        self.assertEqual(self.h.messages("bob_u"), [])

    def test_attach_remove_and_keep_fields(self):
        """"Attach" uploads files and keeps what was typed; an attachment can
        be removed again."""
        page = self.compose()
        result = self.send(page, do="attach", to="bob@brev.fi", subject="Bilagor",
                           files=[("a.txt", "text/plain", b"A"), ("b.txt", "text/plain", b"B")])
        self.assertEqual(result.status, 303)
        page = self.browser.follow(result)
        self.assertIn("a.txt", page.text())
        self.assertIn("b.txt", page.text())
        self.assertIn('value="Bilagor"', page.body)
        result = self.send(page, do="remove-0")
        page = self.browser.follow(result)
        self.assertNotIn("a.txt", page.text())
        self.send(page, do="send", body="med b")
        (_info, data), = self.h.messages("bob_u")
        names = [p.get_filename() for p in parsed(data).iter_attachments()]
        self.assertEqual(names, ["b.txt"])
        self.assertEqual(os_listdir(self.h.webmail.uploads.directory), [])

    def test_attachments_over_the_limit_are_refused(self):
        h = MailHarness(self, limits="max_message_bytes = 100000")
        h.customer("kund1001")
        h.mailbox("alice_u", "alice@brev.fi")
        browser = h.browser()
        browser.login()
        page = browser.follow(browser.get("/webmail/compose"))
        result = browser.submit_compose(page, do="attach",
                                        files=[("big.bin", "application/octet-stream",
                                                b"x" * 120000)])
        self.assertEqual(result.status, 413)
        self.assertIn("för stora", result.field_error("files"))
        self.assertEqual(os_listdir(h.webmail.uploads.directory), [])

    def test_forged_compose_posts_keep_nothing(self):
        """Without the token (first field) or from another site nothing is
        stored or sent."""
        page = self.compose()
        for kwargs in ({"csrf": "wrong"}, {"csrf": None}, {"origin": "https://evil.example"}):
            result = self.browser.submit_compose(
                page, to="bob@brev.fi", subject="x",
                files=[("a.txt", "text/plain", b"A")], **kwargs)
            self.assertEqual(result.status, 403, kwargs)
        self.assertEqual(os_listdir(self.h.webmail.uploads.directory), [])
        self.assertEqual(self.h.messages("bob_u"), [])

    def test_save_draft_and_edit_it_again(self):
        page = self.compose()
        result = self.send(page, do="save", to="bob@brev.fi", bcc="c@example.com",
                           subject="Utkast", body="Halvfärdigt",
                           files=[("x.txt", "text/plain", b"X")])
        self.assertEqual(result.status, 303)
        page = self.browser.follow(result)
        self.assertIn("Utkastet har sparats", page.alerts()[0])
        (info, data), = self.h.messages("alice_u", "Drafts")
        self.assertIn("\\Draft", info.flags)
        # saving again replaces the copy
        self.send(page, do="save", body="Nästan färdigt")
        (info, data), = self.h.messages("alice_u", "Drafts")
        self.assertIn("Nästan färdigt", parsed(data).get_body().get_content())
        # a new session opens the draft from Drafts and sends it
        other = self.h.browser()
        other.login()
        page = other.follow(other.get(f"/webmail/f/Drafts/{info.uid}/edit"))
        self.assertIn('value="c@example.com"', page.body)
        self.assertIn("x.txt", page.text())
        other.submit_compose(page, do="send")
        self.assertEqual(self.h.messages("alice_u", "Drafts"), [])
        self.assertEqual(len(self.h.messages("bob_u")), 1)

    def test_discard(self):
        page = self.compose()
        result = self.send(page, do="discard", files=[("x.txt", "text/plain", b"X")])
        self.assertEqual(result.status, 303)
        self.assertEqual(os_listdir(self.h.webmail.uploads.directory), [])
        self.assertEqual(self.browser.get(self.browser.compose_url(page).replace(
            "/upload", "")).location, "/webmail/f/INBOX/")


class ReplyTests(ComposeTestCase):
    def test_reply_quotes_and_threads(self):
        self.h.deliver("alice@brev.fi", message(
            "Fråga", body="Kommer du?\n", extra="Cc: carl@example.org\n"))
        page = self.compose("/webmail/f/INBOX/1/reply")
        self.assertIn('value="Åsa Öberg &lt;asa@example.org&gt;"', page.body)
        self.assertIn('value="Re: Fråga"', page.body)
        self.assertIn("&gt; Kommer du?", page.body)
        self.assertNotIn("carl@example.org", page.body)
        self.send(page, to="bob@brev.fi", body="Ja!")
        (_info, data), = self.h.messages("bob_u")
        msg = parsed(data)
        original = parsed(self.h.messages("alice_u")[0][1])
        self.assertEqual(msg["In-Reply-To"], original["Message-ID"])
        self.assertIn(original["Message-ID"], msg["References"])
        info, _data = self.h.messages("alice_u")[0]
        self.assertIn("\\Answered", info.flags)

    def test_reply_all_leaves_out_oneself(self):
        self.h.deliver("alice@brev.fi", message(
            "Möte", to="alice@brev.fi, bob@brev.fi", extra="Cc: carl@example.org\n"))
        page = self.compose("/webmail/f/INBOX/1/replyall")
        to = re.search(r'name="to"[^>]*value="([^"]*)"', page.body).group(1)
        cc = re.search(r'name="cc"[^>]*value="([^"]*)"', page.body).group(1)
        self.assertEqual(to, "Åsa Öberg &lt;asa@example.org&gt;")
        self.assertEqual(cc, "bob@brev.fi, carl@example.org")

    def test_forward_carries_the_attachments(self):
        data = bytes(range(256)) * 50
        self.h.deliver("alice@brev.fi", with_attachment(data))
        page = self.compose("/webmail/f/INBOX/1/forward")
        self.assertIn('value="Fwd: Din räkning"', page.body)
        self.assertIn("räkning åäö.pdf", page.text())
        self.send(page, to="bob@brev.fi")
        (_info, sent), = self.h.messages("bob_u")
        (attachment,) = list(parsed(sent).iter_attachments())
        self.assertEqual(attachment.get_filename(), "räkning åäö.pdf")
        self.assertEqual(attachment.get_content(), data)


class HourlyLimitTests(ComposeTestCase):
    limits = "webmail_recipients_per_hour = 3"

    def test_limit_is_shown_and_enforced_per_rolling_hour(self):
        """The compose page says how many recipients are left this hour; a
        message over the limit is refused (temporarily) and sending works
        again once the hour has rolled on."""
        page = self.compose()
        self.assertIn("Du kan skicka till 3 mottagare till den här timmen.", page.text())
        self.send(page, to="bob@brev.fi, x@example.com", subject="1")
        page = self.compose()
        self.assertIn("Du kan skicka till 1 mottagare till den här timmen.", page.text())
        result = self.send(page, to="bob@brev.fi, y@example.com", subject="2")
        self.assertEqual(result.status, 400)
        self.assertIn("1 mottagare till den här timmen, men meddelandet har 2", result.text())
        self.send(result, to="bob@brev.fi", subject="3")
        page = self.compose()
        self.assertIn("gränsen på 3 mottagare i timmen", page.text())
        result = self.send(page, to="bob@brev.fi", subject="4")
        self.assertEqual(result.status, 400)
        self.assertIn("Du kan skicka igen om 60 minuter", result.text())
        self.h.clock.advance(HOUR + 1)
        self.browser.login()   # the session has ended meanwhile (idle)
        page = self.compose()
        self.assertIn("Du kan skicka till 3 mottagare", page.text())
        self.assertEqual(self.send(page, to="bob@brev.fi", subject="5").status, 303)
        self.assertEqual(len(self.h.messages("bob_u")), 3)


def os_listdir(path):
    import os
    return sorted(os.listdir(path))
