"""A consistent copy of a running ktmail's data: ``ktmail-admin backup DEST``.

DEST gets the layout of ``data_dir``, so restoring is copying it back
(see RESTORE_NOTE, also written to ``DEST/RESTORE.txt``):

- ``ktmail.db``: the service database, copied with SQLite's online backup
  API (a snapshot of one moment, while the daemon goes on writing). With
  PostgreSQL (``[store] database = postgresql://...``) the database is not
  copied here: back it up with ``pg_dump`` (the note says how);
- ``mail/<id>/``: every mailbox. Under the mailbox's lock (the ``flock``
  every daemon operation on it takes) its index is copied with the backup
  API and its file names are listed; the lock is then released and the
  message files are copied. Message files never change once written (a
  flag change renames them, so a file that moved meanwhile is found again
  by its base name; one deleted meanwhile is left out, and the index of
  the restored mailbox drops it when the folder is first opened: the
  index follows the disk). Nothing in ``tmp/`` is copied;
- ``queue/``: the outbound queue, copied under its lock;
- ``dkim/``: the DKIM signing keys (private: mode 0600 is kept).

Invariants: nothing in ``data_dir`` is written or moved, and no lock is held
longer than one mailbox's index copy and listing; DEST must not exist yet
or be empty, so a backup never mixes with an older one; every file and
directory is created private (0700/0600).
"""

import os
import shutil
import sqlite3

import attrs

from ktmail import errors
from ktmail.store.files import ExclusiveFlock
from ktmail.store.folder_index import INDEX_FILENAME, LOCK_FILENAME
from ktmail.store.maildir import DELETED_PREFIX

QUEUE_LOCK = ".lock"

RESTORE_NOTE = """\
This is a backup of ktmail's data directory ({data_dir}), made by
`ktmail-admin backup` at {when} while the daemon ran.

To restore it:

1. stop the daemon (systemctl stop ktmail);
2. move the old data directory aside: mv {data_dir} {data_dir}.old
3. copy this backup in its place, keeping owners and modes:
   cp -a {dest} {data_dir} && rm {data_dir}/RESTORE.txt
   and make the ktmail user own it: chown -R ktmail: {data_dir}
4. {database_step}
5. start the daemon (systemctl start ktmail): the mail indexes check
   themselves against the Maildirs as each folder is first opened.

The configuration file and the TLS certificate and key are not in this
backup: keep copies of /etc/ktmail (or wherever they are) as well.
"""
SQLITE_STEP = "the service database is ktmail.db in this backup: nothing more to do;"
POSTGRESQL_STEP = """the service database is PostgreSQL and is NOT in this backup. Back it
   up with pg_dump at the same time as this copy, e.g.
       pg_dump --format=custom --file=ktmail.pgdump '{url}'
   and restore it into an empty database before starting:
       pg_restore --clean --if-exists --dbname='{url}' ktmail.pgdump
   (the folder indexes are in PostgreSQL too; they check themselves
   against the Maildirs as each folder is first opened);"""


class BackupError(errors.KtmailError):
    """The backup cannot be made; the text says why."""


@attrs.define
class BackupSummary:
    database: str = "none"
    mailboxes: int = 0
    messages: int = 0
    bytes: int = 0
    queue_files: int = 0
    dkim_files: int = 0


def _private_dir(path):
    """Create ``path`` and any missing parents, all mode 0700 (makedirs
    gives the mode to the last one only)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    os.chmod(path, 0o700)


def sqlite_copy(source, target):
    """SQLite's online backup: a consistent snapshot, whatever writes meanwhile."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=60)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=1024)
        finally:
            dst.close()
    finally:
        src.close()


def _copy_file(source, target):
    shutil.copy2(source, target)
    os.chmod(target, 0o600)


def _key(rel):
    """(folder, base name) of a message file path relative to its mailbox."""
    directory, name = os.path.split(rel)
    return os.path.dirname(directory), name.split(":", 1)[0]


def _names(directory):
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _copy_message(path, target, rel, summary, copied):
    try:
        _copy_file(os.path.join(path, rel), os.path.join(target, rel))
    except FileNotFoundError:
        return False
    summary.messages += 1
    summary.bytes += os.path.getsize(os.path.join(target, rel))
    copied.add(_key(rel))
    return True


