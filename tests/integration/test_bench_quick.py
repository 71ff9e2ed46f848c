"""`python -m bench run --quick` (issue 8): the load harness works end to end and reports.

No timing assertions: CI machines vary. The run drives a few calls of the 112 mix at the app
(in its own process) and at the dialplan twin, each on its own private Asterisk.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ari_app.config import PROJECT_ROOT
from ari_app.pbx.installation import installation

pytestmark = pytest.mark.integration


def test_quick_bench_runs_both_targets_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--target", "both", "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = (out / "report.md").read_text()
    assert "| app | 1 |" in report and "| twin | 1 |" in report
    png = (out / "latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000

    data = json.loads((out / "results.json").read_text())
    steps = {s["target"]: s for s in data["steps"]}
    assert set(steps) == {"app", "twin"}
    for target, step in steps.items():
        # Every call of the mix (ghost, prank, full flow) completed on both targets.
        assert step["offered"] >= 3, target
        assert step["successful"] == step["offered"], (target, step["notes"])
        assert step["failed"] == 0 and step["operator_failed"] == 0, (target, step["notes"])
        assert len(step["invite_200_ms"]) == step["offered"], target
        assert all(math.isfinite(x) and x >= 0 for x in step["invite_200_ms"]), target
        for who in ("asterisk", "sipp"):
            cpu = step["cpu_ms_per_call"][who]
            assert isinstance(cpu, float) and math.isfinite(cpu) and cpu > 0, (target, who)
        assert step["peak_rss_mb"]["asterisk"] > 10, target
    app = steps["app"]
    assert app["cpu_ms_per_call"]["app"] > 0 and app["peak_rss_mb"]["app"] > 10
    assert app["ws_bytes"] > 0                       # the app's events websocket was found
    assert app["app_side_ms"]["arrived_to_answered"]  # the app's own timestamps were read
    walls = app["app_side_ms"]["screening_wall"]  # the dialplan timed the AGI, the app kept it
    assert walls and all(0 <= w < 5000 for w in walls)
    # The product path screens every call, through the FastAGI server the bench starts beside
    # the app, whose CPU is counted; the twin has no screening.
    assert app["agi_served"] == app["offered"] and steps["twin"]["agi_served"] == 0
    assert app["cpu_ms_per_call"]["agi"] >= 0 and steps["twin"]["cpu_ms_per_call"]["agi"] == 0
    # The product records every caller from before its screening (DESIGN.md: evidence); the
    # plain twin only those still there after its menu, so never its ghost.
    assert app["recordings"] == app["offered"]
    assert 0 < steps["twin"]["recordings"] < steps["twin"]["offered"]
    assert app["key_to_operator_ms"] and steps["twin"]["key_to_operator_ms"]  # full flow rang
    # Human first: the app rings an operator for every caller while the menu plays, the ghosts
    # who hang up within 2 s included; the plain twin dials only after its menu, when they are
    # gone (what the human-first twin is for).
    assert app["operator_legs"] == app["offered"]
    assert steps["twin"]["operator_legs"] < steps["twin"]["offered"]
    agi = data["agi_screening"]
    assert agi["summary"] and agi["cpu_ms_mean"] > 0
    assert agi["flagged_runs"] == agi["runs"]  # each run got through the database lookup
    fast = agi["fastagi"]  # the same script through `siaga112 agi serve`
    assert fast["cpu_ms_mean"] > 0 and fast["flagged_runs"] == fast["runs"]


def _quick_human_first_twin(target: str, tmp_path: Path) -> tuple[dict[str, Any], Path] | None:
    """`bench run --quick --target <target>`: its results and report directory; None on an
    Asterisk before 20, after checking that the bench refused it with exit 2 and said why."""
    out = tmp_path / f"{target}-out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--quick", "--target", target, "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=170, check=False)
    if installation().major < 20:
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"({target}) needs Asterisk 20 or later" in proc.stderr
        assert not (out / "results.json").exists()
        return None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), out


def test_quick_human_first_twin_rings_the_operator_while_the_menu_plays(tmp_path: Path) -> None:
    """`--target twin-human`: the dialplan twin that rings the operator at the answer, as the
    app does; Asterisk 16 has no Originate v() option, and the bench says so."""
    ran = _quick_human_first_twin("twin-human", tmp_path)
    if ran is None:
        return
    data, out = ran
    [step] = data["steps"]
    assert step["target"] == "twin-human" and step["offered"] >= 3
    assert step["successful"] == step["offered"], step["notes"]
    assert step["failed"] == 0 and step["operator_failed"] == 0, step["notes"]
    # Every caller's operator leg, the ghosts' (gone within 2 s) too, each ended with its caller.
    assert step["operator_legs"] == step["offered"]
    # The full-flow caller's operator was ringing before the key was pressed.
    assert step["key_to_operator_ms"] and all(ms < 0 for ms in step["key_to_operator_ms"])
    assert data["knee"]["twin-human"] == 1.0
    assert "Human-first twin" in (out / "report.md").read_text()


def test_quick_full_twin_screens_records_and_rings_every_caller(tmp_path: Path) -> None:
    """`--target twin-full`: the human-first twin with the product's steps before the operator
    in dialplan: every caller screened by the same FastAGI server, recorded from before the
    answer, and rung to an operator during the menu."""
    ran = _quick_human_first_twin("twin-full", tmp_path)
    if ran is None:
        return
    data, out = ran
    [step] = data["steps"]
    assert step["target"] == "twin-full" and step["offered"] >= 3
    assert step["successful"] == step["offered"], step["notes"]
    assert step["failed"] == 0 and step["operator_failed"] == 0, step["notes"]
    assert step["agi_served"] == step["offered"]       # the same screening as the product's
    assert step["cpu_ms_per_call"]["agi"] > 0          # ... and its CPU counted
    assert step["recordings"] == step["offered"]       # the ghost recorded too
    assert step["operator_legs"] == step["offered"]    # human first
    assert data["knee"]["twin-full"] == 1.0
    assert data["knee_ratio_app_over_twin_full"] is None  # no app step in this run
    assert "Full twin" in (out / "report.md").read_text()


def test_quick_time_to_a_human_bench_joins_caller_and_phone_timestamps(tmp_path: Path) -> None:
    """`python -m bench human --quick`: one caller of each kind, free operators and a surge."""
    out = tmp_path / "human-out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "human", "--quick", "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = json.loads((out / "human.json").read_text())
    assert [c["case"].split(":")[0] for c in cases] == ["free operators", "surge"]
    for case in cases:
        assert case["failed"] == 0 and not case["unmatched"], case
        assert set(case["spans"]) == {"silent", "talker", "key"}
        for kind, spans in case["spans"].items():
            # Every caller reached a human, and the order of SIPp's own instants holds: the
            # call arrives, is answered, the phone rings, the operator answers.
            assert all(len(v) == 1 for v in spans.values()), (case["case"], kind, spans)
            assert 0 <= spans["answer_to_ringing"][0] <= spans["arrival_to_ringing"][0]
            assert spans["arrival_to_ringing"][0] < spans["arrival_to_operator"][0]
            assert spans["answer_to_operator"][0] <= spans["arrival_to_operator"][0]
    assert "| surge: 3 callers, 1 operator (1 op.) | silent | 1 |" in (out / "human.md").read_text()
