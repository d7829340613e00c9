"""SMTP: the inbound MX (``[listen] smtp``, port 25) and authenticated
submission (``[listen] submission``, port 465, implicit TLS).

This module translates the wire to service calls and back: command
framing, RFC 5321 address syntax, the DATA/BDAT byte stream, the
``Received:`` trace field, and replies with RFC 3463 enhanced status codes.
Which recipients exist is the DeliveryService's business, what a mailbox
may send the SubmissionService's, who may log in the AuthService's; every
ktmail error reaches the wire through ``to_smtp_reply`` only.

``SMTPServer`` subclasses ``twisted.mail.smtp.ESMTP`` for its connection,
timeout and reply plumbing, and replaces every command: the base class
advertises no SIZE/PIPELINING/8BITMIME/ENHANCEDSTATUSCODES, offers AUTH
before TLS, runs commands pipelined after STARTTLS inside the TLS session
(CVE-2011-0411 class), drops the connection on malformed AUTH data, runs
the DATA body as commands when validation is asynchronous and pipelined,
parses no MAIL parameters, and answers a partial failure with 550 for
every recipient (TWISTED-NOTES §3).

Invariants:

- Input is consumed strictly in order; while a command waits for a
  service (RCPT lookup, AUTH, end of data), later input stays queued
  (RFC 2920 §3), and reading stops once that queue passes 256 KiB.
- Only ``<CRLF>.<CRLF>`` ends DATA (RFC 5321 §4.1.1.4). A message with a
  bare CR or LF anywhere is read to its end and refused whole, so no
  reading of it can ever contain a second message (SMTP smuggling).
- No message is held in memory: bytes go to the spool as they arrive,
  except the header block (at most 64 KiB), kept until it is complete so
  that submission can check ``From:`` and add ``Message-ID:``/``Date:``.
  Bytes beyond the size limit are read and dropped, never stored.
- 250 after DATA (or BDAT LAST) means every recipient's copy is durable.
- Plain-text bytes that follow STARTTLS are discarded, and everything
  learned before TLS (HELO, transaction) is forgotten (RFC 3207 §4.2).
- AUTH exists only on the submission listener and only inside TLS; there
  nothing but EHLO/HELO/NOOP/RSET/QUIT/AUTH works before AUTH.
"""

import base64
import binascii
import datetime
import email.utils
import ipaddress
import re
import uuid

import attrs
from twisted.internet import defer, protocol
from twisted.internet.interfaces import INegotiated, ISSLTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from ktmail import errors
from ktmail.mime import (
    HEADER_TOO_BIG,
    TOO_MANY_FIELDS,
    HeaderFieldDropper,
    HeaderLimits,
    HeaderSectionCheck,
)
from ktmail.model import Address
from ktmail.services.delivery import Envelope

log = Logger()

#: RFC 5321 §4.5.3.1.4 says 512; extensions (SIZE=, SMTPUTF8 addresses)
#: need more, and clients are not all exact.
MAX_COMMAND_LINE = 2048
#: RFC 4954 §4: an AUTH line (base64 of user + password) may be long.
MAX_AUTH_LINE = 12288
#: RFC 5321 §4.5.3.1.6 says 1000; HTML generators write longer lines, so
#: only lines past this cap refuse the message.
MAX_TEXT_LINE = 65536
#: RFC 5321 §4.5.3.1.8: at least 100 must be accepted; more get 452 4.5.3.
MAX_RECIPIENTS = 100
#: unknown or malformed commands before the session is closed
MAX_BAD_COMMANDS = 20
#: failed AUTH attempts per session before it is closed
MAX_AUTH_FAILURES = 3
#: RFC 5321 §4.5.3.2: at least 5 minutes for a command.
IDLE_TIMEOUT = 300
#: the header block kept in memory while a message streams to the spool
HEADER_CAPTURE = 64 * 1024
#: pipelined input queued while a command waits, before reading pauses
INPUT_HIGH_WATER = 256 * 1024

COMMAND, AUTH, DATA, BDAT = "COMMAND", "AUTH", "DATA", "BDAT"


# --- replies ---------------------------------------------------------------------


@attrs.frozen
class Reply:
    """One SMTP reply: code, RFC 3463 enhanced status code, one-line text."""

    code: int
    status: str
    text: str

    def encode(self):
        return f"{self.code} {self.status} {self.text}\r\n".encode()

    @property
    def temporary(self):
        return 400 <= self.code < 500


# Each ktmail error's reply; SenderRejected depends on where it happens.
_ERROR_REPLIES = [
    (errors.NoSuchMailbox, 550, "5.1.1"),
    (errors.RelayDenied, 554, "5.7.1"),
    (errors.QuotaExceeded, 552, "5.2.2"),
    (errors.TooBig, 552, "5.3.4"),
    (errors.AuthFailed, 535, "5.7.8"),
    (errors.LoginThrottled, 454, "4.7.0"),
    (errors.RateLimited, 451, "4.7.1"),
    (errors.OutboundUnavailable, 451, "4.3.2"),
    (errors.StoreUnavailable, 451, "4.3.0"),
    (errors.ValidationError, 501, "5.5.4"),
]

#: the answer to anything unexpected (RFC 3463 X.3.0: mail system problem)
LOCAL_ERROR = Reply(451, "4.3.0", "Temporary local problem; please try again later.")


def to_smtp_reply(error, stage="data"):
    """The one mapping from ktmail errors to SMTP replies. ``stage`` is
    where it happened ("mail", "rcpt", "data", "auth"). Anything that is
    not a KtmailError becomes 451 4.3.0 and is logged with its traceback;
    its text never reaches the client."""
    if isinstance(error, errors.SenderRejected):
        # SPEC §4: 553 at MAIL FROM (RFC 5321 §4.2.3), 550 for the From: field
        return Reply(553, "5.7.1", error.text) if stage == "mail" else \
            Reply(550, "5.7.1", error.text)
    for kind, code, status in _ERROR_REPLIES:
        if isinstance(error, kind):
            return Reply(code, status, error.text)
    if isinstance(error, errors.KtmailError):
        if error.temporary:
            return Reply(451, "4.3.0", error.text)
        return Reply(550, "5.0.0", error.text)
    log.failure("unexpected error during SMTP {stage}",
                Failure(error, type(error), error.__traceback__), stage=stage)
    return LOCAL_ERROR


# --- addresses (RFC 5321 §4.1.2) ---------------------------------------------------


