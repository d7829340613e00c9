"""SpamFilter: scanning files, learning from users, forgetting a removed
mailbox, configuration errors, and the bounded reading of big messages."""

import io
import os
import random

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.config import SpamConfig
from ktmail.errors import ValidationError
from ktmail.model import Address, Mailbox
from ktmail.services.spam import SpamFilter, parse_file
from ktmail.services.spam.bayes import (
    MAX_TOKENS,
    MIN_HAM,
    MIN_SPAM,
    BayesStats,
    spam_probability,
    token_hash,
    tokenize,
    tokenize_hashed,
)
from ktmail.services.spam.message import PART_LIMIT, parse_bytes, read_bounded
from ktmail.services.spam.rules import GTUBE
from ktmail.store.memory import MemorySpamStatsStore
from ktmail.store.sqlite import Database, InlineRunner, SQLiteSpamStatsStore
from tests.services.spam_samples import CLEAN_BODY, variant, with_attachment
from tests.services.test_spam_auth import StubResolver


@attrs.frozen
class Envelope:
    """The fields of delivery.Envelope that the filter reads."""

    sender: str = "maija@example.org"
    recipients: tuple = ()
    client_address: str = "80.69.12.34"
    client_helo: str = "mail.example.org"
    authenticated: object = None


def sync_thread(fn, *args):
    return defer.maybeDeferred(fn, *args)


def mailbox(id_=7):
    return Mailbox(id=id_, customer_id=1, username=f"user{id_}",
                   address=Address("matti", "sboksi.fi"), quota_bytes=10**9, created=0.0)


SPAM_WORDS = str.split("""
cheap pills pharmacy discount order online offer prices bonus casino jackpot deal
guaranteed unbeatable replica watches luxury shipping worldwide
""")
HAM_WORDS = str.split("""
meeting agenda budget project schedule thursday report review colleague deadline
minutes draft proposal lunch office team quarterly
""")


def sample(words, rng, n=25):
    return " ".join(rng.choice(words) for _ in range(n)) + "\n"


class FilterTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemorySpamStatsStore()
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.count = 0

    def make_filter(self, config=None, resolver=None, store=None):
        return SpamFilter(config or SpamConfig(), store or self.store, sync_thread, self.clock,
                          resolver=resolver, hostname="mx.ktnet.fi")

    def write(self, raw):
        self.count += 1
        path = os.path.join(self.dir, f"msg{self.count}")
        with open(path, "wb") as f:
            f.write(raw)
        return path


