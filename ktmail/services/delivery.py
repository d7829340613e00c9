"""Accepting one message for local mailboxes (INTERFACES.md, "Delivery").

Owns: the spool (``<data_dir>/spool``, the same file system as the
Maildirs) where SMTP, webmail and the outbound queue write a message as it
arrives; the recipient check at RCPT time; and the delivery itself: per
recipient a spam verdict, INBOX or Spam, the ``Return-Path:`` and
``X-Spam-*`` header lines put in front, the quota and size limits, and one
durable copy per recipient.

Invariants:
- ``deliver`` stores each recipient's copy all-or-nothing and fires only
  after every stored copy is on disk (file and directory fsynced, index
  committed); a recipient's failure is reported as its KtmailError and does
  not affect the others;
- a failed spam scan never loses mail: the message goes to INBOX unscored;
- nothing here parses or rewrites the message: the header lines are a
  prefix handed to the store;
- spool files of a previous run are removed at start (``clean_spool``), not
  by ``ktmail-admin`` (it may run beside the daemon).
"""

import io
import itertools
import os
import secrets

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import INBOX, SPAM_FOLDER
from ktmail.services import deferred, events
from ktmail.store.files import pid_alive

log = Logger()

SPOOL_BUFFER = 64 * 1024
#: spool files this old are removed at start even if their process might live
STALE_SPOOL_SECONDS = 24 * 3600


@attrs.frozen
class Envelope:
    sender: str                  # reverse-path without <>, '' for the null sender
    recipients: tuple            # of model.Address
    client_address: str = ""     # IP of the SMTP client ('' for local sources)
    client_helo: str = ""
    authenticated: object = None  # model.Mailbox for submission/webmail, else None
    tls: str | None = None       # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384" when used
    protocol: str = "ESMTP"      # RFC 3848 with-type for Received: ESMTP, ESMTPS, ESMTPSA, ...
    received_at: float = 0.0     # clock.seconds() when the transaction ended


class Spool:
    """One message being received: a file under ``<data_dir>/spool``.

    ``write`` appends through a 64 KiB buffer (cheap enough for the reactor
    thread); ``finish`` flushes and fsyncs it on a worker thread, after
    which the file at ``path`` is complete and readable; ``discard``
    removes it (idempotent, also after ``finish``).
    """

    def __init__(self, path, run_in_thread):
        self.path = path
        #: bytes written so far
        self.size = 0
        self._run = run_in_thread
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = open(fd, "wb", buffering=SPOOL_BUFFER)  # noqa: SIM115 (closed by finish/discard)
        self.finished = False
        self.discarded = False

    def __repr__(self):
        return f"<Spool {os.path.basename(self.path)} {self.size} bytes>"

    def write(self, data):
        if self.finished or self.discarded:
            raise ValueError("write to a finished or discarded spool")
        self._file.write(data)
        self.size += len(data)

    def finish(self):
        """-> Deferred[None], fired when the file is complete and fsynced."""
        if self.discarded:
            return defer.fail(ValueError("finish of a discarded spool"))
        if self.finished:
            return defer.succeed(None)
        self.finished = True
        f, self._file = self._file, None

        def flush_and_sync():
            try:
                f.flush()
                os.fsync(f.fileno())
            finally:
                f.close()
        return self._run(flush_and_sync)

    def discard(self):
        if self.discarded:
            return
        self.discarded = True
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


#: Role addresses every mail domain must accept (RFC 5321 §4.5.1, RFC 2142 §2)
ROLE_ADDRESSES = ("postmaster", "abuse")

#: The size limit applies to the message as its sender sent it; the trace
#: fields our side puts in front of it (Received:, and Message-ID:/Date:
#: that submission adds) may take it this far beyond.
TRACE_ALLOWANCE = 8192


# --- header lines --------------------------------------------------------------------------


def _header_text(value):
    """A header value with no line breaks or other control characters."""
    return "".join(c for c in value if c >= " " and c != "\x7f")


def return_path_line(sender):
    """``Return-Path: <sender>`` (RFC 5321 §4.4), ``<>`` for the null sender."""
    return f"Return-Path: <{_header_text(sender)}>\r\n".encode("utf-8", "replace")


def spam_header_lines(verdict):
    """The ``X-Spam-Status:`` and ``X-Spam-Score:`` lines of a verdict."""
    lines = verdict.header_lines()
    return b"".join(f"{name}: {value}\r\n".encode("utf-8", "replace")
                    for name, value in lines)


# --- the service ---------------------------------------------------------------------------


