"""`python -m bench edge --quick` (issue 16): the edge bench works end to end and reports.

No timing assertions: CI machines vary. The run drives a few calls of the 112 mix at one node
directly, then through a real Kamailio to two nodes sharing a private PostgreSQL, and reports
every figure for both targets.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ari_app.config import PROJECT_ROOT
from ari_app.testing.postgres import pg_bin

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL server binaries needed")]


def finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value >= 0


def test_quick_edge_bench_runs_direct_and_through_kamailio_and_reports_every_figure(
    tmp_path: Path,
) -> None:
    out = tmp_path / "edge-out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "edge", "--quick", "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads((out / "edge.json").read_text())
    rows = {f["target"]: f for f in data["figures"]}
    assert set(rows) == {"direct", "edge"}
    steps = {s["target"]: s for s in data["steps"]}
    for target, row in rows.items():
        # Every call of the mix (ghost, prank, full flow) completed on both targets.
        assert row["rate"] == 1.0 and row["offered"] >= 3, target
        assert row["completed"] == row["offered"] and row["failures"] == 0, \
            (target, steps[target]["notes"])
        assert row["passed"], (target, steps[target]["notes"])
        assert finite(row["completed_cps"]) and row["completed_cps"] > 0, target
        assert finite(row["invite_200_p50_ms"]) and finite(row["invite_200_p99_ms"]), target
        assert row["invite_200_p50_ms"] <= row["invite_200_p99_ms"], target
        assert len(steps[target]["invite_200_ms"]) == row["offered"], target
        cpu = row["cpu_ms_per_call"]
        for who in ("asterisk", "app", "sipp"):
            assert finite(cpu[who]) and cpu[who] > 0, (target, who)
        assert finite(cpu["agi"]), target
        assert steps[target]["agi_served"] == row["offered"], target  # every call screened
    direct, edge = rows["direct"], rows["edge"]
    assert direct["share"] == {"direct": 1.0}
    assert steps["direct"]["node_calls"] == {"direct": direct["offered"]}
    # Through the edge, both nodes answered (round robin), each ticket in the shared database
    # with its node's channel-id prefix, none without one.
    calls = steps["edge"]["node_calls"]
    assert set(calls) == {"a", "b"} and sum(calls.values()) == edge["offered"], calls
    assert math.isclose(sum(edge["share"].values()), 1.0) and min(edge["share"].values()) > 0
    # Kamailio's CPU: all its processes found (the main one and its forked children).
    assert edge["kamailio_processes"] > 2
    assert finite(edge["cpu_ms_per_call"]["kamailio"])
    assert finite(edge["cpu_ms_per_call"]["kamailio_sched"])
    assert edge["cpu_ms_per_call"]["kamailio_sched"] > 0
    assert direct["cpu_ms_per_call"]["kamailio_sched"] == 0  # no edge on the direct target
    assert finite(edge["ratio_edge_over_direct"]) and edge["ratio_edge_over_direct"] > 0

    report = (out / "edge.md").read_text()
    assert "| direct | 1 |" in report and "| edge | 1 |" in report
    shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(edge["share"].items()))
    assert f"| {shares} |" in report
