"""The storage probe behind /healthz: the data directory writable, the
Maildir root and the queue reachable, answered in bounded time."""

import os

from twisted.internet import defer, task
from twisted.trial import unittest

from ktmail.store.health import StorageProbe, with_timeout
from ktmail.store.sqlite import InlineRunner


class StorageProbeTests(unittest.TestCase):
    def setUp(self):
        self.data_dir = self.mktemp()
        self.mail = os.path.join(self.data_dir, "mail")
        os.makedirs(self.mail)
        self.clock = task.Clock()

    def test_usable_storage_passes_and_leaves_nothing(self):
        """A writable data directory with a readable Maildir root passes,
        and the probe file is gone afterwards."""
        probe = StorageProbe(self.data_dir, [self.mail], InlineRunner(), self.clock)
        self.successResultOf(probe.check())
        self.assertEqual(os.listdir(self.data_dir), ["mail"])

    def test_unreachable_maildir_root_fails(self):
        """A Maildir root that is not there (an unmounted share) fails the check."""
        os.rmdir(self.mail)
        probe = StorageProbe(self.data_dir, [self.mail], InlineRunner(), self.clock)
        self.failureResultOf(probe.check(), FileNotFoundError)

    def test_unwritable_data_dir_fails(self):
        """A data directory that cannot be written to fails the check."""
        probe = StorageProbe(os.path.join(self.data_dir, "missing"), [self.mail],
                             InlineRunner(), self.clock)
        self.failureResultOf(probe.check(), FileNotFoundError)

    def test_a_hung_file_system_fails_after_the_timeout(self):
        """A probe that never comes back (a hung NFS mount) fails after
        ``timeout`` seconds instead of hanging /healthz."""
        probe = StorageProbe(self.data_dir, [self.mail], lambda fn: defer.Deferred(),
                             self.clock, timeout=5)
        d = probe.check()
        self.assertNoResult(d)
        self.clock.advance(5)
        self.failureResultOf(d, defer.TimeoutError)

    def test_with_timeout_bounds_any_check(self):
        """with_timeout turns a database ping that hangs into a failure."""
        check = with_timeout(lambda: defer.Deferred(), self.clock, timeout=3)
        d = check()
        self.clock.advance(3)
        self.failureResultOf(d, defer.TimeoutError)
