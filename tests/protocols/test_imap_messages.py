"""IMAP message commands: SELECT/EXAMINE, FETCH, STORE, SEARCH, COPY/MOVE,
EXPUNGE, CLOSE/UNSELECT and APPEND (transcripts)."""

import re

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness

MESSAGE = (b"Date: Mon, 13 Nov 2023 09:00:00 +0100\r\n"
           b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@example.se>\r\n"
           b"To: Alice <alice@sboksi.fi>, team: a@x.org, b@y.org;\r\n"
           b"Subject: =?utf-8?q?M=C3=B6te?=\r\n"
           b"Message-ID: <m1@example.se>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
           b"\r\n"
           b"preamble\r\n"
           b"--b1\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"\r\n"
           b"Hej Alice,\r\nvi ses.\r\n"
           b"--b1\r\n"
           b"Content-Type: message/rfc822\r\n"
           b"\r\n"
           b"Subject: inner\r\nFrom: c@z.org\r\n\r\ninner body\r\n"
           b"--b1--\r\n")


class SelectTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_select_sends_every_required_response(self):
        """RFC 3501 §6.3.1: FLAGS, EXISTS, RECENT, UNSEEN, PERMANENTFLAGS,
        UIDVALIDITY and UIDNEXT (Twisted omits the last four, #3951)."""
        self.imap.deliver(b"Subject: 1\r\n\r\n", flags=("\\Seen", "$Label1"))
        self.imap.fill(2)
        r = self.c.command("a SELECT INBOX").ok("[READ-WRITE]")
        folder = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX")
        self.assertEqual(r.untagged, [
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)",
            (b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 "
             b"\\*)] Flags permitted."),
            b"* 3 EXISTS",
            b"* 3 RECENT",
            b"* OK [UNSEEN 2] First unseen.",
            b"* OK [UIDVALIDITY %d] UIDs valid." % folder.uidvalidity,
            b"* OK [UIDNEXT 4] Predicted next UID."])

    def test_recent_belongs_to_the_first_session(self):
        """RFC 3501 §2.3.2: \\Recent goes to one session only; EXAMINE does
        not take it."""
        self.imap.fill(2)
        other = self.imap.connect(login=True)
        other.command("a EXAMINE INBOX").ok("[READ-ONLY]").has("* 2 RECENT")
        self.c.command("b SELECT INBOX").ok().has("* 2 RECENT")
        other.command("c SELECT INBOX").ok().has("* 0 RECENT")

    def test_examine_is_read_only(self):
        """RFC 3501 §6.3.2: EXAMINE: PERMANENTFLAGS (), no \\Seen from FETCH,
        STORE/EXPUNGE refused."""
        self.imap.fill(1)
        r = self.c.command("a EXAMINE INBOX").ok("[READ-ONLY]")
        r.has(b"* OK [PERMANENTFLAGS ()] Read-only folder.")
        r = self.c.command("b FETCH 1 (BODY[])").ok()
        r.lacks(rb"\\Seen")
        self.c.command("c STORE 1 +FLAGS (\\Deleted)").no("CANNOT")
        self.c.command("d EXPUNGE").no("CANNOT")

    def test_select_missing_folder_leaves_nothing_selected(self):
        """RFC 3501 §6.3.1: a failed SELECT deselects the current folder."""
        self.c.command("a SELECT INBOX").ok()
        self.c.command("b SELECT Nowhere").no("NONEXISTENT")
        self.c.command("c FETCH 1 FLAGS").bad()


class FetchTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.stored = self.imap.deliver(MESSAGE)
        self.c = self.imap.connect(login=True)
        self.c.select()

    def body(self, r, label):
        """The literal of ``label`` in a FETCH response."""
        line = r.matching(rb"FETCH")[0]
        m = re.search(re.escape(label) + rb" \{(\d+)\}\r\n", line)
        self.assertIsNotNone(m, f"no {label!r} in {line!r}")
        return line[m.end():m.end() + int(m.group(1))]

    def test_flags_uid_size_internaldate(self):
        """RFC 3501 §7.4.2 static items; RFC822.SIZE is the stored size."""
        r = self.c.command("a FETCH 1 (FLAGS UID RFC822.SIZE INTERNALDATE)").ok()
        r.has(b'* 1 FETCH (FLAGS (\\Recent) UID 1 RFC822.SIZE %d INTERNALDATE '
              b'"14-Nov-2023 22:13:20 +0000")' % len(MESSAGE))

    def test_uid_fetch_always_includes_uid(self):
        """RFC 3501 §6.4.8: UID FETCH responses carry the UID."""
        r = self.c.command("a UID FETCH 1:* (FLAGS)").ok()
        r.has(b"* 1 FETCH (UID 1 FLAGS (\\Recent))")

    def test_envelope(self):
        """RFC 3501 §7.4.2 ENVELOPE: raw strings, groups, sender and reply-to
        defaulting to from."""
        r = self.c.command("a FETCH 1 ENVELOPE").ok()
        self.assertEqual(r.untagged[0], (
            b'* 1 FETCH (ENVELOPE ("Mon, 13 Nov 2023 09:00:00 +0100" "=?utf-8?q?M=C3=B6te?=" '
            b'(("=?utf-8?q?Bj=C3=B6rn?=" NIL "bjorn" "example.se")) '
            b'(("=?utf-8?q?Bj=C3=B6rn?=" NIL "bjorn" "example.se")) '
            b'(("=?utf-8?q?Bj=C3=B6rn?=" NIL "bjorn" "example.se")) '
            b'(("Alice" NIL "alice" "sboksi.fi")(NIL NIL "team" NIL)(NIL NIL "a" "x.org")'
            b'(NIL NIL "b" "y.org")(NIL NIL NIL NIL)) NIL NIL NIL "<m1@example.se>"))'))

    def test_bodystructure_and_body(self):
        """RFC 3501 §7.4.2 BODYSTRUCTURE (with extension data) and BODY,
        including an encapsulated message/rfc822 with its envelope."""
        r = self.c.command("a FETCH 1 (BODYSTRUCTURE)").ok()
        line = r.untagged[0]
        self.assertTrue(line.startswith(
            b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" '
            b'19 2 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" 43 (NIL "inner" '
            b'((NIL NIL "c" "z.org"))'), line)
        self.assertTrue(line.endswith(b' "mixed" ("boundary" "b1") NIL NIL NIL))'), line)
        r = self.c.command("b FETCH 1 (BODY)").ok()
        self.assertTrue(r.untagged[0].endswith(b' "mixed"))'), r)

    def test_sections(self):
        """RFC 3501 §6.4.5: HEADER, HEADER.FIELDS(.NOT), TEXT, part numbers,
        MIME, and parts of an encapsulated message, byte for byte."""
        c = self.c
        r = c.command("a FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject message-id)])").ok()
        self.assertEqual(self.body(r, b"BODY[HEADER.FIELDS (Subject message-id)]"),
                         b"Subject: =?utf-8?q?M=C3=B6te?=\r\nMessage-ID: <m1@example.se>\r\n\r\n")
        r = c.command("b FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (To From Date Subject "
                      "Message-ID Content-Type)])").ok()
        self.assertEqual(self.body(r, b"BODY[HEADER.FIELDS.NOT (To From Date Subject "
                                      b"Message-ID Content-Type)]"),
                         b"MIME-Version: 1.0\r\n\r\n")
        header_end = MESSAGE.index(b"\r\n\r\n") + 4
        r = c.command("c FETCH 1 (BODY.PEEK[HEADER])").ok()
        self.assertEqual(self.body(r, b"BODY[HEADER]"), MESSAGE[:header_end])
        r = c.command("d FETCH 1 (BODY.PEEK[TEXT])").ok()
        self.assertEqual(self.body(r, b"BODY[TEXT]"), MESSAGE[header_end:])
        r = c.command("e FETCH 1 (BODY.PEEK[1])").ok()
        self.assertEqual(self.body(r, b"BODY[1]"), b"Hej Alice,\r\nvi ses.")
        r = c.command("f FETCH 1 (BODY.PEEK[1.MIME])").ok()
        self.assertEqual(self.body(r, b"BODY[1.MIME]"),
                         b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        r = c.command("g FETCH 1 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT])").ok()
        self.assertEqual(self.body(r, b"BODY[2.HEADER]"),
                         b"Subject: inner\r\nFrom: c@z.org\r\n\r\n")
        self.assertEqual(self.body(r, b"BODY[2.TEXT]"), b"inner body")
        r = c.command("h FETCH 1 (BODY.PEEK[2.1])").ok()
        self.assertEqual(self.body(r, b"BODY[2.1]"), b"inner body")
        r = c.command("i FETCH 1 (BODY.PEEK[7])").ok()
        r.has(b"* 1 FETCH (BODY[7] NIL)")

    def test_partial_fetch_returns_exactly_the_octets(self):
        """RFC 3501 §6.4.5 <origin.octets>: exactly the octets asked for, the
        response naming only the origin (Twisted sends it all, #5613);
        beyond the end gives an empty string."""
        c = self.c
        r = c.command("a FETCH 1 (BODY.PEEK[]<0.10>)").ok()
        self.assertEqual(self.body(r, b"BODY[]<0>"), MESSAGE[:10])
        r = c.command("b FETCH 1 (BODY.PEEK[]<20.30>)").ok()
        self.assertEqual(self.body(r, b"BODY[]<20>"), MESSAGE[20:50])
        r = c.command("c FETCH 1 (BODY.PEEK[1]<4.5>)").ok()
        self.assertEqual(self.body(r, b"BODY[1]<4>"), b"Alice")
        r = c.command("d FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)]<0.7>)").ok()
        self.assertEqual(self.body(r, b"BODY[HEADER.FIELDS (SUBJECT)]<0>"), b"Subject")
        r = c.command("e FETCH 1 (BODY.PEEK[]<99999.10>)").ok()
        self.assertEqual(self.body(r, b"BODY[]<99999>"), b"")

    def test_body_fetch_sets_seen_and_reports_flags(self):
        """RFC 3501 §6.4.5: BODY[] (not .PEEK) sets \\Seen, and the new flags
        are in the same FETCH response; RFC822 too; BODY.PEEK does not."""
        c = self.c
        self.imap.deliver(b"Subject: two\r\n\r\nx\r\n")
        c.command("z NOOP").ok()
        r = c.command("a FETCH 1 (BODY.PEEK[])").ok()
        r.lacks(rb"\\Seen")
        r = c.command("b FETCH 1 (BODY[])").ok()
        self.assertTrue(r.untagged[0].endswith(b" FLAGS (\\Seen \\Recent))"), r)
        r = c.command("c FETCH 2 (FLAGS RFC822)").ok()
        self.assertTrue(r.untagged[0].startswith(b"* 2 FETCH (FLAGS (\\Seen \\Recent) RFC822"),
                        r)
        r = c.command("d FETCH 1 (BODY[TEXT])").ok()
        self.assertEqual(len(r.matching(rb"FLAGS")), 0, "already seen: no new FLAGS")
        other = self.imap.connect(login=True)
        other.command("e SELECT INBOX").ok()
        other.command("f FETCH 1:2 FLAGS").ok().has("* 1 FETCH (FLAGS (\\Seen))")

    def test_rfc822_items(self):
        """RFC 3501: RFC822 = BODY[], RFC822.HEADER = BODY.PEEK[HEADER],
        RFC822.TEXT = BODY[TEXT]."""
        header_end = MESSAGE.index(b"\r\n\r\n") + 4
        r = self.c.command("a FETCH 1 (RFC822.HEADER)").ok()
        self.assertEqual(self.body(r, b"RFC822.HEADER"), MESSAGE[:header_end])
        r.lacks(rb"\\Seen")
        r = self.c.command("b FETCH 1 (RFC822.TEXT)").ok()
        self.assertEqual(self.body(r, b"RFC822.TEXT"), MESSAGE[header_end:])
        r = self.c.command("c FETCH 1 RFC822").ok()
        self.assertEqual(self.body(r, b"RFC822"), MESSAGE)

    def test_macros_and_bad_sets(self):
        """ALL/FAST/FULL; message numbers beyond EXISTS are BAD, unknown UIDs
        are ignored (RFC 3501 §6.4.8)."""
        c = self.c
        r = c.command("a FETCH 1 FULL").ok()
        self.assertRegex(r.untagged[0], rb"FLAGS .* INTERNALDATE .* RFC822.SIZE \d+ "
                                        rb"ENVELOPE \(.* BODY \(")
        c.command("b FETCH 2 FLAGS").bad()
        c.command("c UID FETCH 5:9 FLAGS").ok()
        c.command("d FETCH 1 (BOGUS)").bad()

    def test_large_bodies_are_streamed_exactly(self):
        """A 2 MiB body is sent in chunks read off the reactor thread, byte
        for byte, and a partial of it too."""
        big = b"Subject: big\r\n\r\n" + b"".join(b"%07d" % n + b"x" * 90 + b"\r\n"
                                                for n in range(20000))
        self.imap.deliver(big)
        c = self.c
        c.command("n NOOP").ok()
        r = c.command("a FETCH 2 (BODY.PEEK[])").ok()
        self.assertEqual(self.body(r, b"BODY[]"), big)
        r = c.command("b FETCH 2 (BODY.PEEK[]<1000000.500000>)").ok()
        self.assertEqual(self.body(r, b"BODY[]<1000000>"), big[1000000:1500000])


class BackPressureTests(unittest.TestCase):
    def test_a_large_body_waits_for_the_transport(self):
        """While the transport is full (it paused its producer) a FETCH of a
        large body writes no further chunk, so memory stays flat; it goes on
        when the transport resumes."""
        imap = IMAPHarness(self)
        big = b"Subject: big\r\n\r\n" + b"z" * (3 * 1024 * 1024) + b"\r\n"
        imap.deliver(big)
        c = imap.connect(login=True)
        c.select()
        gate = c.protocol._gate
        gate.pauseProducing()
        before = len(c.transport.value())
        c.send_raw(b"a FETCH 1 (BODY.PEEK[])\r\n")
        written = len(c.transport.value()) - before
        self.assertLess(written, 600 * 1024)
        self.assertNotIn(b"a OK", c.transport.value())
        gate.resumeProducing()
        r = c.finish(b"a").ok()
        self.assertIn(big, r.untagged[0])


class ManyMessagesTests(unittest.TestCase):
    def test_fetch_of_many_messages_in_slices(self):
        """FETCH 1:* (UID FLAGS) on 5000 messages writes them in a few large
        writes (TWISTED-NOTES §1.6: not one reactor turn per message)."""
        imap = IMAPHarness(self)
        imap.fill(5000)
        c = imap.connect(login=True)
        c.select()
        writes = []
        original = c.transport.write
        c.transport.write = lambda data: (writes.append(len(data)), original(data))
        r = c.command("a UID FETCH 1:* (UID FLAGS)").ok()
        self.assertEqual(len(r.untagged), 5000)
        self.assertLess(len(writes), 10)
        r.has(b"* 5000 FETCH (UID 5000 FLAGS (\\Recent))")


class StoreTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(3)
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_store_modes(self):
        """RFC 3501 §6.4.6: +FLAGS, -FLAGS, FLAGS, with FETCH responses for
        each message; .SILENT none; \\Recent cannot be stored."""
        c = self.c
        r = c.command("a STORE 1:2 +FLAGS (\\Seen $Work)").ok()
        self.assertEqual(r.untagged, [b"* 1 FETCH (FLAGS (\\Seen $Work \\Recent))",
                                      b"* 2 FETCH (FLAGS (\\Seen $Work \\Recent))"])
        r = c.command("b STORE 1 -FLAGS.SILENT ($Work)").ok()
        self.assertEqual(r.untagged, [])
        r = c.command("c UID STORE 3 FLAGS (\\Flagged \\Recent)").ok()
        r.has(b"* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent))")
        c.command("d FETCH 1 FLAGS").ok().has(b"* 1 FETCH (FLAGS (\\Seen \\Recent))")
        c.command("e STORE 1 +FLAGS (\\Bogus)").bad()

    def test_other_sessions_see_the_change(self):
        """RFC 3501 §5.2: another session selecting the folder gets an
        unsolicited FETCH with the new flags at its next command."""
        other = self.imap.connect(login=True)
        other.command("a SELECT INBOX").ok()
        self.c.command("b STORE 2 +FLAGS (\\Flagged)").ok()
        r = other.command("c NOOP").ok()
        r.has(b"* 2 FETCH (UID 2 FLAGS (\\Flagged))")


class ExpungeTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(5)
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_expunge(self):
        """RFC 3501 §6.4.3: one EXPUNGE per removed message, numbered as the
        client knows them at that moment (highest first)."""
        c = self.c
        c.command("a STORE 2,4 +FLAGS.SILENT (\\Deleted)").ok()
        r = c.command("b EXPUNGE").ok()
        self.assertEqual(r.untagged, [b"* 4 EXPUNGE", b"* 2 EXPUNGE"])
        c.command("c FETCH 1:* (UID)").ok().has(b"* 3 FETCH (UID 5)")

    def test_uid_expunge(self):
        """RFC 4315 §2.1: UID EXPUNGE removes only the listed \\Deleted messages."""
        c = self.c
        c.command("a STORE 1:3 +FLAGS.SILENT (\\Deleted)").ok()
        r = c.command("b UID EXPUNGE 2:5").ok()
        self.assertEqual(r.untagged, [b"* 3 EXPUNGE", b"* 2 EXPUNGE"])
        c.command("c UID SEARCH DELETED").ok().has(b"* SEARCH 1")

    def test_close_expunges_silently_and_unselect_does_not(self):
        """RFC 3501 §6.4.2 CLOSE (no EXPUNGE responses) and RFC 3691 UNSELECT."""
        c = self.c
        c.command("a STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        c.command("b UNSELECT").ok()
        c.command("c STATUS INBOX (MESSAGES)").ok().has("* STATUS INBOX (MESSAGES 5)")
        c.select()
        r = c.command("d CLOSE").ok()
        self.assertEqual(r.untagged, [])
        c.command("e STATUS INBOX (MESSAGES)").ok().has("* STATUS INBOX (MESSAGES 4)")


class CopyMoveTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(3)
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_copy_with_copyuid(self):
        """RFC 4315 COPYUID: the source and destination UID sets; flags travel."""
        c = self.c
        c.command("a STORE 2 +FLAGS (\\Flagged)").ok()
        r = c.command("b COPY 2:3 Trash").ok()
        validity = self.successResultOf(
            self.imap.mail.folder_status(self.imap.mailbox.id, "Trash")).uidvalidity
        self.assertTrue(r.tagged.startswith(b"b OK [COPYUID %d 2:3 1:2]" % validity), r)
        c.command("c SELECT Trash").ok()
        c.command("d FETCH 1 FLAGS").ok().has(b"* 1 FETCH (FLAGS (\\Flagged \\Recent))")

    def test_copy_to_a_missing_folder(self):
        """RFC 3501 §6.4.7: NO [TRYCREATE] when the target does not exist."""
        self.c.command("a COPY 1 Nowhere").no("TRYCREATE")
        self.c.command("b MOVE 1 Nowhere").no("TRYCREATE")

    def test_move(self):
        """RFC 6851: COPYUID in an untagged OK, then EXPUNGE, then the tag."""
        r = self.c.command("a UID MOVE 2 Trash").ok()
        self.assertEqual(len(r.untagged), 2)
        self.assertRegex(r.untagged[0], rb"^\* OK \[COPYUID \d+ 2 1\] Moved\.$")
        self.assertEqual(r.untagged[1], b"* 2 EXPUNGE")
        self.c.command("b FETCH 1:* UID").ok().has(b"* 2 FETCH (UID 3)")

    def test_moves_into_and_out_of_spam_train_the_filter(self):
        """SPEC §1: moving into Spam teaches spam, out of it ham (through the
        mailboxes service)."""
        self.c.command("a MOVE 1 Spam").ok()
        self.c.command("b SELECT Spam").ok()
        self.c.command("c COPY 1 INBOX").ok()
        self.assertEqual([(user, spam) for user, _, spam in self.imap.spam.trained],
                         [("alice_u", True), ("alice_u", False)])

    def test_copy_over_quota(self):
        """RFC 9208 §4.3 / RFC 5530: a copy that does not fit is NO [OVERQUOTA]."""
        imap = IMAPHarness(self, quota_bytes=200)
        imap.fill(2)
        c = imap.connect(login=True)
        c.select()
        c.command("a COPY 1:2 Trash").no("OVERQUOTA")


class AppendTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)

    def test_append_without_flags(self):
        """RFC 3501 §6.3.11: APPEND with no flag list (Twisted fails with BAD,
        TWISTED-NOTES §1 #8); APPENDUID (RFC 4315)."""
        data = b"Subject: hi\r\n\r\nhello\r\n"
        r = self.c.command(f"a APPEND INBOX {{{len(data)}}}", literals=[data + b"\r\n"]).ok()
        validity = self.successResultOf(
            self.imap.mail.folder_status(self.imap.mailbox.id, "INBOX")).uidvalidity
        self.assertTrue(r.tagged.startswith(b"a OK [APPENDUID %d 1]" % validity), r)

    def test_append_with_flags_and_date(self):
        """Flags and INTERNALDATE are kept."""
        data = b"Subject: hi\r\n\r\nhello\r\n"
        self.c.command(f'a APPEND Drafts (\\Draft \\Seen) "01-Feb-2024 10:00:00 +0200" '
                       f'{{{len(data)}}}', literals=[data + b"\r\n"]).ok()
        self.c.command("b SELECT Drafts").ok()
        r = self.c.command("c FETCH 1 (FLAGS INTERNALDATE)").ok()
        r.has(b'* 1 FETCH (FLAGS (\\Seen \\Draft \\Recent) INTERNALDATE '
              b'"01-Feb-2024 08:00:00 +0000")')

    def test_append_to_selected_folder_reports_exists(self):
        """RFC 3501 §6.3.11: appending to the selected folder is reported
        with EXISTS."""
        self.c.select()
        self.c.send_raw(b"a APPEND INBOX {14+}\r\nSubject: x\r\n\r\n\r\n")
        r = self.c.finish(b"a").ok()
        r.has("* 1 EXISTS")

    def test_literal_plus_append(self):
        """RFC 7888: APPEND with {n+} and no continuation."""
        self.c.send_raw(b"a APPEND INBOX {14+}\r\nSubject: x\r\n\r\n\r\n")
        self.c.finish(b"a").ok("APPENDUID")

    def test_too_big_is_refused_before_the_upload(self):
        """SPEC §4: over 50 MiB: NO [TOOBIG] instead of the continuation
        (RFC 7889 APPENDLIMIT); the client sends nothing more."""
        r = self.c.command("a APPEND INBOX {52428801}")
        r.no("TOOBIG")
        self.assertNotIn(b"+ ", self.c.transport.value().split(b"a APPEND")[0][-5:])
        self.c.command("b NOOP").ok()

    def test_too_big_literal_plus_is_read_and_discarded(self):
        """RFC 7888 §4: a too large {n+} literal is read and thrown away (never
        buffered), then answered NO [TOOBIG]."""
        imap = IMAPHarness(self, max_message_bytes=100000)
        c = imap.connect(login=True)
        c.send_raw(b"a APPEND INBOX {300000+}\r\n")
        for _ in range(30):
            c.send_raw(b"x" * 10000)
            self.assertLess(len(c.protocol._buffer), 20000)
        c.send_raw(b"\r\n")
        c.finish(b"a").no("TOOBIG")
        self.assertEqual(imap.spools, [])
        c.command("b NOOP").ok()

    def test_over_quota_is_refused_before_the_upload(self):
        """SPEC §4: NO [OVERQUOTA] when the message cannot fit, before the
        continuation (RFC 9208 §4.3)."""
        imap = IMAPHarness(self, quota_bytes=100)
        c = imap.connect(login=True)
        c.command("a APPEND INBOX {500}").no("OVERQUOTA")
        c.command("b NOOP").ok()

    def test_large_message_goes_through_a_spool_file(self):
        """A message above 64 KiB is written to a spool file as it arrives
        (never held in memory), and the spool is removed afterwards."""
        data = b"Subject: big\r\n\r\n" + b"y" * 200000 + b"\r\n"
        r = self.c.command(f"a APPEND INBOX {{{len(data)}}}", literals=[data + b"\r\n"]).ok()
        self.assertEqual(len(self.imap.spools), 1)
        self.assertTrue(self.imap.spools[0].discarded)
        self.c.select()
        r = self.c.command("b FETCH 1 RFC822.SIZE").ok()
        r.has(b"* 1 FETCH (RFC822.SIZE %d)" % len(data))

    def test_append_to_missing_folder(self):
        """RFC 3501 §6.3.11: NO [TRYCREATE] when the folder does not exist."""
        self.c.command("a APPEND Nowhere {5}", literals=[b"x: y\n\r\n"]).no("TRYCREATE")

    def test_bad_append_syntax(self):
        """No literal, or text after it, is BAD."""
        self.c.command("a APPEND INBOX").bad()
        self.c.command("b APPEND INBOX (\\Seen) {3}", literals=[b"abc extra\r\n"]).bad()

    def test_quota_alert_after_append(self):
        """The [ALERT] is sent once the mailbox passes 90 % of its quota."""
        imap = IMAPHarness(self, quota_bytes=1000)
        c = imap.connect(login=True)
        data = b"Subject: x\r\n\r\n" + b"z" * 920
        r = c.command(f"a APPEND INBOX {{{len(data)}}}", literals=[data + b"\r\n"]).ok()
        self.assertEqual(len(r.matching(rb"^\* OK \[ALERT\]")), 1, r)


class SearchTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.deliver(MESSAGE)
        self.imap.deliver(b"From: shop@example.com\r\nSubject: Kvitto\r\nX-Order: 42\r\n\r\n"
                          b"Summa 100 kr\r\n", flags=("\\Seen",))
        self.imap.deliver(b"Subject: third\r\n\r\nnothing\r\n")
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_no_match_still_answers_search(self):
        """RFC 3501 §7.2.5: ``* SEARCH`` is sent even when nothing matches
        (Twisted sends nothing, TWISTED-NOTES §1.7)."""
        r = self.c.command("a SEARCH SUBJECT nothing-like-this").ok()
        self.assertEqual(r.untagged, [b"* SEARCH"])

    def test_keys(self):
        """RFC 3501 §6.4.4 keys over the index and the files."""
        c = self.c
        cases = [("SEEN", [2]), ("UNSEEN", [1, 3]), ("FROM björn", [1]),
                 ('SUBJECT "möte"', [1]), ("HEADER X-Order 42", [2]), ("BODY 100", [2]),
                 ("TEXT kvitto", [2]), ("BODY kvitto", []), ("OR SEEN SUBJECT third", [2, 3]),
                 ("NOT SEEN", [1, 3]), ("2:*", [2, 3]), ("UID 1,3", [1, 3]), ("ALL", [1, 2, 3]),
                 ("LARGER 100", [1]), ("SENTON 13-Nov-2023", [1]), ("NEW", [1, 3]),
                 ("KEYWORD $x", []), ("UNKEYWORD $x", [1, 2, 3]), ("TO nobody", []), ("TO team", [1]),
                 ("TO alice", [1]), ("HEADER Content-Type multipart", [1])]
        for n, (key, expected) in enumerate(cases):
            text = f"a{n} SEARCH CHARSET UTF-8 {key}".encode()
            r = c.command(text).ok()
            self.assertEqual(r.search_result(), expected, key)

    def test_uid_search(self):
        """RFC 3501 §6.4.8: UID SEARCH answers UIDs."""
        self.c.command("a STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("b EXPUNGE").ok()
        self.assertEqual(self.c.command("c UID SEARCH ALL").ok().search_result(), [2, 3])
        self.assertEqual(self.c.command("d SEARCH ALL").ok().search_result(), [1, 2])
        self.assertEqual(self.c.command("e UID SEARCH UID *").ok().search_result(), [3])

    def test_charset(self):
        """CHARSET other than UTF-8/US-ASCII: NO [BADCHARSET (...)] (RFC 3501)."""
        self.c.command("a SEARCH CHARSET ISO-2022-JP ALL").no("BADCHARSET (UTF-8 US-ASCII)")
        self.c.command("b SEARCH CHARSET UTF-8 SUBJECT {5}",
                       literals=["möte".encode() + b"\r\n"]).ok().has("* SEARCH 1")
