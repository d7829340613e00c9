"""Submission policy: what an authenticated mailbox may send (SPEC §1, §4).

Owns the rules every sending surface (SMTP submission, webmail) shares:

- the sender check: the envelope sender and the ``From:`` header must both
  be the mailbox's own address;
- the rolling-hour recipient limit per mailbox and channel ("smtp" and
  "webmail", from ``config.Limits``), counted in the ICounterStore under
  ``sent-<channel>:<mailbox id>``, so that it survives restarts;
- the ``Message-ID:`` and ``Date:`` fields a message lacks;
- the split of an accepted message between local delivery (no spam scan:
  the sender is one of ours and authenticated) and the outbound queue.

Invariants: recipients are counted when their message is handed over
(``submit``), so a refused message (wrong From:, too big) costs the user
nothing; ``reserve_recipient`` only looks, which lets the protocol refuse
the recipient that would exceed the limit at RCPT time. ``submit`` takes
the whole count atomically (``SlidingWindowLimiter.take`` serialises per
key), so concurrent sessions of one mailbox never exceed the limit. Mail
for other domains is never accepted when no outbound queue runs
(``OutboundUnavailable``, temporary): refused, never dropped.

Missing ``Message-ID:``/``Date:``: a streaming caller (SMTP) collects the
header block before writing the spool and writes ``missing_headers()``
right after its ``Received:`` line, so a 50 MiB message is never copied to
add two lines; ``submit`` does not rewrite the spool. Callers that build
the message themselves (webmail) write both fields when composing.
"""

import datetime
import email.parser
import email.policy
import email.utils
import re
import time
import uuid

import attrs
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import Address
from ktmail.services import deferred, events
from ktmail.services.ratelimit import SlidingWindowLimiter, Window

log = Logger()

HOUR = 3600.0
CHANNELS = ("smtp", "webmail")

# RFC 5322 §3.6: a field name is printable ASCII except ':' at the start of
# a line; continuation lines start with white space.
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)


def header_block(message_start):
    """The header section of a message (up to and including the CRLF that
    ends the last field), from the first bytes of the message."""
    if message_start.startswith(b"\r\n"):
        return b""
    end = message_start.find(b"\r\n\r\n")
    return message_start if end < 0 else message_start[:end + 2]


def field_names(header_bytes):
    """Lower-cased names of the fields in a header block."""
    return {m.group(1).decode("ascii").lower() for m in _FIELD_NAME.finditer(header_bytes)}


