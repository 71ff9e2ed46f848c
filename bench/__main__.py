"""python -m bench run --target app|twin|twin-human|twin-full|both|all|A,B,.. --rates 2,4,8
                     --duration 40 [--quick]
   python -m bench human [--quick]   (time to a human, from SIPp timestamps)
   python -m bench edge --rates 4,8,12 --duration 40 [--quick]   (Kamailio + 2 nodes vs 1 node)"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ari_app.prompts import build
from bench import agi, edge, human, report
from bench.load import StepResult, Timing, run_step
from bench.stack import SERVICES, unsupported

log = logging.getLogger("bench")


GROUPS = {"both": ["app", "twin"], "all": list(SERVICES)}


def parse_targets(text: str) -> list[str]:
    """``--target``: names from SERVICES or GROUPS, joined by commas, each once, in order."""
    out: list[str] = []
    for name in (n.strip() for n in text.split(",")):
        chosen = GROUPS.get(name, [name] if name in SERVICES else None)
        if chosen is None:
            raise argparse.ArgumentTypeError(
                f"unknown target {name!r}: choose from {', '.join([*SERVICES, *GROUPS])}")
        out += [t for t in chosen if t not in out]
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="drive the 112 call mix at the app and/or the twin")
    r.add_argument("--target", type=parse_targets, default="both",
                   help="a target, or several joined by commas; both: app and twin; all: app "
                   "and the three twins (bench/twin.conf; the human-first and full twins need "
                   "Asterisk >= 20)")
    r.add_argument("--rates", default="2,4,8",
                   help="comma-separated ladder of call rates (calls per second)")
    r.add_argument("--rate", type=float, help="a single rate (instead of --rates)")
    r.add_argument("--duration", type=float, default=40.0, help="seconds of offered load per step")
    r.add_argument("--quick", action="store_true",
                   help="CI: 1 cps for 4 s per target, short talk; checks the harness works")
    r.add_argument("--out", type=Path, default=Path("bench/out"),
                   help="where report.md, results.json and latency.png go")
    r.add_argument("--keep", action="store_true", help="keep the work directory (logs, pcaps)")
    r.add_argument("--no-stop", action="store_true",
                   help="keep climbing the ladder after a target's first failing step")
    h = sub.add_parser("human", help="time to a human: free operators and a surge, for a silent "
                                     "caller, a talker without a key and a key presser")
    h.add_argument("--quick", action="store_true", help="one caller of each kind per case")
    h.add_argument("--out", type=Path, default=Path("bench/out"))
    h.add_argument("--keep", action="store_true", help="keep the work directory")
    e = sub.add_parser("edge", help="the call mix through Kamailio to two nodes on one "
                                     "PostgreSQL, against one node direct, alternating per rate")
    e.add_argument("--rates", default="4,8,12", help="comma-separated call rates (cps)")
    e.add_argument("--duration", type=float, default=40.0, help="seconds of offered load per step")
    e.add_argument("--quick", action="store_true",
                   help="CI: 1 cps for 4 s per target, short talk; checks the harness works")
    e.add_argument("--out", type=Path, default=Path("bench/out"),
                   help="where edge.md and edge.json go")
    e.add_argument("--keep", action="store_true", help="keep the work directory")
    e.add_argument("--no-stop", action="store_true",
                   help="keep climbing after a target's first failing step")
    return p.parse_args(argv)


def main_edge(args: argparse.Namespace, argv: list[str] | None) -> int:
    if args.quick:
        rates, duration, timing = [1.0], 4.0, Timing.quick()
    else:
        rates = [float(x) for x in args.rates.split(",") if x]
        duration, timing = args.duration, Timing()
    if not rates or any(r <= 0 for r in rates) or duration <= 0:
        print("bench: rates and duration must be positive", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="siaga112-edge-"))
    try:
        build(work / "sounds")
        command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        path, steps = edge.run(rates, duration, timing, work, work / "sounds", args.out,
                               command, args.no_stop)
        print(path.read_text())
        print(f"report: {path}  work: {work}")
        return 0 if steps else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main_human(args: argparse.Namespace, argv: list[str] | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="siaga112-human-"))
    try:
        build(work / "sounds")
        command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        path, ok = human.run(args.quick, work, work / "sounds", args.out, command)
        print(path.read_text())
        print(f"report: {path}  work: {work}")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("alembic", "ari_app"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "human":
        return main_human(args, argv)
    if args.command == "edge":
        return main_edge(args, argv)
    targets: list[str] = args.target
    if args.quick:
        rates, duration, timing = [1.0], 4.0, Timing.quick()
    else:
        rates = [args.rate] if args.rate else [float(x) for x in args.rates.split(",") if x]
        duration, timing = args.duration, Timing()
    for problem in filter(None, map(unsupported, targets)):
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    if not rates or any(r <= 0 for r in rates) or duration <= 0:
        print("bench: rates and duration must be positive", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="siaga112-bench-"))
    steps: list[StepResult] = []
    t0 = time.monotonic()
    try:
        build(work / "sounds")
        stopped: set[str] = set()
        for rate in sorted(rates):
            for target in targets:  # alternating: app then the twins at each rate, never together
                if target in stopped:
                    continue
                log.info("step: %s at %g cps for %gs", target, rate, duration)
                step = run_step(target, rate, duration, work / f"{target}-{rate:g}",
                                work / "sounds", timing)
                steps.append(step)
                log.info("step done: %s at %g cps: %d/%d ok, %d failed, pass=%s (%.0fs)",
                         target, rate, step.successful, step.offered,
                         step.failed + step.operator_failed, step.passed, step.wall_s)
                if not step.passed and not args.no_stop:
                    stopped.add(target)
        extra = {"agi_screening": agi.measure(),
                 "timing": {k: v for k, v in vars(timing).items()},
                 "duration_s": duration, "wall_s": time.monotonic() - t0}
        command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        path = report.write(steps, args.out, command, extra)
        print(path.read_text())
        print(f"report: {path}  plot: {args.out / 'latency.png'}  work: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if steps else 1


if __name__ == "__main__":
    sys.exit(main())
