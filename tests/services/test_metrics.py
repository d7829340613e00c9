"""The Prometheus metrics of services/metrics.py: counters from the
structured events, gauges from their sources, the exposition format."""

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger, LogPublisher
from twisted.trial import unittest

from ktmail.services import events
from ktmail.services.metrics import EventCounters, MetricsReport, QuotaSurvey, render


@attrs.frozen
class Box:
    id: int
    quota_bytes: int


@attrs.frozen
class Entry:
    created: float
    pending: tuple


def parse(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


class CounterTests(unittest.TestCase):
    def setUp(self):
        self.counters = EventCounters()
        self.log = Logger(observer=LogPublisher(self.counters))

    def test_every_series_exists_from_the_start(self):
        """Before any event the counters are there at 0 (rate() and alerts
        need the series), and only counters grow from events."""
        values = parse(render(self.counters, []))
        self.assertEqual(values['ktmail_logins_total{protocol="imap",outcome="failed"}'], 0)
        self.assertEqual(values['ktmail_deliveries_total{kind="outbound"}'], 0)
        self.assertEqual(values['ktmail_connections_total{listener="web",'
                                'outcome="refused-client"}'], 0)

    def test_events_are_counted(self):
        """Each structured event adds to its counter; other log events are
        ignored; a malformed event does not break logging."""
        self.log.info("x", ktmail_event=events.LOGIN, protocol="pop3", outcome="throttled")
        self.log.info("x", ktmail_event=events.DELIVERY, channel="inbound", verdict="spam")
        self.log.info("x", ktmail_event=events.DELIVERY, channel="local", verdict="unscored")
        self.log.info("x", ktmail_event=events.SUBMISSION, protocol="webmail")
        self.log.info("x", ktmail_event=events.OUTBOUND, outcome="delivered")
        self.log.info("x", ktmail_event=events.OUTBOUND, outcome="deferred")
        self.log.info("x", ktmail_event=events.DELETION, what="messages", reason="retention",
                      count=7)
        self.log.info("x", ktmail_event=events.DELETION, what="mailbox", reason="removed",
                      count=None)
        self.log.info("x", ktmail_event=events.CONNECTION, listener="imap", outcome="closed")
        self.log.info("x", ktmail_event=events.LOGIN)            # fields missing
        self.log.info("just a line")
        values = parse(render(self.counters, []))
        self.assertEqual(values['ktmail_logins_total{protocol="pop3",outcome="throttled"}'], 1)
        self.assertEqual(values['ktmail_deliveries_total{kind="inbound"}'], 1)
        self.assertEqual(values['ktmail_deliveries_total{kind="local"}'], 1)
        self.assertEqual(values['ktmail_deliveries_total{kind="submission"}'], 1)
        self.assertEqual(values['ktmail_deliveries_total{kind="outbound"}'], 1)
        self.assertEqual(values['ktmail_outbound_results_total{outcome="deferred"}'], 1)
        self.assertEqual(values['ktmail_spam_verdicts_total{verdict="spam"}'], 1)
        self.assertEqual(values['ktmail_spam_verdicts_total{verdict="ham"}'], 0)
        self.assertEqual(values['ktmail_deletions_total{what="messages",reason="retention"}'], 7)
        self.assertEqual(values['ktmail_deletions_total{what="mailbox",reason="removed"}'], 1)
        self.assertEqual(values['ktmail_connections_total{listener="imap",outcome="closed"}'],
                         1)

    def test_format(self):
        """HELP and TYPE before each metric; label values escaped."""
        text = render(self.counters, [("x_gauge", "A gauge.", ("name",),
                                       [(('a"b\\c\nd',), 2.5)])])
        self.assertIn("# HELP x_gauge A gauge.\n# TYPE x_gauge gauge\n", text)
        self.assertIn('x_gauge{name="a\\"b\\\\c\\nd"} 2.5\n', text)
        self.assertIn("# TYPE ktmail_logins_total counter\n", text)
        self.assertTrue(text.endswith("\n"))


class ReportTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(10_000)
        self.usage = {1: 950, 2: 100, 3: 1000, 4: 0}
        self.listed = 0
        boxes = [Box(1, 1000), Box(2, 1000), Box(3, 1000), Box(4, 0)]
        self.survey = QuotaSurvey(lambda: defer.succeed(boxes),
                                  lambda i: defer.succeed(self.usage[i]), self.clock)
        self.entries = [Entry(9_000, ("a", "b")), Entry(9_500, ("c",))]

        def queue_entries():
            self.listed += 1
            return defer.succeed(list(self.entries))
        self.report = MetricsReport(
            counters=EventCounters(), connections=lambda: {"imap": 3, "smtp": 1},
            queue_entries=queue_entries, survey=self.survey,
            process=lambda: {"open_fds": 12, "max_fds": 1024, "resident_bytes": 5 << 20},
            clock=self.clock, started=1234.5)

    def values(self):
        return parse(self.successResultOf(self.report.text()))

    def test_gauges(self):
        """Connections, queue depth and age, quota survey, process."""
        self.successResultOf(self.survey.run())
        values = self.values()
        self.assertEqual(values['ktmail_connections_open{listener="imap"}'], 3)
        self.assertEqual(values["ktmail_queue_messages"], 2)
        self.assertEqual(values["ktmail_queue_recipients"], 3)
        self.assertEqual(values["ktmail_queue_oldest_age_seconds"], 1000)
        self.assertEqual(values["ktmail_mailboxes"], 4)
        self.assertEqual(values["ktmail_mailboxes_near_quota"], 1)
        self.assertEqual(values["ktmail_mailboxes_over_quota"], 1)
        self.assertEqual(values["ktmail_quota_survey_age_seconds"], 0)
        self.assertEqual(values["process_open_fds"], 12)
        self.assertEqual(values["ktmail_start_time_seconds"], 1234.5)

    def test_queue_listing_is_reused_for_a_while(self):
        """Scrapes within 15 s share one queue listing (it reads every entry)."""
        self.values()
        self.entries.pop()
        self.clock.advance(10)
        self.assertEqual(self.values()["ktmail_queue_messages"], 2)
        self.clock.advance(10)
        self.assertEqual(self.values()["ktmail_queue_messages"], 1)
        self.assertEqual(self.listed, 2)

    def test_empty_queue(self):
        """An empty queue has no oldest entry: its age is 0."""
        self.entries.clear()
        self.assertEqual(self.values()["ktmail_queue_oldest_age_seconds"], 0)
