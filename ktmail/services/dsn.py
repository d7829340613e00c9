"""Delivery status notifications (RFC 3464) for the senders of queued mail.

Pure: ``failure_report`` and ``delay_report`` turn a queue entry, the
recipients to report and the original header block into the bytes of a
``multipart/report; report-type=delivery-status`` message (CRLF line
endings): a human-readable part, one ``message/delivery-status`` part with
a per-recipient block for every recipient reported, and the original
headers as ``text/rfc822-headers``. From ``MAILER-DAEMON@<hostname>``; the
caller queues it with the null envelope sender, so that a DSN never causes
another DSN (RFC 5321 §4.5.5).
"""

import email.utils
import re

from ktmail.model import FAILED

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"^([245]\d\d)[ -](.*)$", re.DOTALL)


def _status(reply, permanent):
    """The RFC 3463 status of a reply like "550 5.1.1 No such user"."""
    m = _REPLY.match(reply or "")
    text = m.group(2) if m else ""
    enhanced = _ENHANCED.match(text)
    if enhanced:
        cls = enhanced.group(1)
        if permanent and cls == "4":
            return "4.4.7"  # gave up on a temporary failure: delivery time expired
        return ".".join(enhanced.groups())
    code = m.group(1) if m else ""
    if permanent:
        return "4.4.7" if code.startswith("4") or not code else "5.0.0"
    return "4.0.0"


def _one_line(text):
    return " ".join((text or "").split())


def _diagnostic(recipient):
    reply = _one_line(recipient.reply if recipient.state == FAILED else recipient.last_error)
    if not reply:
        return None
    kind = "smtp" if recipient.remote_mta and _REPLY.match(reply) else "X-ktmail"
    return f"{kind}; {reply}"


def _date(t):
    return email.utils.formatdate(t, usegmt=True)


def _report(entry, recipients, headers, hostname, now, action, subject, human, extra):
    boundary = f"{entry.id}/{hostname}"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.sender}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{entry.id}.{action}.{int(now)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Ktmail-Queue-ID: {entry.id}",
        f"Arrival-Date: {_date(entry.created)}",
    ]
    for r in recipients:
        lines += [
            "",
            f"Final-Recipient: rfc822; {r.address}",
            f"Action: {action}",
            f"Status: {_status(r.reply if r.state == FAILED else r.last_error, action == 'failed')}",
        ]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {r.remote_mta}")
        diagnostic = _diagnostic(r)
        if diagnostic:
            lines.append(f"Diagnostic-Code: {diagnostic}")
        lines += extra(r)
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Undelivered message headers",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    text = "\r\n".join(lines).encode("utf-8") + b"\r\n" + headers
    if not headers.endswith(b"\r\n"):
        text += b"\r\n"
    return text + f"\r\n--{boundary}--\r\n".encode("ascii")


def failure_report(entry, recipients, headers, hostname, now):
    """The DSN for ``recipients`` (failed: 5xx, null MX or expired)."""
    human = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to the recipients below. This is a",
        "permanent error; the message will not be tried again.",
        "",
    ]
    for r in recipients:
        human.append(f"<{r.address}>: {_one_line(r.reply) or 'delivery failed'}")
        if r.remote_mta:
            human.append(f"    (answer from {r.remote_mta})")
    return _report(entry, recipients, headers, hostname, now, "failed",
                   "Undelivered Mail Returned to Sender", human,
                   lambda r: [f"Last-Attempt-Date: {_date(now)}"])


def delay_report(entry, recipients, headers, hostname, now, give_up_at):
    """The "still trying" notice for ``recipients`` (RFC 3464 Action: delayed)."""
    human = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message has not yet been delivered to the recipients below. Delivery",
        f"will be tried again until {_date(give_up_at)}; you do not need to send",
        "it again. You will be told if it finally fails.",
        "",
    ]
    for r in recipients:
        human.append(f"<{r.address}>: {_one_line(r.last_error) or 'not yet delivered'}")
    return _report(entry, recipients, headers, hostname, now, "delayed",
                   "Delayed Mail (still being retried)", human,
                   lambda r: [f"Will-Retry-Until: {_date(give_up_at)}"])
