"""The outbound queue (SPEC §5): mail for remote recipients waits here until
each recipient's mail server has accepted it, refused it, or five days
have passed.

Owns: ``OutboundQueue.enqueue`` (the seam submission and webmail call),
one delivery round per queue entry (``attempt``), the retry schedule, the
DSNs to senders, and ``OutboundScheduler``, the service that runs rounds
when they fall due. The queue's files are an ``IQueueStore``; the SMTP
conversation is an injected client (``ktmail.protocols.smtp_client``);
routes come from ``routing.MXRouter``; DSNs for our own users go through
an injected ``deliver_local(recipient, message_file)``.

Invariants:
- ``enqueue`` fires only after the message and its entry are durable;
- a recipient's acceptance (250 to DATA, or local delivery) is recorded
  durably as soon as it is known, before anything else happens to that
  entry, so that a restart never sends to that recipient again;
- a recipient is retried only after a temporary failure (4xx, no
  connection, DNS trouble), with back-off (5 min doubling to 1 h, then
  hourly) for ``lifetime`` (5 days), then it fails;
- every failure is reported to the sender exactly once, in one DSN per
  delivery round (a failure DSN's queue id is derived from the entry's, so
  a crash between queueing the DSN and recording it cannot make two); a
  message from the null sender (a DSN) is never reported on;
- a "still trying" notice goes to the sender once, after 4 hours;
- at most ``max_connections`` SMTP sessions run at once, and at most
  ``max_per_destination`` to one destination (domain or smarthost);
- MTA-STS (RFC 8461, ``services.mtasts``), for deliveries by MX lookup
  only (never to the smarthost): under an "enforce" policy only the MX
  hosts the policy names are tried, each with mandatory verified TLS, and
  when none may be tried the recipients are deferred (4xx, never a bounce
  of its own: the queue's lifetime still applies); "testing" delivers as
  before and logs what "enforce" would refuse. One log line per delivery
  says ``mta-sts=enforce|testing|none|absent``.
"""

import io
import re
import secrets

import attrs
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from ktmail import errors
from ktmail.model import (
    DELIVERED,
    FAILED,
    PENDING,
    Address,
    QueuedRecipient,
    QueueEntry,
)
from ktmail.services import deferred, dsn, events
from ktmail.services.messagetext import CHUNK, header_block
from ktmail.services.routing import NoRoute

log = Logger()

#: what may stand between MAIL FROM's angle brackets (no space, no control)
_REVERSE_PATH = re.compile(r"[^\s<>\x00-\x1f\x7f]{0,254}\Z")


# --- what the SMTP client reports -------------------------------------------------


@attrs.frozen
class Reply:
    """An SMTP reply (or a synthetic one, with ``host`` empty)."""

    code: int
    text: str
    host: str = ""

    def __str__(self):
        return f"{self.code} {self.text}"

    @property
    def ok(self):
        return 200 <= self.code < 300

    @property
    def permanent(self):
        return self.code >= 500


class SessionFailed(Exception):
    """The SMTP session ended before any recipient got an answer: no
    connection, a time-out, or a refusal of the greeting, EHLO or MAIL FROM.
    ``reply`` says why; a 5xx one is final for every recipient, anything
    else means "try the next host"."""

    def __init__(self, reply):
        super().__init__(str(reply))
        self.reply = reply


@attrs.frozen
class SessionResult:
    """What one SMTP session said: ``replies`` {recipient: Reply}, known at
    the reply to DATA; ``closed`` fires once the connection is gone (after
    QUIT), which is when it stops counting against the connection limits."""

    replies: dict
    closed: object = attrs.field(factory=lambda: defer.succeed(None))


@attrs.frozen
class OutgoingMessage:
    """What the SMTP client sends: ``prefix`` (the DKIM-Signature header)
    then the bytes of ``file``, a binary file positioned at 0."""

    prefix: bytes
    file: object
    size: int
    eight_bit: bool

    def rewind(self):
        self.file.seek(0)


# --- the schedule (pure) -----------------------------------------------------------


