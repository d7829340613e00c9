"""The IMAP4rev1 session (RFC 3501), or IMAP4rev2 (RFC 9051) once the
client enables it, with the extensions of SPEC §4 and issue 8:
CONDSTORE/QRESYNC (RFC 7162), ESEARCH (RFC 4731), SEARCHRES (RFC 5182),
SORT/THREAD (RFC 5256), ESORT (RFC 5267), COMPRESS=DEFLATE (RFC 4978),
LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438),
BINARY (RFC 3516), MULTIAPPEND (RFC 3502), UTF8=ACCEPT (RFC 6855).
``capability_list`` says what is offered and what ENABLE IMAP4rev2
changes.

``IMAPServer`` subclasses Twisted's ``IMAP4Server`` for its connection
plumbing (line reception, states, timeouts, the greeting) and replaces
what is broken or missing there (TWISTED-NOTES §1): command framing with
literals (LITERAL+, size limits, APPEND streamed to a spool file), the
argument grammar, every command handler (the ``<state>_<COMMAND>`` tables
are all re-declared here), SELECT's required responses, FETCH (implicit
\\Seen, exact partial fetches, batched writes, streamed bodies), SEARCH,
and the unsolicited responses of a shared folder.

Invariants:
- commands run one at a time, in the order they arrived: while one runs,
  no further line is read (``pauseProducing``), so pipelined commands see
  the state their predecessors left and a literal's bytes are never taken
  for commands;
- an oversized literal is refused before its continuation (``{n}``) or
  read and thrown away without buffering (``{n+}``); lines longer than
  ``MAX_LENGTH`` are answered with BAD and skipped, never buffered;
- the client's sequence numbers change only through responses it was sent
  (``SelectedFolder.updates``), and EXPUNGE is never sent during FETCH,
  STORE or SEARCH (RFC 3501 §7.4.1);
- errors reach the wire through ``_failed`` only: ``ktmail.errors`` types
  become NO with their response code and client-safe text, anything else
  a generic NO [SERVERBUG] with the detail in the log;
- passwords never reach a log; large message bytes never sit in memory.
"""

import base64
import bisect
import collections
import inspect
import io
import re
import zlib

import attrs
from twisted.internet import defer, interfaces, protocol, task
from twisted.logger import Logger
from twisted.mail import imap4
from zope.interface import implementer

import ktmail
from ktmail import errors, mime
from ktmail.model import FLAGS_ADD, INBOX, SEEN, SEPARATOR, normalize_folder_name
from ktmail.protocols.imap import fetch, parser, wire
from ktmail.protocols.imap.compress import DeflateTransport, Inflater
from ktmail.protocols.imap.mailbox import ImapAccount, keyword_flags, pattern_matcher
from ktmail.protocols.imap.parser import CommandReader, Literal, ParseError
from ktmail.services import ordering, search

log = Logger()

#: literal sizes taken into memory (an APPEND message above this goes to a spool file)
MAX_MEMORY_LITERAL = 64 * 1024
#: literals before login (user names, passwords)
MAX_LITERAL_UNAUTHENTICATED = 8 * 1024
#: command bytes held in memory (lines plus in-memory literals)
MAX_COMMAND_BYTES = 1024 * 1024
#: message bytes of one APPEND command (MULTIAPPEND, RFC 3502): the quota
#: could never take more
MAX_APPEND_COMMAND_BYTES = 1024 * 1024 * 1024
#: pipelined input held while a command runs before the socket stops being read
MAX_BUFFERED = 256 * 1024
#: failed logins on one connection before it is closed
MAX_AUTH_FAILURES = 5
#: bytes of small FETCH items read into memory at once (then written)
READ_BUDGET = 2 * 1024 * 1024
#: a body larger than this is streamed from the file in chunks
INLINE_BODY = 256 * 1024
STREAM_CHUNK = 256 * 1024
#: FETCH responses written at once (flags/UID/size only, and the rest)
FAST_BATCH = 2000
FULL_BATCH = 100
#: share of the quota at which the user is warned with [ALERT]
QUOTA_ALERT = 0.9

