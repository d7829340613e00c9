"""Frozen value types shared by every layer.

Nothing here does I/O. Parsing functions raise ``ktmail.errors.ValidationError``
with a one-line text a person can act on.
"""

import base64
import re
import typing

import attrs

from ktmail.errors import ValidationError

# RFC 5322 §3.2.3 atext, as used by RFC 5321 Dot-string
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,31}\Z")

MAX_LOCAL_PART = 64
USERNAME_RULES = (
    "2-32 characters: lower-case letters a-z, digits, '.', '_' or '-', starting with a letter"
)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 1024

#: The folders every mailbox has, with their RFC 6154 special-use attribute.
DEFAULT_FOLDERS = ("INBOX", "Sent", "Drafts", "Trash", "Spam")
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Spam": "\\Junk"}
SPAM_FOLDER = "Spam"


def normalize_domain(text):
    """Lower-case a DNS domain name and check its syntax; no trailing dot."""
    domain = text.strip().lower()
    if not domain or len(domain) > 253 or domain.endswith("."):
        raise ValidationError(f"'{text}' is not a valid domain name.")
    if not all(_LABEL.match(label) for label in domain.split(".")):
        raise ValidationError(f"'{text}' is not a valid domain name.")
    return domain


def normalize_local_part(text):
    """Lower-case an RFC 5321 dot-atom local part and check it (max 64)."""
    local = text.strip().lower()
    if not local or len(local) > MAX_LOCAL_PART or not _DOT_ATOM.match(local):
        raise ValidationError(
            f"'{text}' is not a valid address name: use letters, digits and . _ - "
            f"(at most {MAX_LOCAL_PART}, no leading, trailing or double dot).",
            field="local_part",
        )
    return local


def normalize_username(text):
    """Lower-case a login name and check it against USERNAME_RULES."""
    name = text.strip().lower()
    if not _USERNAME.match(name):
        raise ValidationError(f"'{text}' is not a valid username: {USERNAME_RULES}.",
                              field="username")
    return name


def check_password(password):
    """Refuse passwords a person should not use; returns the password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.",
            field="password")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValidationError("The password is too long.", field="password")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValidationError("The password must not contain control characters.",
                              field="password")
    return password


@attrs.frozen(order=True)
class Address:
    """A mailbox address, always lower-case: ``local@domain``."""

    local: str
    domain: str

    @classmethod
    def parse(cls, text):
        """Parse ``local@domain`` (no angle brackets, no display name)."""
        local, at, domain = text.strip().rpartition("@")
        if not at:
            raise ValidationError(f"'{text}' is not an e-mail address (local@domain).",
                                  field="address")
        return cls(normalize_local_part(local), normalize_domain(domain))

    def __str__(self):
        return f"{self.local}@{self.domain}"


@attrs.frozen
class Customer:
    """A broadband customer's admin account: logs into the portal only."""

    id: int
    login: str
    created: float


@attrs.frozen
class Mailbox:
    """A mailbox account: one address, its own login, a quota."""

    id: int
    customer_id: int
    username: str
    address: Address
    quota_bytes: int
    created: float
    #: POSIX time of the last successful login by any protocol, or None
    last_login: float | None = None
    #: inactivity warnings already sent for the current idle period (days-before values)
    warnings_sent: tuple = ()

    @property
    def last_activity(self):
        """When the inactivity clock started: last login, else creation."""
        return self.last_login if self.last_login is not None else self.created


@attrs.frozen
class RuleHit:
    """One spam rule that fired, with the score it contributed."""

    name: str
    score: float
    description: str


@attrs.frozen
class SpamVerdict:
    is_spam: bool
    score: float
    required: float
    hits: tuple = ()
    #: RFC 8601 Authentication-Results: value when SPF/DKIM/DMARC were checked
    authentication_results: str = ""

    def header_value(self):
        """The value of ``X-Spam-Status:`` (SpamAssassin's layout)."""
        tests = ",".join(h.name for h in self.hits) or "none"
        return (f"{'Yes' if self.is_spam else 'No'}, score={self.score:.1f} "
                f"required={self.required:.1f} tests={tests}")

    def header_lines(self):
        """[(name, value)] of the headers a delivery prepends, values folded
        (CRLF + TAB) to stay near 78 columns (RFC 5322 §2.2.3)."""
        status = self.header_value()
        head, _, tests = status.partition(" tests=")
        folded, line = [], ""
        for name in tests.split(","):
            if line and len(line) + len(name) > 60:
                folded.append(line + ",")
                line = ""
            line = f"{line},{name}" if line else name
        folded.append(line)
        lines = [("X-Spam-Status", f"{head}\r\n\ttests=" + "\r\n\t".join(folded)),
                 ("X-Spam-Score", f"{self.score:.1f}")]
        if self.authentication_results:
            lines.append(("Authentication-Results", self.authentication_results))
        return lines


#: The verdict used where no filter runs (authenticated local senders).
NOT_SCANNED = SpamVerdict(is_spam=False, score=0.0, required=0.0, hits=())