@attrs.frozen
class RetryPolicy:
    first_retry: float = 5 * 60
    max_retry: float = 60 * 60
    lifetime: float = 5 * 86400
    delay_notice_after: float = 4 * 3600

    def retry_at(self, attempts, now, created):
        """When to try again after the ``attempts``-th temporary failure."""
        wait = min(self.first_retry * 2 ** max(attempts - 1, 0), self.max_retry)
        return min(now + wait, created + self.lifetime)

    def expired(self, now, created):
        return now >= created + self.lifetime


def apply_outcomes(entry, outcomes, now, policy):
    """The entry after the replies in ``outcomes`` ({address: Reply}):
    2xx delivered, 5xx failed, 4xx retried later or, past the lifetime,
    failed. Recipients no longer pending are left alone."""
    for address, reply in outcomes.items():
        try:
            r = entry.recipient(address)
        except KeyError:
            continue
        if r.state != PENDING:
            continue
        common = {"attempts": r.attempts + 1, "remote_mta": reply.host}
        if reply.ok:
            r = attrs.evolve(r, state=DELIVERED, reply=str(reply), **common)
        elif reply.permanent or policy.expired(now, entry.created):
            r = attrs.evolve(r, state=FAILED, reply=str(reply), last_error=str(reply), **common)
        else:
            r = attrs.evolve(r, last_error=str(reply),
                             next_attempt=policy.retry_at(r.attempts + 1, now, entry.created),
                             **common)
        entry = entry.replace_recipient(r)
    return entry


def work_due_at(entry):
    """When the scheduler must next run a round for ``entry``: at once when
    it has unreported failures or is finished (to report and remove it),
    else at its earliest pending recipient's next attempt."""
    if not entry.pending or (entry.sender and entry.unreported_failures):
        return 0.0
    return entry.next_attempt


# --- the queue -------------------------------------------------------------------

#: what ``attempt`` returns when another process holds the entry
BUSY = "busy"
#: seconds before an entry another process was delivering is looked at again
BUSY_RETRY_SECONDS = 60.0