_TAG = re.compile(rb"([^\x00-\x20\x7f-\xff(){%*\"\\+]+) ")
_COMMAND = re.compile(rb"[A-Za-z]+")
_FAST_ITEMS = {"UID", "FLAGS", "RFC822.SIZE", "INTERNALDATE", "MODSEQ"}
#: capabilities ENABLE can turn on (upper-case -> as they are spelled)
_ENABLEABLE = {c.upper(): c for c in ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4rev2")}


@attrs.frozen
class ImapContext:
    """What a session needs from the rest of the daemon.

    ``auth`` (services.auth.AuthService), ``mailboxes``
    (services.mailboxes.MailboxService), ``new_spool()`` -> a Spool on the
    Maildir file system (services.delivery.DeliveryService.new_spool),
    ``run_in_thread(fn, *args)`` -> Deferred, ``clock`` (IReactorTime),
    ``max_message_bytes`` (APPENDLIMIT), ``turn()`` -> a Deferred that
    fires after other work of the reactor had its turn (long FETCH
    responses are written in slices).
    """

    auth: object
    mailboxes: object
    new_spool: object
    run_in_thread: object
    clock: object
    max_message_bytes: int = 52428800
    turn: object = None
    #: IMAP sessions logged in to one mailbox at once (the IMAPFactory counts)
    sessions_per_mailbox: int = 20
    #: seconds of silence before login, and once logged in (RFC 3501 §5.4: >= 30 min)
    login_timeout: int = 60
    idle_timeout: int = 30 * 60
    #: the header section an APPENDed message may have
    header_limits: mime.HeaderLimits = mime.HeaderLimits()

    def next_turn(self):
        if self.turn is not None:
            return self.turn()
        return task.deferLater(self.clock, 0, lambda: None)


# --- literal sinks ------------------------------------------------------------------


class _MemorySink:
    def __init__(self, size):
        self.remaining = size
        self._chunks = []

    def write(self, data):
        self._chunks.append(data)
        self.remaining -= len(data)

    def literal(self, size):
        return Literal(size, data=b"".join(self._chunks))

    def discard(self):
        self._chunks = []


class _SpoolSink:
    """An APPEND message streamed into a spool file as it arrives."""

    def __init__(self, spool, size):
        self.spool = spool
        self.remaining = size

    def write(self, data):
        self.spool.write(data)
        self.remaining -= len(data)

    def literal(self, size):
        return Literal(size, spool=self.spool)

    def discard(self):
        self.spool.discard()


class _DiscardSink:
    """A refused LITERAL+ literal: read and thrown away (RFC 7888 §4)."""

    def __init__(self, size):
        self.remaining = size

    def write(self, data):
        self.remaining -= len(data)

    def literal(self, size):
        return Literal(size, data=b"")

    def discard(self):
        pass


@attrs.define
class _Framed:
    """A command being received: its line segments and literals so far,
    and, when it was refused while arriving, the answer to give it."""

    segments: list = attrs.field(factory=list)
    size: int = 0
    refusal: tuple | None = None
    #: bytes of the APPEND messages before this literal (MULTIAPPEND)
    append_bytes: int = 0

    @property
    def tag(self):
        m = _TAG.match(self.segments[0]) if self.segments else None
        return m.group(1) if m else b"*"

    def words(self):
        """(tag, COMMAND) of the first line, upper-case, or (None, None)."""
        m = _TAG.match(self.segments[0])
        if not m:
            return None, None
        c = _COMMAND.match(self.segments[0], m.end())
        return m.group(1), (c.group().upper() if c else None)

    def spools(self):
        return [s.spool for s in self.segments if isinstance(s, Literal) and s.spool]


@implementer(interfaces.IPushProducer)
class _WriteGate:
    """Registered with the transport: tells long responses to wait while the
    transport's buffer is full (back-pressure), so a big FETCH never piles
    its bytes up in memory."""

    def __init__(self):
        self.paused = False
        self.stopped = False
        self._waiters = []

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()

    def wait(self):
        if not self.paused or self.stopped:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d


class _Gone(Exception):
    """The connection closed while a command was running."""


# --- argument parsers for the command tables ------------------------------------------
# Each takes (server, reader), consumes the space before its argument, and
# returns the value.


def _mailbox(server, reader):
    reader.space()
    return parser.mailbox(reader, server.utf8_names)


def _astring(server, reader):
    reader.space()
    return reader.astring()


def _seqset(server, reader):
    reader.space()
    return parser.sequence_set(reader)


def _fetch_atts(server, reader):
    reader.space()
    return parser.fetch_atts(reader)


def _store_action(server, reader):
    reader.space()
    return parser.store_action(reader)


def _no_recent_keys(server, query):
    """RFC 9051 Appendix E: IMAP4rev2 has no RECENT, NEW or OLD search keys."""
    if server.rev2 and any(isinstance(k, search.Recent) for k in search.leaves(query)):
        raise ParseError("IMAP4rev2 has no RECENT, NEW or OLD search keys "
                         "(RFC 9051 Appendix E).")


def _search_program(server, reader):
    reader.space()
    program = parser.search_program(reader)
    _no_recent_keys(server, program.query)
    return program


def _sort_program(server, reader):
    reader.space()
    program = parser.sort_program(reader)
    _no_recent_keys(server, program.query)
    return program


def _thread_program(server, reader):
    reader.space()
    program = parser.thread_program(reader)
    _no_recent_keys(server, program[1])
    return program


def _list_command(server, reader):
    reader.space()
    command = parser.list_command(reader, server.utf8_names)
    if server.rev2 and "RECENT" in command.status_items:
        raise ParseError("IMAP4rev2 has no STATUS RECENT (RFC 9051 Appendix E).")
    return command


def _status_items(server, reader):
    reader.space()
    items = parser.status_items(reader)
    if server.rev2 and "RECENT" in items:
        raise ParseError("IMAP4rev2 has no STATUS RECENT (RFC 9051 Appendix E).")
    return items


def _append_args(server, reader):
    """``mailbox 1*(SP [flags SP] [date-time SP] literal)``: several messages
    are MULTIAPPEND (RFC 3502 §6.3.11). -> (name, [(flags, date, Literal)])."""
    reader.space()
    name = parser.mailbox(reader, server.utf8_names)
    messages = []
    while reader.peek() == b" " or not messages:
        reader.space()
        flags = parser.optional_flag_list(reader)
        date = parser.optional_date_time(reader)
        if reader.maybe(b"UTF8 ("):
            # RFC 6855 §4: a message with UTF-8 header fields, as a literal8
            if "UTF8=ACCEPT" not in server._enabled:
                raise ParseError("Enable UTF8=ACCEPT first (RFC 6855 §4).")
            literal = reader.literal()
            reader.expect(b")")
        else:
            literal = reader.literal()
        messages.append((tuple(flags or ()), date, literal))
    return name, messages


def _auth_args(server, reader):
    reader.space()
    mechanism = reader.atom()
    initial = None
    if reader.peek() == b" ":
        reader.space()
        initial = reader.rest()
    return mechanism, initial


def _id_params(server, reader):
    reader.space()
    if reader.maybe(b"NIL"):
        return {}
    items = reader.paren_list(reader.nstring)
    return dict(zip(items[::2], items[1::2]))


def _atoms(server, reader):
    out = []
    while reader.peek() == b" ":
        reader.space()
        out.append(reader.atom())
    if not out:
        raise ParseError("Missing argument.")
    return out


def _atom(server, reader):
    reader.space()
    return reader.atom()


def _quota_root(server, reader):
    reader.space()
    return reader.astring()


def _select_params(server, reader):
    return parser.select_params(reader)


def _fetch_modifiers(server, reader):
    return parser.fetch_modifiers(reader)


def _rest(server, reader):
    return reader.rest()


def _list_reference(server, reader):
    reader.space()
    raw = reader.astring()
    return parser.decode_mailbox(raw, server.utf8_names) if raw else ""


def _list_pattern(server, reader):
    reader.space()
    return parser._pattern(reader, server.utf8_names)


# --- the session --------------------------------------------------------------------


class IMAPServer(imap4.IMAP4Server):
    """One IMAP connection (see the module docstring)."""

    IDENT = b"ktmail IMAP4rev1 ready"
    #: RFC 7162 and RFC 2683 ask servers to take long lines (big UID sets)
    MAX_LENGTH = 64 * 1024
    timeOut = 60
    POSTAUTH_TIMEOUT = 30 * 60

    def __init__(self, context):
        super().__init__(chal={}, contextFactory=None)
        self.context = context
        self.callLater = context.clock.callLater
        self.timeOut = context.login_timeout
        self.POSTAUTH_TIMEOUT = context.idle_timeout
        self._session_counted = False
        self.selected = None
        self.mailbox = None
        self.peer = ""
        self._framing = None
        self._literal = None
        self._skipping = False
        self._overflowed = False
        self._transport_paused = False
        self._busy = None
        self._current = None
        self._line_waiter = None
        self._idling = False
        self._gone = False
        self._gate = _WriteGate()
        self._auth_failures = 0
        self._quota_alerted = False
        self._enabled = set()
        #: the client's deflate stream once COMPRESS is active (RFC 4978)
        self._inflater = None

    # --- connection ---

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", "") or ""
        self.transport.registerProducer(self._gate, True)
        _no_delay(self.transport)
        super().connectionMade()

    def connectionLost(self, reason):
        self._gone = True
        if self._session_counted:
            self._session_counted = False
            self.factory.session_ended(self.mailbox)
        self._gate.stopProducing()
        self._deselect()
        if self._literal is not None:
            self._literal[1].discard()
            self._literal = None
        if self._framing is not None:
            for spool in self._framing.spools():
                spool.discard()
            self._framing = None
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            waiter.errback(_Gone())
        super().connectionLost(reason)

    def timeoutConnection(self):
        self.sendLine(b"* BYE Autologout; the connection was idle for too long.")
        self._drop()

    def _drop(self):
        self._deselect()
        self.state = "logout"
        # a registered producer holds back the TLS close (twisted.protocols.tls)
        if not self._gate.stopped:
            self._gate.stopProducing()
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    @property
    def tls(self):
        return interfaces.ISSLTransport.providedBy(self.transport)

    def sendLine(self, line):
        if not self._gone:
            self.transport.write(line + b"\r\n")

    def sendServerGreeting(self):
        self.sendLine(b"* OK [CAPABILITY " + b" ".join(self.capability_list()) + b"] "
                      + self.IDENT)

    # --- capabilities (SPEC §4) ---

    def capability_list(self):
        """What this session offers (SPEC §4 and issue 8); each extension is
        listed only once it is complete.

        IMAP4rev2 (RFC 9051) is advertised next to IMAP4rev1 (its §1 and
        Appendix E allow both): a client that does not ENABLE IMAP4rev2 is
        served IMAP4rev1 (RFC 3501) with the extensions listed. Of the
        Appendix E differences, the incorporated extensions are all served
        to everyone (NAMESPACE, UNSELECT, UIDPLUS, ESEARCH, SEARCHRES,
        ENABLE, IDLE, SASL-IR, LIST-EXTENDED, LIST-STATUS, MOVE, LITERAL+ as
        a superset of LITERAL-, BINARY, SPECIAL-USE, STATUS=SIZE, the STATUS
        DELETED item, the RFC 5530 response codes, UID EXPUNGE,
        APPENDUID/COPYUID, CHILDREN attributes); ``ENABLE IMAP4rev2``
        switches on the rest: SEARCH answered only with ESEARCH; no RECENT
        response, \\Recent flag, RECENT/NEW/OLD keys (BAD) or STATUS RECENT
        item (BAD); no [UNSEEN n] at SELECT, which sends the folder's LIST
        response instead; [CLOSED] whenever SELECT/EXAMINE closes a folder;
        UTF-8 mailbox names both ways instead of modified UTF-7; OLDNAME in
        the LIST responses RENAME sends (and CREATE, when the name given
        was changed); [HASCHILDREN] for DELETE; RFC 2231 parameters decoded
        in BODYSTRUCTURE. The deprecated CHECK, LSUB and RFC822* FETCH items
        are still accepted. STARTTLS (RFC 9051 §6.2.1) is required only on
        cleartext ports: the IMAP listener is implicit TLS (port 993, SPEC
        §2), so it is not offered; LOGINDISABLED stands in for AUTH=PLAIN
        on a connection without TLS.
        """
        caps = [b"IMAP4rev1", b"IMAP4rev2", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"LITERAL+"]
        if self.state == "unauth":
            caps.append(b"AUTH=PLAIN" if self.tls else b"LOGINDISABLED")
            return caps
        # QUOTA as RFC 2087 (STORAGE); QUOTA=RES-STORAGE (RFC 9208) would
        # also promise the STATUS DELETED-STORAGE item, not served yet
        return caps + [b"NAMESPACE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"QUOTA",
                       b"UNSELECT", b"CHILDREN",
                       b"APPENDLIMIT=%d" % self.context.max_message_bytes,
                       b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SEARCHRES", b"STATUS=SIZE",
                       b"SORT", b"ESORT", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES",
                       b"LIST-EXTENDED", b"LIST-STATUS", b"COMPRESS=DEFLATE", b"BINARY",
                       b"MULTIAPPEND", b"UTF8=ACCEPT"]

    def listCapabilities(self):
        return self.capability_list()

    # --- reception: lines, over-long lines, literals ---

    def dataReceived(self, data):
        if self._inflater is None:
            self._plain_received(data)
            return
        if not data:
            # resuming after a command: the lines already inflated come first
            self._plain_received(b"")
        self._inflater.feed(data)
        try:
            self._inflater.drain()
        except zlib.error:
            self._inflater = None
            self.sendLine(b"* BYE The compressed data from the client is corrupt.")
            self._drop()

    def _wants_input(self):
        """May more (inflated) input go into the line buffer now?"""
        return not self._gone and not (self.paused and len(self._buffer) > MAX_BUFFERED)

    def _plain_received(self, data):
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1:]
        super().dataReceived(data)
        while self._overflowed and not self._busyReceiving:
            self._overflowed = False
            super().dataReceived(b"")
        if self.paused and not self._transport_paused and len(self._buffer) > MAX_BUFFERED:
            self._transport_paused = True
            self.transport.pauseProducing()

    def lineLengthExceeded(self, line):
        """RFC 3501 §4: answer BAD and go on with the next line (Twisted drops
        the connection); the rest of the line is skipped without buffering."""
        end = line.find(b"\r\n")
        tag = self._framing.tag if self._framing else _Framed([line[:200]]).tag
        if self._framing is not None:
            for spool in self._framing.spools():
                spool.discard()
            self._framing = None
        self.sendLine(tag + b" BAD The command line is too long.")
        if end >= 0:
            self._buffer = line[end + 2:] + self._buffer
            self._overflowed = True
        else:
            self._skipping = True

    def lineReceived(self, line):
        self.resetTimeout()
        if self._line_waiter is not None:
            waiter, self._line_waiter = self._line_waiter, None
            self._stop_reading()
            waiter.callback(line)
            return
        framed = self._framing
        if framed is None:
            framed = self._framing = _Framed()
        framed.segments.append(line)
        framed.size += len(line)
        m = parser.LITERAL_MARKER.search(line)
        if m is None:
            self._framing = None
            self._run(framed)
            return
        self._literal_announced(framed, int(m.group(1)), bool(m.group(2)))

    def _literal_announced(self, framed, size, non_sync):
        _tag, name = framed.words()
        authenticated = self.state in ("auth", "select")
        is_append = authenticated and name == b"APPEND"
        if framed.refusal is None:
            if is_append and size > self.context.max_message_bytes:
                framed.refusal = (b"NO", b"[TOOBIG] The message is larger than the %d-byte "
                                  b"limit (APPENDLIMIT)." % self.context.max_message_bytes)
            elif is_append and framed.append_bytes + size > MAX_APPEND_COMMAND_BYTES:
                framed.refusal = (b"NO", b"[LIMIT] Too much in one APPEND; send fewer "
                                  b"messages at a time.")
            elif not is_append and size > (MAX_MEMORY_LITERAL if authenticated
                                           else MAX_LITERAL_UNAUTHENTICATED):
                framed.refusal = (b"BAD", b"The literal is too large for this command.")
            elif not is_append and framed.size + size > MAX_COMMAND_BYTES:
                framed.refusal = (b"BAD", b"The command is too large.")
        if framed.refusal is not None and not non_sync:
            # no continuation: the client sends nothing more of this command
            self._framing = None
            self._answer(framed.tag, *framed.refusal)
            return
        if framed.refusal is None and is_append and not non_sync:
            self._check_append_quota(framed, size)
            return
        self._receive_literal(framed, size, non_sync)

    def _check_append_quota(self, framed, size):
        """RFC 9208 §4.3: refuse an APPEND that cannot fit before it is sent."""
        self._stop_reading()

        def decided(quota):
            if quota.used_bytes + framed.append_bytes + size > quota.limit_bytes:
                self._framing = None
                self._answer(framed.tag, b"NO", b"[OVERQUOTA] " + wire.text(
                    errors.QuotaExceeded.default_text))
            else:
                self._receive_literal(framed, size, False)
            self._start_reading()

        def failed(failure):
            log.failure("quota check before APPEND failed", failure)
            self._receive_literal(framed, size, False)
            self._start_reading()
        self.account.quota().addCallbacks(decided, failed)

    def _receive_literal(self, framed, size, non_sync):
        if self._gone:
            return
        _tag, name = framed.words()
        if framed.refusal is not None:
            sink = _DiscardSink(size)
        elif name == b"APPEND" and (size > MAX_MEMORY_LITERAL
                                    or framed.size + size > MAX_COMMAND_BYTES):
            sink = _SpoolSink(self.context.new_spool(), size)
            framed.append_bytes += size
        else:
            sink = _MemorySink(size)
            framed.size += size
            if name == b"APPEND":
                framed.append_bytes += size
        self._literal = (framed, sink, size)
        if not non_sync:
            self.sendLine(b"+ Ready for literal data")
        if size == 0:
            self._literal_done()
        else:
            self.setRawMode()

    def rawDataReceived(self, data):
        self.resetTimeout()
        _framed, sink, _size = self._literal
        need = sink.remaining
        if len(data) <= need:
            sink.write(data)
            rest = b""
        else:
            sink.write(data[:need])
            rest = data[need:]
        if sink.remaining == 0:
            self._literal_done()
            # not setLineMode(rest): it would feed ``rest``, already plain
            # (inflated) bytes, through dataReceived again
            if rest:
                self._plain_received(rest)

    def _literal_done(self):
        framed, sink, size = self._literal
        self._literal = None
        framed.segments.append(sink.literal(size))
        self.line_mode = 1

    # --- running commands one at a time ---

    def _stop_reading(self):
        """Hold further lines in LineReceiver's buffer (the transport keeps
        reading until the buffer passes MAX_BUFFERED: pausing the socket for
        every command would cost two epoll calls each)."""
        self.paused = True

    def _start_reading(self):
        if self.paused and not self._gone:
            self.paused = False
            if self._transport_paused:
                self._transport_paused = False
                self.transport.resumeProducing()
            self.dataReceived(b"")

    def _wait_for_line(self):
        """-> Deferred[bytes] of the client's next line (AUTHENTICATE, IDLE)."""
        d = defer.Deferred()
        self._line_waiter = d
        self._start_reading()
        return d

    def _run(self, framed):
        if framed.refusal is not None:
            self._answer(framed.tag, *framed.refusal)
            return
        tag = b"*"
        try:
            segments = framed.segments
            first = segments[0]
            if not first.strip():
                raise ParseError("Empty command line.")
            m = _TAG.match(first)
            if not m:
                alone = _TAG.match(first + b" ")
                if alone and alone.end() == len(first) + 1:
                    tag = alone.group(1)
                    raise ParseError("Missing command.")
                raise ParseError("Missing or invalid tag.")
            tag = m.group(1)
            reader = CommandReader(segments)
            reader._pos = m.end()
            name = reader.atom().upper()
            if name == b"UID":
                reader.space()
                name = b"UID " + reader.atom().upper()
            entry = self._lookup(name)
            fn, *argument_parsers = entry
            values = [p(self, reader) if callable(p) else p for p in argument_parsers]
            reader.end()
        except ParseError as e:
            self._release_spools(framed)
            self._answer(tag, b"BAD", wire.text(str(e)))
            return
        except parser.BadCharset:
            self._release_spools(framed)
            self._answer(tag, b"NO", b"[BADCHARSET (" + b" ".join(
                c.encode() for c in parser.SEARCH_CHARSETS) + b")] Unsupported charset.")
            return
        self._current = name
        try:
            d = defer.ensureDeferred(fn(self, tag, *values))
        except Exception:  # noqa: BLE001 - a bad handler call becomes the command's failure
            d = defer.fail()
        d.addErrback(self._failed, tag, name)
        d.addBoth(self._command_done, framed)
        if not d.called:
            self._busy = d
            if self._line_waiter is None:
                self._stop_reading()

    def _lookup(self, name):
        attr = self.state + "_" + name.decode("ascii").replace(" ", "_")
        entry = getattr(self, attr, None)
        if entry is not None and not (isinstance(entry, tuple)
                                      and inspect.iscoroutinefunction(entry[0])):
            entry = None  # only this class's tables, never Twisted's leftovers
        if entry is None:
            known = any(hasattr(self, f"{state}_{name.decode('ascii').replace(' ', '_')}")
                        for state in ("unauth", "auth", "select"))
            if not known:
                raise ParseError("Unknown command.")
            if self.state == "unauth":
                raise ParseError("Log in first.")
            if self.state == "auth":
                raise ParseError("Select a folder first.")
            raise ParseError("The command is not valid now.")
        return entry

    def _command_done(self, result, framed):
        self._busy = None
        self._current = None
        self._release_spools(framed)
        if not self._line_waiter:
            self._start_reading()

    @staticmethod
    def _release_spools(framed):
        for spool in framed.spools():
            spool.discard()

    # --- responses ---

    def _expunge_allowed(self):
        # RFC 3501 §7.4.1: not during FETCH, STORE or SEARCH (UID forms
        # may); RFC 5256 §3: SORT and THREAD are like SEARCH
        return self._current not in (b"FETCH", b"STORE", b"SEARCH", b"SORT", b"THREAD")

    def _send_updates(self, allow_expunge=None):
        selected = self.selected
        if selected is None:
            return
        if selected.closed:
            self.sendLine(b"* BYE The selected folder was deleted, renamed or rebuilt; "
                          b"please log in again.")
            self._drop()
            raise _Gone()
        if allow_expunge is None:
            allow_expunge = self._expunge_allowed()
        for line in selected.updates(allow_expunge):
            self.sendLine(line)

    def _answer(self, tag, status, text):
        """A tagged completion, after the unsolicited responses now due."""
        if self._gone:
            return
        if tag != b"*":
            try:
                self._send_updates()
            except _Gone:
                return
        self.sendLine(tag + b" " + status + b" " + text)

    def _ok(self, tag, text):
        self._answer(tag, b"OK", text)

    def folder_changed(self):
        """A SelectedFolder has news: sent at once while idling (RFC 2177)."""
        if self._idling and not self._gone:
            try:
                self._send_updates(allow_expunge=True)
            except _Gone:
                pass

    def _failed(self, failure, tag, name):
        """The one place where errors become responses."""
        if failure.check(_Gone) or self._gone:
            return
        error = failure.value
        if failure.check(ParseError):
            self._answer(tag, b"BAD", wire.text(str(error)))
        elif failure.check(_UnknownCTE):
            self._answer(tag, b"NO", b"[UNKNOWN-CTE] The part's transfer encoding is unknown.")
        elif failure.check(errors.KtmailError):
            self._answer(tag, b"NO", self._error_code(error, name) + wire.text(error.text))
        else:
            log.failure("IMAP {command} failed for {user}", failure,
                        command=name.decode("ascii", "replace"),
                        user=self.mailbox.username if self.mailbox else "-")
            self._answer(tag, b"NO", b"[SERVERBUG] Internal error; the problem was logged. "
                                     b"Try again later.")
        return

    @staticmethod
    def _error_code(error, name):
        """RFC 5530 response codes of our error vocabulary."""
        if isinstance(error, errors.NoSuchFolder):
            if name in (b"APPEND", b"COPY", b"MOVE", b"UID COPY", b"UID MOVE"):
                return b"[TRYCREATE] "
            return b"[NONEXISTENT] "
        codes = (
            (errors.AlreadyExists, b"[ALREADYEXISTS] "),
            (errors.FolderProtected, b"[CANNOT] "),
            (errors.ValidationError, b"[CANNOT] "),
            (errors.QuotaExceeded, b"[OVERQUOTA] "),
            (errors.TooBig, b"[TOOBIG] "),
            (errors.LimitReached, b"[LIMIT] "),
            (errors.AuthFailed, b"[AUTHENTICATIONFAILED] "),
            (errors.LoginThrottled, b"[UNAVAILABLE] "),
            (errors.StoreUnavailable, b"[UNAVAILABLE] "),
            (errors.NoSuchMessage, b"[EXPUNGEISSUED] "),
            (errors.NoSuchMailbox, b"[UNAVAILABLE] "),
        )
        for kind, code in codes:
            if isinstance(error, kind):
                return code
        return b""

    # === any state ==========================================================================

    async def do_CAPABILITY(self, tag):
        self.sendLine(b"* CAPABILITY " + b" ".join(self.capability_list()))
        self._ok(tag, b"CAPABILITY completed")

    async def do_NOOP(self, tag):
        if self.selected is not None:
            await self.selected.live.refresh()
        self._ok(tag, b"NOOP completed")

    async def do_LOGOUT(self, tag):
        self.sendLine(b"* BYE Logging out")
        self.sendLine(tag + b" OK LOGOUT completed")
        self._drop()

    async def do_ID(self, tag, params):
        """RFC 2971: say who we are (and log who the client is)."""
        if params:
            log.info("IMAP client {peer} is {client}", peer=self.peer, client={
                k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace")[:100]
                for k, v in list(params.items())[:30]})
        self.sendLine(b'* ID ("name" "ktmail" "version" ' + wire.string(ktmail.__version__)
                      + b")")
        self._ok(tag, b"ID completed")

    # Twisted's tables that are not ours: STARTTLS has no place on implicit
    # TLS (SPEC §2), UID is dispatched by _run, and a logged-out session
    # reads no more commands
    unauth_STARTTLS = auth_STARTTLS = select_STARTTLS = select_UID = None
    logout_CAPABILITY = logout_LOGOUT = logout_NOOP = None

    unauth_CAPABILITY = auth_CAPABILITY = select_CAPABILITY = (do_CAPABILITY,)
    unauth_NOOP = auth_NOOP = select_NOOP = (do_NOOP,)
    unauth_LOGOUT = auth_LOGOUT = select_LOGOUT = (do_LOGOUT,)
    unauth_ID = auth_ID = select_ID = (do_ID, _id_params)

    # === not authenticated ====================================================================

    async def do_LOGIN(self, tag, username, password):
        """RFC 3501 §6.2.3, with the mailbox username (not the address)."""
        if not self.tls:
            self._answer(tag, b"NO", b"[PRIVACYREQUIRED] Log in over TLS.")
            return
        await self._authenticate(tag, username.decode("utf-8", "replace"),
                                 password.decode("utf-8", "replace"))

    async def do_AUTHENTICATE(self, tag, arguments):
        """RFC 3501 §6.2.2 with SASL-IR (RFC 4959): PLAIN (RFC 4616) only."""
        mechanism, initial = arguments
        if mechanism.upper() != b"PLAIN":
            self._answer(tag, b"NO", b"[CANNOT] Unsupported mechanism; use PLAIN.")
            return
        if not self.tls:
            self._answer(tag, b"NO", b"[PRIVACYREQUIRED] Log in over TLS.")
            return
        if initial is None:
            self.sendLine(b"+ ")
            response = await self._wait_for_line()
        else:
            response = b"" if initial == b"=" else initial
        if response.strip() == b"*":
            self._answer(tag, b"BAD", b"AUTHENTICATE cancelled.")
            return
        try:
            decoded = base64.b64decode(response.strip(), validate=True)
            authzid, authcid, password = decoded.split(b"\0")
        except (ValueError, TypeError):
            self._answer(tag, b"BAD", b"Malformed PLAIN response.")
            return
        if authzid and authzid != authcid:
            self._answer(tag, b"NO", b"[AUTHORIZATIONFAILED] You may only log in as yourself.")
            return
        await self._authenticate(tag, authcid.decode("utf-8", "replace"),
                                 password.decode("utf-8", "replace"))

    async def _authenticate(self, tag, username, password):
        try:
            mailbox = await self.context.auth.authenticate_mailbox(username, password,
                                                                   self.peer, "imap")
        except errors.AuthFailed:
            self._auth_failures += 1
            self._answer(tag, b"NO", b"[AUTHENTICATIONFAILED] Wrong username or password. "
                                     b"Log in with your mailbox username, not the address.")
            if self._auth_failures >= MAX_AUTH_FAILURES:
                self.sendLine(b"* BYE Too many failed logins.")
                self._drop()
            return
        if self._gone:
            return
        factory = getattr(self, "factory", None)
        if factory is not None:
            if not factory.session_started(mailbox):
                self._answer(tag, b"NO", b"[LIMIT] Too many IMAP sessions are open for this "
                             b"mailbox (%d); close the mail program on another device, or "
                             b"let it use fewer connections." % self.context.sessions_per_mailbox)
                return
            self._session_counted = True
        self.mailbox = mailbox
        self.account = ImapAccount(self.context.mailboxes, mailbox)
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        await self._quota_alert()
        self._ok(tag, b"[CAPABILITY " + b" ".join(self.capability_list()) + b"] Logged in")

    unauth_LOGIN = (do_LOGIN, _astring, _astring)
    unauth_AUTHENTICATE = (do_AUTHENTICATE, _auth_args)

    # === authenticated ===========================================================================

    async def _quota_alert(self):
        """[ALERT] once per session when the mailbox is over 90 % full."""
        if self._quota_alerted or self.account is None:
            return
        try:
            quota = await self.account.quota()
        except errors.KtmailError:
            return
        if quota.limit_bytes and quota.fraction >= QUOTA_ALERT:
            self._quota_alerted = True
            mib = 1024 * 1024
            self.sendLine(b"* OK [ALERT] " + wire.text(
                f"Your mailbox is {int(quota.fraction * 100)}% full "
                f"({quota.used_bytes // mib} of {quota.limit_bytes // mib} MiB); delete some "
                "mail, or new messages will be refused."))

    async def do_ENABLE(self, tag, capabilities):
        """RFC 5161: the ENABLED line lists what this command turned on.
        QRESYNC implies CONDSTORE (RFC 7162 §3.2.3). IMAP4rev2 switches the
        session to RFC 9051 (its Appendix E differences)."""
        enabled = []
        for name in dict.fromkeys(c.upper() for c in capabilities):
            text = _ENABLEABLE.get(name.decode("ascii", "replace"))
            if text is not None and text not in self._enabled:
                enabled.append(text.encode("ascii"))
                self._enabled.add(text)
        if "QRESYNC" in self._enabled:
            self._enable_qresync()
        elif "CONDSTORE" in self._enabled:
            self._enable_condstore()
        if self.rev2 and self.selected is not None:
            self.selected.enable_rev2()
        self.sendLine(b"* ENABLED" + b"".join(b" " + c for c in enabled))
        self._ok(tag, b"ENABLE completed")

    @property
    def rev2(self):
        """Did the client ENABLE IMAP4rev2 (RFC 9051 §6.3.1)?"""
        return "IMAP4rev2" in self._enabled

    @property
    def utf8_names(self):
        """Mailbox names travel as UTF-8, not modified UTF-7: after ENABLE
        UTF8=ACCEPT (RFC 6855 §3) or IMAP4rev2 (RFC 9051 §5.1)."""
        return "UTF8=ACCEPT" in self._enabled or "IMAP4rev2" in self._enabled

    def _mailbox_name(self, name):
        return wire.mailbox(name, utf8=self.utf8_names)

    @property
    def condstore(self):
        return "CONDSTORE" in self._enabled

    @property
    def qresync(self):
        return "QRESYNC" in self._enabled

    def _enable_condstore(self):
        """RFC 7162 §3.1: a CONDSTORE-enabling command. Issued while a folder
        is selected, it brings the folder's HIGHESTMODSEQ (§3.1.2.1)."""
        first = not self.condstore
        self._enabled.add("CONDSTORE")
        selected = self.selected
        if selected is not None and not selected.condstore:
            selected.condstore = True
            if first:
                self.sendLine(b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence."
                              % selected.live.highestmodseq)

    def _enable_qresync(self):
        self._enabled.add("QRESYNC")
        self._enable_condstore()
        if self.selected is not None:
            self.selected.qresync = True

    async def do_COMPRESS(self, tag, mechanism):
        """RFC 4978 §3: after the tagged OK (sent uncompressed) both
        directions are raw deflate; see protocols/imap/compress.py."""
        if mechanism.upper() != b"DEFLATE":
            self._answer(tag, b"NO", b"[CANNOT] Only DEFLATE is offered.")
            return
        if self._inflater is not None:
            self._answer(tag, b"NO", b"[COMPRESSIONACTIVE] DEFLATE is already active.")
            return
        self._ok(tag, b"DEFLATE active")
        if self._gone:
            return
        # a client does not send more before this answer (it could not know
        # whether it would be compressed); anything already here is
        leftover, self._buffer = self._buffer, b""
        self.transport = DeflateTransport(self.transport)
        self._inflater = Inflater(self._plain_received, self._wants_input)
        self._inflater.feed(leftover)

    async def do_NAMESPACE(self, tag):
        """RFC 2342: one personal namespace with "/" as separator."""
        self.sendLine(b'* NAMESPACE (("" "/")) NIL NIL')
        self._ok(tag, b"NAMESPACE completed")

    async def do_SELECT(self, tag, name, params, rw):
        """RFC 3501 §6.3.1/§6.3.2 with every response §7 asks for, and the
        RFC 7162 CONDSTORE (§3.1.8) and QRESYNC (§3.2.5) parameters. After
        ENABLE IMAP4rev2, the RFC 9051 §6.3.2 responses: no RECENT or
        [UNSEEN n], the folder's LIST response, and [CLOSED] whenever a
        folder was open before, also when this SELECT then fails."""
        if params.qresync is not None and not self.qresync:
            raise ParseError("Enable QRESYNC first (RFC 7162 §3.2.3).")
        if params.condstore:
            self._enabled.add("CONDSTORE")
        had_selection = self.selected is not None
        self._deselect()
        if had_selection and self.rev2:
            # RFC 9051 §7.1 CLOSED: the previous folder is closed from here on
            self.sendLine(b"* OK [CLOSED] Previous folder closed.")
        selected = await self.account.select(name, rw)
        if self._gone:
            selected.live.release()
            return
        if had_selection and self.qresync and not self.rev2:
            # RFC 7162 §3.2.11: the end of the previous folder's responses
            self.sendLine(b"* OK [CLOSED] Previous folder closed.")
        selected.condstore = self.condstore
        selected.qresync = self.qresync
        selected.rev2 = self.rev2
        selected.attach(self)
        self.selected = selected
        self.state = "select"
        live = selected.live
        infos = live.infos()
        keywords = [k.encode("ascii", "replace") for k in keyword_flags(infos)]
        system = b"\\Answered \\Flagged \\Deleted \\Seen \\Draft"
        flags = b" ".join([system] + keywords)
        self.sendLine(b"* FLAGS (" + flags + b")")
        if rw:
            self.sendLine(b"* OK [PERMANENTFLAGS (" + flags + b" \\*)] Flags permitted.")
        else:
            self.sendLine(b"* OK [PERMANENTFLAGS ()] Read-only folder.")
        self.sendLine(b"* %d EXISTS" % len(selected.uids))
        if self.rev2:
            await self._send_list_of(live.name)
        else:
            self.sendLine(b"* %d RECENT" % len(selected.recent))
            first = live.first_unseen_uid()
            if first is not None:
                seq = selected.seq_of(first)
                if seq is not None:
                    self.sendLine(b"* OK [UNSEEN %d] First unseen." % seq)
        self.sendLine(b"* OK [UIDVALIDITY %d] UIDs valid." % live.uidvalidity)
        self.sendLine(b"* OK [UIDNEXT %d] Predicted next UID." % live.uidnext)
        if self.condstore:
            self.sendLine(b"* OK [HIGHESTMODSEQ %d] Highest mod-sequence." % live.highestmodseq)
        if params.qresync is not None and params.qresync.uidvalidity == live.uidvalidity:
            await self._qresync(selected, params.qresync)
        command = b"SELECT" if rw else b"EXAMINE"
        self._ok(tag, (b"[READ-WRITE] " if rw else b"[READ-ONLY] ") + command + b" completed")

    async def _qresync(self, selected, params):
        """RFC 7162 §3.2.5.1: what the client missed since ``params.modseq``:
        ``VANISHED (EARLIER)`` for the removed UIDs it may know, then FETCH
        (UID FLAGS MODSEQ) of every message changed since. Nothing at all
        when nothing changed, so a resync of an unchanged folder costs only
        the SELECT responses."""
        live = selected.live
        if params.modseq < live.highestmodseq:
            known = None
            if params.known_uids is not None:
                known = params.known_uids.resolved(max(live.uidnext - 1, 1))
            vanished = await self._vanished_since(selected, params.modseq, known)
            if vanished:
                self.sendLine(b"* VANISHED (EARLIER) " + vanished)
        await self._send_changed(selected, selected.uids, params.modseq)

    async def _vanished_since(self, selected, modseq, ranges):
        """UIDs within ``ranges`` ([(low, high)], None: any) removed after
        ``modseq``, as a sequence set (b"" for none). Where the store no
        longer holds tombstones that old (it prunes them), every UID of the
        ranges that is not in the folder is reported instead, as the gaps
        between the folder's UIDs: more than needed, never too few (RFC 7162
        §3.2.5.2 lets clients ignore UIDs they do not know)."""
        live = selected.live
        changes = await live.changes_since(modseq)
        if changes.vanished_floor > modseq:
            top = max(live.uidnext - 1, 0)
            return wire.range_set(_gaps(ranges or [(1, top)], live.uids, top))
        vanished = changes.vanished
        if ranges is not None:
            vanished = [u for u in vanished if _in_ranges(u, ranges)]
        return wire.number_set(vanished)

    async def _send_changed(self, selected, uids, modseq):
        """``* n FETCH (UID FLAGS MODSEQ)`` for those of ``uids`` (the
        session's view, ascending) changed after ``modseq``."""
        info = selected.live.info
        out = []
        for uid in uids:
            i = info(uid)
            if i is not None and i.modseq > modseq:
                out.append(selected.flags_line(selected.seq_of(uid), i) + b"\r\n")
                if len(out) >= FAST_BATCH:
                    await self._write_slice(out)
                    out = []
        if out and not self._gone:
            self.transport.write(b"".join(out))

    def _deselect(self):
        selected, self.selected = self.selected, None
        if selected is not None:
            selected.detach()
        if self.state == "select":
            self.state = "auth"

    @staticmethod
    def _attributes(info):
        """The LIST attributes of a folder (model.FolderInfo)."""
        attributes = [b"\\HasChildren" if info.has_children else b"\\HasNoChildren"]
        if info.special_use:
            attributes.append(info.special_use.encode("ascii"))
        return attributes

    async def _send_list_of(self, *names, old_names=None):
        """``* LIST (attributes) "/" name`` of existing folders, with the
        RFC 9051 §7.3.1 OLDNAME extended item where ``old_names`` (name ->
        the name the client knew or gave) has one."""
        wanted = set(names)
        infos = {i.name: i for i in await self.account.list_folders() if i.name in wanted}
        for name in names:
            info = infos.get(name)
            if info is None:
                continue
            line = (b"* LIST (" + b" ".join(self._attributes(info)) + b') "/" '
                    + self._mailbox_name(name))
            old = (old_names or {}).get(name)
            if old is not None and old != name:
                line += b' ("OLDNAME" (' + self._mailbox_name(old) + b"))"
            self.sendLine(line)

    async def do_CREATE(self, tag, name):
        """RFC 3501 §6.3.3: a trailing separator only says subfolders will
        follow. After ENABLE IMAP4rev2, a name the server changed (the
        separator dropped, INBOX's spelling) is reported in a LIST response
        with OLDNAME (RFC 9051 §6.3.4, §7.3.1)."""
        given = name
        if name.endswith(SEPARATOR):
            name = name.rstrip(SEPARATOR)
        if name.upper() == INBOX:
            self._answer(tag, b"NO", b"[ALREADYEXISTS] INBOX always exists.")
            return
        status = await self.account.create(name)
        if self.rev2 and status is not None and status.name != given:
            await self._send_list_of(status.name, old_names={status.name: given})
        self._ok(tag, b"CREATE completed")

    async def do_DELETE(self, tag, name):
        """RFC 3501 §6.3.4; the default folders are refused ([CANNOT]), and
        so are folders with subfolders: [HASCHILDREN] after ENABLE
        IMAP4rev2 (RFC 9051 §6.3.5, §7.1), [CANNOT] before."""
        self._leave_if_selected(name)
        try:
            await self.account.delete(name)
        except errors.ValidationError as e:
            if self.rev2 and await self._has_children(name):
                self._answer(tag, b"NO", b"[HASCHILDREN] " + wire.text(e.text))
                return
            raise
        self._ok(tag, b"DELETE completed")

    async def _has_children(self, name):
        try:
            target = normalize_folder_name(name)
        except errors.ValidationError:
            return False
        return any(i.name.startswith(target + SEPARATOR)
                   for i in await self.account.list_folders())

    async def do_RENAME(self, tag, old, new):
        """RFC 3501 §6.3.5 (RENAME INBOX moves its messages to a new folder).
        After ENABLE IMAP4rev2, the LIST responses of the renamed folder and
        its subfolders carry their old names (OLDNAME, RFC 9051 §7.3.1); not
        for INBOX, which keeps its name."""
        self._leave_if_selected(old)
        await self.account.rename(old, new)
        if self.rev2:
            old_name, new_name = normalize_folder_name(old), normalize_folder_name(new)
            if old_name != INBOX:
                infos = await self.account.list_folders()
                moved = {new_name: old_name}
                for info in infos:
                    if info.name.startswith(new_name + SEPARATOR):
                        moved[info.name] = old_name + info.name[len(new_name):]
                await self._send_list_of(*sorted(moved), old_names=moved)
        self._ok(tag, b"RENAME completed")

    def _leave_if_selected(self, name):
        """Our own DELETE/RENAME of the selected folder: deselect it first
        rather than be told the folder vanished."""
        if self.selected is None:
            return
        try:
            target = normalize_folder_name(name)
        except errors.ValidationError:
            return
        current = self.selected.live.name
        if target != INBOX and (target == current or current.startswith(target + SEPARATOR)):
            self._deselect()

    async def do_SUBSCRIBE(self, tag, name):
        await self.account.subscribe(name)
        self._ok(tag, b"SUBSCRIBE completed")

    async def do_UNSUBSCRIBE(self, tag, name):
        await self.account.unsubscribe(name)
        self._ok(tag, b"UNSUBSCRIBE completed")

    async def do_LIST(self, tag, command):
        """RFC 3501 §6.3.8 with LIST-EXTENDED (RFC 5258: several patterns,
        selection options SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE,
        return options CHILDREN, SUBSCRIBED, SPECIAL-USE, the CHILDINFO
        extended item), CHILDREN (RFC 3348), SPECIAL-USE (RFC 6154) and
        LIST-STATUS (RFC 5819: a STATUS line after each selectable folder)."""
        if command.patterns == ("",) and not command.selection:
            # RFC 3501: the hierarchy delimiter and the root
            self.sendLine(b'* LIST (\\Noselect) "/" ""')
            self._ok(tag, b"LIST completed")
            return
        matchers = [pattern_matcher(command.reference, p) for p in command.patterns]
        if "HIGHESTMODSEQ" in command.status_items:
            self._enable_condstore()

        def matches(name):
            return any(m(name) for m in matchers)
        infos = await self.account.list_folders()
        selection = command.selection
        wants_subscribed = "SUBSCRIBED" in selection | command.returns
        subscribed = set(await self.account.list_subscriptions()) if wants_subscribed else set()
        by_name = {i.name: i for i in infos}

        def selected_by_options(name):
            info = by_name.get(name)
            if "SUBSCRIBED" in selection and name not in subscribed:
                return False
            if "SPECIAL-USE" in selection and (info is None or not info.special_use):
                return False
            return True

        names = set(by_name)
        if "SUBSCRIBED" in selection:
            names |= subscribed
        # RFC 5258 §3.5 RECURSIVEMATCH: a folder whose descendants meet the
        # selection criteria is listed with CHILDINFO, even if it does not
        childinfo = set()
        if "RECURSIVEMATCH" in selection:
            for name in names:
                if selected_by_options(name):
                    parts = name.split(SEPARATOR)
                    for n in range(1, len(parts)):
                        childinfo.add(SEPARATOR.join(parts[:n]))
        lines = []
        for name in names:
            if not matches(name):
                continue
            listed = selected_by_options(name)
            if not listed and name not in childinfo:
                continue
            info = by_name.get(name)
            attributes = []
            if info is None:
                attributes.append(b"\\NonExistent")
            else:
                attributes.append(b"\\HasChildren" if info.has_children
                                  else b"\\HasNoChildren")
                if info.special_use:
                    attributes.append(info.special_use.encode("ascii"))
            if wants_subscribed and name in subscribed:
                attributes.append(b"\\Subscribed")
            extended = b""
            if name in childinfo:
                reasons = [b'"SUBSCRIBED"'] if "SUBSCRIBED" in selection else []
                if "SPECIAL-USE" in selection:
                    reasons.append(b'"SPECIAL-USE"')
                extended = b' ("CHILDINFO" (' + b" ".join(reasons) + b"))"
            lines.append((name != INBOX, name, attributes, extended, info is not None))
        for _, name, attributes, extended, exists in sorted(lines):
            self.sendLine(b"* LIST (" + b" ".join(attributes) + b') "/" '
                          + self._mailbox_name(name) + extended)
            if "STATUS" in command.returns and exists:
                try:
                    status = await self.account.status(name)
                except errors.NoSuchFolder:
                    continue  # deleted meanwhile: RFC 5819 §2 sends no STATUS
                self.sendLine(self._status_line(status, command.status_items))
        self._ok(tag, b"LIST completed")

    async def do_LSUB(self, tag, reference, pattern):
        """RFC 3501 §6.3.9: subscribed names; folders that no longer exist are
        \\Noselect."""
        matcher = pattern_matcher(reference, pattern)
        names = await self.account.list_subscriptions()
        existing = {i.name for i in await self.account.list_folders()}
        for name in sorted(names, key=lambda n: (n != INBOX, n)):
            if matcher(name):
                flags = b"" if name in existing else b"\\Noselect"
                self.sendLine(b"* LSUB (" + flags + b') "/" ' + self._mailbox_name(name))
        self._ok(tag, b"LSUB completed")

    async def do_STATUS(self, tag, name, items):
        """RFC 3501 §6.3.10 (the name is quoted when it must be), with the
        RFC 7889 APPENDLIMIT, RFC 7162 §3.1.7 HIGHESTMODSEQ, RFC 8438 SIZE
        and RFC 9051 §6.3.11 DELETED items."""
        if "HIGHESTMODSEQ" in items:
            self._enable_condstore()
        status = await self.account.status(name)
        self.sendLine(self._status_line(status, items))
        self._ok(tag, b"STATUS completed")

    def _status_line(self, status, items):
        values = {"MESSAGES": status.messages, "RECENT": status.recent,
                  "UIDNEXT": status.uidnext, "UIDVALIDITY": status.uidvalidity,
                  "UNSEEN": status.unseen, "APPENDLIMIT": self.context.max_message_bytes,
                  "HIGHESTMODSEQ": status.highestmodseq, "SIZE": status.size,
                  "DELETED": status.deleted}
        return b"* STATUS " + self._mailbox_name(status.name) + b" (" + b" ".join(
            b"%s %d" % (item.encode(), values[item]) for item in items) + b")"

    async def _check_header_section(self, source):
        """LimitReached when a message's header section is over the limits
        (a path is read on a worker thread)."""
        limits = self.context.header_limits
        if isinstance(source, str):
            problem = await self.context.run_in_thread(mime.header_section_problem,
                                                       source, limits)
        else:
            problem = mime.header_section_problem(source, limits)
        if problem == mime.HEADER_TOO_BIG:
            raise errors.LimitReached(f"The message's header section is larger than "
                                      f"{limits.max_bytes} bytes.")
        if problem == mime.TOO_MANY_FIELDS:
            raise errors.LimitReached(f"The message has more than {limits.max_fields} "
                                      "header fields.")

    async def do_APPEND(self, tag, arguments):
        """RFC 3501 §6.3.11 with APPENDUID (RFC 4315), [TOOBIG] and
        [OVERQUOTA]; each message was streamed to a spool file as it
        arrived; a literal8 (RFC 3516 §4.4) is taken as it is. Several
        messages are MULTIAPPEND (RFC 3502): all of them are stored or none
        (the ones stored before a failure are removed again). A header
        section over the configured limits is refused with [LIMIT]."""
        name, messages = arguments
        for _flags, _date, literal in messages:
            if literal.size > self.context.max_message_bytes:
                raise errors.TooBig()
        sources = []
        for _flags, _date, literal in messages:
            if literal.spool is not None:
                await literal.spool.finish()
                sources.append(literal.spool.path)
            else:
                sources.append(io.BytesIO(literal.data))
            await self._check_header_section(sources[-1])
        if len(messages) > 1:
            quota = await self.account.quota()
            if quota.used_bytes + sum(m[2].size for m in messages) > quota.limit_bytes:
                raise errors.QuotaExceeded()
        stored = []
        try:
            for (flags, date, _literal), source in zip(messages, sources, strict=True):
                stored.append(await self.account.append(
                    name, source, [f for f in flags if f != "\\Recent"], date))
        except Exception:
            if stored:
                await self.account.remove(stored)
            raise
        await self._quota_alert()
        uids = wire.number_set([s.info.uid for s in stored])
        self._ok(tag, b"[APPENDUID %d %s] APPEND completed" % (stored[-1].uidvalidity, uids))

    async def do_GETQUOTAROOT(self, tag, name):
        """RFC 9208 §4.3.2: one quota root, "", for all folders together."""
        status = await self.account.status(name)
        quota = await self.account.quota()
        self.sendLine(b"* QUOTAROOT " + self._mailbox_name(status.name) + b' ""')
        self.sendLine(b'* QUOTA "" (STORAGE %d %d)' % (quota.used_kib, quota.limit_kib))
        self._ok(tag, b"GETQUOTAROOT completed")

    async def do_GETQUOTA(self, tag, root):
        """RFC 9208 §4.3.1: STORAGE in units of 1024 octets."""
        if root != b"":
            self._answer(tag, b"NO", b"[NONEXISTENT] The only quota root is \"\".")
            return
        quota = await self.account.quota()
        self.sendLine(b'* QUOTA "" (STORAGE %d %d)' % (quota.used_kib, quota.limit_kib))
        self._ok(tag, b"GETQUOTA completed")

    async def do_SETQUOTA(self, tag, rest):
        self._answer(tag, b"NO", b"[NOPERM] The quota is set by the service.")

    async def do_IDLE(self, tag):
        """RFC 2177: changes are sent as they happen until DONE (and only
        DONE) ends the command."""
        self.sendLine(b"+ idling")
        self._idling = True
        try:
            self.folder_changed()
            while True:
                line = await self._wait_for_line()
                if line.strip().upper() == b"DONE":
                    break
                self.sendLine(b"* BAD Expected DONE.")
        finally:
            self._idling = False
        self._ok(tag, b"IDLE terminated")

    auth_ENABLE = select_ENABLE = (do_ENABLE, _atoms)
    auth_NAMESPACE = select_NAMESPACE = (do_NAMESPACE,)
    auth_COMPRESS = select_COMPRESS = (do_COMPRESS, _atom)
    auth_SELECT = select_SELECT = (do_SELECT, _mailbox, _select_params, True)
    auth_EXAMINE = select_EXAMINE = (do_SELECT, _mailbox, _select_params, False)
    auth_CREATE = select_CREATE = (do_CREATE, _mailbox)
    auth_DELETE = select_DELETE = (do_DELETE, _mailbox)
    auth_RENAME = select_RENAME = (do_RENAME, _mailbox, _mailbox)
    auth_SUBSCRIBE = select_SUBSCRIBE = (do_SUBSCRIBE, _mailbox)
    auth_UNSUBSCRIBE = select_UNSUBSCRIBE = (do_UNSUBSCRIBE, _mailbox)
    auth_LIST = select_LIST = (do_LIST, _list_command)
    auth_LSUB = select_LSUB = (do_LSUB, _list_reference, _list_pattern)
    auth_STATUS = select_STATUS = (do_STATUS, _mailbox, _status_items)
    auth_APPEND = select_APPEND = (do_APPEND, _append_args)
    auth_GETQUOTAROOT = select_GETQUOTAROOT = (do_GETQUOTAROOT, _mailbox)
    auth_GETQUOTA = select_GETQUOTA = (do_GETQUOTA, _quota_root)
    auth_SETQUOTA = select_SETQUOTA = (do_SETQUOTA, _rest)
    auth_IDLE = select_IDLE = (do_IDLE,)

    # === selected ===============================================================================

    def _writable(self):
        if self.selected is None or not self.selected.rw:
            raise errors.ValidationError("The folder is open read-only (EXAMINE).")
        return self.selected

    async def do_CHECK(self, tag):
        await self.selected.live.refresh()
        self._ok(tag, b"CHECK completed")

    async def do_CLOSE(self, tag):
        """RFC 3501 §6.4.2: expunge silently (read-write only), then deselect."""
        selected = self.selected
        if selected.rw:
            doomed = selected.deleted_uids()
            if doomed:
                await selected.live.expunge(doomed, origin=selected)
        self._deselect()
        self._ok(tag, b"CLOSE completed")

    async def do_UNSELECT(self, tag):
        """RFC 3691: CLOSE without expunging."""
        self._deselect()
        self._ok(tag, b"UNSELECT completed")

    async def do_EXPUNGE(self, tag, seqset=None):
        """RFC 3501 §6.4.3, and UID EXPUNGE (RFC 4315 §2.1) with a UID set;
        with CONDSTORE on, the tagged OK carries HIGHESTMODSEQ (RFC 7162
        §3.2.7, §3.2.9), since removals carry no MODSEQ of their own."""
        selected = self._writable()
        among = None
        if seqset is not None:
            among = [uid for _, uid in selected.resolve(seqset, by_uid=True)]
        doomed = selected.deleted_uids(among)
        if doomed:
            # the responses come back through our own listener, like anyone's
            await selected.live.expunge(doomed)
        self._ok(tag, self._highestmodseq_code() + b"EXPUNGE completed")

    def _highestmodseq_code(self):
        if self.condstore and self.selected is not None:
            return b"[HIGHESTMODSEQ %d] " % self.selected.live.highestmodseq
        return b""

    async def do_SEARCH(self, tag, program, by_uid):
        """RFC 3501 §6.4.4: always one ``* SEARCH`` line, also when nothing
        matches; served from the index, bodies read off the reactor thread.
        ``RETURN (...)`` answers with ESEARCH (RFC 4731 §3.1) and SAVE keeps
        the result as ``$`` (RFC 5182 §2.1); a MODSEQ key adds the highest
        mod-sequence of the result (RFC 7162 §3.1.5). After ENABLE
        IMAP4rev2 the answer is always ESEARCH: no RETURN is RETURN (ALL)
        (RFC 9051 §6.4.4)."""
        selected = self.selected
        query = program.query
        if program.returns is None and self.rev2:
            program = attrs.evolve(program, returns=frozenset({"ALL"}))
        with_modseq = any(isinstance(k, search.ModseqIs) for k in search.leaves(query))
        if with_modseq:
            self._enable_condstore()
        saving = program.returns is not None and "SAVE" in program.returns
        try:
            uids = await self._matching_uids(selected, query)
        except Exception:
            if saving:
                selected.saved = frozenset()  # RFC 5182 §2.1: a failed SAVE empties $
            raise
        if program.returns is None:
            numbers = uids if by_uid else [selected.seq_of(u) for u in uids]
            line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
            if with_modseq and uids:
                line += b" (MODSEQ %d)" % self._highest_modseq_of(selected, uids)
            self.sendLine(line)
        else:
            self._esearch(tag, selected, uids, program.returns, by_uid, with_modseq)
        self._ok(tag, b"SEARCH completed")

    async def _matching_uids(self, selected, query):
        """UIDs of the session's view matching ``query``, ascending."""
        live = selected.live
        view = selected.uids
        info = live.info
        messages = [(n, i) for n, uid in enumerate(view, 1) if (i := info(uid)) is not None]
        scope = search.Scope(recent=frozenset(selected.recent), last_position=len(view),
                             last_uid=view[-1] if view else 0, saved=selected.saved)
        positions = await search.search(live, query, messages, scope)
        return [view[p - 1] for p in positions]

    @staticmethod
    def _highest_modseq_of(selected, uids):
        info = selected.live.info
        return max((i.modseq for u in uids if (i := info(u)) is not None), default=0)

    def _esearch(self, tag, selected, uids, returns, by_uid, with_modseq, ordered=False):
        """``* ESEARCH (TAG "t") [UID] MIN MAX COUNT ALL [MODSEQ]`` (RFC 4731
        §3.1; RFC 5267 §3.2 for SORT: then MIN/MAX/ALL follow the sort
        order); SAVE keeps ``$`` (RFC 5182 §2.1: only MIN/MAX when no ALL
        or COUNT is asked)."""
        reported = uids
        if returns & {"MIN", "MAX"} and not returns & {"ALL", "COUNT"}:
            reported = list(dict.fromkeys(([uids[0]] if "MIN" in returns else [])
                                          + ([uids[-1]] if "MAX" in returns else []))) \
                if uids else []
        if "SAVE" in returns:
            selected.saved = frozenset(reported)
        if not returns - {"SAVE"}:
            return
        numbers = uids if by_uid else [selected.seq_of(u) for u in uids]
        parts = [b"* ESEARCH (TAG " + wire.string(tag) + b")"]
        if by_uid:
            parts.append(b"UID")
        if numbers and "MIN" in returns:
            parts.append(b"MIN %d" % (numbers[0] if ordered else min(numbers)))
        if numbers and "MAX" in returns:
            parts.append(b"MAX %d" % (numbers[-1] if ordered else max(numbers)))
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(numbers))
        if numbers and "ALL" in returns:
            parts.append(b"ALL " + (wire.ordered_set(numbers) if ordered
                                    else wire.number_set(numbers)))
        if with_modseq and reported:
            parts.append(b"MODSEQ %d" % self._highest_modseq_of(selected, reported))
        self.sendLine(b" ".join(parts))

    async def do_SORT(self, tag, program, by_uid):
        """RFC 5256 §3 SORT from the index's cached summaries (keys built
        once per message); ``RETURN (...)`` answers with ESEARCH in sort
        order (RFC 5267 §3.2 ESORT)."""
        selected = self.selected
        with_modseq = any(isinstance(k, search.ModseqIs) for k in search.leaves(program.query))
        if with_modseq:
            self._enable_condstore()
        items = await self._ordering_items(selected, program.query)
        ordered = ordering.sort(items, program.criteria)
        uids = [i.info.uid for i in ordered]
        if program.returns is None:
            numbers = uids if by_uid else [i.position for i in ordered]
            line = b"* SORT" + b"".join(b" %d" % n for n in numbers)
            if with_modseq and uids:
                # RFC 7162 §3.1.9: like SEARCH's (§3.1.6)
                line += b" (MODSEQ %d)" % self._highest_modseq_of(selected, uids)
            self.sendLine(line)
        else:
            self._esearch(tag, selected, uids, program.returns, by_uid, with_modseq,
                          ordered=True)
        self._ok(tag, b"SORT completed")

    async def do_THREAD(self, tag, program, by_uid):
        """RFC 5256 §3 THREAD=ORDEREDSUBJECT and THREAD=REFERENCES."""
        algorithm, query = program
        selected = self.selected
        items = await self._ordering_items(selected, query)
        if algorithm == "ORDEREDSUBJECT":
            roots = ordering.thread_ordered_subject(items)
        else:
            roots = ordering.thread_references(items)

        def number(item):
            return item.info.uid if by_uid else item.position
        self.sendLine(b"* THREAD " + b"".join(b"(" + ordering.render(root, number) + b")"
                                              for root in roots) if roots else b"* THREAD")
        self._ok(tag, b"THREAD completed")

    async def _ordering_items(self, selected, query):
        """The messages matching ``query`` as ordering.Item (position, info, keys)."""
        uids = await self._matching_uids(selected, query)
        keys = await ordering.keys_for(selected.live, uids)
        info = selected.live.info
        return [ordering.Item(selected.seq_of(u), i, keys[u]) for u in uids
                if u in keys and (i := info(u)) is not None]

    async def do_STORE(self, tag, seqset, action, by_uid):
        """RFC 3501 §6.4.6: the new flags of every message in the set are
        reported unless .SILENT (others' changes are reported anyway). With
        UNCHANGEDSINCE (RFC 7162 §3.1.3) messages changed after it are left
        alone and named in [MODIFIED]; with CONDSTORE on, every changed
        message is reported with its MODSEQ, .SILENT or not."""
        selected = self._writable()
        if action.unchanged_since is not None:
            self._enable_condstore()
        targets = selected.resolve(seqset, by_uid)
        flags = [f for f in action.flags if f != "\\Recent"]
        live = selected.live
        uids = [uid for _, uid in targets if live.info(uid) is not None]
        refused = set()
        changed = set()
        if uids:
            result = await live.set_flags(uids, flags, action.mode,
                                          unchanged_since=action.unchanged_since,
                                          origin=selected)
            refused = set(result.modified)
            changed = {i.uid for i in result.changed}
        lines = []
        for seq, uid in targets:
            current = live.info(uid)
            if current is None or uid in refused:
                continue
            if action.silent:
                if selected.condstore and uid in changed:
                    lines.append(selected.flags_line(seq, current, with_flags=False))
            else:
                lines.append(selected.flags_line(seq, current, with_uid=by_uid))
            if len(lines) >= FAST_BATCH:
                self.transport.write(b"\r\n".join(lines) + b"\r\n")
                lines = []
                await self._gate.wait()
        if lines and not self._gone:
            self.transport.write(b"\r\n".join(lines) + b"\r\n")
        code = b""
        if refused:
            numbers = sorted(refused) if by_uid else sorted(
                n for u in refused if (n := selected.seq_of(u)) is not None)
            code = b"[MODIFIED " + wire.number_set(numbers) + b"] "
        self._ok(tag, code + b"STORE completed")

    async def do_COPY(self, tag, seqset, name, by_uid):
        """RFC 3501 §6.4.7 with COPYUID (RFC 4315); quota-checked."""
        selected = self.selected
        uids = [uid for _, uid in selected.resolve(seqset, by_uid)
                if selected.live.info(uid) is not None]
        result = await selected.live.copy_to(uids, name)
        await self._quota_alert()
        self._ok(tag, self._copyuid(result) + b"COPY completed")

    async def do_MOVE(self, tag, seqset, name, by_uid):
        """RFC 6851: COPYUID in an untagged OK, then the EXPUNGEs; through the
        mailboxes service, which trains the spam filter for Spam moves."""
        selected = self._writable()
        uids = [uid for _, uid in selected.resolve(seqset, by_uid)
                if selected.live.info(uid) is not None]
        result = await selected.live.move_to(uids, name)
        code = self._copyuid(result)
        if code:
            self.sendLine(b"* OK " + code + b"Moved.")
        # like EXPUNGE's (RFC 7162 §3.2.7): removals carry no MODSEQ of their own
        self._ok(tag, self._highestmodseq_code() + b"MOVE completed")

    @staticmethod
    def _copyuid(result):
        if not result.uid_map:
            return b""
        sources = [s for s, _ in result.uid_map]
        targets = [t for _, t in result.uid_map]
        if sources == sorted(sources):
            source_set, target_set = wire.number_set(sources), wire.number_set(targets)
        else:
            source_set = b",".join(b"%d" % s for s in sources)
            target_set = b",".join(b"%d" % t for t in targets)
        return b"[COPYUID %d %s %s] " % (result.uidvalidity, source_set, target_set)

    async def do_FETCH(self, tag, seqset, items, modifiers, by_uid):
        """RFC 3501 §6.4.5, with MODSEQ and the CHANGEDSINCE modifier (RFC
        7162 §3.1.4.1, §3.1.4.2) and UID FETCH's VANISHED modifier (§3.2.6)."""
        selected = self.selected
        if modifiers.vanished:
            if not by_uid:
                raise ParseError("VANISHED is a UID FETCH modifier (RFC 7162 §3.2.6).")
            if not self.qresync:
                raise ParseError("Enable QRESYNC first (RFC 7162 §3.2.6).")
        since = modifiers.changed_since
        if since is not None or any(i.name == "MODSEQ" for i in items):
            self._enable_condstore()
        targets = selected.resolve(seqset, by_uid)
        if by_uid and not any(i.name == "UID" for i in items):
            items = (parser.FetchItem("UID"),) + tuple(items)
        if since is not None:
            if not any(i.name == "MODSEQ" for i in items):
                items = tuple(items) + (parser.FetchItem("MODSEQ"),)
            if modifiers.vanished:
                live = selected.live
                if seqset.saved:
                    ranges = [(u, u) for u in sorted(selected.saved)]
                else:
                    ranges = seqset.resolved(max(live.uidnext - 1, 1))
                vanished = await self._vanished_since(selected, since, ranges)
                if vanished:
                    self.sendLine(b"* VANISHED (EARLIER) " + vanished)
            info = selected.live.info
            targets = [(seq, uid) for seq, uid in targets
                       if (i := info(uid)) is not None and i.modseq > since]
        if all(i.name in _FAST_ITEMS for i in items):
            await self._fetch_fast(selected, targets, items)
        else:
            await self._fetch_full(selected, targets, items)
        self._ok(tag, b"FETCH completed")

    def _static_item(self, item, info, recent, flag_cache):
        name = item.name
        if name == "UID":
            return b"UID %d" % info.uid
        if name == "FLAGS":
            if recent:
                return b"FLAGS " + wire.flag_list(info.flags, True)
            found = flag_cache.get(info.flags)
            if found is None:
                found = flag_cache[info.flags] = b"FLAGS " + wire.flag_list(info.flags)
            return found
        if name == "RFC822.SIZE":
            return b"RFC822.SIZE %d" % info.size
        if name == "INTERNALDATE":
            return b"INTERNALDATE " + wire.internal_date(info.internal_date)
        if name == "MODSEQ":
            return b"MODSEQ (%d)" % info.modseq
        raise AssertionError(name)

    async def _fetch_fast(self, selected, targets, items):
        """FLAGS/UID/RFC822.SIZE/INTERNALDATE only: written in slices of
        FAST_BATCH lines (one write each), no per-message reactor turn."""
        info_of = selected.live.info
        recent = selected.recent
        cache = {}
        out = []
        for seq, uid in targets:
            info = info_of(uid)
            if info is None:
                continue
            out.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(
                self._static_item(item, info, uid in recent, cache) for item in items)))
            if len(out) >= FAST_BATCH:
                await self._write_slice(out)
                out = []
        if out and not self._gone:
            self.transport.write(b"".join(out))

    async def _write_slice(self, lines):
        if self._gone:
            raise _Gone()
        self.transport.write(b"".join(lines))
        await self._gate.wait()
        await self.context.next_turn()
        if self._gone:
            raise _Gone()

    async def _fetch_full(self, selected, targets, items):
        live = selected.live
        sets_seen = selected.rw and any(i.sets_seen for i in items)
        structure_needed = fetch.needs_structure(items)
        wants_flags = any(i.name == "FLAGS" for i in items)
        wants_modseq = any(i.name == "MODSEQ" for i in items)
        cache = {}
        for start in range(0, len(targets), FULL_BATCH):
            batch = [(seq, uid, live.info(uid)) for seq, uid in targets[start:start + FULL_BATCH]]
            batch = [(seq, uid, info) for seq, uid, info in batch if info is not None]
            if not batch:
                continue
            newly_seen = set()
            if sets_seen:
                unseen = [uid for _, uid, info in batch if SEEN not in info.flags]
                if unseen:
                    result = await live.set_flags(unseen, [SEEN], FLAGS_ADD, origin=selected)
                    newly_seen = {i.uid for i in result.changed}
                    batch = [(seq, uid, live.info(uid) or info) for seq, uid, info in batch]
            summaries = {}
            if structure_needed:
                summaries = await live.details([uid for _, uid, _ in batch])
            plans = {}
            for seq, uid, info in batch:
                if structure_needed and uid not in summaries:
                    continue  # expunged meanwhile
                plans[uid] = self._plan(items, info, summaries.get(uid),
                                        uid in selected.recent, cache)
            group, budget = [], 0
            for seq, uid, info in batch:
                plan = plans.get(uid)
                if plan is None:
                    continue
                if uid in newly_seen and not wants_flags:
                    plan = plan + [b"FLAGS " + wire.flag_list(info.flags,
                                                              uid in selected.recent)]
                if uid in newly_seen and selected.condstore and not wants_modseq:
                    plan = plan + [b"MODSEQ (%d)" % info.modseq]
                group.append((seq, uid, plan))
                budget += sum(p.cost for p in plan if isinstance(p, _Read))
                if budget >= READ_BUDGET:
                    await self._write_group(live, group)
                    group, budget = [], 0
            if group:
                await self._write_group(live, group)
            await self._gate.wait()
            if self._gone:
                raise _Gone()

    async def _write_group(self, live, group):
        """Read the small items of some messages in one go (at most about
        READ_BUDGET bytes in memory), then write their responses."""
        reads = {uid: [p for p in plan if isinstance(p, _Read)] for _, uid, plan in group}
        reads = {uid: wanted for uid, wanted in reads.items() if wanted}
        data = {}
        if reads:
            data = await live.read_messages(list(reads), _range_reader(reads))
        for seq, uid, plan in group:
            if uid in reads and uid not in data:
                continue  # expunged meanwhile
            await self._write_message(live, seq, uid, plan, data.get(uid))

    def _plan(self, items, info, summary, recent, cache):
        """The response items of one message: bytes, _Read (a small range or
        header block, read in the batch) or _Stream (a large range)."""
        plan = []
        structure = summary.structure if summary is not None else None
        for item in items:
            name = item.name
            if name in _FAST_ITEMS:
                plan.append(self._static_item(item, info, recent, cache))
            elif name == "ENVELOPE":
                plan.append(b"ENVELOPE " + fetch.envelope(summary.envelope))
            elif name == "BODYSTRUCTURE":
                plan.append(b"BODYSTRUCTURE " + fetch.body_structure(structure, True,
                                                                     self.rev2))
            elif name == "BODY" and item.section is None:
                plan.append(b"BODY " + fetch.body_structure(structure, False, self.rev2))
            elif name == "RFC822.HEADER":
                plan.append(_Read(b"RFC822.HEADER", header=True))
            elif name in ("BINARY[]", "BINARY.SIZE"):
                plan.append(self._binary_plan(item, info, structure))
            else:
                if name == "RFC822":
                    label, section, partial = b"RFC822", parser.Section(), None
                elif name == "RFC822.TEXT":
                    label, section, partial = b"RFC822.TEXT", parser.Section(text="TEXT"), None
                else:
                    label, section, partial = fetch.body_label(item), item.section, item.partial
                if not section.part and section.text in ("HEADER", "HEADER.FIELDS",
                                                         "HEADER.FIELDS.NOT"):
                    plan.append(_Read(label, header=True, section=section, partial=partial))
                    continue
                if section.text is None and not section.part:
                    span = (0, info.size)
                else:
                    span = fetch.section_range(structure, section, info.size)
                if span is None:
                    plan.append(label + b" NIL")
                    continue
                begin, end = fetch.apply_partial(span[0], span[1], partial)
                if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                    plan.append(_Read(label, span=span, section=section, partial=partial))
                elif end - begin <= INLINE_BODY:
                    plan.append(_Read(label, span=(begin, end)))
                else:
                    plan.append(_Stream(label, begin, end))
        return plan

    @staticmethod
    def _binary_plan(item, info, structure):
        """RFC 3516 §4.2: BINARY[section]<partial> and BINARY.SIZE[section],
        the part's transfer encoding decoded (small parts in the batch read,
        large ones into a temporary file on a worker thread)."""
        label = fetch.binary_label(item)
        try:
            target = fetch.binary_target(structure, item.section, info.size)
        except fetch.UnknownCTE:
            raise _UnknownCTE() from None
        if target is None:
            return label + b" NIL"
        start, end, encoding = target
        size_only = item.name == "BINARY.SIZE"
        if encoding is None and size_only:
            return label + b" %d" % (end - start)
        if end - start <= INLINE_BODY:
            return _Read(label, span=(start, end), decode=encoding or "", partial=item.partial,
                         size_only=size_only)
        return _BinaryStream(label, start, end, encoding, item.partial, size_only)

    async def _write_message(self, live, seq, uid, plan, data):
        streams = [p for p in plan if isinstance(p, (_Stream, _BinaryStream))]
        fileobj = None
        if streams:
            try:
                fileobj = await live.open_message(uid)
            except errors.NoSuchMessage:
                return
        try:
            pieces = []
            for n, piece in enumerate(plan):
                prefix = b"* %d FETCH (" % seq if n == 0 else b" "
                if isinstance(piece, bytes):
                    pieces.append(prefix + piece)
                elif isinstance(piece, _Read):
                    pieces.append(prefix + piece.response(data[id(piece)]))
                elif isinstance(piece, _BinaryStream):
                    decoded, size, nul = await self.context.run_in_thread(
                        fetch.decode_to_file, fileobj, piece.start, piece.end, piece.encoding)
                    try:
                        if piece.size_only:
                            pieces.append(prefix + piece.label + b" %d" % size)
                            continue
                        begin, end = fetch.apply_partial(0, size, piece.partial)
                        pieces.append(prefix + piece.label + (b" ~{%d}\r\n" if nul else
                                                              b" {%d}\r\n") % (end - begin))
                        if self._gone:
                            raise _Gone()
                        self.transport.write(b"".join(pieces))
                        pieces = []
                        await self._stream(decoded, begin, end)
                    finally:
                        decoded.close()
                else:
                    pieces.append(prefix + piece.label + b" {%d}\r\n" % (piece.end - piece.start))
                    if self._gone:
                        raise _Gone()
                    self.transport.write(b"".join(pieces))
                    pieces = []
                    await self._stream(fileobj, piece.start, piece.end)
            pieces.append(b")\r\n")
            if self._gone:
                raise _Gone()
            self.transport.write(b"".join(pieces))
        finally:
            if fileobj is not None:
                fileobj.close()

    async def _stream(self, fileobj, start, end):
        """Send bytes [start, end) of a file, read in chunks on a worker
        thread, waiting whenever the transport is full."""
        position = start
        while position < end:
            size = min(STREAM_CHUNK, end - position)
            chunk = await self.context.run_in_thread(_read_at, fileobj, position, size)
            if len(chunk) < size:
                # the file is shorter than the index says: keep the framing intact
                log.warning("message file shorter than expected for {user}",
                         user=self.mailbox.username if self.mailbox else "-")
                chunk += b" " * (size - len(chunk))
            if self._gone:
                raise _Gone()
            self.transport.write(chunk)
            position += size
            await self._gate.wait()

    select_CHECK = (do_CHECK,)
    select_CLOSE = (do_CLOSE,)
    select_UNSELECT = (do_UNSELECT,)
    select_EXPUNGE = (do_EXPUNGE,)
    select_UID_EXPUNGE = (do_EXPUNGE, _seqset)
    select_SEARCH = (do_SEARCH, _search_program, False)
    select_UID_SEARCH = (do_SEARCH, _search_program, True)
    select_SORT = (do_SORT, _sort_program, False)
    select_UID_SORT = (do_SORT, _sort_program, True)
    select_THREAD = (do_THREAD, _thread_program, False)
    select_UID_THREAD = (do_THREAD, _thread_program, True)
    select_FETCH = (do_FETCH, _seqset, _fetch_atts, _fetch_modifiers, False)
    select_UID_FETCH = (do_FETCH, _seqset, _fetch_atts, _fetch_modifiers, True)
    select_STORE = (do_STORE, _seqset, _store_action, False)
    select_UID_STORE = (do_STORE, _seqset, _store_action, True)
    select_COPY = (do_COPY, _seqset, _mailbox, False)
    select_UID_COPY = (do_COPY, _seqset, _mailbox, True)
    select_MOVE = (do_MOVE, _seqset, _mailbox, False)
    select_UID_MOVE = (do_MOVE, _seqset, _mailbox, True)


