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