@attrs.define
class DeliveryService:
    """Accept messages for local mailboxes (INTERFACES.md, "Delivery").

    Collaborators: ``accounts`` (IAccountStore: get_mailbox_by_address),
    ``mailboxes`` (MailboxService: every store goes through it, so open
    IMAP/POP3/web sessions see deliveries at once), ``spam`` (SpamFilter:
    scan), ``limits`` (config.Limits), ``domains`` (hosted domains),
    ``clock`` (IReactorTime), ``spool_dir``, ``run_in_thread``,
    ``postmaster`` (config.postmaster).
    """

    accounts: object
    mailboxes: object
    spam: object
    limits: object
    domains: tuple
    clock: object
    spool_dir: str
    run_in_thread: object
    #: model.Address of the mailbox that receives postmaster@ and abuse@ of
    #: every hosted domain that has no mailbox of that name, or None
    postmaster: object = None
    _counter: object = attrs.field(factory=itertools.count, init=False)

    def __attrs_post_init__(self):
        os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)

    # --- spools ---

    def new_spool(self):
        """-> a new, empty Spool (its file exists already)."""
        name = f"{int(self.clock.seconds())}.P{os.getpid()}Q{next(self._counter)}" \
               f"R{secrets.token_hex(6)}"
        return Spool(os.path.join(self.spool_dir, name), self.run_in_thread)

    def _clean_spool(self, now):
        removed = 0
        for entry in os.scandir(self.spool_dir):
            try:
                pid = int(entry.name.split(".P", 1)[1].split("Q", 1)[0])
            except (IndexError, ValueError):
                pid = None
            try:
                old = entry.stat().st_mtime < now - STALE_SPOOL_SECONDS
            except FileNotFoundError:
                continue
            if old or pid is None or (pid != os.getpid() and not pid_alive(pid)):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass
        return removed

    def clean_spool(self):
        """Remove spool files left by an earlier run (crash or kill). Called
        by the daemon at start. -> Deferred[int] removed."""
        return self.run_in_thread(self._clean_spool, self.clock.seconds())

    # --- recipients ---

    @deferred
    async def check_recipient(self, address):
        """RCPT time: -> the Mailbox of ``address`` (model.Address).
        RelayDenied (not a hosted domain), NoSuchMailbox, QuotaExceeded
        (the mailbox is already full)."""
        mailbox = await self._mailbox(address)
        quota = await self.mailboxes.quota(mailbox)
        if quota.used_bytes >= quota.limit_bytes:
            raise errors.QuotaExceeded(f"The mailbox {address} is full.")
        return mailbox

    async def _mailbox(self, address):
        if address.domain not in self.domains:
            raise errors.RelayDenied()
        try:
            return await self.accounts.get_mailbox_by_address(address)
        except errors.NoSuchMailbox:
            if self.postmaster is not None and address.local in ROLE_ADDRESSES:
                return await self.accounts.get_mailbox_by_address(self.postmaster)
            raise errors.NoSuchMailbox(f"There is no mailbox {address} here.") from None

    # --- delivery ---

    @deferred
    async def deliver(self, envelope, spool, scan_spam=True):
        """Store the finished ``spool`` for every recipient of ``envelope``.
        -> {Address: None (stored and durable) | KtmailError}. Recipients are
        delivered in parallel; each is all-or-nothing."""
        if not spool.finished:
            await spool.finish()
        recipients = list(dict.fromkeys(envelope.recipients))
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self._deliver_one(envelope, spool, r, scan_spam))
             for r in recipients], consumeErrors=True)
        outcome = {}
        for recipient, (ok, value) in zip(recipients, results, strict=True):
            if ok:
                outcome[recipient] = None
            elif value.check(errors.KtmailError):
                outcome[recipient] = value.value
            else:
                log.failure("delivery to {rcpt} failed", value, rcpt=str(recipient))
                outcome[recipient] = errors.StoreUnavailable()
        return outcome

    @property
    def _size_limit(self):
        return self.limits.max_message_bytes + TRACE_ALLOWANCE

    async def _deliver_one(self, envelope, spool, recipient, scan_spam):
        mailbox = await self._mailbox(recipient)
        if spool.size > self._size_limit:
            raise errors.TooBig()
        prefix = return_path_line(envelope.sender)
        folder = INBOX
        verdict = None
        if scan_spam:
            verdict = await self._scan(spool, envelope, mailbox)
            if verdict is not None:
                prefix += spam_header_lines(verdict)
                if verdict.is_spam:
                    folder = SPAM_FOLDER
        try:
            stored = await self.mailboxes.append(mailbox, folder, spool.path, prefix=prefix,
                                                 size_limit=self._size_limit)
        except errors.NoSuchFolder:
            if folder == INBOX:
                raise
            # Spam removed by another tool: the message still reaches the user
            stored = await self.mailboxes.append(mailbox, INBOX, spool.path, prefix=prefix,
                                                 size_limit=self._size_limit)
        log.info("delivered {size} bytes from <{sender}> to {rcpt} {folder} UID {uid}",
                 ktmail_event=events.DELIVERY, channel="inbound" if scan_spam else "local",
                 mailbox=mailbox.username, size=stored.info.size, sender=envelope.sender,
                 rcpt=str(recipient), folder=stored.folder, uid=stored.info.uid,
                 verdict="unscored" if verdict is None else (
                     "spam" if verdict.is_spam else "ham"),
                 score=None if verdict is None else verdict.score)
        return stored

    async def _scan(self, spool, envelope, mailbox):
        try:
            return await self.spam.scan(spool.path, envelope, mailbox)
        except Exception:
            log.failure("spam scan of {spool} failed; delivering unscored", spool=spool)
            return None

    @deferred
    async def deliver_local(self, recipient, message_file, sender=""):
        """Store a message from a binary file object for one local recipient,
        without spam scanning (DSNs from the outbound queue: null sender).
        -> model.StoredMessage. RelayDenied, NoSuchMailbox, QuotaExceeded, TooBig."""
        mailbox = await self._mailbox(recipient)
        return await self.mailboxes.append(mailbox, INBOX, message_file,
                                           prefix=return_path_line(sender),
                                           size_limit=self._size_limit)

    @deferred
    async def deliver_notice(self, mailbox, message_bytes):
        """Put a service notice (e.g. the inactivity warning) into the INBOX
        of ``mailbox``, even when it is over quota. -> model.StoredMessage."""
        return await self.mailboxes.append(mailbox, INBOX, io.BytesIO(message_bytes),
                                           prefix=return_path_line(""), enforce_quota=False)
