"""The learning part of the spam filter: a token classifier in the style of
SpamBayes (Robinson's f(w) with Fisher's chi-squared combining).

Owns the tokenizer and the arithmetic; the counts live in an
``ISpamStatsStore``. Invariants:

- tokens are stored as 64-bit hashes (``token_hash``), never as text: the
  database holds no readable words of anyone's mail;
- the headers this service adds itself (``X-Spam-*``, ``Authentication-
  Results``, ``Return-Path``) and our own top ``Received:`` are never
  tokens, so the classifier cannot learn its own verdicts;
- pure: tokenizing and classifying do no I/O.
"""

import hashlib
import math
import re

import attrs

from ktmail.services.spam.facts import Facts, organizational_domain

#: the global statistics (per-mailbox statistics use the mailbox id, > 0)
GLOBAL_SCOPE = 0
#: messages of each class a scope needs before its opinion is used
MIN_SPAM = 30
MIN_HAM = 30
#: Robinson's strength of the 0.5 prior and the prior itself
_STRENGTH = 0.45
_PRIOR = 0.5
#: tokens whose probability is closer to 0.5 than this say nothing
_MIN_DISTANCE = 0.1
#: at most this many of the strongest tokens decide (SpamBayes's 150 was for
#: single words; with the word pairs a message has about twice the tokens)
_MAX_CLUES = 300
#: at most this many distinct tokens per message
MAX_TOKENS = 3000

_IGNORED_HEADERS = frozenset({
    "x-spam-status", "x-spam-score", "x-spam-flag", "x-spam-level", "x-spam-checker-version",
    "authentication-results", "return-path", "received", "delivered-to", "x-original-to",
    "status", "x-status", "x-keywords", "x-uid", "content-length", "lines", "x-ktmail-spam"})
_TEXT_WORD = re.compile(r"\S+")
#: scripts written without spaces between words (Han, kana) and Hangul
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
_STRIP = "\"'()[]{}<>,.;:!?*`"


def token_hash(token):
    """A token's stored identity: a signed 64-bit integer."""
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _words(text, prefix="", pairs=False):
    """The word tokens of ``text``; with ``pairs`` also each pair of
    neighbouring words ("bi:free money"), which carries what a single word
    cannot ("click here" vs "here" and "click" in a thread about a UI)."""
    previous = None
    for raw in _TEXT_WORD.findall(text):
        if not raw.isascii() and _CJK.search(raw):
            # no spaces between the words: each two neighbouring characters
            # are a token (as Lucene's CJK analyzer does), the rest as usual
            previous = None
            for run in _CJK.findall(raw):
                if len(run) == 1:
                    yield prefix + run
                for i in range(len(run) - 1):
                    yield prefix + run[i:i + 2]
            yield from _words(_CJK.sub(" ", raw), prefix)
            continue
        word = raw.strip(_STRIP).lower()
        n = len(word)
        if n < 3:
            continue
        if n > 12:
            previous = None
            if "@" in word:
                yield prefix + "email:" + word.rpartition("@")[2]
            elif word.startswith(("http:", "https:", "www.")):
                continue  # URLs are tokenized from their host
            else:
                yield f"{prefix}skip:{word[0]} {n // 10 * 10}"
            continue
        yield prefix + word
        if pairs:
            if previous is not None:
                yield f"{prefix}bi:{previous} {word}"
            previous = word


def _shape(text):
    """Letters -> a, digits -> 9, runs collapsed: 'hugh5546x73' -> 'a9a9'."""
    return re.sub(r"(.)\1+", r"\1", re.sub(r"[^\W\d_]", "a", re.sub(r"\d", "9", text)))