class OutboundQueue:
    """``enqueue`` messages; ``attempt`` one delivery round on an entry.

    Collaborators:
    - ``store``: IQueueStore;
    - ``signer``: ``services.dkim.DkimSigner``;
    - ``router``: ``services.routing.MXRouter``;
    - ``client``: ``deliver(host, address, port, sender, recipients, message)
      -> Deferred[SessionResult]`` (one SMTP session; raises SessionFailed),
      e.g. ``protocols.smtp_client.SMTPDeliveryClient``;
    - ``deliver_local(recipient: model.Address, message_file) -> Deferred``:
      stores a DSN in one of our own mailboxes (null envelope sender, no
      spam scan); fails with a KtmailError (``temporary`` or not);
    - ``clock``: IReactorTime; ``hostname``: ours; ``local_domains``: the
      hosted domains (their recipients go to ``deliver_local``);
    - ``mta_sts``: ``services.mtasts.PolicyResolver`` or None (no MTA-STS).
    """

    def __init__(self, store, signer, router, client, deliver_local, clock, hostname,
                 local_domains, policy=RetryPolicy(), max_connections=20,
                 max_per_destination=2, mta_sts=None):
        self.store = store
        self.signer = signer
        self.router = router
        self.client = client
        self.deliver_local = deliver_local
        self.clock = clock
        self.hostname = hostname
        self.local_domains = frozenset(local_domains)
        self.policy = policy
        self.max_per_destination = max_per_destination
        self.mta_sts = mta_sts
        self._connections = defer.DeferredSemaphore(max_connections)
        self._per_destination = {}
        #: called with each new or changed QueueEntry (the scheduler listens)
        self.on_change = lambda entry: None

    # -- enqueue --------------------------------------------------------------

    @deferred
    async def enqueue(self, envelope, spool):
        """Queue the message in ``spool`` for ``envelope.recipients`` (remote
        ones). -> the queue id, once the message is durable and signed."""
        recipients = tuple(dict.fromkeys(str(a) for a in envelope.recipients))
        if not recipients:
            raise ValueError("enqueue needs at least one recipient")
        if not _REVERSE_PATH.match(envelope.sender):
            raise errors.SenderRejected("The sender address is not valid.")
        entry_id = secrets.token_hex(8)
        header, eight_bit, size = await self.signer.sign(lambda: open(spool.path, "rb"),
                                                         envelope.sender)
        now = self.clock.seconds()
        entry = QueueEntry(
            id=entry_id, sender=envelope.sender, created=now, size=size,
            dkim_header=header, eight_bit=eight_bit,
            recipients=tuple(QueuedRecipient(address=a, next_attempt=now)
                             for a in recipients))
        await self.store.add(entry, spool.path)
        log.info("queued {id}: <{sender}> to {count} recipient(s), {size} bytes",
                 id=entry_id, sender=envelope.sender, count=len(recipients), size=size)
        self.on_change(entry)
        return entry_id

    async def _enqueue_notice(self, entry_id, recipient, message):
        """Queue a DSN (null sender) unless ``entry_id`` is already queued."""
        header, eight_bit = b"", False
        if recipient.rpartition("@")[2] not in self.local_domains:
            header, eight_bit, _ = await self.signer.sign(lambda: io.BytesIO(message), "")
        now = self.clock.seconds()
        entry = QueueEntry(id=entry_id, sender="", created=now, size=len(message),
                           dkim_header=header, eight_bit=eight_bit,
                           recipients=(QueuedRecipient(address=recipient, next_attempt=now),))
        try:
            await self.store.add_bytes(entry, message)
        except errors.AlreadyExists:
            return  # queued before a crash; the entry was not yet marked
        self.on_change(entry)

    # -- one delivery round ---------------------------------------------------

    @deferred
    async def attempt(self, entry_id):
        """Try every due recipient of the entry once, record the outcomes,
        report failures, remove the entry when nothing is left to do.
        -> the entry afterwards, None when it is gone, or BUSY when another
        process (another node sharing the queue) is delivering it now.

        The round holds the store's claim on the entry throughout, and reads
        the entry only once it holds it, so no recipient is sent twice."""
        try:
            claim = await self.store.claim(entry_id)
        except errors.NotFound:
            return None
        if claim is None:
            return BUSY
        try:
            return await self._attempt_claimed(entry_id)
        finally:
            await claim.release()

    async def _attempt_claimed(self, entry_id):
        try:
            entry = await self.store.get(entry_id)
        except errors.NotFound:
            return None
        now = self.clock.seconds()
        due = [r.address for r in entry.pending if r.next_attempt <= now]
        groups = {}
        for address in due:
            domain = address.rpartition("@")[2].lower()
            key = ("local", domain) if domain in self.local_domains else \
                ("remote", self.router.destination(domain))
            groups.setdefault(key, []).append(address)
        rounds = [defer.Deferred.fromCoroutine(self._deliver_group(entry, key, addresses))
                  for key, addresses in groups.items()]
        results = await defer.DeferredList(rounds, consumeErrors=True)
        for ok, failure in results:
            if not ok:
                log.failure("delivery round of {id} failed", failure, id=entry_id)
        try:
            entry = await self.store.get(entry_id)
        except errors.NotFound:
            log.info("{id} was removed during delivery", id=entry_id)
            return None
        return await self._finish_round(entry)

    async def _deliver_group(self, entry, key, addresses):
        kind, destination = key
        if kind == "local":
            await self._record(entry.id, await self._deliver_locally(entry, addresses))
            return
        semaphore = self._per_destination.setdefault(
            destination, defer.DeferredSemaphore(self.max_per_destination))
        await semaphore.acquire()
        try:
            await self._connections.acquire()
            try:
                result = await self._deliver_remote(entry, addresses)
                # durable before anything else: a restart must not resend
                await self._record(entry.id, result.replies)
                await result.closed
            finally:
                self._connections.release()
        finally:
            semaphore.release()
            if not semaphore.waiting and semaphore.tokens == semaphore.limit:
                self._per_destination.pop(destination, None)

    async def _record(self, entry_id, outcomes):
        now = self.clock.seconds()
        policy = self.policy
        updated = await self.store.update(
            entry_id, lambda e: apply_outcomes(e, outcomes, now, policy))
        for address, reply in outcomes.items():
            state = "delivered" if reply.ok else ("failed" if reply.permanent else "deferred")
            log.info("{id} to <{recipient}>: {outcome} ({reply}{via})",
                     ktmail_event=events.OUTBOUND, id=entry_id, recipient=str(address),
                     outcome=state, reply=str(reply),
                     via=f" from {reply.host}" if reply.host else "")
        if updated is None:
            log.info("{id} was removed during delivery", id=entry_id)

    async def _deliver_locally(self, entry, addresses):
        outcomes = {}
        for address in addresses:
            f = await self.store.open_message(entry.id)
            try:
                await self.deliver_local(Address.parse(address), f)
                outcomes[address] = Reply(250, "2.0.0 Delivered to the local mailbox")
            except errors.KtmailError as e:
                code = 451 if e.temporary else 550
                status = "4.2.0" if e.temporary else "5.1.1"
                outcomes[address] = Reply(code, f"{status} {e.text}")
            except Exception:
                log.failure("local delivery of {id} to <{rcpt}> failed", id=entry.id,
                            rcpt=address)
                outcomes[address] = Reply(451, "4.3.0 Local delivery failed; will retry")
            finally:
                f.close()
        return outcomes

    async def _deliver_remote(self, entry, addresses):
        domain = addresses[0].rpartition("@")[2].lower()
        try:
            hops = await self.router.route(domain)
        except NoRoute as e:
            return SessionResult({a: Reply(e.code, e.text) for a in addresses})
        hops, sts_mode, refusal = await self._apply_mta_sts(entry, domain, hops)
        if refusal is not None:
            return SessionResult({a: refusal for a in addresses})
        f = await self.store.open_message(entry.id)
        message = OutgoingMessage(prefix=entry.dkim_header, file=f, size=entry.size
                                  + len(entry.dkim_header), eight_bit=entry.eight_bit)
        last = Reply(451, "4.4.1 No mail server could be reached")
        try:
            for hop in hops:
                for address in hop.addresses:
                    message.rewind()
                    try:
                        if sts_mode is None:
                            return await self.client.deliver(hop.host, address, hop.port,
                                                             entry.sender, addresses, message)
                        return await self.client.deliver(hop.host, address, hop.port,
                                                         entry.sender, addresses, message,
                                                         mta_sts=sts_mode)
                    except SessionFailed as e:
                        log.info("{id}: {host} [{ip}]: {reply}", id=entry.id, host=hop.host,
                                 ip=address, reply=str(e.reply))
                        if e.reply.permanent:
                            return SessionResult({a: e.reply for a in addresses})
                        last = e.reply
            return SessionResult({a: last for a in addresses})
        finally:
            f.close()

    async def _apply_mta_sts(self, entry, domain, hops):
        """-> (hops to try, the client's ``mta_sts`` mode or None, a Reply
        that defers every recipient or None). RFC 8461 §4.1, §5."""
        if self.mta_sts is None or self.router.smarthost:
            return hops, None, None
        policy = await self.mta_sts.policy_for(domain)
        mode = policy.mode if policy is not None else "absent"
        log.info("{id}: to {domain} mta-sts={mta_sts}", id=entry.id, domain=domain,
                 mta_sts=mode)
        if mode not in ("enforce", "testing"):
            return hops, None, None
        allowed = [hop for hop in hops if policy.allows(hop.host)]
        refused = [hop.host for hop in hops if not policy.allows(hop.host)]
        if mode == "testing":
            if refused:
                log.info("{id}: MTA-STS testing: the policy of {domain} would refuse "
                         "{hosts}", id=entry.id, domain=domain, hosts=" ".join(refused))
            return hops, "testing", None
        if refused:
            log.info("{id}: MTA-STS policy of {domain}: not trying {hosts}", id=entry.id,
                     domain=domain, hosts=" ".join(refused))
        if not allowed:
            return [], None, Reply(451, f"4.7.5 MTA-STS policy of {domain}: no MX host "
                                   "matches")
        return allowed, "enforce", None

    # -- reports and clean-up -------------------------------------------------

    async def _original_headers(self, entry_id):
        f = await self.store.open_message(entry_id)
        with f:
            return header_block(f)

    async def _finish_round(self, entry):
        now = self.clock.seconds()
        failures = entry.unreported_failures
        if failures and entry.sender:
            headers = await self._original_headers(entry.id)
            report = dsn.failure_report(entry, failures, headers, self.hostname, now)
            await self._enqueue_notice(f"{entry.id}-b{entry.dsn_count}", entry.sender, report)
            reported = {r.address for r in failures}

            def mark(e):
                return attrs.evolve(e, dsn_count=e.dsn_count + 1, recipients=tuple(
                    attrs.evolve(r, reported=True) if r.address in reported else r
                    for r in e.recipients))
            entry = await self.store.update(entry.id, mark)
            log.info("{id}: failure report to <{sender}> for {count} recipient(s)",
                     id=getattr(entry, "id", "?"), sender=getattr(entry, "sender", "?"),
                     count=len(failures))
            if entry is None:
                return None
        for r in entry.unreported_failures:
            log.warn("{id} to <{rcpt}> failed and is not reported (null sender): {reply}",
                     id=entry.id, rcpt=r.address, reply=r.reply)
        waiting = [r for r in entry.pending if r.attempts > 0]
        if (entry.sender and waiting and not entry.delay_notified
                and now - entry.created >= self.policy.delay_notice_after):
            headers = await self._original_headers(entry.id)
            give_up = entry.created + self.policy.lifetime
            report = dsn.delay_report(entry, waiting, headers, self.hostname, now, give_up)
            await self._enqueue_notice(f"{entry.id}-d", entry.sender, report)
            entry = await self.store.update(entry.id,
                                            lambda e: attrs.evolve(e, delay_notified=True))
            if entry is None:
                return None
            log.info("{id}: delay notice to <{sender}>", id=entry.id, sender=entry.sender)
        if not entry.pending:
            try:
                await self.store.remove(entry.id)
            except errors.NotFound:
                pass
            log.info("{id} done: {delivered} delivered, {failed} failed", id=entry.id,
                     delivered=sum(r.state == DELIVERED for r in entry.recipients),
                     failed=sum(r.state == FAILED for r in entry.recipients))
            return None
        return entry

    # -- operators ------------------------------------------------------------

    def retry_now(self, entry_id=None):
        """See ``QueueAdmin.retry``."""
        return QueueAdmin(self.store, self.clock).retry(entry_id)


