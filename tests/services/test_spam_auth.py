"""SPF, DKIM and DMARC over a stub DNS resolver (no network)."""

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import defer
from twisted.names import dns, error
from twisted.trial import unittest

from ktmail.services.spam import parse_bytes
from ktmail.services.spam.auth import (
    DNSTempError,
    TwistedNamesResolver,
    check_dkim,
    check_dmarc,
    check_spf,
)
from tests.services.spam_samples import variant


class StubResolver:
    """A DNSResolver answering from a dict {(type, name): [answers]}; names
    listed in ``failing`` time out."""

    def __init__(self, records=None, failing=()):
        self.records = records or {}
        self.failing = set(failing)
        self.queries = []

    def _answer(self, kind, name):
        name = name.lower().rstrip(".")
        self.queries.append((kind, name))
        if name in self.failing:
            return defer.fail(DNSTempError("timeout"))
        return defer.succeed(list(self.records.get((kind, name), [])))

    def txt(self, name):
        return self._answer("txt", name)

    def a(self, name):
        return self._answer("a", name)

    def aaaa(self, name):
        return self._answer("aaaa", name)

    def mx(self, name):
        return self._answer("mx", name)

    def ptr(self, ip):
        return self._answer("ptr", ip)


def sync_thread(fn, *args):
    return defer.maybeDeferred(fn, *args)


