"""A small in-process bus of call-state changes: the console's live view and tests listen here."""

from __future__ import annotations

import asyncio
from typing import Any

Change = dict[str, Any]


class LiveBus:
    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[Change]] = set()
        self.state: dict[str, Change] = {}   # call id → its latest state, for new listeners

    def publish(self, call_id: str, stage: str, **data: Any) -> None:
        change = {"call": call_id, "stage": stage, **data}
        if stage == "ended":
            self.state.pop(call_id, None)
        else:
            self.state[call_id] = {**self.state.get(call_id, {}), **change}
        for queue in list(self._listeners):
            queue.put_nowait(change)

    def listen(self) -> asyncio.Queue[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Change]) -> None:
        self._listeners.discard(queue)



async def next_change(queue: asyncio.Queue[Change], stage: str, timeout: float = 30.0,
                      **match: Any) -> Change:
    """The next change to ``stage`` whose fields equal ``match``, from a queue made by listen()."""
    async with asyncio.timeout(timeout):
        while True:
            change = await queue.get()
            if change["stage"] == stage and all(change.get(k) == v for k, v in match.items()):
                return change
