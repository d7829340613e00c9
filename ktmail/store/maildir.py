"""All Maildir file I/O (SPEC §5): Maildir++ under ``<data_dir>/mail/<id>/``.

Invariants: never writes outside a mailbox's own directory; a message
becomes visible only by ``rename()`` after its file and directory were
fsynced; a removed mailbox disappears by one rename before its files are
deleted, so no half-deleted mailbox is ever visible.
"""

import os
import shutil
import uuid

from zope.interface import implementer

from ktmail.model import DEFAULT_FOLDERS
from ktmail.store import IMailStore


def folder_dirname(name):
    """The Maildir++ directory of an IMAP folder name ('' for INBOX)."""
    return "" if name == "INBOX" else "." + name.replace("/", ".")


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@implementer(IMailStore)
class MaildirStore:
    def __init__(self, data_dir, run_in_thread):
        self.root = os.path.join(data_dir, "mail")
        self._run = run_in_thread
        os.makedirs(self.root, exist_ok=True)

    def mailbox_path(self, mailbox_id):
        return os.path.join(self.root, str(int(mailbox_id)))

    def _create(self, mailbox_id):
        base = self.mailbox_path(mailbox_id)
        for name in DEFAULT_FOLDERS:
            folder = os.path.join(base, folder_dirname(name))
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(folder, sub), exist_ok=True)
            if name != "INBOX":
                open(os.path.join(folder, "maildirfolder"), "ab").close()
        _fsync_dir(base)
        _fsync_dir(self.root)

    def _remove(self, mailbox_id):
        base = self.mailbox_path(mailbox_id)
        if not os.path.exists(base):
            return
        doomed = os.path.join(self.root, f".removed-{mailbox_id}-{uuid.uuid4().hex}")
        os.rename(base, doomed)
        _fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    def _usage(self, mailbox_id):
        total = 0
        for dirpath, _, files in os.walk(self.mailbox_path(mailbox_id)):
            if os.path.basename(dirpath) in ("cur", "new"):
                for f in files:
                    try:
                        total += os.stat(os.path.join(dirpath, f)).st_size
                    except FileNotFoundError:
                        pass
        return total

    def create_mailbox(self, mailbox_id):
        return self._run(self._create, mailbox_id)

    def remove_mailbox(self, mailbox_id):
        return self._run(self._remove, mailbox_id)

    def usage(self, mailbox_id):
        return self._run(self._usage, mailbox_id)
