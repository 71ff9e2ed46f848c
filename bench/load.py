"""One load step: a fresh target, the 112 call mix at a rate for a duration, and its figures."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ari_app.testing.media import speech_pcap
from ari_app.testing.ports import free_port
from ari_app.testing.sipp import PCAP_DIR
from bench.sipp import SippOutcome, SippProc, SippSpec
from bench.stack import CpuMark, TargetStack

log = logging.getLogger(__name__)

# The call mix, roughly from published Indonesian 112 figures: most calls to 112 are ghost
# (pocket dials, silence) or abandoned, a large share are pranks, under a third need a human.
MIX = {"ghost": 0.5, "prank": 0.2, "full": 0.3}
PREFIX = {"ghost": "0811", "prank": "0812", "full": "0813"}
DIGIT = "1"  # health: priority 2, no follow-up prompt in Jepara (the twin plays none either)


class Stack(Protocol):
    """What a step drives: one target (TargetStack) or several nodes behind an edge."""

    service: str

    @property
    def caller_port(self) -> int: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def cpu_mark(self) -> CpuMark: ...
    def ws_bytes(self) -> int: ...
    def peak_rss(self) -> tuple[float, float]: ...
    def log_size(self) -> int: ...
    def taskprocessor_warnings(self, since: int = 0) -> list[str]: ...
    def agi_served(self) -> int: ...
    def node_calls(self) -> dict[str, int]: ...
    def shed_callers(self) -> int: ...
    def recordings(self) -> int: ...


StackFactory = Callable[[Path, int, int], Stack]  # (var dir, operators, operator UAS port)


@dataclass(frozen=True)
class Timing:
    key_after_ms: int = 2000          # barge-in: the key is pressed during the menu prompt
    talk_min_ms: int = 30000
    talk_max_ms: int = 60000
    ghost_min_ms: int = 3000
    ghost_max_ms: int = 10000
    prank_hangup_ms: int = 300        # after the DTMF packets end
    answer_after_ms: int = 200        # the operator's phone rings this long

    @classmethod
    def quick(cls) -> Timing:
        return cls(key_after_ms=1500, talk_min_ms=2000, talk_max_ms=3000, ghost_min_ms=1000,
                   ghost_max_ms=2000)


@dataclass
class StepResult:
    target: str
    rate: float
    duration_s: float
    offered: int = 0
    successful: int = 0
    failed: int = 0                   # callers' failed calls
    operator_failed: int = 0          # operator UAS failed calls
    # Calls the operators' phone received (ok + failed): the app and the human-first twin ring
    # one for every caller during the menu, the plain twin only for callers still there after it.
    operator_legs: int = 0
    watchdog: int = 0                 # SIPp watchdog trips (major + minor), all processes
    taskprocessor_warnings: int = 0
    operators: int = 0
    invite_200_ms: list[float] = field(default_factory=list)
    key_to_operator_ms: list[float] = field(default_factory=list)
    app_side_ms: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)   # per offered call
    cpu_s: dict[str, float] = field(default_factory=dict)             # the step's totals
    node_calls: dict[str, int] = field(default_factory=dict)          # tickets per node
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    peak_concurrent_calls: int = 0
    ws_bytes: int = 0
    agi_served: int = 0  # calls screened by the FastAGI server (the rest: a process each)
    shed: int = 0        # callers refused on the record (lines busy, 503, callback list)
    recordings: int = 0  # MixMonitor files opened: every caller's on the app path, not the twin's
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.failed == 0 and self.operator_failed == 0 and self.watchdog == 0
                and self.taskprocessor_warnings == 0 and self.successful == self.offered)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def dtmf_end_ms(digit: str) -> float:
    """Offset of the first RFC 4733 'end' packet in SIPp's DTMF pcap: when the key is seen."""
    data = (PCAP_DIR / f"dtmf_2833_{digit}.pcap").read_bytes()
    off, first = 24, None
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        t = sec + usec / 1e6
        first = t if first is None else first
        pkt = data[off + 16:off + 16 + incl]
        payload = pkt[14 + 20 + 8 + 12:]          # ethernet, IPv4, UDP, RTP headers
        if len(payload) >= 2 and payload[1] & 0x80:
            return float((t - first) * 1000)
        off += 16 + incl
    return 0.0