def from_addresses(header_bytes):
    """[[addr-spec, ...] per From: field] of a header block; raises
    ValueError when a From: field cannot be parsed."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    message = parser.parsebytes(header_block(header_bytes) + b"\r\n")
    fields = []
    for value in message.get_all("From") or ():
        if value.defects and not value.addresses:
            raise ValueError("unparsable From:")
        if any(group.display_name is not None for group in value.groups):
            raise ValueError("group syntax in From:")
        fields.append([a.addr_spec for a in value.addresses])
    return fields


@attrs.define
class SubmissionService:
    """Policy for mail that authenticated mailboxes send."""

    delivery: object          # services.delivery.DeliveryService
    outbound: object          # services.outbound.OutboundQueue, or None while none runs
    counters: object          # store.ICounterStore
    limits: object            # config.Limits
    domains: tuple            # hosted domains (config.domains)
    hostname: str             # right-hand side of generated Message-IDs
    clock: object             # IReactorTime
    _limiters: dict = attrs.field(factory=dict, init=False)

    # --- sender -------------------------------------------------------------------

    def check_sender(self, mailbox, mail_from):
        """The envelope sender (reverse-path without <>) must be the
        mailbox's address; the null sender (MDNs, vacation notices) is
        allowed, since the From: header is checked anyway. SenderRejected."""
        if mail_from == "":
            return
        if mail_from.lower() != str(mailbox.address):
            raise errors.SenderRejected(
                f"Sender address rejected: you may send only as {mailbox.address}.")

    def check_from_header(self, mailbox, header_bytes):
        """The message's From: field must be exactly one address, the
        mailbox's own (any display name). ``header_bytes``: the start of
        the message as the client sent it (at least its header block, or
        the first 64 KiB). SenderRejected."""
        own = str(mailbox.address)
        try:
            fields = from_addresses(header_bytes)
        except Exception:
            raise errors.SenderRejected(
                f"The From: header cannot be read; it must be {own}.") from None
        if not fields:
            raise errors.SenderRejected(f"The message has no From: header; it must be {own}.")
        if len(fields) > 1 or len(fields[0]) != 1 or fields[0][0].lower() != own:
            raise errors.SenderRejected(
                f"From: header rejected: you may send only as {own}.")

    # --- recipients ---------------------------------------------------------------

    @deferred
    async def check_recipient(self, mailbox, address):
        """-> the Address to put in the envelope. Hosted domains: the
        mailbox must exist and have room (DeliveryService.check_recipient:
        NoSuchMailbox, QuotaExceeded); the local part is lower-cased. Other
        domains: accepted as written when an outbound queue runs, else
        OutboundUnavailable."""
        if address.domain in self.domains:
            local = Address(address.local.lower(), address.domain)
            await self.delivery.check_recipient(local)
            return local
        if self.outbound is None:
            raise errors.OutboundUnavailable(
                "Mail to other domains cannot be accepted right now; try again later.")
        return address

    def _limiter(self, channel):
        if channel not in self._limiters:
            limit = {"smtp": self.limits.smtp_recipients_per_hour,
                     "webmail": self.limits.webmail_recipients_per_hour}[channel]
            self._limiters[channel] = SlidingWindowLimiter(self.counters, Window(limit, HOUR))
        return self._limiters[channel]

    @staticmethod
    def rate_key(mailbox, channel):
        """The ICounterStore key of a mailbox's sent recipients."""
        return f"sent-{channel}:{mailbox.id}"

    def _rate_limited(self, limiter, decision, now):
        limit = limiter.window.limit
        if decision.retry_at is None:
            return errors.RateLimited(
                f"Sending limit: at most {limit} recipients per hour; "
                "send to fewer recipients at once.", retry_at=None)
        minutes = max(1, int((decision.retry_at - now + 59) // 60))
        at = time.strftime("%H:%M", time.gmtime(decision.retry_at))
        return errors.RateLimited(
            f"Sending limit of {limit} recipients per hour reached; sending works again "
            f"at {at} UTC (in {minutes} minute{'s' if minutes != 1 else ''}).",
            retry_at=decision.retry_at)

    @deferred
    async def reserve_recipient(self, mailbox, channel, pending=0):
        """-> Decision that one more recipient fits into the mailbox's
        rolling hour on ``channel``, counting ``pending`` recipients already
        accepted in the current transaction. Records nothing (``submit``
        does). RateLimited(retry_at=...) when it does not fit."""
        limiter = self._limiter(channel)
        now = self.clock.seconds()
        decision = await limiter.peek(self.rate_key(mailbox, channel), now, pending + 1)
        if not decision.allowed:
            raise self._rate_limited(limiter, decision, now)
        return decision

    # --- the message --------------------------------------------------------------

    def missing_headers(self, header_bytes):
        """Header lines (CRLF-terminated bytes) for the Message-ID: and
        Date: fields the header block lacks; b"" when it has both."""
        names = field_names(header_block(header_bytes))
        lines = b""
        if "message-id" not in names:
            lines += f"Message-ID: <{uuid.uuid4().hex}@{self.hostname}>\r\n".encode("ascii")
        if "date" not in names:
            now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
            lines += f"Date: {email.utils.format_datetime(now)}\r\n".encode("ascii")
        return lines

    @deferred
    async def submit(self, envelope, spool, channel="smtp"):
        """Hand a finished message over: count its recipients against the
        hour limit (RateLimited if they no longer fit), queue the remote
        recipients (OutboundQueue.enqueue), then deliver to the local ones
        without spam scanning. -> {Address: None (stored or queued) |
        KtmailError}. The caller discards the spool afterwards."""
        mailbox = envelope.authenticated
        limiter = self._limiter(channel)
        now = self.clock.seconds()
        decision = await limiter.take(self.rate_key(mailbox, channel), now,
                                      len(envelope.recipients))
        if not decision.allowed:
            raise self._rate_limited(limiter, decision, now)
        local = tuple(r for r in envelope.recipients if r.domain in self.domains)
        remote = tuple(r for r in envelope.recipients if r.domain not in self.domains)
        results = {}
        # Queue first: an unexpected failure there aborts the whole message
        # before anything was stored, so the client's retry duplicates nothing.
        if remote:
            if self.outbound is None:
                failure = errors.OutboundUnavailable()
                results.update((r, failure) for r in remote)
            else:
                try:
                    await self.outbound.enqueue(attrs.evolve(envelope, recipients=remote), spool)
                except errors.KtmailError as e:
                    results.update((r, e) for r in remote)
                else:
                    results.update((r, None) for r in remote)
        if local:
            delivered = await self.delivery.deliver(
                attrs.evolve(envelope, recipients=local), spool, scan_spam=False)
            results.update(delivered)
        log.info("submitted by {username} over {protocol}: {recipients} recipient(s), "
                 "{size} bytes", ktmail_event=events.SUBMISSION, username=mailbox.username,
                 protocol="webmail" if channel == "webmail" else channel,
                 recipients=sum(1 for v in results.values() if v is None), size=spool.size)
        return results
