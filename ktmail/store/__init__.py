"""Storage contracts (zope.interface). Services depend on these, never on an
implementation; ``tap.py`` picks the implementation.

Every method returns a Deferred: implementations run their I/O off the
reactor thread (``store/sqlite.py`` through a thread pool) or, for the
in-memory fakes in ``store/memory.py``, answer at once. The same contract
tests (tests/store/) run against every implementation.

Times are POSIX seconds (float) passed in by the caller, who got them from
an injected ``IReactorTime``; the account and counter stores never read the
clock themselves. The mail store is given the ``IReactorTime`` in its
constructor, for the times it stamps itself (UIDVALIDITY, when a message
arrived in a folder, the age of stale files).
"""

from zope.interface import Interface


class IAccountStore(Interface):
    """Customers (portal logins) and mailboxes (mail logins with an address).

    Invariants kept by every implementation, atomically:
    - customer logins and mailbox usernames share one namespace: a name
      identifies at most one account of either kind;
    - an address belongs to at most one mailbox;
    - ``add_mailbox`` refuses (``LimitReached``) when the customer already
      has ``limit`` mailboxes, in the same transaction as the insert, so
      that concurrent creations cannot exceed the cap.
    """

    def add_customer(login, password_hash, now):
        """-> Customer. AlreadyExists if the name is taken."""

    def get_customer(login):
        """-> Customer. NoSuchCustomer."""

    def get_customer_by_id(customer_id):
        """-> Customer. NoSuchCustomer."""

    def customer_password_hash(login):
        """-> (Customer, hash). NoSuchCustomer."""

    def set_customer_password(login, password_hash):
        """-> None. NoSuchCustomer."""

    def list_customers():
        """-> [Customer] ordered by login."""

    def remove_customer(login):
        """-> [Mailbox] that were removed with it. NoSuchCustomer."""

    def add_mailbox(customer_id, username, address, password_hash, quota_bytes, now, limit):
        """-> Mailbox. AlreadyExists (username or address, ``field`` set),
        LimitReached, NoSuchCustomer."""

    def get_mailbox(mailbox_id):
        """-> Mailbox. NoSuchMailbox."""

    def get_mailbox_by_username(username):
        """-> Mailbox. NoSuchMailbox."""

    def get_mailbox_by_address(address):
        """-> Mailbox. NoSuchMailbox. ``address`` is a model.Address."""

    def mailbox_password_hash(username):
        """-> (Mailbox, hash). NoSuchMailbox."""

    def set_mailbox_password(mailbox_id, password_hash):
        """-> None. NoSuchMailbox."""

    def list_mailboxes(customer_id=None):
        """-> [Mailbox] of one customer (or all), ordered by address."""

    def remove_mailbox(mailbox_id, inactive_since=None):
        """-> the removed Mailbox. NoSuchMailbox.

        With ``inactive_since``, remove it only if nobody has logged in
        after that time (last login, or creation if never): otherwise
        return None and remove nothing. The check and the removal are one
        transaction, so a login racing the inactivity job wins."""

    def record_login(mailbox_id, now):
        """Set last_login and clear warnings_sent. -> None."""

    def record_warning(mailbox_id, days_before):
        """Add ``days_before`` to warnings_sent. -> None."""


class ICounterStore(Interface):
    """Timestamped events counted in sliding windows: failed logins (per
    client address and per username) and sent recipients (per mailbox and
    channel). Kept in the store so that limits survive restarts."""

    def add_event(key, now, count=1):
        """Record ``count`` events for ``key`` at ``now``. -> None."""

    def events_since(key, since):
        """-> [(time, count)] for ``key`` at or after ``since``, oldest first."""

    def take_event(key, now, count, window, limit):
        """Atomically: if the events of ``key`` later than ``now - window``
        plus ``count`` stay within ``limit``, record ``count`` events at
        ``now``. -> (recorded, [(time, count)] of those events before this
        one, oldest first). Two takes racing for the last slot never both
        get it, also from two processes or two nodes sharing the store."""

    def clear_events(key):
        """Forget every event of ``key``. -> None."""

    def prune_events(before):
        """Drop events older than ``before`` (housekeeping). -> int dropped."""


