"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): search results as MIN, MAX,
COUNT and sequence sets, and the saved result ``$`` (transcripts after the
RFCs' examples)."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class EsearchTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(12)
        self.c = self.imap.connect(login=True)
        self.c.select()
        self.c.command("f STORE 2,10,11 +FLAGS.SILENT (\\Flagged)").ok()

    def test_advertised(self):
        """ESEARCH and SEARCHRES are advertised after login."""
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        self.assertIn(b"ESEARCH", caps)
        self.assertIn(b"SEARCHRES", caps)

    def test_min_and_count(self):
        """RFC 4731 §3.1 (A282): RETURN (MIN COUNT)."""
        r = self.c.command('A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 '
                           'NOT FROM "Smith"').ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A282") MIN 2 COUNT 3'])

    def test_empty_return_means_all(self):
        """RFC 4731 §3.1 (A283): RETURN () is ALL, as a sequence set."""
        r = self.c.command('A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994 '
                           'NOT FROM "Smith"').ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A283") ALL 2,10:11'])

    def test_nothing_found(self):
        """RFC 4731 §3.1: no MIN, MAX or ALL when nothing matches; COUNT 0."""
        r = self.c.command("A284 SEARCH RETURN (MIN MAX ALL COUNT) DRAFT").ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A284") COUNT 0'])

    def test_uid_search(self):
        """RFC 4731 §3.1 (A285): UID SEARCH answers with UIDs and says UID."""
        self.c.command("x STORE 1 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("y EXPUNGE").ok()
        r = self.c.command("A285 UID SEARCH RETURN (MIN MAX) 1:5000").ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A285") UID MIN 2 MAX 12'])

    def test_bad_option(self):
        """An unknown RETURN option is BAD."""
        self.c.command("a SEARCH RETURN (BOGUS) ALL").bad()


class SearchresTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.imap.fill(12)
        self.c = self.imap.connect(login=True)
        self.c.select()
        self.c.command("f STORE 2,10,11 +FLAGS.SILENT (\\Flagged)").ok()

    def test_save_then_fetch(self):
        """RFC 5182 §2.1 (A282/A283): SAVE alone answers no ESEARCH; ``$``
        then stands for the result in FETCH."""
        r = self.c.command('A282 SEARCH RETURN (SAVE) FLAGGED SINCE 1-Feb-1994 '
                           'NOT FROM "Smith"').ok()
        self.assertEqual(r.untagged, [])
        r = self.c.command("A283 FETCH $ (UID)").ok()
        self.assertEqual(r.untagged, [b"* 2 FETCH (UID 2)", b"* 10 FETCH (UID 10)",
                                      b"* 11 FETCH (UID 11)"])

    def test_save_with_min_keeps_only_min(self):
        """RFC 5182 §2.1: SAVE with MIN (no ALL, no COUNT) saves only the
        minimum, and still returns it."""
        r = self.c.command("A300 SEARCH RETURN (SAVE MIN) FLAGGED").ok()
        self.assertEqual(r.untagged, [b'* ESEARCH (TAG "A300") MIN 2'])
        r = self.c.command("A301 UID FETCH $ (FLAGS)").ok()
        self.assertEqual(r.untagged, [b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))"])

    def test_dollar_in_search_and_copy(self):
        """RFC 5182 §2.1: ``$`` in a later SEARCH and in UID COPY."""
        self.c.command("a UID SEARCH RETURN (SAVE) FLAGGED").ok()
        r = self.c.command("b SEARCH $ SMALLER 4096 NOT 10").ok()
        r.has(b"* SEARCH 2 11")
        r = self.c.command("c UID COPY $ Trash").ok("[COPYUID")
        status = self.c.command("d STATUS Trash (MESSAGES)").ok()
        status.has(b"* STATUS Trash (MESSAGES 3)")

    def test_expunged_messages_leave_the_saved_result(self):
        """RFC 5182 §2.1: expunged messages are removed from ``$``."""
        self.c.command("a SEARCH RETURN (SAVE) FLAGGED").ok()
        self.c.command("b STORE 10 +FLAGS.SILENT (\\Deleted)").ok()
        self.c.command("c EXPUNGE").ok()
        r = self.c.command("d UID FETCH $ (UID)").ok()
        self.assertEqual(r.untagged, [b"* 2 FETCH (UID 2)", b"* 10 FETCH (UID 11)"])

    def test_reselect_empties_the_saved_result(self):
        """RFC 5182 §2.1: SELECT starts with an empty ``$``."""
        self.c.command("a SEARCH RETURN (SAVE) FLAGGED").ok()
        self.c.select()
        r = self.c.command("b FETCH $ (UID)").ok()
        self.assertEqual(r.untagged, [])

    def test_dollar_before_any_save(self):
        """``$`` with nothing saved is empty, not an error."""
        self.c.command("a SEARCH $").ok().has(b"* SEARCH")