class AddressSyntaxError(Exception):
    """A path or parameter that does not parse; carries its reply."""

    def __init__(self, reply):
        super().__init__(reply.text)
        self.reply = reply


@attrs.frozen
class Path:
    """A parsed forward- or reverse-path: the domain is lower-case (A-labels),
    or ``[...]`` for an address literal; a dot-string local part is kept
    as written, any other local part in its quoted form."""

    local: str
    domain: str
    is_literal: bool = False

    def __str__(self):
        return f"{self.local}@{self.domain}"

    def address(self):
        """The model.Address, local part lower-cased (hosted mailboxes are)."""
        return Address(self.local.lower(), self.domain)


_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
# RFC 6531 §3.3: atext extended by any UTF-8 non-ASCII character
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_SOURCE_ROUTE = re.compile(r"@[^,:@<>\s]+(?:,@[^,:@<>\s]+)*:")
_PARAM = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?\Z")


def _syntax(status, text, code=501):
    return AddressSyntaxError(Reply(code, status, text))


def _bracketed(text):
    """Split ``<...>rest`` at the closing bracket outside quotes."""
    in_quote = escaped = False
    for i, c in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif in_quote and c == "\\":
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif c == ">" and not in_quote:
            return text[1:i], text[i + 1:]
    return None, None


def split_path_argument(argument, keyword):
    """``FROM:<path> PARAMS`` -> (path text without brackets, params text).
    Tolerates spaces after the colon and a path without brackets."""
    head, colon, rest = argument.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise _syntax("5.5.4", f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}"
                               ":<address>")
    rest = rest.lstrip(" ")
    if rest.startswith("<"):
        inside, params = _bracketed(rest)
        if inside is None or (params and not params.startswith(" ")):
            raise _syntax("5.5.4", "The address must be enclosed in <>.")
        return inside, params.strip(" ")
    inside, _, params = rest.partition(" ")
    return inside, params.strip(" ")


def parse_params(text):
    """RFC 5321 §4.1.2 Mail-parameters -> {KEYWORD: value or None}."""
    params = {}
    for token in text.split():
        m = _PARAM.match(token)
        if not m:
            raise _syntax("5.5.4", f"Malformed parameter {token[:40]!r}.")
        key = m.group(1).upper()
        if key in params:
            raise _syntax("5.5.4", f"Parameter {key} given twice.")
        params[key] = m.group(2)
    return params


def _parse_domain(text, utf8):
    if text.startswith("["):
        if not text.endswith("]"):
            raise _syntax("5.1.3", "Malformed address literal.")
        inner = text[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]", True
            return f"[{ipaddress.IPv4Address(inner)}]", True
        except ValueError:
            raise _syntax("5.1.3", "Malformed address literal.") from None
    text = text.removesuffix(".")   # an absolute name: the same domain
    if not text.isascii():
        if not utf8:
            raise _syntax("5.6.7", "Non-ASCII address without SMTPUTF8.", 553)
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise _syntax("5.1.3", "Malformed internationalised domain name.") from None
    domain = text.lower()
    if not domain or len(domain) > 255 or not all(
            _LDH_LABEL.match(label) for label in domain.split(".")):
        raise _syntax("5.1.3", "Malformed domain in the address.")
    return domain, False


def parse_path(text, *, utf8=False):
    """An RFC 5321 Path without its brackets -> Path. A source route
    (``@a,@b:``) is ignored (RFC 5321 §3.6.1: accepted, never followed).
    Raises AddressSyntaxError. The caller handles ``<>`` and
    ``<postmaster>``."""
    if len(text.encode("utf-8")) > 256:   # RFC 5321 §4.5.3.1.3
        raise _syntax("5.1.3", "The address is too long.")
    if text.startswith("@"):
        route = _SOURCE_ROUTE.match(text)
        if not route:
            raise _syntax("5.1.3", "Malformed source route.")
        text = text[route.end():]
    dot_string = _DOT_STRING_UTF8 if utf8 else _DOT_STRING
    if text.startswith('"'):
        chars, i = [], 1
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text) and (" " <= text[i + 1] <= "~" or
                                                     (utf8 and text[i + 1] > "\x7f")):
                chars.append(text[i + 1])
                i += 2
            elif c == '"':
                break
            elif (" " <= c <= "~" and c != "\\") or (utf8 and c > "\x7f"):
                chars.append(c)
                i += 1
            else:
                raise _syntax("5.1.3", "Malformed quoted local part.")
        else:
            raise _syntax("5.1.3", "Unterminated quoted local part.")
        content = "".join(chars)
        rest = text[i + 1:]
        if not rest.startswith("@"):
            raise _syntax("5.1.3", "The address needs a domain (local@domain).")
        # RFC 5321 §4.1.2: a quoted string that is a valid dot-string is that dot-string
        if dot_string.match(content):
            local = content
        else:
            local = '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'
        domain_text = rest[1:]
    else:
        local, at, domain_text = text.partition("@")
        if not at:
            raise _syntax("5.1.3", "The address needs a domain (local@domain).")
        if not local.isascii() and not utf8:
            raise _syntax("5.6.7", "Non-ASCII address without SMTPUTF8.", 553)
        if not dot_string.match(local):
            raise _syntax("5.1.3", "Malformed local part in the address.")
    if len(local.encode("utf-8")) > 64:   # RFC 5321 §4.5.3.1.1
        raise _syntax("5.1.3", "The local part of the address is too long.")
    domain, literal = _parse_domain(domain_text, utf8)
    return Path(local, domain, literal)


# --- the message stream ------------------------------------------------------------


class DotStuffedReader:
    """RFC 5321 §4.5.2 in reverse: removes the dot a client adds to lines
    that start with one and finds the ``<CRLF>.<CRLF>`` that ends DATA.

    ``feed(data) -> (pieces, rest)``: message bytes, in order, and None
    while the end has not been seen, else the bytes after the end (the next
    commands). Holds back at most two bytes between calls, so nothing is
    buffered; a line that starts with a dot is the only per-line work."""

    def __init__(self):
        self._at_line_start = True   # DATA starts at the start of a line
        self._carry = b""

    def feed(self, data):
        buf = self._carry + data if self._carry else data
        self._carry = b""
        pieces = []
        pos, end = 0, len(buf)
        while pos < end:
            if self._at_line_start:
                if buf[pos:pos + 1] == b".":
                    head = buf[pos:pos + 3]
                    if head == b".\r\n":
                        return pieces, buf[pos + 3:]
                    if len(head) < 3 and b".\r\n".startswith(head):
                        self._carry = head      # "." or ".\r": wait for the rest
                        return pieces, None
                    pos += 1                    # the stuffed dot
                self._at_line_start = False
                continue
            found = buf.find(b"\r\n.", pos)
            if found < 0:
                if buf.endswith(b"\r\n"):
                    pieces.append(buf[pos:])
                    self._at_line_start = True
                elif buf.endswith(b"\r"):
                    if end - 1 > pos:
                        pieces.append(buf[pos:end - 1])
                    self._carry = b"\r"        # may start "\r\n."
                else:
                    pieces.append(buf[pos:])
                return pieces, None
            pieces.append(buf[pos:found + 2])
            pos = found + 2
            self._at_line_start = True
        return pieces, None