class _UnknownCTE(Exception):
    """BINARY of a part whose transfer encoding is unknown (RFC 3516 §4.3)."""


@attrs.frozen
class _Read:
    """A FETCH item whose bytes are read with the batch: a byte ``span`` of
    the file, or the header block (``header``), filtered by a
    HEADER.FIELDS ``section``, cut by ``partial``; for BINARY (``decode``
    not None: "" for none, else the transfer encoding) decoded first, and
    only its size for BINARY.SIZE."""

    label: bytes
    span: tuple | None = None
    header: bool = False
    section: object = None
    partial: tuple | None = None
    decode: str | None = None
    size_only: bool = False

    def response(self, data):
        if self.decode is None:
            return self.label + b" " + wire.literal(self.render(data))
        if self.size_only:
            return self.label + b" %d" % len(data)
        if self.partial is not None:
            origin, length = self.partial
            data = data[origin:origin + length]
        return self.label + b" " + wire.literal8(data)

    @property
    def cost(self):
        """Bytes this read may hold in memory."""
        if self.header:
            return search.MAX_HEADER_READ // 16  # header blocks are small in practice
        return self.span[1] - self.span[0]

    def read(self, fileobj):
        if self.header:
            return search.read_header_block(fileobj)
        if self.decode is not None:
            return fetch.decode_range(fileobj, *self.span, self.decode or None)
        start, end = self.span
        fileobj.seek(start)
        return fileobj.read(end - start)

    def render(self, data):
        if self.section is not None and self.section.text in ("HEADER.FIELDS",
                                                              "HEADER.FIELDS.NOT"):
            data = fetch.filter_header(data, self.section.fields,
                                       self.section.text == "HEADER.FIELDS")
        if self.partial is not None and (self.header or self.section is not None):
            origin, length = self.partial
            data = data[origin:origin + length]
        return data


