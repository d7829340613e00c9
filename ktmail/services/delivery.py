"""Accepting one message for local mailboxes (INTERFACES.md, "Delivery").

Stand-in holding only the ``Envelope`` value type, so that the SMTP
listeners and the submission service can be built and tested against the
agreed interface; the delivery service itself (``Spool``,
``DeliveryService``) replaces this module.
"""

import attrs


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
