"""Prometheus metrics: what is counted, and the text exposition format.

Counters are counted from the structured log events (services/events.py),
so the log and ``/metrics`` can never disagree: ``EventCounters`` is a log
observer the daemon adds to the global log publisher. Gauges are read when
``/metrics`` is asked for: open connections per listener (the listeners'
admissions), the outbound queue (depth, recipients, age of the oldest
entry), and mailboxes near or over quota (``QuotaSurvey``, refreshed in
the background every few minutes, since it reads every mailbox's usage).

``render(counters, gauges)`` writes the text exposition format, version
0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).

Invariants: counter values only grow; a series exists (at 0) from the
start for every label combination listed in COUNTERS, so that rate()
and alerts work before the first event; label values are escaped.
"""

import collections

import attrs
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from ktmail.services import deferred, events

log = Logger()

#: share of its quota at which a mailbox counts as near quota
NEAR_QUOTA = 0.9

#: metric -> (help, label names, initial label values)
COUNTERS = {
    "ktmail_connections_total": (
        "Connections by listener and outcome (closed, refused-client, refused-total).",
        ("listener", "outcome"),
        [(lst, o) for lst in ("smtp", "submission", "imap", "pop3", "web")
         for o in ("closed", "refused-client", "refused-total")]),
    "ktmail_logins_total": (
        "Login attempts by protocol and outcome (ok, failed, throttled).",
        ("protocol", "outcome"),
        [(p, o) for p in ("imap", "pop3", "smtp", "web") for o in ("ok", "failed",
                                                                   "throttled")]),
    "ktmail_deliveries_total": (
        "Messages by kind: inbound (stored from the MX), local (stored from our own "
        "users, DSNs, notices), submission (accepted from a logged-in user), outbound "
        "(recipients delivered to other servers).",
        ("kind",), [("inbound",), ("local",), ("submission",), ("outbound",)]),
    "ktmail_outbound_results_total": (
        "Outbound delivery attempts per recipient by outcome.",
        ("outcome",), [("delivered",), ("deferred",), ("failed",)]),
    "ktmail_spam_verdicts_total": (
        "Spam filter verdicts on inbound mail.", ("verdict",), [("spam",), ("ham",)]),
    "ktmail_deletions_total": (
        "Messages deleted for good, by reason (expunge, pop3, retention); folders and "
        "mailboxes removed.",
        ("what", "reason"), [("messages", "expunge"), ("messages", "pop3"),
                             ("messages", "retention")]),
}


@implementer(ILogObserver)
class EventCounters:
    """A log observer counting ktmail's structured events."""

    def __init__(self):
        self.values = {name: collections.Counter({labels: 0 for labels in initial})
                       for name, (_help, _names, initial) in COUNTERS.items()}

    def _add(self, name, labels, n=1):
        self.values[name][tuple(str(v) for v in labels)] += n

    def __call__(self, event):
        kind = event.get("ktmail_event")
        if kind is None:
            return
        try:
            self._count(kind, event)
        except Exception:  # noqa: BLE001, S110 - counting must never break logging
            pass

    def _count(self, kind, event):
        if kind == events.CONNECTION:
            self._add("ktmail_connections_total", (event["listener"], event["outcome"]))
        elif kind == events.LOGIN:
            self._add("ktmail_logins_total", (event["protocol"], event["outcome"]))
        elif kind == events.DELIVERY:
            self._add("ktmail_deliveries_total", (event["channel"],))
            if event.get("verdict") in ("spam", "ham"):
                self._add("ktmail_spam_verdicts_total", (event["verdict"],))
        elif kind == events.SUBMISSION:
            self._add("ktmail_deliveries_total", ("submission",))
        elif kind == events.OUTBOUND:
            self._add("ktmail_outbound_results_total", (event["outcome"],))
            if event["outcome"] == "delivered":
                self._add("ktmail_deliveries_total", ("outbound",))
        elif kind == events.DELETION:
            self._add("ktmail_deletions_total", (event["what"], event["reason"]),
                      event.get("count") or 1)


