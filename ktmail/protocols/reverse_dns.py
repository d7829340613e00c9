"""Forward-confirmed reverse DNS of SMTP clients, for Received: fields
(RFC 5321 §4.4: the TCP-info of the from clause).

``ReverseDNS(resolver, clock)(ip) -> Deferred[str | None]``: the PTR name
of ``ip`` only if that name resolves back to ``ip``, else None; never
fails. Loopback addresses are not looked up. Answers are cached for an
hour (at most ``max_entries`` addresses), so that a busy client costs one
lookup. The name is only ever shown in a trace field; nothing trusts it.
"""

import ipaddress
import re

from twisted.internet import defer

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)[a-z0-9-]{1,63}"
                       r"(?<!-)\Z")


def _names(result, kind):
    answers = result[0] if isinstance(result, tuple) else result
    return [a.payload for a in answers if a.type == kind]


class ReverseDNS:
    def __init__(self, resolver, clock, cache_seconds=3600, max_entries=10000):
        self.resolver = resolver       # twisted.names IResolver
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self._cache = {}               # ip -> (name or None, expires)

    def __call__(self, ip):
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return defer.succeed(None)
        if address.is_loopback:
            return defer.succeed(None)
        now = self.clock.seconds()
        cached = self._cache.get(address)
        if cached is not None and cached[1] > now:
            return defer.succeed(cached[0])
        d = defer.Deferred.fromCoroutine(self._lookup(address))
        d.addErrback(lambda _: None)
        d.addCallback(self._remember, address)
        return d

    def _remember(self, name, address):
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[address] = (name, self.clock.seconds() + self.cache_seconds)
        return name

    async def _lookup(self, address):
        from twisted.names import dns

        result = await self.resolver.lookupPointer(address.reverse_pointer)
        for record in _names(result, dns.PTR)[:3]:
            name = str(record.name).lower().rstrip(".")
            if not _HOSTNAME.match(name):
                continue
            if address.version == 4:
                forward = await self.resolver.lookupAddress(name)
                found = {ipaddress.IPv4Address(r.address) for r in _names(forward, dns.A)}
            else:
                forward = await self.resolver.lookupIPV6Address(name)
                found = {ipaddress.IPv6Address(r.address) for r in _names(forward, dns.AAAA)}
            if address in found:
                return name
        return None
