"""POP3 on port 995: RFC 1939, with CAPA and response codes (RFC 2449),
AUTH PLAIN (RFC 5034, RFC 4616) and the SYS/AUTH codes (RFC 3206).

Owns only the translation between the wire and ``services.maildrop``: the
command parser, the replies and their response codes, and the byte stream
of RETR and TOP (CRLF line ends and dot-stuffing, RFC 1939 §3). It builds
on Twisted's ``pop3.POP3`` for the line receiver and the idle timer, and
replaces its command handlers: the base class counts deleted messages in
STAT/LIST, fails on UIDL after DELE, dot-stuffs each 16 KiB chunk on its
own, turns CRLF into CR CR LF, lacks AUTH PLAIN and response codes, offers
APOP and advertises joke capabilities (TWISTED-NOTES §2).

Invariants:
- every line of a message that begins with "." goes out as "..", wherever
  the line falls relative to the read chunks (``DotStuffer`` keeps state
  across chunks); stored CRLF stays CRLF, a bare LF becomes CRLF;
- a message is streamed from its file with back-pressure (a pull
  producer), never read whole into memory;
- service errors reach the wire through ``pop3_error_text`` only;
  anything unexpected is logged and answered with a generic
  ``-ERR [SYS/TEMP]`` (or, in the middle of a message, closes the
  connection); no password and no command line is ever logged;
- commands are answered one at a time, in order (RFC 2449 §6.6
  PIPELINING): lines that arrive while a command works wait in a queue,
  and reading from the client pauses while that queue is long;
- an over-long line, an unknown command, bad arguments or a command in the
  wrong state get ``-ERR`` and the session goes on, until
  ``max_bad_commands`` in a row close it;
- a session that ends without QUIT (dropped, idle timeout) removes
  nothing (RFC 1939 §6); QUIT answers only after the removal is done and
  the mailbox is unlocked.
"""

import binascii
import collections
import re

from twisted.internet import defer, interfaces, protocol
from twisted.logger import Logger
from twisted.mail import pop3
from twisted.python.failure import Failure
from zope.interface import implementer

from ktmail import errors

log = Logger()

#: RFC 2449 §6: what CAPA lists, in both states
CAPABILITIES = (
    b"USER",
    b"UIDL",
    b"TOP",
    b"RESP-CODES",
    b"AUTH-RESP-CODE",
    b"SASL PLAIN",
    b"PIPELINING",
    b"EXPIRE NEVER",
    b"IMPLEMENTATION ktmail",
)

_NUMBER = re.compile(rb"[0-9]{1,10}\Z")


# --- errors -> the wire (the one mapper of this surface) --------------------------------


def pop3_error_text(exc):
    """The text after ``-ERR `` for a service error: an RFC 2449 §8 /
    RFC 3206 response code where one applies, then the error's own text."""
    if isinstance(exc, errors.AuthFailed):
        code = "AUTH"                     # RFC 3206 §5
    elif isinstance(exc, errors.MailboxInUse):
        code = "IN-USE"                   # RFC 2449 §8.1.1
    elif isinstance(exc, errors.NoSuchMessage):
        code = None                       # RFC 1939 §5: a plain -ERR
    elif isinstance(exc, errors.KtmailError):
        code = "SYS/TEMP" if exc.temporary else "SYS/PERM"   # RFC 3206 §4
    else:
        return "[SYS/TEMP] Internal server error; try again later."
    return f"[{code}] {exc.text}" if code else exc.text


# --- the message stream (RFC 1939 §3) ----------------------------------------------------


