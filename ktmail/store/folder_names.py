"""Folder names on disk: the Maildir++ directory of an IMAP folder name.

The rules of a valid name live in ``model.normalize_folder_name`` (every
store, the services and the protocols share them); this module owns the
mapping between names and directories.

- On disk a folder ``A/B`` is the directory ``.A.B`` beside INBOX's
  ``cur/ new/ tmp/`` (Maildir++), each level in IMAP modified UTF-7
  (RFC 3501 §5.1.3) as Dovecot writes it, so ``Kvitton/Försäkring`` is
  ``.Kvitton.F&APY-rs&AOQ-kring``, readable by any Maildir tool. A ``.``
  inside a level would be read back as a separator, so the rules refuse it.

Invariant: ``folder_dirname(normalize_folder_name(x))`` is a single
directory entry that starts with ``.`` (or is ``''`` for INBOX) and can
never name ``..``, a path with ``/``, or a Maildir subdirectory.
"""

from ktmail.errors import ValidationError
from ktmail.model import (
    INBOX,
    SEPARATOR,
    decode_mutf7,
    encode_mutf7,
    normalize_folder_name,
)


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
