"""Whatever bytes arrive, the spam filter parses and scores them without
raising (it runs on every inbound message)."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from ktmail.services.spam import RuleSet, parse_bytes, score
from ktmail.services.spam.bayes import tokenize_hashed
from tests.services.spam_samples import newsletter, variant, with_attachment

SEEDS = [variant(), newsletter(), with_attachment("a.exe", b"MZ" + bytes(300))]


def mutate(seed, cuts, junk):
    data = bytearray(seed)
    for position, piece in zip(cuts, junk):
        at = position % (len(data) + 1)
        data[at:at + len(piece)] = piece
    return bytes(data)


class FuzzTests(unittest.TestCase):
    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=4000))
    def test_random_bytes(self, data):
        """Random bytes parse, tokenize and score."""
        message = parse_bytes(data)
        tokenize_hashed(message)
        self.assertGreaterEqual(score(message, RuleSet()).required, 0)

    @settings(max_examples=150, deadline=None)
    @given(st.sampled_from(SEEDS), st.lists(st.integers(0, 10**6), max_size=8),
           st.lists(st.binary(min_size=1, max_size=40), max_size=8))
    def test_damaged_messages(self, seed, cuts, junk):
        """Real messages with bytes overwritten anywhere (headers, boundaries,
        base64) still parse, tokenize and score."""
        message = parse_bytes(mutate(seed, cuts, junk))
        tokenize_hashed(message)
        score(message, RuleSet())