@attrs.define
class DataBackup:
    """``DataBackup(data_dir, database_config).run(dest, now)`` ->
    BackupSummary. Blocking file I/O: run it off the reactor thread."""

    data_dir: str
    database: object   # config.DatabaseConfig
    #: whether mailbox indexes are SQLite files (False: in PostgreSQL)
    sqlite_indexes: bool = True

    def run(self, dest, when):
        dest = os.path.abspath(dest)
        if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
            raise BackupError(f"{dest} exists and is not an empty directory; give a new one")
        if dest == self.data_dir or dest.startswith(self.data_dir + os.sep):
            raise BackupError(f"{dest} is inside the data directory {self.data_dir}")
        _private_dir(dest)
        summary = BackupSummary()
        self._database(dest, summary)
        self._mail(dest, summary)
        summary.queue_files = self._queue(dest)
        summary.dkim_files = self._tree(os.path.join(self.data_dir, "dkim"),
                                        os.path.join(dest, "dkim"))
        self._note(dest, when)
        return summary

    def _database(self, dest, summary):
        if self.database.is_postgresql:
            summary.database = "postgresql (not copied: use pg_dump, see RESTORE.txt)"
            return
        if not os.path.exists(self.database.path):
            raise BackupError(f"there is no database at {self.database.path}")
        name = os.path.basename(self.database.path)
        if os.path.dirname(self.database.path) != self.data_dir:
            name = "ktmail.db"   # kept elsewhere: restored by hand (RESTORE.txt)
        sqlite_copy(self.database.path, os.path.join(dest, name))
        summary.database = name

    def _mail(self, dest, summary):
        root = os.path.join(self.data_dir, "mail")
        if not os.path.isdir(root):
            return
        _private_dir(os.path.join(dest, "mail"))
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if name.startswith(DELETED_PREFIX) or not os.path.isdir(path):
                continue   # a mailbox being removed
            if self._mailbox(path, os.path.join(dest, "mail", name), summary):
                summary.mailboxes += 1

    def _mailbox(self, path, target, summary):
        """Copy one mailbox -> False when it disappeared meanwhile.

        1. under the lock: the index (backup API), the folders, the small
           files, and the list of message files;
        2. without it: the message files (one that moved on is found again
           by its base name in the same folder);
        3. under the lock again: any message file not copied yet (delivered
           or moved to another folder meanwhile: IMAP MOVE gives a new
           name), so that nothing that existed during the copy is missed.
        """
        copied = set()   # (folder, base name) of the message files copied
        try:
            with ExclusiveFlock(os.path.join(path, LOCK_FILENAME)):
                _private_dir(target)
                index = os.path.join(path, INDEX_FILENAME)
                if self.sqlite_indexes and os.path.exists(index):
                    sqlite_copy(index, os.path.join(target, INDEX_FILENAME))
                folders, files, small = self._listing(path)
                for folder in folders:
                    for sub in ("cur", "new", "tmp"):
                        _private_dir(os.path.join(target, folder, sub))
                for rel in small:
                    _copy_file(os.path.join(path, rel), os.path.join(target, rel))
            for rel in files:
                self._message(path, target, rel, summary, copied)
            with ExclusiveFlock(os.path.join(path, LOCK_FILENAME)):
                folders, files, _small = self._listing(path)
                for folder in folders:
                    for sub in ("cur", "new", "tmp"):
                        _private_dir(os.path.join(target, folder, sub))
                for rel in files:
                    if _key(rel) not in copied:
                        self._message(path, target, rel, summary, copied)
        except FileNotFoundError:
            shutil.rmtree(target, ignore_errors=True)
            return False
        return True

    @staticmethod
    def _listing(path):
        """-> (folders, message files, other small files), paths relative to
        the mailbox. Folders are ``.Name`` directories (Maildir++), INBOX
        is ""; the index and the lock are not "small files"."""
        folders = [""] + sorted(n for n in os.listdir(path)
                                if n.startswith(".") and os.path.isdir(os.path.join(path, n)))
        files, small = [], []
        for folder in folders:
            base = os.path.join(path, folder)
            for entry in os.listdir(base):
                full = os.path.join(base, entry)
                rel = os.path.join(folder, entry)
                if entry in ("cur", "new") and os.path.isdir(full):
                    files += [os.path.join(rel, n) for n in os.listdir(full)]
                elif (os.path.isfile(full) and not entry.startswith(INDEX_FILENAME)
                      and entry != LOCK_FILENAME):
                    small.append(rel)
        return folders, files, small

    @staticmethod
    def _message(path, target, rel, summary, copied):
        if _copy_message(path, target, rel, summary, copied):
            return
        # renamed by a flag change (cur/<base>:2,<flags>) or taken from new/
        directory, name = os.path.split(rel)
        folder, base = os.path.dirname(directory), name.split(":", 1)[0]
        for sub in ("cur", "new"):
            for other in _names(os.path.join(path, folder, sub)):
                if other.split(":", 1)[0] == base and _copy_message(
                        path, target, os.path.join(folder, sub, other), summary, copied):
                    return
        # deleted meanwhile, or moved to another folder (step 3 finds it there)

    def _queue(self, dest):
        root = os.path.join(self.data_dir, "queue")
        if not os.path.isdir(root):
            return 0
        with ExclusiveFlock(os.path.join(root, QUEUE_LOCK)):
            return self._tree(root, os.path.join(dest, "queue"),
                              skip=lambda name: name.startswith("."))

    @staticmethod
    def _tree(source, target, skip=lambda name: False):
        """Copy a small directory tree (private modes) -> files copied."""
        if not os.path.isdir(source):
            return 0
        count = 0
        for directory, subdirs, names in os.walk(source):
            rel = os.path.relpath(directory, source)
            _private_dir(os.path.normpath(os.path.join(target, rel)))
            subdirs[:] = [d for d in subdirs if not skip(d)]
            for name in names:
                if skip(name):
                    continue
                try:
                    _copy_file(os.path.join(directory, name),
                               os.path.normpath(os.path.join(target, rel, name)))
                    count += 1
                except FileNotFoundError:
                    pass   # removed meanwhile (a queue entry that was delivered)
        return count

    def _note(self, dest, when):
        if self.database.is_postgresql:
            step = POSTGRESQL_STEP.format(url=self.database.display())
        else:
            step = SQLITE_STEP
            if os.path.dirname(self.database.path) != self.data_dir:
                step = (f"copy ktmail.db from this backup to {self.database.path} "
                        "(the database is kept outside the data directory);")
        text = RESTORE_NOTE.format(data_dir=self.data_dir, dest=dest, when=when,
                                   database_step=step)
        fd = os.open(os.path.join(dest, "RESTORE.txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
