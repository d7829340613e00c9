"""Table-driven tests of every spam rule: each fires on a message crafted
for it, and none fires on a clean personal message or a well-made
newsletter."""

import base64

from twisted.trial import unittest

from ktmail.services.spam import ALL_RULES, RuleSet, parse_bytes, score
from ktmail.services.spam.auth import AuthResults
from ktmail.services.spam.facts import Facts
from ktmail.services.spam.rules import GTUBE
from ktmail.services.spam.scoring import BAYES_BUCKETS
from tests.services.spam_samples import (
    CLEAN_BODY,
    RECEIVED,
    html_message,
    newsletter,
    variant,
    with_attachment,
)


def b64_word(text):
    return "=?utf-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def received(helo, paren, date="Tue, 03 Mar 2026 10:00:05 +0000"):
    return ("Received", f"from {helo} ({paren}) by mx.ktnet.fi with ESMTP; {date}")


PHISH_TEXT = ("Dear customer,\n\nWe noticed unusual sign-in activity. Verify your account "
              "within 24 hours or your account will be suspended.\n")
ADVANCE_FEE = ("I am the barrister of a deceased client who left US$ 25,000,000. As his next "
               "of kin you will receive the transfer of the funds. Strictly confidential.\n")

# rule name -> (message bytes, auth results or None)
CASES = {
    "GTUBE": (variant(body=CLEAN_BODY + GTUBE + "\n"), None),
    "MISSING_DATE": (variant(remove=["Date"]), None),
    "INVALID_DATE": (variant(set_headers=[("Date", "yesterday at noon")]), None),
    "DATE_IN_FUTURE": (variant(set_headers=[("Date", "Thu, 05 Mar 2026 10:00:00 +0000")]), None),
    "DATE_IN_PAST": (variant(set_headers=[("Date", "Mon, 16 Feb 2026 10:00:00 +0000")]), None),
    "MISSING_MID": (variant(remove=["Message-ID"]), None),
    "INVALID_MSGID": (variant(set_headers=[("Message-ID", "abc123")]), None),
    "MISSING_FROM": (variant(remove=["From"]), None),
    "MISSING_TO": (variant(remove=["To"]), None),
    "FROM_DISPLAY_SPOOF": (variant(set_headers=[
        ("From", '"service@paypal.com" <billing@mailer.example.net>')]), None),
    "FROM_BRAND_FREEMAIL": (variant(set_headers=[
        ("From", "PayPal Security <paypal.security.team@gmail.com>")]), None),
    "REPLYTO_FREEMAIL": (variant(add=[("Reply-To", "claims.agent@yahoo.com")]), None),
    "FROM_FREEMAIL_MONEY": (variant(set_headers=[("From", "Mr Smith <smith@gmail.com>")],
                                    body="I offer you $10,500,000 for your help.\n"), None),
    "SUBJ_ALL_CAPS": (variant(set_headers=[("Subject", "URGENT BUSINESS PROPOSAL")]), None),
    "SUBJ_EXCESS_PUNCT": (variant(set_headers=[("Subject", "Act fast!!!")]), None),
    "SUBJ_FAKE_REPLY": (variant(set_headers=[("Subject", "Re: your invoice")]), None),
    "SUBJ_TRACKING_ID": (variant(set_headers=[("Subject", "Special offer        8372")]), None),
    "SUBJ_MIXED_SCRIPT": (variant(set_headers=[("Subject", "Your \u0410pple ID")]), None),
    "FROM_MIXED_SCRIPT": (variant(set_headers=[
        ("From", "\u0410pple Support <support@example.org>")]), None),
    "SUBJ_NEEDLESS_ENCODING": (variant(set_headers=[
        ("Subject", b64_word("Meeting on Thursday"))]), None),
    "FROM_NEEDLESS_ENCODING": (variant(set_headers=[
        ("From", b64_word("Maija Virtanen") + " <maija@example.org>")]), None),
    "ENCODED_WORD_MALFORMED": (variant(set_headers=[
        ("Subject", "=?x-no-such-charset?B?SGVsbG8gdGhlcmU=?=")]), None),
    "RCVD_FORGED_ORDER": (variant(add=[received(
        "relay.example.org", "relay.example.org [80.69.12.40]",
        "Fri, 06 Mar 2026 10:00:00 +0000")]), None),
    "RCVD_DYNAMIC_HOST": (variant(set_headers=[received(
        "pc1.example.net", "dsl-80-69-12-34.dyn.example.net [80.69.12.34]")]), None),
    "RCVD_NO_RDNS": (variant(set_headers=[received("mailer", "[80.69.12.34]")]), None),
    "RCVD_HELO_IP": (variant(set_headers=[received(
        "[80.69.12.34]", "mail.example.org [80.69.12.34]")]), None),
    "BODY_LARGE_MONEY": (variant(body="The budget is US$ 25,000,000 this year.\n"), None),
    "BODY_ADVANCE_FEE": (variant(body=ADVANCE_FEE), None),
    "BODY_MONEY_PROMISE": (variant(body="Congratulations, you have won a car.\n"), None),
    "BODY_MANY_PROMISES": (variant(body="Work from home, be your own boss, risk-free, "
                                        "financial freedom!\n"), None),
    "BODY_MANY_PROMISES_8": (variant(body="Work from home, be your own boss, risk-free, "
                                          "financial freedom, no obligation, 50% off, free "
                                          "shipping, satisfaction guaranteed!\n"), None),
    "BODY_SPACED_LETTERS": (variant(body="Get F R E E access to our M A S T E R list\n"),
                            None),
    "SUBJ_RANDOM_TOKEN": (variant(set_headers=[("Subject", "Hello 7099ocYT9-261UccU3485")]),
                          None),
    "FROM_LOCAL_RANDOM": (variant(set_headers=[("From", "<hugh5546x73@example.net>")]), None),
    "FORGED_MUA_OUTLOOK": (variant(add=[("X-Mailer", "Microsoft Outlook Express 6.00.2800")]),
                           None),
    "MIME_NO_VERSION": (variant(remove=["MIME-Version"]), None),
    "MISSING_SUBJECT": (variant(remove=["Subject"]), None),
    "CHARSET_FARAWAY": (variant(set_headers=[("Subject", "=?gb2312?B?xOO6ww==?=")]), None),
    "BODY_PUSHY": (variant(body="Act now: limited time offer.\n"), None),
    "BODY_PHARMA": (variant(body="Cheap viagra without prescription.\n"), None),
    "BODY_ADULT": (variant(body="Hot singles in your area, xxx videos.\n"), None),
    "BODY_PHISHING": (variant(body=PHISH_TEXT), None),
    "BODY_PHISHING_LINK": (variant(body=PHISH_TEXT + "https://bit.ly/3xYz\n"), None),
    "BODY_IMPERSONAL_GREETING": (variant(body="Dear customer,\nyour order is ready.\n"), None),
    "BODY_SHOUTING": (variant(body=("THIS IS THE BEST OFFER YOU WILL EVER SEE IN YOUR LIFE "
                                    "SO READ ON AND DO NOT MISS IT ") * 5 + "\n"), None),
    "BODY_EXCLAIM": (variant(body="Wow!! Great!! Amazing!! Yes!!\n"), None),
    "BODY_OBFUSCATED_WORDS": (variant(body="Get v1agra and f.r.e.e c@sh today\n"), None),
    "BODY_MIXED_SCRIPT": (variant(body="Ple\u0430se c\u043entact y\u043eur b\u0430nk "
                                       "t\u043eday\n"), None),
    "BODY_INVISIBLE_CHARS": (variant(body="pa\u200bss wo\u200brd ve\u200brify "
                                          "ac\u200bcount lo\u200bgin now\n"), None),
    "BODY_UNSUBSCRIBE_NO_HEADER": (variant(body="Great deals. Click here to unsubscribe.\n"),
                                   None),
    "BODY_EMPTY": (variant(body=""), None),
    "HTML_ONLY": (html_message("<p>Hei Matti, kokous on torstaina kello kymmenen.</p>"), None),
    "HTML_IMAGE_ONLY": (html_message('<a href="https://shop.example.com/"><img '
                                     'src="https://shop.example.com/a.png"></a>'), None),
    "HTML_HIDDEN_TEXT": (html_message("<p>Buy now.</p><div style='display: none'>" +
                                      "lorem ipsum dolor sit amet " * 20 + "</div>",
                                      "Buy now."), None),
    "HTML_WORD_SPLIT": (html_message("<p>Vi<!-- a -->agra, Ci<!-- b -->alis and "
                                     "Xa<!-- c -->nax</p>", "x"), None),
    "HTML_PASSWORD_FIELD": (html_message('<form action="https://evil.example/"><input '
                                         'type="password" name="p"></form>', "x"), None),
    "HTML_FORM": (html_message('<form action="https://shop.example.com/"><input name="q">'
                               '</form>', "x"), None),
    "HTML_SCRIPT": (html_message("<p>Hello</p><script>alert(1)</script>", "Hello"), None),
    "HTML_TEXT_MISMATCH": (html_message(
        "<p>" + " ".join("abcdefghijklmnopqrstuvwxyz"[i % 26] * 3 + "abcdefghij"[i // 26] * 3
                         for i in range(60)) + "</p>",
        "Please use an HTML capable mail reader."), None),
    "URI_IP_ADDRESS": (variant(body="Log in at http://80.69.12.34/login now.\n"), None),
    "URI_SHORTENER": (variant(body="See https://bit.ly/3xYz\n"), None),
    "URI_ABUSED_TLD": (variant(body="See https://deals.example.top/\n"), None),
    "URI_OBFUSCATED": (variant(body="Log in: http://www.nordea.fi@evil.example/\n"), None),
    "HTML_LINK_MISMATCH": (html_message('<a href="https://evil.example/x">https://www.nordea'
                                        '.fi/login</a>', "x"), None),
    "HTML_LINK_HTTPS_TO_HTTP": (html_message('<a href="http://www.nordea.fi/">https://www.'
                                             'nordea.fi/</a>', "x"), None),
    "MIME_EXECUTABLE": (with_attachment("invoice.exe", b"MZ" + b"\0" * 200), None),
    "MIME_DOUBLE_EXTENSION": (with_attachment("invoice.pdf.exe", b"MZ" + b"\0" * 200), None),
    "MIME_HTML_ATTACHMENT": (with_attachment("payment.html", b"<html><form></form></html>",
                                             "text/html"), None),
    "MIME_HTML_ATTACHMENT_ACTIVE": (with_attachment(
        "scan.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>location.href='https://"
        b"evil.example/'</script></svg>", "image/svg+xml"), None),
    "MIME_MACRO_DOCUMENT": (with_attachment("report.docm", b"PK\x03\x04" + b"\0" * 100), None),
    "MIME_TYPE_MISMATCH": (with_attachment("photo.jpg", b"PK\x03\x04" + b"\0" * 100,
                                           "image/jpeg"), None),
    "MIME_BROKEN_MULTIPART": (variant(content_type="multipart/mixed",
                                      body="no boundary here\n"), None),
    "MIME_BASE64_TEXT": (variant(set_headers=[("Content-Transfer-Encoding", "base64"),
                                              ("Content-Type", "text/plain; charset=us-ascii")],
                                 body=base64.encodebytes(b"Hello Matti, see you.\n").decode()),
                         None),
    "SPF_FAIL": (variant(), AuthResults(spf="fail", spf_domain="example.org")),
    "SPF_SOFTFAIL": (variant(), AuthResults(spf="softfail", spf_domain="example.org")),
    "SPF_PASS": (variant(), AuthResults(spf="pass", spf_domain="example.org")),
    "DKIM_VALID": (variant(), AuthResults(dkim=(("mailer.example.net", "pass"),))),
    "DKIM_VALID_AUTHOR": (variant(), AuthResults(dkim=(("example.org", "pass"),))),
    "DKIM_INVALID": (variant(), AuthResults(dkim=(("example.org", "fail"),))),
    "DMARC_REJECT": (variant(), AuthResults(dmarc=("fail", "reject"))),
    "DMARC_QUARANTINE": (variant(), AuthResults(dmarc=("fail", "quarantine"))),
    "DMARC_NONE_FAIL": (variant(), AuthResults(dmarc=("fail", "none"))),
    "DMARC_PASS": (variant(), AuthResults(dmarc=("pass", "reject"))),
}


class RuleTableTests(unittest.TestCase):
    def test_every_rule_has_a_case(self):
        """Each heuristic rule appears in the table (Bayes buckets are tested
        below), so a new rule cannot ship untested."""
        bayes = {name for name, *_ in BAYES_BUCKETS}
        self.assertEqual(sorted(set(ALL_RULES) - bayes - set(CASES)), [])

    def test_each_rule_fires_on_its_message(self):
        """Every rule fires on the message crafted for it."""
        missed = []
        for name, (raw, auth) in sorted(CASES.items()):
            verdict = score(parse_bytes(raw), RuleSet(), auth=auth)
            if name not in [h.name for h in verdict.hits]:
                missed.append(f"{name}: got {[h.name for h in verdict.hits]}")
        self.assertEqual(missed, [])

    def test_clean_message_fires_nothing(self):
        """An ordinary personal message fires no rule and scores 0."""
        verdict = score(parse_bytes(variant()), RuleSet())
        self.assertEqual((verdict.hits, verdict.score, verdict.is_spam), ((), 0, False))

    def test_newsletter_fires_nothing(self):
        """A well-made newsletter (List-Unsubscribe, text and HTML, hidden
        preheader, click-tracking links) fires no rule."""
        verdict = score(parse_bytes(newsletter()), RuleSet())
        self.assertEqual([h.name for h in verdict.hits], [])

    def test_clean_auth_results_fire_only_good_rules(self):
        """Passing SPF, DKIM and DMARC only lower the score."""
        auth = AuthResults(spf="pass", spf_domain="example.org",
                           dkim=(("example.org", "pass"),), dmarc=("pass", "reject"),
                           from_domain="example.org")
        verdict = score(parse_bytes(variant()), RuleSet(), auth=auth)
        self.assertTrue(verdict.hits)
        self.assertTrue(all(h.score < 0 for h in verdict.hits))

    def test_gtube_is_always_spam(self):
        """GTUBE makes a message spam even with every other rule quiet."""
        verdict = score(parse_bytes(CASES["GTUBE"][0]), RuleSet())
        self.assertTrue(verdict.is_spam)
        self.assertGreaterEqual(verdict.score, 1000)

    def test_bayes_buckets(self):
        """Each BAYES_xx rule fires for probabilities in its range only."""
        message = parse_bytes(variant())
        for name, low, high, _, _ in BAYES_BUCKETS:
            facts = Facts(message)
            facts.bayes = (low + min(high, 1.0)) / 2
            fired = [n for n, *_ in BAYES_BUCKETS if ALL_RULES[n].test(facts)]
            self.assertEqual(fired, [name])
        facts = Facts(message)
        self.assertFalse(any(ALL_RULES[n].test(facts) for n, *_ in BAYES_BUCKETS))

    def test_encoded_word_inside_an_address(self):
        """An RFC 2047 word inside the address itself is malformed (RFC 2047 §5)."""
        raw = variant(set_headers=[("From", "=?iso-2022-jp?B?am9rbw==?=@example.org")])
        self.assertIn("ENCODED_WORD_MALFORMED",
                      [h.name for h in score(parse_bytes(raw), RuleSet()).hits])

    def test_received_uses_our_hop(self):
        """The Received rules judge the hop that handed the message to the
        receiving server, not the sender's own submission from home."""
        raw = variant(add=[received("laptop", "dsl-80-69-1-2.dyn.example.net [80.69.1.2]",
                                    "Tue, 03 Mar 2026 09:59:59 +0000")])
        verdict = score(parse_bytes(raw), RuleSet())
        self.assertEqual([h.name for h in verdict.hits], [])
        self.assertIn("mail.example.org", RECEIVED)


class RuleSetTests(unittest.TestCase):
    def test_score_override_and_switch_off(self):
        """[spam_scores] overrides a rule's score; 0 switches it off."""
        raw = parse_bytes(CASES["MISSING_DATE"][0])
        rules = RuleSet(overrides={"MISSING_DATE": 4.5})
        self.assertEqual(score(raw, rules).score, 4.5)
        self.assertEqual(score(raw, RuleSet(overrides={"MISSING_DATE": 0})).hits, ())

    def test_threshold(self):
        """required_score decides spam or ham; the verdict reports it."""
        raw = parse_bytes(CASES["MISSING_DATE"][0])
        verdict = score(raw, RuleSet(required_score=1.0))
        self.assertEqual((verdict.is_spam, verdict.required), (True, 1.0))
        self.assertFalse(score(raw, RuleSet(required_score=1.1)).is_spam)

    def test_every_rule_has_a_description(self):
        """Every rule has an upper-case name and a one-line description."""
        for name, rule in ALL_RULES.items():
            self.assertRegex(name, r"^[A-Z][A-Z0-9_]+$")
            self.assertTrue(rule.description and "\n" not in rule.description, name)