class ScanTests(FilterTestCase):
    def test_clean_message_is_ham(self):
        """A clean message scans as ham with no rules and score 0."""
        verdict = self.successResultOf(
            self.make_filter().scan(self.write(variant()), Envelope(), mailbox()))
        self.assertEqual((verdict.is_spam, verdict.score, verdict.hits), (False, 0, ()))
        self.assertEqual(verdict.header_value(), "No, score=0.0 required=5.0 tests=none")

    def test_gtube_is_spam(self):
        """GTUBE scans as spam and the header names the rule."""
        path = self.write(variant(body=CLEAN_BODY + GTUBE))
        verdict = self.successResultOf(self.make_filter().scan(path, Envelope(), mailbox()))
        self.assertTrue(verdict.is_spam)
        self.assertIn("tests=GTUBE", verdict.header_value())
        self.assertEqual(dict(verdict.header_lines())["X-Spam-Score"], "1000.0")

    def test_configured_threshold_and_scores(self):
        """required_score and [spam_scores] change the verdict without code."""
        config = SpamConfig(required_score=2.0, rule_scores=(("MISSING_DATE", 2.5),))
        path = self.write(variant(remove=["Date"]))
        verdict = self.successResultOf(self.make_filter(config).scan(path, Envelope(), None))
        self.assertEqual((verdict.is_spam, verdict.score, verdict.required), (True, 2.5, 2.0))

    def test_unknown_rule_name_is_refused(self):
        """An unknown [spam_scores] name stops construction, naming the key."""
        config = SpamConfig(rule_scores=(("NO_SUCH_RULE", 1.0),))
        e = self.assertRaises(ValidationError, self.make_filter, config)
        self.assertIn("spam_scores.NO_SUCH_RULE", e.text)

    def test_authentication_results(self):
        """With a resolver, SPF and DMARC are checked, scored and reported in an
        Authentication-Results: value."""
        resolver = StubResolver({
            ("txt", "example.org"): ["v=spf1 ip4:10.0.0.0/8 -all"],
            ("txt", "_dmarc.example.org"): ["v=DMARC1; p=reject"]})
        verdict = self.successResultOf(self.make_filter(resolver=resolver).scan(
            self.write(variant()), Envelope(), mailbox()))
        self.assertEqual({h.name for h in verdict.hits}, {"SPF_FAIL", "DMARC_REJECT"})
        self.assertTrue(verdict.is_spam)
        self.assertEqual(verdict.authentication_results,
                         "mx.ktnet.fi;\r\n\tspf=fail smtp.mailfrom=example.org;\r\n\t"
                         "dkim=none;\r\n\tdmarc=fail (p=reject) header.from=example.org")
        self.assertIn("Authentication-Results", dict(verdict.header_lines()))

    def test_slow_dns_does_not_hold_mail(self):
        """DNS that never answers is abandoned at the deadline; the message is
        scored without authentication results."""
        class Silent(StubResolver):
            def txt(self, name):
                return defer.Deferred()
        d = self.make_filter(resolver=Silent()).scan(self.write(variant()), Envelope(),
                                                     mailbox())
        self.assertNoResult(d)
        self.clock.advance(10)
        verdict = self.successResultOf(d)
        self.assertEqual((verdict.hits, verdict.authentication_results), ((), ""))

    def test_broken_store_does_not_hold_mail(self):
        """When the statistics cannot be read, the message is scored without Bayes."""
        class Broken(MemorySpamStatsStore):
            def load_stats(self, scopes, tokens):
                return defer.fail(OSError("disk I/O error"))
        verdict = self.successResultOf(self.make_filter(store=Broken()).scan(
            self.write(variant(remove=["Date"])), Envelope(), mailbox()))
        self.assertEqual([h.name for h in verdict.hits], ["MISSING_DATE"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class LearningTests(FilterTestCase):
    """The Bayes classifier: trained by users, persisted, per mailbox, forgotten."""

    def train(self, spam_filter, box, n_spam=MIN_SPAM, n_ham=MIN_HAM, seed=1):
        rng = random.Random(seed)
        for _ in range(n_spam):
            raw = variant(set_headers=[("Subject", "Offer")], body=sample(SPAM_WORDS, rng))
            self.successResultOf(spam_filter.train(box, self.write(raw), True))
        for _ in range(n_ham):
            raw = variant(body=sample(HAM_WORDS, rng))
            self.successResultOf(spam_filter.train(box, self.write(raw), False))

    def bayes_rules(self, verdict):
        return [h.name for h in verdict.hits if h.name.startswith("BAYES_")]

    def assertSpammy(self, verdict):
        self.assertIn(self.bayes_rules(verdict), (["BAYES_95"], ["BAYES_99"], ["BAYES_999"]))

    def test_untrained_has_no_opinion(self):
        """Before enough messages are learned, no BAYES rule fires."""
        spam_filter = self.make_filter()
        self.train(spam_filter, mailbox(), n_spam=MIN_SPAM - 1)
        verdict = self.successResultOf(spam_filter.scan(
            self.write(variant(body=sample(SPAM_WORDS, random.Random(9)))), Envelope(),
            mailbox()))
        self.assertEqual(self.bayes_rules(verdict), [])

    def test_trained_classifier_tells_spam_from_ham(self):
        """After training, new spam gets a top BAYES bucket and new ham BAYES_00."""
        spam_filter = self.make_filter()
        self.train(spam_filter, mailbox())
        rng = random.Random(99)
        spam = self.successResultOf(spam_filter.scan(self.write(variant(
            body=sample(SPAM_WORDS, rng))), Envelope(), mailbox()))
        ham = self.successResultOf(spam_filter.scan(self.write(variant(
            body=sample(HAM_WORDS, rng))), Envelope(), mailbox()))
        self.assertSpammy(spam)
        self.assertEqual(self.bayes_rules(ham), ["BAYES_00"])
        self.assertFalse(ham.is_spam)

    def test_persisted_in_the_database(self):
        """What was learned survives a restart (SQLite store, new filter)."""
        path = os.path.join(self.mktemp(), "ktmail.db")
        db = Database(path, InlineRunner())
        self.train(self.make_filter(store=SQLiteSpamStatsStore(db)), mailbox())
        db.close()
        db = Database(path, InlineRunner())
        self.addCleanup(db.close)
        spam_filter = self.make_filter(store=SQLiteSpamStatsStore(db))
        verdict = self.successResultOf(spam_filter.scan(self.write(variant(
            body=sample(SPAM_WORDS, random.Random(5)))), Envelope(), mailbox()))
        self.assertSpammy(verdict)

    def test_moving_out_of_spam_relearns(self):
        """A message trained as spam and then moved out of Spam counts as ham."""
        spam_filter = self.make_filter()
        path = self.write(variant(body=sample(SPAM_WORDS, random.Random(3))))
        self.successResultOf(spam_filter.train(mailbox(), path, True))
        self.successResultOf(spam_filter.train(mailbox(), path, False))
        loaded = self.successResultOf(self.store.load_stats([0, 7], []))
        self.assertEqual({scope: v[:2] for scope, v in loaded.items()}, {0: (0, 1), 7: (0, 1)})

    def test_per_mailbox_statistics_win_when_trained(self):
        """A mailbox that learned enough is judged by its own statistics: what
        one user calls spam is not forced on another."""
        spam_filter = self.make_filter()
        picky, other = mailbox(7), mailbox(8)
        # mailbox 7 calls the meeting mails spam, the others (global) do not
        rng = random.Random(4)
        for _ in range(MIN_SPAM):
            self.successResultOf(spam_filter.train(
                picky, self.write(variant(body=sample(HAM_WORDS, rng))), True))
        for _ in range(MIN_HAM):
            self.successResultOf(spam_filter.train(
                picky, self.write(variant(body=sample(SPAM_WORDS, rng))), False))
        self.train(spam_filter, other, n_spam=MIN_SPAM * 3, n_ham=MIN_HAM * 3, seed=6)
        raw = variant(body=sample(HAM_WORDS, random.Random(11)))
        mine = self.successResultOf(spam_filter.scan(self.write(raw), Envelope(), picky))
        theirs = self.successResultOf(spam_filter.scan(self.write(raw), Envelope(), other))
        self.assertSpammy(mine)
        self.assertEqual(self.bayes_rules(theirs), ["BAYES_00"])

    def test_pruning_on_the_clock(self):
        """The daily pruning service drops one-off tokens after 180 days."""
        spam_filter = self.make_filter()
        self.successResultOf(spam_filter.train(mailbox(), self.write(variant()), True))
        svc = spam_filter.pruning_service()
        svc.startService()
        self.addCleanup(svc.stopService)
        loaded = self.successResultOf(self.store.load_stats([0], tokenize_hashed(
            parse_bytes(variant()))))
        self.assertTrue(loaded[0][2])
        for _ in range(181):
            self.clock.advance(86400)
        loaded = self.successResultOf(self.store.load_stats([0], tokenize_hashed(
            parse_bytes(variant()))))
        self.assertEqual(loaded[0][2], {})

    def test_forget_mailbox(self):
        """Removing a mailbox drops its statistics; the global ones stay."""
        spam_filter = self.make_filter()
        self.train(spam_filter, mailbox(), n_spam=2, n_ham=1)
        self.successResultOf(spam_filter.forget_mailbox(mailbox()))
        loaded = self.successResultOf(self.store.load_stats([0, 7], []))
        self.assertEqual({scope: v[:2] for scope, v in loaded.items()}, {0: (2, 1), 7: (0, 0)})

    def test_tokens_exclude_own_headers(self):
        """The filter's own headers are never tokens, so it cannot learn its
        own verdicts; tokens are stored as hashes."""
        raw = variant(add=[("X-Spam-Status", "Yes, score=9.0"),
                           ("Authentication-Results", "mx.ktnet.fi; spf=fail")])
        tokens = tokenize(parse_bytes(raw))
        self.assertFalse([t for t in tokens if "spam" in t or "authentication" in t])
        self.assertIn(token_hash("header:subject"), tokenize_hashed(parse_bytes(raw)))

    def test_probability_extremes(self):
        """The combined probability is near 1 for spammy clues, near 0 for hammy
        ones and None without enough training."""
        spammy = BayesStats(nspam=100, nham=100, counts={i: (50, 0) for i in range(20)})
        hammy = BayesStats(nspam=100, nham=100, counts={i: (0, 50) for i in range(20)})
        self.assertGreater(spam_probability(spammy), 0.99)
        self.assertLess(spam_probability(hammy), 0.01)
        self.assertIsNone(spam_probability(BayesStats(nspam=1, nham=100)))


class TokenizerTests(unittest.TestCase):
    """What the Bayes tokenizer makes of a message's subject and text."""

    # (subject, body, tokens that must be there, tokens that must not)
    CASES = (
        ("Hello", "Click here now to claim your prize.",
         {"click", "here", "now", "claim", "your", "prize",
          "bi:click here", "bi:here now", "bi:now claim", "bi:your prize"},
         {"bi:claim prize", "bi:prize click"}),
        # pairs are of neighbouring kept words: short words are skipped, long
        # words, addresses and URLs break the chain
        ("Hello", "buy it now extraordinarily cheap http://example.org/x pills",
         {"buy", "bi:buy now", "skip:e 10", "cheap", "pills"},
         {"bi:now cheap", "bi:now skip:e 10", "bi:cheap pills"}),
        ("Hello", "Write to someone.long@example.org today please",
         {"email:example.org", "today", "bi:today please"}, {"bi:write today"}),
        ("Cheap meds, no prescription", "Hello",
         {"subject:cheap", "subject:bi:cheap meds", "subject:bi:meds prescription"},
         {"bi:cheap meds", "subject:bi:no prescription"}),
        # punctuation is stripped, case folded, as for single words
        ("Hello", "FREE, money!", {"free", "money", "bi:free money"}, {"FREE"}),
        # Chinese and Japanese have no spaces between words: pairs of
        # neighbouring characters, not one long "skip" token
        ("Hello", "特價墨水匣批發電子報今天開始優惠活動",
         {"特價", "價墨", "活動"}, {"skip:特 10", "特價墨"}),
        ("墨水匣批發", "Bargain price:特價500元 only",
         {"subject:墨水", "subject:批發", "特價", "price", "500", "元", "only"},
         {"price:特價500元", "subject:墨水匣批發"}),
        ("出会いの広場", "Hello", {"subject:出会", "subject:の広"}, {"subject:出会いの広場"}),
        # Hangul words are short: a two-syllable word is still a token
        ("Hello", "무료 상담", {"무료", "상담"}, set()),
    )

    def test_html_alternative(self):
        """The HTML of a multipart/alternative is read even when it has a
        plain text part (which may say something else)."""
        body = ("--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNothing to see\r\n"
                "--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                "<html><body><p>Cheap <b>pills</b> online</p></body></html>\r\n--B--\r\n")
        raw = variant(body=body, content_type='multipart/alternative; boundary="B"')
        tokens = tokenize(parse_bytes(raw))
        self.assertEqual({"nothing", "see", "cheap", "pills", "online", "bi:cheap pills"}
                         - tokens, set())

    def tokens(self, subject, body):
        raw = variant(set_headers=[("Subject", subject)], body=body)
        return tokenize(parse_bytes(raw))

    def test_table(self):
        for subject, body, present, absent in self.CASES:
            tokens = self.tokens(subject, body)
            with self.subTest(body=body):
                self.assertEqual(present - tokens, set())
                self.assertEqual(absent & tokens, set())

    def test_bounded(self):
        """However long the text, at most MAX_TOKENS distinct tokens."""
        body = " ".join(f"w{i:06d}" for i in range(20_000))
        self.assertEqual(len(self.tokens("Hello", body)), MAX_TOKENS)


class BoundedReadingTests(unittest.TestCase):
    def test_big_attachment_is_skipped_not_read_into_memory(self):
        """A message with a 50 MiB attachment keeps only a bounded start of it,
        and the attachment after it is still seen."""
        big = b"QUFBQUFB" * 9 + b"\r\n"
        raw = (b"From: a@example.org\r\nSubject: big\r\nContent-Type: multipart/mixed; "
               b"boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
               b"--B\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n" + big * (50 * 1024 * 1024 // len(big))
               + b"--B\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\n"
               b"Content-Disposition: attachment; filename=\"run.exe\"\r\n\r\nMZ\r\n--B--\r\n")
        kept, size, truncated = read_bounded(io.BytesIO(raw))
        self.assertEqual(size, len(raw))
        self.assertTrue(truncated)
        self.assertLess(len(kept), PART_LIMIT + 4096)
        message = parse_bytes(kept, size, truncated)
        self.assertEqual([a.filename for a in message.attachments], ["a.bin", "run.exe"])
        self.assertEqual(message.text.strip(), "hello")

    def test_small_message_is_kept_whole(self):
        """A normal message is read unchanged."""
        raw = with_attachment("a.pdf", b"%PDF-1.4" + b"x" * 1000)
        kept, size, truncated = read_bounded(io.BytesIO(raw))
        self.assertEqual((kept, size, truncated), (raw, len(raw), False))

    def test_huge_mime_parameters_are_capped(self):
        """A Content-Type with thousands of parameters (quadratic to parse) is
        cut short, so it costs little."""
        params = "".join(f";\r\n p{i}=\"{'x' * 20}\"" for i in range(20000))
        raw = (f"From: a@example.org\r\nContent-Type: text/plain{params}\r\n\r\nhello\r\n"
               ).encode()
        message = parse_bytes(raw)
        self.assertEqual(message.text.strip(), "hello")
        self.assertLess(len(message.get("content-type")), 2100)

    def test_garbage_does_not_raise(self):
        """Bytes that are no message at all still parse (and score)."""
        path = FilterTestCase.mktemp(self)
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 50)
        message = parse_file(path)
        self.assertIsNotNone(message)
