"""Contract tests of ISpamStatsStore, run against the SQLite store and the
in-memory fake alike."""

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from ktmail.store import ISpamStatsStore
from ktmail.store.memory import MemorySpamStatsStore
from ktmail.store.sqlite import Database, InlineRunner, SQLiteSpamStatsStore
from tests import postgresql


class SpamStatsContract:
    """Mixed into a TestCase that sets ``self.store``."""

    def test_provides_interface(self):
        """The implementation declares and implements ISpamStatsStore."""
        self.assertTrue(verifyObject(ISpamStatsStore, self.store))

    @defer.inlineCallbacks
    def test_empty_scope_knows_nothing(self):
        """A scope that never learned anything has zero totals and no tokens."""
        stats = yield self.store.load_stats([0, 7], [1, 2, 3])
        self.assertEqual(stats, {0: (0, 0, {}), 7: (0, 0, {})})

    @defer.inlineCallbacks
    def test_learn_counts_per_scope(self):
        """Learning counts the message's tokens in every scope given, and
        load_stats returns only the tokens asked for that were seen."""
        outcome = yield self.store.learn([0, 7], "m1", [10, 20, -5], True)
        self.assertEqual(outcome, {0: "learned", 7: "learned"})
        yield self.store.learn([0], "m2", [10, 30], False)
        stats = yield self.store.load_stats([0, 7], [10, 20, 30, 99, -5])
        self.assertEqual(stats[0], (1, 1, {10: (1, 1), 20: (1, 0), 30: (0, 1), -5: (1, 0)}))
        self.assertEqual(stats[7], (1, 0, {10: (1, 0), 20: (1, 0), -5: (1, 0)}))

    @defer.inlineCallbacks
    def test_learning_twice_counts_once(self):
        """The same message learned twice as spam is counted once."""
        yield self.store.learn([0], "m1", [1, 2], True)
        outcome = yield self.store.learn([0], "m1", [1, 2], True)
        self.assertEqual(outcome, {0: "already"})
        stats = yield self.store.load_stats([0], [1, 2])
        self.assertEqual(stats[0], (1, 0, {1: (1, 0), 2: (1, 0)}))

    @defer.inlineCallbacks
    def test_relearning_moves_counts(self):
        """A message learned as spam and then as ham (moved out of Spam) counts
        as ham only."""
        yield self.store.learn([0, 3], "m1", [1, 2], True)
        yield self.store.learn([0, 3], "m2", [2], True)
        outcome = yield self.store.learn([0, 3], "m1", [1, 2], False)
        self.assertEqual(outcome, {0: "relearned", 3: "relearned"})
        stats = yield self.store.load_stats([0, 3], [1, 2])
        self.assertEqual(stats[0], (1, 1, {1: (0, 1), 2: (1, 1)}))
        self.assertEqual(stats[3], (1, 1, {1: (0, 1), 2: (1, 1)}))

    @defer.inlineCallbacks
    def test_forget_scope(self):
        """Forgetting a mailbox's scope drops its statistics and its learned
        records, leaves the global scope alone, and is idempotent."""
        yield self.store.learn([0, 4], "m1", [1, 2], True)
        yield self.store.forget_scope(4)
        yield self.store.forget_scope(4)
        stats = yield self.store.load_stats([0, 4], [1, 2])
        self.assertEqual(stats[4], (0, 0, {}))
        self.assertEqual(stats[0], (1, 0, {1: (1, 0), 2: (1, 0)}))
        outcome = yield self.store.learn([4], "m1", [1], True)
        self.assertEqual(outcome, {4: "learned"})

    @defer.inlineCallbacks
    def test_prune_drops_rare_old_tokens(self):
        """Pruning drops tokens counted once and not since the cut-off, and old
        'learned' records; tokens seen in several messages or recently stay."""
        day = 86400
        yield self.store.learn([0], "old1", [1, 2], True, now=10 * day)
        yield self.store.learn([0], "old2", [2], True, now=10 * day)
        yield self.store.learn([0], "new", [3], False, now=200 * day)
        dropped = yield self.store.prune(100 * day)
        self.assertEqual(dropped, 3)   # token 1, records old1 and old2
        stats = yield self.store.load_stats([0], [1, 2, 3])
        self.assertEqual(stats[0], (2, 1, {2: (2, 0), 3: (0, 1)}))
        outcome = yield self.store.learn([0], "new", [3], False, now=201 * day)
        self.assertEqual(outcome, {0: "already"})
        self.assertEqual((yield self.store.prune(100 * day)), 0)

    @defer.inlineCallbacks
    def test_many_tokens(self):
        """Thousands of tokens (64-bit hashes, negative too) load in one call."""
        tokens = [(i * 2654435761) % (1 << 63) - (1 << 62) for i in range(2500)]
        yield self.store.learn([0], "big", tokens, False)
        stats = yield self.store.load_stats([0], tokens)
        self.assertEqual(len(stats[0][2]), 2500)
        self.assertEqual(set(stats[0][2].values()), {(0, 1)})


class MemorySpamStatsTests(SpamStatsContract, unittest.TestCase):
    def setUp(self):
        self.store = MemorySpamStatsStore()


class PostgresSpamStatsTests(SpamStatsContract, unittest.TestCase):
    def setUp(self):
        from ktmail.store.postgresql import PostgresSpamStatsStore
        self.store = PostgresSpamStatsStore(postgresql.open_database(self))


class SQLiteSpamStatsTests(SpamStatsContract, unittest.TestCase):
    def setUp(self):
        self.db = Database(self.mktemp() + "/ktmail.db", InlineRunner())
        self.addCleanup(self.db.close)
        self.store = SQLiteSpamStatsStore(self.db)

    @defer.inlineCallbacks
    def test_persists_across_reopen(self):
        """What was learned is still there after the database is reopened."""
        yield self.store.learn([0], "m1", [5], True)
        path = self.db.path
        self.db.close()
        reopened = Database(path, InlineRunner())
        self.addCleanup(reopened.close)
        stats = yield SQLiteSpamStatsStore(reopened).load_stats([0], [5])
        self.assertEqual(stats[0], (1, 0, {5: (1, 0)}))
