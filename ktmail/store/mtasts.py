"""MTA-STS policy cache on disk: ``<data_dir>/mta-sts/<domain>.json``.

One small JSON file per recipient domain, replaced atomically (written to
``<domain>.json.tmp``, fsynced, renamed, directory fsynced), so a crash
leaves the old or the new record. A file rather than rows in the service
database: the records are a cache (losing them only means fetching the
policies again), need no migration, and are shared by nodes that share
the data directory like the outbound queue. Domain names other than
plain lower-case LDH names are neither read nor written. All file work
runs through ``run_in_thread``.
"""

import json
import os
import re

from zope.interface import implementer

from ktmail.store import IMTASTSCache
from ktmail.store.files import fsync_dir, write_durably

_DOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?\Z")


@implementer(IMTASTSCache)
class DiskMTASTSCache:
    def __init__(self, data_dir, run_in_thread):
        self.root = os.path.join(data_dir, "mta-sts")
        self._run = run_in_thread

    def _path(self, domain):
        if not _DOMAIN.match(domain) or ".." in domain:
            return None
        return os.path.join(self.root, domain + ".json")

    def _get(self, domain):
        path = self._path(domain)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None

    def _put(self, domain, record):
        path = self._path(domain)
        if path is None:
            return
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        write_durably(path, json.dumps(record, sort_keys=True).encode("utf-8"))
        fsync_dir(self.root)

    def get(self, domain):
        return self._run(self._get, domain)

    def put(self, domain, record):
        return self._run(self._put, domain, record)