# --- folder names ---------------------------------------------------------------------

#: INBOX is case-insensitive (RFC 3501 §5.1) and always spelled like this
INBOX = "INBOX"
#: the hierarchy separator clients see: "Kvitton/Försäkring"
SEPARATOR = "/"
#: the longest folder name in modified UTF-7 (it becomes one directory name)
MAX_FOLDER_NAME_BYTES = 200
MAX_FOLDER_DEPTH = 16

_FORBIDDEN_IN_FOLDER = re.compile(r"[\x00-\x1f\x7f-\x9f*%.\\]")


def encode_mutf7(text):
    """IMAP modified UTF-7 (RFC 3501 §5.1.3) of ``text``."""
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=")
                       .replace("/", ",") + "-")
            pending.clear()

    for char in text:
        if "\x20" <= char <= "\x7e":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


_MUTF7_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mutf7(text):
    """Decode IMAP modified UTF-7; ValueError unless ``text`` is the canonical
    encoding of what it decodes to (so that names round-trip exactly)."""
    if any(not "\x20" <= c <= "\x7e" for c in text):
        raise ValueError("modified UTF-7 is printable ASCII")
    out = []
    pos = 0
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        m = _MUTF7_SHIFT.match(text, amp)
        if not m:
            raise ValueError("unterminated '&' shift")
        if not m.group(1):
            out.append("&")
        else:
            b64 = m.group(1).replace(",", "/")
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            out.append(raw.decode("utf-16-be"))
        pos = m.end()
    decoded = "".join(out)
    if encode_mutf7(decoded) != text:
        raise ValueError("not the canonical modified UTF-7 form")
    return decoded


def normalize_folder_name(name):
    """Check a folder name from a client and return its canonical form.

    Raises ValidationError (one line, saying what to change) for: empty
    names, a leading or trailing ``/``, an empty level (``A//B``), levels
    ``.``/``..`` or any ``.`` in a level, NUL and control characters,
    ``*`` and ``%`` (IMAP LIST wildcards), ``\\``, levels with leading or
    trailing spaces, more than MAX_FOLDER_DEPTH levels, or a name too long to be a
    directory.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError("The folder name is empty; give the folder a name.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("The folder name is not valid text.") from None
    if name.startswith(SEPARATOR) or name.endswith(SEPARATOR):
        raise ValidationError("A folder name cannot begin or end with '/'.")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_FOLDER_DEPTH:
        raise ValidationError(
            f"Folders can be nested at most {MAX_FOLDER_DEPTH} levels deep.")
    for part in parts:
        if not part:
            raise ValidationError("A folder name cannot contain '//' (an empty level).")
        bad = _FORBIDDEN_IN_FOLDER.search(part)
        if bad:
            char = bad.group()
            shown = repr(char) if char in ".*%\\" else "control characters"
            raise ValidationError(f"A folder name cannot contain {shown}; choose another name.")
        if part != part.strip():
            raise ValidationError("A folder name cannot begin or end with a space.")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    canonical = SEPARATOR.join(parts)
    if len(encode_mutf7(canonical)) > MAX_FOLDER_NAME_BYTES:
        raise ValidationError("The folder name is too long; choose a shorter one.")
    return canonical


def parent_names(name):
    """``A/B/C`` -> ``['A', 'A/B']``: the superior levels of a folder."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def is_below(name, ancestor):
    """Is ``name`` a subfolder (at any depth) of ``ancestor``?"""
    return name.startswith(ancestor + SEPARATOR)


# --- mail store values ----------------------------------------------------------------

#: IMAP system flags a message can carry (RFC 3501 §2.3.2); ``\Recent`` is
#: session state and is reported through ``MessageInfo.recent`` instead.
SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
SEEN = "\\Seen"
DELETED = "\\Deleted"

#: ``mode`` values of IMailStore.set_flags (IMAP +FLAGS, -FLAGS, FLAGS)
FLAGS_ADD = "add"
FLAGS_REMOVE = "remove"
FLAGS_REPLACE = "replace"


class MessageInfo(typing.NamedTuple):
    """What the index knows about one message of one folder; never opens the file.

    ``key`` is the Maildir base name (before ``:2,``): stable while the
    message stays in its folder, whatever its flags (POP3 UIDL uses it).
    ``flags`` holds system flags (``\\Seen`` ...) and keywords, never
    ``\\Recent``. ``size`` is the exact size of the stored (CRLF) file:
    RFC822.SIZE. ``internal_date`` is the IMAP INTERNALDATE, ``saved_at``
    when the message arrived in *this* folder (Spam expiry), both POSIX
    seconds. ``modseq`` is the RFC 7162 mod-sequence of its last change.

    A NamedTuple rather than an attrs class because a folder of 100,000
    messages builds 100,000 of them on every load (7 times cheaper); it is
    just as immutable. Use ``info._replace(...)`` to derive a changed one.
    """

    uid: int
    key: str
    flags: frozenset
    size: int
    internal_date: float
    saved_at: float
    modseq: int
    recent: bool = False

    @property
    def seen(self):
        return SEEN in self.flags

    @property
    def deleted(self):
        return DELETED in self.flags


