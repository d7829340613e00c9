"""IMAP folder commands: LIST/LSUB with CHILDREN and SPECIAL-USE, CREATE,
DELETE, RENAME, SUBSCRIBE, STATUS, QUOTA (transcripts)."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class ListTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_default_folders_with_special_use(self):
        """SPEC §1, RFC 6154: Sent, Drafts, Trash, Spam carry \\Sent \\Drafts
        \\Trash \\Junk; RFC 3348 \\HasNoChildren; "/" separator; INBOX first."""
        r = self.c.command('a LIST "" *').ok()
        self.assertEqual(r.untagged, [
            b'* LIST (\\HasNoChildren) "/" INBOX',
            b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
            b'* LIST (\\HasNoChildren \\Sent) "/" Sent',
            b'* LIST (\\HasNoChildren \\Junk) "/" Spam',
            b'* LIST (\\HasNoChildren \\Trash) "/" Trash'])

    def test_special_use_selection_and_return_options(self):
        """RFC 6154 §3: LIST (SPECIAL-USE) lists only special-use folders;
        RETURN (SPECIAL-USE) is accepted; RFC 5258 SUBSCRIBED marks \\Subscribed."""
        r = self.c.command('a LIST (SPECIAL-USE) "" *').ok()
        self.assertEqual(len(r.untagged), 4)
        self.assertNotIn(b"INBOX", b"".join(r.untagged))
        r = self.c.command('b LIST "" "%" RETURN (SPECIAL-USE)').ok()
        r.has(b'* LIST (\\HasNoChildren \\Junk) "/" Spam')
        self.c.command("c CREATE Extra").ok()
        r = self.c.command('d LIST (SUBSCRIBED) "" *').ok()
        r.has(b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent')
        r.lacks(rb"Extra")

    def test_wildcards_and_hierarchy(self):
        """RFC 3501 §6.3.8: * crosses levels, % does not; a reference is
        prefixed; "" gives the separator; \\HasChildren on parents."""
        c = self.c
        c.command("a CREATE Projects/2026/Q1").ok()
        r = c.command('b LIST "" %').ok()
        r.has(b'* LIST (\\HasChildren) "/" Projects')
        r.lacks(rb"2026")
        r = c.command('c LIST "" Projects/%').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\HasChildren) "/" Projects/2026'])
        r = c.command('d LIST Projects/ *').ok()
        self.assertEqual(len(r.untagged), 2)
        r = c.command('e LIST "" ""').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\Noselect) "/" ""'])
        r = c.command('f LIST "" inbox').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\HasNoChildren) "/" INBOX'])

    def test_modified_utf7_names_round_trip(self):
        """RFC 3501 §5.1.3: Kvitton/Försäkring is created, listed and selected
        in modified UTF-7."""
        c = self.c
        c.command("a CREATE Kvitton/F&APY-rs&AOQ-kring").ok()
        r = c.command('b LIST "" Kvitton/*').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\HasNoChildren) "/" Kvitton/F&APY-rs&AOQ-kring'])
        c.command('c SELECT "Kvitton/F&APY-rs&AOQ-kring"').ok()
        r = c.command('d STATUS "Kvitton/F&APY-rs&AOQ-kring" (MESSAGES)').ok()
        r.has(b"* STATUS Kvitton/F&APY-rs&AOQ-kring (MESSAGES 0)")
        c.command("e CREATE Bad&Name").bad()

    def test_lsub(self):
        """RFC 3501 §6.3.9: subscribed names; a subscribed name without a
        folder is \\Noselect."""
        c = self.c
        c.command("a CREATE Old").ok()
        c.command("b SUBSCRIBE Old").ok()
        c.command("c DELETE Old").ok()
        r = c.command('d LSUB "" *').ok()
        r.has(b'* LSUB () "/" INBOX')
        r.has(b'* LSUB (\\Noselect) "/" Old')
        c.command("e UNSUBSCRIBE Old").ok()
        c.command('f LSUB "" *').ok().lacks(rb"Old")


class FolderChangeTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_create(self):
        """RFC 3501 §6.3.3: a trailing separator is allowed; existing names
        and INBOX are refused with ALREADYEXISTS (RFC 5530)."""
        c = self.c
        c.command("a CREATE Receipts/").ok()
        c.command('b LIST "" Receipts').ok().has(b'* LIST (\\HasNoChildren) "/" Receipts')
        c.command("c CREATE Receipts").no("ALREADYEXISTS")
        c.command("d CREATE inbox").no("ALREADYEXISTS")

    def test_bad_names_are_refused(self):
        """Path traversal, dots, wildcards and empty levels never reach the
        disk (SPEC §5 Maildir++): NO [CANNOT] or BAD."""
        c = self.c
        for n, name in enumerate(('"../x"', '".hidden"', '"a/../b"', '"a//b"', '"a*"',
                                  '"b%"', '"/abs"')):
            r = c.command(f"a{n} CREATE {name}")
            self.assertTrue(r.tagged.startswith(f"a{n} NO [CANNOT]".encode())
                            or r.tagged.startswith(f"a{n} BAD".encode()), r)
        self.assertEqual(len(c.command('b LIST "" *').untagged), 5)

    def test_default_folders_cannot_be_deleted(self):
        """SPEC §1: the five default folders stay (NO [CANNOT])."""
        for n, name in enumerate(("INBOX", "Sent", "Drafts", "Trash", "Spam")):
            self.c.command(f"a{n} DELETE {name}").no("CANNOT")

    def test_delete(self):
        """RFC 3501 §6.3.4: a folder and its messages go; a missing one is
        NONEXISTENT; one with subfolders is refused."""
        c = self.c
        c.command("a CREATE A/B").ok()
        c.command("b DELETE A").no("CANNOT")
        c.command("c DELETE A/B").ok()
        c.command("d DELETE A").ok()
        c.command("e DELETE A").no("NONEXISTENT")

    def test_rename(self):
        """RFC 3501 §6.3.5: subfolders move along; default folders other than
        INBOX cannot be renamed; an existing target is refused."""
        c = self.c
        c.command("a CREATE A/B").ok()
        c.command("b RENAME A Z").ok()
        r = c.command('c LIST "" Z*').ok()
        self.assertEqual(len(r.untagged), 2)
        c.command("d RENAME Sent Other").no("CANNOT")
        c.command("e RENAME Z Trash").no("ALREADYEXISTS")

    def test_rename_inbox(self):
        """RFC 3501 §6.3.5: RENAME INBOX moves its messages into the new
        folder and leaves INBOX empty."""
        self.imap.fill(2)
        c = self.c
        c.command("a RENAME INBOX Archive").ok()
        c.command("b STATUS INBOX (MESSAGES)").ok().has("* STATUS INBOX (MESSAGES 0)")
        c.command("c STATUS Archive (MESSAGES)").ok().has("* STATUS Archive (MESSAGES 2)")

    def test_deleting_the_selected_folder_deselects_it(self):
        """Our own DELETE of the selected folder ends the selection (no BYE)."""
        c = self.c
        c.command("a CREATE Tmp").ok()
        c.command("b SELECT Tmp").ok()
        c.command("c DELETE Tmp").ok()
        c.command("d FETCH 1 FLAGS").bad()
        self.assertFalse(c.closed)

    def test_folder_deleted_elsewhere_ends_the_session(self):
        """A folder deleted by another session: this one gets BYE, since its
        UIDs no longer mean anything."""
        c = self.c
        c.command("a CREATE Tmp").ok()
        c.command("b SELECT Tmp").ok()
        other = self.imap.connect(login=True)
        other.command("x DELETE Tmp").ok()
        c.send_raw(b"c NOOP\r\n")
        self.assertTrue(c.closed)
        self.assertIn(b"* BYE The selected folder was deleted", c.transport.value())


class StatusAndQuotaTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_status(self):
        """RFC 3501 §6.3.10: the requested items, the name quoted when needed
        (Twisted writes it unquoted, TWISTED-NOTES §1.2)."""
        self.imap.fill(3)
        self.imap.deliver(b"Subject: seen\r\n\r\n", flags=("\\Seen",))
        r = self.c.command("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)").ok()
        uidvalidity = self.successResultOf(
            self.imap.mail.folder_status(self.imap.mailbox.id, "INBOX")).uidvalidity
        r.has(f"* STATUS INBOX (MESSAGES 4 RECENT 4 UIDNEXT 5 UIDVALIDITY {uidvalidity} "
              "UNSEEN 3)")
        self.c.command('b CREATE "My Folder"').ok()
        self.c.command('c STATUS "My Folder" (MESSAGES)').ok().has(
            b'* STATUS "My Folder" (MESSAGES 0)')
        self.c.command("d STATUS Nowhere (MESSAGES)").no("NONEXISTENT")
        self.c.command("d2 STATUS INBOX (APPENDLIMIT)").ok().has(
            "* STATUS INBOX (APPENDLIMIT 52428800)")  # RFC 7889 §3
        self.c.command("e STATUS INBOX (BOGUS)").bad()

    def test_quota(self):
        """RFC 9208: one root "" with STORAGE in KiB; 1048576000 bytes are a
        limit of 1024000 (SPEC §4); SETQUOTA is not for users."""
        self.imap.deliver(b"Subject: x\r\n\r\n" + b"y" * 3000)
        r = self.c.command("a GETQUOTAROOT INBOX").ok()
        self.assertEqual(r.untagged, [b'* QUOTAROOT INBOX ""',
                                      b'* QUOTA "" (STORAGE 3 1024000)'])
        self.c.command('b GETQUOTA ""').ok().has(b'* QUOTA "" (STORAGE 3 1024000)')
        self.c.command("c GETQUOTA other").no("NONEXISTENT")
        self.c.command('d SETQUOTA "" (STORAGE 1)').no("NOPERM")
        self.c.command("e GETQUOTAROOT Nowhere").no("NONEXISTENT")
