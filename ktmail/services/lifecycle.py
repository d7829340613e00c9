"""The inactivity lifecycle (SPEC §1): a mailbox nobody has logged into for
``inactive_delete_days`` is deleted with all its mail; its owner is warned
by mail 30 and 7 days before.

``inactivity_actions`` is the pure decision over mailbox records and a
time; ``InactivityJob`` is the shell that carries the decisions out on an
injected clock. The job is idempotent: running it twice at the same moment
sends no second warning and deletes nothing more. A mailbox created but
never used counts from its creation; any login (IMAP, POP3, SMTP AUTH,
webmail) resets the clock and the warnings (the auth service records it).
"""

import datetime
import email.policy
import email.utils
from email.message import EmailMessage

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from ktmail import errors
from ktmail.services import deferred

log = Logger()
DAY = 86400.0


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
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


@attrs.define
class InactivityJob:
    """Runs ``inactivity_actions`` and carries them out.

    ``deliver_notice(mailbox, message_bytes) -> Deferred`` puts the warning
    into the mailbox's INBOX (the delivery service, without spam scanning).
    """

    accounts: object          # services.accounts.AccountService
    deliver_notice: object
    clock: object             # IReactorTime
    policy: InactivityPolicy
    hostname: str

    @deferred
    async def run_once(self, dry_run=False):
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
                    for days in action.days_before:
                        await self.accounts.accounts.record_warning(action.mailbox.id, days)
                    log.info("inactivity warning sent to {address}: deleted on {day}",
                             address=str(action.mailbox.address), day=_iso_day(action.delete_at))
                done.append(action)
            except errors.NotFound:
                continue  # removed by someone else meanwhile
            except Exception:
                log.failure("inactivity job failed for {username}",
                            username=action.mailbox.username)
        return done


class PeriodicJobService(service.Service):
    """Runs ``job.run_once()`` every ``interval`` seconds on an injected clock,
    never two runs at once."""

    def __init__(self, name, job, interval, clock):
        self.setName(name)
        self._job = job
        self._interval = interval
        self._clock = clock
        self._loop = None
        self._running = None

    def _tick(self):
        if self._running is not None:
            return None
        d = defer.maybeDeferred(self._job.run_once)
        d.addErrback(lambda f: log.failure("{name} failed", f, name=self.name))
        self._running = d

        def done(_):
            self._running = None
        d.addBoth(done)
        return None

    def startService(self):
        service.Service.startService(self)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running
