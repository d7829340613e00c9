"""The structured events of the log: their names and their fields.

Every event below is an ordinary ``twisted.logger`` event whose
``ktmail_event`` key names it; its other keys are the fields listed here,
and they are a stable interface: the JSON log (``twistd --logger
ktmail.logs.json_observer``) carries them as they are, and the Prometheus
counters of ``/metrics`` are counted from them (ktmail/metrics.py).

=============  =================================================================
event          fields
=============  =================================================================
connection     listener (smtp|submission|imap|pop3|web), client (IP address),
               outcome (closed|refused-client|refused-total), seconds
login          protocol (imap|pop3|smtp|web), kind (mailbox|customer), username,
               client, outcome (ok|failed|throttled)
delivery       channel (inbound: the MX, spam-scanned | local: from our own users,
               DSNs and notices), mailbox (username), folder, uid, size,
               verdict (spam|ham|unscored), score (a number, or None)
submission     protocol (smtp|webmail), username, recipients (count), size
outbound       id (queue entry), recipient, outcome (delivered|deferred|failed)
deletion       what (messages|folder|mailbox), mailbox (username), folder, count,
               reason (expunge|pop3|retention|removed|...)
=============  =================================================================

Never in any event: a password, a message body, a header value other than
the envelope addresses.
"""

CONNECTION = "connection"
LOGIN = "login"
DELIVERY = "delivery"
SUBMISSION = "submission"
OUTBOUND = "outbound"
DELETION = "deletion"

ALL = (CONNECTION, LOGIN, DELIVERY, SUBMISSION, OUTBOUND, DELETION)