MESSAGE_TOO_BIG = "too-big"
BARE_NEWLINE = "bare-newline"
LINE_TOO_LONG = "line-too-long"

# a line (without its CRLF) longer than MAX_TEXT_LINE, plus its CR
_LONG_LINE = re.compile(rb"[^\n]{%d}" % (MAX_TEXT_LINE + 2))


class MessageWriter:
    """Checks the bytes of one message and streams them to a Spool.

    ``write(data)`` takes message bytes (DATA already unstuffed, or BDAT
    chunks); ``close()`` ends the message. Refuses, without storing
    anything more: more than ``max_bytes`` (MESSAGE_TOO_BIG), a CR or LF
    that is not part of a CRLF (BARE_NEWLINE), a line over MAX_TEXT_LINE
    (LINE_TOO_LONG), a header section over ``header_limits``
    (mime.HEADER_TOO_BIG, mime.TOO_MANY_FIELDS); ``problem`` names the
    first one. The header block is
    kept until it is complete (or HEADER_CAPTURE bytes), then
    ``make_prefix(header_bytes)`` gives the lines written before it
    (Received:, and Message-ID:/Date: on submission); ``header_bytes`` is
    the start of the message as sent, at most HEADER_CAPTURE bytes."""

    def __init__(self, spool, max_bytes, make_prefix, header_limits=None, drop_fields=()):
        self.spool = spool
        self.max_bytes = max_bytes
        self.make_prefix = make_prefix
        self._header_check = HeaderSectionCheck(header_limits or HeaderLimits())
        #: header fields (name prefixes) left out of the stored message
        self._dropper = HeaderFieldDropper(drop_fields) if drop_fields else None
        #: message bytes received (stored or not)
        self.size = 0
        self.problem = None
        #: the start of the message as the client sent it, up to HEADER_CAPTURE
        self.header_bytes = b""
        self._head = bytearray()
        self._head_done = False
        self._prev_cr = False
        self._line_length = 0

    def write(self, data):
        self.size += len(data)
        if self.problem is not None or not data:
            return
        if self.size > self.max_bytes:
            return self._refuse(MESSAGE_TOO_BIG)
        if not self._newlines_ok(data):
            return self._refuse(BARE_NEWLINE)
        if not self._lines_ok(data):
            return self._refuse(LINE_TOO_LONG)
        if not self._header_check.done:
            problem = self._header_check.feed(data)
            if problem is not None:
                return self._refuse(problem)
        if self._dropper is not None:
            data = self._dropper.feed(data)
        self._store(data)

    def _store(self, data):
        if self._head_done:
            self.spool.write(data)
        else:
            self._capture(data)

    def close(self):
        """The message ended; flush what is held. -> problem or None."""
        if self.problem is None and self._prev_cr:
            self._refuse(BARE_NEWLINE)
        if self.problem is None and self._dropper is not None:
            self._store(self._dropper.finish())
        if self.problem is None and not self._head_done:
            self._flush_head()
        return self.problem

    def _refuse(self, problem):
        self.problem = problem
        self._head = bytearray()
        self.spool.discard()

    def _newlines_ok(self, data):
        # Every LF must follow a CR and every CR precede an LF, across writes.
        crlf = data.count(b"\r\n")
        lf, cr = data.count(b"\n"), data.count(b"\r")
        if self._prev_cr:
            if not data.startswith(b"\n"):
                return False
            crlf += 1
            cr += 1
        self._prev_cr = data.endswith(b"\r")
        return lf == crlf and cr == crlf + self._prev_cr

    def _lines_ok(self, data):
        first = data.find(b"\n")
        if first < 0:
            self._line_length += len(data)
            return self._line_length <= MAX_TEXT_LINE + 1
        if self._line_length + first > MAX_TEXT_LINE + 1:   # + the CR
            return False
        last = data.rfind(b"\n")
        if last - first > MAX_TEXT_LINE and _LONG_LINE.search(data, first + 1, last):
            return False
        self._line_length = len(data) - last - 1
        return self._line_length <= MAX_TEXT_LINE + 1

    def _capture(self, data):
        search_from = max(0, len(self._head) - 3)
        self._head += data
        if (self._head.startswith(b"\r\n")           # no header fields at all
                or self._head.find(b"\r\n\r\n", search_from) >= 0
                or len(self._head) >= HEADER_CAPTURE):
            self._flush_head()

    def _flush_head(self):
        self.header_bytes = bytes(self._head[:HEADER_CAPTURE])
        self.spool.write(self.make_prefix(self.header_bytes))
        self.spool.write(bytes(self._head))
        self._head = bytearray()
        self._head_done = True


# --- trace fields ------------------------------------------------------------------

_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


