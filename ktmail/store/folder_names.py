"""Folder names: the rules every mail store applies, and their Maildir++ form.

Owns the one definition of a valid folder name and of the mapping between
IMAP names and Maildir++ directories, so that the Maildir store and the
in-memory fake refuse exactly the same names.

- Clients see ``/`` as the hierarchy separator: ``Kvitton/Försäkring``.
- ``INBOX`` is case-insensitive (RFC 3501 §5.1) and always spelled ``INBOX``.
- On disk a folder ``A/B`` is the directory ``.A.B`` beside INBOX's
  ``cur/ new/ tmp/`` (Maildir++), each component in IMAP modified UTF-7
  (RFC 3501 §5.1.3) as Dovecot writes it, so ``.Kvitton.F&APY-rs&AOQ-kring``
  is readable by any Maildir tool. A ``.`` inside a component would be read
  back as a separator, so it is refused.

Invariant: ``folder_dirname(normalize_folder_name(x))`` is a single
directory entry that starts with ``.`` (or is ``''`` for INBOX) and can
never name ``..``, a path with ``/``, or a Maildir subdirectory.
"""

import base64
import re

from ktmail.errors import ValidationError

INBOX = "INBOX"
SEPARATOR = "/"
#: the longest Maildir++ directory name we create (file systems allow 255 bytes)
MAX_DIRNAME_BYTES = 200
MAX_DEPTH = 16

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f*%.\\]")


def encode_mutf7(text):
    """IMAP modified UTF-7 (RFC 3501 §5.1.3) of ``text``."""
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=")
                       .replace("/", ",") + "-")
            pending.clear()

    for char in text:
        if "\x20" <= char <= "\x7e":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


_MUTF7_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mutf7(text):
    """Decode IMAP modified UTF-7; ValueError unless ``text`` is the canonical
    encoding of what it decodes to (so that names round-trip exactly)."""
    if any(not "\x20" <= c <= "\x7e" for c in text):
        raise ValueError("modified UTF-7 is printable ASCII")
    out = []
    pos = 0
    while pos < len(text):
        amp = text.find("&", pos)
        if amp < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:amp])
        m = _MUTF7_SHIFT.match(text, amp)
        if not m:
            raise ValueError("unterminated '&' shift")
        if not m.group(1):
            out.append("&")
        else:
            b64 = m.group(1).replace(",", "/")
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            out.append(raw.decode("utf-16-be"))
        pos = m.end()
    decoded = "".join(out)
    if encode_mutf7(decoded) != text:
        raise ValueError("not the canonical modified UTF-7 form")
    return decoded


def normalize_folder_name(name):
    """Check a folder name from a client and return its canonical form.

    Raises ValidationError (one line, saying what to change) for: empty
    names, a leading or trailing ``/``, an empty level (``A//B``), levels
    ``.``/``..`` or any ``.`` in a level, NUL and control characters,
    ``*`` and ``%`` (IMAP LIST wildcards), ``\\``, levels with leading or
    trailing spaces, more than MAX_DEPTH levels, or a name too long to be a
    directory.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError("The folder name is empty; give the folder a name.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("The folder name is not valid text.") from None
    if name.startswith(SEPARATOR) or name.endswith(SEPARATOR):
        raise ValidationError("A folder name cannot begin or end with '/'.")
    parts = name.split(SEPARATOR)
    if len(parts) > MAX_DEPTH:
        raise ValidationError(f"Folders can be nested at most {MAX_DEPTH} levels deep.")
    for part in parts:
        if not part:
            raise ValidationError("A folder name cannot contain '//' (an empty level).")
        bad = _FORBIDDEN.search(part)
        if bad:
            char = bad.group()
            shown = repr(char) if char in ".*%\\" else "control characters"
            raise ValidationError(f"A folder name cannot contain {shown}; choose another name.")
        if part != part.strip():
            raise ValidationError("A folder name cannot begin or end with a space.")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    canonical = SEPARATOR.join(parts)
    if len(folder_dirname(canonical).encode("ascii")) > MAX_DIRNAME_BYTES:
        raise ValidationError("The folder name is too long; choose a shorter one.")
    return canonical


def is_inbox(name):
    return name.upper() == INBOX


def folder_dirname(name):
    """The Maildir++ directory of a canonical folder name ('' for INBOX)."""
    if name == INBOX:
        return ""
    return "." + ".".join(encode_mutf7(part) for part in name.split(SEPARATOR))


def folder_name_from_dirname(dirname):
    """The folder name of a Maildir++ directory entry, or None if it is not
    one we can serve (not ``.X``, undecodable, or refused by the rules).

    Components that are not modified UTF-7 but are valid text (folders
    made by tools that write UTF-8) are taken as they are.
    """
    if not dirname.startswith(".") or dirname in (".", ".."):
        return None
    parts = []
    for raw in dirname[1:].split("."):
        try:
            parts.append(decode_mutf7(raw))
        except (ValueError, UnicodeDecodeError):
            parts.append(raw)
    try:
        name = normalize_folder_name(SEPARATOR.join(parts))
    except ValidationError:
        return None
    if name == INBOX:
        return None
    return name


def parent_names(name):
    """``A/B/C`` -> ``['A', 'A/B']``: the superior levels of a folder."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def is_below(name, ancestor):
    """Is ``name`` a subfolder (at any depth) of ``ancestor``?"""
    return name.startswith(ancestor + SEPARATOR)
