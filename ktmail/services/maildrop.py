"""POP3 maildrops (RFC 1939): what one POP3 session sees of a mailbox, and
what it may change.

Owns: the per-mailbox POP3 lock (in this process: one POP3 session per
mailbox at a time, RFC 1939 §8), a session's snapshot of INBOX (message
numbers, sizes, unique-ids), its deletion marks, the ``\\Seen`` marks of
what it retrieved, and the UPDATE state (RFC 1939 §6) that applies the
deletions. POP3 sees INBOX only (SPEC §1).

Invariants:
- the numbering is fixed at login: message n is the n-th INBOX message by
  UID at that moment; messages delivered or expunged meanwhile by others
  change neither the numbers, the sizes nor the unique-ids of an open
  session (a message gone meanwhile cannot be opened: NoSuchMessage);
- a unique-id (UIDL) is a pure function of the Maildir key, the file name
  before ``:2,`` (``uidl_for_key``), so it survives flag changes, restarts
  and index rebuilds, and never comes from a sequence number or a UID;
- DELE only marks; ``commit()`` removes exactly the marked messages that
  still exist, and only those (matched by Maildir key when the folder's
  UIDVALIDITY changed meanwhile, so that renumbered UIDs can never make it
  remove another message); ``close()`` without ``commit()`` removes
  nothing;
- a message sent whole by RETR is marked ``\\Seen`` (as Dovecot does, so
  webmail and IMAP show it read); the marks are coalesced into few store
  calls and are all applied before ``commit()`` expunges;
- the lock is taken before the snapshot is loaded and released exactly
  once, by ``commit()`` (before its Deferred fires, so that a client that
  reconnects at once after QUIT is let in) or by ``close()``.
"""

import hashlib
import re

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import FLAGS_ADD, INBOX, SEEN
from ktmail.services import deferred

log = Logger()

# RFC 1939 §7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_PLAIN_UIDL = re.compile(r"[\x21-\x7e]{1,70}\Z")


def uidl_for_key(key):
    """The POP3 unique-id of the message whose Maildir key is ``key``.

    ktmail's own keys (``<secs>.M<usec>P<pid>Q<n>R<rand>.<host>,S=<size>``)
    are used as they are when they fit RFC 1939 §7; longer keys (a long
    host name) and keys with other characters (files from other tools) are
    replaced by the hex SHA-256 of the key, which cannot be mistaken for a
    key (keys of indexed files always carry ``,S=``)."""
    if _PLAIN_UIDL.match(key):
        return key
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@attrs.define
class StoreInbox:
    """The INBOX operations a maildrop needs, straight over an IMailStore.

    ``load(mailbox_id)`` -> FolderSnapshot, ``status(mailbox_id)`` ->
    FolderStatus, ``open_message(mailbox_id, uid)`` -> binary file,
    ``add_seen(mailbox_id, uids)``, ``expunge(mailbox_id, uids)`` ->
    Expunged; all Deferreds. A shared live-folder service that tells open
    IMAP sessions about flag changes and expunges offers the same five
    methods (``services.mailboxes``)."""

    store: object  # IMailStore

    def load(self, mailbox_id):
        return self.store.open_folder(mailbox_id, INBOX)

    def status(self, mailbox_id):
        return self.store.folder_status(mailbox_id, INBOX)

    def open_message(self, mailbox_id, uid):
        return self.store.open_message(mailbox_id, INBOX, uid)

    def add_seen(self, mailbox_id, uids):
        return self.store.set_flags(mailbox_id, INBOX, uids, {SEEN}, FLAGS_ADD)

    def expunge(self, mailbox_id, uids):
        return self.store.expunge(mailbox_id, INBOX, uids)


@attrs.define
class MaildropService:
    """Opens maildrops and holds the per-mailbox POP3 lock (one per daemon)."""

    inbox: object  # StoreInbox or the mailboxes service's INBOX view
    #: mailbox id -> the Maildrop holding its lock (None while it loads)
    _holders: dict = attrs.field(factory=dict, init=False)

    def in_use(self, mailbox_id):
        return mailbox_id in self._holders

    @deferred
    async def open(self, mailbox):
        """Lock the mailbox and load its INBOX -> Maildrop.

        Raises MailboxInUse when another POP3 session holds it (RFC 2449
        §8.1.1 [IN-USE])."""
        if mailbox.id in self._holders:
            raise errors.MailboxInUse()
        # taken before the first await: two logins racing cannot both load
        self._holders[mailbox.id] = None
        try:
            snapshot = await self.inbox.load(mailbox.id)
        except BaseException:
            del self._holders[mailbox.id]
            raise
        drop = Maildrop(self, mailbox, snapshot.status.uidvalidity, snapshot.messages)
        self._holders[mailbox.id] = drop
        return drop

    def _release(self, drop):
        if self._holders.get(drop.mailbox.id) is drop:
            del self._holders[drop.mailbox.id]


