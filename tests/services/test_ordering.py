"""SORT and THREAD orderings (RFC 5256): base subjects, sort keys and the
two threading algorithms, as pure functions over tables."""

from twisted.trial import unittest

from ktmail.model import MessageInfo
from ktmail.services import ordering
from ktmail.services.ordering import Item, SortKeys, base_subject


def item(position, subject="", sent=None, message_id=None, references=(), size=100,
         arrival=0.0, from_=b""):
    base, reply = base_subject(subject)
    info = MessageInfo(position, f"k{position}", frozenset(), size, arrival, arrival, 1)
    keys = SortKeys(from_=from_, to=b"", cc=b"", subject=ordering.casemap(base), reply=reply,
                    sent=sent, message_id=message_id, references=tuple(references))
    return Item(position, info, keys)


def rendered(roots):
    return b"".join(b"(" + ordering.render(r, lambda i: i.position) + b")" for r in roots)


class BaseSubjectTests(unittest.TestCase):
    def test_table(self):
        """RFC 5256 §2.1 steps 1-6: white space, (fwd) trailers, Re:/Fw:/Fwd:
        leaders with [blobs], a blob before the subject, [fwd: ...]."""
        cases = [
            ("Hello", ("Hello", False)),
            ("  Re:   Hello\t world ", ("Hello world", True)),
            ("RE: re: Fwd: Hello", ("Hello", True)),
            ("Re[2]: Hello", ("Hello", True)),
            ("[ktmail-list] Re: Hello", ("Hello", True)),
            ("[ktmail-list] Hello", ("Hello", False)),
            ("[only a blob]", ("[only a blob]", False)),
            ("Hello (fwd) (FWD)", ("Hello", True)),
            ("[Fwd: Re: Hello]", ("Hello", True)),
            ("Fw: [Fwd: Hello (fwd)]", ("Hello", True)),
            ("Re:", ("", True)),
            (None, ("", False)),
            ("Rejoice: news", ("Rejoice: news", False)),
        ]
        for subject, expected in cases:
            self.assertEqual(base_subject(subject), expected, subject)

    def test_casemap_collation(self):
        """i;ascii-casemap (RFC 4790 §9.2): ASCII letters fold, others do not."""
        self.assertEqual(ordering.casemap("Hello"), ordering.casemap("hELLO"))
        self.assertNotEqual(ordering.casemap("Ärende"), ordering.casemap("äRENDE"))


class SortTests(unittest.TestCase):
    def test_criteria_and_ties(self):
        """RFC 5256 §3 (A283): SORT (SUBJECT REVERSE DATE); equal keys keep
        sequence-number order; a missing Date: falls back to INTERNALDATE."""
        items = [item(1, "b", sent=10), item(2, "b", sent=20), item(3, "a", sent=5),
                 item(4, "Re: a", sent=None, arrival=7), item(5, "A", sent=7)]
        order = [i.position for i in ordering.sort(items, (("SUBJECT", False),
                                                           ("DATE", True)))]
        self.assertEqual(order, [4, 5, 3, 2, 1])

    def test_size_and_arrival(self):
        """SIZE and ARRIVAL keys, REVERSE on one criterion only."""
        items = [item(1, size=30, arrival=3), item(2, size=10, arrival=2),
                 item(3, size=30, arrival=1)]
        self.assertEqual([i.position for i in ordering.sort(items, (("SIZE", True),
                                                                    ("ARRIVAL", False)))],
                         [3, 1, 2])


class ThreadTests(unittest.TestCase):
    def test_ordered_subject(self):
        """RFC 5256 §3 ORDEREDSUBJECT: one thread per base subject, the first
        message the parent of the rest, threads by their first date."""
        items = [item(1, "Plans", sent=10), item(2, "Re: Plans", sent=30),
                 item(3, "Lunch", sent=20), item(4, "RE: plans", sent=40),
                 item(5, "Re: Lunch", sent=50)]
        self.assertEqual(rendered(ordering.thread_ordered_subject(items)),
                         b"(1 (2)(4))(3 5)")

    def test_references_tree(self):
        """RFC 5256 §3 REFERENCES and §4's example shape (3 6 (4 23)(44 7 96)):
        References chains build the tree; siblings go by date."""
        items = [item(1, "a", sent=1, message_id="m3@x"),
                 item(2, "b", sent=2, message_id="m6@x", references=["m3@x"]),
                 item(3, "c", sent=3, message_id="m4@x", references=["m3@x", "m6@x"]),
                 item(4, "d", sent=4, message_id="m44@x", references=["m3@x", "m6@x"]),
                 item(5, "e", sent=5, message_id="m23@x", references=["m6@x", "m4@x"]),
                 item(6, "f", sent=6, message_id="m7@x", references=["m44@x"]),
                 item(7, "g", sent=7, message_id="m96@x", references=["m44@x", "m7@x"]),
                 item(8, "h", sent=0, message_id="m2@x")]
        self.assertEqual(rendered(ordering.thread_references(items)),
                         b"(8)(1 2 (3 5)(4 6 7))")

    def test_references_missing_parent_keeps_siblings_together(self):
        """A parent that is not in the folder becomes a dummy: two replies to
        it stay one thread, ((a)(b)) (RFC 5256 §3 step 3)."""
        items = [item(1, "Re: x", sent=1, message_id="a@x", references=["gone@x"]),
                 item(2, "Re: x", sent=2, message_id="b@x", references=["gone@x"]),
                 item(3, "other", sent=3, message_id="c@x")]
        self.assertEqual(rendered(ordering.thread_references(items)), b"((1)(2))(3)")

    def test_references_merges_by_subject(self):
        """RFC 5256 §3 step 5: roots with one base subject are merged; a
        reply goes under the original; two originals get a dummy parent."""
        items = [item(1, "Budget", sent=1, message_id="a@x"),
                 item(2, "Re: Budget", sent=2, message_id="b@x"),
                 item(3, "Trip", sent=3, message_id="c@x"),
                 item(4, "Trip", sent=4, message_id="d@x")]
        self.assertEqual(rendered(ordering.thread_references(items)), b"(1 2)((3)(4))")

    def test_references_in_reply_to_and_loops(self):
        """In-Reply-To stands in for a missing References; duplicate
        Message-IDs and reference loops do not break the tree."""
        items = [item(1, "q", sent=1, message_id="a@x", references=["b@x"]),
                 item(2, "w", sent=2, message_id="b@x", references=["a@x"]),
                 item(3, "e", sent=3, message_id="a@x")]
        roots = ordering.thread_references(items)
        positions = sorted(rendered(roots).replace(b"(", b" ").replace(b")", b" ").split())
        self.assertEqual(positions, [b"1", b"2", b"3"])
