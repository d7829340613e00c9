"""IMAP4rev2 (RFC 9051): what ``ENABLE IMAP4rev2`` changes (§6.3.1 and
Appendix E) — SEARCH answered with ESEARCH, no \\Recent, SELECT's LIST
response, [CLOSED], UTF-8 mailbox names, OLDNAME — and the STATUS DELETED
item; a session that does not enable it is served IMAP4rev1 as before."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class Rev2Tests(unittest.TestCase):
    maildir = False

    def setUp(self):
        self.imap = IMAPHarness(self, maildir=self.maildir)
        self.imap.fill(12)
        self.c = self.imap.connect(login=True)

    def rev2(self, client=None):
        (client or self.c).command("e1 ENABLE IMAP4rev2").ok().has(b"* ENABLED IMAP4rev2")

    def test_enable(self):
        """RFC 9051 §6.3.1: ENABLE IMAP4rev2 answers ENABLED; the name is
        case-insensitive, and a second ENABLE lists nothing new."""
        r = self.c.command("t1 enable imap4rev2").ok()
        self.assertEqual(r.untagged, [b"* ENABLED IMAP4rev2"])
        r = self.c.command("t2 ENABLE IMAP4rev2 X-GOOD-IDEA").ok()
        self.assertEqual(r.untagged, [b"* ENABLED"])

    def test_search_answers_esearch(self):
        """RFC 9051 §6.4.4 (A282-A284): SEARCH without RETURN is RETURN
        (ALL), answered with ESEARCH; nothing found is a bare ESEARCH."""
        self.rev2()
        self.c.select()
        self.c.command("f STORE 2,10,11 +FLAGS.SILENT (\\Flagged)").ok()
        r = self.c.command('A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 '
                           'NOT FROM "Smith"').ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'])
        r = self.c.command('A283 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"').ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A283") ALL 2,10:11'])
        r = self.c.command('A284 SEARCH TEXT "string not in mailbox"').ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A284")'])

    def test_uid_search_answers_esearch_with_uid(self):
        """RFC 9051 §7.3.4: UID SEARCH's ESEARCH carries UID and UIDs."""
        self.rev2()
        self.c.select()
        self.c.command("f UID STORE 4,6 +FLAGS.SILENT (\\Answered)").ok()
        r = self.c.command("A3 UID SEARCH ANSWERED").ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A3") UID ALL 4,6'])

    def test_no_recent(self):
        """RFC 9051 Appendix E: no RECENT response, at SELECT or with new
        mail, and no \\Recent flag in FETCH, FLAGS or PERMANENTFLAGS."""
        self.rev2()
        r = self.c.select()
        r.lacks(rb"RECENT").lacks(rb"\\Recent")
        r = self.c.command("f FETCH 1:* (FLAGS)").ok()
        self.assertEqual(len(r.untagged), 12)
        r.lacks(rb"\\Recent")
        self.imap.deliver(b"Subject: new\r\n\r\nnew\r\n")
        r = self.c.command("n NOOP").ok()
        r.has(b"* 13 EXISTS").lacks(rb"RECENT")
        self.c.command("g FETCH 13 (FLAGS)").ok().has(b"* 13 FETCH (FLAGS ())")
        self.c.command("h FETCH 13 (BODY[])").ok().lacks(rb"\\Recent")

    def test_messages_stay_recent_for_rev1_sessions(self):
        """A rev2 session claims no \\Recent: a rev1 session still sees it."""
        self.rev2()
        self.c.select()
        other = self.imap.connect(login=True)
        other.select().has(b"* 12 RECENT")

    def test_enable_while_selected(self):
        """ENABLE IMAP4rev2 with a folder open: \\Recent is gone from then on."""
        self.c.select().has(b"* 12 RECENT")
        self.rev2()
        self.c.command("f FETCH 1 (FLAGS)").ok().has(b"* 1 FETCH (FLAGS ())")
        r = self.c.command("s SEARCH ALL").ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "s") ALL 1:12'])

    def test_recent_keys_bad(self):
        """RFC 9051 Appendix E: RECENT, NEW and OLD are no search keys, and
        RECENT no STATUS item, in IMAP4rev2: BAD."""
        self.rev2()
        self.c.select()
        for key in ("RECENT", "NEW", "OLD", "NOT RECENT", "OR SEEN NEW"):
            self.c.command(f"k SEARCH {key}").bad()
        self.c.command("u UID SEARCH RETURN (COUNT) OLD").bad()
        self.c.command("o SORT (DATE) UTF-8 NEW").bad()
        self.c.command("t THREAD REFERENCES UTF-8 RECENT").bad()
        self.c.command("s STATUS Sent (MESSAGES RECENT)").bad()
        self.c.command('l LIST "" "*" RETURN (STATUS (RECENT))').bad()
        self.c.command("v SEARCH UNSEEN").ok()

    def test_select_sends_list_not_unseen(self):
        """RFC 9051 §6.3.2 (A142): SELECT and EXAMINE send the folder's
        LIST response with its attributes, and no [UNSEEN n]."""
        self.rev2()
        self.c.command("f CREATE INBOX/Sub").ok()
        r = self.c.command("A142 SELECT INBOX").ok("[READ-WRITE]")
        r.has(b"* 12 EXISTS").has(b'* LIST (\\HasChildren) "/" INBOX')
        r.lacks(rb"UNSEEN").lacks(rb"RECENT")
        self.assertTrue(r.matching(rb"^\* OK \[UIDVALIDITY \d+\]"))
        self.assertTrue(r.matching(rb"^\* OK \[UIDNEXT 13\]"))
        self.assertTrue(r.matching(rb"^\* OK \[PERMANENTFLAGS \("))
        r = self.c.command("A932 EXAMINE Sent").ok("[READ-ONLY]")
        r.has(b'* LIST (\\HasNoChildren \\Sent) "/" Sent')

    def test_closed(self):
        """RFC 9051 §7.1 CLOSED: a SELECT/EXAMINE closing another folder
        says so first, also when the new SELECT fails; CLOSE, UNSELECT and
        a first SELECT do not."""
        self.rev2()
        self.c.select().lacks(rb"CLOSED")
        r = self.c.command("b EXAMINE Sent").ok()
        closed = r.untagged.index(b"* OK [CLOSED] Previous folder closed.")
        exists = r.untagged.index(b"* 0 EXISTS")
        self.assertLess(closed, exists)
        r = self.c.command("c SELECT Nowhere").no("NONEXISTENT")
        r.has(b"* OK [CLOSED] Previous folder closed.")
        self.c.command("d FETCH 1 FLAGS").bad()   # nothing selected now
        self.c.select()
        self.c.command("e UNSELECT").ok().lacks(rb"CLOSED")
        self.c.select()
        self.c.command("g CLOSE").ok().lacks(rb"CLOSED")

    def test_utf8_names_both_ways(self):
        """RFC 9051 §5.1: names are UTF-8 (quoted strings or literals), not
        modified UTF-7, in commands and in responses."""
        self.rev2()
        self.c.command('a CREATE "Kvitton/Försäkring"'.encode()).ok()
        self.c.command('b LIST "" "Kvitton/*"').ok().has(
            '* LIST (\\HasNoChildren) "/" "Kvitton/Försäkring"'.encode())
        self.c.command('c STATUS "Kvitton/Försäkring" (MESSAGES)'.encode()).ok().has(
            '* STATUS "Kvitton/Försäkring" (MESSAGES 0)'.encode())
        name = "Résumé".encode()
        self.c.command(b"d CREATE {%d+}\r\n%s" % (len(name), name)).ok()
        self.c.command(b"e SELECT {%d+}\r\n%s" % (len(name), name)).ok().has(
            '* LIST (\\HasNoChildren) "/" "Résumé"'.encode())
        # '&' is an ordinary character, not the start of modified UTF-7
        self.c.command("f CREATE R&D").ok()
        self.c.command('g LIST "" R*').ok().has(b'* LIST (\\HasNoChildren) "/" R&D')
        # a session without IMAP4rev2 sees the same folders in modified UTF-7
        other = self.imap.connect(login=True)
        other.command('h LIST "" "Kvitton/*"').ok().has(
            b'* LIST (\\HasNoChildren) "/" Kvitton/F&APY-rs&AOQ-kring')
        other.command('i LIST "" R*').ok().has(b'* LIST (\\HasNoChildren) "/" R&-D')

    def test_rename_oldname(self):
        """RFC 9051 §7.3.1: after ENABLE IMAP4rev2, RENAME reports the LIST
        responses of the folder and its subfolders with OLDNAME."""
        self.c.command("a CREATE Projekt/Alpha").ok()
        self.c.command("b RENAME Projekt Arkiv").ok().lacks(rb"LIST")
        self.rev2()
        r = self.c.command("c RENAME Arkiv Gamla").ok()
        self.assertEqual(r.untagged, [
            b'* LIST (\\HasChildren) "/" Gamla ("OLDNAME" (Arkiv))',
            b'* LIST (\\HasNoChildren) "/" Gamla/Alpha ("OLDNAME" (Arkiv/Alpha))'])
        self.c.command('d RENAME "Gamla/Alpha" "Åter"'.encode()).ok().has(
            '* LIST (\\HasNoChildren) "/" "Åter" ("OLDNAME" (Gamla/Alpha))'.encode())
        # INBOX keeps its name: its messages move, nothing is renamed
        self.c.command("e RENAME INBOX Old-Inbox").ok().lacks(rb"OLDNAME")

    def test_create_oldname(self):
        """RFC 9051 §6.3.4: a created name that differs from the one given
        (the trailing separator dropped) comes back with OLDNAME."""
        self.rev2()
        self.c.command("a CREATE Lists/").ok().has(
            b'* LIST (\\HasNoChildren) "/" Lists ("OLDNAME" (Lists/))')
        self.assertEqual(self.c.command("b CREATE Plain").ok().untagged, [])

    def test_delete_with_children(self):
        """RFC 9051 §6.3.5 (A685) and §7.1: a folder with subfolders is not
        deleted, NO [HASCHILDREN]; IMAP4rev1 sessions get [CANNOT] as before."""
        self.c.command("a CREATE foo/bar").ok()
        self.c.command("b DELETE foo").no("CANNOT")
        self.rev2()
        self.c.command("A685 DELETE foo").no("HASCHILDREN")
        self.c.command("c DELETE Trash").no("CANNOT")
        self.c.command("d DELETE foo/bar").ok()
        self.c.command("e DELETE foo").ok()

    def test_bodystructure_decodes_rfc2231(self):
        """RFC 9051 §6.4.5 (Appendix E): parameter value continuations and
        charsets (RFC 2231) are decoded in BODYSTRUCTURE; IMAP4rev1 sessions
        get the parameters as written."""
        self.imap.deliver(b"Subject: cv\r\nMIME-Version: 1.0\r\n"
                          b"Content-Type: application/pdf; name*=utf-8''%E2%82%AC.pdf\r\n"
                          b"Content-Disposition: attachment;\r\n"
                          b" filename*0*=utf-8''R%C3%A9sum; filename*1=\"e.pdf\"; size=5\r\n"
                          b"\r\nhello\r\n")
        rev1 = self.imap.connect(login=True)
        rev1.select()
        r = rev1.command("a FETCH 13 (BODYSTRUCTURE)").ok()
        self.assertIn(b'("name*" "utf-8\'\'%E2%82%AC.pdf")', r.untagged[0])
        self.assertIn(b'("filename*0*" "utf-8\'\'R%C3%A9sum" "filename*1" "e.pdf" "size" "5")',
                      r.untagged[0])
        self.rev2()
        self.c.select()
        r = self.c.command("b FETCH 13 (BODYSTRUCTURE)").ok()
        self.assertIn('("name" {7}\r\n€.pdf)'.encode(), r.untagged[0])
        self.assertIn('("attachment" ("filename" {11}\r\nRésume.pdf "size" "5"))'.encode(),
                      r.untagged[0])
        r = self.c.command("c FETCH 13 (BODY)").ok()
        self.assertIn('("name" {7}\r\n€.pdf)'.encode(), r.untagged[0])

    def test_rev1_session_unchanged(self):
        """Without ENABLE IMAP4rev2 the session is IMAP4rev1 as before:
        SEARCH, RECENT, [UNSEEN n], no LIST at SELECT, no [CLOSED], the
        RECENT keys, modified UTF-7."""
        self.c.command("a STORE 1:* +FLAGS.SILENT (\\Seen)")  # nothing selected: BAD
        self.c.command("b CREATE F&APY-r").ok()
        r = self.c.select()
        r.has(b"* 12 RECENT").has(b"* OK [UNSEEN 1] First unseen.").lacks(rb"LIST")
        self.c.command("c SEARCH RECENT").ok().has(
            b"* SEARCH 1 2 3 4 5 6 7 8 9 10 11 12")
        self.c.command("d SEARCH OLD NEW").ok().has(b"* SEARCH")
        self.c.command("e FETCH 1 FLAGS").ok().has(b"* 1 FETCH (FLAGS (\\Recent))")
        self.c.command("f STATUS Sent (RECENT)").ok().has(b"* STATUS Sent (RECENT 0)")
        self.c.command("g SELECT F&APY-r").ok().lacks(rb"CLOSED").lacks(rb"LIST")
        self.c.command("h RENAME F&APY-r Fx/").no()
        self.c.command("i CREATE Lists/").ok().lacks(rb"LIST")
        self.c.command('j LIST "" F*').ok().has(b'* LIST (\\HasNoChildren) "/" F&APY-r')


class Rev2MaildirTests(Rev2Tests):
    maildir = True


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


class AdvertisedTests(unittest.TestCase):
    def test_advertised_with_rev1(self):
        """RFC 9051 §6.1.1 and Appendix E: IMAP4rev2 is advertised next to
        IMAP4rev1, before and after login."""
        imap = IMAPHarness(self)
        c = imap.connect(login=True)
        for client in (imap.connect(), c):
            caps = client.command("a CAPABILITY").ok().untagged[0].split()
            self.assertIn(b"IMAP4rev1", caps)
            self.assertIn(b"IMAP4rev2", caps)
        self.assertIn(b"IMAP4rev2", imap.connect().greeting)
