"""Retention: the pure selectors that decide what is old enough to delete,
and the jobs that act on them on an injected clock.

Owns the 60-day Spam expiry (SPEC §1: "Spam messages older than 60 days are
deleted automatically"). Age is counted from a message's arrival *in the
Spam folder* (delivered there, or moved there by its owner), never from
its Date: header, which the sender chooses.

Owns the inactivity lifecycle too (SPEC §1): a mailbox nobody has logged
into for ``inactive_delete_days`` is deleted with all its mail; its owner
is warned by mail 30 and 7 days before. A mailbox created but never used
counts from its creation; any login (IMAP, POP3, SMTP AUTH, webmail)
resets the clock and the warnings (the auth service records it).

Both jobs have the shape ``name`` / ``run_once(dry_run)`` / ``service()``;
``ktmail-admin expire`` runs each once.

Invariants: selectors are pure (``now`` is an argument); a job run is
idempotent (running it twice deletes nothing the second time) and never
overlaps itself; a failure for one mailbox is logged and the run goes on
with the next.
"""

import datetime
import email.policy
import email.utils
from email.message import EmailMessage

import attrs
from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import SPAM_FOLDER

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
    #: (uid, time it arrived in the folder) of each message, as uids
    arrived: tuple = ()


class PeriodicJob:
    """What the retention jobs share: ``run_once(dry_run)`` never overlaps
    itself (a turn that finds the previous run still working is skipped),
    and ``service()`` runs the job every ``interval`` seconds on the job's
    clock, the first time at start. Subclasses define ``name``,
    ``interval``, ``clock`` and ``_run(dry_run)``."""

    _running = False

    def run_once(self, dry_run=False):
        """-> Deferred[[report]] of what was done (or, dry, would be done)."""
        if self._running:
            log.info("{name} job still running; this turn is skipped", name=self.name)
            return defer.succeed([])
        self._running = True

        def finished(result):
            self._running = False
            return result
        return defer.Deferred.fromCoroutine(self._run(dry_run)).addBoth(finished)

    def service(self):
        svc = TimerService(self.interval, self._tick)
        svc.clock = self.clock
        svc.setName(f"retention-{self.name}")
        return svc

    def _tick(self):
        return self.run_once().addErrback(
            lambda f: log.failure("{name} job failed", failure=f, name=self.name))


