"""Web sessions, their cookies and the CSRF tokens derived from them.

Owns: the logged-in state of portal (customer) and webmail (mailbox)
users. Invariants:

- a session exists only after a successful login (never one per
  cookieless GET), and every login gets a fresh random id: an id a browser
  held before logging in is dropped (no fixation);
- a session ends after ``idle_seconds`` without a request, after
  ``lifetime_seconds`` in any case, on logout, and when its account's
  password changes or the account is removed;
- the store holds at most ``max_sessions`` sessions (least recently used
  go first) and at most ``max_per_account`` per account, so memory stays
  bounded whatever clients do;
- the CSRF token is an HMAC of the session id under a per-process key:
  it differs from the id (which never appears in a page), and a token is
  worthless without the cookie it belongs to;
- cookies are ``HttpOnly; SameSite=Strict; Path=/`` and ``Secure`` exactly
  when the request came over TLS to this process (``request.isSecure()``:
  an ``ssl:`` web listener). A plain ``tcp:`` listener (local development,
  or behind a TLS-terminating proxy, SPEC §2) cannot mark them Secure; no
  proxy header is trusted to decide it. Secure cookies carry the
  ``__Host-`` prefix, so no other host or path can set them.

Sessions are kept in memory, not in the service database: every request
updates the idle clock, which would otherwise be a database write per
page view; a restart ending every web login is acceptable for a portal and
a webmail (mail clients are not affected), and no session secret is ever
at rest on disk.
"""

import collections
import hashlib
import hmac
import secrets

import attrs

#: session kinds, one cookie each: a browser may be logged into the portal
#: as the customer and into the webmail as one of its mailboxes at once
CUSTOMER = "customer"
MAILBOX = "mailbox"
_COOKIE_NAMES = {CUSTOMER: "ktmail_admin", MAILBOX: "ktmail_webmail"}
_LOGIN_COOKIE = "ktmail_login"


@attrs.frozen
class SessionPolicy:
    #: a session not used for this long has ended (the user must log in again)
    idle_seconds: float = 30 * 60
    #: no session lives longer than this, used or not
    lifetime_seconds: float = 12 * 3600
    max_sessions: int = 10_000
    max_per_account: int = 10


@attrs.define(eq=False)
class Session:
    id: str
    kind: str          # CUSTOMER or MAILBOX
    account: str       # customer login or mailbox username
    account_id: int
    created: float
    last_seen: float
    csrf_token: str
    #: per-session state of the surfaces (one-shot notices, webmail state …)
    data: dict = attrs.field(factory=dict)

    def pop_notice(self):
        """The message to show once on the next page, e.g. "Mailbox created"."""
        return self.data.pop("notice", None)


class SessionStore:
    """In-memory sessions with idle and absolute expiry and a size cap."""

    def __init__(self, clock, policy=SessionPolicy(), secret=None):
        self.clock = clock
        self.policy = policy
        self._secret = secret or secrets.token_bytes(32)
        self._sessions = collections.OrderedDict()   # id -> Session, least recently used first
        self._by_account = collections.defaultdict(set)  # (kind, account) -> {id}

    def __len__(self):
        return len(self._sessions)

    def _token(self, purpose, value):
        return hmac.new(self._secret, f"{purpose}\0{value}".encode(),
                        hashlib.sha256).hexdigest()

    def _expired(self, session, now):
        return (now - session.last_seen > self.policy.idle_seconds
                or now - session.created > self.policy.lifetime_seconds)

    def create(self, kind, account, account_id, replacing=None):
        """A new session after a successful login; ``replacing`` (the id the
        browser presented, if any) is dropped, so the id always changes."""
        if replacing:
            self.destroy(replacing)
        now = self.clock.seconds()
        if len(self._sessions) >= self.policy.max_sessions:
            self.sweep()
        while len(self._sessions) >= self.policy.max_sessions:
            self.destroy(next(iter(self._sessions)))
        mine = self._by_account[kind, account]
        while len(mine) >= self.policy.max_per_account:
            oldest = min(mine, key=lambda i: self._sessions[i].last_seen)
            self.destroy(oldest)
        session_id = secrets.token_urlsafe(32)
        session = Session(id=session_id, kind=kind, account=account, account_id=account_id,
                          created=now, last_seen=now,
                          csrf_token=self._token("csrf", session_id))
        self._sessions[session_id] = session
        mine.add(session_id)
        return session

    def get(self, session_id, kind):
        """The live session of that id and kind, its idle clock restarted;
        None when there is none or it has expired (then it is dropped)."""
        session = self._sessions.get(session_id or "")
        if session is None or session.kind != kind:
            return None
        now = self.clock.seconds()
        if self._expired(session, now):
            self.destroy(session_id)
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def destroy(self, session_id):
        session = self._sessions.pop(session_id, None)
        if session is not None:
            mine = self._by_account.get((session.kind, session.account))
            if mine is not None:
                mine.discard(session_id)
                if not mine:
                    del self._by_account[session.kind, session.account]

    def destroy_account(self, kind, account, keep=None):
        """End every session of an account (password changed, account
        removed), except ``keep``. -> how many ended."""
        ids = [i for i in self._by_account.get((kind, account), ()) if i != keep]
        for session_id in ids:
            self.destroy(session_id)
        return len(ids)

    def sweep(self):
        """Drop expired sessions. -> how many."""
        now = self.clock.seconds()
        doomed = [i for i, s in self._sessions.items() if self._expired(s, now)]
        for session_id in doomed:
            self.destroy(session_id)
        return len(doomed)

    # --- tokens ----------------------------------------------------------------

    def check_csrf(self, session, token):
        return bool(token) and hmac.compare_digest(session.csrf_token, token)

    def new_login_nonce(self):
        return secrets.token_urlsafe(24)

    def login_token(self, nonce):
        """The form token that goes with a login cookie (double submit: the
        attacker's page can neither read the cookie nor compute the token)."""
        return self._token("login", nonce)

    def check_login_token(self, nonce, token):
        return (bool(nonce) and bool(token)
                and hmac.compare_digest(self.login_token(nonce), token))


# --- cookies ---------------------------------------------------------------------


def cookie_name(base, secure):
    return ("__Host-" + base) if secure else base


def _set_cookie(request, base, value, max_age=None):
    secure = request.isSecure()
    request.addCookie(cookie_name(base, secure).encode(), value.encode(), path=b"/",
                      secure=secure, httpOnly=True, sameSite="strict",
                      max_age=None if max_age is None else str(max_age).encode())


def _read_cookie(request, base):
    value = request.getCookie(cookie_name(base, request.isSecure()).encode())
    return value.decode("ascii", "replace") if value else None


def set_session_cookie(request, session):
    # no Max-Age: the cookie ends with the browser; the server ends it sooner
    _set_cookie(request, _COOKIE_NAMES[session.kind], session.id)


def clear_session_cookie(request, kind):
    _set_cookie(request, _COOKIE_NAMES[kind], "", max_age=0)


def session_id_from(request, kind):
    return _read_cookie(request, _COOKIE_NAMES[kind])


def set_login_cookie(request, nonce):
    _set_cookie(request, _LOGIN_COOKIE, nonce, max_age=3600)


def login_nonce_from(request):
    return _read_cookie(request, _LOGIN_COOKIE)
