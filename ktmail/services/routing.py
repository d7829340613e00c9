"""Where outbound mail for a domain goes: the ``[relay] smarthost`` when one
is configured, else the domain's MX hosts (RFC 5321 §5.1) through an
injected ``twisted.names`` resolver (``IResolver``).

- MX records are tried in preference order; hosts of equal preference in
  random order (RFC 5321 §5.1 asks senders to spread the load).
- No MX records: the domain itself is the implicit MX (its A/AAAA).
- A null MX (RFC 7505: the single record ``0 .``) means the domain accepts
  no mail: ``NoRoute`` with ``556 5.1.10``, a permanent failure.
- A domain that does not exist (NXDOMAIN) is a permanent failure; any other
  DNS trouble (time-out, SERVFAIL) is temporary.
- IPv4 addresses of a host are tried before its IPv6 ones: most of our
  peers' IPv6 paths are less tested than their IPv4 ones.
"""

import ipaddress
import random
import socket

import attrs
from twisted.names import dns
from twisted.names import error as dns_error

from ktmail.services import deferred


@attrs.frozen
class Hop:
    """One host to try, with its addresses in the order to try them."""

    host: str
    addresses: tuple
    port: int = 25


class NoRoute(Exception):
    """No host can be tried; ``code`` and ``text`` make the SMTP-like reply."""

    def __init__(self, code, text):
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text

    @property
    def permanent(self):
        return self.code >= 500


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class MXRouter:
    def __init__(self, resolver, smarthost=None, shuffle=random.shuffle):
        self.resolver = resolver
        #: (host, port) or None
        self.smarthost = smarthost
        self._shuffle = shuffle

    def destination(self, domain):
        """The key that groups recipients into one delivery: all go to the
        smarthost when there is one, else one group per domain."""
        return "[smarthost]" if self.smarthost else domain

    @deferred
    async def route(self, domain):
        """-> [Hop] in the order to try; raises NoRoute."""
        if self.smarthost:
            host, port = self.smarthost
            addresses = (host,) if _is_ip(host) else await self._addresses(host)
            if not addresses:
                raise NoRoute(451, f"4.4.4 The smarthost {host} has no address")
            return [Hop(host, tuple(addresses), port)]
        try:
            answers, _, _ = await self.resolver.lookupMailExchange(domain)
        except dns_error.DNSNameError:
            raise NoRoute(550, f"5.1.2 The domain {domain} does not exist") from None
        except Exception:
            raise NoRoute(451, f"4.4.3 DNS lookup of the mail servers of {domain} "
                          "failed") from None
        records = [(rr.payload.preference, str(rr.payload.name).rstrip(".").lower())
                   for rr in answers if rr.type == dns.MX]
        if len(records) == 1 and records[0][1] == "":
            raise NoRoute(556, f"5.1.10 The domain {domain} accepts no mail (null MX)")
        records = [r for r in records if r[1]]
        if not records:
            records = [(0, domain)]   # implicit MX, RFC 5321 §5.1
        by_preference = {}
        for preference, host in records:
            by_preference.setdefault(preference, []).append(host)
        hops = []
        for preference in sorted(by_preference):
            hosts = by_preference[preference]
            self._shuffle(hosts)
            for host in hosts:
                addresses = await self._addresses(host)
                if addresses:
                    hops.append(Hop(host, tuple(addresses)))
        if not hops:
            raise NoRoute(451, f"4.4.4 The mail servers of {domain} have no address")
        return hops

    async def _addresses(self, host):
        found = []
        for lookup, family in ((self.resolver.lookupAddress, socket.AF_INET),
                               (self.resolver.lookupIPV6Address, socket.AF_INET6)):
            try:
                answers, _, _ = await lookup(host)
            except Exception:
                continue
            for rr in answers:
                if family == socket.AF_INET and rr.type == dns.A:
                    found.append(rr.payload.dottedQuad())
                elif family == socket.AF_INET6 and rr.type == dns.AAAA:
                    found.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
        return found
