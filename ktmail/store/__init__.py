"""Storage contracts (zope.interface). Services depend on these, never on an
implementation; ``tap.py`` picks the implementation.

Every method returns a Deferred: implementations run their I/O off the
reactor thread (``store/sqlite.py`` through a thread pool) or, for the
in-memory fakes in ``store/memory.py``, answer at once. The same contract
tests (tests/store/) run against every implementation.

Times are POSIX seconds (float) passed in by the caller, who got them from
an injected ``IReactorTime``; stores never read the clock themselves.
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

    Mailboxes are named by their account id. This is the part of the
    contract the account service needs; the folder and message operations
    are declared below it.
    """

    def create_mailbox(mailbox_id):
        """Create the Maildir++ with the DEFAULT_FOLDERS. Idempotent. -> None."""

    def remove_mailbox(mailbox_id):
        """Delete every message, folder and index of the mailbox. Idempotent. -> None."""

    def usage(mailbox_id):
        """-> bytes used by all folders of the mailbox together."""


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


class IFolderExpiry(Interface):
    """What the Spam expiry needs from the mail store (implemented by the
    Maildir store; ``arrived`` is when the message was stored in that
    folder, by delivery, APPEND, COPY or MOVE)."""

    def messages_before(mailbox_id, folder, before):
        """-> Deferred[[(uid, arrived)]] of the messages of ``folder`` that
        arrived there before ``before`` (POSIX seconds)."""

    def expunge(mailbox_id, folder, uids):
        """Delete those messages (UIDs no longer there are ignored), durably,
        notifying open sessions. -> Deferred[int] number deleted."""