class QueueAdmin:
    """What ``ktmail-admin queue`` does, over the queue store; a running
    daemon notices the changes through the store's change token."""

    def __init__(self, store, clock):
        self.store = store
        self.clock = clock

    def list(self):
        """-> [QueueEntry], oldest first."""
        return self.store.list_entries()

    @deferred
    async def retry(self, entry_id=None):
        """Make the pending recipients of one entry (or of all) due now.
        -> the number of entries changed. NotFound for an unknown id."""
        now = self.clock.seconds()

        def due_now(e):
            return attrs.evolve(e, recipients=tuple(
                attrs.evolve(r, next_attempt=min(r.next_attempt, now))
                if r.state == PENDING else r for r in e.recipients))
        if entry_id:
            await self.store.get(entry_id)   # NotFound for an unknown id
            ids = [entry_id]
        else:
            ids = [e.id for e in await self.store.list_entries()]
        changed = 0
        for i in ids:
            if await self.store.update(i, due_now) is not None:
                changed += 1
        await self.store.notify_changed()
        return changed

    @deferred
    async def remove(self, entry_id):
        """Drop an entry without telling its sender. -> the removed entry."""
        entry = await self.store.get(entry_id)
        await self.store.remove(entry_id)
        await self.store.notify_changed()
        log.info("{id} removed from the queue by the operator", id=entry_id)
        return entry