def silence_pcap(workdir: Path) -> Path:
    path = workdir / "silence.pcap"
    if not path.exists():
        speech_pcap(path, seconds=12, silent=True)
    return path


def operators_needed(rate: float, timing: Timing) -> int:
    """Enough operators that a full-flow call never waits for one (we measure the app, not
    the queue): the full-flow calls in progress at once, plus a fifth."""
    hold_s = (timing.key_after_ms + timing.talk_max_ms) / 1000 + 5
    return max(4, min(300, math.ceil(rate * MIX["full"] * hold_s * 1.2)))


def run_step(target: str, rate: float, duration_s: float, workdir: Path, sounds: Path,
             timing: Timing, make_stack: StackFactory | None = None) -> StepResult:
    t0 = time.monotonic()
    res = StepResult(target, rate, duration_s)
    workdir.mkdir(parents=True, exist_ok=True)
    counts = {k: max(1, round(share * rate * duration_s)) for k, share in MIX.items()}
    res.offered = sum(counts.values())
    res.operators = operators_needed(rate, timing)
    op_port = free_port()
    stack: Stack = (make_stack(workdir / "var", res.operators, op_port) if make_stack
                    else TargetStack(target, workdir / "var", sounds, res.operators, op_port))
    dtmf_ms = dtmf_end_ms(DIGIT)
    template = {
        "digit": DIGIT, "key_after_ms": str(timing.key_after_ms),
        "dtmf_ms": str(round(dtmf_ms) + 20), "talk_min_ms": str(timing.talk_min_ms),
        "talk_max_ms": str(timing.talk_max_ms), "ghost_min_ms": str(timing.ghost_min_ms),
        "ghost_max_ms": str(timing.ghost_max_ms),
        "prank_hangup_ms": str(round(dtmf_ms) + timing.prank_hangup_ms),
        "answer_after_ms": str(timing.answer_after_ms),
        "silence_pcap": str(silence_pcap(workdir.parent)),
    }
    longest_s = (timing.key_after_ms + timing.talk_max_ms) / 1000 + 30
    callers: list[SippProc] = []
    operator: SippProc | None = None
    try:
        stack.start()
        operator = SippProc(SippSpec("operator", "operator.xml", workdir / "sipp-operator",
                                     template, calls=100000, local_port=op_port,
                                     timeout_s=int(duration_s + longest_s + 120)))
        operator.start()
        time.sleep(0.5)
        mark0 = stack.cpu_mark()
        ws0 = stack.ws_bytes()
        log0 = stack.log_size()
        for kind, n in counts.items():
            numbers = [f"{PREFIX[kind]}{10000 + i}" for i in range(n)]
            callers.append(SippProc(SippSpec(
                kind, f"{kind}.xml", workdir / f"sipp-{kind}", template,
                target_port=stack.caller_port, service=stack.service, calls=n,
                rate_cps=rate * MIX[kind], numbers=numbers,
                timeout_s=int(duration_s + longest_s + 60))))
        for proc in callers:
            proc.start()
        deadline = time.monotonic() + duration_s + longest_s + 90
        while time.monotonic() < deadline and not all(p.poll() for p in callers):
            time.sleep(0.5)
        for proc in callers:
            if not proc.poll():
                res.notes.append(f"{proc.spec.name}: SIPp still running at the deadline; stopped")
                proc.stop(5)
        time.sleep(1.0)
        mark1 = stack.cpu_mark()
        ws1 = stack.ws_bytes()
        rss_ast, rss_app = stack.peak_rss()
        operator.stop(10)
        outcomes = [p.outcome() for p in callers]
        op_out = operator.outcome()
        res.taskprocessor_warnings = len(stack.taskprocessor_warnings(log0))
        res.node_calls = stack.node_calls()
        res.shed = stack.shed_callers()
        res.recordings = stack.recordings()
    finally:
        stack.stop()
        for proc in [*callers, *([operator] if operator else [])]:
            proc.stop(2)
    calls = max(res.offered, 1)
    res.successful = sum(o.successful for o in outcomes)
    res.failed = sum(o.failed for o in outcomes)
    res.operator_failed = op_out.failed
    res.operator_legs = op_out.successful + op_out.failed
    res.watchdog = sum(o.watchdog_major + o.watchdog_minor for o in [*outcomes, op_out])
    res.invite_200_ms = sorted(x for o in outcomes for x in o.invite_to_200_ms)
    res.key_to_operator_ms = _key_to_operator(outcomes, op_out, dtmf_ms)
    sipp_cpu = sum(o.cpu_s for o in [*outcomes, op_out])
    res.cpu_ms_per_call = {
        "asterisk": 1000 * (mark1.asterisk_s - mark0.asterisk_s) / calls,
        "app": 1000 * (mark1.app_s - mark0.app_s) / calls,
        "agi": 1000 * (mark1.agi_s - mark0.agi_s) / calls,
        "sipp": 1000 * sipp_cpu / calls,
    }
    res.cpu_s = {"asterisk": mark1.asterisk_s - mark0.asterisk_s,
                 "app": mark1.app_s - mark0.app_s, "agi": mark1.agi_s - mark0.agi_s,
                 "kamailio": mark1.kamailio_s - mark0.kamailio_s,
                 "kamailio_sched": mark1.kamailio_sched_s - mark0.kamailio_sched_s,
                 "kamailio_processes": float(mark1.kamailio_processes), "sipp": sipp_cpu}
    res.peak_rss_mb = {"asterisk": rss_ast, "app": rss_app}
    res.peak_concurrent_calls = _peak_concurrent(outcomes)
    res.ws_bytes = max(0, ws1 - ws0)
    res.agi_served = stack.agi_served()
    if target == "app":
        res.app_side_ms = app_side_timestamps(workdir / "var" / "siaga112.db")
    for o in [*outcomes, op_out]:
        if o.failed:
            res.notes.append(f"{o.name}: {o.failed} failed; see {workdir}/sipp-{o.name}/errors.log")
    res.wall_s = time.monotonic() - t0
    return res


