"""MTA-STS (RFC 8461) for outbound mail: which policy a recipient domain
publishes, and what it allows.

Owns: the policy text parser (``parse_policy``, §3.2), the TXT record
parser (``parse_txt``, §3.1), MX pattern matching (``mx_matches``, §4.1),
and ``PolicyResolver``, which finds the policy to apply to a domain
(§3.3, §5.1) through three injected collaborators: a ``twisted.names``
IResolver (the TXT record ``_mta-sts.<domain>``), an HTTPS fetcher
``fetch(url) -> Deferred[bytes]`` (``protocols.mtasts_fetch``; it fails
on anything but a 200 text/plain answer from a certificate-verified
server) and an ``IMTASTSCache`` (durable, so that a policy outlives a
restart and a later attacker-blocked fetch).

Invariants:
- ``PolicyResolver.policy_for`` never fails: any trouble of ours (DNS,
  HTTPS, the cache) yields the unexpired cached policy if there is one,
  else None (deliver as without MTA-STS, §5.1);
- a policy is fetched again only when the TXT id differs from the cached
  one or the cached policy has expired (``max_age``, capped at one year);
- time comes from the injected clock.
"""

import re

import attrs
from twisted.logger import Logger
from twisted.names import dns

from ktmail.services import deferred

log = Logger()

#: RFC 8461 §3.2: "max_age" is at most 31557600 (about 1 year)
MAX_AGE_CAP = 31557600
#: the largest policy body we read (RFC 8461 §3.3 suggests a cap of 64 KiB)
MAX_POLICY_SIZE = 64 * 1024
MODES = ("enforce", "testing", "none")

_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_MAX_AGE = re.compile(r"[0-9]{1,10}\Z")
# a host name or a "*." wildcard pattern: LDH labels
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*\Z")


class PolicyError(ValueError):
    """A policy text or TXT record that RFC 8461 does not accept."""


@attrs.frozen
class Policy:
    """A parsed policy (RFC 8461 §3.2)."""

    mode: str
    mx: tuple = ()
    max_age: int = 0

    def allows(self, host):
        """Does some ``mx`` pattern match ``host`` (§4.1)?"""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    def to_json(self):
        return {"mode": self.mode, "mx": list(self.mx), "max_age": self.max_age}

    @classmethod
    def from_json(cls, doc):
        return cls(mode=doc["mode"], mx=tuple(doc["mx"]), max_age=int(doc["max_age"]))


def parse_policy(body):
    """The policy in ``body`` (bytes of the HTTPS answer) -> Policy, or
    PolicyError. Lines end with LF or CRLF; ``key: value`` pairs; unknown
    keys are ignored; of a repeated key other than ``mx`` the first counts."""
    if len(body) > MAX_POLICY_SIZE:
        raise PolicyError(f"policy larger than {MAX_POLICY_SIZE} bytes")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise PolicyError("policy is not UTF-8") from None
    fields = {}
    mx = []
    for line in re.split(r"\r?\n", text):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"policy line without a colon: {line[:40]!r}")
        key, value = key.strip(), value.strip(" \t")
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyError("policy version is not STSv1")
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError(f"policy mode {mode!r} is not enforce, testing or none")
    max_age = fields.get("max_age")
    if max_age is None or not _MAX_AGE.match(max_age):
        raise PolicyError("policy max_age is missing or not a number")
    patterns = []
    for pattern in mx:
        pattern = pattern.lower().rstrip(".")
        if not _PATTERN.match(pattern):
            raise PolicyError(f"policy mx pattern {pattern[:80]!r} is not valid")
        patterns.append(pattern)
    if mode != "none" and not patterns:
        raise PolicyError(f"policy in mode {mode} has no mx pattern")
    return Policy(mode=mode, mx=tuple(patterns), max_age=min(int(max_age), MAX_AGE_CAP))


