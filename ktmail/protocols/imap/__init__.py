"""IMAP4rev1 on port 993 (SPEC §2, §4): the session in ``server``, the
adapters over the mailboxes service in ``mailbox``, the grammar in
``parser``, the FETCH data items in ``fetch`` and the wire syntax in
``wire``. Only ``IMAPFactory`` and ``ImapContext`` are used from outside."""

from ktmail.protocols.imap.server import ImapContext, IMAPFactory

__all__ = ["IMAPFactory", "ImapContext"]
