"""The Twisted interface adapters over the mailboxes service (ImapAccount,
SelectedFolder, MessageAdapter) and the per-session sequence numbers."""

import io

from twisted.mail import imap4
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from ktmail.model import FLAGS_ADD
from ktmail.protocols.imap.mailbox import ImapAccount, pattern_matcher
from ktmail.protocols.imap.parser import CommandReader, ParseError, sequence_set
from ktmail.services.mailboxes import IFolderListener
from tests.protocols.imap_harness import IMAPHarness

MULTIPART = (b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
             b"--x\r\nContent-Type: text/plain\r\n\r\none\r\n--x\r\n"
             b"Content-Type: text/html\r\n\r\n<p>two</p>\r\n--x--\r\n")


class Session:
    def __init__(self):
        self.woken = 0

    def folder_changed(self):
        self.woken += 1


def seqset(text):
    return sequence_set(CommandReader([text.encode()]))


class AdapterTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(3)
        self.imap.deliver(MULTIPART)
        self.account = ImapAccount(self.imap.mailboxes, self.imap.mailbox)
        self.selected = self.successResultOf(self.account.select("INBOX"))
        self.session = Session()
        self.selected.attach(self.session)

    def test_interfaces(self):
        """The adapters provide Twisted's interfaces (and the service's
        listener interface) with the right method signatures."""
        verifyObject(imap4.IAccount, self.account)
        verifyObject(imap4.INamespacePresenter, self.account)
        verifyObject(imap4.IMailbox, self.selected)
        verifyObject(imap4.ICloseableMailbox, self.selected)
        verifyObject(IFolderListener, self.selected)
        (_, message), = self.successResultOf(self.selected.fetch(imap4.MessageSet(4, 4), False))
        verifyObject(imap4.IMessage, message)
        verifyObject(imap4.IMessageFile, message)
        message.close()

    def test_twisted_fetch_and_store(self):
        """IMailbox.fetch gives messages Twisted's own body-structure code can
        walk; IMailbox.store changes flags (RFC 3501 §6.4.6 modes)."""
        found = self.successResultOf(self.selected.fetch(imap4.MessageSet(3, None), True))
        self.assertEqual([(n, m.getUID()) for n, m in found], [(3, 3), (4, 4)])
        message = found[1][1]
        self.assertTrue(message.isMultipart())
        self.assertEqual(message.getSubPart(1).getBodyFile().read(), b"<p>two</p>")
        self.assertEqual(message.getHeaders(False, "subject"), {"subject": "parts"})
        self.assertEqual(message.open().read(), MULTIPART)
        structure = imap4.getBodyStructure(message.getSubPart(0))
        self.assertEqual(structure[:2], ["text", "plain"])
        for _, m in found:
            m.close()
        changed = self.successResultOf(self.selected.store(imap4.MessageSet(1, 2),
                                                           ["\\Seen"], 1, False))
        self.assertEqual(changed, {1: ["\\Seen"], 2: ["\\Seen"]})
        self.assertEqual(self.selected.requestStatus(["MESSAGES", "UNSEEN"]),
                         {"MESSAGES": 4, "UNSEEN": 2})

    def test_sequence_numbers(self):
        """resolve(): UID sets ignore missing UIDs; message numbers beyond
        EXISTS are refused; ``*`` is the last message (RFC 3501 §6.4.8, §9)."""
        s = self.selected
        self.assertEqual(s.resolve(seqset("2:*"), by_uid=False), [(2, 2), (3, 3), (4, 4)])
        self.assertEqual(s.resolve(seqset("3,9:12"), by_uid=True), [(3, 3)])
        self.assertEqual(s.resolve(seqset("12:4"), by_uid=True), [(4, 4)])
        self.assertEqual(s.resolve(seqset("*"), by_uid=True), [(4, 4)])
        with self.assertRaises(ParseError):
            s.resolve(seqset("5"), by_uid=False)

    def test_changes_wait_for_updates(self):
        """Changes by others are held until updates(): the numbering does not
        move in between; expunges wait for allow_expunge (RFC 3501 §7.4.1)."""
        s = self.selected
        live = s.live
        self.successResultOf(live.expunge([2]))
        self.successResultOf(live.set_flags([3], ["\\Flagged"], FLAGS_ADD))
        self.imap.deliver(b"Subject: five\r\n\r\n")
        self.assertEqual(self.session.woken, 3)
        self.assertEqual(s.resolve(seqset("1:*"), by_uid=False)[-1], (4, 4))
        self.assertEqual(s.updates(allow_expunge=False),
                         [b"* 5 EXISTS", b"* 5 RECENT",
                          b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))"])
        self.assertEqual(s.uids, [1, 2, 3, 4, 5])
        self.assertEqual(s.updates(allow_expunge=True), [b"* 2 EXPUNGE"])
        self.assertEqual(s.uids, [1, 3, 4, 5])
        self.assertEqual(s.updates(allow_expunge=True), [])

    def test_many_expunges_rebuild_the_view_once(self):
        """A mass expunge elsewhere is applied in one pass, numbers descending."""
        more = self.imap.fill(60)
        self.successResultOf(self.selected.live.refresh())
        self.selected.updates(True)
        self.successResultOf(self.selected.live.expunge([m.info.uid for m in more[:40]]))
        lines = self.selected.updates(True)
        self.assertEqual(len(lines), 40)
        self.assertEqual(lines[0], b"* 44 EXPUNGE")
        self.assertEqual(lines[-1], b"* 5 EXPUNGE")
        self.assertEqual(len(self.selected.uids), 24)

    def test_detach_releases_the_folder(self):
        """close() stops listening and gives the live folder back."""
        live = self.selected.live
        self.selected.close()
        self.assertNotIn(self.selected, live.listeners)
        self.assertEqual(live.users, 0)

    def test_account_operations(self):
        """IAccount's folder operations go through the mailboxes service."""
        a = self.account
        self.successResultOf(a.create("Receipts/"))
        self.assertTrue(self.successResultOf(a.isSubscribed("INBOX")))
        self.successResultOf(a.subscribe("Receipts"))
        self.assertTrue(self.successResultOf(a.isSubscribed("Receipts")))
        self.successResultOf(a.rename("Receipts", "Kvitton"))
        names = [n for n, _ in self.successResultOf(a.listMailboxes("", "*"))]
        self.assertIn("Kvitton", names)
        self.successResultOf(a.delete("Kvitton"))
        self.assertEqual(a.getPersonalNamespaces(), [["", "/"]])
        stored = self.successResultOf(a.append("Drafts", io.BytesIO(b"Subject: d\r\n\r\n"),
                                               ["\\Draft"], None))
        self.assertEqual(stored.info.flags, frozenset({"\\Draft"}))


class PatternTests(unittest.TestCase):
    def test_list_patterns(self):
        """RFC 3501 §6.3.8 wildcards, reference prefix and INBOX's case."""
        cases = [("", "*", "A/B", True), ("", "%", "A/B", False), ("", "%", "A", True),
                 ("", "inbox", "INBOX", True), ("", "Inbox/%", "INBOX/x", True),
                 ("", "a", "A", False), ("A/", "%", "A/B", True), ("A/", "/B", "A/B", True),
                 ("", "K*ring", "Kvitton/Försäkring", True), ("", "*", "INBOX", True)]
        for reference, pattern, name, expected in cases:
            self.assertEqual(pattern_matcher(reference, pattern)(name), expected,
                             (reference, pattern, name))
