"""bench/spam_eval.py runs on a corpus laid out as DIR/spam/* and DIR/ham/*."""

import io
import os

from twisted.trial import unittest

from bench import spam_eval
from ktmail.services.spam.rules import GTUBE
from tests.services.spam_samples import CLEAN_BODY, variant


class SpamEvalTests(unittest.TestCase):
    def make_corpus(self):
        root = self.mktemp()
        for label, raw in (("spam", variant(body=CLEAN_BODY + GTUBE)), ("ham", variant())):
            os.makedirs(os.path.join(root, label))
            for i in range(4):
                with open(os.path.join(root, label, f"{label}.{i}"), "wb") as f:
                    f.write(raw)
        return root

    def test_figures(self):
        """The script prints recall, false positives, precision, F1 and speed."""
        out = io.StringIO()
        self.assertEqual(spam_eval.main([self.make_corpus()], out=out), 0)
        text = out.getvalue()
        self.assertIn("spam recall    100.0 %", text)
        self.assertIn("ham false pos. 0.00 %", text)
        self.assertIn("F1             1.000", text)
        self.assertIn("messages/second", text)

    def test_train_half_says_so(self):
        """With --train-half it trains on one half and says the figures are for
        the other half."""
        out = io.StringIO()
        spam_eval.main([self.make_corpus(), "--train-half"], out=out)
        text = out.getvalue()
        self.assertIn("figures below are for the OTHER half only", text)
        self.assertIn("heuristic rules + Bayes (trained on the other half)", text)
        self.assertIn("messages       2 spam, 2 ham", text)
