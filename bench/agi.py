"""CPU per invocation of the AGI caller-screening script, as Asterisk runs it.

Asterisk starts one process per AGI() call; its cost is that process's CPU. It is measured by
rendering the real wrapper (``write_agi``: same interpreter flags, same config file) for the
Jepara site against a migrated SQLite database holding a few tickets, and running it against a
scripted AGI peer (every command answered "200 result=0"), so the run includes the database
lookup.
"""

from __future__ import annotations

import select
import shlex
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.procstat import reap

AGI_ENV = ("agi_request: screen_caller\nagi_channel: PJSIP/carrier-00000001\n"
           "agi_language: id\nagi_type: PJSIP\nagi_uniqueid: 1716080000.1\n"
           "agi_version: 16.28.0\nagi_callerid: 081310000\nagi_calleridname: unknown\n"
           "agi_dnid: 112\nagi_context: siaga112-emergency\nagi_extension: s\n"
           "agi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \n\n")


def _prepare(var_dir: Path) -> list[str]:
    """Render the wrapper for Jepara over a migrated SQLite DB; the command it runs."""
    import sqlite3

    from ari_app.config import load_site
    from ari_app.pbx.agi_query import sqlite_time
    from ari_app.pbx.render import write_agi
    from ari_app.tickets.migrate import upgrade

    db = var_dir / "siaga112.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url)
    with sqlite3.connect(db) as conn:  # a flagged history for the screened number
        for n in range(3):
            conn.execute("INSERT INTO tickets (reference, site, channel_id, caller_number, "
                         "caller_key, arrived_at, status, outcome) VALUES (?, 'jepara', ?, "
                         "'081310000', '+6281310000', ?, 'closed', 'ghost')",
                         (f"B-{n}", f"bench-{n}", sqlite_time(datetime.now(UTC))))
    (var_dir / "asterisk" / "agi-bin").mkdir(parents=True)
    write_agi(load_site("jepara"), var_dir, url)
    wrapper = (var_dir / "asterisk" / "agi-bin" / "screen_caller").read_text().splitlines()[-1]
    return ["/bin/sh", "-c", wrapper.replace(' "$@"', "")]


def measure(runs: int = 5, timeout_s: float = 10.0) -> dict[str, Any]:
    """Both ways Asterisk can run the screening: a process per call, and our FastAGI server."""
    with tempfile.TemporaryDirectory(prefix="siaga112-agi-") as tmp:
        result = _measure(_prepare(Path(tmp)), runs, timeout_s)
        result["fastagi"] = _measure_fastagi(Path(tmp), max(runs, 20), timeout_s)
        result["summary"] += "; FastAGI server: " + str(result["fastagi"]["summary"])
        return result


def _measure_fastagi(var_dir: Path, runs: int, timeout_s: float) -> dict[str, Any]:
    """CPU of `siaga112 agi serve` per call: the server plus the child it forked and reaped."""
    import dataclasses

    from ari_app.config import load_site
    from ari_app.testing.agi_server import start_agi_server, stop_agi_server
    from ari_app.testing.ports import free_port
    from bench.procstat import cpu_seconds, reaped_children_cpu_seconds

    jepara = load_site("jepara")
    site = dataclasses.replace(jepara, asterisk=dataclasses.replace(
        jepara.asterisk, fastagi_port=free_port()))
    server = start_agi_server(site, var_dir, var_dir / "agi-server.log")
    env = AGI_ENV.replace("agi_request: screen_caller\n", "agi_network: yes\n"
                          "agi_network_script: screen_caller\n"
                          f"agi_request: agi://127.0.0.1:{site.asterisk.fastagi_port}/"
                          "screen_caller\n").encode()
    flagged, wall = 0, 0.0
    try:
        time.sleep(0.2)
        before = cpu_seconds(server.pid) + reaped_children_cpu_seconds(server.pid)
        for _ in range(runs):
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", site.asterisk.fastagi_port),
                                          timeout=timeout_s) as sock:
                sock.sendall(env)
                for raw in sock.makefile("rb"):
                    flagged += b'"SIAGA_FLAGS" "flagged:3"' in raw
                    sock.sendall(b"200 result=0\n")
            wall += time.monotonic() - t0
        time.sleep(0.7)  # the server reaps its children on its next poll (0.5 s)
        used = cpu_seconds(server.pid) + reaped_children_cpu_seconds(server.pid) - before
    finally:
        stop_agi_server(server)
    per_call = 1000 * used / runs
    return {"runs": runs, "cpu_ms_mean": per_call, "wall_ms_mean": 1000 * wall / runs,
            "flagged_runs": flagged,
            "summary": f"{per_call:.1f} ms CPU per call (mean of {runs}: the server and the "
                       f"process it forked; {flagged}/{runs} set the caller's flags)"}


def _measure(command: list[str], runs: int, timeout_s: float) -> dict[str, Any]:
    cpu: list[float] = []
    wall: list[float] = []
    commands_seen: list[str] = []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
            commands_seen.append(line.decode(errors="replace").strip())
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
    # The run counts only if the script got through the lookup and set the flags.
    flagged = sum('"SIAGA_FLAGS" "flagged:3"' in c for c in commands_seen)
    return {"measured": True, "runs": runs, "cpu_ms_mean": mean_cpu,
            "wall_ms_mean": sum(wall) / len(wall) if wall else 0.0,
            "flagged_runs": flagged, "command": shlex.join(command),
            "summary": f"{mean_cpu:.0f} ms CPU per invocation (mean of {runs}, a new Python "
                       f"process each time, database lookup included; {flagged}/{runs} runs "
                       "set the caller's flags)"}
