"""Frozen value types shared by every layer.

Nothing here does I/O. Parsing functions raise ``ktmail.errors.ValidationError``
with a one-line text a person can act on.
"""

import re

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

    def header_value(self):
        """The value of ``X-Spam-Status:`` (SpamAssassin's layout)."""
        tests = ",".join(h.name for h in self.hits) or "none"
        return (f"{'Yes' if self.is_spam else 'No'}, score={self.score:.1f} "
                f"required={self.required:.1f} tests={tests}")


#: The verdict used where no filter runs (authenticated local senders).
NOT_SCANNED = SpamVerdict(is_spam=False, score=0.0, required=0.0, hits=())


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


@attrs.frozen(slots=True, weakref_slot=False)
class MessageInfo:
    """What the index knows about one message of one folder; never opens the file.

    ``key`` is the Maildir base name (before ``:2,``): stable while the
    message stays in its folder, whatever its flags (POP3 UIDL uses it).
    ``flags`` holds system flags (``\\Seen`` ...) and keywords, never
    ``\\Recent``. ``size`` is the exact size of the stored (CRLF) file:
    RFC822.SIZE. ``internal_date`` is the IMAP INTERNALDATE, ``saved_at``
    when the message arrived in *this* folder (Spam expiry), both POSIX
    seconds. ``modseq`` is the RFC 7162 mod-sequence of its last change.
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
    """The figures of RFC 3501 STATUS / SELECT (plus RFC 8438 SIZE and
    RFC 7162 HIGHESTMODSEQ) of one folder."""

    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    recent: int
    unseen: int
    size: int


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
    QRESYNC), with the status at the time of the answer."""

    status: FolderStatus
    changed: tuple
    vanished: tuple


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
