"""Figures from the steps: percentiles, the knee, a markdown report, a PNG plot."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ari_app.pbx.installation import installation
from bench.load import StepResult

Steps = list[StepResult]
#: The dialplan twins (bench/twin.conf), each with what it does beyond the one before.
TWINS = {
    "twin": "Plain twin (the menu first, recording from the operator on)",
    "twin-human": "Human-first twin (the operator rung during the menu, as the app does)",
    "twin-full": ("Full twin (human first, and the product's steps before the operator: "
                  "ringback, the screening AGI, every caller recorded from before the answer, "
                  "talk detection)"),
}


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def knee(steps: Steps, target: str) -> float | None:
    """The highest rate that passed, every lower rate having passed too."""
    best = None
    for s in sorted((s for s in steps if s.target == target), key=lambda s: s.rate):
        if not s.passed:
            break
        best = s.rate
    return best


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        return lines[0] if lines else "?"

    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "asterisk": version([*installation().command, "-V"]),
            "sipp": version(["sipp", "-v"])}


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(steps: Steps) -> str:
    head = ("| target | rate (cps) | calls | operator legs | recordings | ok | failed "
            "| INVITE→200 p50/p95/p99 (ms) "
            "| key→operator p50/p95/p99 (ms) | CPU ms/call asterisk / AGI / app (server total) "
            "| sipp | peak RSS MB asterisk / app | peak calls | ARI ws KB/call | pass |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for s in sorted(steps, key=lambda s: (s.rate, s.target)):
        inv, key = s.invite_200_ms, s.key_to_operator_ms
        cpu, rss = s.cpu_ms_per_call, s.peak_rss_mb
        ws = s.ws_bytes / 1024 / max(s.offered, 1) if s.target == "app" else None
        failed = s.failed + s.operator_failed
        # A caller SIPp ended at its own time-out is neither ok nor failed: count it here too.
        unfinished = max(0, s.offered - s.successful - s.failed)
        server = cpu.get("asterisk", 0) + cpu.get("agi", 0) + (
            cpu.get("app", 0) if s.target == "app" else 0)
        rows.append(
            f"| {s.target} | {s.rate:g} | {s.offered} | {s.operator_legs} | {s.recordings} "
            f"| {s.successful} "
            f"| {failed}{f' (+{unfinished} unfinished)' if unfinished else ''}"
            f"{f' ({s.shed} shed on the record)' if s.shed else ''} "
            f"| {_f(pct(inv, 50))} / {_f(pct(inv, 95))} / {_f(pct(inv, 99))} "
            f"| {_f(pct(key, 50))} / {_f(pct(key, 95))} / {_f(pct(key, 99))} "
            f"| {cpu.get('asterisk', 0):.1f} / {cpu.get('agi', 0):.1f} / "
            f"{_f(cpu.get('app') if s.target == 'app' else None, 1)} ({server:.1f}) "
            f"| {cpu.get('sipp', 0):.1f} "
            f"| {rss.get('asterisk', 0):.0f} / "
            f"{_f(rss.get('app') if s.target == 'app' else None)} "
            f"| {s.peak_concurrent_calls} | {_f(ws, 1)} | {'yes' if s.passed else 'NO'} |")
    return head + "\n".join(rows) + "\n"


def app_side(steps: Steps) -> str:
    lines = ["| rate (cps) | screened by the FastAGI server | screening AGI wall, before Stasis "
             "p50/p99 (ms) | StasisStart→answered p50/p99 (ms) | key handled→operator chosen "
             "p50/p99 (ms) |", "|---|---|---|---|---|"]
    for s in sorted((s for s in steps if s.target == "app"), key=lambda s: s.rate):
        w = s.app_side_ms.get("screening_wall", [])
        a = s.app_side_ms.get("arrived_to_answered", [])
        m = s.app_side_ms.get("menu_to_ringing", [])
        lines.append(f"| {s.rate:g} | {s.agi_served}/{s.offered} "
                     f"| {_f(pct(w, 50))} / {_f(pct(w, 99))} "
                     f"| {_f(pct(a, 50))} / {_f(pct(a, 99))} "
                     f"| {_f(pct(m, 50))} / {_f(pct(m, 99))} |")
    return "\n".join(lines) + "\n"


def plot(steps: Steps, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, attr, title in ((axes[0], "invite_200_ms", "INVITE → 200 OK"),
                            (axes[1], "key_to_operator_ms", "key → operator INVITE (ringing)")):
        for target, colour in (("app", "tab:red"), ("twin", "tab:blue"),
                               ("twin-human", "tab:green"), ("twin-full", "tab:purple")):
            pts = sorted((s for s in steps if s.target == target), key=lambda s: s.rate)
            for p, style in ((50, "-o"), (99, "--^")):
                # A log scale shows only positive times: with the operator rung during the menu
                # the phone often rings before the key (negative key → operator).
                xy = [(s.rate, y) for s in pts if (y := pct(getattr(s, attr), p)) and y > 0]
                if xy:
                    ax.plot([x for x, _ in xy], [y for _, y in xy], style, color=colour,
                            label=f"{target} p{p}")
        ax.set_title(title)
        ax.set_xlabel("offered load (calls per second)")
        ax.set_ylabel("ms (log scale)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Siaga 112 vs dialplan twin, Asterisk {installation().version.split('+')[0]}, "
                 "112 call mix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(steps: Steps, out: Path, command: str, extra: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    knees = {t: knee(steps, t) for t in ("app", *TWINS)}
    k_app = knees["app"]
    ratios = {t: k_app / k if k_app and (k := knees[t]) else None for t in TWINS}
    data: dict[str, Any] = {"machine": info, "command": command, "knee": knees}
    data |= {f"knee_ratio_app_over_{t.replace('-', '_')}": r for t, r in ratios.items()}
    data |= {"steps": [s.to_json() for s in steps]} | extra
    (out / "results.json").write_text(json.dumps(data, indent=1))
    plot(steps, out / "latency.png")
    md = [f"# Bench report\n\nCommand: `{command}`\n",
          "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "\n",
          table(steps), "\nApp-side timestamps (the app's own ticket audit):\n", app_side(steps),
          f"\nKnee (highest passing rate of the ladder): app {_f(k_app, 1)} cps, "
          f"twin {_f(knees['twin'], 1)} cps; ratio app/twin {_f(ratios['twin'], 2)}\n"]
    for twin, what in TWINS.items():
        if twin != "twin" and any(s.target == twin for s in steps):
            md.append(f"{what}: knee {_f(knees[twin], 1)} cps; ratio app/{twin} "
                      f"{_f(ratios[twin], 2)}\n")
    agi = extra.get("agi_screening")
    if isinstance(agi, dict):
        md.append(f"\nAGI screening: {agi.get('summary', '')}\n")
    for s in steps:
        for note in s.notes:
            md.append(f"- {s.target} @ {s.rate:g} cps: {note}\n")
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
