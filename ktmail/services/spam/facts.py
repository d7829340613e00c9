"""Derived facts about one parsed message, computed once and shared by the
rules (addresses, domains, dates, Received hops, URLs, text statistics).

Pure: no I/O and no clock. Times come from the message itself (its
topmost Received: header, which the receiving server wrote) so that a
message is judged the same way today and in a year.
"""

import email.utils
import functools
import ipaddress
import re

import attrs

from ktmail.services.spam.message import url_host


def _names(text):
    """A whitespace-separated list of names, written as a block of text."""
    return text.split()


FREEMAIL_DOMAINS = frozenset(_names("""
gmail.com googlemail.com yahoo.com yahoo.co.uk yahoo.fr yahoo.de yahoo.se ymail.com
rocketmail.com hotmail.com hotmail.co.uk hotmail.fr hotmail.de hotmail.se hotmail.fi
outlook.com outlook.fr outlook.de live.com live.fi live.se msn.com aol.com aim.com
gmx.com gmx.net gmx.de web.de mail.com email.com mail.ru inbox.ru list.ru bk.ru
yandex.ru yandex.com protonmail.com proton.me pm.me icloud.com me.com mac.com
zoho.com qq.com 163.com 126.com sina.com rediffmail.com tutanota.com tuta.io
libero.it virgilio.it laposte.net orange.fr wanadoo.fr t-online.de seznam.cz wp.pl
o2.pl interia.pl suomi24.fi luukku.com excite.com lycos.com usa.com gmx.at
"""))

#: second-level labels under which ccTLD registrations sit (co.uk, com.au ...)
_GENERIC_SECOND_LEVEL = frozenset(_names("""
co com net org gov edu ac ne or go mil gob nic ltd plc sch biz info
"""))


def organizational_domain(host):
    """Approximate registered domain of a host name (without a public
    suffix list: two labels, three under ``co.uk``-style suffixes)."""
    labels = [label for label in host.lower().rstrip(".").split(".") if label]
    if len(labels) <= 2:
        return ".".join(labels)
    if len(labels[-1]) == 2 and labels[-2] in _GENERIC_SECOND_LEVEL:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def domain_of(address):
    return address.rpartition("@")[2].strip().strip(">").lower() if "@" in address else ""


def is_ip_literal(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


@attrs.frozen
class Hop:
    """One ``Received:`` header, as far as it could be read."""

    helo: str
    rdns: str
    ip: str
    date: float | None


_RCVD_FROM = re.compile(
    r"""^\s*from\s+(?P<helo>\S+)                       # HELO/EHLO name
        (?:\s+\((?P<paren>[^)]*)\))?""", re.IGNORECASE | re.VERBOSE)
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_IPV6 = re.compile(r"\[(?:IPv6:)?([0-9a-fA-F:]+:[0-9a-fA-F:.]+)\]")


def parse_received(value):
    value = " ".join(value.split())
    date = None
    head, semi, tail = value.rpartition(";")
    if semi:
        parsed = email.utils.parsedate_tz(tail.strip())
        if parsed:
            try:
                date = float(email.utils.mktime_tz(parsed))
            except (OverflowError, ValueError):
                date = None
    else:
        head = value
    m = _RCVD_FROM.match(head)
    helo = rdns = ip = ""
    if m:
        helo = m.group("helo").strip("()").lower()
        paren = m.group("paren") or ""
        ipm = _IPV4.search(paren) or _IPV6.search(paren)
        if ipm:
            ip = ipm.group(1)
        words = [w for w in re.split(r"[\s\[\]()]+", paren) if w]
        for w in words:
            w = w.lower().rstrip(".")
            if "@" in w:
                w = w.rpartition("@")[2]
            if "." in w and not is_ip_literal(w) and not w.startswith("helo="):
                rdns = w
                break
        if not ip and is_ip_literal(helo):
            ip = helo.strip("[]")
    return Hop(helo=helo, rdns=rdns, ip=ip, date=date)


def is_public_ip(text):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.is_global


_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_UPPER = re.compile(r"[A-ZÀ-ÖØ-Þ]")


class Facts:
    """Lazily computed facts about one message (and its auth results)."""

    def __init__(self, message, auth=None):
        self.message = message
        self.auth = auth
        #: the Bayes spam probability, set by the scorer (None: no opinion)
        self.bayes = None
        self._phrases = {}

    def phrases(self, pattern):
        """The distinct (lower-case) matches of ``pattern`` in subject and text."""
        found = self._phrases.get(pattern)
        if found is None:
            found = self._phrases[pattern] = frozenset(
                m.group(0).lower() for m in pattern.finditer(self.searchable))
        return found

    # --- addresses -------------------------------------------------------------

    @functools.cached_property
    def from_display(self):
        return self.message.address("from")[0]

    @functools.cached_property
    def from_addr(self):
        return self.message.address("from")[1]

    @functools.cached_property
    def from_domain(self):
        return domain_of(self.from_addr)

    @functools.cached_property
    def reply_to_addr(self):
        return self.message.address("reply-to")[1]

    @functools.cached_property
    def reply_to_domain(self):
        return domain_of(self.reply_to_addr)

    # --- dates -------------------------------------------------------------------

    @functools.cached_property
    def date(self):
        """The Date: header as POSIX seconds; None if missing or unreadable."""
        raw = self.message.get("date")
        if raw is None:
            return None
        parsed = email.utils.parsedate_tz(" ".join(raw.split()))
        if not parsed:
            return None
        try:
            return float(email.utils.mktime_tz(parsed))
        except (OverflowError, ValueError):
            return None

    @functools.cached_property
    def hops(self):
        return [parse_received(v) for v in self.message.get_all("received")[:30]]

    @functools.cached_property
    def received_at(self):
        """When the receiving server got the message: the topmost dated hop."""
        for hop in self.hops:
            if hop.date is not None:
                return hop.date
        return None

    @functools.cached_property
    def external_hops(self):
        """Hops whose connecting client had a public IP address."""
        return [h for h in self.hops if h.ip and is_public_ip(h.ip)]

    # --- text ------------------------------------------------------------------------

    @functools.cached_property
    def subject(self):
        return self.message.subject

    @functools.cached_property
    def text(self):
        """What the reader sees (plain, else HTML text), bounded."""
        return self.message.visible_text[:100_000]

    @functools.cached_property
    def text_lower(self):
        return self.text.lower()

    @functools.cached_property
    def searchable(self):
        """Subject and visible text, lower-case, whitespace collapsed."""
        return " ".join((self.subject + "\n" + self.text).lower().split())

    @functools.cached_property
    def letters(self):
        """Letters in (the first 20,000 characters of) the text."""
        return len(_LETTER.findall(self.text[:20_000]))

    @functools.cached_property
    def upper_ratio(self):
        letters = self.letters
        return len(_UPPER.findall(self.text[:20_000])) / letters if letters else 0.0

    # --- URLs --------------------------------------------------------------------------

    @functools.cached_property
    def urls(self):
        return self.message.urls[:500]

    @functools.cached_property
    def url_hosts(self):
        return [h for h in (url_host(u) for u in self.urls) if h]

    @functools.cached_property
    def html_text_length(self):
        return sum(len(h.visible_text) for h in self.message.html)
