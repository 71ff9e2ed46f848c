"""`python -m bench edge`: the 112 call mix through Kamailio to two nodes, against one node.

Two targets, alternated at each rate step so that the machine's noise falls on both alike:

- direct: one node (Asterisk + the app + the FastAGI server), the callers' SIPp at its Asterisk;
- edge: two nodes (127.0.0.11 and 127.0.0.12, names a and b) sharing one PostgreSQL, behind a
  real Kamailio (ari_app.edge.kamailio), the callers' SIPp at Kamailio.

Both targets use a fresh database per step in one private PostgreSQL cluster (never the shared
server). The operators' phones are one SIPp UAS with a static contact per operator, reached by
each node's Asterisk directly: Kamailio carries the callers' legs only (the carrier side).
Figures come from outside the app: SIPp's timestamps and /proc CPU of each process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from ari_app.edge.kamailio import EdgeSettings, KamailioProcess, node_states, nodes_from, render
from ari_app.testing.ports import free_port
from ari_app.testing.postgres import PrivateCluster
from ari_app.tickets.db import make_engine
from bench.load import StepResult, Timing, run_step
from bench.procstat import descendants, tree_cpu_seconds, tree_sched_seconds
from bench.report import _f, machine, pct
from bench.stack import CpuMark, TargetStack

log = logging.getLogger(__name__)

NODES = (("a", "127.0.0.11"), ("b", "127.0.0.12"))
EDGE_ADDRESS = "127.0.0.1"


def async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def node_calls(db_url: str) -> dict[str, int]:
    """Tickets per node, by the prefix the node puts on its channel ids ("a-", "b-")."""

    async def count() -> dict[str, int]:
        engine = make_engine(db_url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT channel_id FROM tickets"))).all()
        finally:
            await engine.dispose()
        out: dict[str, int] = {}
        for (channel,) in rows:
            prefix = str(channel or "").split("-", 1)[0] if "-" in str(channel or "") else ""
            key = prefix if prefix in dict(NODES) else "other"
            out[key] = out.get(key, 0) + 1
        return out

    return asyncio.run(count())


class DirectStack(TargetStack):
    """One node, the product path ("app"), on its own database in the private cluster."""

    def __init__(self, var_dir: Path, sounds: Path, operators: int, operator_port: int,
                 db_url: str) -> None:
        super().__init__("app", var_dir, sounds, operators, operator_port, db_url=db_url)

    def node_calls(self) -> dict[str, int]:
        return {"direct": sum(node_calls(self.db_url).values())}


class EdgeStack:
    """Two nodes on one PostgreSQL behind Kamailio; the figures of all their processes."""

    service = "112"

    def __init__(self, var_dir: Path, sounds: Path, operators: int, operator_port: int,
                 db_url: str) -> None:
        self.var_dir, self.db_url = var_dir, db_url
        self.port = free_port()
        self.nodes = {name: TargetStack("app", var_dir / name, sounds, operators, operator_port,
                                        bind=address, db_url=db_url, node=name,
                                        seed=name == "a", trunk_host=EDGE_ADDRESS)
                      for name, address in NODES}
        self.kamailio: KamailioProcess | None = None
        self.log_marks: dict[str, int] = {}

    @property
    def caller_port(self) -> int:
        return self.port

    def start(self) -> None:
        for node in self.nodes.values():  # a first: it writes the roster b reads
            node.start()
        settings = EdgeSettings(
            listen=f"{EDGE_ADDRESS}:{self.port}",
            nodes=nodes_from((n, f"{s.site.asterisk.bind}:{s.site.asterisk.sip_port}")
                             for n, s in self.nodes.items()),
            ping_interval_s=2)  # the product default: its OPTIONS probing is in the figures
        rendered = render(settings, self.var_dir / "edge")
        self.kamailio = KamailioProcess(rendered)
        self.kamailio.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the dispatcher's probing: no event to await
            states = node_states(rendered)
            if len(states) == len(NODES) and all(f.startswith("A") for f in states.values()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"Kamailio does not see both nodes up: {node_states(rendered)}")

    def stop(self) -> None:
        if self.kamailio is not None:
            self.kamailio.stop()
        for node in self.nodes.values():
            node.stop()

    @property
    def kamailio_pid(self) -> int | None:
        proc = self.kamailio.proc if self.kamailio else None
        return proc.pid if proc is not None else None

    def cpu_mark(self) -> CpuMark:
        marks = [n.cpu_mark() for n in self.nodes.values()]
        pid = self.kamailio_pid
        return CpuMark(sum(m.asterisk_s for m in marks), sum(m.app_s for m in marks),
                       time.monotonic(), sum(m.agi_s for m in marks),
                       tree_cpu_seconds(pid) if pid else 0.0,
                       tree_sched_seconds(pid) if pid else 0.0,
                       1 + len(descendants(pid)) if pid else 0)

    def ws_bytes(self) -> int:
        return sum(n.ws_bytes() for n in self.nodes.values())

    def peak_rss(self) -> tuple[float, float]:
        rss = [n.peak_rss() for n in self.nodes.values()]
        return max(r[0] for r in rss), max(r[1] for r in rss)

    def log_size(self) -> int:
        """Marks each node's Asterisk log (the step's warnings come after it)."""
        self.log_marks = {name: n.log_size() for name, n in self.nodes.items()}
        return 0

    def taskprocessor_warnings(self, since: int = 0) -> list[str]:
        return [w for name, n in self.nodes.items()
                for w in n.taskprocessor_warnings(self.log_marks.get(name, 0))]

    def agi_served(self) -> int:
        return sum(n.agi_served() for n in self.nodes.values())

    def node_calls(self) -> dict[str, int]:
        return node_calls(self.db_url)

    def shed_callers(self) -> int:
        return sum(n.shed_callers() for n in self.nodes.values())

    def recordings(self) -> int:
        return sum(n.recordings() for n in self.nodes.values())


def per_call(step: StepResult, who: str) -> float | None:
    """CPU milliseconds of ``who`` per completed call (None: no call completed)."""
    if step.successful <= 0:
        return None
    return 1000 * step.cpu_s.get(who, 0.0) / step.successful


def completed_cps(step: StepResult) -> float:
    """Calls completed per second of offered load (the step's duration)."""
    return step.successful / step.duration_s if step.duration_s > 0 else 0.0


def figures(steps: list[StepResult]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in sorted(steps, key=lambda s: (s.rate, s.target)):
        total = max(sum(v for k, v in s.node_calls.items() if k != "direct"), 1)
        out.append({
            "target": s.target, "rate": s.rate, "offered": s.offered, "completed": s.successful,
            "completed_cps": completed_cps(s),
            "invite_200_p50_ms": pct(s.invite_200_ms, 50),
            "invite_200_p99_ms": pct(s.invite_200_ms, 99),
            "share": ({k: v / total for k, v in s.node_calls.items()}
                      if s.target == "edge" else {"direct": 1.0}),
            "failures": s.failed + s.operator_failed + max(0, s.offered - s.successful - s.failed),
            "cpu_ms_per_call": {who: per_call(s, who)
                                for who in ("kamailio", "kamailio_sched", "asterisk", "app",
                                            "agi", "sipp")},
            "kamailio_processes": int(s.cpu_s.get("kamailio_processes", 0)),
            "passed": s.passed,
        })
    by = {(f["target"], f["rate"]): f for f in out}
    for f in out:
        if f["target"] == "edge":
            d = by.get(("direct", f["rate"]))
            f["ratio_edge_over_direct"] = (f["completed_cps"] / d["completed_cps"]
                                           if d and d["completed_cps"] else None)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | rate (cps) | offered | completed | completed cps | INVITE→200 p50/p99 (ms) "
             "| answered by node | failures | CPU ms/call Kamailio (sched) | Asterisk | app | AGI "
             "| edge/direct cps |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in rows:
        cpu = f["cpu_ms_per_call"]
        share = ", ".join(f"{k} {v:.0%}" for k, v in sorted(f["share"].items()))
        kam = (f"{_f(cpu['kamailio'], 2)} ({_f(cpu['kamailio_sched'], 2)})"
               if f["target"] == "edge" else "-")
        lines.append(
            f"| {f['target']} | {f['rate']:g} | {f['offered']} | {f['completed']} "
            f"| {f['completed_cps']:.2f} | {_f(f['invite_200_p50_ms'])} / "
            f"{_f(f['invite_200_p99_ms'])} | {share} | {f['failures']} | {kam} "
            f"| {_f(cpu['asterisk'], 1)} | {_f(cpu['app'], 1)} | {_f(cpu['agi'], 1)} "
            f"| {_f(f.get('ratio_edge_over_direct'), 2)} |")
    return "\n".join(lines) + "\n"


def write(steps: list[StepResult], out: Path, command: str, extra: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows = figures(steps)
    info = machine()
    data = {"machine": info, "command": command, "figures": rows,
            "steps": [s.to_json() for s in steps]} | extra
    (out / "edge.json").write_text(json.dumps(data, indent=1))
    md = [f"# Edge bench: Kamailio + two nodes vs one node\n\nCommand: `{command}`\n",
          "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "\n",
          table(rows),
          "\nCPU ms/call: utime+stime from /proc over the step, divided by completed calls; "
          "Kamailio: all its processes (in brackets: the same from the scheduler's ns counters, "
          "/proc/<pid>/task/*/schedstat, exact where utime+stime counts whole clock ticks per "
          "process); Asterisk/app/AGI: summed over the target's nodes.\n"]
    for s in steps:
        for note in s.notes:
            md.append(f"- {s.target} @ {s.rate:g} cps: {note}\n")
    path = out / "edge.md"
    path.write_text("\n".join(md))
    return path


def run(rates: list[float], duration: float, timing: Timing, work: Path, sounds: Path,
        out: Path, command: str, no_stop: bool = False) -> tuple[Path, list[StepResult]]:
    cluster = PrivateCluster()
    steps: list[StepResult] = []
    t0 = time.monotonic()
    try:
        cluster.init()
        cluster.start()
        stopped: set[str] = set()
        for rate in sorted(rates):
            for target in ("direct", "edge"):  # alternating, never together
                if target in stopped:
                    continue
                db = async_url(cluster.createdb(f"bench_{target}_{str(rate).replace('.', '_')}"))

                def make(var: Path, operators: int, op_port: int, target: str = target,
                         db: str = db) -> DirectStack | EdgeStack:
                    if target == "direct":
                        return DirectStack(var, sounds, operators, op_port, db)
                    return EdgeStack(var, sounds, operators, op_port, db)

                log.info("step: %s at %g cps for %gs", target, rate, duration)
                step = run_step(target, rate, duration, work / f"{target}-{rate:g}", sounds,
                                timing, make_stack=make)
                steps.append(step)
                log.info("step done: %s at %g cps: %d/%d ok, %d failed, nodes %s (%.0fs)",
                         target, rate, step.successful, step.offered,
                         step.failed + step.operator_failed, step.node_calls, step.wall_s)
                if not step.passed and not no_stop:
                    stopped.add(target)
    finally:
        cluster.destroy()
    extra = {"timing": dict(vars(timing)), "duration_s": duration,
             "wall_s": time.monotonic() - t0}
    return write(steps, out, command, extra), steps

