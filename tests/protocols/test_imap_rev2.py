"""STATUS DELETED (RFC 9051 §6.3.11): the count of \\Deleted messages."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class StatusDeletedTests(unittest.TestCase):
    maildir = False

    def setUp(self):
        self.imap = IMAPHarness(self, maildir=self.maildir)
        self.imap.fill(12)
        self.c = self.imap.connect(login=True)

    def test_status_deleted(self):
        """RFC 9051 §6.3.11: DELETED counts the \\Deleted messages (served
        to every session)."""
        self.c.select()
        self.c.command("f STORE 2,5 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("s STATUS INBOX (MESSAGES DELETED)").ok().has(
            b"* STATUS INBOX (MESSAGES 12 DELETED 2)")
        self.imap.deliver(b"Subject: x\r\n\r\nx\r\n", folder="Trash", flags=("\\Deleted",))
        self.imap.deliver(b"Subject: y\r\n\r\ny\r\n", folder="Trash")
        self.c.command("t STATUS Trash (DELETED MESSAGES)").ok().has(
            b"* STATUS Trash (DELETED 1 MESSAGES 2)")
        self.c.command('l LIST "" "Trash" RETURN (STATUS (DELETED))').ok().has(
            b"* STATUS Trash (DELETED 1)")
        # the store's own count (the index query, for a folder nobody has open)
        status = self.successResultOf(self.imap.mail.folder_status(self.imap.mailbox.id,
                                                                   "Trash"))
        self.assertEqual((status.messages, status.deleted), (2, 1))


class StatusDeletedMaildirTests(StatusDeletedTests):
    maildir = True
