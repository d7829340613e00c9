"""Writing mail in the webmail: recipients typed by a person, the message
built with the ``email`` package, replies and forwards.

Invariants:
- no header can be injected: every text that goes into a header field
  (recipients, subject, file names) is refused when it holds CR, LF or
  another control character (``check_header_text``), before the ``email``
  package (which would refuse them too) ever sees it;
- recipients are addresses we can route: ``local@domain`` with a dot-atom
  local part (lower-cased, as the rest of ktmail keeps them) and a domain
  name; internationalised domains are written in their ASCII form (IDNA);
- a message is written to a binary file object in one pass: headers and
  the text part come from the ``email`` package, attachment bodies are
  base64-encoded from their files chunk by chunk (a 50 MiB attachment is
  never in memory), every line ends in CRLF;
- ``Message-ID:`` and ``Date:`` are always set; ``Bcc:`` never goes into
  the message that is sent (the Sent copy gets it as a prefix line).
"""

import base64
import email.headerregistry
import email.policy
import email.utils
import io
import re
import secrets
from email.generator import BytesGenerator
from email.message import EmailMessage

import attrs

from ktmail.errors import ValidationError
from ktmail.model import Address

POLICY = email.policy.SMTP.clone(max_line_length=78)
CHUNK = 57 * 1024            # a multiple of 57: whole 76-character base64 lines
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_RECIPIENTS_TEXT = 64 * 1024
MAX_SUBJECT = 998


@attrs.frozen
class Attachment:
    """A file waiting to be sent: ``path`` is ours (an upload or a copy)."""

    filename: str
    content_type: str
    path: str
    size: int


def check_header_text(value, field):
    """Refuse text that would end a header line early (CR, LF) or hide
    control characters in one. -> the text, stripped."""
    if _CONTROL.search(value or ""):
        raise ValidationError("Line breaks and control characters are not allowed here.",
                              field=field)
    return (value or "").strip()


def _ascii_domain(domain):
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValidationError(f"'{domain}' is not a valid domain name.") from None


def parse_recipients(text, field):
    """A typed recipient list -> ((display name, Address), ...): addresses
    separated by commas (or semicolons), with or without names."""
    text = check_header_text(text, field)
    if len(text) > MAX_RECIPIENTS_TEXT:
        raise ValidationError("Too many recipients.", field=field)
    found = []
    seen = set()
    for item in _split_addresses(text):
        name, spec = email.utils.parseaddr(item)
        if not spec or "@" not in spec or spec.count("@") != 1 and '"' not in spec:
            raise ValidationError(f"'{item.strip()}' is not an e-mail address (name@example.fi).",
                                  field=field)
        local, _, domain = spec.rpartition("@")
        try:
            address = Address.parse(f"{local}@{_ascii_domain(domain.strip())}")
        except ValidationError:
            raise ValidationError(
                f"'{item.strip()}' is not an e-mail address (name@example.fi).",
                field=field) from None
        if address not in seen:
            seen.add(address)
            found.append((name.strip(), address))
    return tuple(found)


def _split_addresses(text):
    """Split at commas (and semicolons) outside quotes and angle brackets; drop empty items."""
    items, current, quoted, angle = [], [], False, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        if char in ",;" and not quoted and not angle:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [i for i in items if i.strip()]


def format_addresses(pairs):
    """((name, address), ...) -> text for a person to edit: ``Åsa <a@b.fi>, c@d.fi``."""
    out = []
    for name, address in pairs:
        address = str(address)
        if not address:
            continue
        if name and name != address:
            if re.search(r'[,;<>@"()\[\]:\\]', name):
                name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out.append(f"{name} <{address}>")
        else:
            out.append(address)
    return ", ".join(out)


def _header_addresses(pairs):
    return [email.headerregistry.Address(display_name=name or "", addr_spec=str(address))
            for name, address in pairs]


def new_message_id(hostname):
    return f"<{secrets.token_hex(16)}@{hostname}>"


def _needs_qp(text):
    return not text.isascii() or any(len(line) > 900 for line in text.splitlines())


def _safe_content_type(content_type):
    """Types we may base64-encode (RFC 2046 forbids it for message/* and multipart/*)."""
    maintype, _, subtype = (content_type or "").lower().partition("/")
    if (not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", maintype)
            or not re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", subtype)
            or maintype in ("message", "multipart")):
        return "application", "octet-stream"
    return maintype, subtype


