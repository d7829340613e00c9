"""Message flags: the one rule of what a store accepts (every implementation
applies ``check_flags``, so the Maildir store and the fake agree).

System flags (RFC 3501 §2.3.2) are matched case-insensitively and returned
in their canonical spelling; ``\\Recent`` cannot be set by a client and is
dropped. Keywords must be IMAP atoms (no spaces, parentheses, wildcards,
quotes, backslashes or ``]``), at most MAX_KEYWORD_LENGTH characters.
"""

import re

from ktmail.errors import ValidationError
from ktmail.model import SYSTEM_FLAGS

MAX_KEYWORD_LENGTH = 100
#: distinct flags one message may carry (keywords are stored per message)
MAX_FLAGS = 64

_CANONICAL = {flag.lower(): flag for flag in SYSTEM_FLAGS}
# RFC 3501 §9 flag-keyword = atom; ATOM-CHAR excludes ( ) { SP CTL % * " \ ]
_KEYWORD = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+\Z")


def check_flags(flags):
    """-> frozenset of canonical flags; ValidationError for a bad one."""
    out = set()
    for flag in flags:
        if not isinstance(flag, str):
            raise ValidationError("A flag must be text.")
        if flag.startswith("\\"):
            canonical = _CANONICAL.get(flag.lower())
            if canonical is None:
                if flag.lower() == "\\recent":
                    continue
                raise ValidationError(f"Unknown system flag {flag}.")
            out.add(canonical)
        elif len(flag) > MAX_KEYWORD_LENGTH or not _KEYWORD.match(flag):
            raise ValidationError(f"'{flag[:40]}' is not a valid keyword.")
        else:
            out.add(flag)
    if len(out) > MAX_FLAGS:
        raise ValidationError(f"A message can carry at most {MAX_FLAGS} flags.")
    return frozenset(out)