def tokenize(message):
    """The distinct tokens of a ParsedMessage (at most MAX_TOKENS)."""
    facts = Facts(message)
    tokens = set()
    add = tokens.add
    for word in _words(facts.subject, "subject:", pairs=True):
        add(word)
    for name, value in message.headers[:100]:
        if name in _IGNORED_HEADERS or name.startswith("x-spam"):
            continue
        add("header:" + name)
    if facts.from_domain:
        add("from:" + facts.from_domain)
        add("from-org:" + organizational_domain(facts.from_domain))
    if facts.from_display:
        for word in _words(facts.from_display, "fromname:"):
            add(word)
    if facts.reply_to_domain:
        add("reply-to:" + facts.reply_to_domain)
    if facts.from_addr:
        add("from-local-shape:" + _shape(facts.from_addr.partition("@")[0]))
    mid = message.get("message-id") or ""
    add("mid-shape:" + _shape(mid.strip().strip("<>").partition("@")[0])[:12])
    add("mid-domain:" + organizational_domain(mid.strip().strip("<>").rpartition("@")[2]))
    recipients = sum(len(v.split(",")) for n, v in message.headers if n in ("to", "cc"))
    add(f"recipients:{min(recipients, 10)}")
    subject = facts.subject
    for run in re.findall(r"[!?$%*]{2,}|[A-Z]{4,}", subject):
        add("subject-run:" + (run[:3] if not run.isalpha() else "CAPS"))
    mailer = message.get("x-mailer") or message.get("user-agent")
    if mailer:
        add("mailer:" + " ".join(mailer.split()[:2]).lower()[:40])
    for ctype, charset, cte in message.parts[:20]:
        add("ctype:" + ctype)
        if charset:
            add("charset:" + charset.lower())
        if cte:
            add("cte:" + cte)
    for attachment in message.attachments[:20]:
        add("attach:" + attachment.filename.rpartition(".")[2].lower()[:10])
    for hop in facts.hops[1:6]:
        if hop.rdns:
            add("rcvd:" + organizational_domain(hop.rdns))
        if hop.ip and "." in hop.ip:
            add("rcvd-ip:" + ".".join(hop.ip.split(".")[:2]))
    for host in facts.url_hosts[:200]:
        labels = host.split(".")
        for i in range(max(0, len(labels) - 4), len(labels) - 1):
            add("url:" + ".".join(labels[i:]))
    for h in message.html:
        if h.images:
            add("html:images")
        if h.hidden_text:
            for word in _words(h.hidden_text[:5000], "hidden:"):
                add(word)
    text = facts.text[:100_000]
    if message.text.strip() and message.html:
        # the HTML of a multipart/alternative is what most readers see, and
        # may say what its plain text does not
        text += "\n" + "\n".join(h.visible_text for h in message.html)[:50_000]
    for word in _words(text, pairs=True):
        add(word)
        if len(tokens) >= MAX_TOKENS:
            break
    return tokens


def tokenize_hashed(message):
    return sorted({token_hash(t) for t in tokenize(message)})


@attrs.frozen
class BayesStats:
    """What one scope has learned about one message's tokens."""

    nspam: int
    nham: int
    #: token hash -> (spam count, ham count), for the tokens seen before
    counts: dict = attrs.field(factory=dict, eq=False)
    scope: int = GLOBAL_SCOPE

    def trained_enough(self):
        return self.nspam >= MIN_SPAM and self.nham >= MIN_HAM


def _chi2q(x2, v):
    """P(chi-squared with v degrees of freedom >= x2), v even."""
    m = x2 / 2.0
    total = term = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_probability(spam, ham, nspam, nham):
    """Robinson's f(w): the spam probability of a token, pulled to 0.5 when rare."""
    spam_ratio = spam / nspam if nspam else 0.0
    ham_ratio = ham / nham if nham else 0.0
    if spam_ratio + ham_ratio == 0:
        return _PRIOR
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam + ham
    return (_STRENGTH * _PRIOR + n * p) / (_STRENGTH + n)


def spam_probability(stats):
    """0.0 (ham) .. 1.0 (spam), or None when the scope has not learned enough."""
    if stats is None or not stats.trained_enough():
        return None
    clues = []
    for spam, ham in stats.counts.values():
        p = token_probability(spam, ham, stats.nspam, stats.nham)
        if abs(p - 0.5) >= _MIN_DISTANCE:
            clues.append(p)
    if not clues:
        return 0.5
    clues.sort(key=lambda p: -abs(p - 0.5))
    clues = clues[:_MAX_CLUES]
    ln_spam = sum(math.log(1.0 - p) for p in clues)
    ln_ham = sum(math.log(p) for p in clues)
    n = len(clues)
    s = 1.0 - _chi2q(-2.0 * ln_spam, 2 * n)
    h = 1.0 - _chi2q(-2.0 * ln_ham, 2 * n)
    return (s - h + 1.0) / 2.0


def choose_stats(by_scope, mailbox_scope):
    """The mailbox's own statistics when it has learned enough, else the global."""
    own = by_scope.get(mailbox_scope)
    if own is not None and own.trained_enough():
        return own
    return by_scope.get(GLOBAL_SCOPE)


def message_key(message):
    """A stable identity of a message for 'learned already' records."""
    parts = [message.get("message-id") or "", message.get("date") or "",
             message.subject, message.text[:4000]]
    for source in message.html_sources[:1]:
        parts.append(source[:4000])
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:32]
