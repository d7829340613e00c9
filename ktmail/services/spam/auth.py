"""Sender authentication for the spam filter: SPF (RFC 7208), DKIM
(RFC 6376, verified by dkimpy) and DMARC (RFC 7489), over an injected DNS
resolver.

Owns the evaluation; DNS is reached only through a ``DNSResolver``
(``TwistedNamesResolver`` adapts ``twisted.names``; tests use a stub), so
nothing here opens a socket of its own. Invariants:

- every check is bounded: SPF stops after 10 DNS-querying terms and 2
  void lookups (RFC 7208 §4.6.4), at most 3 DKIM signatures are verified,
  and the caller puts a deadline on the whole;
- a DNS failure is never held against the sender: it gives ``temperror``,
  which no rule scores;
- DKIM's RSA/hash work runs in a thread (``run_in_thread``).
"""

import ipaddress
import re

import attrs
import dkim
from twisted.internet import defer
from twisted.logger import Logger

from ktmail.services import deferred
from ktmail.services.spam.facts import organizational_domain

log = Logger()

#: DKIM is verified only for messages up to this size (the body hash needs all of it)
DKIM_MAX_BYTES = 8 * 1024 * 1024
MAX_DKIM_SIGNATURES = 3
_SPF_MAX_LOOKUPS = 10
_SPF_MAX_VOID = 2


class DNSTempError(Exception):
    """The DNS answer could not be had now (timeout, SERVFAIL)."""


class DNSResolver:
    """What the checks need from DNS. Each method returns a Deferred that
    fires with a list ([] for NXDOMAIN or no data) or fails with
    DNSTempError. Subclass or duck-type it."""

    def txt(self, name):
        raise NotImplementedError

    def a(self, name):
        raise NotImplementedError

    def aaaa(self, name):
        raise NotImplementedError

    def mx(self, name):
        """-> host names, best preference first."""
        raise NotImplementedError

    def ptr(self, ip):
        raise NotImplementedError


class TwistedNamesResolver(DNSResolver):
    """DNSResolver over a twisted.names IResolver (e.g. client.createResolver())."""

    def __init__(self, resolver):
        self._resolver = resolver

    def _lookup(self, method, name, extract):
        from twisted.names import error

        def answers(result):
            records, _authority, _additional = result
            return [extract(r.payload) for r in records if r.type == wanted(records)]

        def wanted(records):
            return {"lookupText": 16, "lookupAddress": 1, "lookupIPV6Address": 28,
                    "lookupMailExchange": 15, "lookupPointer": 12}[method]

        def failed(failure):
            if failure.check(error.DNSNameError):
                return []
            if failure.check(error.DNSQueryTimeoutError, error.DNSServerError,
                             error.DNSUnknownError, defer.TimeoutError):
                raise DNSTempError(str(failure.value))
            if failure.check(error.DomainError, error.AuthoritativeDomainError):
                return []
            raise DNSTempError(failure.getErrorMessage())

        d = getattr(self._resolver, method)(name)
        d.addCallbacks(answers, failed)
        return d

    def txt(self, name):
        return self._lookup("lookupText", name, lambda p: b"".join(p.data).decode(
            "utf-8", "replace"))

    def a(self, name):
        return self._lookup("lookupAddress", name, lambda p: p.dottedQuad())

    def aaaa(self, name):
        import socket
        return self._lookup("lookupIPV6Address", name,
                            lambda p: socket.inet_ntop(socket.AF_INET6, p.address))

    def mx(self, name):
        d = self._lookup("lookupMailExchange", name, lambda p: (p.preference, p.name.name))
        d.addCallback(lambda found: [host.decode("ascii", "replace") if isinstance(host, bytes)
                                     else host for _, host in sorted(found)])
        return d

    def ptr(self, ip):
        name = ipaddress.ip_address(ip).reverse_pointer
        return self._lookup("lookupPointer", name, lambda p: p.name.name.decode(
            "ascii", "replace"))


