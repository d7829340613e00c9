"""Pure sliding-window decisions, as a table."""

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.services.ratelimit import Decision, SlidingWindowLimiter, Window, check
from ktmail.store.memory import MemoryStore

HOUR = Window(limit=5, seconds=3600)


class CheckTests(unittest.TestCase):
    def test_table(self):
        """(events, now, wanted) -> decision, for the interesting edges."""
        table = [
            ([], 0, 1, Decision(True, 0, 4, None)),
            ([(0, 4)], 10, 1, Decision(True, 4, 0, None)),
            ([(0, 5)], 10, 1, Decision(False, 5, 0, 3600)),
            # events leave the window exactly window.seconds after they happened
            ([(0, 5)], 3600, 1, Decision(True, 0, 4, None)),
            ([(0, 2), (100, 3)], 200, 1, Decision(False, 5, 0, 3600)),
            ([(0, 2), (100, 3)], 200, 3, Decision(False, 5, 0, 3700)),
            ([(0, 1)], 10, 6, Decision(False, 1, 0, None)),  # never fits
            ([(0, 1), (5, 1)], 10, 4, Decision(False, 2, 0, 3600)),
        ]
        for events, now, wanted, expected in table:
            self.assertEqual(check(events, now, HOUR, wanted), expected,
                             (events, now, wanted))


class LimiterTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_take_records_only_when_allowed(self):
        """take() records events that fit and refuses the one that does not,
        until the clock moves the window on."""
        clock = task.Clock()
        limiter = SlidingWindowLimiter(MemoryStore(), HOUR)
        for i in range(5):
            self.assertTrue((yield limiter.take("k", clock.seconds())).allowed)
            clock.advance(60)
        refused = yield limiter.take("k", clock.seconds())
        self.assertFalse(refused.allowed)
        self.assertEqual(refused.retry_at, 3600)
        clock.advance(3600 - clock.seconds())
        self.assertTrue((yield limiter.take("k", clock.seconds())).allowed)

    def test_two_limiters_over_one_store_cannot_share_the_last_slot(self):
        """Two nodes (two limiters) over one store racing for the last slot:
        the store's atomic take_event lets exactly one have it."""
        store = MemoryStore()
        node_a = SlidingWindowLimiter(store, Window(limit=1, seconds=60))
        node_b = SlidingWindowLimiter(store, Window(limit=1, seconds=60))
        first = self.successResultOf(node_a.take("k", 0))
        second = self.successResultOf(node_b.take("k", 0))
        self.assertEqual((first.allowed, second.allowed), (True, False))
        self.assertEqual(second.retry_at, 60)
