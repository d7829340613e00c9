"""The heuristic spam rules: each one a name, a default score, a one-line
description and a pure test over ``Facts``.

Invariants: rules never do I/O and never read the clock; a rule's name is
its public identity (``X-Spam-Status: tests=``, ``[spam_scores]`` in the
configuration), so names are never reused for another meaning. Scores are
defaults an operator may override; a score of 0 switches a rule off.

The rules look for what spam and phishing do in any year (forged and
missing headers, deceptive links, hidden text, executable attachments,
money and account-takeover lures in English, Finnish and Swedish); none
depends on the date of the message or on the list headers of a particular
corpus.
"""

import itertools
import re

import attrs

from ktmail.services.spam.facts import (
    FREEMAIL_DOMAINS,
    _names,
    is_ip_literal,
    is_public_ip,
    organizational_domain,
)
from ktmail.services.spam.message import decode_header_value, url_host

#: the GTUBE test string (SpamAssassin's Generic Test for Unsolicited Bulk Email)
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@attrs.frozen
class Rule:
    name: str
    score: float
    description: str
    test: object = attrs.field(eq=False, repr=False)   # Facts -> bool


RULES = []


def rule(name, score, description):
    """Register ``fn(facts) -> bool`` as a rule."""
    def register(fn):
        RULES.append(Rule(name=name, score=score, description=description, test=fn))
        return fn
    return register


class Phrases:
    """A list of phrase patterns matched against lower-case text. Each
    pattern is tried only when its longest mandatory word occurs in the
    text (a fast substring test), which keeps hundreds of phrases cheap."""

    def __init__(self, patterns, word_start=True):
        """``patterns``: regex sources (each starting at a word), or
        (keyword, source) pairs with the keyword given."""
        prefix = r"\b" if word_start else ""
        self.entries = []
        for item in patterns:
            if isinstance(item, tuple):
                keyword, source = item
                self.entries.append((keyword, re.compile(f"{prefix}(?:{source})", re.IGNORECASE)))
                continue
            for source in _expand_leading_group(item):
                self.entries.append((_keyword(source),
                                     re.compile(f"{prefix}(?:{source})", re.IGNORECASE)))

    #: how far a match may start before / end after its keyword
    _BEFORE, _AFTER = 80, 160
    #: keyword occurrences looked at per pattern (bounds the cost on huge texts)
    _MAX_HITS = 100

    def finditer(self, text):
        for keyword, pattern in self.entries:
            if not keyword:
                yield from pattern.finditer(text)
                continue
            at = text.find(keyword)
            seen = 0
            while at >= 0 and seen < self._MAX_HITS:
                seen += 1
                yield from pattern.finditer(text, max(0, at - self._BEFORE),
                                            at + len(keyword) + self._AFTER)
                at = text.find(keyword, at + self._AFTER)

    def search(self, text):
        return next(self.finditer(text), None)


def _expand_leading_group(pattern):
    """'(?:buy|call) now' -> ['buy now', 'call now'] so that each has a keyword
    (only a leading, mandatory, un-nested group is expanded)."""
    if not pattern.startswith("(?:"):
        return [pattern]
    depth, end = 0, -1
    for i, c in enumerate(pattern):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    inner, rest = pattern[3:end], pattern[end + 1:]
    if end < 0 or "(" in inner or rest[:1] in ("?", "*", "{") or "|" not in inner:
        return [pattern]
    return [alternative + rest for alternative in inner.split("|")]


def _keyword(pattern):
    """The longest word that every match of ``pattern`` contains ('' if none)."""
    text = pattern
    previous = None
    while previous != text:  # drop groups (possibly optional or alternatives), innermost first
        previous = text
        text = re.sub(r"\((?:\?:)?[^()]*\)[?*+]?(?:\{[^}]*\})?", " ", text)
    text = re.sub(r"\[[^\]]*\][?*+]?(?:\{[^}]*\})?|\\.|.[?*]", " ", text)
    if "|" in text:
        return ""  # alternatives at the top level: no word is common to all
    words = [w for w in re.findall(r"[^\W\d_]+", text) if len(w) >= 3]
    return max(words, key=len).lower() if words else ""


def _phrases(*patterns):
    return Phrases(patterns)


# --- GTUBE ---------------------------------------------------------------------------


@rule("GTUBE", 1000.0, "Generic Test for Unsolicited Bulk Email (always spam)")
def _gtube(f):
    if GTUBE in f.text:
        return True
    return any(GTUBE in source for source in f.message.html_sources) or GTUBE in f.subject


# --- headers ---------------------------------------------------------------------------


@rule("MISSING_DATE", 1.0, "Missing Date: header")
def _missing_date(f):
    return not f.message.has("date")


@rule("INVALID_DATE", 1.2, "Date: header cannot be read as an RFC 5322 date")
def _invalid_date(f):
    return f.message.has("date") and f.date is None


@rule("DATE_IN_FUTURE", 1.5, "Date: is more than 12 hours after the message was received")
def _date_future(f):
    return f.date is not None and f.received_at is not None and \
        f.date - f.received_at > 12 * 3600


@rule("DATE_IN_PAST", 1.0, "Date: is more than 4 days before the message was received")
def _date_past(f):
    return f.date is not None and f.received_at is not None and \
        f.received_at - f.date > 96 * 3600


@rule("MISSING_MID", 0.5, "Missing Message-ID: header")
def _missing_mid(f):
    return not f.message.has("message-id")