def _key_to_operator(callers: list[SippOutcome], operator: SippOutcome,
                     dtmf_ms: float) -> list[float]:
    """Join the caller's key instant with the operator's INVITE by the caller's number.

    Measured from the end of the DTMF event (when Asterisk reports the digit) to the INVITE
    reaching the operator's phone, i.e. to its ringing."""
    keys: dict[str, float] = {}
    for o in callers:
        if o.name != "full":
            continue
        for line in o.log_lines:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "KEY":
                keys[parts[1]] = float(parts[2]) + float(parts[3]) / 1e6 + dtmf_ms / 1000
    out: list[float] = []
    seen: set[str] = set()
    for line in operator.log_lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "OPINV":
            number = parts[1].removeprefix("sip:")
            if number in keys and number not in seen:
                seen.add(number)
                out.append(1000 * (float(parts[2]) + float(parts[3]) / 1e6 - keys[number]))
    return sorted(out)


def _peak_concurrent(callers: list[SippOutcome]) -> int:
    """Callers' calls in progress at once, from the per-second SIPp statistics (approximate:
    the three caller processes start within a few ms of each other)."""
    n = max((len(o.current_calls) for o in callers), default=0)
    return max((sum(o.current_calls[i] for o in callers if i < len(o.current_calls))
                for i in range(n)), default=0)


def app_side_timestamps(db: Path) -> dict[str, list[float]]:
    """From the app's own ticket audit: StasisStart->answered, key handled->operator chosen,
    and the screening AGI's wall time as the dialplan measured it (Stasis argument)."""
    if not db.exists():
        return {}
    out: dict[str, list[float]] = {"arrived_to_answered": [], "menu_to_ringing": [],
                                   "screening_wall": []}
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT ticket_id, action, at, detail FROM ticket_audit "
                           "ORDER BY id").fetchall()
    finally:
        con.close()
    per: dict[int, dict[str, datetime]] = {}
    for ticket_id, action, at, detail in rows:
        per.setdefault(int(ticket_id), {}).setdefault(str(action), datetime.fromisoformat(str(at)))
        if action == "screening":
            screen_ms = json.loads(detail or "{}").get("screen_ms")
            if isinstance(screen_ms, int):
                out["screening_wall"].append(float(screen_ms))
    for acts in per.values():
        if "opened" in acts and "answered" in acts:
            out["arrived_to_answered"].append(
                (acts["answered"] - acts["opened"]).total_seconds() * 1000)
        if "menu" in acts and "ringing" in acts:
            out["menu_to_ringing"].append((acts["ringing"] - acts["menu"]).total_seconds() * 1000)
    return {k: sorted(v) for k, v in out.items()}
