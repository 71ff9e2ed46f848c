"""`siaga112 supervise` restarts a crashing child, backing off, and stops only its own children."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ari_app.config import load_site
from ari_app.pbx.render import RenderResult
from ari_app.supervise import FIRST_DELAY_S, MAX_DELAY_S, Child, Supervisor


def no_render() -> RenderResult:
    raise AssertionError("this test starts no Asterisk")


async def test_a_child_that_keeps_crashing_is_restarted_with_a_growing_delay_then_stopped(
    tmp_path: Path,
) -> None:
    sup = Supervisor(load_site("batola"), tmp_path, no_render)
    crasher = Child("crasher", [sys.executable, "-S", "-c", "raise SystemExit(3)"])
    delays: list[float] = []
    await crasher.start()
    keep = asyncio.create_task(sup._keep(crasher))
    async with asyncio.timeout(30):
        while crasher.restarts < 4:
            await asyncio.sleep(0.05)  # another process's exits: nothing to await directly
            if crasher.restarts > len(delays):
                delays.append(crasher.delay)
    assert delays == [FIRST_DELAY_S, FIRST_DELAY_S * 2, FIRST_DELAY_S * 4,
                      min(FIRST_DELAY_S * 8, MAX_DELAY_S)]
    sup.stopping.set()
    keep.cancel()
    await asyncio.gather(keep, return_exceptions=True)
    await crasher.stop()


async def test_stop_ends_a_running_child_by_its_own_handle(tmp_path: Path) -> None:
    sleeper = Child("sleeper", [sys.executable, "-S", "-c", "import time; time.sleep(60)"])
    await sleeper.start()
    assert sleeper.proc is not None and sleeper.proc.returncode is None
    await sleeper.stop()
    assert sleeper.proc.returncode == -15  # SIGTERM, from us, to our child only