# --- the scheduler ---------------------------------------------------------------


class OutboundScheduler(service.Service):
    """Runs ``OutboundQueue.attempt`` for entries when they fall due.

    Keeps ``{entry id: due time}`` in memory, filled from the store at start
    (after ``recover()``), from ``enqueue`` and from the result of each
    round. Changes made by ``ktmail-admin`` are noticed through the store's
    change token, polled every ``rescan_interval`` seconds. Every
    ``report_interval`` seconds it re-reads the whole queue and logs its
    depth and the age of the oldest entry.
    """

    name = "outbound-queue"

    def __init__(self, queue, clock, rescan_interval=5.0, report_interval=300.0,
                 max_active=100):
        self.queue = queue
        self.store = queue.store
        self.clock = clock
        self.rescan_interval = rescan_interval
        self.report_interval = report_interval
        self.max_active = max_active
        self._due = {}
        self._active = {}
        self._timer = None
        self._token = None
        self._loops = []
        self._ready = None
        queue.on_change = self.entry_changed

    # -- service --------------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self._ready = defer.Deferred.fromCoroutine(self._start())

    async def _start(self):
        cleaned = await self.store.recover()
        if cleaned:
            log.info("outbound queue: cleaned {n} half-written file(s)", n=cleaned)
        self._token = await self.store.change_token()
        await self.rescan(report=True)
        for interval, fn in ((self.rescan_interval, self._check_token),
                             (self.report_interval, lambda: self.rescan(report=True))):
            loop = task.LoopingCall(lambda fn=fn: defer.Deferred.fromCoroutine(
                self._guarded(fn)))
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stopService(self):
        service.Service.stopService(self)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        # Rounds in progress are not waited for (a slow remote could hold
        # the shutdown for minutes): they finish or die with the process,
        # and whatever they had not recorded is retried after the restart.

    def when_idle(self):
        """-> Deferred fired when start-up is done and no round runs (tests)."""
        async def wait():
            if self._ready is not None:
                await self._ready
            while self._active:
                await defer.DeferredList(list(self._active.values()), consumeErrors=True)
        return defer.Deferred.fromCoroutine(wait())

    async def _guarded(self, fn):
        try:
            await fn()
        except Exception:
            log.failure("outbound queue scan failed")

    async def _check_token(self):
        token = await self.store.change_token()
        if token != self._token:
            self._token = token
            await self.rescan()

    async def rescan(self, report=False):
        entries = await self.store.list_entries()
        self._due = {e.id: work_due_at(e) for e in entries if e.id not in self._active}
        if report and entries:
            now = self.clock.seconds()
            pending = sum(len(e.pending) for e in entries)
            log.info("outbound queue: {count} message(s), {pending} recipient(s) pending, "
                     "oldest {age:.0f} min", count=len(entries), pending=pending,
                     age=(now - entries[0].created) / 60)
        elif report:
            log.info("outbound queue: empty")
        self._wake()

    # -- scheduling -----------------------------------------------------------

    def entry_changed(self, entry):
        if not self.running:
            return
        if entry.id not in self._active:
            self._due[entry.id] = work_due_at(entry)
        self._wake()

    def _wake(self):
        if not self.running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        now = self.clock.seconds()
        for entry_id, due in sorted(self._due.items(), key=lambda item: item[1]):
            if due > now or len(self._active) >= self.max_active:
                break
            del self._due[entry_id]
            self._start_round(entry_id)
        if self._due and len(self._active) < self.max_active:
            delay = max(0.0, min(self._due.values()) - now)
            self._timer = self.clock.callLater(delay, self._wake)

    def _start_round(self, entry_id):
        d = self.queue.attempt(entry_id)
        self._active[entry_id] = d

        def done(entry):
            del self._active[entry_id]
            if entry is BUSY:
                # another node's round; look again later (it may have died)
                self._due[entry_id] = self.clock.seconds() + BUSY_RETRY_SECONDS
            elif entry is not None:
                self._due[entry_id] = work_due_at(entry)
            self._wake()

        def failed(failure):
            del self._active[entry_id]
            log.failure("delivery round of {id} failed; next try in 5 minutes", failure,
                        id=entry_id)
            self._due[entry_id] = self.clock.seconds() + 300
            self._wake()
        d.addCallbacks(done, failed)


class DeliveryServiceBounces:
    """``deliver_local`` over ``DeliveryService`` (INTERFACES.md, "Delivery"):
    copies the DSN into a new spool and delivers it with the null sender
    and no spam scan. ``make_envelope(recipient)`` builds the delivery
    Envelope, e.g. ``lambda r: Envelope(sender="", recipients=(r,),
    received_at=clock.seconds())``."""

    def __init__(self, delivery, make_envelope):
        self.delivery = delivery
        self.make_envelope = make_envelope

    @deferred
    async def __call__(self, recipient, message_file):
        spool = self.delivery.new_spool()
        try:
            while True:
                chunk = message_file.read(CHUNK)
                if not chunk:
                    break
                spool.write(chunk)
            await spool.finish()
            results = await self.delivery.deliver(self.make_envelope(recipient), spool,
                                                  scan_spam=False)
        finally:
            spool.discard()
        error = results.get(recipient)
        if error is not None:
            raise error
