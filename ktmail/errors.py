"""The one error vocabulary of ktmail.

Services raise these; each surface (SMTP, IMAP, POP3, HTTP, the CLI) maps
them to its wire format in exactly one place. ``text`` is safe to show a
client: one line, saying what went wrong and what to do. ``temporary`` tells
whether the same request may succeed later (SMTP 4xx vs 5xx). Anything that
is not a ``KtmailError`` is a bug: surfaces answer with a generic error and
log the detail.
"""


class KtmailError(Exception):
    """Base of every expected, client-visible failure."""

    temporary = False
    default_text = "The request could not be completed."

    def __init__(self, text=None, *, field=None):
        self.text = text or self.default_text
        #: the form field or argument the error is about (portal, CLI)
        self.field = field
        super().__init__(self.text)


class ValidationError(KtmailError):
    default_text = "The value is not valid."


class AuthFailed(KtmailError):
    default_text = "Wrong username or password."


class LoginThrottled(KtmailError):
    temporary = True
    default_text = "Too many failed logins from your address; wait a few minutes and try again."

    def __init__(self, text=None, *, retry_after=None, field=None):
        super().__init__(text, field=field)
        #: seconds until a new attempt may be accepted
        self.retry_after = retry_after


class NotFound(KtmailError):
    default_text = "No such object."


class NoSuchCustomer(NotFound):
    default_text = "No such customer."


class NoSuchMailbox(NotFound):
    default_text = "No such mailbox."


class NoSuchFolder(NotFound):
    default_text = "No such folder."


class NoSuchMessage(NotFound):
    default_text = "No such message."


class AlreadyExists(KtmailError):
    default_text = "That name is already taken; choose another."


class LimitReached(KtmailError):
    default_text = "The limit has been reached."


class FolderProtected(KtmailError):
    default_text = "This folder is needed by the service and cannot be removed or renamed."


class MailboxInUse(KtmailError):
    """Another session holds the mailbox exclusively (POP3's maildrop lock,
    RFC 1939 §8)."""

    temporary = True
    default_text = ("The mailbox is open in another POP3 session; "
                    "try again when that session has ended.")


class QuotaExceeded(KtmailError):
    default_text = "The mailbox is full; delete some mail and try again."


class TooBig(KtmailError):
    default_text = "The message is larger than the 50 MiB limit."


class RateLimited(KtmailError):
    temporary = True
    default_text = "Sending limit reached; try again later."

    def __init__(self, text=None, *, retry_at=None, field=None):
        super().__init__(text, field=field)
        #: POSIX time at which the request would be accepted again
        self.retry_at = retry_at


class SenderRejected(KtmailError):
    default_text = "You may send only as your own address."


class RelayDenied(KtmailError):
    default_text = "Relaying denied: this server accepts mail only for its own domains."


class OutboundUnavailable(KtmailError):
    """Mail for other domains cannot be queued (no outbound queue running)."""

    temporary = True
    default_text = "Mail to other domains cannot be accepted right now; try again later."


class StoreUnavailable(KtmailError):
    temporary = True
    default_text = "The mail store is temporarily unavailable; try again in a few minutes."
