"""Asterisk's taskprocessor queues, watched from outside: a backed-up ARI or PJSIP queue is the
warning sign before Asterisk's overload alert makes PJSIP ignore new calls.

Reads ``core show taskprocessors`` through the control socket (same host) every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from ari_app.pbx.process import AsteriskError, cli, conf_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queue:
    name: str
    processed: int
    in_queue: int
    max_depth: int
    high_water: int

    @property
    def reached_high_water(self) -> bool:
        return self.max_depth >= self.high_water


def parse(output: str) -> list[Queue]:
    queues = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) != 6 or not all(p.isdigit() for p in parts[1:]):
            continue
        name, processed, in_queue, max_depth, _low, high = parts
        queues.append(Queue(name, int(processed), int(in_queue), int(max_depth), int(high)))
    return queues


class TaskprocessorWatch:
    """Keeps the latest figures for /metrics: the deepest queue now, and high-water alerts."""

    WATCHED = ("stasis/", "pjsip/", "ari")

    def __init__(self, var_dir: Path, every_s: float = 10.0) -> None:
        self.var_dir, self.every_s = var_dir, every_s
        self.deepest_now = 0
        self.deepest_ever = 0
        self.high_water_queues: list[str] = []
        self.available = conf_path(var_dir).exists()

    def sample(self) -> None:
        queues = [q for q in parse(cli(self.var_dir, "core show taskprocessors"))
                  if q.name.startswith(self.WATCHED)]
        self.deepest_now = max((q.in_queue for q in queues), default=0)
        self.deepest_ever = max((q.max_depth for q in queues), default=0)
        alerts = [q.name for q in queues if q.reached_high_water]
        for name in set(alerts) - set(self.high_water_queues):
            log.warning("taskprocessor %s reached its high-water mark", name)
        self.high_water_queues = alerts

    async def run(self) -> None:
        if not self.available:
            log.info("no local Asterisk control socket config: taskprocessors not watched")
            return
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except (AsteriskError, OSError, TimeoutError) as exc:
                log.debug("taskprocessors not readable: %s", exc)
            await asyncio.sleep(self.every_s)
