"""POP3 maildrops (RFC 1939): what one POP3 session sees of a mailbox, and
what it may change.

Owns: the per-mailbox POP3 lock (in this process: one POP3 session per
mailbox at a time, RFC 1939 §8), a session's snapshot of INBOX (message
numbers, sizes, unique-ids), its deletion marks, the ``\\Seen`` marks of
what it retrieved, and the UPDATE state (RFC 1939 §6) that applies the
deletions. POP3 sees INBOX only (SPEC §1). It works on the shared live
INBOX of ``services.mailboxes``, so that the ``\\Seen`` flags it sets and
the messages it removes reach IMAP sessions (IDLE ones too) and webmail at
once; it does not listen to that folder: its snapshot stays as it was.

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
  webmail and IMAP show it read), in one store call when the session
  ends, with QUIT or without (deletions only with QUIT);
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
class MaildropService:
    """Opens maildrops and holds the per-mailbox POP3 lock (one per daemon).

    ``mailboxes`` is the services.mailboxes.MailboxService: a maildrop uses
    the shared live INBOX, so that its ``\\Seen`` marks and its removals
    reach IMAP sessions (IDLE ones too) and webmail at once."""

    mailboxes: object
    #: mailbox id -> the Maildrop holding its lock (None while it loads)
    _holders: dict = attrs.field(factory=dict, init=False)

    def in_use(self, mailbox_id):
        return mailbox_id in self._holders

    @deferred
    async def open(self, mailbox):
        """Lock the mailbox and take the snapshot of its INBOX -> Maildrop.

        Raises MailboxInUse when another POP3 session holds it (RFC 2449
        §8.1.1 [IN-USE])."""
        if mailbox.id in self._holders:
            raise errors.MailboxInUse()
        # taken before the first await: two logins racing cannot both load
        self._holders[mailbox.id] = None
        try:
            folder = await self.mailboxes.open_folder(mailbox, INBOX)
        except BaseException:
            del self._holders[mailbox.id]
            raise
        drop = Maildrop(self, mailbox, folder)
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

    def __init__(self, service, mailbox, folder):
        self._service = service
        self.mailbox = mailbox
        #: the shared live INBOX (services.mailboxes.LiveFolder), held until close
        self._folder = folder
        self._uidvalidity = folder.uidvalidity
        #: MessageInfo per message number - 1, ascending UID
        self._messages = tuple(folder.infos())
        self._deleted = set()
        #: key -> UID in a live INBOX re-opened under another UIDVALIDITY
        self._uid_by_key = None
        #: numbers of messages sent whole by RETR, not \\Seen at login
        self._retrieved = set()
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

    # --- the snapshot's messages in the live INBOX ---

    async def _current_uids(self, infos, verify=False):
        """-> (live folder, [UID now]) of snapshot messages still in INBOX.

        UIDs are kept while UIDVALIDITY stays the same (RFC 3501 §2.3.1.1),
        so the snapshot's UIDs are used as they are; when the live folder
        was closed because UIDVALIDITY changed (the index was rebuilt), the
        INBOX is opened again and the messages are found by Maildir key.
        ``verify`` first asks the store whether that happened (QUIT does,
        before it removes anything)."""
        if verify and not self._folder.closed:
            await self._folder.refresh()
        if self._folder.closed:
            stale = self._folder
            self._folder = await self._service.mailboxes.open_folder(self.mailbox, INBOX)
            stale.release()
            self._uid_by_key = None
        folder = self._folder
        if folder.uidvalidity == self._uidvalidity:
            return folder, [info.uid for info in infos]
        if self._uid_by_key is None:
            self._uid_by_key = {info.key: info.uid for info in folder.infos()}
        found = (self._uid_by_key.get(info.key) for info in infos)
        return folder, [uid for uid in found if uid is not None]

    # --- content ---

    @deferred
    async def open_message(self, number):
        """-> an open binary file of message ``number`` (the caller closes
        it). NoSuchMessage if it was removed meanwhile by another session."""
        info = self._message(number)
        gone = errors.NoSuchMessage(
            f"Message {number} was removed from the mailbox by another session.")
        folder, uids = await self._current_uids([info])
        if not uids:
            raise gone
        try:
            return await folder.open_message(uids[0])
        except errors.NoSuchMessage:
            raise gone from None

    def retrieved(self, number):
        """Message ``number`` was sent whole (RETR): it is to be marked
        ``\\Seen``. Like Dovecot, the marks are kept here and applied in one
        store call when the session ends (QUIT or not): one fsync per
        session rather than one per message."""
        info = self._messages[number - 1]
        if not info.seen:
            self._retrieved.add(number)

    async def _mark_seen(self, skip=frozenset()):
        """Apply the \\Seen marks of the retrieved messages (but not of
        those in ``skip``: about to be removed); a failure is logged, not
        raised (it costs the client nothing)."""
        numbers = sorted(self._retrieved - skip)
        self._retrieved.clear()
        if not numbers:
            return
        try:
            folder, uids = await self._current_uids([self._messages[n - 1] for n in numbers])
            if uids:
                await folder.set_flags(uids, {SEEN}, FLAGS_ADD)
        except (errors.NoSuchMailbox, errors.NoSuchFolder):
            pass              # the mailbox was removed meanwhile
        except Exception:  # noqa: BLE001 - a courtesy: logged, never fails the session
            log.failure("marking {n} messages retrieved over POP3 \\Seen in mailbox {id} "
                        "failed", n=len(numbers), id=self.mailbox.id)

    # --- the end of the session ---

    @deferred
    async def commit(self):
        """The UPDATE state (RFC 1939 §6): mark the retrieved messages
        ``\\Seen``, remove the marked ones through the live INBOX (IMAP
        sessions get EXPUNGE), then release the lock. -> the number of
        messages removed."""
        try:
            await self._mark_seen(skip=self._deleted)
            marked = [self._messages[n - 1] for n in sorted(self._deleted)]
            if not marked:
                return 0
            try:
                folder, uids = await self._current_uids(marked, verify=True)
            except (errors.NoSuchMailbox, errors.NoSuchFolder):
                return 0      # the mailbox was removed meanwhile: nothing is left
            if not uids:
                return 0
            expunged = await folder.expunge(uids, reason="pop3")
            return len(expunged.uids)
        finally:
            self.close()

    def close(self):
        """End the session: release the lock at once. Without a commit()
        (a dropped connection, an idle timeout) nothing is removed; the
        ``\\Seen`` marks of what was retrieved are still applied, in the
        background. Idempotent."""
        if not self.open:
            return
        self.open = False
        self._service._release(self)
        if self._retrieved:
            d = defer.Deferred.fromCoroutine(self._mark_seen())
            d.addBoth(lambda _: self._folder.release())
        else:
            self._folder.release()
