"""``SpamFilter``: the imperative shell around the pure scoring core.

Called by the delivery service (``scan``) for every inbound message and by
the mailboxes service (``train``) when a user moves a message into or out
of Spam; ``forget_mailbox`` is an account-removal hook.

Invariants: the reactor thread never parses, tokenizes or hashes a message
(``run_in_thread``); the store is reached only through ``ISpamStatsStore``;
a scan never fails because the statistics or DNS are unavailable: it then
scores without them (and logs why), so mail is never held up or lost by
the filter. Unknown ``[spam_scores]`` rule names stop construction with a
``ValidationError`` naming ``spam_scores.NAME``.
"""

import attrs
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from ktmail.services import deferred
from ktmail.services.spam import auth as spam_auth
from ktmail.services.spam.bayes import (
    GLOBAL_SCOPE,
    BayesStats,
    choose_stats,
    message_key,
    tokenize_hashed,
)
from ktmail.services.spam.facts import domain_of
from ktmail.services.spam.message import TOTAL_LIMIT, parse_bytes, read_bounded
from ktmail.services.spam.scoring import RuleSet, score

log = Logger()


@attrs.frozen
class Analysis:
    """A message read off the reactor thread: parsed, tokenized, and (small
    enough and signed) its raw bytes for DKIM."""

    message: object
    tokens: tuple
    key: str
    raw: bytes | None = None


def analyse_file(path, want_raw=False):
    """Read, parse and tokenize the message at ``path`` (run in a thread)."""
    with open(path, "rb") as f:
        data, size, truncated = read_bounded(f)
    message = parse_bytes(data, size, truncated)
    raw = None
    if want_raw and message.has("dkim-signature") and size <= spam_auth.DKIM_MAX_BYTES:
        if not truncated and size <= TOTAL_LIMIT:
            raw = data
        else:
            with open(path, "rb") as f:
                raw = f.read(spam_auth.DKIM_MAX_BYTES + 1)
    return Analysis(message=message, tokens=tuple(tokenize_hashed(message)),
                    key=message_key(message), raw=raw)


@attrs.define
class SpamFilter:
    """Scores inbound mail and learns from what users move into/out of Spam.

    ``spam_config``: config.SpamConfig; ``stats``: ISpamStatsStore;
    ``run_in_thread(fn, *args) -> Deferred``; ``clock``: IReactorTime (DNS
    deadline); ``resolver``: auth.DNSResolver, or None to skip SPF/DKIM/DMARC;
    ``hostname``: the authserv-id of Authentication-Results:.
    """

    spam_config: object
    stats: object
    run_in_thread: object
    clock: object
    resolver: object = None
    hostname: str = "localhost"
    #: seconds all DNS checks of one message may take together
    dns_timeout: float = 10.0
    #: days a token seen in a single message is kept
    keep_days: int = 180
    rules: RuleSet = attrs.field(init=False)

    def __attrs_post_init__(self):
        self.rules = RuleSet.from_config(self.spam_config)

    # --- scanning ----------------------------------------------------------------

    @deferred
    async def scan(self, path, envelope, mailbox):
        """-> SpamVerdict for the message file at ``path`` delivered to
        ``mailbox`` (None: no mailbox, global statistics only)."""
        analysis = await self.run_in_thread(analyse_file, path, self.resolver is not None)
        stats = await self._stats(analysis.tokens, mailbox)
        auth = await self._authenticate(analysis, envelope)
        verdict = await self.run_in_thread(score, analysis.message, self.rules, stats, auth)
        if auth is not None:
            verdict = attrs.evolve(verdict,
                                   authentication_results=auth.header_value(self.hostname))
        return verdict

    async def _stats(self, tokens, mailbox):
        scopes = [GLOBAL_SCOPE] if mailbox is None else [mailbox.id, GLOBAL_SCOPE]
        try:
            loaded = await self.stats.load_stats(scopes, tokens)
        except Exception:  # noqa: BLE001 - score without Bayes rather than hold mail up
            log.failure("spam statistics unavailable; scoring without Bayes")
            return None
        by_scope = {scope: BayesStats(nspam=nspam, nham=nham, counts=counts, scope=scope)
                    for scope, (nspam, nham, counts) in loaded.items()}
        return choose_stats(by_scope, mailbox.id if mailbox is not None else GLOBAL_SCOPE)

    async def _authenticate(self, analysis, envelope):
        if self.resolver is None:
            return None
        from_domain = domain_of(analysis.message.address("from")[1])
        d = spam_auth.authenticate(self.resolver, analysis.message, analysis.raw, envelope,
                                   from_domain, self.run_in_thread)
        d.addTimeout(self.dns_timeout, self.clock)
        try:
            return await d
        except defer.TimeoutError:
            log.info("SPF/DKIM/DMARC checks took over {seconds}s; scoring without them",
                     seconds=self.dns_timeout)
        except Exception:  # noqa: BLE001
            log.failure("SPF/DKIM/DMARC checks failed; scoring without them")
        return None

    # --- learning ----------------------------------------------------------------------

    @deferred
    async def train(self, mailbox, path, is_spam):
        """Learn the message at ``path`` as spam (moved into Spam) or ham
        (moved out of it), globally and for ``mailbox``."""
        analysis = await self.run_in_thread(analyse_file, path, False)
        await self.stats.learn([GLOBAL_SCOPE, mailbox.id], analysis.key, analysis.tokens,
                               bool(is_spam), self.clock.seconds())

    def prune_statistics(self):
        """Drop tokens seen in one message only and not for ``keep_days``
        (most tokens are such one-offs: this bounds the database). -> Deferred[int]."""
        return self.stats.prune(self.clock.seconds() - self.keep_days * 86400)

    def pruning_service(self, interval=86400.0):
        """A TimerService running prune_statistics() daily (first at start)."""
        def tick():
            return self.prune_statistics().addErrback(
                lambda f: log.failure("pruning spam statistics failed", failure=f))
        svc = TimerService(interval, tick)
        svc.clock = self.clock
        svc.setName("spam-statistics-pruning")
        return svc

    def forget_mailbox(self, mailbox):
        """Drop what was learned for a removed mailbox. -> Deferred[None]."""
        return self.stats.forget_scope(mailbox.id)