_MSGID = re.compile(r"^\s*<[^<>@\s]+@[^<>@\s]+>\s*$")


@rule("INVALID_MSGID", 1.0, "Message-ID: is not of the form <id@domain>")
def _invalid_msgid(f):
    value = f.message.get("message-id")
    return value is not None and not _MSGID.match(" ".join(value.split()))


@rule("MISSING_FROM", 2.0, "Missing From: header or no address in it")
def _missing_from(f):
    return not f.from_addr or "@" not in f.from_addr


@rule("MISSING_TO", 0.5, "No To: or Cc: header")
def _missing_to(f):
    return not f.message.has("to") and not f.message.has("cc")


@rule("FROM_DISPLAY_SPOOF", 2.0, "From: display name shows an address of another domain")
def _from_display_spoof(f):
    shown = re.findall(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", f.from_display)
    if not shown or not f.from_domain:
        return False
    real = organizational_domain(f.from_domain)
    return any(organizational_domain(d) != real for d in shown)


_BRANDS = ("paypal", "apple", "microsoft", "office365", "outlook", "netflix", "amazon",
           "dhl", "fedex", "ups", "posti", "nordea", "osuuspankki", "op-pohjola", "danske",
           "handelsbanken", "s-pankki", "aktia", "kela", "vero", "traficom", "poliisi",
           "google", "facebook", "instagram", "whatsapp", "linkedin", "docusign",
           "dropbox", "wetransfer", "coinbase", "binance", "spotify", "elisa", "telia",
           "dna", "postnord", "bank of america", "wells fargo", "chase")
_BRAND_WORD = re.compile(r"\b(?:" + "|".join(re.escape(b) for b in _BRANDS) + r")\b", re.IGNORECASE)


@rule("FROM_BRAND_FREEMAIL", 2.0,
      "From: name claims a bank, shop or service but the address is a free mailbox")
def _from_brand_freemail(f):
    return f.from_domain in FREEMAIL_DOMAINS and bool(_BRAND_WORD.search(f.from_display))


@rule("REPLYTO_FREEMAIL", 1.5, "Reply-To: sends answers to a free mailbox other than From:")
def _replyto_freemail(f):
    return (f.reply_to_domain in FREEMAIL_DOMAINS and f.reply_to_addr != f.from_addr
            and f.from_domain != f.reply_to_domain)


@rule("FROM_FREEMAIL_MONEY", 1.5, "Free-mailbox sender offering large sums of money")
def _freemail_money(f):
    sender_free = f.from_domain in FREEMAIL_DOMAINS or f.reply_to_domain in FREEMAIL_DOMAINS
    return sender_free and bool(f.phrases(_LARGE_MONEY))


# subject tricks
_SUBJ_LETTERS = re.compile(r"[^\W\d_]", re.UNICODE)


@rule("MISSING_SUBJECT", 0.5, "Missing or empty Subject:")
def _missing_subject(f):
    return not f.subject.strip()


#: charsets of scripts that this service's customers (Finnish/Swedish/English)
#: rarely read; a customer who does teaches the Bayes filter otherwise
FARAWAY_CHARSETS = re.compile(
    r"^(?:gb2312|gbk|gb18030|big5|big5-hkscs|hz-gb-2312|euc-cn|euc-tw|x-euc-tw|euc-jp|"
    r"shift_jis|sjis|x-sjis|iso-2022-jp|euc-kr|ks_c_5601-1987|iso-2022-kr|tis-620|"
    r"windows-874|windows-1258|viscii|ks_c_5601)$", re.IGNORECASE)


@rule("CHARSET_FARAWAY", 1.0, "Written in a charset of a script our customers rarely read")
def _charset_faraway(f):
    if any(FARAWAY_CHARSETS.match(charset or "") for _, charset, _ in f.message.parts):
        return True
    for name in ("subject", "from"):
        if any(FARAWAY_CHARSETS.match(c) for c, _ in decode_header_value(
                f.message.get(name))[1]):
            return True
    return False


@rule("SUBJ_ALL_CAPS", 1.0, "Subject: is written in capitals")
def _subj_all_caps(f):
    letters = _SUBJ_LETTERS.findall(f.subject)
    return len(letters) >= 10 and all(c.isupper() for c in letters if c.isalpha()) and \
        len(f.subject.split()) >= 2


@rule("SUBJ_EXCESS_PUNCT", 1.0, "Subject: has runs of !, ? or $")
def _subj_punct(f):
    return bool(re.search(r"[!?$]{3,}|!\s*!\s*!|\$\$", f.subject))


@rule("SUBJ_FAKE_REPLY", 0.8, "Subject: starts with Re: but the message answers nothing")
def _subj_fake_reply(f):
    return (bool(re.match(r"\s*(?:re|aw|sv|vs)\s*:", f.subject, re.IGNORECASE))
            and not f.message.has("in-reply-to") and not f.message.has("references"))


@rule("SUBJ_TRACKING_ID", 0.7, "Subject: ends in a long gap followed by a tracking number")
def _subj_tracking(f):
    raw = " ".join(f.message.get_all("subject")[:1])
    return bool(re.search(r"\S\s{4,}[\[(#]?[a-z0-9-]{3,}[\])]?\s*$", raw, re.IGNORECASE))


_RANDOM_TOKEN = re.compile(r"(?=[A-Za-z0-9-]*[a-z])(?=[A-Za-z0-9-]*[A-Z])(?=[A-Za-z0-9-]*\d)"
                           r"\b[A-Za-z0-9-]{10,}\b")


@rule("SUBJ_RANDOM_TOKEN", 1.0, "Subject: carries a random mixed-case code (filter busting)")
def _subj_random(f):
    for m in _RANDOM_TOKEN.finditer(f.subject):
        if len(re.findall(r"[a-z][A-Z]|[A-Z][a-z]{0,1}\d|\d[a-zA-Z]", m.group(0))) >= 3:
            return True
    return False


@rule("FROM_LOCAL_RANDOM", 0.7, "From: address is letters and digits mixed like a generated one")
def _from_local_random(f):
    local = f.from_addr.partition("@")[0]
    return len(re.findall(r"[a-z]+|\d+", local.lower())) >= 4 and \
        sum(c.isdigit() for c in local) >= 3 and not re.search(r"[._+-]", local)


@rule("FORGED_MUA_OUTLOOK", 1.0, "Claims Outlook Express but its Message-ID is not Outlook's")
def _forged_outlook(f):
    mailer = (f.message.get("x-mailer") or "").lower()
    # Windows Outlook Express always wrote <hex$hex$hex@host>; the Mac edition
    # left the Message-ID to the server
    if "outlook express" not in mailer or "macintosh" in mailer:
        return False
    mid = f.message.get("message-id") or ""
    if re.search(r"@(?:hotmail|msn)\.com>", mid, re.IGNORECASE):
        return False  # sent through Hotmail's HTTPMail, which assigns its own
    return not re.match(r"\s*<[0-9a-f]{6,}\$[0-9a-f]+\$[0-9a-f]+@", mid, re.IGNORECASE)


@rule("MIME_NO_VERSION", 0.5, "MIME headers without MIME-Version: (broken bulk mailer)")
def _mime_no_version(f):
    return (f.message.has("content-transfer-encoding") or f.message.content_type.startswith(
        ("multipart/", "text/html"))) and not f.message.has("mime-version")


_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")
_LATIN = re.compile(r"[A-Za-z]")
_WORDS = re.compile(r"[^\W\d_]+", re.UNICODE)


def _mixed_script_words(text):
    count = 0
    for word in _WORDS.findall(text):
        if len(word) >= 3 and _LATIN.search(word) and _CYRILLIC_GREEK.search(word):
            count += 1
    return count


@rule("SUBJ_MIXED_SCRIPT", 2.0, "Subject: hides Cyrillic or Greek look-alikes in Latin words")
def _subj_mixed_script(f):
    return _mixed_script_words(f.subject) >= 1


@rule("FROM_MIXED_SCRIPT", 2.0, "From: name hides Cyrillic or Greek look-alikes in Latin words")
def _from_mixed_script(f):
    return _mixed_script_words(f.from_display) >= 1


# encoded-word abuse (RFC 2047)


def _encoded_words(f, name):
    return decode_header_value(f.message.get(name))


@rule("SUBJ_NEEDLESS_ENCODING", 1.0, "Subject: is RFC 2047-encoded although it is plain ASCII")
def _subj_needless(f):
    text, words = _encoded_words(f, "subject")
    return bool(words) and text.isascii() and len(text.strip()) >= 8


@rule("FROM_NEEDLESS_ENCODING", 1.0, "From: name is RFC 2047-encoded although it is plain ASCII")
def _from_needless(f):
    _, words = _encoded_words(f, "from")
    display = f.from_display
    return bool(words) and display.isascii() and len(display) >= 4


@rule("ENCODED_WORD_MALFORMED", 1.0, "Header with broken or unknown-charset RFC 2047 words")
def _encoded_malformed(f):
    for name in ("subject", "from", "to"):
        raw = f.message.get(name)
        if not raw:
            continue
        text, words = _encoded_words(f, name)
        if words and ("\ufffd" in text or "=?" in text):
            return True
        if re.search(r"\?=\s*@", raw):
            return True  # an encoded word inside an address (RFC 2047 §5)
        for charset, _ in words:
            try:
                "".encode(charset.split("*")[0])
            except LookupError:
                return True
    return False


# Received chain


@rule("RCVD_FORGED_ORDER", 1.5, "Received: headers go back in time (a hop was forged)")
def _rcvd_order(f):
    dates = [h.date for h in f.hops if h.date is not None]
    # headers are newest first: a lower header dated a day after the one above it
    return any(lower - upper > 24 * 3600 for upper, lower in itertools.pairwise(dates))


_DYNAMIC_RDNS = re.compile(
    r"(?:^|[.-])(?:dyn(?:amic)?|dhcp|dsl|adsl|ppp|pool|dial(?:up)?|cable|client|cust(?:omer)?"
    r"|broadband|static-ip|host|ip)[.-]?\d|\d{1,3}[.-]\d{1,3}[.-]\d{1,3}[.-]\d{1,3}", re.IGNORECASE)


@rule("RCVD_DYNAMIC_HOST", 1.0, "Sent straight from a residential/dynamic address")
def _rcvd_dynamic(f):
    hop = _first_external(f)
    return hop is not None and bool(hop.rdns) and bool(_DYNAMIC_RDNS.search(hop.rdns))


@rule("RCVD_NO_RDNS", 0.5, "The sending host's address has no reverse DNS name")
def _rcvd_no_rdns(f):
    hop = _first_external(f)
    return hop is not None and not hop.rdns and not is_ip_literal(hop.helo) and \
        "." not in hop.helo.strip("[]")


@rule("RCVD_HELO_IP", 0.8, "The sending host greeted with a bare IP address or localhost")
def _rcvd_helo_ip(f):
    hop = _first_external(f)
    if hop is None:
        return False
    helo = hop.helo.strip("[]").lower()
    return is_ip_literal(helo) or helo in ("localhost", "localhost.localdomain")


def _first_external(f):
    """The hop where the message was handed to the receiving system: the
    topmost hop whose client had a public address. (Lower hops are the
    sender's own submission, where dynamic addresses are normal.)"""
    hops = f.external_hops
    return hops[0] if hops else None


# --- body -----------------------------------------------------------------------------


_LARGE_MONEY = Phrases([
    ("$", (r"\(?(?:us)?\$\s?\d{1,3}(?:[,. ]\d{3}){2,}"
           r"|\(?(?:us)?\$\s?\d+(?:[.,]\d+)?\s?m(?:illion)?\b")),
    ("€", r"€\s?\d{1,3}(?:[,. ]\d{3}){2,}"),
    ("£", r"£\s?\d{1,3}(?:[,. ]\d{3}){2,}"),
    ("usd", r"usd\s?\d{1,3}(?:[,. ]\d{3}){2,}"),
    ("eur", r"eur\s?\d{1,3}(?:[,. ]\d{3}){2,}"),
    ("illion", (r"\d+(?:[.,]\d+)?\s*(?:million|billion)\s*(?:us\s*)?(?:dollars|usd|euros?"
                r"|eur|pounds|\$|€)?")),
    ("miljoon", r"\d+(?:[.,]\d+)?\s*miljoonaa"),
    ("miljoner", r"\d+(?:[.,]\d+)?\s*miljoner"),
], word_start=False)


@rule("BODY_LARGE_MONEY", 1.0, "Talks of millions of dollars or euros")
def _large_money(f):
    return bool(f.phrases(_LARGE_MONEY))


_ADVANCE_FEE = _phrases(
    r"next of kin", r"(?:deceased|late) (?:client|husband|father|customer)",
    r"beneficiary", r"(?:transfer|remit) (?:of )?(?:the )?(?:funds?|sum|money)",
    r"foreign (?:partner|account)", r"strictly confidential", r"utmost (?:confidentiality|secrecy)",
    r"compensation (?:fund|payment)", r"unclaimed (?:funds?|inheritance|prize)",
    r"diplomatic (?:courier|agent)", r"consignment box", r"atm (?:card|visa card) (?:worth|of)",
    r"(?:percent|%) of the (?:total )?(?:sum|fund)", r"barrister", r"inheritance",
    r"(?:god|allah) bless you", r"(?:please|kindly) reply (?:urgently|immediately)")


@rule("BODY_ADVANCE_FEE", 2.0, "Advance-fee fraud wording (next of kin, transfer of funds ...)")
def _advance_fee(f):
    return len(f.phrases(_ADVANCE_FEE)) >= 2


_MONEY_PROMISE = _phrases(
    r"you (?:have )?(?:been selected|won)", r"claim your (?:prize|reward|gift|winnings)",
    r"(?:cash|lottery|sweepstakes?) (?:prize|winner|award)", r"winning (?:number|notification)",
    r"make (?:big )?money", r"earn (?:extra )?(?:cash|money|\$\d)", r"extra income",
    r"(?:work|working) from home", r"be your own boss", r"financial freedom",
    r"double your (?:money|income|bitcoin|crypto)", r"guaranteed (?:income|returns?|profit)",
    r"risk[- ]free", r"no (?:credit )?check", r"100% (?:free|guaranteed|satisfaction)",
    r"free (?:gift|trial|quote|consultation|access|membership|money|offer|investment)",
    r"(?:lowest|best) (?:price|rates?)", r"(?:cheap|discount) (?:meds|medications?|pills|rolex)",
    r"mortgage (?:rates?|approval|refinanc)", r"refinance", r"credit (?:card )?debt",
    r"consolidate (?:your )?debt", r"(?:pre-?)?approved (?:loan|for)", r"bad credit",
    r"investment opportunity", r"(?:bitcoin|crypto) (?:investment|trading|profit)",
    r"satisfaction guaranteed", r"money[- ]back guarantee", r"no (?:obligation|strings attached)",
    r"save (?:up to )?\d+%", r"\d+% off\b", r"free (?:shipping|samples?|report|software)",
    r"(?:lowest|best|wholesale) prices?", r"home[- ]based business", r"multi[- ]level marketing",
    r"(?:bulk|targeted|mass) e-?mail(?:ing|s)?", r"millions? of (?:e-?mail addresses|people|"
    r"customers)", r"e-?mail (?:addresses|marketing)", r"increase (?:your )?(?:sales|traffic)",
    r"miracle", r"amazing (?:results|offer|opportunity)", r"incredible (?:offer|deal)",
    r"(?:toll[- ]free|call now)", r"1-?8[0-8]{2}-?\d{3}-?\d{4}", r"apply (?:now|online)",
    r"while (?:they|stocks?) last", r"special promotion", r"no experience (?:needed|required)",
    r"join (?:for )?free", r"cash bonus", r"pennies a day", r"all natural",
    r"olet voittanut", r"voitit", r"onnittelut[,!]? (?:olet|voitit)", r"du har vunnit",
    r"grattis[,!]? du har")


@rule("BODY_MONEY_PROMISE", 0.7, "Promises winnings, easy money, cheap credit or free offers")
def _money_promise(f):
    return bool(f.phrases(_MONEY_PROMISE))


@rule("BODY_MANY_PROMISES", 1.5, "Four or more different spam promises")
def _many_promises(f):
    return len(f.phrases(_MONEY_PROMISE) | f.phrases(_PUSH)) >= 4


@rule("BODY_MANY_PROMISES_8", 1.0, "Eight or more different spam promises")
def _many_promises_8(f):
    return len(f.phrases(_MONEY_PROMISE) | f.phrases(_PUSH)) >= 8


_PUSH = _phrases(
    r"act now", r"order (?:now|today)", r"(?:buy|call|apply|sign up) (?:now|today)",
    r"limited time(?: offer| only)?", r"(?:offer|this) expires",
    r"don'?t (?:delete|miss) (?:this|out)",
    r"once in a lifetime", r"while supplies last", r"urgent(?:ly)? (?:reply|response|attention)",
    r"(?:click|tap) (?:here|below|the link)", r"dear (?:friend|sir/madam|beneficiary|winner)",
    r"this is not (?:a )?spam", r"not junk mail", r"you are receiving this (?:e-?mail )?because",
    r"opted[- ]in", r"(?:click|reply) (?:here |below )?to (?:cancel|be removed|opt[- ]out)",
    r"(?:with|put|type) (?:the word )?\"?remove\"? in the subject",
    r"to be removed from", r"remove (?:me|yourself) from", r"(?:reply|respond) with \"?remove",
    r"one[- ]time (?:mailing|e-?mail)", r"(?:sent|mailed) in compliance with",
    r"bill s\.? ?1618", r"this (?:e-?mail|message) (?:is|was) sent (?:to you )?(?:in|as) (?:an? )?"
    r"(?:advertisement|compliance)")


@rule("BODY_PUSHY", 0.8, "Pressure to act now, or spam's own excuses for itself")
def _pushy(f):
    return len(f.phrases(_PUSH)) >= 2


_PHARMA = _phrases(
    r"(?:viagra|cialis|levitra|kamagra|tramadol|xanax|valium|vicodin|oxycontin|phentermine"
    r"|penis|erection|erectile|prescription drugs?|online pharmacy|weight loss pills?"
    r"|lose (?:\d+(?:\.\d+)?\s?)?(?:pounds|lbs|kg|weight)|hgh|human growth hormone"
    r"|herbal (?:viagra|supplement))\b")


@rule("BODY_PHARMA", 1.5, "Pharmacy, potency or weight-loss offers")
def _pharma(f):
    return bool(f.phrases(_PHARMA))


_ADULT = _phrases(
    r"(?:xxx|porn\w*|hardcore|horny|sex(?:y)? (?:girls|teens|videos?)|adult (?:site|content|"
    r"movies?|videos?)|nude|naked (?:girls|women)|webcam girls?|lonely (?:wives|women)"
    r"|hot singles)\b")


@rule("BODY_ADULT", 1.5, "Sexual or adult-site advertising")
def _adult(f):
    return len(f.phrases(_ADULT)) >= 2


_PHISH = _phrases(
    r"verify your (?:account|identity|email|e-mail|mailbox|password|payment)",
    r"confirm your (?:account|identity|password|details|billing|payment|email|e-mail)",
    r"(?:update|validate|re-?activate|unlock) your (?:account|payment|billing|mailbox|details|"
    r"information|password)",
    r"your (?:account|mailbox|password|card|apple id|payment) (?:has been|was|is|will be) "
    r"(?:suspended|locked|disabled|limited|blocked|closed|deactivated|deleted|compromised|expired|"
    r"on hold)",
    r"unusual (?:sign-?in|login|activity)", r"suspicious (?:activity|sign-?in|login)",
    r"(?:mailbox|storage|e-?mail) (?:is )?(?:full|quota)",
    r"(?:password|account) (?:will )?expires?",
    r"failed (?:delivery|payment) attempt", r"(?:pending|undelivered|held) (?:messages?|parcel|"
    r"package|delivery)", r"(?:customs|delivery|shipping|redelivery) fee",
    r"within (?:24|48|72) hours", r"avoid (?:suspension|deactivation|termination)",
    r"(?:security|account) (?:alert|notice|update) ", r"sign in to (?:restore|continue|secure)",
    # Finnish and Swedish lures (parcel, tax refund, bank)
    r"vahvista (?:tilisi|henkilöllisyytesi|tietosi|sähköpostisi)", r"tilisi (?:on )?(?:suljettu|"
    r"lukittu|jäädytetty|vanhenee)", r"pakettisi (?:odottaa|on pysäytetty)", r"tullimaksu",
    r"toimitusmaksu", r"veronpalautus", r"päivitä (?:tietosi|maksutietosi|tilisi)",
    r"verifiera (?:ditt|din)", r"ditt (?:paket|konto) (?:väntar|har spärrats|är låst)",
    r"bekräfta (?:din|ditt) (?:identitet|konto)", r"skatteåterbäring")


@rule("BODY_PHISHING", 1.5, "Account-takeover lure: verify, suspended, mailbox full, parcel fee")
def _phishing(f):
    return len(f.phrases(_PHISH)) >= 2


@rule("BODY_PHISHING_LINK", 1.5, "Account-takeover lure together with a deceptive or IP link")
def _phishing_link(f):
    if not f.phrases(_PHISH):
        return False
    return (_link_mismatches(f) > 0 or any(_is_ip_host(h) for h in f.url_hosts)
            or any(organizational_domain(h) in URL_SHORTENERS for h in f.url_hosts)
            or f.message.html and any(h.password_inputs or h.forms for h in f.message.html))


_GREETING = re.compile(r"^\W*(?:dear|hello|hi|greetings)\s+(?:valued\s+)?(?:customer|user|client"
                       r"|member|account holder|friend|sir|madam|sir ?/ ?madam|beneficiary|"
                       r"e-?mail user|webmail user)\b"
                       r"|^\W*(?:hyvä|arvoisa)\s+(?:asiakas|käyttäjä)",
                       re.IGNORECASE | re.MULTILINE)


@rule("BODY_IMPERSONAL_GREETING", 0.5, "Addresses the reader as 'dear customer/user/friend'")
def _impersonal(f):
    return bool(_GREETING.search(f.text[:2000]))


@rule("BODY_SHOUTING", 1.0, "More than half of the text is in capitals")
def _shouting(f):
    return f.letters >= 200 and f.upper_ratio > 0.5


@rule("BODY_EXCLAIM", 0.5, "Many exclamation marks")
def _exclaim(f):
    return len(re.findall(r"!{2,}", f.text)) >= 3 or f.text.count("!") >= 15


_SPAM_WORDS = ("viagra", "cialis", "free", "money", "casino", "cash", "credit", "loan",
               "pharmacy", "bitcoin", "password", "account", "winner", "prize", "offer",
               "mortgage", "sex", "porn", "rolex", "replica", "click")
_LEET = {"a": "[a@4]", "e": "[e3]", "i": "[i1!|l]", "o": "[o0]", "s": "[s$5]", "l": "[l1|]"}


def _obfuscated_pattern(word):
    sep = r"[\s._*~\-]?"
    return sep.join(_LEET.get(c, re.escape(c)) for c in word)


_OBFUSCATED = re.compile(r"(?<![^\W_])(?:" + "|".join(_obfuscated_pattern(w) for w in _SPAM_WORDS)
                         + r")(?![^\W_])", re.IGNORECASE)


@rule("BODY_OBFUSCATED_WORDS", 2.0,
      "Spam words disguised with digits or separators (v1agra, f.r.e.e)")
def _obfuscated(f):
    count = 0
    for m in _OBFUSCATED.finditer(f.subject + "\n" + f.text[:20000]):
        found = m.group(0)
        if found.isalpha():
            continue  # the plain word is no disguise
        if re.fullmatch(r"[a-z]+(?: [a-z]+)+", found, re.IGNORECASE) and len(found) < 8:
            continue  # "a loan", ordinary words next to each other
        count += 1
        if count >= 2:
            return True
    return False


_SPACED = re.compile(r"(?<![\w.])(?:[A-Za-z] ){3,}[A-Za-z](?![\w.])")


@rule("BODY_SPACED_LETTERS", 0.5, "Words spelled out with spaces (F R E E) to dodge filters")
def _spaced(f):
    return len(_SPACED.findall(f.subject + "\n" + f.text[:50_000])) >= 2


@rule("BODY_MIXED_SCRIPT", 1.5, "Text hides Cyrillic or Greek look-alikes in Latin words")
def _body_mixed(f):
    return _mixed_script_words(f.text[:20000]) >= 3


_INVISIBLE_CHARS = re.compile(r"[A-Za-z][\u200b\u2060\ufeff\u200c\u200d\u00ad]+[A-Za-z]")


@rule("BODY_INVISIBLE_CHARS", 1.5, "Words broken up with zero-width or invisible characters")
def _invisible_chars(f):
    return len(_INVISIBLE_CHARS.findall(f.message.all_text[:100_000])) >= 5


@rule("BODY_UNSUBSCRIBE_NO_HEADER", 1.0,
      "Bulk mail with opt-out wording but no List-Unsubscribe: header (RFC 2369/8058)")
def _unsub_no_header(f):
    if f.message.has("list-unsubscribe") or f.message.has("list-id"):
        return False
    return bool(re.search(r"unsubscribe|opt[- ]?out|to be removed|remove (?:me|yourself)"
                          r"|no longer wish to receive|peruuta tilaus|avsluta prenumeration",
                          f.searchable))


@rule("BODY_EMPTY", 1.0, "No text at all, or only an attachment")
def _empty(f):
    return len(f.text.strip()) < 20 and not f.message.html_sources


# --- HTML -----------------------------------------------------------------------------


@rule("HTML_ONLY", 0.5, "HTML with no plain-text alternative")
def _html_only(f):
    return bool(f.message.html) and not f.message.text.strip()


@rule("HTML_IMAGE_ONLY", 1.5, "HTML that is images with almost no text")
def _image_only(f):
    html = f.message.html
    return bool(html) and sum(h.images for h in html) >= 1 and f.html_text_length < 200 \
        and len(f.message.text.strip()) < 200


@rule("HTML_HIDDEN_TEXT", 1.5, "HTML hides a lot of text from the reader")
def _hidden_text(f):
    for h in f.message.html:
        hidden = len(h.hidden_text)
        if hidden >= 300 and hidden > 0.3 * len(h.visible_text):
            return True
    return False


@rule("HTML_WORD_SPLIT", 1.5, "HTML comments split words so filters cannot read them")
def _word_split(f):
    return sum(h.word_splitting_comments for h in f.message.html) >= 3


@rule("HTML_PASSWORD_FIELD", 3.0, "Password field inside the mail (credential theft)")
def _html_password(f):
    return any(h.password_inputs for h in f.message.html)


@rule("HTML_FORM", 0.5, "HTML form inside the mail")
def _html_form(f):
    return any(h.forms for h in f.message.html)


@rule("HTML_SCRIPT", 1.0, "Scripts or event handlers in HTML mail")
def _html_script(f):
    return any(h.scripts for h in f.message.html)


@rule("HTML_TEXT_MISMATCH", 0.7, "The plain-text and HTML versions say different things")
def _alt_mismatch(f):
    return f.message.alternative_mismatch


# URLs

URL_SHORTENERS = frozenset(_names("""
bit.ly bitly.com tinyurl.com goo.gl ow.ly is.gd buff.ly rebrand.ly cutt.ly
shorturl.at tiny.cc rb.gy t.ly s.id v.gd qr.ae adf.ly shorte.st bc.vc soo.gd clck.ru
u.to
"""))
ABUSED_TLDS = frozenset(_names("""
top xyz click icu buzz monster rest cfd sbs quest zip mov country gq tk ml cf ga
work loan men date racing win bid stream download review kim party science cam surf
lol
"""))


def _is_ip_host(host):
    return is_ip_literal(host)


_DECIMAL_HOST = re.compile(r"^(?:0x[0-9a-f]+|\d{8,10}|0\d+(?:\.0\d+){3})$", re.IGNORECASE)


@rule("URI_IP_ADDRESS", 1.5, "Links to a bare IP address")
def _uri_ip(f):
    return any(_is_ip_host(h) and is_public_ip(h.strip("[]")) for h in f.url_hosts)


@rule("URI_SHORTENER", 0.8, "Links through a URL shortener that hides the destination")
def _uri_shortener(f):
    return any(h in URL_SHORTENERS or organizational_domain(h) in URL_SHORTENERS
               for h in f.url_hosts)


@rule("URI_ABUSED_TLD", 0.8, "Links to a top-level domain mostly used by spammers")
def _uri_tld(f):
    return any(h.rpartition(".")[2] in ABUSED_TLDS for h in f.url_hosts)


@rule("URI_OBFUSCATED", 2.0, "Link host disguised (user@host trick, encoded or numeric host)")
def _uri_obfuscated(f):
    for url in f.urls:
        m = re.match(r"(?i)\s*https?://([^/?#]*)", url)
        if not m:
            continue
        authority = m.group(1)
        if "@" in authority:
            return True
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        if "%" in host or _DECIMAL_HOST.match(host):
            return True
    return False


def _shown_host(text):
    """The host a link's text shows, if the text looks like an address."""
    m = re.search(r"(?i)(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,})(?:[/:]\S*)?$", text.strip())
    if not m or " " in text.strip():
        return ""
    if "@" in text:
        return ""
    return m.group(1).lower()


def _link_mismatches(f):
    count = 0
    for link in f.message.links:
        shown = _shown_host(link.text)
        real = url_host(link.href)
        if not shown or not real:
            continue
        if organizational_domain(shown) != organizational_domain(real):
            count += 1
    return count


@rule("HTML_LINK_MISMATCH", 1.0, "A link shows one address but goes to another domain")
def _link_mismatch(f):
    return _link_mismatches(f) >= 1


@rule("HTML_LINK_HTTPS_TO_HTTP", 1.0, "A link shows https:// but goes to plain http or an IP")
def _https_to_http(f):
    for link in f.message.links:
        if link.text.lower().startswith("https://"):
            href = link.href.lower().strip()
            if href.startswith("http://") or _is_ip_host(url_host(link.href)):
                return True
    return False


# --- MIME structure --------------------------------------------------------------------

EXECUTABLE_EXTENSIONS = frozenset(_names("""
exe scr pif com bat cmd vbs vbe js jse wsf wsh hta msi msp lnk jar ps1 psm1 cpl reg
dll scf inf iso img vhd vhdx appx appxbundle msix gadget application
"""))
HTML_EXTENSIONS = frozenset(_names("""
htm html shtml xhtml svg mht mhtml
"""))
MACRO_EXTENSIONS = frozenset(_names("""
docm xlsm pptm dotm xltm xlam ppsm
"""))
_DOCUMENT_EXTENSIONS = frozenset(_names("""
pdf doc docx xls xlsx ppt pptx txt rtf jpg jpeg png gif bmp tif tiff zip rar 7z odt
ods
"""))


def _extension(filename):
    name = filename.strip().strip('"').lower()
    return name.rpartition(".")[2] if "." in name else ""


@rule("MIME_EXECUTABLE", 3.5, "Executable or script attachment (.exe, .js, .lnk, .iso ...)")
def _mime_executable(f):
    return any(_extension(a.filename) in EXECUTABLE_EXTENSIONS
               or a.head.startswith(b"MZ") and len(a.head) >= 64
               for a in f.message.attachments)


@rule("MIME_DOUBLE_EXTENSION", 2.0, "Attachment name hides its real type (invoice.pdf.exe)")
def _double_ext(f):
    for a in f.message.attachments:
        parts = a.filename.strip().strip('"').lower().split(".")
        if len(parts) >= 3 and parts[-2] in _DOCUMENT_EXTENSIONS and \
                parts[-1] in EXECUTABLE_EXTENSIONS | HTML_EXTENSIONS:
            return True
        if re.search(r"\s{5,}\.", a.filename) or "\u202e" in a.filename:
            return True
    return False


@rule("MIME_HTML_ATTACHMENT", 1.5, "HTML or SVG file attached (phishing page in an attachment)")
def _html_attachment(f):
    return any(_extension(a.filename) in HTML_EXTENSIONS for a in f.message.attachments)


_ACTIVE_PAGE = re.compile(rb"<script|<form|javascript:|window\.location|location\.(?:href|replace)"
                          rb"|\batob\(|http-equiv=[\"']?refresh|document\.write", re.IGNORECASE)


@rule("MIME_HTML_ATTACHMENT_ACTIVE", 2.0,
      "Attached web page runs scripts, redirects or asks for input (HTML smuggling)")
def _html_attachment_active(f):
    return any((_extension(a.filename) in HTML_EXTENSIONS
                or a.content_type in ("text/html", "image/svg+xml"))
               and _ACTIVE_PAGE.search(a.head) for a in f.message.attachments)


@rule("MIME_MACRO_DOCUMENT", 1.0, "Office document with macros attached")
def _macro(f):
    return any(_extension(a.filename) in MACRO_EXTENSIONS for a in f.message.attachments)


_MAGIC = ((b"MZ", "exe"), (b"%PDF", "pdf"), (b"PK\x03\x04", "zip"), (b"\x89PNG", "png"),
          (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"), (b"Rar!", "rar"),
          (b"\xd0\xcf\x11\xe0", "ole"), (b"7z\xbc\xaf", "7z"))
_FAMILY = {"pdf": {"pdf"}, "zip": {"zip", "docx", "xlsx", "pptx", "odt", "ods", "jar",
                                   "docm", "xlsm", "pptm", "apk", "epub"},
           "png": {"png"}, "jpg": {"jpg", "jpeg"}, "gif": {"gif"}, "rar": {"rar"},
           "ole": {"doc", "xls", "ppt", "msg", "msi"}, "7z": {"7z"},
           "exe": EXECUTABLE_EXTENSIONS}


@rule("MIME_TYPE_MISMATCH", 2.0, "Attachment content is not what its name or type says")
def _type_mismatch(f):
    for a in f.message.attachments:
        ext = _extension(a.filename)
        if not ext or not a.head:
            continue
        for magic, kind in _MAGIC:
            if a.head.startswith(magic):
                known = set().union(*_FAMILY.values())
                if ext in known and ext not in _FAMILY[kind]:
                    return True
                break
    return False


@rule("MIME_BROKEN_MULTIPART", 1.0, "Multipart message with a missing or absent boundary")
def _broken_multipart(f):
    return f.message.broken_multipart


@rule("MIME_BASE64_TEXT", 0.5, "Plain ASCII text needlessly encoded in base64")
def _base64_text(f):
    return f.message.ascii_base64_text


# --- authentication results (filled in by the filter's DNS checks) ----------------------


def _auth(f, attr):
    return getattr(f.auth, attr, None) if f.auth is not None else None


@rule("SPF_FAIL", 1.5, "SPF: the sender's domain says this host may not send its mail")
def _spf_fail(f):
    return _auth(f, "spf") == "fail"


@rule("SPF_SOFTFAIL", 0.5, "SPF: the sender's domain doubts this host (~all)")
def _spf_softfail(f):
    return _auth(f, "spf") == "softfail"


@rule("SPF_PASS", -0.1, "SPF: the sender's domain authorizes this host")
def _spf_pass(f):
    return _auth(f, "spf") == "pass"


@rule("DKIM_VALID", -0.1, "A valid DKIM signature")
def _dkim_valid(f):
    return any(r == "pass" for _, r in _auth(f, "dkim") or ())


@rule("DKIM_VALID_AUTHOR", -0.3, "A valid DKIM signature of the From: domain")
def _dkim_valid_author(f):
    return any(r == "pass" and organizational_domain(d) == organizational_domain(f.from_domain)
               for d, r in _auth(f, "dkim") or ()) if f.from_domain else False


@rule("DKIM_INVALID", 0.3, "A DKIM signature that does not verify")
def _dkim_invalid(f):
    results = _auth(f, "dkim") or ()
    return any(r == "fail" for _, r in results) and not any(r == "pass" for _, r in results)


@rule("DMARC_REJECT", 3.5, "DMARC fails and the From: domain asks to reject such mail")
def _dmarc_reject(f):
    return _auth(f, "dmarc") == ("fail", "reject")


@rule("DMARC_QUARANTINE", 2.0, "DMARC fails and the From: domain asks to quarantine such mail")
def _dmarc_quarantine(f):
    return _auth(f, "dmarc") == ("fail", "quarantine")


@rule("DMARC_NONE_FAIL", 0.3, "DMARC fails (the From: domain publishes p=none)")
def _dmarc_none(f):
    return _auth(f, "dmarc") == ("fail", "none")


@rule("DMARC_PASS", -0.2, "DMARC passes for the From: domain")
def _dmarc_pass(f):
    result = _auth(f, "dmarc")
    return bool(result) and result[0] == "pass"
