"""Folder change notifications between nodes: PostgreSQL ``LISTEN ktmail_mail``.

Every change of a folder index in PostgreSQL sends ``NOTIFY ktmail_mail,
'<mailbox id>:<folder name>'`` when it commits (store/folder_index_pg.py).
``FolderChangeFeed`` listens on a dedicated connection, on a thread of its
own (psycopg's blocking ``notifies()``; never on the reactor thread), and
calls ``on_change(mailbox_id, folder_name)`` on the reactor thread for each
notification sent by another process: another node, or ``ktmail-admin``.
Its own node's notifications (the server processes of ``own_pids()``) are
skipped: the node applied those changes already.

Invariants:
- a notification reaches ``on_change`` once its transaction is committed
  (PostgreSQL delivers NOTIFY at commit), so the store already shows it;
- when the listening connection is lost, the feed reconnects with back-off
  and then calls ``on_resync()`` (notifications sent meanwhile are lost:
  the receiver must look at everything it holds);
- stopping the service ends the thread within about half a second.
"""

import threading

import psycopg
from twisted.application import service
from twisted.logger import Logger

from ktmail.store.folder_index_pg import CHANNEL
from ktmail.store.postgresql import CONNECT_TIMEOUT

log = Logger()

#: how long one wait for notifications lasts (and so how soon a stop is seen)
POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


def parse_payload(payload):
    """``'<mailbox id>:<folder>'`` -> (int, str), or None if malformed."""
    mailbox_id, sep, name = payload.partition(":")
    if not sep or not mailbox_id.isdigit() or not name:
        return None
    return int(mailbox_id), name


class FolderChangeFeed(service.Service):
    """Listens for folder changes made elsewhere; see the module docstring.

    ``url``: the database; ``reactor``: IReactorFromThreads;
    ``on_change(mailbox_id, name)`` and ``on_resync()`` run on the reactor
    thread and must not raise; ``own_pids() -> set`` of this node's server
    process ids (called on the feed's thread)."""

    name = "folder-change-feed"

    def __init__(self, url, reactor, on_change, on_resync, own_pids=frozenset):
        self._url = url
        self._reactor = reactor
        self._on_change = on_change
        self._on_resync = on_resync
        self._own_pids = own_pids
        self._stopping = threading.Event()
        self._thread = None
        #: set (on the feed's thread) each time LISTEN is in effect; tests wait on it
        self.listening = threading.Event()

    def startService(self):
        service.Service.startService(self)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ktmail-folder-feed",
                                        daemon=True)
        self._thread.start()

    def stopService(self):
        service.Service.stopService(self)
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    # --- the feed's thread ---

    def _call(self, fn, *args, **kwargs):
        self._reactor.callFromThread(fn, *args, **kwargs)

    def _run(self):
        delay = 1.0
        connected_before = False
        while not self._stopping.is_set():
            try:
                conn = psycopg.connect(self._url, autocommit=True,
                                       connect_timeout=CONNECT_TIMEOUT,
                                       application_name="ktmail-feed")
            except psycopg.Error as e:
                self._call(log.warn, "folder change feed cannot connect ({error}); "
                           "retrying in {delay:.0f} s", error=_first_line(e), delay=delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                continue
            try:
                conn.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                if connected_before:
                    # whatever was sent while we were away is lost: look at everything
                    self._call(self._on_resync)
                    self._call(log.info, "folder change feed is listening again")
                connected_before = True
                delay = 1.0
                while not self._stopping.is_set():
                    self._deliver(conn.notifies(timeout=POLL_SECONDS))
            except psycopg.Error as e:
                self.listening.clear()
                if not self._stopping.is_set():
                    self._call(log.warn, "folder change feed lost its connection ({error})",
                               error=_first_line(e))
                    self._stopping.wait(delay)
            finally:
                self.listening.clear()
                try:
                    conn.close()
                except psycopg.Error:
                    pass

    def _deliver(self, notifications):
        """Hand each notification on as it arrives (the receiver coalesces)."""
        own = None
        for notification in notifications:
            if own is None:
                own = self._own_pids()
            if notification.pid in own:
                continue
            parsed = parse_payload(notification.payload)
            if parsed is not None:
                self._call(self._on_change, *parsed)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
