"""The ini configuration of SPEC §3, loaded once into a frozen Config tree.

``load_config(path)`` reads and validates everything at once: every problem
(unknown key, missing required key, bad value, unreadable certificate) is
collected and reported together, one line each, naming ``section.key``.
Nothing half-configured ever starts. Paths are resolved relative to the
config file's folder. Components receive the part they need (``Limits``,
``RelayConfig`` ...), never the file path.
"""

import configparser
import ipaddress
import os
import re
import urllib.parse

import attrs

from ktmail.errors import ValidationError
from ktmail.model import Address, normalize_domain

DEFAULT_DOMAINS = (
    "sboksi.fi", "minmail.fi", "livenet.fi", "message.fi", "2me.fi", "myhome.fi",
    "mybusiness.fi", "brev.fi", "pikaposti.fi",
)

LISTENERS = ("smtp", "submission", "imap", "pop3", "web")


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one line per problem."""

    def __init__(self, path, problems):
        self.path = path
        # one line each, even when a value spans lines (an indented
        # continuation line in the ini)
        self.problems = [p.replace("\r", "\\r").replace("\n", "\\n") for p in problems]
        super().__init__(self.summary())

    def summary(self):
        return "\n".join(f"{self.path}: {p}" for p in self.problems)


@attrs.frozen
class TLSConfig:
    cert: str
    key: str
    #: a file of intermediate certificates (besides those after the leaf in ``cert``)
    chain: str | None = None


@attrs.frozen
class ListenConfig:
    """Twisted endpoint descriptions; '' disables a listener."""

    smtp: str = "tcp:25"
    submission: str = "ssl:465"
    imap: str = "ssl:993"
    pop3: str = "ssl:995"
    web: str = "ssl:443"
    #: Prometheus metrics and other operator-only pages; '' = off
    metrics: str = ""

    def enabled(self):
        """(name, description) of every enabled listener."""
        return [(name, desc) for name, desc in attrs.asdict(self).items() if desc]


#: listener -> (connections per client address, connections in all) by default
CONNECTION_DEFAULTS = {
    "smtp": (20, 1000),
    "submission": (10, 1000),
    "imap": (50, 4000),
    "pop3": (20, 1000),
    "web": (50, 2000),
}
#: RFC minimums of the idle timeouts (seconds): RFC 5321 §4.5.3.2.7 (a
#: server waits at least 5 minutes for a command), RFC 3501 §5.4 (30
#: minutes once logged in), RFC 1939 §3 (10 minutes)
TIMEOUT_MINIMUMS = {
    "smtp_command_timeout": 300,
    "imap_idle_timeout": 1800,
    "pop3_idle_timeout": 600,
    "imap_login_timeout": 10,
    "web_idle_timeout": 10,
    "tls_handshake_timeout": 5,
}


@attrs.frozen
class Limits:
    max_message_bytes: int = 52428800
    mailbox_quota_bytes: int = 1048576000
    mailboxes_per_customer: int = 5
    smtp_recipients_per_hour: int = 200
    webmail_recipients_per_hour: int = 100
    spam_retention_days: int = 60
    inactive_delete_days: int = 183
    # -- connections (per listener; see connection_caps) --
    smtp_connections_per_client: int = CONNECTION_DEFAULTS["smtp"][0]
    smtp_connections: int = CONNECTION_DEFAULTS["smtp"][1]
    submission_connections_per_client: int = CONNECTION_DEFAULTS["submission"][0]
    submission_connections: int = CONNECTION_DEFAULTS["submission"][1]
    imap_connections_per_client: int = CONNECTION_DEFAULTS["imap"][0]
    imap_connections: int = CONNECTION_DEFAULTS["imap"][1]
    pop3_connections_per_client: int = CONNECTION_DEFAULTS["pop3"][0]
    pop3_connections: int = CONNECTION_DEFAULTS["pop3"][1]
    web_connections_per_client: int = CONNECTION_DEFAULTS["web"][0]
    web_connections: int = CONNECTION_DEFAULTS["web"][1]
    #: client networks not capped per client (still counted in the totals):
    #: the host itself (monitoring, a local proxy in front of a tcp: web listener)
    connection_limit_exempt: tuple = ("127.0.0.1/32", "::1/128")
    #: IMAP sessions logged in to one mailbox at once (on this node)
    imap_sessions_per_mailbox: int = 20
    # -- message headers (SMTP DATA/BDAT, IMAP APPEND) --
    max_header_bytes: int = 262144
    max_header_fields: int = 1000
    # -- idle timeouts, seconds (RFC minimums in TIMEOUT_MINIMUMS) --
    smtp_command_timeout: int = 300
    imap_login_timeout: int = 60
    imap_idle_timeout: int = 1800
    pop3_idle_timeout: int = 600
    web_idle_timeout: int = 60
    tls_handshake_timeout: int = 30

    def connection_caps(self, listener):
        """-> (per client address, in all) for a ``[listen]`` name."""
        if listener not in CONNECTION_DEFAULTS:
            return (50, 1000)   # operator-only listeners (metrics)
        return (getattr(self, f"{listener}_connections_per_client"),
                getattr(self, f"{listener}_connections"))


@attrs.frozen
class RelayConfig:
    #: (host, port) of the smarthost, or None to deliver by MX lookup
    smarthost: tuple | None = None


@attrs.frozen
class ClientsConfig:
    """Host names that autoconfig and the help page give to mail clients."""

    incoming_host: str
    outgoing_host: str


@attrs.frozen
class SpamConfig:
    #: score at or above which a message is spam
    required_score: float = 5.0
    #: rule name -> score, overriding the built-in scores
    rule_scores: tuple = ()

    def score_overrides(self):
        return dict(self.rule_scores)


@attrs.frozen
class DatabaseConfig:
    """``[store] database``: the service database (accounts, counters, audit
    log, spam statistics and, with PostgreSQL, the mail folder indexes)."""

    #: "sqlite" or "postgresql"
    kind: str
    #: the SQLite file (absolute path), for kind "sqlite"
    path: str = ""
    #: the libpq URL, for kind "postgresql"; it may hold a password, so it is
    #: never put in a repr or a log line (use ``display()``)
    url: str = attrs.field(default="", repr=False)

    @property
    def is_postgresql(self):
        return self.kind == "postgresql"

    def display(self):
        """Where the database is, for logs and messages: no password."""
        return redact_url(self.url) if self.is_postgresql else f"sqlite:{self.path}"


def redact_url(url):
    """``url`` with the password of its user part replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