@attrs.frozen
class AuthResults:
    """What the authentication checks found (None: not checked)."""

    spf: str | None = None                 # pass fail softfail neutral none temperror permerror
    spf_domain: str = ""
    dkim: tuple = ()                       # ((domain, pass|fail|temperror), ...)
    dmarc: tuple | None = None             # (pass|fail, policy) or None: no DMARC record
    from_domain: str = ""

    def header_value(self, authserv_id):
        """RFC 8601 Authentication-Results: value."""
        parts = [authserv_id]
        if self.spf is not None:
            parts.append(f"spf={self.spf} smtp.mailfrom={self.spf_domain or 'unknown'}")
        for domain, result in self.dkim:
            parts.append(f"dkim={result} header.d={domain}")
        if not self.dkim:
            parts.append("dkim=none")
        if self.dmarc is not None:
            parts.append(f"dmarc={self.dmarc[0]} (p={self.dmarc[1]}) "
                         f"header.from={self.from_domain}")
        elif self.from_domain:
            parts.append(f"dmarc=none header.from={self.from_domain}")
        return ";\r\n\t".join(parts)


# --- SPF (RFC 7208) ---------------------------------------------------------------------


class _SPFError(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MACRO = re.compile(r"%\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-", re.IGNORECASE)


class SPFCheck:
    """One check_host() evaluation with its shared lookup budget."""

    def __init__(self, resolver, ip, sender, helo):
        self.resolver = resolver
        self.ip = ipaddress.ip_address(ip)
        if isinstance(self.ip, ipaddress.IPv6Address) and self.ip.ipv4_mapped:
            self.ip = self.ip.ipv4_mapped
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.void = 0

    def _count(self):
        self.lookups += 1
        if self.lookups > _SPF_MAX_LOOKUPS:
            raise _SPFError("permerror")

    async def _query(self, method, name):
        try:
            found = await getattr(self.resolver, method)(name)
        except DNSTempError:
            raise _SPFError("temperror") from None
        if not found:
            self.void += 1
            if self.void > _SPF_MAX_VOID:
                raise _SPFError("permerror")
        return found

    def expand(self, spec, domain):
        local, _, sender_domain = self.sender.rpartition("@")

        def value(letter):
            letter = letter.lower()
            if letter == "s":
                return self.sender
            if letter == "l":
                return local or "postmaster"
            if letter == "o":
                return sender_domain
            if letter == "d":
                return domain
            if letter == "i":
                if self.ip.version == 4:
                    return str(self.ip)
                return ".".join(self.ip.exploded.replace(":", ""))
            if letter == "v":
                return "in-addr" if self.ip.version == 4 else "ip6"
            if letter == "h":
                return self.helo
            if letter == "p":
                return "unknown"
            return ""

        def replace(m):
            token = m.group(0)
            if token == "%%":
                return "%"
            if token == "%_":
                return " "
            if token == "%-":
                return "%20"
            letter, digits, reverse, delimiters = m.groups()
            parts = re.split("[" + re.escape(delimiters or ".") + "]", value(letter))
            if reverse:
                parts.reverse()
            if digits:
                parts = parts[-int(digits):] if int(digits) else parts
            return ".".join(parts)

        if "%" in _MACRO.sub("", spec):
            raise _SPFError("permerror")
        return _MACRO.sub(replace, spec)

    async def check_host(self, domain, depth=0):
        if depth > 10:
            raise _SPFError("permerror")
        records = [r for r in await self._query_txt(domain)
                   if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
        if not records:
            return "none"
        if len(records) > 1:
            return "permerror"
        terms = records[0].split()[1:]
        redirect = None
        for term in terms:
            if "=" in term and ":" not in term.split("=", 1)[0]:
                name, value = term.split("=", 1)
                if name.lower() == "redirect":
                    redirect = value
                continue
            qualifier = "+"
            if term[0] in _QUALIFIERS:
                qualifier, term = term[0], term[1:]
            if await self._matches(term, domain, depth):
                return _QUALIFIERS[qualifier]
        if redirect is not None:
            self._count()
            result = await self.check_host(self.expand(redirect, domain), depth + 1)
            return "permerror" if result == "none" else result
        return "neutral"

    async def _query_txt(self, domain):
        try:
            return await self.resolver.txt(domain)
        except DNSTempError:
            raise _SPFError("temperror") from None

    def _split(self, term, domain):
        """a|mx[:domain-spec][/cidr4][//cidr6] -> (domain, cidr4, cidr6)."""
        m = re.fullmatch(r"(?i)(?:a|mx)(?::([^/]+))?(?:/(\d{1,2}))?(?://(\d{1,3}))?", term)
        if not m:
            raise _SPFError("permerror")
        spec, cidr4, cidr6 = m.group(1), int(m.group(2) or 32), int(m.group(3) or 128)
        if cidr4 > 32 or cidr6 > 128:
            raise _SPFError("permerror")
        target = self.expand(spec, domain) if spec else domain
        return target.rstrip("."), cidr4, cidr6

    def _in(self, addresses, cidr4, cidr6):
        for text in addresses:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.version != self.ip.version:
                continue
            prefix = cidr4 if address.version == 4 else cidr6
            if self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False):
                return True
        return False

    async def _addresses(self, host):
        method = "a" if self.ip.version == 4 else "aaaa"
        return await self._query(method, host)

    async def _matches(self, term, domain, depth):
        mechanism = re.split(r"[:/]", term, maxsplit=1)[0].lower()
        if mechanism == "all":
            return True
        if mechanism in ("ip4", "ip6"):
            value = term.split(":", 1)[1] if ":" in term else ""
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise _SPFError("permerror") from None
            return network.version == self.ip.version and self.ip in network
        if mechanism == "include":
            self._count()
            target = self.expand(term.split(":", 1)[1], domain) if ":" in term else ""
            if not target:
                raise _SPFError("permerror")
            result = await self.check_host(target, depth + 1)
            if result == "pass":
                return True
            if result in ("temperror",):
                raise _SPFError("temperror")
            if result in ("permerror", "none"):
                raise _SPFError("permerror")
            return False
        if mechanism == "a":
            self._count()
            host, cidr4, cidr6 = self._split(term, domain)
            return self._in(await self._addresses(host), cidr4, cidr6)
        if mechanism == "mx":
            self._count()
            host, cidr4, cidr6 = self._split(term, domain)
            exchanges = await self._query("mx", host)
            for exchange in exchanges[:10]:
                if self._in(await self._addresses(exchange), cidr4, cidr6):
                    return True
            return False
        if mechanism == "ptr":
            self._count()
            target = self.expand(term.split(":", 1)[1], domain) if ":" in term else domain
            names = await self._query("ptr", str(self.ip))
            for name in names[:10]:
                name = name.rstrip(".").lower()
                validated = name == target.lower() or name.endswith("." + target.lower())
                if validated and str(self.ip) in [str(ipaddress.ip_address(a))
                                                  for a in await self._addresses(name)]:
                    return True
            return False
        if mechanism == "exists":
            self._count()
            target = self.expand(term.split(":", 1)[1], domain) if ":" in term else ""
            return bool(await self._query("a", target))
        raise _SPFError("permerror")


@deferred
async def check_spf(resolver, ip, sender, helo):
    """RFC 7208 check_host() for an SMTP client -> (result, domain checked)."""
    domain = sender.rpartition("@")[2].lower() if "@" in sender else ""
    if not domain:
        domain = helo.lower().strip("[]")
        sender = f"postmaster@{domain}"
    if not domain or "." not in domain:
        return "none", domain
    try:
        spf = SPFCheck(resolver, ip, sender, helo)
    except ValueError:
        return "none", domain
    try:
        return await spf.check_host(domain), domain
    except _SPFError as e:
        return e.result, domain


# --- DKIM (RFC 6376) --------------------------------------------------------------------


def _dkim_tags(value):
    tags = {}
    for item in " ".join(value.split()).split(";"):
        name, eq, content = item.partition("=")
        if eq:
            tags[name.strip().lower()] = "".join(content.split())
    return tags


def _verify_dkim(raw, count, keys):
    """Verify the first ``count`` signatures with prefetched keys (in a thread)."""
    def dnsfunc(name, timeout=5):
        return keys.get(name.decode("ascii", "replace").lower().rstrip("."))

    results = []
    for index in range(count):
        try:
            ok = dkim.DKIM(raw, minkey=1024).verify(idx=index, dnsfunc=dnsfunc)
        except Exception:  # noqa: BLE001 - a broken signature is a failed one
            ok = False
        results.append("pass" if ok else "fail")
    return results


@deferred
async def check_dkim(resolver, message, raw, run_in_thread):
    """-> ((signing domain, pass|fail|temperror), ...) for up to 3 signatures."""
    signatures = message.get_all("dkim-signature")[:MAX_DKIM_SIGNATURES]
    if not signatures or raw is None:
        return ()
    keys, domains, temp = {}, [], set()
    for index, value in enumerate(signatures):
        tags = _dkim_tags(value)
        domain, selector = tags.get("d", "").lower(), tags.get("s", "").lower()
        domains.append(domain or "unknown")
        if not domain or not selector:
            continue
        name = f"{selector}._domainkey.{domain}"
        if name in keys:
            continue
        try:
            records = await resolver.txt(name)
        except DNSTempError:
            temp.add(index)
            continue
        keys[name] = records[0].encode("utf-8") if records else None
    verdicts = await run_in_thread(_verify_dkim, raw, len(signatures), keys)
    return tuple((domain, "temperror" if i in temp else verdict)
                 for i, (domain, verdict) in enumerate(zip(domains, verdicts)))


# --- DMARC (RFC 7489) -------------------------------------------------------------------


def _aligned(domain, author, strict):
    if not domain or not author:
        return False
    if strict:
        return domain == author
    return organizational_domain(domain) == organizational_domain(author)


async def _dmarc_record(resolver, domain):
    records = [r for r in await resolver.txt(f"_dmarc.{domain}")
               if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if len(records) != 1:
        return None
    return {k: v.lower() for k, v in _dkim_tags(records[0]).items()}


@deferred
async def check_dmarc(resolver, from_domain, spf, spf_domain, dkim_results):
    """-> (pass|fail, policy) or None when the From: domain has no DMARC record."""
    if not from_domain:
        return None
    try:
        record = await _dmarc_record(resolver, from_domain)
        org = organizational_domain(from_domain)
        subdomain = False
        if record is None and org != from_domain:
            record = await _dmarc_record(resolver, org)
            subdomain = True
    except DNSTempError:
        return None
    if record is None or record.get("p") not in ("none", "quarantine", "reject"):
        return None
    policy = record.get("sp", record["p"]) if subdomain else record["p"]
    if policy not in ("none", "quarantine", "reject"):
        policy = record["p"]
    dkim_ok = any(result == "pass" and _aligned(d, from_domain, record.get("adkim") == "s")
                  for d, result in dkim_results)
    spf_ok = spf == "pass" and _aligned(spf_domain, from_domain, record.get("aspf") == "s")
    return ("pass" if dkim_ok or spf_ok else "fail", policy)


@deferred
async def authenticate(resolver, message, raw, envelope, from_domain, run_in_thread):
    """SPF (when the SMTP client is known), DKIM and DMARC -> AuthResults."""
    spf = None
    spf_domain = ""
    client = getattr(envelope, "client_address", "") if envelope is not None else ""
    if client:
        spf, spf_domain = await check_spf(resolver, client, envelope.sender or "",
                                          envelope.client_helo or "")
    dkim_results = await check_dkim(resolver, message, raw, run_in_thread)
    dmarc = await check_dmarc(resolver, from_domain, spf, spf_domain, dkim_results)
    return AuthResults(spf=spf, spf_domain=spf_domain, dkim=dkim_results, dmarc=dmarc,
                       from_domain=from_domain)
