"""SORT, ESORT and THREAD over IMAP (RFC 5256, RFC 5267 §3): transcripts
after the RFCs' examples, keys from the index's cached summaries."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


def message(subject, date, sender, msgid, refs=None):
    head = (f"From: {sender}\r\nTo: list@example.org\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{msgid}>\r\n")
    if refs:
        head += f"References: {refs}\r\n"
    return (head + "\r\nbody\r\n").encode()


class SortThreadTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)

        def deliver(data):
            self.imap.clock.advance(60)
            self.imap.deliver(data)
        deliver(message("Budget", "Mon, 6 Mar 2000 10:00:00 +0000", "Pia <pia@x.fi>", "1@x"))
        deliver(message("Re: Budget", "Mon, 6 Mar 2000 12:00:00 +0000", "bo@x.fi", "2@x",
                        "<1@x>"))
        deliver(message("[team] Trip", "Sun, 5 Mar 2000 09:00:00 +0000", "Cai <cai@x.fi>",
                        "3@x"))
        deliver(message("Re: Budget", "Tue, 7 Mar 2000 08:00:00 +0000", "Ann <ann@x.fi>",
                        "4@x", "<1@x> <2@x>"))
        deliver(message("Trip", "Tue, 7 Mar 2000 09:00:00 +0000", "dan@x.fi", "5@x"))
        self.c = self.imap.connect(login=True)
        self.c.select()

    def test_advertised(self):
        """SORT, ESORT and both THREAD algorithms are advertised."""
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        for cap in (b"SORT", b"ESORT", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES"):
            self.assertIn(cap, caps)

    def test_sort_subject(self):
        """RFC 5256 §3 (A282): SORT (SUBJECT) by base subject, ties by number."""
        r = self.c.command("A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994").ok()
        r.has(b"* SORT 1 2 4 3 5")

    def test_sort_subject_reverse_date(self):
        """RFC 5256 §3 (A283): SORT (SUBJECT REVERSE DATE)."""
        r = self.c.command("A283 SORT (SUBJECT REVERSE DATE) UTF-8 ALL").ok()
        r.has(b"* SORT 4 2 1 5 3")

    def test_sort_nothing_found(self):
        """RFC 5256 §3 (A284): an empty result is a bare * SORT."""
        r = self.c.command('A284 SORT (SUBJECT) US-ASCII TEXT "not in mailbox"').ok()
        r.has(b"* SORT")

    def test_sort_from_and_uid_sort(self):
        """FROM sorts on the first From address's mailbox (case-mapped);
        UID SORT answers with UIDs."""
        self.c.command("x STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("y EXPUNGE").ok()
        self.c.command("a SORT (FROM) UTF-8 ALL").ok().has(b"* SORT 3 1 2 4")
        self.c.command("b UID SORT (REVERSE ARRIVAL) UTF-8 ALL").ok().has(b"* SORT 5 4 3 2")

    def test_sort_errors(self):
        """Unknown criteria and charsets: BAD and NO [BADCHARSET]."""
        self.c.command("a SORT (BOGUS) UTF-8 ALL").bad()
        self.c.command("b SORT () UTF-8 ALL").bad()
        self.c.command("c SORT (DATE) KOI8-R ALL").no("BADCHARSET")
        self.c.command("d SORT (DATE) ALL").no("BADCHARSET")

    def test_esort(self):
        """RFC 5267 §3.2: SORT RETURN (...) answers ESEARCH in sort order:
        MIN and MAX are the first and last sorted, ALL keeps the order."""
        r = self.c.command("A1 SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL").ok()
        r.has(b'* ESEARCH (TAG "A1") MIN 3 MAX 5 COUNT 5 ALL 3,1:2,4:5')
        r = self.c.command("A2 UID SORT RETURN (COUNT) (DATE) UTF-8 DRAFT").ok()
        r.has(b'* ESEARCH (TAG "A2") UID COUNT 0')

    def test_thread_orderedsubject(self):
        """RFC 5256 §3 ORDEREDSUBJECT (A283): grouped by base subject, the
        first message the parent, threads by their first date."""
        r = self.c.command("A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000").ok()
        r.has(b"* THREAD (3 5)(1 (2)(4))")

    def test_thread_references(self):
        """RFC 5256 §3 REFERENCES (A284): References build the tree, roots
        with one base subject are merged (two originals under a dummy)."""
        r = self.c.command("A284 THREAD REFERENCES UTF-8 SINCE 5-MAR-2000").ok()
        r.has(b"* THREAD ((3)(5))(1 2 4)")
        r = self.c.command("A285 UID THREAD REFERENCES UTF-8 NOT SUBJECT Trip").ok()
        r.has(b"* THREAD (1 2 4)")
        self.c.command("A286 THREAD REFERENCES UTF-8 DRAFT").ok().has(b"* THREAD")
        self.c.command("A287 THREAD BOGUS UTF-8 ALL").bad()

    def test_keys_are_kept(self):
        """Sort keys are built once per message and kept on the live folder."""
        self.c.command("a SORT (SUBJECT) UTF-8 ALL").ok()
        live = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX")
        self.assertEqual(sorted(live.sort_keys), [1, 2, 3, 4, 5])
        calls = []
        original = live.details
        live.details = lambda *a, **k: calls.append(a) or original(*a, **k)
        self.c.command("b SORT (FROM) UTF-8 ALL").ok()
        self.assertEqual(calls, [])

    def test_sort_with_modseq(self):
        """RFC 7162 §3.1.9: a SORT with a MODSEQ key adds the highest
        mod-sequence of the result, as SEARCH does."""
        mark = self.imap.mailboxes.live_folder(self.imap.mailbox, "INBOX").highestmodseq
        self.c.command("b STORE 2 +FLAGS.SILENT (\\Flagged)").ok()
        r = self.c.command("c SORT (DATE) UTF-8 MODSEQ %d" % (mark + 1)).ok()
        r.has(b"* SORT 2 (MODSEQ %d)" % (mark + 1))