class Maildrop:
    """One POP3 session's view of INBOX; message numbers start at 1.

    Numbers outside the snapshot or marked deleted raise NoSuchMessage
    (with a text that says which), as RFC 1939 §5 wants for every command
    that takes a message number."""

    def __init__(self, service, mailbox, uidvalidity, messages):
        self._service = service
        self.mailbox = mailbox
        self._uidvalidity = uidvalidity
        #: MessageInfo per message number - 1, ascending UID
        self._messages = tuple(messages)
        self._deleted = set()
        self._seen_sent = set()
        self._seen_queue = []
        self._seen_chain = defer.succeed(None)
        self._seen_flush_planned = False
        self.open = True

    # --- the listing (RFC 1939 §5: deleted messages are not counted) ---

    def __len__(self):
        return len(self._messages)

    def stat(self):
        """-> (messages, octets) of the messages not marked deleted."""
        count = octets = 0
        for number, info in enumerate(self._messages, 1):
            if number not in self._deleted:
                count += 1
                octets += info.size
        return count, octets

    def listing(self):
        """-> [(number, size)] of the messages not marked deleted."""
        return [(number, info.size) for number, info in enumerate(self._messages, 1)
                if number not in self._deleted]

    def unique_ids(self):
        """-> [(number, uidl)] of the messages not marked deleted."""
        return [(number, uidl_for_key(info.key))
                for number, info in enumerate(self._messages, 1)
                if number not in self._deleted]

    def size(self, number):
        return self._message(number).size

    def unique_id(self, number):
        return uidl_for_key(self._message(number).key)

    def _message(self, number):
        if not 1 <= number <= len(self._messages):
            raise errors.NoSuchMessage(f"There is no message {number}.")
        if number in self._deleted:
            raise errors.NoSuchMessage(f"Message {number} is already deleted.")
        return self._messages[number - 1]

    # --- marks ---

    def delete(self, number):
        """Mark message ``number`` deleted (RFC 1939 §5 DELE)."""
        self._message(number)
        self._deleted.add(number)

    def reset(self):
        """Unmark every deleted message (RFC 1939 §5 RSET)."""
        self._deleted.clear()

    # --- content ---

    @deferred
    async def open_message(self, number):
        """-> an open binary file of message ``number`` (the caller closes
        it). NoSuchMessage if it was removed meanwhile by another session."""
        info = self._message(number)
        try:
            return await self._service.inbox.open_message(self.mailbox.id, info.uid)
        except errors.NoSuchMessage:
            raise errors.NoSuchMessage(
                f"Message {number} was removed from the mailbox by another session.")

    def retrieved(self, number):
        """Message ``number`` was sent whole (RETR): mark it ``\\Seen``.
        The store calls are coalesced; failures are logged, not raised."""
        info = self._messages[number - 1]
        if info.seen or info.uid in self._seen_sent:
            return
        self._seen_sent.add(info.uid)
        self._seen_queue.append(info.uid)
        if not self._seen_flush_planned:
            self._seen_flush_planned = True
            self._seen_chain.addCallback(lambda _: self._flush_seen())

    def _flush_seen(self):
        uids, self._seen_queue = self._seen_queue, []
        self._seen_flush_planned = False
        d = self._service.inbox.add_seen(self.mailbox.id, uids)
        d.addErrback(lambda f: log.failure("marking {n} POP3-retrieved messages \\Seen in "
                                           "mailbox {id} failed", f, n=len(uids),
                                           id=self.mailbox.id))
        d.addCallback(lambda _: None)
        return d

    def _seen_settled(self):
        done = defer.Deferred()

        def fire(result):
            done.callback(None)
            return result
        self._seen_chain.addBoth(fire)
        return done

    # --- the end of the session ---

    @deferred
    async def commit(self):
        """The UPDATE state (RFC 1939 §6): remove the marked messages, then
        release the lock. -> the number of messages removed."""
        try:
            await self._seen_settled()
            marked = [self._messages[n - 1] for n in sorted(self._deleted)]
            if not marked:
                return 0
            inbox, mailbox_id = self._service.inbox, self.mailbox.id
            status = await inbox.status(mailbox_id)
            if status.uidvalidity == self._uidvalidity:
                uids = [info.uid for info in marked]
            else:
                # the index was rebuilt meanwhile: UIDs changed, keys did not
                keys = {info.key for info in marked}
                current = await inbox.load(mailbox_id)
                uids = [info.uid for info in current.messages if info.key in keys]
            expunged = await inbox.expunge(mailbox_id, uids)
            return len(expunged.uids)
        finally:
            self.close()

    def close(self):
        """End the session without removing anything; idempotent."""
        if self.open:
            self.open = False
            self._service._release(self)
