"""CPU per invocation of the AGI caller-screening script, if it exists yet.

Asterisk starts one process per AGI() call; its cost is that process's CPU, measured here by
running it against a scripted AGI peer (every command answered "200 result=0").
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from typing import Any

from ari_app.config import PROJECT_ROOT
from bench.procstat import reap

SCRIPT = PROJECT_ROOT / "agi_scripts" / "screen_caller.py"
AGI_ENV = ("agi_request: screen_caller.py\nagi_channel: PJSIP/carrier-00000001\n"
           "agi_language: id\nagi_type: PJSIP\nagi_uniqueid: 1716080000.1\n"
           "agi_version: 16.28.0\nagi_callerid: 081310000\nagi_calleridname: unknown\n"
           "agi_dnid: 112\nagi_context: siaga112-emergency\nagi_extension: s\n"
           "agi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n\n")


def measure(runs: int = 5, timeout_s: float = 10.0) -> dict[str, Any]:
    if not SCRIPT.exists():
        return {"measured": False,
                "summary": f"TODO: not measured yet ({SCRIPT.relative_to(PROJECT_ROOT)} "
                           "does not exist)"}
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(SCRIPT)], cwd=PROJECT_ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(AGI_ENV.encode())
        proc.stdin.flush()
        deadline = t0 + timeout_s
        for _cmd in range(50):  # at most 50 AGI commands per run
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            try:
                proc.stdin.write(b"200 result=0\n")
                proc.stdin.flush()
            except BrokenPipeError:
                break
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
        got = reap(proc.pid, block=True)
        proc.returncode = 0
        wall.append(1000 * (time.monotonic() - t0))
        if got is not None:
            cpu.append(1000 * got.cpu_s)
    mean_cpu = sum(cpu) / len(cpu) if cpu else 0.0
    return {"measured": True, "runs": runs, "cpu_ms_mean": mean_cpu,
            "wall_ms_mean": sum(wall) / len(wall) if wall else 0.0,
            "summary": f"{mean_cpu:.0f} ms CPU per invocation (mean of {runs}, a new Python "
                       "process each time)"}