class IAuditLog(Interface):
    """Who deleted or changed what, and when (SPEC §1 inactivity, issue 10)."""

    def add_audit(now, actor, action, target, detail=""):
        """-> None."""

    def list_audit(limit=100):
        """-> [(time, actor, action, target, detail)] newest first."""


class IMailStore(Interface):
    """The messages of every mailbox: Maildir++ on disk (SPEC §5).

    Mailboxes are named by their account id (``mailbox_id``), folders by
    their IMAP name with ``/`` as the hierarchy separator (``INBOX``,
    ``Kvitton/Försäkring``); names are checked and canonicalized by
    ``store/folder_names.normalize_folder_name`` (bad names raise
    ValidationError, ``inbox`` means ``INBOX``). Every method returns a
    Deferred. Messages are handed around as ``model.MessageInfo``; sets of
    UIDs may be any iterable of ints (unknown UIDs are ignored).

    Errors: NoSuchMailbox (no such mailbox directory), NoSuchFolder,
    NoSuchMessage, AlreadyExists, FolderProtected, QuotaExceeded,
    ValidationError, all from ``ktmail.errors``.

    Guarantees every implementation keeps (tests/store/test_mail_contract.py):
    - UIDs within a folder are strictly ascending in the order messages were
      added and never reused while UIDVALIDITY stays the same; UIDVALIDITY
      and UIDNEXT survive restarts; a folder deleted and created again gets
      a new UIDVALIDITY;
    - HIGHESTMODSEQ grows with every change of a folder; every changed
      message gets a modseq above the previous HIGHESTMODSEQ; expunged UIDs
      are remembered with their modseq (``changes_since``);
    - ``\\Recent`` is set on every message added to a folder (delivery,
      APPEND, COPY/MOVE) until ``claim_recent`` clears it;
    - quota usage (bytes and messages of all folders together) is exact and
      changes atomically with every add and expunge; ``add_message`` and
      ``copy_messages`` with ``quota_bytes`` refuse (QuotaExceeded) when the
      result would exceed it, atomically with the insert;
    - an added message is durable (file and directory fsynced, index
      committed) before the Deferred fires; a failed add leaves nothing;
    - the operations of one mailbox take effect one at a time and their
      Deferreds fire in the order they took effect.
    """

    # --- mailboxes ---

    def create_mailbox(mailbox_id):
        """Create the Maildir++ with the DEFAULT_FOLDERS (subscribed).
        Idempotent. -> None."""

    def remove_mailbox(mailbox_id):
        """Delete every message, folder and index of the mailbox. Idempotent. -> None."""

    def usage(mailbox_id):
        """-> int: bytes used by all folders of the mailbox together."""

    def mail_usage(mailbox_id):
        """-> model.MailUsage(bytes, messages) of the whole mailbox."""

    # --- folders ---

    def list_folders(mailbox_id):
        """-> [model.FolderInfo] of every folder (INBOX included), ordered by name."""

    def create_folder(mailbox_id, name):
        """Create a folder and any missing superior levels (RFC 3501 §6.3.3),
        unsubscribed, with a new UIDVALIDITY. -> model.FolderStatus.
        AlreadyExists if it exists."""

    def delete_folder(mailbox_id, name):
        """Delete a folder with its messages. FolderProtected for the default
        folders; ValidationError when it has subfolders. -> None."""

    def rename_folder(mailbox_id, old, new):
        """Rename a folder and its subfolders (UIDVALIDITY and UIDs kept;
        subscriptions follow; missing superiors of ``new`` are created).
        ``old`` = INBOX moves all INBOX messages into a new folder ``new``
        and leaves INBOX empty (RFC 3501 §6.3.5). FolderProtected for the
        other default folders; AlreadyExists if ``new`` exists. -> None."""

    def subscribe(mailbox_id, name, subscribed=True):
        """Add or remove ``name`` in the subscriptions (the folder need not
        exist, RFC 3501 §6.3.6). -> None."""

    def list_subscriptions(mailbox_id):
        """-> [name] subscribed, ordered."""

    def folder_status(mailbox_id, name):
        """-> model.FolderStatus, without loading the message list."""

    def open_folder(mailbox_id, name):
        """Load a folder, first bringing it in step with the disk.
        -> model.FolderSnapshot(status, messages ordered by UID)."""

    def changes_since(mailbox_id, name, modseq):
        """Bring the folder in step with the disk (files added or removed by
        other tools, changes by other processes) and report what changed
        after ``modseq``. -> model.FolderChanges(uidvalidity, uidnext,
        highestmodseq, changed, vanished)."""

    def messages_saved_before(mailbox_id, name, before):
        """-> (MessageInfo, ...) saved into this folder before ``before``
        (POSIX seconds), ascending UID (the 60-day Spam expiry)."""

    # --- messages ---

    def add_message(mailbox_id, name, source, prefix=b"", flags=(), internal_date=None,
                    quota_bytes=None):
        """Store one message. ``source`` is a file path or a binary file
        object read to its end (off the reactor thread); ``prefix`` bytes
        (e.g. Return-Path: and X-Spam-* header lines) are put before it;
        line endings become CRLF. ``flags`` are set at once (APPEND);
        ``internal_date`` defaults to now. QuotaExceeded if usage + size >
        ``quota_bytes``. -> model.StoredMessage(folder, uidvalidity, info)."""

    def set_flags(mailbox_id, name, uids, flags, mode, unchanged_since=None):
        """Change flags: ``mode`` is model.FLAGS_ADD, FLAGS_REMOVE or
        FLAGS_REPLACE (IMAP +FLAGS, -FLAGS, FLAGS). Messages whose modseq
        is above ``unchanged_since`` are left alone and reported (RFC 7162).
        -> model.FlagChanges(changed infos with one new modseq, modified
        UIDs, highestmodseq)."""

    def claim_recent(mailbox_id, name, uids=None):
        """Clear ``\\Recent`` of ``uids`` (None = all) and move them from
        new/ to cur/: the caller's session owns them now. -> (uid, ...) claimed."""

    def expunge(mailbox_id, name, uids):
        """Remove messages for good (files first, then the index, leaving
        tombstones). -> model.Expunged(uids removed, highestmodseq)."""

    def copy_messages(mailbox_id, name, uids, dest_name, quota_bytes=None):
        """Copy messages (hard link, else copy) into ``dest_name`` with their
        flags, INTERNALDATE and ``\\Recent``; QuotaExceeded (nothing copied)
        if they do not fit. -> model.CopyResult (RFC 4315 COPYUID data)."""

    def move_messages(mailbox_id, name, uids, dest_name):
        """Move messages (rename) into ``dest_name``, expunging them from
        the source. -> model.CopyResult with source_highestmodseq."""

    def open_message(mailbox_id, name, uid):
        """-> an open binary file of the whole message (the caller closes it).
        NoSuchMessage if it is gone."""

    def message_path(mailbox_id, name, uid):
        """-> the path of the message file now (it changes with its flags;
        for readers such as the spam filter's train())."""

    def message_details(mailbox_id, name, uids, with_structure=True):
        """-> {uid: mime.MessageSummary} for the existing ``uids``: decoded
        header fields (SEARCH/SORT) and, if ``with_structure``, the MIME part
        tree with byte offsets (BODYSTRUCTURE, BODY[section], ENVELOPE).
        Cached in the index; parsed from the file when missing."""

    def read_messages(mailbox_id, name, uids, reader):
        """Read the files of many messages off the reactor thread: call
        ``reader(uid, fileobj)`` on a worker thread for each existing UID,
        with its binary file open at offset 0 (closed afterwards); readers
        do not hold up other operations of the mailbox while they read.
        -> {uid: what reader returned}. Missing UIDs are left out; a
        reader's exception fails the whole call (IMAP FETCH of header
        fields, SEARCH BODY/TEXT, webmail previews)."""

    def clean_stale_files():
        """Remove stale tmp/ files (Maildir: older than 36 h, or left by a
        crashed earlier process of this host) of every mailbox.
        -> int removed. Called once at daemon start."""