def mx_matches(pattern, host):
    """RFC 8461 §4.1: ``pattern`` is a host name, or ``*.`` and a domain
    standing for exactly one more label in front of it; case-insensitive,
    trailing dots ignored."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and label != "*" and rest == pattern[2:]
    return host == pattern


def parse_txt(records):
    """The policy id of a domain from its ``_mta-sts`` TXT strings
    (``records``: one str per TXT record, its strings joined) -> id or None.
    Records not starting ``v=STSv1`` are ignored; more than one STSv1
    record, or one without a valid ``id``, means no policy (§3.1)."""
    sts = [r for r in records if re.match(r"v=STSv1\s*(;|\Z)", r)]
    if len(sts) != 1:
        return None
    found = None
    for field in sts[0].split(";")[1:]:
        key, sep, value = field.strip().partition("=")
        if sep and key == "id" and found is None:
            found = value
    if found is None or not _ID.match(found):
        return None
    return found


@attrs.frozen
class CachedPolicy:
    policy_id: str
    policy: Policy
    fetched: float

    @property
    def expires(self):
        return self.fetched + self.policy.max_age

    def to_json(self):
        return {"id": self.policy_id, "fetched": self.fetched, "policy": self.policy.to_json()}

    @classmethod
    def from_json(cls, doc):
        return cls(policy_id=doc["id"], fetched=float(doc["fetched"]),
                   policy=Policy.from_json(doc["policy"]))


def policy_url(domain):
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class PolicyResolver:
    """``policy_for(domain)`` -> Deferred[Policy or None] (see the module
    docstring). ``cache``: IMTASTSCache; ``clock``: IReactorTime."""

    def __init__(self, resolver, fetch, cache, clock):
        self.resolver = resolver
        self.fetch = fetch
        self.cache = cache
        self.clock = clock

    @deferred
    async def policy_for(self, domain):
        domain = domain.lower().rstrip(".")
        if not _PATTERN.match(domain) or domain.startswith("*"):
            return None   # not a host name (an address literal, or junk): no URL to build
        now = self.clock.seconds()
        cached = await self._cached(domain, now)
        policy_id = await self._txt_id(domain)
        if policy_id is None:
            # §3.3: no live policy, but an unexpired cached one still applies
            return cached.policy if cached else None
        if cached is not None and cached.policy_id == policy_id:
            return cached.policy
        try:
            body = await self.fetch(policy_url(domain))
            policy = parse_policy(body)
        except Exception as e:  # noqa: BLE001 - any fetch trouble: §5.1 fallback
            log.info("MTA-STS policy of {domain} (id {id}) not fetched: {why}",
                     domain=domain, id=policy_id, why=_why(e))
            return cached.policy if cached else None
        try:
            await self.cache.put(domain, CachedPolicy(policy_id, policy, now).to_json())
        except Exception:  # noqa: BLE001 - the policy still applies this time
            log.failure("MTA-STS policy of {domain} not cached", domain=domain)
        log.info("MTA-STS policy of {domain} (id {id}): mode {mode}, mx {mx}, max_age {age}",
                 domain=domain, id=policy_id, mode=policy.mode, mx=" ".join(policy.mx),
                 age=policy.max_age)
        return policy

    async def _cached(self, domain, now):
        try:
            doc = await self.cache.get(domain)
            cached = CachedPolicy.from_json(doc) if doc is not None else None
        except Exception:  # noqa: BLE001 - a bad cache file is no cached policy
            log.failure("MTA-STS cache of {domain} unreadable", domain=domain)
            return None
        if cached is None or cached.expires <= now:
            return None
        return cached

    async def _txt_id(self, domain):
        try:
            answers, _, _ = await self.resolver.lookupText(f"_mta-sts.{domain}")
        except Exception:  # noqa: BLE001
            return None   # absent, or DNS trouble: no live policy
        records = []
        for rr in answers:
            if rr.type == dns.TXT:
                records.append(b"".join(rr.payload.data).decode("utf-8", "replace"))
        return parse_txt(records)


def _why(exc):
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
