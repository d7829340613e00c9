"""Small fakes shared by the service tests."""

import attrs
from twisted.internet import defer
from zope.interface import implementer

from ktmail.model import RuleHit, SpamVerdict
from ktmail.services.auth import PasswordHasher
from ktmail.store import IMailStore

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


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


def _contains_gtube(path):
    with open(path, "rb") as f:
        tail = b""
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if GTUBE in tail + chunk:
                return True
            tail = chunk[-len(GTUBE):]
    return False


@attrs.define
class GtubeSpamFilter:
    """A stand-in for services.spam.SpamFilter: the GTUBE string scores 1000
    (spam), anything else 0 (ham).
    ``train`` and ``forget_mailbox`` do nothing."""

    run_in_thread: object
    required: float = 5.0

    def scan(self, path, envelope, mailbox):
        def verdict(is_gtube):
            if is_gtube:
                return SpamVerdict(is_spam=True, score=1000.0, required=self.required,
                                   hits=(RuleHit("GTUBE", 1000.0,
                                                 "Generic Test for Unsolicited Bulk Email"),))
            return SpamVerdict(is_spam=False, score=0.0, required=self.required)
        return self.run_in_thread(_contains_gtube, path).addCallback(verdict)

    def train(self, mailbox, path, is_spam):
        return defer.succeed(None)

    def forget_mailbox(self, mailbox):
        return defer.succeed(None)
