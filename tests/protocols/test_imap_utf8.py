"""UTF8=ACCEPT (RFC 6855): once enabled, mailbox names travel as UTF-8 both
ways and APPEND takes messages with UTF-8 header fields (UTF8 (~{n}))."""

from twisted.trial import unittest

from tests.protocols.imap_harness import IMAPHarness


class Utf8AcceptTests(unittest.TestCase):
    def setUp(self):
        self.imap = IMAPHarness(self)
        self.c = self.imap.connect(login=True)
        self.c.command("a CREATE Kvitton/F&APY-rs&AOQ-kring").ok()

    def test_advertised_and_enabled(self):
        """RFC 6855 §3: UTF8=ACCEPT is advertised and ENABLE turns it on."""
        caps = self.c.command("a CAPABILITY").ok().untagged[0].split()
        self.assertIn(b"UTF8=ACCEPT", caps)
        self.c.command("b ENABLE UTF8=ACCEPT").ok().has(b"* ENABLED UTF8=ACCEPT")

    def test_names_before_and_after(self):
        """Before ENABLE names are modified UTF-7; after it, UTF-8 in both
        directions (RFC 6855 §3), and '&' is an ordinary character."""
        self.c.command('b LIST "" Kvitton/*').ok().has(
            b'* LIST (\\HasNoChildren) "/" Kvitton/F&APY-rs&AOQ-kring')
        self.c.command("c ENABLE UTF8=ACCEPT").ok()
        self.c.command('d LIST "" Kvitton/*').ok().has(
            '* LIST (\\HasNoChildren) "/" "Kvitton/Försäkring"'.encode())
        self.c.command('e STATUS "Kvitton/Försäkring" (MESSAGES)'.encode()).ok().has(
            '* STATUS "Kvitton/Försäkring" (MESSAGES 0)'.encode())
        self.c.command("f CREATE R&D").ok()
        self.c.command('g LIST "" R*').ok().has(b'* LIST (\\HasNoChildren) "/" R&D')

    def test_append_utf8_message(self):
        """RFC 6855 §4: APPEND ... UTF8 (~{n}) stores a message whose header
        fields are UTF-8; without ENABLE the UTF8 form is BAD."""
        data = "Subject: Hyvää päivää\r\nFrom: Åsa <åsa@exempel.se>\r\n\r\nHej\r\n".encode()
        self.c.command(b"a APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(data), data)).bad()
        self.c.command("b ENABLE UTF8=ACCEPT").ok()
        r = self.c.command(b"c APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(data), data))
        r.ok("[APPENDUID")
        self.c.select()
        r = self.c.command("d FETCH 1 (BODY.PEEK[])").ok()
        self.assertIn(data, r.untagged[0])
        self.c.command('e SEARCH SUBJECT "päivää"'.encode()).ok().has(b"* SEARCH 1")