@attrs.define
class QuotaSurvey:
    """How many mailboxes are near (>= NEAR_QUOTA) or over their quota.

    ``list_mailboxes()`` -> Deferred[[Mailbox]]; ``usage(mailbox_id)`` ->
    Deferred[bytes used]. ``refresh()`` reads them all (the daemon runs it
    every five minutes)."""

    list_mailboxes: object
    usage: object
    clock: object
    mailboxes: int = 0
    near: int = 0
    over: int = 0
    surveyed_at: float | None = None
    _running: bool = False

    async def refresh(self):
        if self._running:
            return
        self._running = True
        try:
            boxes = await self.list_mailboxes()
            near = over = 0
            for box in boxes:
                used = await self.usage(box.id)
                if box.quota_bytes and used >= box.quota_bytes:
                    over += 1
                elif box.quota_bytes and used >= NEAR_QUOTA * box.quota_bytes:
                    near += 1
            self.mailboxes, self.near, self.over = len(boxes), near, over
            self.surveyed_at = self.clock.seconds()
        finally:
            self._running = False

    def run(self):
        """refresh() as a Deferred whose failure is logged (for a TimerService)."""
        d = defer.Deferred.fromCoroutine(self.refresh())
        d.addErrback(lambda f: log.failure("quota survey failed", f))
        return d


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _series(name, label_names, labels, value):
    if label_names:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(label_names, labels,
                                                               strict=True))
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def _number(value):
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def render(counters, gauges):
    """The exposition text. ``gauges``: [(name, help, label names,
    [(labels, value)])]."""
    lines = []
    for name, (help_text, label_names, _initial) in COUNTERS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for labels, value in sorted(counters.values[name].items()):
            lines.append(_series(name, label_names, labels, _number(value)))
    for name, help_text, label_names, samples in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            lines.append(_series(name, label_names, labels, _number(value)))
    return "\n".join(lines) + "\n"


@attrs.define
class MetricsReport:
    """Everything ``/metrics`` shows, from injected sources:

    ``counters`` (EventCounters); ``connections()`` -> {listener: open};
    ``queue_entries()`` -> Deferred[[queue entry]] (``created``, ``pending``);
    ``survey`` (QuotaSurvey); ``process()`` -> {"open_fds", "max_fds",
    "resident_bytes"}; ``clock``; ``started`` (POSIX time of the start)."""

    counters: EventCounters
    connections: object
    queue_entries: object
    survey: QuotaSurvey
    process: object
    clock: object
    started: float
    #: seconds a queue listing is reused (it reads every entry)
    queue_cache_seconds: float = 15.0
    _queue: tuple = (0.0, None)

    async def _queue_figures(self):
        now = self.clock.seconds()
        at, figures = self._queue
        if figures is None or now - at > self.queue_cache_seconds:
            entries = await self.queue_entries()
            oldest = min((e.created for e in entries), default=None)
            figures = (len(entries), sum(len(e.pending) for e in entries),
                       0 if oldest is None else max(0.0, now - oldest))
            self._queue = (now, figures)
        return figures

    @deferred
    async def text(self):
        """-> Deferred[str]: the exposition text."""
        messages, recipients, oldest = await self._queue_figures()
        process = self.process()
        survey = self.survey
        gauges = [
            ("ktmail_connections_open", "Connections open now, by listener.", ("listener",),
             sorted(((name,), n) for name, n in self.connections().items())),
            ("ktmail_queue_messages", "Messages in the outbound queue.", (),
             [((), messages)]),
            ("ktmail_queue_recipients", "Recipients still to be tried in the outbound queue.",
             (), [((), recipients)]),
            ("ktmail_queue_oldest_age_seconds", "Age of the oldest message in the outbound "
             "queue (0 when it is empty).", (), [((), round(oldest, 1))]),
            ("ktmail_mailboxes", "Mailboxes (at the last quota survey).", (),
             [((), survey.mailboxes)]),
            ("ktmail_mailboxes_near_quota", f"Mailboxes using at least {NEAR_QUOTA:.0%} of "
             "their quota but not all of it (at the last survey).", (), [((), survey.near)]),
            ("ktmail_mailboxes_over_quota", "Mailboxes whose quota is used up (new mail is "
             "refused).", (), [((), survey.over)]),
            ("ktmail_quota_survey_age_seconds", "Seconds since the last quota survey.", (),
             [((), 0 if survey.surveyed_at is None
               else round(self.clock.seconds() - survey.surveyed_at, 1))]),
            ("ktmail_start_time_seconds", "When the daemon started (POSIX time).", (),
             [((), round(self.started, 3))]),
            ("process_open_fds", "Open file descriptors.", (), [((), process["open_fds"])]),
            ("process_max_fds", "The file descriptor limit.", (), [((), process["max_fds"])]),
            ("process_resident_memory_bytes", "Resident memory.", (),
             [((), process["resident_bytes"])]),
        ]
        return render(self.counters, gauges)