def write_message(out, *, sender, to, cc=(), subject="", body="", attachments=(),
                  message_id, date, in_reply_to=None, references=None, bcc=(), draft=False):
    """Write the message to the binary file ``out``. ``sender`` is an
    Address, ``to``/``cc``/``bcc`` (name, Address) pairs, ``date`` POSIX
    seconds, ``attachments`` compose.Attachment. -> bytes written."""
    message = EmailMessage(policy=POLICY)
    message["From"] = _header_addresses([("", sender)])
    if to:
        message["To"] = _header_addresses(to)
    if cc:
        message["Cc"] = _header_addresses(cc)
    if bcc:
        message["Bcc"] = _header_addresses(bcc)
    message["Subject"] = check_header_text(subject, "subject")[:MAX_SUBJECT]
    message["Date"] = email.utils.formatdate(date, localtime=True)
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = check_header_text(in_reply_to, "in_reply_to")
    if references:
        message["References"] = check_header_text(references, "references")
    if draft:
        message["X-Ktmail-Draft"] = "yes"
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    message.set_content(text, charset="utf-8",
                        cte="quoted-printable" if _needs_qp(text) else "7bit")
    placeholders = {}
    if attachments:
        message.make_mixed()
        for attachment in attachments:
            maintype, subtype = _safe_content_type(attachment.content_type)
            token = f"KTMAIL-ATTACHMENT-{secrets.token_hex(16)}"
            message.add_attachment(b"", maintype=maintype, subtype=subtype,
                                   filename=check_header_text(attachment.filename, "filename"))
            part = message.get_payload()[-1]
            part.set_payload(token)
            del part["MIME-Version"]
            placeholders[token] = attachment
    head = io.BytesIO()
    BytesGenerator(head, policy=POLICY).flatten(message)
    skeleton = head.getvalue()
    written = 0
    if not placeholders:
        out.write(skeleton)
        return len(skeleton)
    pattern = re.compile(b"(" + b"|".join(re.escape(t.encode()) for t in placeholders) + b")")
    for piece in pattern.split(skeleton):
        attachment = placeholders.get(piece.decode("ascii", "replace")) if piece.startswith(
            b"KTMAIL-ATTACHMENT-") else None
        if attachment is None:
            out.write(piece)
            written += len(piece)
            continue
        written += _write_base64(out, attachment.path)
    return written


def _write_base64(out, path):
    """The file at ``path`` as base64 lines of 76 characters, CRLF after
    each but the last (the generator writes the CRLF that ends the part)."""
    written = 0
    first = True
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
            if not first:
                out.write(b"\r\n")
                written += 2
            encoded = encoded[:-2]
            out.write(encoded)
            written += len(encoded)
            first = False
    return written


# --- replies and forwards -----------------------------------------------------------------

_REPLY_PREFIX = re.compile(r"^\s*((re|sv|vs|aw|antw|vá|odp)\s*(\[\d+\])?\s*:\s*)+",
                           re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*((fwd?|vb|vl|wg|tr)\s*:\s*)+", re.IGNORECASE)


def reply_subject(subject):
    return "Re: " + _REPLY_PREFIX.sub("", subject or "").strip()


def forward_subject(subject):
    return "Fwd: " + _FORWARD_PREFIX.sub("", subject or "").strip()


def quote(text):
    """``> `` before every line (RFC 3676 §4.5 quoting)."""
    lines = (text or "").replace("\r\n", "\n").rstrip("\n").split("\n")
    return "\n".join((">" + line) if line.startswith(">") else ("> " + line if line else ">")
                     for line in lines)


def reply_recipients(view, own, everyone):
    """-> (to pairs, cc pairs) of a reply to ``view`` (messageview.MessageView)
    by the mailbox with address ``own``; ``everyone``: reply to all."""
    own = str(own)
    to = list(view.reply_to or view.from_)
    if everyone:
        cc = [p for p in list(view.to) + list(view.cc)]
    else:
        cc = []
    if all(a.lower() == own for _, a in to) and view.to:
        # a reply to one's own message goes to its recipients
        to = list(view.to)
    taken = set()
    result_to, result_cc = [], []
    for target, pairs in ((result_to, to), (result_cc, cc)):
        for name, address in pairs:
            key = address.lower()
            if not address or key in taken or (key == own and (target is result_cc
                                                               or len(to) > 1)):
                continue
            taken.add(key)
            target.append((name, address))
    return tuple(result_to), tuple(result_cc)


def references_for(view):
    """-> (In-Reply-To, References) of a reply (RFC 5322 §3.6.4)."""
    if not view.message_id:
        return None, view.references
    refs = (view.references + " " if view.references else "") + view.message_id
    # keep the first and the last few: long threads would grow without end
    items = refs.split()
    if len(items) > 20:
        items = items[:1] + items[-19:]
    return view.message_id, " ".join(items)
