"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and STATUS=SIZE
(RFC 8438): transcripts after the RFCs' examples."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class ListExtendedTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = c = self.imap.connect(login=True)
        for name in ("Fruit/Apple", "Fruit/Banana", "Tofu", "Vegetable/Broccoli"):
            c.command(f"x CREATE {name}").ok()
        for name in ("Fruit/Banana", "Vegetable", "Gone"):
            c.command(f"y SUBSCRIBE {name}").ok()

    def test_advertised(self):
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        for cap in (b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE"):
            self.assertIn(cap, caps)

    def test_subscribed_selection(self):
        """RFC 5258 §5 example 3: (SUBSCRIBED) lists subscribed names, those
        that no longer exist as \\NonExistent."""
        r = self.c.command('A03 LIST (SUBSCRIBED) "" "*"').ok()
        self.assertEqual(r.untagged, [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
            b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" Fruit/Banana',
            b'* LIST (\\NonExistent \\Subscribed) "/" Gone',
            b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent',
            b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "/" Spam',
            b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash',
            b'* LIST (\\HasChildren \\Subscribed) "/" Vegetable'])

    def test_recursivematch(self):
        """RFC 5258 §5 example 5 (C04): with RECURSIVEMATCH a parent whose
        child is subscribed comes with CHILDINFO, subscribed or not."""
        r = self.c.command('C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"').ok()
        r.has(b'* LIST (\\HasChildren) "/" Fruit ("CHILDINFO" ("SUBSCRIBED"))')
        r.has(b'* LIST (\\HasChildren \\Subscribed) "/" Vegetable')
        r.lacks(rb"Tofu|Banana")
        self.c.command('C05 LIST (RECURSIVEMATCH) "" "%"').bad()

    def test_multiple_patterns(self):
        """RFC 5258 §5 example 9: several patterns in one LIST."""
        r = self.c.command('A10 LIST "" ("INBOX" "Drafts" "Fruit/%")').ok()
        self.assertEqual(r.untagged, [
            b'* LIST (\\HasNoChildren) "/" INBOX',
            b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
            b'* LIST (\\HasNoChildren) "/" Fruit/Apple',
            b'* LIST (\\HasNoChildren) "/" Fruit/Banana'])

    def test_return_children_and_remote(self):
        """RFC 5258 §4: RETURN (CHILDREN) and the REMOTE selection option
        (no remote folders here) are accepted."""
        r = self.c.command('a LIST (REMOTE) "" "Fruit" RETURN (CHILDREN)').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\HasChildren) "/" Fruit'])

    def test_list_status(self):
        """RFC 5819 §2 (A01): RETURN (STATUS (...)) adds a STATUS line after
        each folder's LIST line."""
        self.imap.fill(3)
        r = self.c.command('A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN SIZE))').ok()
        i = r.untagged.index(b'* LIST (\\HasNoChildren) "/" INBOX')
        self.assertRegex(r.untagged[i + 1].decode(),
                         r"^\* STATUS INBOX \(MESSAGES 3 UNSEEN 3 SIZE \d+\)$")
        j = r.untagged.index(b'* LIST (\\HasChildren) "/" Fruit')
        self.assertEqual(r.untagged[j + 1], b"* STATUS Fruit (MESSAGES 0 UNSEEN 0 SIZE 0)")
        r = self.c.command('A02 LIST (SUBSCRIBED) "" Gone RETURN (STATUS (MESSAGES))').ok()
        self.assertEqual(r.untagged, [b'* LIST (\\NonExistent \\Subscribed) "/" Gone'])
        self.c.command('A03 LIST "" % RETURN (STATUS (BOGUS))').bad()

    def test_status_size(self):
        """RFC 8438 §3: STATUS SIZE is the folder's total message size."""
        stored = self.imap.fill(2)
        total = sum(s.info.size for s in stored)
        r = self.c.command("a STATUS INBOX (SIZE MESSAGES)").ok()
        r.has(b"* STATUS INBOX (SIZE %d MESSAGES 2)" % total)