@attrs.frozen
class FolderStatus:
    """The figures of RFC 3501 STATUS / SELECT (plus RFC 8438 SIZE, RFC
    7162 HIGHESTMODSEQ and RFC 9051 DELETED) of one folder."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    recent: int
    unseen: int
    size: int
    #: messages carrying \\Deleted (RFC 9051 §6.3.11 STATUS DELETED)
    deleted: int = 0


@attrs.frozen
class FolderInfo:
    """One folder in a listing. ``special_use`` is e.g. ``\\Junk`` or None;
    ``has_children`` tells whether some other folder is below it."""

    name: str
    subscribed: bool
    special_use: str | None = None
    has_children: bool = False


@attrs.frozen
class FolderSnapshot:
    """A folder as loaded: its status and every message ordered by UID."""

    status: FolderStatus
    messages: tuple


@attrs.frozen
class StoredMessage:
    """The result of adding one message (APPENDUID needs ``uidvalidity``)."""

    folder: str
    uidvalidity: int
    info: MessageInfo


@attrs.frozen
class FlagChanges:
    """The result of set_flags: ``changed`` are the new infos (new modseq) of
    the messages whose flags changed; ``modified`` the UIDs refused because
    their modseq was above UNCHANGEDSINCE (RFC 7162 §3.1.3);
    ``highestmodseq`` the folder's value afterwards."""

    changed: tuple
    modified: tuple
    highestmodseq: int


@attrs.frozen
class Expunged:
    """The result of expunging: the UIDs really removed (ascending) and the
    folder's highestmodseq afterwards."""

    uids: tuple
    highestmodseq: int


@attrs.frozen
class CopyResult:
    """The result of copy_messages / move_messages (RFC 4315 COPYUID).

    ``uid_map`` pairs (source UID, destination UID) in source order; UIDs
    that no longer existed are left out. ``added`` are the destination
    infos. For a move, ``source_highestmodseq`` is the source folder's
    value after the removal (None for a copy).
    """

    uidvalidity: int
    uid_map: tuple
    added: tuple
    source_highestmodseq: int | None = None


@attrs.frozen
class FolderChanges:
    """What changed in a folder after a given modseq: ``changed`` infos
    (new or re-flagged, ascending UID) and ``vanished`` UIDs (RFC 7162
    QRESYNC), with the folder's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ at
    the time of the answer (no message counts: this is asked often, and
    counting a big folder is not free).

    ``vanished_floor``: tombstones of removals up to this modseq were
    pruned; ``vanished`` is complete only when asked for changes after a
    modseq at or above it (below it, a caller must compare UID lists)."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    changed: tuple
    vanished: tuple
    vanished_floor: int = 0


@attrs.frozen
class MailUsage:
    """Quota usage of a mailbox: all folders together."""

    bytes: int
    messages: int


# --- the outbound queue (SPEC §5) -------------------------------------------------

#: states of one recipient of a queued message
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@attrs.frozen
class QueuedRecipient:
    """One recipient of a queued message and how its delivery stands."""

    address: str
    state: str = PENDING
    attempts: int = 0
    #: POSIX time of the next attempt (pending only)
    next_attempt: float = 0.0
    #: the last reply or connection error, e.g. "451 4.3.0 Try again later"
    last_error: str = ""
    #: the final reply (250 ... when delivered, 5xx ... when failed)
    reply: str = ""
    #: the host that gave ``reply`` / ``last_error`` ('' if none answered)
    remote_mta: str = ""
    #: a failure has been reported to the sender (DSN queued)
    reported: bool = False

    @property
    def final(self):
        return self.state != PENDING


@attrs.frozen
class QueueEntry:
    """One queued message: its envelope and the state of every recipient.

    The message bytes live beside it in the queue store; ``dkim_header`` is
    prepended to them when the message is sent.
    """

    id: str
    sender: str
    recipients: tuple
    created: float
    size: int
    dkim_header: bytes = b""
    #: the message has bytes above 127 (BODY=8BITMIME, RFC 6152)
    eight_bit: bool = False
    #: the "still trying" notice went to the sender
    delay_notified: bool = False
    #: failure DSNs queued so far (they number the DSNs' queue ids)
    dsn_count: int = 0

    def recipient(self, address):
        for r in self.recipients:
            if r.address == address:
                return r
        raise KeyError(address)

    def replace_recipient(self, updated):
        return attrs.evolve(self, recipients=tuple(
            updated if r.address == updated.address else r for r in self.recipients))

    @property
    def pending(self):
        return tuple(r for r in self.recipients if r.state == PENDING)

    @property
    def unreported_failures(self):
        return tuple(r for r in self.recipients if r.state == FAILED and not r.reported)

    @property
    def next_attempt(self):
        """When this entry next needs work (None: nothing pending)."""
        times = [r.next_attempt for r in self.pending]
        return min(times) if times else None
