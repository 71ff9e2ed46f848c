"""How long ARI requests take: the round trips of the last seconds and those still in flight.

A slow ARI is the first sign of an overloaded node (Asterisk's taskprocessors backing up, or our
own event loop saturated): every request a call makes waits, and past the request time-out the
calls fall into the dialplan's fallback all at once. This keeps the figures to see it coming;
what to do about it is the caller's business.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable


class RoundTrips:
    """Completed request durations (kept ``window_s``) and the start times of open requests."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 max_kept: int = 4096) -> None:
        self.window_s, self.clock = window_s, clock
        self._done: deque[tuple[float, float]] = deque(maxlen=max_kept)  # (ended, seconds)
        self._open: dict[int, float] = {}
        self._ids = itertools.count()

    def started(self) -> int:
        token = next(self._ids)
        self._open[token] = self.clock()
        return token

    def ended(self, token: int) -> None:
        began = self._open.pop(token, None)
        if began is not None:
            now = self.clock()
            self._done.append((now, now - began))

    def samples(self) -> list[float]:
        """The durations of the window's requests, and the age of every request still open
        (a request stuck for 8 s counts now, not only when it finally ends)."""
        now = self.clock()
        while self._done and self._done[0][0] < now - self.window_s:
            self._done.popleft()
        return [d for _, d in self._done] + [now - began for began in self._open.values()]

    def percentile(self, q: float) -> tuple[float, int]:
        """(the q-quantile of samples() in seconds, how many samples); (0.0, 0) with none."""
        values = sorted(self.samples())
        if not values:
            return 0.0, 0
        rank = min(len(values) - 1, max(0, int(q * len(values) + 0.999999) - 1))
        return values[rank], len(values)