@attrs.define(slots=False)
class SpamExpiryJob(PeriodicJob):
    """Deletes Spam messages older than ``limits.spam_retention_days``.

    ``accounts``: IAccountStore (list_mailboxes); ``folders``: the mailboxes
    service (``messages_saved_before(mailbox, folder, before)`` -> infos with
    ``uid`` and ``saved_at``, the time the message arrived in that folder;
    ``expunge(mailbox, folder, uids)``, which tells open sessions);
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

    async def _run(self, dry_run):
        """-> [ExpiryReport] for every mailbox with something to delete."""
        now = self.clock.seconds()
        days = self.limits.spam_retention_days
        cutoff = spam_cutoff(now, days)
        reports = []
        for mailbox in await self.accounts.list_mailboxes():
            try:
                found = [(info.uid, info.saved_at) for info in
                         await self.folders.messages_saved_before(mailbox, SPAM_FOLDER, cutoff)]
                uids = spam_to_expire(found, now, days)
                if not uids:
                    continue
                if not dry_run:
                    await self.folders.expunge(mailbox, SPAM_FOLDER, uids)
                    if self.audit is not None:
                        await self.audit.add_audit(now, "retention", "spam.expire",
                                                   mailbox.username, f"{len(uids)} messages")
                when = dict(found)
                reports.append(ExpiryReport(mailbox=mailbox, folder=SPAM_FOLDER,
                                            uids=tuple(uids),
                                            arrived=tuple((uid, when[uid]) for uid in uids)))
            except Exception:  # noqa: BLE001 - one mailbox must not stop the others
                log.failure("spam expiry failed for mailbox {username}",
                            username=mailbox.username)
        if reports and not dry_run:
            log.info("spam expiry deleted {count} messages in {mailboxes} mailboxes",
                     count=sum(len(r.uids) for r in reports), mailboxes=len(reports))
        return reports



def run_all(jobs, dry_run):
    """Run each job once, one after the other. -> Deferred[[(job name, reports)]]."""
    async def run():
        results = []
        for job in jobs:
            results.append((job.name, await job.run_once(dry_run)))
        return results
    return defer.Deferred.fromCoroutine(run())


# --- inactivity -----------------------------------------------------------------------


@attrs.frozen
class InactivityPolicy:
    delete_after_days: int = 183
    #: warnings are sent this many days before the deletion, once each
    warn_days_before: tuple = (30, 7)

    def deletion_time(self, mailbox):
        return mailbox.last_activity + self.delete_after_days * DAY


@attrs.frozen
class InactivityAction:
    mailbox: object          # model.Mailbox
    kind: str                # "warn" or "delete"
    delete_at: float         # when the mailbox goes (or went) if nobody logs in
    #: for warnings: the warning thresholds this one satisfies (days before)
    days_before: tuple = ()


def inactivity_actions(mailboxes, now, policy):
    """What the job must do now: delete the expired mailboxes, and warn the
    owners of those within a warning threshold that has not been warned for
    it yet. A late run sends one warning, the most urgent one, covering the
    thresholds already passed."""
    actions = []
    for mailbox in mailboxes:
        delete_at = policy.deletion_time(mailbox)
        if now >= delete_at:
            actions.append(InactivityAction(mailbox, "delete", delete_at))
            continue
        due = tuple(d for d in sorted(policy.warn_days_before, reverse=True)
                    if now >= delete_at - d * DAY and d not in mailbox.warnings_sent)
        if due:
            actions.append(InactivityAction(mailbox, "warn", delete_at, due))
    return actions


def warning_message(mailbox, delete_at, hostname, now):
    """The warning mail, in Swedish and English, as CRLF bytes."""
    day = email.utils.formatdate(delete_at, usegmt=True)[:16]
    iso = _iso_day(delete_at)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Postmaster <postmaster@{hostname}>"
    msg["To"] = str(mailbox.address)
    msg["Subject"] = (f"Din e-postlåda {mailbox.address} tas bort {iso} / "
                      f"Your mailbox will be deleted on {iso}")
    msg["Date"] = email.utils.formatdate(now, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid("inactivity", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"Hej,\n\n"
        f"ingen har loggat in på e-postlådan {mailbox.address} (användarnamn "
        f"{mailbox.username}) på länge. Den tas bort automatiskt {iso}, med all e-post "
        f"i den, om ingen loggar in före dess.\n\n"
        f"Vill du behålla den räcker det att logga in en gång: i webbmejlen, eller med "
        f"ditt e-postprogram (IMAP, POP3 eller när du skickar e-post).\n\n"
        f"---\n\n"
        f"Hello,\n\n"
        f"nobody has logged into the mailbox {mailbox.address} (username "
        f"{mailbox.username}) for a long time. It will be deleted automatically on "
        f"{day}, with all its mail, unless someone logs in before then.\n\n"
        f"To keep it, log in once: in the webmail, or with your mail program (IMAP, "
        f"POP3, or by sending mail).\n")
    return msg.as_bytes()


def _iso_day(t):
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d")


@attrs.define(slots=False)
class InactivityJob(PeriodicJob):
    """Runs ``inactivity_actions`` and carries them out.

    ``deliver_notice(mailbox, message_bytes) -> Deferred`` puts the warning
    into the mailbox's INBOX (the delivery service, without spam scanning).
    """

    name = "inactivity"
    accounts: object          # services.accounts.AccountService
    deliver_notice: object
    clock: object             # IReactorTime
    policy: InactivityPolicy
    hostname: str
    #: seconds between runs of the timer service
    interval: float = 3600.0

    async def _run(self, dry_run):
        """-> [InactivityAction] done (or that would be done, if dry_run)."""
        now = self.clock.seconds()
        mailboxes = await self.accounts.list_mailboxes()
        actions = inactivity_actions(mailboxes, now, self.policy)
        if dry_run:
            return actions
        done = []
        for action in actions:
            try:
                if action.kind == "delete":
                    removed = await self.accounts.remove_inactive_mailbox(
                        action.mailbox.username, now - self.policy.delete_after_days * DAY,
                        "lifecycle", f"unused since {_iso_day(action.mailbox.last_activity)}")
                    if removed is None:
                        continue  # somebody logged in meanwhile
                else:
                    await self.deliver_notice(action.mailbox, warning_message(
                        action.mailbox, action.delete_at, self.hostname, now))
                    await self.accounts.record_inactivity_warning(action.mailbox,
                                                                  action.days_before)
                    log.info("inactivity warning sent to {address}: deleted on {day}",
                             address=str(action.mailbox.address), day=_iso_day(action.delete_at))
                done.append(action)
            except errors.NotFound:
                continue  # removed by someone else meanwhile
            except Exception:  # noqa: BLE001 - one mailbox must not stop the others
                log.failure("inactivity job failed for {username}",
                            username=action.mailbox.username)
        return done

