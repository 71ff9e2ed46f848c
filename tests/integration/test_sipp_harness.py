"""The SIPp harness itself: a call the test gives up on does not outlive it."""

from __future__ import annotations

import asyncio
import os

import pytest

from ari_app.testing.ports import free_port
from ari_app.testing.sipp import SippProcess, SippRun

pytestmark = pytest.mark.integration


async def test_a_cancelled_call_ends_its_sipp_at_once() -> None:
    """A test that cancels a running call (at its end, or after killing Asterisk) must not
    leave SIPp calling on for up to its own time-out, on ports a later test may take."""
    # Nobody listens there: SIPp retransmits its INVITE until its 60 s time-out.
    run = SippRun("caller_key.xml", target_port=free_port(), timeout_s=60,
                  template={"digit": "2"}, keys={"caller": "081234567890"})
    sipp = SippProcess(run)
    await sipp.start()
    assert sipp.proc is not None
    pid = sipp.proc.pid
    waiting = asyncio.create_task(sipp.wait())
    await asyncio.sleep(0)  # the wait has begun
    assert sipp.proc.returncode is None  # still calling
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sipp.proc.returncode is not None  # ended and reaped, not left running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
