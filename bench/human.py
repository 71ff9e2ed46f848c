"""Time to a human, measured outside the app: SIPp's own clocks at the caller and at the phone.

Per caller, joined by the caller's number:
- ARR: the caller's INVITE leaves (the call's arrival), ANS: the caller gets the 200 OK (the
  app answered), logged by the caller's SIPp;
- OPINV: the INVITE reaches the operator's phone (it rings), OPANS: the phone answers, logged
  by the operators' SIPp. Both SIPp processes run on this machine: one clock.

Two cases: free operators (more operators than callers) and a surge (more callers than
operators, arriving together). Three callers: silent (no key, no audio), a talker without a
key, a key presser. The app's own log and database are not read.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.testing.ports import free_port
from bench.load import dtmf_end_ms
from bench.sipp import SippOutcome, SippProc, SippSpec
from bench.stack import TargetStack

log = logging.getLogger(__name__)

KINDS = ("silent", "talker", "key")
PREFIX = {"silent": "0815", "talker": "0816", "key": "0817"}
DIGIT = "1"  # Jepara: health, priority 2
SPANS = (("arrival_to_ringing", "ARR", "OPINV"), ("answer_to_ringing", "ANS", "OPINV"),
         ("arrival_to_operator", "ARR", "OPANS"), ("answer_to_operator", "ANS", "OPANS"))


@dataclass(frozen=True)
class Case:
    name: str
    operators: int
    per_kind: int          # callers of each kind
    rate_cps: float        # per kind
    answer_after_ms: int = 2000   # the operator picks up after two rings
    talk_ms: int = 3000
    key_after_ms: int = 1500


CASES = (Case("free operators", operators=12, per_kind=3, rate_cps=0.3),
         Case("surge: 9 callers, 2 operators", operators=2, per_kind=3, rate_cps=3.0))
QUICK = (Case("free operators", operators=4, per_kind=1, rate_cps=1.0),
         Case("surge: 3 callers, 1 operator", operators=1, per_kind=1, rate_cps=3.0))


@dataclass
class CaseResult:
    case: str
    operators: int
    callers: int
    # kind -> span name -> sorted seconds
    spans: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    failed: int = 0
    unmatched: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def stamps(outcome: SippOutcome, tags: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """tag -> caller number -> the first instant logged for it (seconds since the epoch)."""
    out: dict[str, dict[str, float]] = {t: {} for t in tags}
    for line in outcome.log_lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] in out:
            number = parts[1].removeprefix("sip:")
            out[parts[0]].setdefault(number, float(parts[2]) + float(parts[3]) / 1e6)
    return out


def rank(values: list[float], share: float) -> float:
    return values[math.ceil(share * len(values)) - 1]


def run_case(case: Case, workdir: Path, sounds: Path) -> CaseResult:
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    op_port = free_port()
    stack = TargetStack("app", workdir / "var", sounds, case.operators, op_port)
    template = {"digit": DIGIT, "key_after_ms": str(case.key_after_ms),
                "dtmf_ms": str(round(dtmf_end_ms(DIGIT)) + 20),
                "answer_after_ms": str(case.answer_after_ms), "talk_ms": str(case.talk_ms)}
    res = CaseResult(case.name, case.operators, case.per_kind * len(KINDS))
    callers: list[SippProc] = []
    operator: SippProc | None = None
    longest_s = 120
    try:
        stack.start()
        operator = SippProc(SippSpec("operator", "human_operator.xml", workdir / "sipp-operator",
                                     template, calls=10000, local_port=op_port,
                                     timeout_s=longest_s + 60))
        operator.start()
        time.sleep(0.5)
        for kind in KINDS:
            numbers = [f"{PREFIX[kind]}{20000 + i}" for i in range(case.per_kind)]
            callers.append(SippProc(SippSpec(
                kind, f"human_{kind}.xml", workdir / f"sipp-{kind}", template,
                target_port=stack.site.asterisk.sip_port, service=stack.service,
                calls=case.per_kind, rate_cps=case.rate_cps, numbers=numbers,
                timeout_s=longest_s)))
        for proc in callers:
            proc.start()
        deadline = time.monotonic() + longest_s + 30
        while time.monotonic() < deadline and not all(p.poll() for p in callers):
            time.sleep(0.5)
        for proc in callers:
            if not proc.poll():
                proc.stop(5)
        operator.stop(5)
        outcomes = [p.outcome() for p in callers]
        at_phone = stamps(operator.outcome(), ("OPINV", "OPANS"))
    finally:
        stack.stop()
        for proc in [*callers, *([operator] if operator else [])]:
            proc.stop(2)
    for o in outcomes:
        res.failed += o.failed
        at_caller = stamps(o, ("ARR", "ANS"))
        seen = at_caller | at_phone
        spans: dict[str, list[float]] = {}
        for number in sorted(at_caller["ARR"]):
            for name, since, until in SPANS:
                a, b = seen[since].get(number), seen[until].get(number)
                if a is None or b is None:
                    res.unmatched.append(f"{o.name} {number}: no {since if a is None else until}")
                    continue
                spans.setdefault(name, []).append(round(b - a, 3))
        res.spans[o.name] = {k: sorted(v) for k, v in spans.items()}
    res.wall_s = time.monotonic() - t0
    return res


def table(results: list[CaseResult], command: str) -> str:
    lines = [f"Command: `{command}`", "",
             "| case | caller | n | arrival → ringing p50 / p90 | answer → ringing p50 / p90 "
             "| arrival → operator answer p50 / p90 | answer → operator answer p50 / p90 |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for kind in KINDS:
            spans = r.spans.get(kind, {})
            n = len(spans.get("arrival_to_operator", []))
            cells = []
            for name, _, _ in SPANS:
                v = spans.get(name)
                cells.append(f"{rank(v, 0.5):.2f} / {rank(v, 0.9):.2f} s" if v else "-")
            lines.append(f"| {r.case} ({r.operators} op.) | {kind} | {n} | " + " | ".join(cells)
                         + " |")
    notes = [f"{r.case}: {r.failed} SIPp call(s) failed" for r in results if r.failed]
    notes += [f"{r.case}: {u}" for r in results for u in r.unmatched]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def write(results: list[CaseResult], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "human.json").write_text(json.dumps(
        [{"case": r.case, "operators": r.operators, "callers": r.callers, "spans": r.spans,
          "failed": r.failed, "unmatched": r.unmatched, "wall_s": r.wall_s} for r in results],
        indent=2))
    path = out / "human.md"
    path.write_text(table(results, command))
    return path


def run(quick: bool, work: Path, sounds: Path, out: Path, command: str) -> tuple[Path, bool]:
    results = []
    for i, case in enumerate(QUICK if quick else CASES):
        log.info("time to a human: %s", case.name)
        results.append(run_case(case, work / f"human-{i}", sounds))
    ok = all(not r.failed and not r.unmatched for r in results)
    return write(results, out, command), ok

