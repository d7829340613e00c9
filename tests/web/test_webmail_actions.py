"""Webmail: actions on messages (multi-select), Spam / Not spam, Trash and
the folders page."""

import re

from twisted.trial import unittest

from ktmail.model import SEEN
from tests.web.mail_support import MailHarness, message

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class ActionTestCase(unittest.TestCase):
    def setUp(self):
        self.h = MailHarness(self)
        self.h.customer("kund1001")
        self.alice = self.h.mailbox("alice_u", "alice@brev.fi")
        self.browser = self.h.browser()

    def act(self, folder, uids, act, target="", back=None, **extra):
        """Submit the list form with ``uids`` ticked."""
        page = self.browser.last
        data = [("csrf", page.csrf()), ("act", act), ("target", target),
                ("back", back or f"/webmail/f/{folder}/")]
        data += [("uid", str(u)) for u in uids]
        data += list(extra.items())
        result = self.browser.request(
            "POST", f"/webmail/f/{folder}/act", data=data,
            headers={"Origin": ["https://mail.example.test"],
                     "Sec-Fetch-Site": ["same-origin"]})
        self.assertEqual(result.status, 303, result.text()[:300])
        return self.browser.follow(result)

    def subjects(self, folder="INBOX", username="alice_u"):
        return [re.search(rb"^Subject: (.*?)\r$", data, re.MULTILINE).group(1).decode()
                for _info, data in self.h.messages(username, folder)]


class MessageActionTests(ActionTestCase):
    def test_mark_read_unread_flag(self):
        """Ticked messages are marked read or unread, flagged or not, and the
        page says what happened."""
        for n in range(3):
            self.h.deliver("alice@brev.fi", message(f"M{n}"))
        self.browser.login()
        page = self.act("INBOX", [1, 3], "read")
        self.assertIn("2 meddelanden markerade som lästa.", page.alerts()[0])
        flags = {i.uid: i.flags for i, _d in self.h.messages("alice_u")}
        self.assertEqual([SEEN in flags[u] for u in (1, 2, 3)], [True, False, True])
        self.act("INBOX", [1], "unread")
        self.act("INBOX", [2], "flag")
        flags = {i.uid: i.flags for i, _d in self.h.messages("alice_u")}
        self.assertNotIn(SEEN, flags[1])
        self.assertIn("\\Flagged", flags[2])

    def test_delete_moves_to_trash_then_for_good(self):
        """Delete moves to the Trash; deleting there removes for good; the
        Trash can be emptied."""
        for n in range(3):
            self.h.deliver("alice@brev.fi", message(f"M{n}"))
        self.browser.login()
        self.act("INBOX", [1, 2], "delete")
        self.assertEqual(self.subjects("INBOX"), ["M2"])
        self.assertEqual(self.subjects("Trash"), ["M0", "M1"])
        self.browser.get("/webmail/f/Trash/")
        page = self.act("Trash", [1], "delete")
        self.assertIn("raderat för alltid", page.alerts()[0])
        self.assertEqual(self.subjects("Trash"), ["M1"])
        page = self.browser.post("/webmail/f/Trash/empty")
        self.assertEqual(page.status, 303)
        self.assertEqual(self.subjects("Trash"), [])

    def test_spam_and_not_spam_train_the_filter(self):
        """"Spam" moves to Spam and trains it as spam; "Not spam" moves back
        to the Inbox and trains it as ham (through the mailboxes service)."""
        self.h.deliver("alice@brev.fi", message("Erbjudande"))
        self.browser.login()
        self.act("INBOX", [1], "spam")
        self.assertEqual(self.subjects("Spam"), ["Erbjudande"])
        self.assertEqual(self.h.spam.trained, [("alice_u", "Erbjudande", True)])
        self.browser.get("/webmail/f/Spam/")
        page = self.act("Spam", [1], "notspam")
        self.assertIn("Inkorgen", page.alerts()[0])
        self.assertEqual(self.subjects("INBOX"), ["Erbjudande"])
        self.assertEqual(self.h.spam.trained[-1], ("alice_u", "Erbjudande", False))

    def test_deleting_in_spam_does_not_train_as_ham(self):
        """Deleting spam removes it for good rather than moving it out of
        Spam (which would teach the filter that it was wanted)."""
        self.h.deliver("alice@brev.fi", message("Skräp", body=GTUBE + "\n"))
        self.browser.login()
        self.browser.get("/webmail/f/Spam/")
        self.act("Spam", [1], "delete")
        self.assertEqual(self.subjects("Spam"), [])
        self.assertEqual(self.subjects("Trash"), [])
        self.assertEqual(self.h.spam.trained, [])

    def test_move_to_a_user_folder(self):
        self.h.ok(self.h.mailboxes.create_folder(self.alice, "Kvitton/Försäkring"))
        self.h.deliver("alice@brev.fi", message("Polis"))
        self.browser.login()
        page = self.act("INBOX", [1], "move", target="Kvitton/Försäkring")
        self.assertIn("Kvitton / Försäkring", page.alerts()[0])
        self.assertEqual(self.subjects("Kvitton/Försäkring"), ["Polis"])
        page = self.browser.get("/webmail/f/Kvitton.F%C3%B6rs%C3%A4kring/")
        self.assertEqual(page.status, 200)
        self.assertIn("Polis", page.text())

    def test_single_message_delete_goes_to_the_next_one(self):
        for n in range(3):
            self.h.deliver("alice@brev.fi", message(f"M{n}"))
        self.browser.login()
        page = self.browser.get("/webmail/f/INBOX/2")
        after = re.search(r'name="after" value="([^"]+)"', page.body).group(1)
        page = self.act("INBOX", [2], "delete", back="/webmail/f/INBOX/", after=after)
        self.assertIn("<h1>M0</h1>", page.body)

    def test_actions_need_the_token_and_same_origin(self):
        """A forged POST (no token, or from another site) changes nothing."""
        self.h.deliver("alice@brev.fi", message("M"))
        self.browser.login()
        page = self.browser.post("/webmail/f/INBOX/act", {"uid": "1", "act": "delete"},
                                 csrf=None)
        self.assertEqual(page.status, 403)
        page = self.browser.post("/webmail/f/INBOX/act", {"uid": "1", "act": "delete"},
                                 origin="https://evil.example")
        self.assertEqual(page.status, 403)
        self.assertEqual(self.subjects("INBOX"), ["M"])

    def test_back_never_leaves_the_webmail(self):
        self.h.deliver("alice@brev.fi", message("M"))
        self.browser.login()
        page = self.browser.request(
            "POST", "/webmail/f/INBOX/act",
            data={"uid": "1", "act": "read", "back": "https://evil.example/",
                  "csrf": self.browser.last.csrf()},
            headers={"Origin": ["https://mail.example.test"], "Sec-Fetch-Site": ["same-origin"]})
        self.assertEqual(page.location, "/webmail/f/INBOX/")


