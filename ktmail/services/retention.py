"""Retention: the pure selectors that decide what is old enough to delete,
and the jobs that act on them on an injected clock.

Owns the 60-day Spam expiry (SPEC §1: "Spam messages older than 60 days are
deleted automatically"). Age is counted from a message's arrival *in the
Spam folder* (delivered there, or moved there by its owner), never from
its Date: header, which the sender chooses. The inactivity deletion (183
days) belongs here too; it plugs in as another job with the same
``name`` / ``run_once(dry_run)`` / ``service()`` shape.

Invariants: selectors are pure (``now`` is an argument); a job run is
idempotent (running it twice deletes nothing the second time) and never
overlaps itself; a failure for one mailbox is logged and the run goes on
with the next.
"""

import attrs
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from ktmail.model import SPAM_FOLDER
from ktmail.services import deferred

log = Logger()

DAY = 86400


def spam_cutoff(now, retention_days):
    """The arrival time before which Spam messages are expired."""
    return now - retention_days * DAY


def spam_to_expire(messages, now, retention_days):
    """Pure selector: UIDs of ``messages`` ([(uid, arrived)]) whose arrival is
    more than ``retention_days`` before ``now``, oldest first."""
    cutoff = spam_cutoff(now, retention_days)
    return [uid for uid, arrived in sorted(messages, key=lambda m: (m[1], m[0]))
            if arrived < cutoff]


def days_until_expiry(arrived, now, retention_days):
    """Whole days left before a Spam message is deleted (0: at the next run);
    what the webmail shows as 'deleted in N days'."""
    left = arrived + retention_days * DAY - now
    return max(0, -int(-left // DAY))


@attrs.frozen
class ExpiryReport:
    """What one run deleted (or, dry, would delete) in one mailbox."""

    mailbox: object
    folder: str
    uids: tuple


@attrs.define
class SpamExpiryJob:
    """Deletes Spam messages older than ``limits.spam_retention_days``
    through the mail store's ``IFolderExpiry``.

    ``accounts``: IAccountStore (list_mailboxes); ``folders``: IFolderExpiry;
    ``clock``: IReactorTime; ``audit``: IAuditLog or None.
    """

    name = "spam"
    accounts: object
    folders: object
    limits: object
    clock: object
    audit: object = None
    #: seconds between runs of the timer service
    interval: float = 3600.0
    _running: bool = attrs.field(default=False, init=False)

    @deferred
    async def run_once(self, dry_run=False):
        """-> [ExpiryReport] for every mailbox with something to delete."""
        if self._running:
            log.info("spam expiry still running; this turn is skipped")
            return []
        self._running = True
        try:
            return await self._run(dry_run)
        finally:
            self._running = False

    async def _run(self, dry_run):
        now = self.clock.seconds()
        days = self.limits.spam_retention_days
        cutoff = spam_cutoff(now, days)
        reports = []
        for mailbox in await self.accounts.list_mailboxes():
            try:
                found = await self.folders.messages_before(mailbox.id, SPAM_FOLDER, cutoff)
                uids = spam_to_expire(found, now, days)
                if not uids:
                    continue
                if not dry_run:
                    await self.folders.expunge(mailbox.id, SPAM_FOLDER, uids)
                    if self.audit is not None:
                        await self.audit.add_audit(now, "retention", "spam.expire",
                                                   mailbox.username, f"{len(uids)} messages")
                reports.append(ExpiryReport(mailbox=mailbox, folder=SPAM_FOLDER,
                                            uids=tuple(uids)))
            except Exception:  # noqa: BLE001 - one mailbox must not stop the others
                log.failure("spam expiry failed for mailbox {username}",
                            username=mailbox.username)
        if reports and not dry_run:
            log.info("spam expiry deleted {count} messages in {mailboxes} mailboxes",
                     count=sum(len(r.uids) for r in reports), mailboxes=len(reports))
        return reports

    def service(self):
        """A TimerService running the job every ``interval`` seconds (first at start)."""
        svc = TimerService(self.interval, self._tick)
        svc.clock = self.clock
        svc.setName("spam-expiry")
        return svc

    def _tick(self):
        return self.run_once().addErrback(
            lambda f: log.failure("spam expiry run failed", failure=f))


# The inactivity deletion (SPEC §1, 183 days) becomes a second job with the
# same shape: ``name``, ``run_once(dry_run) -> Deferred[[report]]`` and
# ``service()``. ``ktmail-admin expire`` runs every job in Core.retention_jobs.


def run_all(jobs, dry_run):
    """Run each job once, one after the other. -> Deferred[[(job name, reports)]]."""
    async def run():
        results = []
        for job in jobs:
            results.append((job.name, await job.run_once(dry_run)))
        return results
    return defer.Deferred.fromCoroutine(run())
