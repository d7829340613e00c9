"""Authentication for every protocol and the web, and the shared throttle.

Owns: password hashing (argon2id, always off the reactor thread), the
check of a mailbox login (mail protocols, webmail) and of a customer login
(portal), the record of the last successful login, and failed-login
throttling per client address and per username that every surface shares
(SPEC §4).

Invariants: a customer's credentials never open a mailbox and a mailbox's
credentials never open the portal (they are looked up in different tables,
and the two share one namespace, so a name is one or the other); a wrong
username and a wrong password cost the same time and give the same error;
a password never reaches a log.
"""

import ipaddress

import argon2
import attrs
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import MAX_PASSWORD_BYTES
from ktmail.services import deferred, events
from ktmail.services.ratelimit import SlidingWindowLimiter, Window

log = Logger()

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~30 ms here,
# and the memory stays bounded when many logins arrive at once.
_HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# A real hash to verify against when the user does not exist, so that a
# wrong username takes as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("ktmail dummy password")


def _verify(password_hash, password):
    try:
        return _HASHER.verify(password_hash, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


@attrs.define
class PasswordHasher:
    """argon2id hashing on a worker thread.

    ``run_in_thread(fn, *args) -> Deferred``; tap.py passes the reactor's
    thread pool, tests may pass a synchronous runner.
    """

    run_in_thread: object

    def hash(self, password):
        return self.run_in_thread(_HASHER.hash, password)

    def verify(self, password_hash, password):
        """-> Deferred[bool]; never raises for a wrong or malformed hash."""
        return self.run_in_thread(_verify, password_hash or _DUMMY_HASH, password)


def client_key(address):
    """The throttling key of a client address: the address itself, or its
    /64 for IPv6 (one host usually owns a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@attrs.frozen
class ThrottlePolicy:
    #: failures from one client address (any username) before it is refused
    per_address: Window = Window(limit=10, seconds=600)
    #: failures for one username (any address) before it is refused
    per_username: Window = Window(limit=30, seconds=900)
    #: extra wait before answering a failed attempt (slows guessing)
    failure_delay: float = 1.0


@attrs.define
class LoginThrottle:
    """Failed-login counting shared by SMTP, IMAP, POP3 and the web."""

    counters: object  # ICounterStore
    clock: object     # IReactorTime
    policy: ThrottlePolicy = ThrottlePolicy()

    def _limiters(self, username, address):
        yield (SlidingWindowLimiter(self.counters, self.policy.per_address),
               "login-fail-addr:" + client_key(address))
        if username:
            yield (SlidingWindowLimiter(self.counters, self.policy.per_username),
                   "login-fail-user:" + username)

    @deferred
    async def check(self, username, address):
        """Raise LoginThrottled if this attempt must be refused unheard."""
        now = self.clock.seconds()
        for limiter, key in self._limiters(username, address):
            decision = await limiter.peek(key, now)
            if not decision.allowed:
                wait = max(1, int((decision.retry_at or now + limiter.window.seconds) - now))
                raise errors.LoginThrottled(
                    f"Too many failed logins; try again in {(wait + 59) // 60} minutes.",
                    retry_after=wait)

    @deferred
    async def failed(self, username, address):
        now = self.clock.seconds()
        for limiter, key in self._limiters(username, address):
            await limiter.record(key, now)


@attrs.define
class AuthService:
    """Checks mailbox and customer credentials; one instance serves every surface."""

    accounts: object  # IAccountStore
    hasher: PasswordHasher
    throttle: LoginThrottle
    clock: object     # IReactorTime

    async def _attempt(self, kind, name, password, address, protocol, lookup):
        name = (name or "").strip().lower()
        try:
            await self.throttle.check(name, address)
        except errors.LoginThrottled:
            log.info("login refused (too many failures): {kind} {username!r} from {client} "
                     "over {protocol}", ktmail_event=events.LOGIN, kind=kind, username=name,
                     client=address, protocol=protocol, outcome="throttled")
            raise
        if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
            found, password_hash = None, None
        else:
            try:
                found, password_hash = await lookup(name)
            except errors.NotFound:
                found, password_hash = None, None
        ok = await self.hasher.verify(password_hash, password)
        if not (ok and found is not None):
            await self.throttle.failed(name, address)
            log.info("login failed: {kind} {username!r} from {client} over {protocol}",
                     ktmail_event=events.LOGIN, kind=kind, username=name, client=address,
                     protocol=protocol, outcome="failed")
            delay = self.throttle.policy.failure_delay
            if delay:
                await _sleep(self.clock, delay)
            raise errors.AuthFailed()
        return found

    @deferred
    async def authenticate_mailbox(self, username, password, address, protocol):
        """-> Mailbox for a mail login (IMAP, POP3, SMTP AUTH, webmail).

        Raises AuthFailed or LoginThrottled. Records the login time, which
        resets the inactivity clock (SPEC §1).
        """
        mailbox = await self._attempt("mailbox", username, password, address, protocol,
                                      self.accounts.mailbox_password_hash)
        await self.accounts.record_login(mailbox.id, self.clock.seconds())
        log.info("login ok: mailbox {username!r} from {client} over {protocol}",
                 ktmail_event=events.LOGIN, kind="mailbox", username=mailbox.username,
                 client=address, protocol=protocol, outcome="ok")
        return mailbox

    @deferred
    async def authenticate_customer(self, login, password, address):
        """-> Customer for a portal login. Raises AuthFailed or LoginThrottled."""
        customer = await self._attempt("customer", login, password, address, "web",
                                       self.accounts.customer_password_hash)
        log.info("login ok: customer {username!r} from {client}", ktmail_event=events.LOGIN,
                 kind="customer", username=customer.login, client=address, protocol="web",
                 outcome="ok")
        return customer


def _sleep(clock, seconds):
    d = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
