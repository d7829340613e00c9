"""The IMAP command grammar (RFC 3501 §9) and the response syntax: pure
functions, tested with tables."""

import datetime

from twisted.trial import unittest

from ktmail.protocols.imap import fetch, parser, wire
from ktmail.protocols.imap.parser import CommandReader, Literal, ParseError
from ktmail.services import search as q


def reader(*segments):
    return CommandReader([s.encode() if isinstance(s, str) else s for s in segments])


class ReaderTests(unittest.TestCase):
    def test_strings(self):
        """RFC 3501 §4.3: atoms, quoted strings with \\" and \\\\ escapes, and
        literals wherever a string may be."""
        r = reader('abc "x \\"y\\" \\\\z" {3}', Literal(3, data=b"lit"), " NIL")
        self.assertEqual(r.astring(), b"abc")
        r.space()
        self.assertEqual(r.astring(), b'x "y" \\z')
        r.space()
        self.assertEqual(r.astring(), b"lit")
        r.space()
        self.assertIsNone(r.nstring())
        self.assertTrue(r.at_end())

    def test_bad_strings(self):
        """Unterminated quotes and bad escapes are syntax errors (BAD)."""
        with self.assertRaises(ParseError):
            reader('"abc').astring()
        with self.assertRaises(ParseError):
            reader('"a\\bc"').astring()
        with self.assertRaises(ParseError):
            reader("(x").astring()

    def test_spooled_literal_is_no_string(self):
        """A literal kept in a spool file (an APPEND message) cannot stand
        where a short string is expected."""
        r = reader("{100000}", Literal(100000, spool=object()), "")
        with self.assertRaises(ParseError):
            r.astring()

    def test_mailbox_names(self):
        """RFC 3501 §5.1.3: names arrive in modified UTF-7; INBOX in any case
        is INBOX; UTF-8 from clients that do not encode is accepted."""
        self.assertEqual(parser.decode_mailbox(b"Kvitton/F&APY-rs&AOQ-kring"),
                         "Kvitton/Försäkring")
        self.assertEqual(parser.decode_mailbox(b"inbox"), "INBOX")
        self.assertEqual(parser.decode_mailbox("Försäkring".encode()), "Försäkring")
        with self.assertRaises(ParseError):
            parser.decode_mailbox(b"F&APY")

    def test_sequence_sets(self):
        """RFC 3501 §9 sequence-set: numbers, ranges either way round, ``*``;
        resolved against the largest number in use and merged."""
        s = parser.sequence_set(reader("4:2,7,9:*,1"))
        self.assertEqual(s.resolved(12), [(1, 4), (7, 7), (9, 12)])
        self.assertEqual(parser.sequence_set(reader("*")).resolved(0), [])
        self.assertEqual(parser.sequence_set(reader("5:*")).resolved(3), [(3, 5)])
        for bad in ("0", "1:0", "01", "1,,2", "a"):
            with self.assertRaises(ParseError, msg=bad):
                parser.sequence_set(reader(bad))

    def test_long_sequence_set_is_linear(self):
        """A 60 KiB set of single numbers parses and resolves quickly
        (Twisted's MessageSet is quadratic there, TWISTED-NOTES §9)."""
        text = ",".join(str(n) for n in range(1, 20000, 2))
        s = parser.sequence_set(reader(text))
        self.assertEqual(len(s.resolved(20000)), 10000)

    def test_flags(self):
        """RFC 3501 §2.3.2: system flags are canonical whatever their case;
        keywords are atoms; unknown system flags are refused."""
        self.assertEqual(parser.flag_list(reader("(\\seen \\DELETED $Forwarded)")),
                         ["\\Seen", "\\Deleted", "$Forwarded"])
        self.assertEqual(parser.flag_list(reader("()")), [])
        with self.assertRaises(ParseError):
            parser.flag_list(reader("(\\Bogus)"))

    def test_date_time(self):
        """RFC 3501 date-time (APPEND) with its zone, day space-padded or not."""
        self.assertEqual(parser.date_time(reader('"17-Jul-1996 02:44:25 -0700"')),
                         wire.utc_seconds(1996, 7, 17, 9, 44, 25))
        self.assertEqual(parser.date_time(reader('" 7-Jul-1996 02:44:25 +0000"')),
                         wire.utc_seconds(1996, 7, 7, 2, 44, 25))
        with self.assertRaises(ParseError):
            parser.date_time(reader('"17-Foo-1996 02:44:25 -0700"'))

    def test_dates(self):
        """RFC 3501 date (SEARCH), quoted or not."""
        self.assertEqual(parser.date(reader("1-Feb-1994")), datetime.date(1994, 2, 1))
        self.assertEqual(parser.date(reader('"01-feb-1994"')), datetime.date(1994, 2, 1))
        with self.assertRaises(ParseError):
            parser.date(reader("31-Feb-1994"))