class DotStuffer:
    """Turns a message, fed in chunks of any size, into its multi-line
    response body: CRLF line ends and a "." added before every line that
    begins with "." (RFC 1939 §3). The state carried between chunks (at a
    line start? after a CR?) makes the result independent of the chunking,
    also for a CRLF split across two chunks."""

    _BARE_LF = re.compile(rb"(?<!\r)\n")

    def __init__(self):
        self._at_line_start = True
        self._after_cr = False

    def feed(self, chunk):
        out = []
        if self._after_cr and chunk[:1] == b"\n":
            # the LF of a CRLF whose CR ended the previous chunk
            out.append(b"\n")
            chunk = chunk[1:]
            self._at_line_start, self._after_cr = True, False
        if chunk:
            if chunk.count(b"\n") != chunk.count(b"\r\n"):
                chunk = self._BARE_LF.sub(b"\r\n", chunk)
            if self._at_line_start and chunk[:1] == b".":
                out.append(b".")
            out.append(chunk.replace(b"\n.", b"\n.."))
            self._at_line_start = chunk[-1:] == b"\n"
            self._after_cr = chunk[-1:] == b"\r"
        return b"".join(out)

    def end(self):
        """The end of the response: the last line completed, then ".\\r\\n"."""
        if self._at_line_start:
            return b".\r\n"
        if self._after_cr:
            return b"\n.\r\n"
        return b"\r\n.\r\n"


class TopFilter:
    """Passes the header, the empty line after it and the first ``lines``
    lines of the body (RFC 1939 §7 TOP), fed in chunks of any size; then
    ``done`` is true and nothing more passes. A message without a body
    passes whole."""

    def __init__(self, lines):
        self._remaining = lines
        self._in_header = True
        self._line_start = True   # no byte of the current line seen yet
        self._cr_only = False     # the current line so far is exactly "\r"
        self.done = False

    def feed(self, data):
        if self.done:
            return b""
        if not self._in_header:
            return self._body(data, 0)
        pos = 0
        while True:
            lf = data.find(b"\n", pos)
            if lf < 0:
                rest = data[pos:]
                if rest:
                    self._cr_only = self._line_start and rest == b"\r"
                    self._line_start = False
                return data
            line = data[pos:lf]
            empty = ((self._line_start and line in (b"", b"\r"))
                     or (self._cr_only and line == b""))
            pos = lf + 1
            self._line_start, self._cr_only = True, False
            if empty:
                self._in_header = False
                return self._body(data, pos)

    def _body(self, data, pos):
        if self._remaining <= 0:
            self.done = True
            return data[:pos]
        lines = data.count(b"\n", pos)
        if lines < self._remaining:
            self._remaining -= lines
            return data
        for _ in range(self._remaining):
            pos = data.index(b"\n", pos) + 1
        self._remaining = 0
        self.done = True
        return data[:pos]


def message_chunks(file, chunk_size, top_lines=None, first=b""):
    """The whole response of RETR (or of TOP with ``top_lines``): ``first``
    (the status line), then the message read from ``file`` in
    ``chunk_size`` pieces, stuffed, then the terminator. The status line
    goes out with the first piece and the terminator with the last, so
    that a small message is one write and no small segment waits for an
    ACK (Nagle). Closes the file when done or abandoned."""
    try:
        stuffer = DotStuffer()
        top = TopFilter(top_lines) if top_lines is not None else None
        pending = first
        while True:
            data = file.read(chunk_size)
            if not data:
                break
            if top is not None:
                data = top.feed(data)
            out = stuffer.feed(data)
            if len(pending) < 4096:
                pending += out
            else:
                yield pending
                pending = out
            if top is not None and top.done:
                break
        yield pending + stuffer.end()
    finally:
        file.close()


def listing_chunks(first, lines, batch=512):
    """A multi-line response (RFC 1939 §3) from its first line and the
    lines of its body, which never begin with "."."""
    yield first
    for start in range(0, len(lines), batch):
        yield b"".join(lines[start:start + batch])
    yield b".\r\n"


def _messages(count):
    return f"{count} message" if count == 1 else f"{count} messages"


class _StreamStopped(Exception):
    """The client went away while a response was being streamed."""


