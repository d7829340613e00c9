"""Log output for operators: JSON lines for log collectors.

    twistd -n --logger ktmail.logs.json_observer ktmail --config F

writes one JSON object per event to standard output (journald, a log
shipper reading the unit's output). Every object has ``time`` (ISO 8601,
UTC), ``level`` (debug, info, warn, error, critical), ``system`` (the
module or component that logged), ``text`` (the line twistd would have
written) and the event's own fields; an error also has ``traceback``.
ktmail's structured events carry ``ktmail_event`` and the stable fields
listed in ktmail/services/events.py. Without ``--logger`` twistd writes
its usual text lines.

Invariants: every line is complete JSON (a value JSON cannot hold is
written as its short ``repr``); nothing is added to the events beyond the
line's text and the traceback, so what is kept out of them (passwords,
message bodies) stays out of the log.
"""

import datetime
import json
import sys

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

_MAX_REPR = 200


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def event_record(event):
    """The JSON-ready dict of one event."""
    when = datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.UTC)
    level = event.get("log_level")
    record = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": getattr(level, "name", "info"),
        "system": event.get("log_namespace") or event.get("log_system") or "-",
        "text": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and key not in (
                "message", "format", "isError", "system", "time", "why", "failure"):
            record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return record


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one line of JSON to ``out``."""

    def __init__(self, out):
        self.out = out

    def __call__(self, event):
        try:
            line = json.dumps(event_record(event), ensure_ascii=False)
        except Exception as e:  # noqa: BLE001 - a log line must never break the daemon
            line = json.dumps({"level": "error", "text": f"unloggable event: {e!r}"})
        self.out.write(line + "\n")
        self.out.flush()


def json_observer(out=None):
    """The observer ``twistd --logger`` asks for: JSON lines on stdout."""
    return JSONLinesObserver(out or sys.stdout)