@attrs.frozen
class Config:
    path: str
    hostname: str
    data_dir: str
    domains: tuple
    tls: TLSConfig | None
    listen: ListenConfig
    limits: Limits
    relay: RelayConfig
    clients: ClientsConfig
    spam: SpamConfig = SpamConfig()
    #: the mailbox that receives postmaster@ and abuse@ of every hosted domain
    #: (RFC 5321 §4.5.1, RFC 2142) unless a mailbox of that name exists
    postmaster: Address | None = None
    #: None: the SQLite file ``<data_dir>/ktmail.db``
    database: DatabaseConfig | None = None

    @property
    def database_config(self):
        """The ``[store] database`` in effect (the default filled in)."""
        return self.database or DatabaseConfig(
            kind="sqlite", path=os.path.join(self.data_dir, "ktmail.db"))

    def is_local_domain(self, domain):
        return domain.lower().rstrip(".") in self.domains


# --- value parsers: each returns the parsed value or raises ValidationError --------


def _hostname(text):
    try:
        return normalize_domain(text)
    except ValidationError:
        raise ValidationError(f"'{text}' is not a host name") from None


def _domains(text):
    names = text.split()
    if not names:
        raise ValidationError("list at least one domain")
    out, bad = [], []
    for name in names:
        try:
            domain = normalize_domain(name)
        except ValidationError:
            bad.append(f"'{name}' is not a domain name")
            continue
        if domain in out:
            bad.append(f"'{name}' is listed twice")
        else:
            out.append(domain)
    if bad:
        raise ValidationError("; ".join(bad))
    return tuple(out)


_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2,
               "mb": 1000**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def _bytes(text):
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _BYTE_UNITS:
        raise ValidationError(f"'{text}' is not a size (a number of bytes, or e.g. 50MiB)")
    value = int(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValidationError("must be more than 0")
    return value


def _address(text):
    text = text.strip()
    if not text:
        return None
    try:
        return Address.parse(text)
    except ValidationError:
        raise ValidationError(f"'{text}' is not an e-mail address (local@domain)") from None


def _positive_int(text):
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) <= 0:
        raise ValidationError(f"'{text}' is not a whole number above 0")
    return int(text)