@implementer(interfaces.IPullProducer)
class _Streamer:
    """Writes an iterator of byte chunks to a transport as a pull producer
    (one chunk each time the transport wants more: back-pressure)."""

    def __init__(self, consumer, chunks, progress=lambda: None):
        self._consumer = consumer
        self._chunks = chunks
        self._progress = progress
        self.done = defer.Deferred()

    def start(self):
        self._consumer.registerProducer(self, False)
        return self.done

    def resumeProducing(self):
        if self._chunks is None:
            return
        try:
            data = next(self._chunks)
        except StopIteration:
            self._finish(None)
        except Exception:  # noqa: BLE001 - handed on to the command's errback
            self._finish(Failure())
        else:
            self._consumer.write(data)
            self._progress()

    def _finish(self, failure):
        chunks, self._chunks = self._chunks, None
        chunks.close()
        self._consumer.unregisterProducer()
        if failure is None:
            self.done.callback(None)
        else:
            self.done.errback(failure)

    def stopProducing(self):
        if self._chunks is None:
            return
        chunks, self._chunks = self._chunks, None
        chunks.close()
        self.done.errback(_StreamStopped())


# --- the session -------------------------------------------------------------------------


class _BadCommand(Exception):
    """A syntax error or a command not allowed now: -ERR, and it counts
    towards ``max_bad_commands``."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


_AUTHORIZATION = frozenset({b"CAPA", b"USER", b"PASS", b"AUTH", b"QUIT"})
_TRANSACTION = frozenset({b"CAPA", b"STAT", b"LIST", b"RETR", b"TOP", b"DELE", b"NOOP",
                          b"RSET", b"UIDL", b"QUIT"})


class POP3Server(pop3.POP3):
    """One POP3 session (see the module docstring)."""

    #: the longest command line accepted, CRLF excluded. RFC 2449 §4 limits
    #: commands to 255 octets, but an AUTH PLAIN response with a long
    #: password (RFC 5034 §4 lets it exceed that) must fit.
    MAX_LENGTH = 4096
    #: lines queued while a command works before reading pauses
    MAX_QUEUED_LINES = 256

    def __init__(self, factory):
        self.factory = factory
        # (TimeoutMixin.setTimeout overwrites self.timeOut: keep our own)
        self._idle_timeout = factory.idle_timeout
        # TimeoutMixin schedules with self.callLater: the injected clock
        self.callLater = factory.clock.callLater
        self._buffer = b""
        self._discarding = False
        self._queue = collections.deque()
        self._paused = False
        self._working = False
        self._streaming = False
        self._closing = False
        self._lost = False
        self._bad_commands = 0
        self._user = None
        self._sasl_pending = False
        self._maildrop = None
        self._committing = False

    # --- connection ---

    def connectionMade(self):
        # one response per command: send each at once rather than wait for
        # the client's delayed ACK of the previous segment
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        # RFC 1939 §4; no <timestamp>: APOP is not offered
        self.successResponse(f"{self.factory.hostname} ktmail POP3 server ready.")
        self.setTimeout(self._idle_timeout)

    def connectionLost(self, reason):
        self._lost = True
        self.setTimeout(None)
        self._queue.clear()
        if self._maildrop is not None and not self._committing:
            # RFC 1939 §6: no QUIT, no UPDATE state: nothing is removed
            self._maildrop.close()

    def successResponse(self, message=""):
        self.transport.write(b"+OK " + message.encode("utf-8") + b"\r\n" if message
                             else b"+OK\r\n")

    def timeoutConnection(self):
        # RFC 1939 §3: the autologout timer (at least 10 minutes) ends the
        # session without entering the UPDATE state. It also runs while a
        # response is being sent, reset by every piece the client takes: a
        # client that stops reading cannot hold the mailbox's lock forever.
        if self._streaming:
            # what is queued for it will never drain: drop, do not flush
            log.info("POP3 client at {address} stopped reading; closing",
                     address=self._client_address)
            self._closing = True
            self._queue.clear()
            self.transport.abortConnection()
        else:
            self.failResponse("Disconnected after too long without a command.")
            self._close()

    def _close(self):
        self._closing = True
        self._queue.clear()
        self.transport.loseConnection()

    @property
    def _client_address(self):
        return getattr(self.transport.getPeer(), "host", "") or ""

    # --- framing: lines, with a length limit that does not drop the session ---

    def dataReceived(self, data):
        buf = self._buffer + data
        pos = 0
        while not self._closing:
            end = buf.find(b"\r\n", pos)
            if self._discarding:
                if end < 0:
                    # keep a trailing CR: it may be half of the CRLF we wait for
                    self._buffer = buf[-1:] if buf.endswith(b"\r") else b""
                    return
                self._discarding = False
                pos = end + 2
                self._line_too_long()
                continue
            if end < 0:
                rest = buf[pos:]
                if len(rest) > self.MAX_LENGTH:
                    self._discarding = True
                    buf, pos = rest[-1:], 0
                    continue
                self._buffer = rest
                return
            line = buf[pos:end]
            pos = end + 2
            if len(line) > self.MAX_LENGTH:
                self._line_too_long()
            else:
                self.lineReceived(line)
        self._buffer = b""

    def _line_too_long(self):
        self.lineReceived(None)

    def lineReceived(self, line):
        if self._closing:
            return
        self.resetTimeout()
        if self._working:
            self._queue.append(line)
            if len(self._queue) >= self.MAX_QUEUED_LINES and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        self._handle(line)

    # --- dispatch ---

    def _handle(self, line):
        try:
            if line is None:
                self._sasl_pending = False     # (an over-long SASL response ends it)
                raise _BadCommand(f"Line too long; a command line may have at most "
                                  f"{self.MAX_LENGTH} characters.")
            if self._sasl_pending:
                self._sasl_pending = False
                result = self._sasl_response(line)
            else:
                keyword, _, rest = line.partition(b" ")
                keyword = keyword.upper()
                result = self._dispatch(keyword, rest)
        except _BadCommand as e:
            self._bad_command(e.text)
            return
        except errors.KtmailError as e:
            self.failResponse(pop3_error_text(e))
            return
        except Exception:  # noqa: BLE001 - logged, generic reply, the session goes on
            self._unexpected(Failure())
            return
        self._bad_commands = 0
        if isinstance(result, defer.Deferred):
            self._work(result)

    def _dispatch(self, keyword, rest):
        allowed = _TRANSACTION if self._maildrop is not None else _AUTHORIZATION
        if keyword not in allowed:
            if keyword in _TRANSACTION:
                raise _BadCommand("Log in first (USER and PASS, or AUTH PLAIN).")
            if keyword in _AUTHORIZATION:
                raise _BadCommand("You are already logged in.")
            raise _BadCommand("Unknown command.")
        return getattr(self, "do_" + keyword.decode("ascii"))(rest)

    def _bad_command(self, text):
        self._bad_commands += 1
        if self._bad_commands >= self.factory.max_bad_commands:
            self.failResponse("Too many bad commands; closing the connection.")
            self._close()
        else:
            self.failResponse(text)

    def _work(self, d):
        """Hold further commands until ``d`` (the current command) is done."""
        self._working = True
        d.addErrback(self._unexpected)
        d.addBoth(self._worked)

    def _worked(self, _):
        self._working = False
        if self._lost or self._closing:
            return
        self.resetTimeout()
        while self._queue and not self._working and not self._closing:
            self._handle(self._queue.popleft())
        if self._paused and len(self._queue) < self.MAX_QUEUED_LINES // 2:
            self._paused = False
            self.transport.resumeProducing()

    def _unexpected(self, failure):
        if failure.check(_StreamStopped) or self._lost:
            return
        log.failure("POP3 command failed", failure)
        if self._streaming:
            # half a response went out: the client cannot resynchronise
            self._close()
        else:
            self.failResponse(pop3_error_text(failure.value))

    def _reply_error(self, failure):
        failure.trap(errors.KtmailError)
        if not self._lost:
            self.failResponse(pop3_error_text(failure.value))

    def _stream(self, chunks):
        self._streaming = True

        def ended(result):
            self._streaming = False
            return result
        return _Streamer(self.transport, chunks, self.resetTimeout).start().addBoth(ended)

    # --- arguments ---

    @staticmethod
    def _numbers(rest, syntax, count):
        args = rest.split()
        if len(args) != count or not all(_NUMBER.match(a) for a in args):
            raise _BadCommand(f"Syntax: {syntax}")
        return [int(a) for a in args]

    # --- AUTHORIZATION state (RFC 1939 §4, RFC 5034) ---

    def do_CAPA(self, rest):
        """RFC 2449 §5."""
        self.transport.write(b"+OK Capability list follows\r\n"
                             + b"".join(c + b"\r\n" for c in CAPABILITIES) + b".\r\n")

    def _require_tls(self):
        """SPEC §2: no password without TLS (a plain ``tcp:`` POP3 listener
        takes no login at all; STLS is not offered)."""
        if not interfaces.ISSLTransport.providedBy(self.transport):
            raise errors.KtmailError("Log in over TLS (POP3S, port 995); this connection "
                                     "is not encrypted.")

    def do_USER(self, rest):
        """RFC 1939 §7 USER: the mailbox username, not the address."""
        self._require_tls()
        if not rest.strip():
            raise _BadCommand("Syntax: USER <username>")
        self._user = rest.strip()
        self.successResponse("Send your password with PASS.")

    def do_PASS(self, rest):
        """RFC 1939 §7 PASS: the rest of the line is the password, spaces
        included."""
        user, self._user = self._user, None
        self._require_tls()
        if user is None:
            raise _BadCommand("Send USER first.")
        return self._login(user, rest)

    def do_AUTH(self, rest):
        """RFC 5034 §4: AUTH PLAIN with or without an initial response
        (without one, the server sends an empty challenge "+ ")."""
        args = rest.split()
        if not args:
            # the mechanism list of the RFC 1734 era, still asked for by clients
            self.transport.write(b"+OK Mechanisms follow\r\nPLAIN\r\n.\r\n")
            return None
        if args[0].upper() != b"PLAIN":
            raise _BadCommand("Unsupported authentication mechanism; use PLAIN.")
        self._require_tls()
        if len(args) > 2:
            raise _BadCommand("Syntax: AUTH PLAIN [initial-response]")
        if len(args) == 1:
            self._sasl_pending = True
            self.transport.write(b"+ \r\n")
            return None
        return self._sasl_response(args[1], initial=True)

    def _sasl_response(self, line, initial=False):
        """The PLAIN message (RFC 4616 §2): authzid NUL authcid NUL passwd."""
        line = line.strip()
        if line == b"*" and not initial:
            self.failResponse("Authentication cancelled.")    # RFC 5034 §4
            return None
        if initial and line == b"=":
            line = b""                                        # RFC 5034 §4
        try:
            message = binascii.a2b_base64(line, strict_mode=True) if line else b""
        except binascii.Error:
            raise _BadCommand("The response is not valid base64.")
        parts = message.split(b"\0")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            # no proxy logins: the authorization identity is empty or the user
            self.failResponse(pop3_error_text(errors.AuthFailed()))
            return None
        return self._login(parts[1], parts[2])

    def _login(self, user, password):
        try:
            username = user.decode("utf-8")
            password = password.decode("utf-8")
        except UnicodeDecodeError:
            username, password = "", ""   # cannot match: fails like a wrong password
        d = self.factory.auth.authenticate_mailbox(username, password, self._client_address,
                                                   "pop3")
        d.addCallback(self.factory.maildrops.open)
        d.addCallbacks(self._logged_in, self._reply_error)
        return d

    def _logged_in(self, maildrop):
        if self._lost:
            maildrop.close()
            return
        self._maildrop = maildrop
        count, octets = maildrop.stat()
        self.successResponse(f"Logged in; {_messages(count)} ({octets} octets).")

    # --- TRANSACTION state (RFC 1939 §5) ---

    def do_STAT(self, rest):
        if rest.strip():
            raise _BadCommand("Syntax: STAT")
        count, octets = self._maildrop.stat()
        self.successResponse(f"{count} {octets}")

    def do_LIST(self, rest):
        if rest.strip():
            (number,) = self._numbers(rest, "LIST [message number]", 1)
            self.successResponse(f"{number} {self._maildrop.size(number)}")
            return None
        listing = self._maildrop.listing()
        octets = sum(size for _, size in listing)
        return self._multiline(
            f"+OK {_messages(len(listing))} ({octets} octets)\r\n".encode("ascii"),
            [b"%d %d\r\n" % entry for entry in listing])

    def do_UIDL(self, rest):
        """RFC 1939 §7 UIDL: unique-ids that never change (services.maildrop)."""
        if rest.strip():
            (number,) = self._numbers(rest, "UIDL [message number]", 1)
            self.successResponse(f"{number} {self._maildrop.unique_id(number)}")
            return None
        return self._multiline(
            b"+OK Unique-ids follow\r\n",
            [b"%d %s\r\n" % (number, uidl.encode("ascii"))
             for number, uidl in self._maildrop.unique_ids()])

    def _multiline(self, first, lines):
        if len(lines) <= 512:
            self.transport.write(first + b"".join(lines) + b".\r\n")
            return None
        return self._stream(listing_chunks(first, lines))

    def do_RETR(self, rest):
        (number,) = self._numbers(rest, "RETR <message number>", 1)
        return self._send_message(number, None)

    def do_TOP(self, rest):
        """RFC 1939 §7 TOP: the header and the first n body lines; unlike
        RETR it does not mark the message \\Seen."""
        number, lines = self._numbers(rest, "TOP <message number> <lines>", 2)
        return self._send_message(number, lines)

    def _send_message(self, number, top_lines):
        maildrop = self._maildrop
        size = maildrop.size(number)
        d = maildrop.open_message(number)

        def send(file):
            if self._lost:
                file.close()
                raise _StreamStopped()
            status = (f"+OK {size} octets\r\n" if top_lines is None
                      else "+OK Top of message follows\r\n")
            return self._stream(message_chunks(file, self.factory.chunk_size, top_lines,
                                               first=status.encode("ascii")))

        def sent(_):
            if top_lines is None:
                maildrop.retrieved(number)
        d.addCallbacks(send, self._reply_error)
        d.addCallback(sent)
        return d

    def do_DELE(self, rest):
        (number,) = self._numbers(rest, "DELE <message number>", 1)
        self._maildrop.delete(number)
        self.successResponse(f"Message {number} deleted.")

    def do_NOOP(self, rest):
        self.successResponse()

    def do_RSET(self, rest):
        self._maildrop.reset()
        count, octets = self._maildrop.stat()
        self.successResponse(f"{_messages(count)} ({octets} octets).")

    # --- QUIT: the UPDATE state (RFC 1939 §6) ---

    def do_QUIT(self, rest):
        maildrop = self._maildrop
        if maildrop is None:
            self.successResponse("Bye.")
            self._close()
            return None
        self._committing = True
        self._maildrop = None
        d = maildrop.commit()

        def committed(removed):
            if not self._lost:
                self.successResponse(f"Bye; {_messages(removed)} deleted.")

        def failed(failure):
            log.failure("POP3 QUIT could not remove the deleted messages of mailbox {id}",
                        failure, id=maildrop.mailbox.id)
            if not self._lost:
                self.failResponse("[SYS/TEMP] Some deleted messages were not removed; "
                                  "they will be listed again next time.")
        d.addCallbacks(committed, failed)
        d.addBoth(lambda _: self._close())
        return d


class POP3Factory(protocol.ServerFactory):
    """POP3 sessions over the auth and maildrop services.

    ``idle_timeout``: seconds without a command before the session ends
    (RFC 1939 §3 asks for at least 10 minutes); ``chunk_size``: bytes read
    from a message file per write."""

    protocol = POP3Server
    noisy = False

    def __init__(self, auth, maildrops, clock, hostname, *, idle_timeout=600,
                 chunk_size=65536, max_bad_commands=20):
        self.auth = auth
        self.maildrops = maildrops
        self.clock = clock
        self.hostname = hostname
        self.idle_timeout = idle_timeout
        self.chunk_size = chunk_size
        self.max_bad_commands = max_bad_commands

    def buildProtocol(self, addr):
        return self.protocol(self)

    def refusal(self, per_client):
        """RFC 2449 §8 / RFC 3206: an -ERR greeting, then the connection closes."""
        text = (b"Too many connections from your address" if per_client
                else b"The server is too busy")
        return b"-ERR [SYS/TEMP] " + text + b"; try again later.\r\n"
