"""Small file-system primitives the Maildir store, the outbound queue, the
backup and the delivery spool share."""

import fcntl
import os


def fsync_dir(path):
    """Make the directory entries of ``path`` (new, renamed, removed files)
    durable: a file's own fsync does not cover its name."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path, data):
    """Write ``data`` to ``path`` + '.tmp', fsync it, and rename it over
    ``path``: readers see the old or the new content, never a part. The
    caller fsyncs the directory (once for several files)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def pid_alive(pid):
    """Does a process ``pid`` exist on this host (perhaps another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExclusiveFlock:
    """``with ExclusiveFlock(path):`` holds an exclusive ``flock`` on ``path``
    (created 0600 if missing). Each use opens the file anew, so that threads
    of one process exclude each other too; closing releases the lock, also
    when the process dies."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
