"""Refuse new callers, on the record, while ARI is too slow to serve them.

Past its knee a node does not degrade gently: ARI requests queue behind each other until they
pass their time-out, and then every call in the menu is rescued into the dialplan's fallback at
once, which rings up to 20 operators per caller and forks two AGI processes each (BENCHMARKS.md,
run 9: hundreds of failed legs within one 2-cps step). The line's fixed limit
(SIAGA112_MAX_CALLERS) cannot see that coming: the count at which it happens depends on the
machine and on what else it does.

So the app watches its own ARI round trips (ari/latency.py). When their 90th percentile over
the last seconds reaches ``shed_when_ari_p90_ms`` it tells Asterisk, through one global
variable, to send new callers down the line-full path for a few seconds
(dialplan/20-emergency.conf: record first, the lines-busy message as early media, then 503 so
the carrier's routing of a refusal applies; the app puts them on the callback list with the
reason). The calls already in progress keep the CPU they need and reach their operators. It
renews the word every tick while ARI stays slow, and takes it back once the percentile is
under ``resume_when_ari_p90_ms``.

The word is a deadline (Asterisk's EPOCH), not a flag: if the app dies while shedding, the
dialplan stops refusing by itself within ``hold_s`` and the fallback takes the callers, as for
any dead app. Never a blind block: every refused caller is recorded, hears why, and is called
back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ari_app.ari import AriClient, AriError
from ari_app.ari.latency import RoundTrips

log = logging.getLogger(__name__)

SHED_VARIABLE = "SIAGA_SHED_UNTIL"  # a global of the dialplan: refuse new callers until then


@dataclass(frozen=True)
class ShedPolicy:
    above_s: float          # the 90th percentile at or above this: refuse new callers
    below_s: float          # ... and under this: take them again
    min_samples: int = 5    # one slow request among few is not a trend
    hold_s: float = 5.0     # how long one word to Asterisk lasts if it is not renewed

    @property
    def enabled(self) -> bool:
        return self.above_s > 0


class Shedder:
    """Decides from the round trips once a tick, and keeps Asterisk's variable in step."""

    def __init__(self, ari: AriClient, policy: ShedPolicy, *,
                 every_s: float = 1.0, wall: Callable[[], float] = time.time) -> None:
        self.ari, self.policy = ari, policy
        self.trips: RoundTrips = ari.round_trips  # the client times every request it makes
        self.every_s, self.wall = every_s, wall
        self.shedding = False
        self.p90_s = 0.0
        self.turned_on = 0  # how many times shedding began (for /metrics)

    def decide(self) -> bool:
        """Update ``shedding`` from the round trips; True when it changed."""
        p90, count = self.trips.percentile(0.9)
        self.p90_s = p90
        if not self.shedding and count >= self.policy.min_samples and p90 >= self.policy.above_s:
            self.shedding, self.turned_on = True, self.turned_on + 1
            log.warning("ARI slow: p90 %d ms over %d requests (limit %d ms): new callers are "
                        "refused with the lines-busy message and put on the callback list",
                        p90 * 1000, count, self.policy.above_s * 1000)
            return True
        if self.shedding and p90 < self.policy.below_s:
            self.shedding = False
            log.warning("ARI fast again: p90 %d ms over %d requests (under %d ms): taking new "
                        "callers", p90 * 1000, count, self.policy.below_s * 1000)
            return True
        return False

    async def tick(self) -> None:
        changed = self.decide()
        if self.shedding:
            await self._tell(int(self.wall() + self.policy.hold_s))  # renewed every tick
        elif changed:
            await self._tell(0)

    async def clear(self) -> None:
        """Take back a word a previous life of the app may have left (it expires anyway)."""
        if not self.shedding:
            await self._tell(0)

    async def _tell(self, until: int) -> None:
        try:
            await self.ari.post("asterisk", "variable", variable=SHED_VARIABLE, value=str(until))
        except AriError as exc:
            log.warning("could not set %s=%s in Asterisk: %s", SHED_VARIABLE, until, exc)

    async def run(self) -> None:
        if not self.policy.enabled:
            log.info("load shedding on ARI latency is off (queue.shed_when_ari_p90_ms = 0)")
            return
        while True:
            await asyncio.sleep(self.every_s)
            await self.tick()
