"""Who can take a call now: on shift (database), reachable and idle (Asterisk), longest idle first.

The call path never queries the database: the roster is refreshed in the background and the
last known roster is kept through a database outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.ari import AriClient, AriError
from ari_app.clock import Clock
from ari_app.routing.operators import on_shift
from ari_app.routing.states import WRAP_UP, OperatorStates

log = logging.getLogger(__name__)


class Roster:
    def __init__(self, ari: AriClient, sessions: async_sessionmaker[AsyncSession], site: str,
                 clock: Clock, *, refresh_s: float = 2.0, states: OperatorStates | None = None,
                 wrap_up_s: float = 0.0) -> None:
        self.ari, self.sessions, self.site, self.clock = ari, sessions, site, clock
        self.refresh_s = refresh_s
        # console states (ready / not ready / wrap-up); none given: everyone on shift is ready
        self.states = states if states is not None else OperatorStates(None, clock.now)
        self.wrap_up_s = wrap_up_s  # after each answered call; 0: straight back to ready
        self.states.listeners.append(lambda _name, _state: self._changed())
        self.on_shift: list[str] = []
        self.loaded = False
        self.reachable: dict[str, bool] = {}
        self.in_use: set[str] = set()      # endpoint has channels in Asterisk (any call)
        self.reserved: set[str] = set()    # the app is ringing or bridged to this operator
        self.idle_since: dict[str, float] = {}
        self.listeners: list[Callable[[], None]] = []

    def candidates(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Free operators on shift, longest idle first."""
        free = [n for n in self.on_shift
                if n not in self.reserved and n not in self.in_use and n not in exclude
                and self.reachable.get(n, False) and self.ready(n)]
        return sorted(free, key=lambda n: (self.idle_since.get(n, 0.0), n))

    def ready(self, name: str) -> bool:
        """The operator's console state lets the app offer them a call (ready, or wrap-up over)."""
        return self.states.ready(name)

    def anyone_on_duty(self) -> bool:
        return bool(self.on_shift)

    def reserve(self, name: str) -> None:
        self.reserved.add(name)

    def release(self, name: str, *, talked: bool) -> None:
        self.reserved.discard(name)
        if talked:
            self.idle_since[name] = time.monotonic()
            if self.wrap_up_s > 0:
                self.states.set(name, WRAP_UP, actor="system", wrap_up_s=self.wrap_up_s)
                self._wake_after(self.wrap_up_s)  # offer calls again when the wrap-up runs out
        self._changed()

    def _wake_after(self, seconds: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(seconds + 0.05, self._changed)

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def refresh(self) -> None:
        try:
            async with self.sessions() as s:  # one connection for both reads
                names = await on_shift(s, self.site, self.clock.now())
                self.on_shift, self.loaded = names, True
                await self.states.load(s)
        except Exception as exc:
            log.warning("roster: database not readable (%s); keeping %d operator(s) on shift",
                        exc, len(self.on_shift))
        try:
            endpoints = await self.ari.get("endpoints", "PJSIP")
        except AriError as exc:
            log.warning("roster: endpoint states not readable: %s", exc)
            return
        reachable: dict[str, bool] = {}
        in_use: set[str] = set()
        for ep in endpoints:
            name = str(ep.get("resource", ""))
            reachable[name] = ep.get("state") != "offline"
            if ep.get("channel_ids"):
                in_use.add(name)
        self.reachable, self.in_use = reachable, in_use
        self._changed()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.refresh_s)