def received_header(*, helo, client_ip, client_name, hostname, with_type, tls, id,
                    recipient, when):
    """The RFC 5321 §4.4 time-stamp line as CRLF-terminated bytes, folded:
    from-domain with the reverse DNS name and IP (§4.4, RFC 5322 comments),
    the RFC 3848 with-type, the TLS version and cipher when used, the
    transaction id, ``for`` only when there is a single recipient."""
    ip = ipaddress.ip_address(client_ip) if client_ip else None
    if ip is None:
        literal = "[unknown]"
    elif ip.version == 6 and ip.ipv4_mapped is None:
        literal = f"[IPv6:{ip.compressed}]"
    else:
        literal = f"[{ip.ipv4_mapped if ip.version == 6 else ip}]"
    source = f"{client_name} {literal}" if client_name else literal
    lines = [f"Received: from {_HELO_UNSAFE.sub('_', helo or 'unknown')[:200]} ({source})"]
    if tls:
        version, _, cipher = tls.partition(" ")
        lines.append(f"\t(using {version} with cipher {cipher})" if cipher else f"\t({tls})")
    lines.append(f"\tby {hostname} (ktmail) with {with_type} id {id}")
    date = email.utils.format_datetime(
        datetime.datetime.fromtimestamp(when, datetime.UTC))
    lines.append(f"\tfor <{recipient}>; {date}" if recipient else f"\t; {date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def tls_description(transport):
    """"TLSv1.3 TLS_AES_256_GCM_SHA384" for a TLS transport, else None."""
    try:
        handle = transport.getHandle()
        version = handle.get_protocol_version_name()
        cipher = handle.get_cipher_name()
    except Exception:
        return "TLS"
    return f"{version} {cipher}" if version and cipher else "TLS"


def _is_tls(transport):
    # ssl: endpoints and STARTTLS mark the transport ISSLTransport; ktmail's
    # own TLS wrapper (TLSMemoryBIOProtocol) provides INegotiated.
    return ISSLTransport.providedBy(transport) or INegotiated.providedBy(transport)


# --- the session ---------------------------------------------------------------------


@attrs.define
class Transaction:
    """One MAIL ... DATA/BDAT transaction."""

    sender: str                      # reverse-path text, '' for <>
    smtputf8: bool = False
    declared_size: int | None = None
    recipients: list = attrs.field(factory=list)
    id: str = attrs.field(factory=lambda: uuid.uuid4().hex[:12].upper())
    writer: object = None            # MessageWriter once DATA/BDAT started
    failed: Reply | None = None      # a BDAT transaction that can no longer succeed


class SMTPServer(smtp.ESMTP):
    """One SMTP session; subclasses give the listener's rules."""

    #: "smtp" or "submission", for logs
    listener = "smtp"
    timeout = IDLE_TIMEOUT
    #: commands this listener knows (do_<VERB>)
    commands = frozenset({"EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP",
                          "QUIT", "VRFY", "HELP"})
    #: header field name prefixes (lower case) left out of received messages
    drop_fields = ()

    def __init__(self, factory):
        smtp.ESMTP.__init__(self, chal={}, contextFactory=factory.tls_context)
        self.factory = factory
        self.timeout = factory.command_timeout
        self.host = factory.hostname
        self.callLater = factory.clock.callLater   # TimeoutMixin's timer, on the injected clock
        self.client_ip = ""
        self.client_name = None
        self._buffer = b""         # input not yet consumed starts at _offset
        self._offset = 0
        self._mode = COMMAND
        self._paused = False
        self._reading_paused = False
        self._processing = False
        self._closed = False
        self._discarding_long_line = False
        self._bad_commands = 0
        self._helo = None
        self._esmtp = False
        self._secure = False       # TLS is up (implicit or after STARTTLS)
        self._bdat_refusal = None
        self._txn = None
        self._reader = None
        self._bdat_left = 0
        self._bdat_last = False
        self.authenticated = None  # Mailbox after AUTH (submission)

    # --- connection -------------------------------------------------------------

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", "") or ""
        self._secure = _is_tls(self.transport)
        self.setTimeout(self.timeout)
        if self.factory.reverse_dns is not None and self.client_ip:
            d = defer.maybeDeferred(self.factory.reverse_dns, self.client_ip)
            d.addCallbacks(self._got_client_name, lambda f: None)
        self.transport.write(f"220 {self.factory.hostname} ESMTP ktmail\r\n".encode("ascii"))

    def _got_client_name(self, name):
        self.client_name = name

    def connectionLost(self, reason=None):
        self._closed = True
        self.setTimeout(None)
        if self._txn is not None and self._txn.writer is not None:
            self._txn.writer.spool.discard()

    def timeoutConnection(self):
        self._send(Reply(421, "4.4.2", f"{self.factory.hostname} Idle for too long; closing."))
        self._close()

    def _close(self):
        self._closed = True
        self.transport.loseConnection()

    def _send(self, reply):
        if reply.code in (500, 501, 502, 504):
            self._bad_commands += 1
        self.transport.write(reply.encode())
        if self._bad_commands >= MAX_BAD_COMMANDS and not self._closed:
            self.transport.write(Reply(421, "4.7.0", "Too many bad commands; closing.").encode())
            self._close()

    def reply(self, code, status, text):
        self._send(Reply(code, status, text))

    def reply_error(self, error, stage):
        self._send(to_smtp_reply(error, stage))

    # --- input: framing, pipelining, flow control -------------------------------

    def dataReceived(self, data):
        if self._closed:
            return
        if self._mode in (DATA, BDAT):
            # RFC 5321 §4.5.3.2.5: the clock runs between blocks of data
            self.resetTimeout()
        self._buffer += data
        self._process()
        if self._paused and len(self._buffer) > INPUT_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _process(self):
        if self._processing:
            return
        self._processing = True
        try:
            while (self._offset < len(self._buffer) and not self._paused
                   and not self._closed):
                if self._mode == DATA:
                    self._feed_data()
                elif self._mode == BDAT:
                    self._feed_bdat()
                elif not self._feed_line():
                    break
        finally:
            self._processing = False
            if self._offset:   # drop consumed input once per segment, not per line
                self._buffer = self._buffer[self._offset:]
                self._offset = 0
        if self._reading_paused and not self._paused and not self._closed:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _take_input(self, limit=None):
        """Unconsumed input (at most ``limit`` bytes), marked consumed."""
        end = len(self._buffer) if limit is None else min(len(self._buffer),
                                                         self._offset + limit)
        data = self._buffer[self._offset:end] if self._offset or end < len(self._buffer) \
            else self._buffer
        self._offset = end
        return data

    def _line_limit(self):
        if self._mode == AUTH or self._buffer[self._offset:self._offset + 5].upper() == b"AUTH ":
            return MAX_AUTH_LINE
        return MAX_COMMAND_LINE

    def _feed_line(self):
        end = self._buffer.find(b"\n", self._offset)
        if end < 0:
            if len(self._buffer) - self._offset > self._line_limit():
                self._discarding_long_line = True
                self._take_input()
            return False
        line = self._buffer[self._offset:end]
        self._offset = end + 1
        # RFC 5321 §4.5.3.2.7: a whole command within the timeout (a client
        # that sends a byte a minute does not keep the session for ever)
        self.resetTimeout()
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._discarding_long_line or len(line) > self._line_limit():
            self._discarding_long_line = False
            if self._mode == AUTH:
                self._mode = COMMAND
            self.reply(500, "5.5.2", "Line too long.")
            return True
        if self._mode == AUTH:
            self._auth_response(line)
        else:
            self._command(line)
        return True

    def _wait_for(self, coroutine):
        """Run a command that waits for a service; queue input meanwhile.
        The idle timer stops while the server, not the client, is busy."""
        d = defer.Deferred.fromCoroutine(coroutine)
        if d.called:
            d.addErrback(self._command_failed)
            return
        self._paused = True
        self.setTimeout(None)
        d.addErrback(self._command_failed)
        d.addBoth(self._resume)

    def _command_failed(self, failure):
        # A bug in a command: answer like any unexpected error, go on.
        self.reply_error(failure.value, "command")
        self._end_transaction()

    def _resume(self, _):
        self._paused = False
        if not self._closed:
            self.setTimeout(self.timeout)
            self._process()

    # --- commands -------------------------------------------------------------------

    def _command(self, line):
        if b"\r" in line or b"\0" in line:
            return self.reply(500, "5.5.2", "Bare CR or NUL in a command line.")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self.reply(500, "5.5.2", "The command is not valid UTF-8.")
        verb, _, argument = text.strip(" ").partition(" ")
        verb = verb.upper()
        if verb not in self.commands:
            if not verb:
                return self.reply(500, "5.5.2", "Empty command.")
            return self.reply(500, "5.5.1", "Command not recognised.")
        # BDAT's chunk must be read even when refused (do_BDAT refuses it)
        refusal = self.refuse_command(verb) if verb != "BDAT" else None
        if refusal is not None:
            return self._send(refusal)
        getattr(self, "do_" + verb)(argument.strip(" "))

    def refuse_command(self, verb):
        """A Reply to refuse ``verb`` in the current state, or None."""
        return None

    def extensions(self):
        """EHLO keywords (RFC 5321 §4.1.1.1) in the order advertised."""
        ext = [f"SIZE {self.factory.max_message_bytes}", "8BITMIME", "PIPELINING",
               "ENHANCEDSTATUSCODES", "CHUNKING"]
        return ext

    def _reset_session(self):
        self._helo = None
        self._esmtp = False
        self._end_transaction()

    def _end_transaction(self):
        if self._txn is not None and self._txn.writer is not None:
            self._txn.writer.spool.discard()
        self._txn = None

    def do_EHLO(self, argument):
        self._greet(argument, esmtp=True)

    def do_HELO(self, argument):
        self._greet(argument, esmtp=False)

    def _greet(self, argument, esmtp):
        # RFC 5321 §4.1.4: EHLO/HELO reset the transaction
        if not argument or not argument.isascii() or not argument.isprintable():
            return self.reply(501, "5.5.4", "Say hello with your host name: EHLO host.example.")
        self._end_transaction()
        self._helo = argument.split(" ")[0]
        self._esmtp = esmtp
        greeting = f"{self.factory.hostname} Hello {self._helo} [{self.client_ip}]"
        if not esmtp:
            return self.transport.write(f"250 {greeting}\r\n".encode())
        lines = [greeting] + self.extensions()
        out = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.transport.write(out.encode("utf-8"))

    def do_NOOP(self, argument):
        self.reply(250, "2.0.0", "OK")

    def do_RSET(self, argument):
        self._end_transaction()
        self.reply(250, "2.0.0", "OK")

    def do_QUIT(self, argument):
        self.reply(221, "2.0.0", f"{self.factory.hostname} closing connection")
        self._close()

    def do_VRFY(self, argument):
        # RFC 5321 §3.5.3: 252 neither confirms nor denies (no address harvesting)
        self.reply(252, "2.5.0", "Cannot verify the address; send the mail and see.")

    def do_HELP(self, argument):
        self.reply(214, "2.0.0", "See RFC 5321; commands: " + " ".join(sorted(self.commands)))

    # MAIL (RFC 5321 §4.1.1.2, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8)

    def do_MAIL(self, argument):
        if self._helo is None:
            return self.reply(503, "5.5.1", "Say EHLO first.")
        if self._txn is not None:
            return self.reply(503, "5.5.1", "Nested MAIL command: send RSET first.")
        try:
            path_text, params_text = split_path_argument(argument, "FROM")
            params = parse_params(params_text)
            size, utf8 = self._mail_params(params)
            sender = "" if path_text == "" else str(parse_path(path_text, utf8=utf8))
        except AddressSyntaxError as e:
            reply = e.reply
            if reply.status == "5.1.3":
                reply = attrs.evolve(reply, status="5.1.7")   # RFC 3463: sender syntax
            return self._send(reply)
        if size is not None and size > self.factory.max_message_bytes:
            return self.reply(552, "5.3.4", "Message too big: the limit is "
                                            f"{self.factory.max_message_bytes} bytes.")
        refusal = self.check_sender(sender)
        if refusal is not None:
            return self._send(refusal)
        self._txn = Transaction(sender=sender, smtputf8=utf8, declared_size=size)
        self.reply(250, "2.1.0", "Sender OK")

    def _mail_params(self, params):
        size, utf8 = None, False
        for key, value in params.items():
            if key == "SIZE" and value is not None and value.isdigit() and len(value) < 20:
                size = int(value)
            elif key == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
                pass   # 8-bit bodies are stored unchanged
            elif key == "SMTPUTF8" and value is None and "SMTPUTF8" in self.extensions():
                utf8 = True
            elif key == "AUTH" and value is not None and self.authenticated is not None:
                pass   # RFC 4954 §5: accepted, not trusted
            else:
                raise _syntax("5.5.4", f"Unsupported MAIL parameter {key}.", 555)
        return size, utf8

    def check_sender(self, sender):
        """A Reply to refuse the reverse-path, or None to accept it."""
        return None

    # RCPT (RFC 5321 §4.1.1.3)

    def do_RCPT(self, argument):
        if self._txn is None:
            return self.reply(503, "5.5.1", "Send MAIL first.")
        if self._txn.writer is not None:
            return self.reply(503, "5.5.1", "RCPT after the message data started.")
        try:
            path_text, params_text = split_path_argument(argument, "TO")
            params = parse_params(params_text)
            if params:
                raise _syntax("5.5.4", f"Unsupported RCPT parameter {next(iter(params))}.", 555)
            if path_text.lower() == "postmaster":
                # RFC 5321 §4.5.1: <postmaster> without a domain must work
                path = Path("postmaster", self.factory.postmaster_domain)
            elif path_text == "":
                raise _syntax("5.1.3", "The recipient address is empty.")
            else:
                path = parse_path(path_text, utf8=self._txn.smtputf8)
            refusal = self.refuse_path(path)
        except AddressSyntaxError as e:
            return self._send(e.reply)
        if refusal is not None:
            return self._send(refusal)
        if len(self._txn.recipients) >= MAX_RECIPIENTS:
            return self.reply(452, "4.5.3", f"Too many recipients: at most {MAX_RECIPIENTS} "
                                            "per message; send the rest in another message.")
        self._wait_for(self._rcpt(self._txn, path))

    async def _rcpt(self, txn, path):
        try:
            address = await self.check_recipient(txn, path)
        except Exception as e:
            return self.reply_error(e, "rcpt")
        if txn is not self._txn:
            return   # the transaction ended meanwhile (connection lost)
        if address not in txn.recipients:
            txn.recipients.append(address)
        self.reply(250, "2.1.5", "Recipient OK")

    def refuse_path(self, path):
        """A Reply to refuse a recipient by its syntax alone, or None."""
        return None

    async def check_recipient(self, txn, path):
        """-> the model.Address to deliver to; raises a ktmail error."""
        raise NotImplementedError

    # DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030)

    def _ready_for_data(self):
        if self._txn is None:
            return Reply(503, "5.5.1", "Send MAIL and RCPT first.")
        if not self._txn.recipients:
            # RFC 2920 §3.1: no valid recipient after pipelined RCPTs
            return Reply(554, "5.5.1", "No valid recipients.")
        return None

    def _start_message(self):
        """Open the spool -> None, or the Reply when it cannot be opened."""
        txn = self._txn
        try:
            spool = self.factory.delivery.new_spool()
        except Exception as e:
            return to_smtp_reply(e, "data")
        txn.writer = MessageWriter(spool, self.factory.max_message_bytes,
                                   lambda header_bytes: self._prefix(txn, header_bytes),
                                   self.factory.header_limits, self.drop_fields)
        return None

    def _prefix(self, txn, header_bytes):
        return received_header(
            helo=self._helo, client_ip=self.client_ip, client_name=self.client_name,
            hostname=self.factory.hostname, with_type=self.with_type(txn),
            tls=self.tls_info(),
            id=txn.id, recipient=txn.recipients[0] if len(txn.recipients) == 1 else None,
            when=self.factory.clock.seconds())

    def with_type(self, txn):
        """RFC 3848 / RFC 6531 §3.7.3 with-type of the Received: field."""
        base = ("UTF8SMTP" if txn.smtputf8 else "ESMTP") if self._esmtp else "SMTP"
        return base + ("S" if self._secure else "") + ("A" if self.authenticated else "")

    def tls_info(self):
        """"TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is up, else None."""
        return tls_description(self.transport) if self._secure else None

    def do_DATA(self, argument):
        if argument:
            return self.reply(501, "5.5.4", "DATA takes no argument.")
        refusal = self._ready_for_data()
        if refusal is None and self._txn.writer is not None:
            refusal = Reply(503, "5.5.1", "DATA cannot follow BDAT.")
        refusal = refusal or self._start_message()
        if refusal is not None:
            return self._send(refusal)
        self._reader = DotStuffedReader()
        self._mode = DATA
        self.transport.write(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n")

    def _feed_data(self):
        pieces, rest = self._reader.feed(self._take_input())
        self._buffer, self._offset = b"", 0
        writer = self._txn.writer
        for piece in pieces:
            writer.write(piece)
        if rest is not None:
            self._buffer = rest
            self._mode = COMMAND
            self._reader = None
            self._wait_for(self._end_of_message(self._txn))

    def do_BDAT(self, argument):
        parts = argument.split(" ")
        if not (1 <= len(parts) <= 2 and parts[0].isdigit() and len(parts[0]) < 20) or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            # Without a valid size the chunk cannot be skipped: the stream
            # is lost, so close (RFC 3030 §4.2 leaves no other way).
            self.reply(501, "5.5.4", "Syntax: BDAT <size> [LAST]; closing.")
            return self._close()
        self._bdat_left = int(parts[0])
        self._bdat_last = len(parts) == 2
        self._mode = BDAT
        refusal = self.refuse_command("BDAT") or self._ready_for_data()
        if refusal is None and self._txn.failed is not None:
            refusal = self._txn.failed if self._bdat_last else \
                Reply(503, "5.5.1", "The transaction failed; send RSET.")
            if self._bdat_last:
                self._end_transaction()
        if refusal is None and self._txn.writer is None:
            refusal = self._start_message()
        self._bdat_refusal = refusal
        if self._bdat_left == 0:
            self._bdat_chunk_done()

    def _feed_bdat(self):
        chunk = self._take_input(self._bdat_left)
        self._bdat_left -= len(chunk)
        if self._bdat_refusal is None:
            self._txn.writer.write(chunk)
        if self._bdat_left == 0:
            self._bdat_chunk_done()

    def _bdat_chunk_done(self):
        self._mode = COMMAND
        if self._bdat_refusal is not None:
            # the chunk was read and dropped (RFC 3030 §2: always consume it)
            return self._send(self._bdat_refusal)
        txn = self._txn
        if txn.writer.problem is not None and not self._bdat_last:
            txn.failed = self._problem_reply(txn.writer.problem)
            txn.writer.spool.discard()
            return self._send(txn.failed)
        if self._bdat_last:
            return self._wait_for(self._end_of_message(txn))
        self.reply(250, "2.0.0", f"{txn.writer.size} octets received")

    # end of the message: store it, then answer

    def _problem_reply(self, problem):
        if problem == MESSAGE_TOO_BIG:
            return Reply(552, "5.3.4", "Message too big: the limit is "
                                       f"{self.factory.max_message_bytes} bytes.")
        limits = self.factory.header_limits
        if problem == HEADER_TOO_BIG:
            return Reply(552, "5.3.4", "Message refused: its header section is larger than "
                                       f"{limits.max_bytes} bytes.")
        if problem == TOO_MANY_FIELDS:
            return Reply(552, "5.3.4", "Message refused: it has more than "
                                       f"{limits.max_fields} header fields.")
        if problem == BARE_NEWLINE:
            return Reply(550, "5.6.0", "Message refused: it contains a bare CR or LF; lines "
                                       "must end with CRLF (RFC 5321 §2.3.8).")
        return Reply(550, "5.6.0", f"Message refused: a line is longer than {MAX_TEXT_LINE} "
                                   "bytes; wrap long lines.")

    async def _end_of_message(self, txn):
        # Detach the transaction: from here on only this coroutine touches
        # its spool (a lost connection must not discard it mid-delivery).
        if self._txn is txn:
            self._txn = None
        writer = txn.writer
        problem = writer.close()
        reply = None
        try:
            if problem is not None:
                reply = self._problem_reply(problem)
            else:
                reply = await self._store(txn, writer)
        except Exception as e:
            reply = to_smtp_reply(e, "data")
        finally:
            writer.spool.discard()
            self._log_transaction(txn, writer, reply)
        self._send(reply)

    async def _store(self, txn, writer):
        """Finish the spool and hand it over -> the Reply to send."""
        refusal = self.check_message(writer.header_bytes)
        if refusal is not None:
            return refusal
        await writer.spool.finish()
        envelope = Envelope(
            sender=txn.sender, recipients=tuple(txn.recipients), client_address=self.client_ip,
            client_helo=self._helo or "", authenticated=self.authenticated,
            tls=self.tls_info(),
            protocol=self.with_type(txn), received_at=self.factory.clock.seconds())
        results = await self.hand_over(envelope, writer.spool)
        return self._delivery_reply(txn, results, envelope, writer.header_bytes)

    def check_message(self, header_bytes):
        """A Reply to refuse the message by its header, or None."""
        return None

    async def hand_over(self, envelope, spool):
        """Deliver or queue -> {Address: None | KtmailError}."""
        raise NotImplementedError

    def _delivery_reply(self, txn, results, envelope, message_start):
        """One reply for the whole message.

        Every recipient stored -> 250. None stored -> the first temporary
        error if any (the client retries), else the first permanent one.
        Some stored and some not: a temporary failure among them -> 451 for
        the message (the client's retry duplicates the stored copies, which
        is better than losing one); only permanent failures -> 250, since
        the client could not resend to just the failed recipients, and the
        sender gets a DSN for those (services.bounces). RCPT already
        refused what could be known (unknown mailbox, full mailbox), so
        this is rare."""
        failures = {a: e for a, e in results.items() if e is not None}
        missing = [a for a in txn.recipients if a not in results]
        for address in missing:
            failures[address] = errors.StoreUnavailable()
        if not failures:
            return Reply(250, "2.0.0", f"Message accepted, id {txn.id}")
        replies = [to_smtp_reply(e, "data") for e in failures.values()]
        temporary = [r for r in replies if r.temporary]
        if len(failures) == len(txn.recipients):
            return temporary[0] if temporary else replies[0]
        for address, error in failures.items():
            log.warn("SMTP {listener} id={id}: recipient {rcpt} failed after DATA: {text}",
                     listener=self.listener, id=txn.id, rcpt=str(address),
                     text=getattr(error, "text", repr(error)))
        if temporary:
            return temporary[0]
        self._bounce(envelope, {address: f"{r.code} {r.status} {r.text}"
                                for address, r in zip(failures, replies)}, message_start)
        return Reply(250, "2.0.0", f"Message accepted for {len(txn.recipients) - len(failures)}"
                                   f" of {len(txn.recipients)} recipients, id {txn.id}")

    def _bounce(self, envelope, failures, message_start):
        bounces = self.factory.bounces
        if bounces is None:
            log.error("SMTP {listener}: no DSN can be sent for {count} failed recipient(s)",
                      listener=self.listener, count=len(failures))
            return
        d = bounces.report(envelope, failures, message_start)
        d.addErrback(lambda f: log.failure("SMTP {listener}: the DSN could not be queued", f,
                                           listener=self.listener))

    def _log_transaction(self, txn, writer, reply):
        log.info("SMTP {listener} client={client} id={id} from=<{sender}> rcpts={count} "
                 "size={size} result={code} {status}",
                 listener=self.listener, client=self.client_ip, id=txn.id, sender=txn.sender,
                 count=len(txn.recipients), size=writer.size,
                 code=reply.code if reply else "-", status=reply.status if reply else "")


class InboundSMTP(SMTPServer):
    """Port 25: mail for the hosted domains only; STARTTLS, no AUTH."""

    listener = "smtp"
    commands = SMTPServer.commands | {"STARTTLS"}
    # the spam verdict's own fields: a sender's are left out, so that no
    # filter or reader takes a forged "X-Spam-Status: No" for ours (as
    # SpamAssassin and amavis remove them)
    drop_fields = (b"x-spam-",)

    def extensions(self):
        ext = super().extensions() + ["SMTPUTF8"]
        if self.factory.tls_context is not None and not self._secure:
            ext.append("STARTTLS")
        return ext

    def do_STARTTLS(self, argument):
        if self.factory.tls_context is None:
            return self.reply(502, "5.5.1", "TLS is not available.")
        if self._secure:
            return self.reply(503, "5.5.1", "TLS is already active.")
        if argument:
            return self.reply(501, "5.5.4", "STARTTLS takes no argument.")
        self.reply(220, "2.0.0", "Ready to start TLS")
        # RFC 3207 §4.2 / CVE-2011-0411: plain-text input that followed
        # STARTTLS is discarded, and nothing learned before TLS is kept.
        self._buffer, self._offset = b"", 0
        self._reset_session()
        self.transport.startTLS(self.factory.tls_context)
        self._secure = True

    async def check_recipient(self, txn, path):
        if path.is_literal:
            raise errors.RelayDenied()
        address = path.address()
        await self.factory.delivery.check_recipient(address)
        return address

    async def hand_over(self, envelope, spool):
        return await self.factory.delivery.deliver(envelope, spool, scan_spam=True)


class SubmissionSMTP(SMTPServer):
    """Port 465: mail from an authenticated mailbox, as its own address."""

    listener = "submission"
    commands = SMTPServer.commands | {"AUTH"}
    #: what works before AUTH (RFC 4954 §4)
    before_auth = frozenset({"EHLO", "HELO", "NOOP", "RSET", "QUIT", "AUTH"})

    def __init__(self, factory):
        super().__init__(factory)
        self._auth_failures = 0
        self._sasl = None

    def extensions(self):
        ext = super().extensions()
        if self._secure and self.authenticated is None:
            ext.append("AUTH PLAIN LOGIN")
        return ext

    def refuse_command(self, verb):
        if self.authenticated is None and verb not in self.before_auth:
            return Reply(530, "5.7.0", "Authentication required: log in with AUTH first.")
        return None

    # AUTH (RFC 4954; PLAIN RFC 4616; LOGIN draft-murchison-sasl-login)

    def do_AUTH(self, argument):
        if not self._secure:
            return self.reply(538, "5.7.11", "Encryption required: connect with TLS.")
        if self.authenticated is not None:
            return self.reply(503, "5.5.1", "Already authenticated.")
        if self._helo is None:
            return self.reply(503, "5.5.1", "Say EHLO first.")
        if self._txn is not None:
            return self.reply(503, "5.5.1", "AUTH is not allowed during a mail transaction.")
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            return self.reply(504, "5.5.4", "Unsupported mechanism: use PLAIN or LOGIN.")
        self._sasl = {"mechanism": mechanism, "username": None}
        initial = initial.strip(" ")
        if not initial:
            self._mode = AUTH
            prompt = b"" if mechanism == "PLAIN" else b"Username:"
            return self._challenge(prompt)
        # RFC 4954 §4: "=" is an empty initial response
        self._sasl_step(b"" if initial == "=" else initial.encode("ascii", "replace"))

    def _challenge(self, text):
        self.transport.write(b"334 " + base64.b64encode(text) + b"\r\n")

    def _auth_response(self, line):
        self._mode = COMMAND
        if line == b"*":
            self._sasl = None
            return self.reply(501, "5.0.0", "Authentication cancelled.")
        self._sasl_step(line)

    def _sasl_step(self, encoded):
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self._sasl = None
            return self.reply(501, "5.5.2", "Malformed authentication data (not base64).")
        sasl = self._sasl
        if sasl["mechanism"] == "LOGIN" and sasl["username"] is None:
            sasl["username"] = decoded
            self._mode = AUTH
            return self._challenge(b"Password:")
        if sasl["mechanism"] == "LOGIN":
            authzid, username, password = b"", sasl["username"], decoded
        else:
            parts = decoded.split(b"\0")
            if len(parts) != 3:
                self._sasl = None
                return self.reply(501, "5.5.2", "Malformed PLAIN data: expected "
                                                "authzid NUL username NUL password.")
            authzid, username, password = parts
        self._sasl = None
        try:
            authzid = authzid.decode("utf-8")
            username = username.decode("utf-8")
            password = password.decode("utf-8")
        except UnicodeDecodeError:
            return self.reply(501, "5.5.2", "Malformed authentication data (not UTF-8).")
        if authzid and authzid.lower() != username.lower():
            # RFC 4616 §2: nobody may act for another mailbox
            return self._auth_failed(Reply(535, "5.7.8", "Authentication failed: you may "
                                                         "log in only as yourself."))
        self._wait_for(self._authenticate(username, password))

    async def _authenticate(self, username, password):
        try:
            mailbox = await self.factory.auth.authenticate_mailbox(
                username, password, self.client_ip, "smtp")
        except errors.AuthFailed:
            return self._auth_failed(Reply(535, "5.7.8", "Authentication failed: wrong "
                                                         "username or password."))
        except errors.LoginThrottled as e:
            return self._auth_failed(to_smtp_reply(e, "auth"))
        except Exception as e:
            reply = to_smtp_reply(e, "auth")
            return self._send(Reply(454, "4.7.0", "Temporary authentication failure; "
                                                  "try again later.") if reply is LOCAL_ERROR
                              else reply)
        self.authenticated = mailbox
        self.reply(235, "2.7.0", "Authentication successful")

    def _auth_failed(self, reply):
        self._auth_failures += 1
        self._send(reply)
        if self._auth_failures >= MAX_AUTH_FAILURES and not self._closed:
            self.reply(421, "4.7.0", "Too many failed logins; closing.")
            self._close()

    def check_sender(self, sender):
        try:
            self.factory.submission.check_sender(self.authenticated, sender)
        except errors.KtmailError as e:
            return to_smtp_reply(e, "mail")
        return None

    def refuse_path(self, path):
        if path.is_literal:
            return Reply(553, "5.1.3", "Address literals are not accepted as recipients; "
                                       "use a domain name.")
        return None

    async def check_recipient(self, txn, path):
        submission = self.factory.submission
        address = await submission.check_recipient(self.authenticated,
                                                   Address(path.local, path.domain))
        if address not in txn.recipients:
            await submission.reserve_recipient(self.authenticated, "smtp",
                                               pending=len(txn.recipients))
        return address

    def _prefix(self, txn, header_bytes):
        return (super()._prefix(txn, header_bytes)
                + self.factory.submission.missing_headers(header_bytes))

    def check_message(self, header_bytes):
        try:
            self.factory.submission.check_from_header(self.authenticated, header_bytes)
        except errors.KtmailError as e:
            return to_smtp_reply(e, "data")
        return None

    async def hand_over(self, envelope, spool):
        return await self.factory.submission.submit(envelope, spool, "smtp")


# --- factories ------------------------------------------------------------------------


class SMTPFactory(protocol.ServerFactory):
    """Builds sessions. How many connections a client may hold is the
    listener's business (protocols/admission.py); ``refusal`` is what a
    refused client is told."""

    protocol = None
    noisy = False

    def __init__(self, *, hostname, clock, max_message_bytes, delivery, tls_context=None,
                 reverse_dns=None, postmaster_domain=None, bounces=None,
                 command_timeout=IDLE_TIMEOUT, header_limits=None):
        self.hostname = hostname
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.delivery = delivery
        self.tls_context = tls_context
        #: callable(ip) -> Deferred[str | None], forward-confirmed reverse DNS
        self.reverse_dns = reverse_dns
        self.postmaster_domain = postmaster_domain or hostname
        #: services.bounces.AfterDataBounces, for recipients that fail after DATA
        self.bounces = bounces
        #: seconds a client has for each command (RFC 5321 §4.5.3.2: at least 300)
        self.command_timeout = command_timeout
        #: mime.HeaderLimits for the header section of each message
        self.header_limits = header_limits or HeaderLimits()

    def buildProtocol(self, addr):
        return self.protocol(self)

    def refusal(self, per_client):
        """RFC 5321 §3.8: a 421 greeting, then the connection closes."""
        text = ("Too many connections from your address; try again later." if per_client
                else "Too busy; try again later.")
        return Reply(421, "4.7.0", f"{self.hostname} {text}").encode()


class InboundSMTPFactory(SMTPFactory):
    """The MX listener: ``InboundSMTPFactory(delivery=..., hostname=...,
    clock=..., max_message_bytes=..., tls_context=...)``."""

    protocol = InboundSMTP


class SubmissionSMTPFactory(SMTPFactory):
    """The submission listener; also needs ``auth`` (AuthService) and
    ``submission`` (SubmissionService)."""

    protocol = SubmissionSMTP

    def __init__(self, *, auth, submission, **kwargs):
        super().__init__(**kwargs)
        self.auth = auth
        self.submission = submission
