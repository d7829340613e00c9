"""Sliding-window limits: failed logins, recipients sent per hour.

``check`` is a pure decision over a list of timestamped events;
``SlidingWindowLimiter`` is the thin shell that reads and records events in
an ``ICounterStore``, whose ``take_event`` decides and records atomically,
so that two concurrent requests (on one node or several) cannot both take
the last slot.
"""

import attrs

from ktmail.services import deferred


@attrs.frozen
class Window:
    """At most ``limit`` events in any ``seconds``-long window."""

    limit: int
    seconds: float


@attrs.frozen
class Decision:
    allowed: bool
    #: events already in the window (before this request)
    used: int
    #: how many more events the window takes after this request (if allowed)
    remaining: int
    #: when a request of the same size would be allowed, or None if allowed
    #: now or never (a request larger than the limit)
    retry_at: float | None


def check(events, now, window, wanted=1):
    """Decide whether ``wanted`` more events fit into ``window`` at ``now``.

    ``events`` is an iterable of ``(time, count)``; events at or before
    ``now - window.seconds`` have left the window.
    """
    start = now - window.seconds
    recent = sorted((t, n) for t, n in events if t > start)
    used = sum(n for _, n in recent)
    if used + wanted <= window.limit:
        return Decision(True, used, window.limit - used - wanted, None)
    if wanted > window.limit:
        return Decision(False, used, 0, None)
    # the request fits once enough of the oldest events have left the window
    in_window = used
    for t, n in recent:
        in_window -= n
        if in_window + wanted <= window.limit:
            return Decision(False, used, 0, t + window.seconds)
    raise AssertionError("unreachable: emptying the window always makes room")


@attrs.define
class SlidingWindowLimiter:
    """Per-key sliding windows over an ICounterStore."""

    counters: object  # ICounterStore
    window: Window

    @deferred
    async def peek(self, key, now, wanted=1):
        """The decision for ``wanted`` events without recording anything."""
        events = await self.counters.events_since(key, now - self.window.seconds)
        return check(events, now, self.window, wanted)

    @deferred
    async def take(self, key, now, wanted=1):
        """Record ``wanted`` events if they fit; -> the Decision either way.

        The store decides and records in one atomic step
        (``ICounterStore.take_event``), so two requests never share the last
        slot, whether they come to this process or to another node sharing
        the store."""
        window = self.window
        taken, events = await self.counters.take_event(key, now, wanted, window.seconds,
                                                       window.limit)
        decision = check(events, now, window, wanted)
        if decision.allowed != taken:  # the same rule on both sides; never expected
            raise AssertionError(f"store and limiter disagree on {key!r}")
        return decision

    @deferred
    async def record(self, key, now, count=1):
        """Record events unconditionally (e.g. failed logins)."""
        await self.counters.add_event(key, now, count)
