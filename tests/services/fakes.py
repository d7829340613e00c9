"""Small fakes shared by the service tests."""

from twisted.internet import defer
from zope.interface import implementer

from ktmail.services.auth import PasswordHasher
from ktmail.store import IMailStore


def inline(fn, *args):
    """A run_in_thread that runs at once (deterministic tests)."""
    return defer.maybeDeferred(fn, *args)


def fast_hasher():
    return PasswordHasher(run_in_thread=inline)


@implementer(IMailStore)
class RecordingMailStore:
    """Remembers which mailboxes exist; fails creation when told to."""

    def __init__(self):
        self.mailboxes = set()
        self.fail_create = False

    def create_mailbox(self, mailbox_id):
        if self.fail_create:
            return defer.fail(OSError("disk full"))
        self.mailboxes.add(mailbox_id)
        return defer.succeed(None)

    def remove_mailbox(self, mailbox_id):
        self.mailboxes.discard(mailbox_id)
        return defer.succeed(None)

    def usage(self, mailbox_id):
        return defer.succeed(0)
