"""Storage reachability for ``/healthz``: is the data directory writable and
is the Maildir root (on a shared file system, perhaps) reachable?

A load balancer takes a node out of service when this fails, e.g. when
its NFS mount hangs or went read-only. The probe runs on a worker thread
and is given up after ``timeout`` seconds: a hung mount must make the
check fail, not hang it.
"""

import os
import socket

from twisted.internet import defer


class StorageProbe:
    """``check() -> Deferred`` that fails when the storage is unusable.

    ``data_dir``: written to (a probe file created, fsynced, removed);
    ``paths``: directories that must be listable (the Maildir root, the
    outbound queue). ``run_in_thread(fn) -> Deferred``; ``clock``:
    IReactorTime for the timeout."""

    def __init__(self, data_dir, paths, run_in_thread, clock, timeout=5.0):
        self.data_dir = data_dir
        self.paths = tuple(paths)
        self._run = run_in_thread
        self._clock = clock
        self.timeout = timeout
        self._probe_name = f".healthz-{socket.gethostname()}-{os.getpid()}"

    def _probe(self):
        path = os.path.join(self.data_dir, self._probe_name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(path)
        for directory in self.paths:
            with os.scandir(directory) as entries:
                next(entries, None)

    def check(self):
        d = self._run(self._probe)
        d.addTimeout(self.timeout, self._clock)
        return d


def with_timeout(check, clock, timeout=5.0):
    """``check`` (-> Deferred) failing after ``timeout`` seconds unanswered."""
    def timed():
        return defer.maybeDeferred(check).addTimeout(timeout, clock)
    return timed
