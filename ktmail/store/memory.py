"""In-memory fakes of the store interfaces, for fast service and protocol
tests. They keep the same invariants as the real stores and are held to the
same contract tests (tests/store/), so a test that passes against a fake
means something."""

import io
import itertools
import re

import attrs
from twisted.internet import defer
from zope.interface import implementer

from ktmail import errors
from ktmail.model import Customer, Mailbox
from ktmail.store import IAccountStore, IAuditLog, ICounterStore, IQueueStore, ISpamStatsStore


def _answer(fn):
    """Run ``fn`` now and hand its result or error back as a Deferred."""
    def wrapper(*args, **kwargs):
        return defer.maybeDeferred(fn, *args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@implementer(IAccountStore, ICounterStore, IAuditLog)
class MemoryStore:
    def __init__(self):
        self._ids = itertools.count(1)
        self._customers = {}      # login -> (Customer, hash)
        self._mailboxes = {}      # id -> (Mailbox, hash)
        self._events = {}         # key -> [(at, count)]
        self._audit = []

    def _taken(self, name):
        return name in self._customers or any(
            m.username == name for m, _ in self._mailboxes.values())

    def _customer_by_id(self, customer_id):
        for customer, _ in self._customers.values():
            if customer.id == customer_id:
                return customer
        raise errors.NoSuchCustomer()

    def _find(self, pred, missing):
        for mailbox, password_hash in self._mailboxes.values():
            if pred(mailbox):
                return mailbox, password_hash
        raise errors.NoSuchMailbox(missing)

    @_answer
    def add_customer(self, login, password_hash, now):
        if self._taken(login):
            raise errors.AlreadyExists(f"The name '{login}' is already taken; choose another.",
                                       field="login")
        customer = Customer(id=next(self._ids), login=login, created=now)
        self._customers[login] = (customer, password_hash)
        return customer

    @_answer
    def customer_password_hash(self, login):
        try:
            return self._customers[login]
        except KeyError:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.") from None

    def get_customer(self, login):
        return self.customer_password_hash(login).addCallback(lambda pair: pair[0])

    @_answer
    def get_customer_by_id(self, customer_id):
        return self._customer_by_id(customer_id)

    @_answer
    def set_customer_password(self, login, password_hash):
        if login not in self._customers:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
        self._customers[login] = (self._customers[login][0], password_hash)

    @_answer
    def list_customers(self):
        return sorted((c for c, _ in self._customers.values()), key=lambda c: c.login)

    @_answer
    def remove_customer(self, login):
        if login not in self._customers:
            raise errors.NoSuchCustomer(f"There is no customer '{login}'.")
        customer, _ = self._customers.pop(login)
        removed = self._list(customer.id)
        for mailbox in removed:
            del self._mailboxes[mailbox.id]
        return removed

    @_answer
    def add_mailbox(self, customer_id, username, address, password_hash, quota_bytes, now,
                    limit):
        self._customer_by_id(customer_id)
        count = len(self._list(customer_id))
        if count >= limit:
            raise errors.LimitReached(
                f"This customer already has {count} mailboxes, the most allowed ({limit}); "
                "remove one first.")
        if self._taken(username):
            raise errors.AlreadyExists(
                f"The username '{username}' is already taken; choose another.", field="username")
        if any(m.address == address for m, _ in self._mailboxes.values()):
            raise errors.AlreadyExists(f"The address {address} is already taken; choose another.",
                                       field="address")
        mailbox = Mailbox(id=next(self._ids), customer_id=customer_id, username=username,
                          address=address, quota_bytes=quota_bytes, created=now)
        self._mailboxes[mailbox.id] = (mailbox, password_hash)
        return mailbox

    @_answer
    def get_mailbox(self, mailbox_id):
        try:
            return self._mailboxes[mailbox_id][0]
        except KeyError:
            raise errors.NoSuchMailbox() from None

    @_answer
    def get_mailbox_by_username(self, username):
        return self._find(lambda m: m.username == username,
                          f"There is no mailbox '{username}'.")[0]

    @_answer
    def get_mailbox_by_address(self, address):
        return self._find(lambda m: m.address == address, f"There is no mailbox {address}.")[0]

    @_answer
    def mailbox_password_hash(self, username):
        return self._find(lambda m: m.username == username,
                          f"There is no mailbox '{username}'.")

    def _update(self, mailbox_id, password_hash=None, **changes):
        try:
            mailbox, old_hash = self._mailboxes[mailbox_id]
        except KeyError:
            raise errors.NoSuchMailbox() from None
        self._mailboxes[mailbox_id] = (attrs.evolve(mailbox, **changes),
                                       password_hash or old_hash)

    @_answer
    def set_mailbox_password(self, mailbox_id, password_hash):
        self._update(mailbox_id, password_hash)

    def _list(self, customer_id):
        return sorted((m for m, _ in self._mailboxes.values()
                       if customer_id is None or m.customer_id == customer_id),
                      key=lambda m: (m.address.domain, m.address.local))

    @_answer
    def list_mailboxes(self, customer_id=None):
        return self._list(customer_id)

    @_answer
    def remove_mailbox(self, mailbox_id, inactive_since=None):
        if mailbox_id not in self._mailboxes:
            raise errors.NoSuchMailbox()
        mailbox = self._mailboxes[mailbox_id][0]
        if inactive_since is not None and mailbox.last_activity > inactive_since:
            return None
        return self._mailboxes.pop(mailbox_id)[0]

    @_answer
    def record_login(self, mailbox_id, now):
        if mailbox_id in self._mailboxes:
            self._update(mailbox_id, last_login=now, warnings_sent=())

    @_answer
    def record_warning(self, mailbox_id, days_before):
        mailbox = self._mailboxes[mailbox_id][0] if mailbox_id in self._mailboxes else None
        if mailbox is None:
            raise errors.NoSuchMailbox()
        sent = set(mailbox.warnings_sent) | {int(days_before)}
        self._update(mailbox_id, warnings_sent=tuple(sorted(sent, reverse=True)))

    # ICounterStore
    @_answer
    def add_event(self, key, now, count=1):
        self._events.setdefault(key, []).append((now, count))
        self._events[key].sort()

    @_answer
    def events_since(self, key, since):
        return [e for e in self._events.get(key, []) if e[0] >= since]

    @_answer
    def clear_events(self, key):
        self._events.pop(key, None)

    @_answer
    def prune_events(self, before):
        dropped = 0
        for key, events in list(self._events.items()):
            kept = [e for e in events if e[0] >= before]
            dropped += len(events) - len(kept)
            self._events[key] = kept
        return dropped

    # IAuditLog
    @_answer
    def add_audit(self, now, actor, action, target, detail=""):
        self._audit.append((now, actor, action, target, detail))

    @_answer
    def list_audit(self, limit=100):
        return list(reversed(self._audit))[:limit]


_ENTRY_ID = re.compile(r"[a-z0-9-]{1,64}\Z")


@implementer(IQueueStore)
class MemoryQueueStore:
    """The outbound queue in memory: entries and message bytes in dicts."""

    def __init__(self):
        self._entries = {}     # id -> QueueEntry
        self._messages = {}    # id -> bytes
        self._token = 0

    def _check(self, entry_id):
        if not isinstance(entry_id, str) or not _ENTRY_ID.match(entry_id) \
                or entry_id not in self._entries:
            raise errors.NotFound(f"There is no queued message '{entry_id}'.")

    @_answer
    def add(self, entry, message_path):
        with open(message_path, "rb") as f:
            data = f.read()
        self._add(entry, data)

    @_answer
    def add_bytes(self, entry, message):
        self._add(entry, bytes(message))

    def _add(self, entry, data):
        if not _ENTRY_ID.match(entry.id):
            raise errors.NotFound(f"There is no queued message '{entry.id}'.")
        if entry.id in self._entries:
            raise errors.AlreadyExists(f"Message '{entry.id}' is already queued.")
        self._entries[entry.id] = entry
        self._messages[entry.id] = data

    @_answer
    def get(self, entry_id):
        self._check(entry_id)
        return self._entries[entry_id]

    @_answer
    def list_entries(self):
        return sorted(self._entries.values(), key=lambda e: (e.created, e.id))

    @_answer
    def update(self, entry_id, change):
        if entry_id not in self._entries:
            return None
        new = change(self._entries[entry_id])
        self._entries[entry_id] = new
        return new

    @_answer
    def remove(self, entry_id):
        self._check(entry_id)
        del self._entries[entry_id]
        del self._messages[entry_id]

    @_answer
    def open_message(self, entry_id):
        self._check(entry_id)
        return io.BytesIO(self._messages[entry_id])

    @_answer
    def notify_changed(self):
        self._token += 1

    @_answer
    def change_token(self):
        return self._token

    @_answer
    def recover(self):
        return 0
@implementer(ISpamStatsStore)
class MemorySpamStatsStore:
    """ISpamStatsStore in dicts."""

    def __init__(self):
        self._totals = {}     # scope -> [nspam, nham]
        self._tokens = {}     # scope -> {token: [nspam, nham]}
        self._learned = {}    # (scope, message_key) -> is_spam
        self._days = {}       # (scope, token or ("learned", key)) -> day last counted

    @_answer
    def load_stats(self, scopes, tokens):
        result = {}
        for scope in scopes:
            nspam, nham = self._totals.get(scope, (0, 0))
            seen = self._tokens.get(scope, {})
            result[scope] = (nspam, nham, {t: tuple(seen[t]) for t in tokens if t in seen})
        return result

    def _count(self, scope, tokens, index, delta, day=0):
        totals = self._totals.setdefault(scope, [0, 0])
        totals[index] = max(totals[index] + delta, 0)
        seen = self._tokens.setdefault(scope, {})
        for t in tokens:
            counts = seen.setdefault(t, [0, 0])
            counts[index] = max(counts[index] + delta, 0)
            if delta > 0:
                self._days[scope, t] = max(self._days.get((scope, t), 0), day)
            if counts == [0, 0]:
                del seen[t]
                self._days.pop((scope, t), None)

    @_answer
    def learn(self, scopes, message_key, tokens, is_spam, now=0.0):
        tokens = set(tokens)
        day = int(now // 86400)
        outcome = {}
        for scope in scopes:
            before = self._learned.get((scope, message_key))
            if before is not None and before == bool(is_spam):
                outcome[scope] = "already"
                continue
            if before is not None:
                self._count(scope, tokens, 0 if before else 1, -1)
            self._count(scope, tokens, 0 if is_spam else 1, +1, day)
            self._learned[scope, message_key] = bool(is_spam)
            self._days[scope, ("learned", message_key)] = day
            outcome[scope] = "relearned" if before is not None else "learned"
        return outcome

    @_answer
    def prune(self, before):
        day = int(before // 86400)
        dropped = 0
        for scope, seen in self._tokens.items():
            for t in [t for t, c in seen.items()
                      if sum(c) <= 1 and self._days.get((scope, t), 0) < day]:
                del seen[t]
                self._days.pop((scope, t), None)
                dropped += 1
        for scope, key in [k for k in self._learned
                           if self._days.get((k[0], ("learned", k[1])), 0) < day]:
            del self._learned[scope, key]
            self._days.pop((scope, ("learned", key)), None)
            dropped += 1
        return dropped

    @_answer
    def forget_scope(self, scope):
        self._totals.pop(scope, None)
        self._tokens.pop(scope, None)
        for key in [k for k in self._learned if k[0] == scope]:
            del self._learned[key]
        for key in [k for k in self._days if k[0] == scope]:
            del self._days[key]
