"""CONDSTORE and QRESYNC (RFC 7162): mod-sequences on the wire, conditional
STORE, changes since a mod-sequence, and the quick resynchronisation of a
folder at SELECT (transcripts after the RFC's own examples; the numbers
are ours, the shapes are the RFC's)."""

import re

from twisted.trial import unittest

from ktmail.model import FLAGS_ADD
from ktmail.store import folder_index
from tests.protocols.imap_harness import IMAPHarness


def modseqs(response):
    """{uid: modseq} of the FETCH lines of a response."""
    out = {}
    for line in response.untagged:
        m = re.search(rb"UID (\d+).*MODSEQ \((\d+)\)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


class CondstoreTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(6)
        self.c = self.imap.connect(login=True)
        self.live = None

    def highest(self):
        return self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX").highestmodseq

    def test_advertised(self):
        """CONDSTORE and QRESYNC are in the capability list after login."""
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        self.assertIn(b"CONDSTORE", caps)
        self.assertIn(b"QRESYNC", caps)

    def test_select_with_condstore(self):
        """RFC 7162 §3.1.8 (example A142): SELECT ... (CONDSTORE) answers
        with OK [HIGHESTMODSEQ]; a plain SELECT before enabling does not."""
        self.c.command("a SELECT INBOX").ok().lacks(rb"HIGHESTMODSEQ")
        r = self.c.command("A142 SELECT INBOX (CONDSTORE)").ok()
        r.has(b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence." % self.highest())

    def test_fetch_modseq_enables_condstore(self):
        """RFC 7162 §3.1.4.2 / §3.1.2.1: FETCH MODSEQ is a CONDSTORE-enabling
        command; issued with a folder selected it brings HIGHESTMODSEQ, and
        every later flag update carries MODSEQ."""
        self.c.select()
        r = self.c.command("a FETCH 1:2 (MODSEQ)").ok()
        r.has(b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence." % self.highest())
        self.assertEqual(len(r.matching(rb"^\* \d FETCH \(MODSEQ \(\d+\)\)$")), 2)
        r = self.c.command("b STORE 1 +FLAGS (\\Flagged)").ok()
        self.assertEqual(modseqs(r), {1: self.highest()})

    def test_conditional_silent_store(self):
        """RFC 7162 §3.1.3 example 6 (a103): UID STORE with UNCHANGEDSINCE
        and .SILENT still reports each changed message's new MODSEQ."""
        self.c.command("e ENABLE CONDSTORE").ok().has(b"* ENABLED CONDSTORE")
        self.c.select()
        before = self.highest()
        r = self.c.command("a103 UID STORE 6,4,2 (UNCHANGEDSINCE %d) +FLAGS.SILENT "
                           "(\\Deleted)" % before).ok()
        self.assertNotIn(b"MODIFIED", r.tagged)
        self.assertEqual(r.untagged, [b"* 2 FETCH (UID 2 MODSEQ (%d))" % (before + 1),
                                      b"* 4 FETCH (UID 4 MODSEQ (%d))" % (before + 1),
                                      b"* 6 FETCH (UID 6 MODSEQ (%d))" % (before + 1)])

    def test_conditional_store_refuses_changed_messages(self):
        """RFC 7162 §3.1.3 example 8 (d105): messages changed after
        UNCHANGEDSINCE are left alone and named in [MODIFIED]; the others
        are changed."""
        self.c.command("a SELECT INBOX (CONDSTORE)").ok()
        mark = self.highest()
        self.c.command("b STORE 5 +FLAGS (\\Seen)").ok()   # 5 changes after mark
        r = self.c.command("d105 STORE 5,3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)"
                           % mark).ok("[MODIFIED 5]")
        self.assertEqual(list(modseqs(r)), [3])
        flags = self.c.command("c FETCH 3,5 (FLAGS)").ok()
        flags.has(b"* 3 FETCH (FLAGS (\\Deleted \\Recent))")
        flags.has(b"* 5 FETCH (FLAGS (\\Seen \\Recent))")
        # UNCHANGEDSINCE 0 can never hold (every message has a mod-sequence)
        self.c.command("d STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)").ok("[MODIFIED 1]")

    def test_fetch_changedsince(self):
        """RFC 7162 §3.1.4 (s100): only messages changed after the given
        mod-sequence are returned, with their MODSEQ."""
        self.c.select()
        mark = self.highest()
        self.c.command("a STORE 2,4 +FLAGS.SILENT (\\Seen)").ok()
        r = self.c.command("s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % mark).ok()
        # the first CONDSTORE-enabling command with a folder selected (§3.1.2.1)
        self.assertEqual(r.untagged[0], b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence."
                         % (mark + 1))
        self.assertEqual(r.untagged[1:], [
            b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (mark + 1),
            b"* 4 FETCH (UID 4 FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (mark + 1)])

    def test_search_modseq(self):
        """RFC 7162 §3.1.5: SEARCH MODSEQ (with or without an entry name)
        finds messages at or above the mod-sequence and adds the highest
        one found; no MODSEQ part when nothing matches."""
        self.c.select()
        mark = self.highest()
        self.c.command("a STORE 3 +FLAGS.SILENT (\\Draft)").ok()
        r = self.c.command('b SEARCH MODSEQ "/flags/\\\\draft" all %d' % (mark + 1)).ok()
        r.has(b"* SEARCH 3 (MODSEQ %d)" % (mark + 1))
        r = self.c.command("t SEARCH MODSEQ %d" % (mark + 5)).ok()
        r.has(b"* SEARCH")
        self.c.command("u SEARCH MODSEQ x").bad()

    def test_status_highestmodseq(self):
        """RFC 7162 §3.1.7: STATUS HIGHESTMODSEQ."""
        r = self.c.command("a STATUS INBOX (HIGHESTMODSEQ MESSAGES)").ok()
        status = self.successResultOf(self.imap.mail.folder_status(self.imap.mailbox.id,
                                                                   "INBOX"))
        r.has(b"* STATUS INBOX (HIGHESTMODSEQ %d MESSAGES 6)" % status.highestmodseq)

    def test_changes_by_others_carry_modseq(self):
        """RFC 7162 §3.1.4: flag changes made by others reach a CONDSTORE
        session with MODSEQ."""
        self.c.command("a SELECT INBOX (CONDSTORE)").ok()
        live = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX")
        self.successResultOf(live.set_flags([2], ["\\Flagged"], FLAGS_ADD))
        r = self.c.command("b NOOP").ok()
        r.has(b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % self.highest())

    def test_implicit_seen_carries_modseq(self):
        """RFC 7162 §3.1.4: a FETCH that sets \\Seen reports the new MODSEQ."""
        self.c.command("a SELECT INBOX (CONDSTORE)").ok()
        r = self.c.command("b FETCH 1 (BODY[TEXT])").ok()
        self.assertIn(b"MODSEQ (%d)" % self.highest(), r.untagged[0])

    def test_expunge_reports_highestmodseq(self):
        """RFC 7162 §3.2.7, §3.2.9: with CONDSTORE on, the tagged OK of EXPUNGE
        carries HIGHESTMODSEQ (removals have no MODSEQ of their own)."""
        self.c.command("a SELECT INBOX (CONDSTORE)").ok()
        self.c.command("b STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        r = self.c.command("A202 EXPUNGE").ok("[HIGHESTMODSEQ %d]" % self.highest())
        r.has(b"* 1 EXPUNGE")

    def test_syntax_errors(self):
        """Malformed modifiers are BAD and the session goes on."""
        self.c.select()
        self.c.command("a FETCH 1 (FLAGS) (CHANGEDSINCE 0)").bad()
        self.c.command("b FETCH 1 (FLAGS) (BOGUS 1)").bad()
        self.c.command("c STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)").bad()
        self.c.command("d UID FETCH 1 (FLAGS) (VANISHED)").bad()
        self.c.command("e NOOP").ok()


class QresyncTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(10)
        self.c = self.imap.connect(login=True)
        self.c.command("a ENABLE QRESYNC").ok().has(b"* ENABLED QRESYNC")
        self.c.select()
        self.live = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX")
        self.validity = self.live.uidvalidity

    def test_select_qresync_needs_enable(self):
        """RFC 7162 §3.2.3: the QRESYNC parameter before ENABLE QRESYNC is BAD."""
        other = self.imap.connect(login=True)
        other.command("a SELECT INBOX (QRESYNC (%d 1))" % self.validity).bad()

    def test_quick_resync_at_select(self):
        """RFC 7162 §3.2.5.1 (A02): after the usual SELECT responses come
        VANISHED (EARLIER) for the removed UIDs and FETCH (UID FLAGS MODSEQ)
        for everything changed since the client's mod-sequence, new
        messages included."""
        mark = self.live.highestmodseq
        self.c.command("b STORE 2,3,7 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("c EXPUNGE").ok()
        self.c.command("d UID STORE 5 +FLAGS.SILENT (\\Answered)").ok()
        self.imap.deliver(b"Subject: new\r\n\r\nhi\r\n")
        r = self.c.command("A02 SELECT INBOX (QRESYNC (%d %d 1:10))" % (self.validity, mark))
        r.ok("[READ-WRITE]")
        r.has(b"* OK [CLOSED] Previous folder closed.")
        r.has(b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence." % self.live.highestmodseq)
        tail = r.untagged[r.untagged.index(
            b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence." % self.live.highestmodseq) + 1:]
        self.assertEqual(tail[0], b"* VANISHED (EARLIER) 2:3,7")
        self.assertEqual([re.sub(rb"MODSEQ \(\d+\)", b"MODSEQ", line) for line in tail[1:]],
                         [b"* 3 FETCH (UID 5 FLAGS (\\Answered) MODSEQ)",
                          b"* 8 FETCH (UID 11 FLAGS () MODSEQ)"])

    def test_known_uids_narrow_vanished(self):
        """RFC 7162 §3.2.5: with known-uids, VANISHED (EARLIER) names only
        removed UIDs among them."""
        mark = self.live.highestmodseq
        self.c.command("b STORE 2,8 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("c EXPUNGE").ok()
        r = self.c.command("d SELECT INBOX (QRESYNC (%d %d 5:10 (1:3 5:7)))"
                           % (self.validity, mark)).ok()
        r.has(b"* VANISHED (EARLIER) 8")

    def test_uidvalidity_mismatch_gives_a_plain_select(self):
        """RFC 7162 §3.2.5: with another UIDVALIDITY nothing extra is sent;
        the client sees the new UIDVALIDITY and resynchronises fully."""
        r = self.c.command("d SELECT INBOX (QRESYNC (%d 1 1:10))" % (self.validity + 1)).ok()
        r.lacks(rb"VANISHED")
        r.lacks(rb"FETCH")

    def test_unchanged_folder_resyncs_in_a_few_bytes(self):
        """Issue 8: the resync of an unchanged folder costs only the SELECT
        responses (no FETCH, no VANISHED)."""
        mark = self.live.highestmodseq
        before = len(self.c.transport.value())
        r = self.c.command("d SELECT INBOX (QRESYNC (%d %d 1:10))" % (self.validity, mark))
        r.ok().lacks(rb"FETCH|VANISHED")
        self.assertLess(len(self.c.transport.value()) - before, 500)

    def test_vanished_replaces_expunge(self):
        """RFC 7162 §3.2.10 (A202): once QRESYNC is on, removals are reported
        as VANISHED with UIDs, for our own EXPUNGE and for others' alike."""
        self.c.command("b STORE 3,4,6 +FLAGS.SILENT (\\Deleted)").ok()
        r = self.c.command("A202 EXPUNGE").ok()
        self.assertEqual(r.untagged, [b"* VANISHED 3:4,6"])
        self.successResultOf(self.imap.mailboxes.expunge(self.imap.mailbox, "INBOX", [9]))
        self.c.command("c NOOP").ok().has(b"* VANISHED 9")
        self.c.command("d FETCH 6 (UID)").ok().has(b"* 6 FETCH (UID 10)")

    def test_uid_fetch_vanished(self):
        """RFC 7162 §3.2.6 (A254): UID FETCH ... (CHANGEDSINCE m VANISHED)
        names the UIDs of the set removed since m, then the changes."""
        mark = self.live.highestmodseq
        self.c.command("b STORE 1,4,5 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("c EXPUNGE").ok()
        self.c.command("d UID STORE 6 +FLAGS.SILENT (\\Seen)").ok()
        r = self.c.command("A254 UID FETCH 3:8 (FLAGS) (CHANGEDSINCE %d VANISHED)" % mark)
        r.ok()
        self.assertEqual(r.untagged[0], b"* VANISHED (EARLIER) 4:5")
        self.assertEqual(list(modseqs(r)), [6])
        # non-UID FETCH cannot take VANISHED
        self.c.command("e FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)").bad()

    def test_pruned_tombstones_give_a_complete_answer(self):
        """When the tombstones a client would need were pruned, VANISHED
        (EARLIER) names every UID of its range that is not in the folder:
        more than it needs, never less (RFC 7162 §3.2.5.2)."""
        self.patch(folder_index, "TOMBSTONES_KEPT", 1)
        mark = self.live.highestmodseq
        for uid in (2, 4, 6):
            self.c.command("b UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid).ok()
            self.c.command("c UID EXPUNGE %d" % uid).ok()
        r = self.c.command("d SELECT INBOX (QRESYNC (%d %d 1:10))" % (self.validity, mark))
        r.ok().has(b"* VANISHED (EARLIER) 2,4,6")
        # a client that synchronised after the pruning gets the exact answer
        floor = self.successResultOf(self.live.changes_since(0)).vanished_floor
        r = self.c.command("e SELECT INBOX (QRESYNC (%d %d))" % (self.validity, floor))
        r.ok().has(b"* VANISHED (EARLIER) 6")


class MoveTests(unittest.TestCase):
    def test_move_under_qresync(self):
        """RFC 6851 §4.4 with RFC 7162: MOVE reports the moved messages with
        VANISHED and the tagged OK carries HIGHESTMODSEQ."""
        imap = IMAPHarness(self)
        imap.fill(3)
        c = imap.connect(login=True)
        c.command("a ENABLE QRESYNC").ok()
        c.select()
        r = c.command("b UID MOVE 2 Trash").ok()
        live = imap.mailboxes.live_folder(imap.mailbox, "INBOX")
        self.assertIn(b"[HIGHESTMODSEQ %d]" % live.highestmodseq, r.tagged)
        r.has(b"* VANISHED 2")
        r.lacks(rb"EXPUNGE")