class IQueueStore(Interface):
    """The outbound queue (SPEC §5): one entry per message, with the message
    bytes and a ``model.QueueEntry`` (envelope and per-recipient state).

    Invariants kept by every implementation:
    - ``add`` is durable before its Deferred fires (message, entry and
      directory fsynced); an entry is never visible without its message;
    - ``update`` is an atomic, durable read-modify-write: concurrent updates
      (the daemon and ``ktmail-admin``) never lose each other's changes, and
      after a crash the entry is either the old or the new version;
    - entry ids are ``[a-z0-9-]{1,64}``; anything else is NotFound.
    """

    def add(entry, message_path):
        """Queue ``entry`` with the message file at ``message_path`` (linked or
        copied; the caller may delete its file afterwards). -> None.
        AlreadyExists if an entry with that id is queued."""

    def add_bytes(entry, message):
        """Queue ``entry`` with ``message`` (small messages such as DSNs). -> None.
        AlreadyExists if an entry with that id is queued."""

    def get(entry_id):
        """-> QueueEntry. NotFound."""

    def list_entries():
        """-> [QueueEntry], oldest first."""

    def update(entry_id, change):
        """Apply ``change(entry) -> entry`` atomically and durably. ``change``
        is pure and may run on another thread. -> the new QueueEntry, or
        None if the entry is gone (removed meanwhile)."""

    def remove(entry_id):
        """Delete the entry and its message. -> None. NotFound."""

    def open_message(entry_id):
        """-> a binary file object reading the message bytes (without the
        DKIM header). NotFound. The caller closes it; it stays readable
        even if the entry is removed meanwhile."""

    def notify_changed():
        """Tell a running daemon that entries were changed from outside
        (``ktmail-admin queue retry``). -> None."""

    def change_token():
        """-> a value that differs after each ``notify_changed``."""

    def recover():
        """Clean up after a crash: drop half-written files. Called once at
        start-up, before the first ``list_entries``. -> number cleaned."""

    def claim(entry_id):
        """Take the entry for one delivery round, exclusively among every
        process sharing the queue (several nodes on one shared directory):
        -> a claim with ``release() -> Deferred``, or None when another
        process holds it now. A claim ends with its process, also when the
        process dies, so a crashed node's entries are taken over."""