class FetchAttributeTests(unittest.TestCase):
    def atts(self, text):
        return parser.fetch_atts(reader(text))

    def test_macros(self):
        """RFC 3501 §6.4.5: ALL, FAST and FULL."""
        self.assertEqual([i.name for i in self.atts("FAST")],
                         ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
        self.assertEqual([i.name for i in self.atts("full")][-1], "BODY")

    def test_sections(self):
        """RFC 3501 §6.4.5 sections, with PEEK and partials."""
        items = self.atts("(UID BODY.PEEK[HEADER.FIELDS (Subject From)] BODY[1.2.MIME] "
                          "BODY[]<0.100> BODY[TEXT] RFC822.SIZE)")
        self.assertEqual(items[1].section, parser.Section((), "HEADER.FIELDS",
                                                          (b"Subject", b"From")))
        self.assertTrue(items[1].peek)
        self.assertFalse(items[1].sets_seen)
        self.assertEqual(items[2].section, parser.Section((1, 2), "MIME"))
        self.assertTrue(items[2].sets_seen)
        self.assertEqual(items[3].partial, (0, 100))
        self.assertEqual(fetch.body_label(items[3]), b"BODY[]<0>")
        self.assertEqual(fetch.body_label(items[1]),
                         b"BODY[HEADER.FIELDS (Subject From)]")

    def test_bad_attributes(self):
        """Unknown attributes and malformed sections are syntax errors."""
        for bad in ("BOGUS", "BODY[MIME]", "BODY[1.]", "BODY[HEADER.FIELDS ()]",
                    "BODY[]<5>", "(FLAGS", "BODY[0]"):
            with self.assertRaises(ParseError, msg=bad):
                self.atts(bad)


class SearchProgramTests(unittest.TestCase):
    def program(self, text):
        program = parser.search_program(reader(text))
        return program.charset, program.query

    def test_every_rfc3501_key(self):
        """RFC 3501 §6.4.4: the whole key set parses into the query model."""
        text = ("ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY y CC z DELETED DRAFT FLAGGED "
                "FROM a HEADER X-Foo b KEYWORD $k LARGER 10 NEW NOT SEEN OLD ON 2-Feb-1994 "
                "OR SEEN UNSEEN RECENT SEEN SENTBEFORE 1-Jan-2000 SENTON 1-Jan-2000 "
                "SENTSINCE 1-Jan-2000 SINCE 1-Jan-2000 SMALLER 9 SUBJECT s TEXT t TO u "
                "UID 1:5 UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $j UNSEEN 1,3:*")
        charset, query = self.program(text)
        self.assertIsNone(charset)
        self.assertEqual(len(query.items), 36)
        self.assertIn(q.HeaderHas("x-foo", "b"), query.items)
        self.assertIn(q.InSet(((1, 1), (3, None)), by_uid=False), query.items)
        self.assertIn(q.Or(q.FlagIs("\\Seen"), q.FlagIs("\\Seen", False)), query.items)

    def test_charset_and_literals(self):
        """CHARSET UTF-8 with a literal search string; other charsets are
        refused with BADCHARSET (RFC 3501 §6.4.4)."""
        program = parser.search_program(reader(
            "CHARSET UTF-8 SUBJECT {6}", Literal(6, data="möte".encode()), ""))
        self.assertEqual((program.charset, program.query),
                         ("UTF-8", q.HeaderHas("subject", "möte")))
        with self.assertRaises(parser.BadCharset):
            self.program("CHARSET KOI8-R ALL")

    def test_nesting(self):
        """Parenthesised lists and nested OR/NOT."""
        _, query = self.program("(OR FROM a (NOT TO b)) SEEN")
        self.assertEqual(query, q.And((q.Or(q.HeaderHas("from", "a"),
                                            q.Not(q.HeaderHas("to", "b"))),
                                       q.FlagIs("\\Seen"))))

    def test_errors(self):
        """Unknown keys, missing arguments and runaway nesting are BAD."""
        for bad in ("BOGUS", "FROM", "OR SEEN", "LARGER x", "(", "()",
                    "(" * 200 + "ALL" + ")" * 200):
            with self.assertRaises(ParseError, msg=bad[:20]):
                self.program(bad)


class ListCommandTests(unittest.TestCase):
    def test_plain_and_extended(self):
        """RFC 3501 LIST and the RFC 5258/6154 forms with selection and
        return options and several patterns."""
        self.assertEqual(parser.list_command(reader('"" *')),
                         parser.ListCommand("", ("*",)))
        c = parser.list_command(reader('(SPECIAL-USE) "" ("*" %) RETURN (SUBSCRIBED)'))
        self.assertEqual(c.selection, {"SPECIAL-USE"})
        self.assertEqual(c.patterns, ("*", "%"))
        self.assertEqual(c.returns, {"SUBSCRIBED"})
        c = parser.list_command(reader('"" "Kvitton/F&APY-*"'))
        self.assertEqual(c.patterns, ("Kvitton/Fö*",))
        with self.assertRaises(ParseError):
            parser.list_command(reader('(RECURSIVEMATCH) "" *'))


class WireTests(unittest.TestCase):
    def test_strings(self):
        """Quoted only for 7-bit text without CR/LF; else a literal (RFC 3501 §4.3)."""
        self.assertEqual(wire.string('a "b" \\'), b'"a \\"b\\" \\\\"')
        self.assertEqual(wire.string("Möte"), "{5}\r\nMöte".encode())
        self.assertEqual(wire.string(b"a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(wire.nstring(None), b"NIL")
        self.assertEqual(wire.astring("INBOX"), b"INBOX")
        self.assertEqual(wire.astring("My folder"), b'"My folder"')

    def test_mailbox_names_are_modified_utf7(self):
        """Names go out in modified UTF-7 (RFC 3501 §5.1.3), quoted if needed."""
        self.assertEqual(wire.mailbox("Kvitton/Försäkring"), b"Kvitton/F&APY-rs&AOQ-kring")
        self.assertEqual(wire.mailbox("A & B"), b'"A &- B"')
        self.assertEqual(wire.mailbox("inbox"), b"INBOX")

    def test_number_sets(self):
        """RFC 4315 uid-set: ascending runs become ranges."""
        self.assertEqual(wire.number_set([1, 2, 3, 5, 7, 8]), b"1:3,5,7:8")
        self.assertEqual(wire.number_set([]), b"")

    def test_dates_and_flags(self):
        """INTERNALDATE in RFC 3501 date-time form; flag lists in a fixed order."""
        self.assertEqual(wire.internal_date(wire.utc_seconds(2026, 11, 7, 9, 5, 1)),
                         b'"07-Nov-2026 09:05:01 +0000"')
        self.assertEqual(wire.flag_list({"$x", "\\Seen", "\\Answered"}, recent=True),
                         b"(\\Answered \\Seen $x \\Recent)")

    def test_response_text_is_ascii(self):
        """resp-text is one line of ASCII whatever the error text holds."""
        self.assertEqual(wire.text("Ingen mapp 'Försäkring'\r\nX"), b"Ingen mapp 'F?rs?kring' X")


class ExtensionGrammarTests(unittest.TestCase):
    """The grammar of issue 8's extensions (RFC 7162, 4731, 5256, 5258,
    5819, 3516), parsed into values."""

    def test_condstore_and_qresync_arguments(self):
        """RFC 7162 §3.1.3, §3.1.4, §3.2.5, §3.2.6 (with the RFC's examples)."""
        self.assertEqual(parser.fetch_modifiers(reader(" (CHANGEDSINCE 12345 VANISHED)")),
                         parser.FetchModifiers(12345, True))
        self.assertEqual(parser.fetch_modifiers(reader("")), parser.FetchModifiers())
        params = parser.select_params(reader(
            " (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:3 41,43:44)))"))
        self.assertEqual((params.qresync.uidvalidity, params.qresync.modseq),
                         (67890007, 20050715194045000))
        self.assertEqual(params.qresync.known_uids.ranges, ((41, 41), (43, 211), (214, 541)))
        self.assertEqual(params.qresync.seq_match[1].ranges, ((41, 41), (43, 44)))
        self.assertTrue(parser.select_params(reader(" (CONDSTORE)")).condstore)
        action = parser.store_action(reader("(UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)"))
        self.assertEqual((action.unchanged_since, action.mode, action.silent),
                         (320162338, "add", True))
        for bad in (" (VANISHED)", " (CHANGEDSINCE)", " (CHANGEDSINCE 0)", " (FOO 1)"):
            with self.assertRaises(ParseError, msg=bad):
                parser.fetch_modifiers(reader(bad))

    def test_esearch_sort_thread(self):
        """RFC 4731 §3.1 RETURN options; RFC 5256 §3 SORT and THREAD programs."""
        program = parser.search_program(reader("RETURN (MIN COUNT) FLAGGED"))
        self.assertEqual(program.returns, {"MIN", "COUNT"})
        self.assertEqual(parser.search_program(reader("RETURN () ALL")).returns, {"ALL"})
        sort = parser.sort_program(reader("(SUBJECT REVERSE DATE) UTF-8 ALL"))
        self.assertEqual(sort.criteria, (("SUBJECT", False), ("DATE", True)))
        self.assertEqual(parser.thread_program(reader("REFERENCES US-ASCII ALL"))[0],
                         "REFERENCES")
        with self.assertRaises(ParseError):
            parser.sort_program(reader("RETURN (SAVE) (DATE) UTF-8 ALL"))

    def test_list_status_and_binary(self):
        """RFC 5819 RETURN (STATUS (...)); RFC 3516 BINARY sections."""
        command = parser.list_command(reader('"" % RETURN (STATUS (MESSAGES UNSEEN))'))
        self.assertEqual(command.status_items, ("MESSAGES", "UNSEEN"))
        items = parser.fetch_atts(reader("(BINARY.PEEK[1.2]<0.100> BINARY.SIZE[3])"))
        self.assertEqual(items[0], parser.FetchItem("BINARY[]", parser.Section((1, 2)), True,
                                                    (0, 100)))
        self.assertEqual(items[1].name, "BINARY.SIZE")
        self.assertFalse(items[0].sets_seen or items[1].sets_seen)

    def test_sets_on_the_wire(self):
        """Sequence sets written back: ascending runs only when order matters
        (RFC 5267 ESORT), ranges as they are."""
        self.assertEqual(wire.ordered_set([3, 1, 2, 4, 5, 9]), b"3,1:2,4:5,9")
        self.assertEqual(wire.range_set([(1, 3), (5, 5)]), b"1:3,5")
