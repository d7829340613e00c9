"""MTA-STS (RFC 8461): the policy parser, MX pattern matching, the TXT
record, and PolicyResolver's discovery and cache over a stub resolver, a
stub HTTPS fetcher and task.Clock."""

import json
import os

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.services.mtasts import (
    MAX_AGE_CAP,
    Policy,
    PolicyError,
    PolicyResolver,
    mx_matches,
    parse_policy,
    parse_txt,
)
from ktmail.store.mtasts import DiskMTASTSCache
from ktmail.store.sqlite import InlineRunner
from tests.fake_mx import StubResolver

# RFC 8461 §3.2
RFC_EXAMPLE = (b"version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\n"
               b"mx: mx2.example.com\r\nmx: mx.backup-example.com\r\nmax_age: 1296000\r\n")


class ParsePolicyTests(unittest.TestCase):
    def test_rfc_example(self):
        """The example of RFC 8461 §3.2 (CRLF line ends) parses."""
        self.assertEqual(parse_policy(RFC_EXAMPLE), Policy(
            mode="testing", mx=("mx1.example.com", "mx2.example.com",
                                "mx.backup-example.com"), max_age=1296000))

    def test_lf_line_ends_and_no_final_newline(self):
        """LF line ends parse like CRLF; the last line may lack one."""
        body = RFC_EXAMPLE.replace(b"\r\n", b"\n").rstrip(b"\n")
        self.assertEqual(parse_policy(body), parse_policy(RFC_EXAMPLE))

    def test_enforce_with_wildcard(self):
        """A wildcard pattern and the enforce mode; values are trimmed and
        patterns lower-cased without a trailing dot."""
        policy = parse_policy(b"version: STSv1\nmode:  enforce \nmx: *.Example.NET.\n"
                              b"max_age: 86400\n")
        self.assertEqual(policy, Policy("enforce", ("*.example.net",), 86400))

    def test_unknown_keys_ignored(self):
        """Unknown keys are ignored (§3.2: extensions)."""
        policy = parse_policy(RFC_EXAMPLE + b"x-future: whatever: it is\r\n")
        self.assertEqual(policy.mode, "testing")

    def test_mode_none_needs_no_mx(self):
        """mode none needs no mx line."""
        self.assertEqual(parse_policy(b"version: STSv1\nmode: none\nmax_age: 60\n"),
                         Policy("none", (), 60))

    def test_max_age_capped(self):
        """max_age above one year is capped at 31557600."""
        policy = parse_policy(RFC_EXAMPLE.replace(b"1296000", b"9999999999"))
        self.assertEqual(policy.max_age, MAX_AGE_CAP)

    def test_first_of_a_repeated_key_counts(self):
        """Of two mode lines, the first one counts."""
        policy = parse_policy(RFC_EXAMPLE.replace(b"mode: testing\r\n",
                                                  b"mode: testing\r\nmode: enforce\r\n"))
        self.assertEqual(policy.mode, "testing")

    def test_bad_policies(self):
        """Missing or bad version, mode, max_age or mx; a line without a
        colon; an invalid pattern; a body over 64 KiB; not UTF-8."""
        bad = {
            "no version": RFC_EXAMPLE.replace(b"version: STSv1\r\n", b""),
            "version 2": RFC_EXAMPLE.replace(b"STSv1", b"STSv2"),
            "no mode": RFC_EXAMPLE.replace(b"mode: testing\r\n", b""),
            "bad mode": RFC_EXAMPLE.replace(b"testing", b"strict"),
            "no max_age": RFC_EXAMPLE.replace(b"max_age: 1296000\r\n", b""),
            "negative max_age": RFC_EXAMPLE.replace(b"1296000", b"-5"),
            "long max_age": RFC_EXAMPLE.replace(b"1296000", b"12345678901"),
            "no mx": b"version: STSv1\nmode: enforce\nmax_age: 60\n",
            "no colon": RFC_EXAMPLE + b"garbage line\r\n",
            "bad pattern": RFC_EXAMPLE.replace(b"mx1.example.com", b"mx1.*.example.com"),
            "bare wildcard": RFC_EXAMPLE.replace(b"mx1.example.com", b"*"),
            "too big": RFC_EXAMPLE + b"x-pad: " + b"a" * (64 * 1024) + b"\r\n",
            "latin-1": RFC_EXAMPLE + b"x-note: caf\xe9\r\n",
        }
        for name, body in bad.items():
            with self.subTest(name):
                self.assertRaises(PolicyError, parse_policy, body)

    def test_size_limit_is_64_kib(self):
        """A body of exactly 64 KiB is accepted, one byte more is not."""
        pad = b"x-pad: "
        body = RFC_EXAMPLE + pad
        body += b"a" * (64 * 1024 - len(body))
        self.assertEqual(len(body), 64 * 1024)
        self.assertEqual(parse_policy(body).mode, "testing")
        self.assertRaises(PolicyError, parse_policy, body + b"a")