class SPFTests(unittest.TestCase):
    """RFC 7208 evaluation."""

    def spf(self, records, ip="80.69.12.34", sender="maija@example.org", helo="mail.example.org",
            failing=()):
        resolver = StubResolver(records, failing)
        return self.successResultOf(check_spf(resolver, ip, sender, helo))[0]

    def test_results_by_table(self):
        """Each mechanism and qualifier gives the RFC 7208 result."""
        table = [
            ({("txt", "example.org"): ["v=spf1 ip4:80.69.12.0/24 -all"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 ip4:10.0.0.0/8 -all"]}, "fail"),
            ({("txt", "example.org"): ["v=spf1 ip4:10.0.0.0/8 ~all"]}, "softfail"),
            ({("txt", "example.org"): ["v=spf1 ?all"]}, "neutral"),
            ({("txt", "example.org"): ["v=spf1 ip4:10.0.0.1"]}, "neutral"),
            ({("txt", "example.org"): ["some other text"]}, "none"),
            ({}, "none"),
            ({("txt", "example.org"): ["v=spf1 -all", "v=spf1 +all"]}, "permerror"),
            ({("txt", "example.org"): ["v=spf1 a -all"],
              ("a", "example.org"): ["80.69.12.34"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 a:web.example.org/24 -all"],
              ("a", "web.example.org"): ["80.69.12.1"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 mx -all"],
              ("mx", "example.org"): ["mx1.example.org"],
              ("a", "mx1.example.org"): ["80.69.12.34"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 include:_spf.provider.example -all"],
              ("txt", "_spf.provider.example"): ["v=spf1 ip4:80.69.0.0/16 -all"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 include:_spf.provider.example -all"],
              ("txt", "_spf.provider.example"): ["v=spf1 ip4:10.0.0.0/8 -all"]}, "fail"),
            ({("txt", "example.org"): ["v=spf1 include:missing.example -all"]}, "permerror"),
            ({("txt", "example.org"): ["v=spf1 redirect=_spf.example.org"],
              ("txt", "_spf.example.org"): ["v=spf1 ip4:80.69.12.34 -all"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 exists:%{i}.allow.example.org -all"],
              ("a", "80.69.12.34.allow.example.org"): ["127.0.0.2"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 exists:%{ir}.%{l}._spf.%{d} -all"],
              ("a", "34.12.69.80.maija._spf.example.org"): ["127.0.0.2"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 ptr -all"],
              ("ptr", "80.69.12.34"): ["mail.example.org"],
              ("a", "mail.example.org"): ["80.69.12.34"]}, "pass"),
            ({("txt", "example.org"): ["v=spf1 ip4:not-an-address -all"]}, "permerror"),
            ({("txt", "example.org"): ["v=spf1 frobnicate -all"]}, "permerror"),
        ]
        for records, expected in table:
            self.assertEqual(self.spf(records), expected, records)

    def test_lookup_limit(self):
        """More than 10 DNS-querying terms is a permerror (RFC 7208 §4.6.4)."""
        records = {("txt", "example.org"): [
            "v=spf1 " + " ".join(f"a:h{i}.example.org" for i in range(11)) + " -all"]}
        for i in range(11):
            records["a", f"h{i}.example.org"] = ["10.0.0.1"]
        self.assertEqual(self.spf(records), "permerror")

    def test_void_lookup_limit(self):
        """More than two lookups that find nothing is a permerror."""
        records = {("txt", "example.org"): [("v=spf1 a:x1.example.org a:x2.example.org "
                                             "a:x3.example.org -all")]}
        self.assertEqual(self.spf(records), "permerror")

    def test_include_loop_is_bounded(self):
        """A record that includes itself ends in permerror, not a hang."""
        records = {("txt", "example.org"): ["v=spf1 include:example.org -all"]}
        self.assertEqual(self.spf(records), "permerror")

    def test_dns_failure_is_temperror(self):
        """A DNS timeout gives temperror, which no rule scores."""
        self.assertEqual(self.spf({}, failing=["example.org"]), "temperror")

    def test_null_sender_checks_helo(self):
        """With the null sender (bounces) the HELO name is checked."""
        records = {("txt", "mail.example.org"): ["v=spf1 ip4:80.69.12.34 -all"]}
        self.assertEqual(self.spf(records, sender=""), "pass")

    def test_ipv6(self):
        """ip6 mechanisms match IPv6 clients; ip4 ones do not."""
        records = {("txt", "example.org"): ["v=spf1 ip4:80.69.12.34 ip6:2001:db8::/32 -all"]}
        self.assertEqual(self.spf(records, ip="2001:db8::25"), "pass")
        self.assertEqual(self.spf(records, ip="2001:db9::25"), "fail")


def make_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


class DKIMAndDMARCTests(unittest.TestCase):
    """DKIM verification with a key published in the stub DNS, and DMARC."""

    _key = None

    def setUp(self):
        if DKIMAndDMARCTests._key is None:
            DKIMAndDMARCTests._key = make_key()   # once: RSA key generation is slow
        self.private, self.record = DKIMAndDMARCTests._key

    def signed(self, raw, domain="example.org"):
        signature = dkim.sign(raw, b"sel", domain.encode(), self.private,
                              include_headers=[b"from", b"subject", b"date", b"to"])
        return signature + raw

    def dkim(self, raw, records):
        return self.successResultOf(check_dkim(StubResolver(records), parse_bytes(raw), raw,
                                               sync_thread))

    def test_valid_signature(self):
        """A signature made with the published key verifies."""
        raw = self.signed(variant())
        self.assertEqual(self.dkim(raw, {("txt", "sel._domainkey.example.org"): [self.record]}),
                         (("example.org", "pass"),))

    def test_altered_body_fails(self):
        """Changing the body after signing breaks the signature."""
        raw = self.signed(variant()).replace(b"Maija\r\n", b"Mallory\r\n")
        self.assertEqual(self.dkim(raw, {("txt", "sel._domainkey.example.org"): [self.record]}),
                         (("example.org", "fail"),))

    def test_missing_key_fails(self):
        """A signature whose key is not published fails."""
        self.assertEqual(self.dkim(self.signed(variant()), {}), (("example.org", "fail"),))

    def test_unsigned(self):
        """No signature, no result."""
        self.assertEqual(self.dkim(variant(), {}), ())

    def test_dmarc_table(self):
        """DMARC passes with an aligned SPF or DKIM pass and fails otherwise,
        with the policy of the From: domain (or its organizational domain)."""
        reject = {("txt", "_dmarc.example.org"): ["v=DMARC1; p=reject; rua=mailto:x@example.org"]}
        table = [
            (reject, "example.org", "pass", "example.org", (), ("pass", "reject")),
            (reject, "example.org", "pass", "bounces.example.org", (), ("pass", "reject")),
            (reject, "example.org", "pass", "other.example", (), ("fail", "reject")),
            (reject, "example.org", "fail", "example.org", (("example.org", "pass"),),
             ("pass", "reject")),
            (reject, "example.org", None, "", (("other.example", "pass"),), ("fail", "reject")),
            (reject, "news.example.org", None, "", (), ("fail", "reject")),
            ({("txt", "_dmarc.example.org"): ["v=DMARC1; p=reject; sp=quarantine"]},
             "news.example.org", None, "", (), ("fail", "quarantine")),
            ({("txt", "_dmarc.example.org"): ["v=DMARC1; p=none"]}, "example.org", "fail",
             "example.org", (), ("fail", "none")),
            ({("txt", "_dmarc.example.org"): ["v=DMARC1; p=reject; aspf=s"]}, "example.org",
             "pass", "bounces.example.org", (), ("fail", "reject")),
            ({}, "example.org", "fail", "example.org", (), None),
        ]
        for records, from_domain, spf, spf_domain, dkim_results, expected in table:
            result = self.successResultOf(check_dmarc(StubResolver(records), from_domain, spf,
                                                      spf_domain, dkim_results))
            self.assertEqual(result, expected, (from_domain, spf, spf_domain, dkim_results))

    def test_dmarc_dns_failure_is_no_result(self):
        """A DNS failure gives no DMARC result (nothing is scored)."""
        result = self.successResultOf(check_dmarc(
            StubResolver(failing=["_dmarc.example.org"]), "example.org", "fail", "", ()))
        self.assertIsNone(result)


class FakeIResolver:
    """A twisted.names IResolver answering from a dict, for the adapter."""

    def __init__(self, answers):
        self.answers = answers

    def _lookup(self, kind, name):
        found = self.answers.get((kind, name))
        if isinstance(found, Exception):
            return defer.fail(found)
        if found is None:
            return defer.fail(error.DNSNameError(name))
        return defer.succeed((found, [], []))

    def lookupText(self, name):
        return self._lookup("txt", name)

    def lookupAddress(self, name):
        return self._lookup("a", name)

    def lookupMailExchange(self, name):
        return self._lookup("mx", name)


class TwistedNamesAdapterTests(unittest.TestCase):
    def test_answers_and_errors(self):
        """TXT strings are joined, MX hosts ordered by preference, NXDOMAIN is
        an empty answer and a timeout is DNSTempError."""
        fake = FakeIResolver({
            ("txt", "example.org"): [dns.RRHeader(b"example.org", dns.TXT, payload=dns.Record_TXT(
                b"v=spf1 ", b"-all"))],
            ("mx", "example.org"): [
                dns.RRHeader(b"example.org", dns.MX, payload=dns.Record_MX(20, b"b.example.org")),
                dns.RRHeader(b"example.org", dns.MX, payload=dns.Record_MX(10, b"a.example.org"))],
            ("a", "slow.example.org"): error.DNSQueryTimeoutError(1),
        })
        resolver = TwistedNamesResolver(fake)
        self.assertEqual(self.successResultOf(resolver.txt("example.org")), ["v=spf1 -all"])
        self.assertEqual(self.successResultOf(resolver.mx("example.org")),
                         ["a.example.org", "b.example.org"])
        self.assertEqual(self.successResultOf(resolver.a("nowhere.example.org")), [])
        self.failureResultOf(resolver.a("slow.example.org"), DNSTempError)
