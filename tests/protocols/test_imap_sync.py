"""Several sessions on one folder: each keeps its own message numbers, and
changes by others (IMAP sessions, SMTP delivery, POP3, webmail) reach it as
unsolicited responses at the moments RFC 3501 allows (transcripts)."""

from twisted.trial import unittest

from ktmail.model import FLAGS_ADD
from tests.protocols.imap_harness import IMAPHarness


class SharedFolderTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(4)
        self.a = self.imap.connect(login=True)
        self.b = self.imap.connect(login=True)
        self.a.select()
        self.b.select()
        self.live = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX")

    def test_expunge_elsewhere_waits_for_a_command_that_allows_it(self):
        """RFC 3501 §7.4.1: no EXPUNGE during FETCH, STORE or SEARCH; the
        numbers stay as the client knows them until NOOP reports it."""
        a, b = self.a, self.b
        a.command("x STORE 2 +FLAGS.SILENT (\\Deleted)").ok()
        a.command("y EXPUNGE").ok()
        r = b.command("1 FETCH 1:4 (UID)").ok()
        r.lacks(rb"EXPUNGE")
        self.assertEqual([line for line in r.untagged if b"FETCH" in line],
                         [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 4 FETCH (UID 4)"])
        b.command("2 STORE 3 +FLAGS (\\Seen)").ok().lacks(rb"EXPUNGE")
        self.assertEqual(b.command("3 SEARCH ALL").ok().search_result(), [1, 3, 4])
        r = b.command("4 NOOP").ok()
        r.has(b"* 2 EXPUNGE")
        self.assertEqual(b.command("5 SEARCH ALL").ok().search_result(), [1, 2, 3])
        b.command("6 FETCH 2 (UID)").ok().has(b"* 2 FETCH (UID 3)")

    def test_uid_commands_may_report_expunges(self):
        """RFC 3501 §7.4.1: UID FETCH/STORE/SEARCH may carry EXPUNGE."""
        self.a.command("x STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        self.a.command("y EXPUNGE").ok()
        self.b.command("1 UID FETCH 1:* (FLAGS)").ok().has(b"* 1 EXPUNGE")

    def test_expunges_are_numbered_as_the_client_knows_them(self):
        """Several expunges elsewhere: reported highest first, so each number
        is right at the moment it is read."""
        self.a.command("x STORE 1,3,4 +FLAGS.SILENT (\\Deleted)").ok()
        self.a.command("y EXPUNGE").ok()
        r = self.b.command("1 NOOP").ok()
        self.assertEqual(r.untagged, [b"* 4 EXPUNGE", b"* 3 EXPUNGE", b"* 1 EXPUNGE"])
        self.b.command("2 FETCH 1:* (UID)").ok().has(b"* 1 FETCH (UID 2)")

    def test_new_mail_and_flags_from_others(self):
        """RFC 3501 §5.2: EXISTS for new messages, FETCH FLAGS for flag changes
        by others (webmail through the mailboxes service), at the next command."""
        self.imap.deliver(b"Subject: new\r\n\r\n")
        self.successResultOf(self.live.set_flags([1], ["\\Flagged"], FLAGS_ADD))
        r = self.b.command("1 NOOP").ok()
        r.has(b"* 5 EXISTS")
        r.has(b"* 1 FETCH (UID 1 FLAGS (\\Flagged))")

    def test_pop3_style_deletion_reaches_an_idle_session(self):
        """SPEC issue 4: a deletion made through the mailboxes service (POP3 at
        QUIT, webmail, Spam expiry) reaches an IDLE session at once."""
        b = self.b
        b.send_raw(b"1 IDLE\r\n")
        self.assertEqual(b.read_line(), b"+ idling")
        self.successResultOf(self.imap.mailboxes.expunge(self.imap.mailbox, "INBOX", [2, 3]))
        self.assertEqual(b.read_lines(), [b"* 3 EXPUNGE", b"* 2 EXPUNGE"])
        self.imap.deliver(b"Subject: new\r\n\r\n")
        # \Recent went to the session that selected first (RFC 3501 §2.3.2)
        self.assertEqual(b.read_lines(), [b"* 3 EXISTS", b"* 0 RECENT"])
        b.send_raw(b"DONE\r\n")
        b.finish(b"1").ok()

    def test_expunge_during_a_running_fetch_is_held_back(self):
        """An expunge that happens while a FETCH is being written is reported
        only at a later command (RFC 3501 §7.4.1)."""
        big = b"Subject: big\r\n\r\n" + b"z" * 600000 + b"\r\n"
        self.imap.deliver(big)
        b = self.b
        b.command("0 NOOP").ok()
        gate = b.protocol._gate
        gate.pauseProducing()
        b.send_raw(b"1 FETCH 5 (BODY.PEEK[])\r\n")
        self.a.command("x STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        self.a.command("y EXPUNGE").ok()
        gate.resumeProducing()
        r = b.finish(b"1").ok()
        r.lacks(rb"EXPUNGE")
        b.command("2 NOOP").ok().has(b"* 1 EXPUNGE")

    def test_messages_expunged_elsewhere_are_skipped_by_fetch(self):
        """RFC 2180 §4.1: a message expunged by another session but not yet
        reported is left out of FETCH responses (no stale data is invented)."""
        self.a.command("x STORE 2 +FLAGS.SILENT (\\Deleted)").ok()
        self.a.command("y EXPUNGE").ok()
        r = self.b.command("1 FETCH 2 (BODY.PEEK[])").ok()
        self.assertEqual(r.untagged, [])


class MaildirDurabilityTests(unittest.TestCase):
    def test_uids_survive_a_restart(self):
        """SPEC §5: UIDVALIDITY and UIDs are the same after a restart (a new
        store and services over the same Maildir)."""
        imap = IMAPHarness(self, maildir=True)
        imap.fill(3)
        c = imap.connect(login=True)
        c.command("a STORE 1 +FLAGS (\\Deleted)").bad()  # nothing selected yet
        c.select()
        data = b"Subject: appended\r\n\r\nbody\r\n"
        c.command(f"b APPEND INBOX {{{len(data)}}}", literals=[data + b"\r\n"]).ok()
        before = c.command("c UID FETCH 1:* (UID FLAGS)").ok().untagged
        validity = c.command("d STATUS INBOX (UIDVALIDITY)").ok().untagged
        again = IMAPHarness.__new__(IMAPHarness)
        again.__dict__.update(imap.__dict__)
        from ktmail.services.mailboxes import MailboxService
        from ktmail.store.maildir import MaildirStore
        from tests.protocols.imap_harness import ImapContext, IMAPFactory, inline
        again.mail = MaildirStore(imap.mail.root.rsplit("/mail", 1)[0], imap.clock, inline)
        again.mailboxes = MailboxService(again.mail, imap.spam, imap.limits, imap.clock)
        again.factory = IMAPFactory(ImapContext(
            auth=imap.auth, mailboxes=again.mailboxes, new_spool=imap.new_spool,
            run_in_thread=inline, clock=imap.clock, turn=imap.context.turn))
        c2 = again.connect(login=True)
        c2.select()
        self.assertEqual(c2.command("c UID FETCH 1:* (UID FLAGS)").ok().untagged,
                         [line.replace(b" \\Recent", b"").replace(b"(\\Recent)", b"()")
                          for line in before])
        self.assertEqual(c2.command("d STATUS INBOX (UIDVALIDITY)").ok().untagged, validity)

    def test_append_is_on_disk_before_ok(self):
        """SPEC §5: when APPEND answers OK the message file is in the
        Maildir (and the spool file is gone)."""
        import glob
        import os
        imap = IMAPHarness(self, maildir=True)
        c = imap.connect(login=True)
        data = b"Subject: big\r\n\r\n" + b"q" * 100000 + b"\r\n"
        c.command(f"a APPEND Sent (\\Seen) {{{len(data)}}}", literals=[data + b"\r\n"]).ok()
        files = glob.glob(os.path.join(imap.mail.mailbox_path(imap.mailbox.id), ".Sent",
                                       "cur", "*"))
        self.assertEqual(len(files), 1)
        self.assertTrue(files[0].endswith(":2,S"))
        with open(files[0], "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(os.listdir(imap.spool_dir), [])
