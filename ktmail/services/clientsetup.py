"""What mail clients and DNS must be told about this service.

Owns the facts that client autoconfiguration (Thunderbird autoconfig,
Microsoft Autodiscover, Apple profiles), the help page and
``ktmail-admin dns`` publish: host names from ``[clients]`` and the ports
the IMAP, POP3, submission and web listeners are configured on.

Invariant: everything is derived from the running configuration, never
hard-coded, so that what clients are told is what the daemon listens on.
A listener that is switched off is not advertised (its RFC 6186 SRV
record says "not available" instead). Pure: no I/O here; DKIM public keys
come in from the caller.
"""

import re

import attrs

#: the port a mail client expects when a listener's port cannot be read
#: from its description (systemd socket activation, unix sockets)
STANDARD_PORTS = {"imap": 993, "pop3": 995, "submission": 465, "web": 443}


def listener_port(description, name):
    """The TCP port of a ``[listen]`` endpoint description, or None when the
    listener is off. ``tcp:993:interface=…``, ``ssl:port=993``,
    ``haproxy:ssl:993`` and ``tls:/dir:port=993`` are understood; kinds
    without a port (``systemd:``, ``unix:``) give the standard port."""
    description = (description or "").strip()
    if not description:
        return None
    parts = re.split(r"(?<!\\):", description)
    if parts[0] == "haproxy":
        parts = parts[1:]
    kind = parts[0]
    if kind in ("tcp", "tcp6", "ssl") and len(parts) > 1:
        port = parts[1].removeprefix("port=")
        if port.isdigit():
            return int(port)
    for part in parts[1:]:
        if part.startswith("port=") and part[5:].isdigit():
            return int(part[5:])
    return STANDARD_PORTS[name]


@attrs.frozen
class ClientSettings:
    """Server names and ports for mail clients; a port is None when that
    service is off."""

    hostname: str            # the daemon's own name (web, MX)
    incoming_host: str       # IMAP and POP3
    outgoing_host: str       # submission
    imap_port: int | None
    pop3_port: int | None
    submission_port: int | None
    web_port: int | None
    domains: tuple
    #: does the web listener itself speak TLS (``ssl:``)?
    web_tls: bool = True

    @property
    def web_url(self):
        """Where people reach the web pages (a plain web listener is taken
        to sit behind a TLS proxy on 443)."""
        if self.web_tls and self.web_port not in (None, 443):
            return f"https://{self.hostname}:{self.web_port}"
        return f"https://{self.hostname}"

    @classmethod
    def from_config(cls, config):
        listen = config.listen
        web = (listen.web or "").removeprefix("haproxy:")
        return cls(
            hostname=config.hostname,
            incoming_host=config.clients.incoming_host,
            outgoing_host=config.clients.outgoing_host,
            imap_port=listener_port(listen.imap, "imap"),
            pop3_port=listener_port(listen.pop3, "pop3"),
            submission_port=listener_port(listen.submission, "submission"),
            web_port=listener_port(listen.web, "web"),
            domains=tuple(config.domains),
            web_tls=web.startswith(("ssl:", "tls:")),
        )


def _txt(text):
    """A TXT record value: quoted strings of at most 255 bytes (RFC 1035 §3.3)."""
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def dns_records(domain, settings, dkim=(), ttl=3600):
    """Zone-file lines to publish for a hosted ``domain``.

    MX, SPF, DMARC, RFC 6186 SRV records (with "." targets for the
    plaintext variants this service does not offer, RFC 6186 §4 and
    RFC 8314 §5.1), the autoconfig/autodiscover names, and one DKIM TXT
    record per ``(selector, text)`` in ``dkim`` (text: "v=DKIM1; k=rsa; p=…")."""
    d = domain.rstrip(".") + "."
    dkim = list(dkim)
    web_host = settings.hostname + "."
    lines = [
        f"; DNS records for {domain}, served by {settings.hostname}",
        f"{d}\t{ttl}\tIN\tMX\t10 {settings.hostname}.",
        # the MX host is the host that sends; a smarthost needs adding here
        f"{d}\t{ttl}\tIN\tTXT\t{_txt('v=spf1 mx -all')}",
        f"_dmarc.{d}\t{ttl}\tIN\tTXT\t{_txt('v=DMARC1; p=quarantine; adkim=r; aspf=r')}",
    ]
    for selector, text in dkim:
        lines.append(f"{selector}._domainkey.{d}\t{ttl}\tIN\tTXT\t{_txt(text)}")
    if not dkim:
        lines.append("; no DKIM key exists yet for this domain: its TXT record is printed "
                     "here once the key has been made")

    def srv(service, port, host, priority=0):
        if port is None:
            return f"_{service}._tcp.{d}\t{ttl}\tIN\tSRV\t0 0 0 ."
        return f"_{service}._tcp.{d}\t{ttl}\tIN\tSRV\t{priority} 1 {port} {host}."

    lines += [
        "; client discovery (RFC 6186, RFC 8314): implicit TLS only",
        srv("imaps", settings.imap_port, settings.incoming_host),
        srv("pop3s", settings.pop3_port, settings.incoming_host, priority=10),
        srv("submissions", settings.submission_port, settings.outgoing_host),
        srv("imap", None, None),
        srv("pop3", None, None),
        srv("submission", None, None),
        "; Thunderbird autoconfig and Microsoft Autodiscover",
        f"autoconfig.{d}\t{ttl}\tIN\tCNAME\t{web_host}",
        f"autodiscover.{d}\t{ttl}\tIN\tCNAME\t{web_host}",
    ]
    if settings.web_port is not None:
        lines.append(f"_autodiscover._tcp.{d}\t{ttl}\tIN\tSRV\t0 1 "
                     f"{settings.web_port if settings.web_tls else 443} {web_host}")
    return lines