@attrs.frozen
class _Stream:
    label: bytes
    start: int
    end: int


@attrs.frozen
class _BinaryStream:
    """A large BINARY item: decoded into a temporary file, then streamed."""

    label: bytes
    start: int
    end: int
    encoding: str | None
    partial: tuple | None
    size_only: bool


def _range_reader(reads):
    """reader(uid, fileobj) for LiveFolder.read_messages: the bytes of every
    _Read of that message, in plan order (a list indexed like the plan)."""
    def read(uid, fileobj):
        return {id(r): r.read(fileobj) for r in reads[uid]}
    return read


def _gaps(ranges, uids, top):
    """The parts of sorted, merged ``ranges`` (capped at ``top``) that hold
    none of the sorted ``uids``: [(low, high)], without visiting each UID."""
    out = []
    for low, high in ranges:
        high = min(high, top)
        if low > high:
            continue
        i = bisect.bisect_left(uids, low)
        start = low
        while i < len(uids) and uids[i] <= high:
            if uids[i] > start:
                out.append((start, uids[i] - 1))
            start = uids[i] + 1
            i += 1
        if start <= high:
            out.append((start, high))
    return out


def _in_ranges(value, ranges):
    """Is ``value`` in sorted, merged [(low, high)]?"""
    i = bisect.bisect_right(ranges, (value, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= value <= ranges[i][1]


def _read_at(fileobj, position, size):
    fileobj.seek(position)
    return fileobj.read(size)


def _no_delay(transport):
    """TCP_NODELAY on the socket under the TLS layer: responses are written
    in whole pieces already, and Nagle's algorithm would hold a tagged reply
    back for the client's delayed ACK (40 ms per command)."""
    for _ in range(4):
        if transport is None:
            return
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
            return
        transport = getattr(transport, "transport", None)


class IMAPFactory(protocol.Factory):
    """Builds one IMAPServer per connection (implicit TLS comes from the listener)."""

    noisy = False

    def __init__(self, context):
        self.context = context
        #: mailbox id -> sessions logged in to it
        self.sessions = collections.Counter()

    def buildProtocol(self, addr):
        server = IMAPServer(self.context)
        server.factory = self
        return server

    def session_started(self, mailbox):
        """Count a login -> False when the mailbox has its fill of sessions."""
        if self.sessions[mailbox.id] >= self.context.sessions_per_mailbox:
            return False
        self.sessions[mailbox.id] += 1
        return True

    def session_ended(self, mailbox):
        self.sessions[mailbox.id] -= 1
        if self.sessions[mailbox.id] <= 0:
            del self.sessions[mailbox.id]

    def refusal(self, per_client):
        """RFC 3501 §7.1.5: a BYE greeting, then the connection closes."""
        text = (b"Too many connections from your address" if per_client
                else b"The server is too busy")
        return b"* BYE [UNAVAILABLE] " + text + b"; try again later.\r\n"