class MXMatchTests(unittest.TestCase):
    def test_table(self):
        """RFC 8461 §4.1: exact names; "*." stands for exactly one label;
        case and trailing dots do not matter."""
        table = [
            ("mail.example.com", "mail.example.com", True),
            ("mail.example.com", "MAIL.Example.COM.", True),
            ("Mail.Example.com.", "mail.example.com", True),
            ("mail.example.com", "mail2.example.com", False),
            ("mail.example.com", "example.com", False),
            ("*.example.com", "mx1.example.com", True),
            ("*.example.com", "MX1.EXAMPLE.COM.", True),
            ("*.example.com", "www.mx1.example.com", False),
            ("*.example.com", "example.com", False),
            ("*.example.com", "mx1.example.com.evil.net", False),
            ("*.example.com", "mx1.notexample.com", False),
            ("*.example.com", ".example.com", False),
            ("", "example.com", False),
        ]
        for pattern, host, expected in table:
            with self.subTest(pattern=pattern, host=host):
                self.assertEqual(mx_matches(pattern, host), expected)

    def test_policy_allows(self):
        """A policy allows a host when any of its patterns matches."""
        policy = Policy("enforce", ("mx.example.com", "*.backup.example.com"), 60)
        self.assertTrue(policy.allows("mx.example.com"))
        self.assertTrue(policy.allows("b1.backup.example.com"))
        self.assertFalse(policy.allows("evil.example.com"))


class ParseTxtTests(unittest.TestCase):
    def test_records(self):
        """§3.1: one v=STSv1 record with a valid id; other records ignored;
        two STSv1 records, or a bad id, mean no policy."""
        self.assertEqual(parse_txt(["v=STSv1; id=20160831085700Z;"]), "20160831085700Z")
        self.assertEqual(parse_txt(["v=spf1 -all", "v=STSv1;id=abc"]), "abc")
        self.assertEqual(parse_txt(["v=STSv1; id=abc; ext=1"]), "abc")
        self.assertIsNone(parse_txt([]))
        self.assertIsNone(parse_txt(["v=spf1 -all"]))
        self.assertIsNone(parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]))
        self.assertIsNone(parse_txt(["v=STSv1;"]))
        self.assertIsNone(parse_txt(["v=STSv1; id=not-alnum"]))
        self.assertIsNone(parse_txt(["v=STSv1; id=" + "a" * 33]))
        self.assertIsNone(parse_txt(["v=STSv10; id=abc"]))


class StubFetcher:
    """The injected HTTPS fetcher: ``bodies`` {url: bytes or Exception}."""

    def __init__(self, bodies=None):
        self.bodies = dict(bodies or {})
        self.urls = []

    def __call__(self, url):
        self.urls.append(url)
        body = self.bodies.get(url, ConnectionRefusedError("no server"))
        if isinstance(body, Exception):
            return defer.fail(body)
        return defer.succeed(body)


URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"
ENFORCE = b"version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"


class PolicyResolverTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.data_dir = self.mktemp()
        self.resolver = StubResolver(txt={"_mta-sts.example.com": ["v=STSv1; id=one"]})
        self.fetcher = StubFetcher({URL: ENFORCE})
        self.cache = DiskMTASTSCache(self.data_dir, InlineRunner())
        self.policies = PolicyResolver(self.resolver, self.fetcher, self.cache, self.clock)

    @defer.inlineCallbacks
    def test_no_txt_record(self):
        """No TXT record and nothing cached: no policy, nothing fetched."""
        self.assertIsNone((yield self.policies.policy_for("other.example")))
        self.assertEqual(self.fetcher.urls, [])

    @defer.inlineCallbacks
    def test_odd_domains_are_not_looked_up(self):
        """A domain that is not a host name (an address literal, or one
        that would change the URL) gets no policy and no lookup."""
        for domain in ("[192.0.2.1]", "evil.example/x", "a@b.example", "*.example.com"):
            self.resolver.txt[f"_mta-sts.{domain}"] = ["v=STSv1; id=one"]
            self.assertIsNone((yield self.policies.policy_for(domain)))
        self.assertEqual(self.resolver.queries, [])
        self.assertEqual(self.fetcher.urls, [])

    @defer.inlineCallbacks
    def test_fetched_and_cached_on_disk(self):
        """A TXT record leads to the fetch of the policy file; the policy is
        written to <data_dir>/mta-sts/<domain>.json and used again without
        a second fetch while the id is the same."""
        policy = yield self.policies.policy_for("Example.COM.")
        self.assertEqual(policy, Policy("enforce", ("mx.example.com",), 86400))
        self.assertEqual(self.fetcher.urls, [URL])
        with open(os.path.join(self.data_dir, "mta-sts", "example.com.json")) as f:
            self.assertEqual(json.load(f)["id"], "one")
        self.assertEqual((yield self.policies.policy_for("example.com")), policy)
        self.assertEqual(self.fetcher.urls, [URL])

    @defer.inlineCallbacks
    def test_id_change_refetches(self):
        """A new id in the TXT record makes the policy be fetched again."""
        yield self.policies.policy_for("example.com")
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
        self.fetcher.bodies[URL] = ENFORCE.replace(b"enforce", b"testing")
        policy = yield self.policies.policy_for("example.com")
        self.assertEqual(policy.mode, "testing")
        self.assertEqual(self.fetcher.urls, [URL, URL])

    @defer.inlineCallbacks
    def test_expiry_by_max_age(self):
        """Past max_age the policy is fetched again even with the same id."""
        yield self.policies.policy_for("example.com")
        self.clock.advance(86400 - 1)
        yield self.policies.policy_for("example.com")
        self.assertEqual(len(self.fetcher.urls), 1)
        self.clock.advance(1)
        yield self.policies.policy_for("example.com")
        self.assertEqual(len(self.fetcher.urls), 2)

    @defer.inlineCallbacks
    def test_cached_policy_used_when_fetch_fails(self):
        """A new id whose policy cannot be fetched: the unexpired cached
        policy still applies (§5.1)."""
        yield self.policies.policy_for("example.com")
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
        self.fetcher.bodies[URL] = ConnectionRefusedError("blocked")
        policy = yield self.policies.policy_for("example.com")
        self.assertEqual(policy.mode, "enforce")
        self.assertEqual(len(self.fetcher.urls), 2)

    @defer.inlineCallbacks
    def test_cached_policy_used_when_txt_disappears(self):
        """No TXT record (or DNS trouble) but an unexpired cached policy:
        the cached policy applies until it expires (§3.3)."""
        yield self.policies.policy_for("example.com")
        del self.resolver.txt["_mta-sts.example.com"]
        self.assertEqual((yield self.policies.policy_for("example.com")).mode, "enforce")
        self.resolver.fail.add("_mta-sts.example.com")
        self.assertEqual((yield self.policies.policy_for("example.com")).mode, "enforce")
        self.clock.advance(86400)
        self.assertIsNone((yield self.policies.policy_for("example.com")))

    @defer.inlineCallbacks
    def test_cache_survives_a_restart(self):
        """A new resolver over the same data directory uses the cached
        policy when the fetch fails."""
        yield self.policies.policy_for("example.com")
        fetcher = StubFetcher()
        again = PolicyResolver(self.resolver, fetcher,
                               DiskMTASTSCache(self.data_dir, InlineRunner()), self.clock)
        self.resolver.txt["_mta-sts.example.com"] = ["v=STSv1; id=two"]
        self.assertEqual((yield again.policy_for("example.com")).mode, "enforce")
        self.assertEqual(fetcher.urls, [URL])

    @defer.inlineCallbacks
    def test_no_policy_when_fetch_fails_and_nothing_cached(self):
        """TXT present, fetch failing or the policy invalid, nothing cached:
        no policy (deliver as without MTA-STS), and nothing cached."""
        self.fetcher.bodies[URL] = TimeoutError("slow")
        self.assertIsNone((yield self.policies.policy_for("example.com")))
        self.fetcher.bodies[URL] = b"version: STSv1\nmode: enforce\n"
        self.assertIsNone((yield self.policies.policy_for("example.com")))
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "mta-sts",
                                                     "example.com.json")))

    @defer.inlineCallbacks
    def test_unreadable_cache_is_no_cache(self):
        """A corrupt cache file counts as no cached policy (refetched)."""
        yield self.policies.policy_for("example.com")
        with open(os.path.join(self.data_dir, "mta-sts", "example.com.json"), "w") as f:
            f.write("{not json")
        self.assertEqual((yield self.policies.policy_for("example.com")).mode, "enforce")
        self.assertEqual(len(self.fetcher.urls), 2)
        self.flushLoggedErrors()


class DiskCacheTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_put_get_and_odd_names(self):
        """Records round-trip; names that are not plain domain names are
        neither written nor read; no .tmp file is left behind."""
        data_dir = self.mktemp()
        cache = DiskMTASTSCache(data_dir, InlineRunner())
        self.assertIsNone((yield cache.get("example.com")))
        yield cache.put("example.com", {"id": "x"})
        yield cache.put("example.com", {"id": "y"})
        self.assertEqual((yield cache.get("example.com")), {"id": "y"})
        for name in ("../evil", "a/b", "..", ""):
            yield cache.put(name, {"id": "z"})
            self.assertIsNone((yield cache.get(name)))
        self.assertEqual(os.listdir(os.path.join(data_dir, "mta-sts")), ["example.com.json"])