def _seconds(text):
    """A duration: seconds, or a number with s, min (m) or h."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|sec|m|min|h)?\s*", text)
    if not m:
        raise ValidationError(f"'{text}' is not a duration (seconds, or e.g. 5min, 1h)")
    return int(m.group(1)) * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60,
                              "h": 3600}[m.group(2)]


def _timeout(key):
    minimum = TIMEOUT_MINIMUMS[key]

    def parse(text):
        value = _seconds(text)
        if value < minimum:
            raise ValidationError(f"{value} s is below the minimum of {minimum} s")
        return value
    return parse


def _networks(text):
    """Addresses or networks (``192.0.2.0/24``, ``2001:db8::/32``), space-separated."""
    out, bad = [], []
    for word in text.split():
        try:
            out.append(str(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            bad.append(f"'{word}' is not an IP address or network")
    if bad:
        raise ValidationError("; ".join(bad))
    return tuple(out)


def _score(text):
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"'{text}' is not a number") from None
    if value != value or abs(value) > 1000:
        raise ValidationError(f"'{text}' is out of range")
    return value


_ENDPOINT_TYPES = {"tcp", "tcp6", "ssl", "tls", "unix", "systemd", "haproxy"}


def _endpoint(text):
    text = text.strip()
    if not text:
        return ""
    parts = re.split(r"(?<!\\):", text)
    kind = parts[0].lower()
    if kind not in _ENDPOINT_TYPES:
        raise ValidationError(
            f"'{text}' is not an endpoint description (e.g. tcp:25 or ssl:993)")
    if kind == "haproxy":
        _endpoint(":".join(parts[1:]))
    elif kind in ("tcp", "tcp6", "ssl"):
        port = parts[1] if len(parts) > 1 else ""
        if port.startswith("port="):
            port = port[5:]
        if not port.isdigit() or int(port) > 65535:
            raise ValidationError(f"'{text}' needs a port number 0-65535 after '{kind}:'")
    return text


def _smarthost(text):
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\s\[\]]+)(?::(\d+))?", text)
    if not m:
        raise ValidationError(f"'{text}' is not host:port")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or 25)
    if not 0 < port < 65536:
        raise ValidationError(f"port {port} is out of range")
    return (host, port)


def _database(text):
    """``sqlite:PATH`` or ``postgresql://user:password@host[:port]/dbname[?...]``
    -> (kind, path or URL). Problems are told without the password."""
    text = text.strip()
    if text.startswith("sqlite:"):
        return ("sqlite", _path(text[len("sqlite:"):]))
    shown = redact_url(text) if "://" in text else text
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValidationError(f"'{shown}' is neither sqlite:PATH nor postgresql://USER@HOST/DB")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValidationError(f"'{shown}' has a bad host or port") from None
    if not parts.path.strip("/"):
        raise ValidationError(f"'{shown}' names no database (postgresql://USER@HOST/DB)")
    query = urllib.parse.parse_qs(parts.query)
    if not parts.hostname and "host" not in query:
        raise ValidationError(f"'{shown}' names no host")
    return ("postgresql", text)


def _path(text):
    if not text.strip():
        raise ValidationError("must not be empty")
    if "\0" in text:
        raise ValidationError("a path cannot contain a NUL character")
    return text.strip()


# section -> key -> (parser, default or REQUIRED)
REQUIRED = object()
_SCHEMA = {
    "ktmail": {
        "hostname": (_hostname, REQUIRED),
        "data_dir": (_path, "var"),
        "domains": (_domains, " ".join(DEFAULT_DOMAINS)),
        "tls_cert": (_path, None),
        "tls_key": (_path, None),
        "postmaster": (_address, None),
    },
    "listen": {name: (_endpoint, getattr(ListenConfig(), name))
               for name in attrs.fields_dict(ListenConfig)},
    "limits": {
        "max_message_bytes": (_bytes, "52428800"),
        "mailbox_quota_bytes": (_bytes, "1048576000"),
        "mailboxes_per_customer": (_positive_int, "5"),
        "smtp_recipients_per_hour": (_positive_int, "200"),
        "webmail_recipients_per_hour": (_positive_int, "100"),
        "spam_retention_days": (_positive_int, "60"),
        "inactive_delete_days": (_positive_int, "183"),
        **{f"{name}_connections{suffix}": (_positive_int, str(default))
           for name, caps in CONNECTION_DEFAULTS.items()
           for suffix, default in (("_per_client", caps[0]), ("", caps[1]))},
        "connection_limit_exempt": (_networks, "127.0.0.1 ::1"),
        "imap_sessions_per_mailbox": (_positive_int, "20"),
        "max_header_bytes": (_bytes, "262144"),
        "max_header_fields": (_positive_int, "1000"),
        **{key: (_timeout(key), str(getattr(Limits(), key))) for key in TIMEOUT_MINIMUMS},
    },
    "relay": {"smarthost": (_smarthost, "")},
    "clients": {"incoming_host": (_hostname, None), "outgoing_host": (_hostname, None)},
    "spam": {"required_score": (_score, "5.0")},
    "store": {"database": (_database, None)},
}
#: sections whose keys are free-form names, each with one parser
_OPEN_SECTIONS = {"spam_scores": _score}
_RULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")


def _needs_default_tls(description):
    """Does this listener use tls_cert/tls_key (ssl: without its own key)?"""
    if description.startswith("haproxy:"):
        description = description[len("haproxy:"):]
    return description.startswith("ssl:") and "privateKey=" not in description


def _check_readable_pem(path, what):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise ValidationError(f"cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ValidationError(f"{path} is not a PEM {what}")


def parse_config(text, path="ktmail.ini"):
    """Parse ini text into a Config; raise ConfigError listing every problem."""
    problems = []
    parser = configparser.ConfigParser(
        inline_comment_prefixes=(";", "#"), interpolation=None, strict=True,
        default_section="\0none")
    parser.optionxform = str  # keep keys as written, so that errors quote them
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise ConfigError(path, [f"not a valid ini file: {e.message.splitlines()[0]}"]) from None

    values = {}
    for section in parser.sections():
        if section in _OPEN_SECTIONS:
            continue
        if section not in _SCHEMA:
            problems.append(f"[{section}]: unknown section (known: "
                            f"{', '.join(list(_SCHEMA) + list(_OPEN_SECTIONS))})")
            continue
        for key in parser[section]:
            if key not in _SCHEMA[section]:
                problems.append(f"{section}.{key}: unknown key (known: "
                                f"{', '.join(_SCHEMA[section])})")
    for section, keys in _SCHEMA.items():
        for key, (parse, default) in keys.items():
            raw = parser.get(section, key, fallback=None)
            if raw is None:
                if default is REQUIRED:
                    problems.append(f"{section}.{key}: missing (required)")
                    continue
                if default is None:
                    values[section, key] = None
                    continue
                raw = default
            try:
                values[section, key] = parse(raw)
            except ValidationError as e:
                problems.append(f"{section}.{key}: {e.text}")
    rule_scores = []
    for section, parse in _OPEN_SECTIONS.items():
        if not parser.has_section(section):
            continue
        for key, raw in parser[section].items():
            if not _RULE_NAME.match(key):
                problems.append(f"{section}.{key}: not a rule name")
                continue
            try:
                rule_scores.append((key, parse(raw)))
            except ValidationError as e:
                problems.append(f"{section}.{key}: {e.text}")

    base = os.path.dirname(os.path.abspath(path))

    def resolve(p):
        return os.path.normpath(os.path.join(base, p))

    listen = {k: values.get(("listen", k), "") for k in _SCHEMA["listen"]}
    tls = None
    cert, key = values.get(("ktmail", "tls_cert")), values.get(("ktmail", "tls_key"))
    needs_tls = [name for name, desc in listen.items()
                 if (desc and _needs_default_tls(desc)) or (name == "smtp" and desc)]
    for name, raw in (("tls_cert", cert), ("tls_key", key)):
        if ("ktmail", name) not in values:
            continue          # a bad value: its problem is told already
        if raw is None:
            if needs_tls:
                problems.append(f"ktmail.{name}: missing (required by listen."
                                f"{', listen.'.join(needs_tls)})")
            continue
        try:
            _check_readable_pem(resolve(raw), "certificate" if name == "tls_cert" else "key")
        except ValidationError as e:
            problems.append(f"ktmail.{name}: {e.text}")
    if cert and key:
        tls = TLSConfig(cert=resolve(cert), key=resolve(key))

    postmaster = values.get(("ktmail", "postmaster"))
    domains = values.get(("ktmail", "domains")) or ()
    if postmaster is not None and domains and postmaster.domain not in domains:
        problems.append(f"ktmail.postmaster: {postmaster} is not on a hosted domain "
                        "(see ktmail.domains)")

    if problems:
        raise ConfigError(path, problems)

    database = None
    if values.get(("store", "database")) is not None:
        kind, where = values["store", "database"]
        database = (DatabaseConfig(kind=kind, path=resolve(where)) if kind == "sqlite"
                    else DatabaseConfig(kind=kind, url=where))
    hostname = values["ktmail", "hostname"]
    return Config(
        path=os.path.abspath(path),
        hostname=hostname,
        data_dir=resolve(values["ktmail", "data_dir"]),
        domains=values["ktmail", "domains"],
        tls=tls,
        listen=ListenConfig(**listen),
        limits=Limits(**{k: values["limits", k] for k in _SCHEMA["limits"]}),
        relay=RelayConfig(smarthost=values["relay", "smarthost"]),
        clients=ClientsConfig(
            incoming_host=values["clients", "incoming_host"] or hostname,
            outgoing_host=values["clients", "outgoing_host"] or hostname),
        spam=SpamConfig(required_score=values["spam", "required_score"],
                        rule_scores=tuple(sorted(rule_scores))),
        database=database,
        postmaster=values["ktmail", "postmaster"],
    )


def load_config(path):
    """Read and validate the config file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, [f"cannot read the config file: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, ["the config file is not UTF-8 text"]) from None
    return parse_config(text, path)
