"""Telling a sender about recipients that failed after the message was
accepted.

SMTP gives one reply to a whole message. When, at the end of DATA, some
recipients' copies were stored and others were refused for good (the
message itself filled a mailbox), the SMTP listeners accept the message
(250), so that the client's retry cannot duplicate the stored copies, and
hand the failed recipients here: the sender gets an RFC 3464 DSN through
the outbound queue, which delivers it locally or remotely and retries it
like any mail. The DSN goes out with the null sender, so it can never
cause another one (RFC 5321 §4.5.5), and a message from the null sender
gets none.
"""

import secrets

import attrs

from ktmail.model import FAILED, Address, QueuedRecipient, QueueEntry
from ktmail.services import deferred, dsn
from ktmail.services.delivery import Envelope
from ktmail.services.submission import header_block


@attrs.define
class AfterDataBounces:
    outbound: object        # services.outbound.OutboundQueue
    delivery: object        # services.delivery.DeliveryService (for a spool)
    hostname: str
    clock: object           # IReactorTime

    @deferred
    async def report(self, envelope, failures, message_start):
        """DSN to ``envelope.sender`` for ``failures`` ({Address: the SMTP
        reply, e.g. "552 5.2.2 The mailbox is full."}); ``message_start``:
        the first bytes of the message, whose header block is quoted.
        -> the DSN's queue id, or None when nobody is to be told."""
        if not envelope.sender or not failures:
            return None
        now = self.clock.seconds()
        entry = QueueEntry(
            id=secrets.token_hex(8), sender=envelope.sender,
            created=envelope.received_at or now, size=0,
            recipients=tuple(QueuedRecipient(address=str(a), state=FAILED, reply=reply)
                             for a, reply in failures.items()))
        report = dsn.failure_report(entry, entry.recipients, header_block(message_start),
                                    self.hostname, now)
        local, _, domain = envelope.sender.rpartition("@")
        spool = self.delivery.new_spool()
        try:
            spool.write(report)
            await spool.finish()
            return await self.outbound.enqueue(
                Envelope(sender="", recipients=(Address(local, domain.lower()),),
                         received_at=now), spool)
        finally:
            spool.discard()