class IDkimKeyStore(Interface):
    """DKIM signing keys, one RSA key per domain, created on first use."""

    def private_key(domain):
        """-> (selector, PEM bytes of the private key); creates it if missing."""

    def public_record(domain):
        """-> (DNS name, TXT value) to publish; creates the key if missing."""

class ISpamStatsStore(Interface):
    """What the spam filter's Bayes classifier has learned (migration 003).

    A *scope* is 0 for the statistics of the whole service, or a mailbox id
    for that mailbox's own. Tokens are signed 64-bit integers (hashes).
    Invariants kept by every implementation, atomically per call:
    - a message (``message_key``) counts at most once per scope; learning it
      again as the same class changes nothing, learning it as the other
      class moves its counts over (a message moved out of Spam);
    - counts never go below zero.
    """

    def load_stats(scopes, tokens):
        """-> {scope: (nspam, nham, {token: (spam count, ham count)})} for every
        scope asked, with only the tokens that scope has seen."""

    def learn(scopes, message_key, tokens, is_spam, now=0.0):
        """Count one message as spam or ham in each scope (``now`` dates the
        tokens for pruning). -> {scope: "learned" | "relearned" | "already"}."""

    def prune(before):
        """Drop tokens seen in only one message and 'learned' records, last
        counted before ``before`` (POSIX seconds), in every scope.
        -> number of rows dropped."""

    def forget_scope(scope):
        """Drop everything learned in ``scope`` (a removed mailbox). Idempotent. -> None."""


class IMTASTSCache(Interface):
    """The MTA-STS policies (RFC 8461 §5.1) of recipient domains, kept
    across restarts. A record is a small JSON-able dict that
    ``services.mtasts`` builds and reads; the store does not interpret it.
    ``put`` replaces a domain's record atomically: after a crash it is
    either the old or the new one."""

    def get(domain):
        """-> the record of ``domain`` (lower-case), or None."""

    def put(domain, record):
        """Store ``record`` for ``domain``, replacing the old one. -> None."""
