"""SIPp processes for the bench: our scenarios in bench/scenarios/, exact CPU from wait4().

Reuses the harness's template filling (ari_app.testing.sipp.fill_template) but runs SIPp with
plain subprocess so that each process's rusage is collected when it is reaped.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.testing.ports import free_media_ports, free_port
from ari_app.testing.sipp import SIPP, fill_template, stat_int
from bench.procstat import Reaped, reap

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


@dataclass
class SippSpec:
    name: str                          # ghost, prank, full, operator, probe...
    scenario: str                      # file in bench/scenarios/
    workdir: Path
    template: dict[str, str] = field(default_factory=dict)
    target_port: int | None = None     # None: a UAS (operator phone)
    service: str = "112"
    calls: int = 1
    rate_cps: float = 1.0
    numbers: list[str] = field(default_factory=list)
    timeout_s: int = 180
    local_port: int = 0


@dataclass
class SippOutcome:
    name: str
    successful: int
    failed: int
    watchdog_major: int
    watchdog_minor: int
    invite_to_200_ms: list[float]
    log_lines: list[str]
    current_calls: list[int]
    cpu_s: float
    returncode: int
    errors: str


class SippProc:
    def __init__(self, spec: SippSpec) -> None:
        self.spec = spec
        spec.workdir.mkdir(parents=True, exist_ok=True)
        self.port = spec.local_port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.reaped: Reaped | None = None

    def argv(self) -> list[str]:
        s, wd = self.spec, self.spec.workdir
        scenario = wd / s.scenario
        scenario.write_text(fill_template((SCENARIO_DIR / s.scenario).read_text(), s.template))
        args = [SIPP]
        if s.target_port is not None:
            args.append(f"127.0.0.1:{s.target_port}")
        # The rate as "one call every N ms" keeps fractional rates exact enough (0.3 cps...).
        period_ms = max(1, round(1000 / s.rate_cps)) if s.rate_cps > 0 else 1000
        args += [
            "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
            "-mp", str(free_media_ports()),  # audio RTP here, video two above
            "-nostdin",
            "-trace_err", "-error_file", str(wd / "errors.log"),
            "-trace_stat", "-stf", str(wd / "stat.csv"), "-fd", "1",
            "-trace_logs", "-log_file", str(wd / "events.log"),
            "-timeout", f"{s.timeout_s}s", "-timeout_error",
            "-max_recv_loops", "1000", "-watchdog_minor_threshold", "500",
        ]
        if s.target_port is not None:
            args += ["-m", str(s.calls), "-r", "1", "-rp", str(period_ms), "-s", s.service,
                     "-trace_rtt", "-rtt_freq", "1"]
        if s.numbers:
            inf = wd / "numbers.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in s.numbers))
            args += ["-inf", str(inf)]
        return args

    def start(self) -> None:
        with open(self.spec.workdir / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(self.argv(), cwd=self.spec.workdir, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def poll(self) -> bool:
        """True once the process has ended (and been reaped with its rusage)."""
        if self.reaped is None and self.proc is not None:
            self.reaped = reap(self.proc.pid, block=False)
            if self.reaped is not None:
                self.proc.returncode = os.waitstatus_to_exitcode(self.reaped.status) \
                    if self.reaped.status >= 0 else -1
        return self.reaped is not None

    def stop(self, grace_s: float = 10.0) -> None:
        """Ask SIPp to finish (SIGUSR1: no new calls, end when current ones end), then kill."""
        if self.proc is None or self.poll():
            return
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not self.poll():
            time.sleep(0.1)
        if not self.poll():
            self.proc.kill()
            for _ in range(50):
                if self.poll():
                    break
                time.sleep(0.1)

    def outcome(self) -> SippOutcome:
        wd = self.spec.workdir
        ok = failed = wd_major = wd_minor = 0
        current: list[int] = []
        stat = wd / "stat.csv"
        if stat.exists():
            rows = list(csv.reader(stat.read_text(errors="replace").splitlines(), delimiter=";"))
            if len(rows) >= 2:
                col = {name: i for i, name in enumerate(rows[0])}
                last = rows[-1]
                ok = stat_int(last, col.get("SuccessfulCall(C)"))
                failed = stat_int(last, col.get("FailedCall(C)"))
                wd_major = stat_int(last, col.get("WatchdogMajor(C)"))
                wd_minor = stat_int(last, col.get("WatchdogMinor(C)"))
                current = [stat_int(r, col.get("CurrentCall")) for r in rows[1:]]
        rtts: list[float] = []
        for rtt in wd.glob("*_rtt.csv"):
            for row in csv.reader(rtt.read_text(errors="replace").splitlines()[1:], delimiter=";"):
                if len(row) >= 2:
                    try:
                        rtts.append(float(row[1]))
                    except ValueError:
                        continue
        logs = (wd / "events.log").read_text(errors="replace").splitlines() \
            if (wd / "events.log").exists() else []
        errors = (wd / "errors.log").read_text(errors="replace") \
            if (wd / "errors.log").exists() else ""
        cpu = self.reaped.cpu_s if self.reaped else 0.0
        code = self.proc.returncode if self.proc and self.proc.returncode is not None else -1
        return SippOutcome(self.spec.name, ok, failed, wd_major, wd_minor, rtts, logs, current,
                           cpu, code, errors[-4000:])