class FolderTests(ActionTestCase):
    def test_create_rename_delete_user_folders(self):
        """User folders can be created (also nested, with åäö), renamed and
        deleted; the default folders are protected."""
        self.browser.login()
        self.browser.get("/webmail/folders")
        page = self.browser.follow(self.browser.post("/webmail/folders/create",
                                                     {"name": "Kvitton", "parent": ""}))
        self.assertIn("Mappen Kvitton har skapats.", page.alerts()[0])
        page = self.browser.follow(self.browser.post(
            "/webmail/folders/create", {"name": "Försäkring", "parent": "Kvitton"}))
        names = [f.name for f in self.h.ok(self.h.mailboxes.list_folders(self.alice))]
        self.assertIn("Kvitton/Försäkring", names)
        self.assertIn("Kvitton / Försäkring", page.text())
        page = self.browser.follow(self.browser.post(
            "/webmail/folders/rename", {"name": "Kvitton/Försäkring", "new": "Kvitton/Bil"}))
        names = [f.name for f in self.h.ok(self.h.mailboxes.list_folders(self.alice))]
        self.assertIn("Kvitton/Bil", names)
        page = self.browser.follow(self.browser.post("/webmail/folders/delete",
                                                     {"name": "Kvitton/Bil"}))
        names = [f.name for f in self.h.ok(self.h.mailboxes.list_folders(self.alice))]
        self.assertNotIn("Kvitton/Bil", names)
        for path, form in (("/webmail/folders/delete", {"name": "Spam"}),
                           ("/webmail/folders/rename", {"name": "Sent", "new": "Old"})):
            page = self.browser.post(path, form)
            self.assertEqual(page.status, 400)
            self.assertIn("kan inte tas bort eller byta namn", page.text())

    def test_bad_folder_names_are_refused_clearly(self):
        self.browser.login()
        self.browser.get("/webmail/folders")
        for name in ("a.b", "x/y", "", "*", "a%b"):
            page = self.browser.post("/webmail/folders/create", {"name": name, "parent": ""})
            self.assertEqual(page.status, 400, name)
            self.assertTrue(page.field_error("name"), name)
        self.browser.post("/webmail/folders/create", {"name": "Resor", "parent": ""})
        self.browser.get("/webmail/folders")
        page = self.browser.post("/webmail/folders/create", {"name": "Resor", "parent": ""})
        self.assertEqual(page.status, 409)
