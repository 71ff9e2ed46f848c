"""Run a SIPp scenario from sipp_scenarios/ and return parsed results.

SIPp runs are declared as data (scenario, arguments, expected result), as in the Asterisk
testsuite. Runs are asyncio subprocesses so an in-process app keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.config import PROJECT_ROOT
from ari_app.testing.media import speech_pcap
from ari_app.testing.ports import free_media_ports, free_port

log = logging.getLogger(__name__)

SCENARIOS = PROJECT_ROOT / "sipp_scenarios"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
PCAP_DIR = Path("/usr/share/sip-tester")


@dataclass
class SippRun:
    scenario: str                     # file name in sipp_scenarios/, e.g. "caller_greeting.xml"
    target_port: int = 5060
    target_host: str = "127.0.0.1"    # e.g. one node's own loopback address (127.0.0.11)
    calls: int = 1
    rate: float = 1.0                 # calls per second
    limit: int | None = None          # concurrent calls
    service: str = "112"
    keys: dict[str, str] = field(default_factory=dict)   # [key] values in the scenario
    uas: bool = False                 # run as a server (operator) rather than a caller
    local_port: int | None = None
    timeout_s: float = 60.0           # SIPp's own global timeout; the run is then failed
    inject: list[list[str]] = field(default_factory=list)  # rows for -inf (per-call fields)
    extra_args: list[str] = field(default_factory=list)     # e.g. ["-d", "500"] for <pause/>
    template: dict[str, str] = field(default_factory=dict)  # {{name}} in the XML, e.g. digit
    # "u1" (UDP) or "l1" (TLS, one socket: the TLS-capable SIPp from scripts/sipp-tls.pin)
    transport: str = "u1"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    response_times_ms: list[float]
    stdout: str
    errors: str
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


SIPP_TLS_PIN = Path(__file__).resolve().parents[2] / "scripts" / "sipp-tls.pin"


def tls_sipp() -> list[str]:
    """The command of the SIPp built with TLS (Debian 12's is not), run from its private root
    through the root's own loader, as setup.sh built it."""
    pin = dict(re.findall(r"^([A-Z0-9_]+)='([^']*)'$", SIPP_TLS_PIN.read_text(), re.M))
    root = Path(os.environ.get("SIAGA112_SIPP_TLS_ROOT") or pin["SIPP_TLS_ROOT"])
    binary = root / "usr" / "bin" / "sipp"
    if not binary.exists():
        raise RuntimeError(f"no TLS-capable SIPp at {binary}: run ./scripts/setup.sh")
    libs = f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu"
    return [str(root / "lib64" / "ld-linux-x86-64.so.2"), "--library-path", libs, str(binary)]


class SippProcess:
    """A SIPp run in the background (e.g. an operator UAS that waits for INVITEs)."""

    def __init__(self, run: SippRun) -> None:
        self.run = run
        self.port = run.local_port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        r = self.run
        scenario = self.workdir / r.scenario
        scenario.write_text(fill_template((SCENARIOS / r.scenario).read_text(), r.template))
        args = tls_sipp() if r.transport.startswith("l") else [SIPP]
        if r.transport != "u1":
            args += ["-t", r.transport]
        if not r.uas:
            args.append(f"{r.target_host}:{r.target_port}")
        args += [
            "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
            "-mp", str(free_media_ports()),
            "-m", str(r.calls), "-r", str(r.rate), "-rp", "1000",
            "-nostdin", "-trace_msg", "-trace_err", "-error_file", str(self.workdir / "errors.log"),
            "-trace_stat", "-stf", str(self.workdir / "stat.csv"), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1",
            "-timeout", f"{int(r.timeout_s)}s", "-timeout_error",
            "-max_recv_loops", "1000",
        ]
        if r.limit is not None:
            args += ["-l", str(r.limit)]
        if not r.uas:
            args += ["-s", r.service]
        for key, value in r.keys.items():
            args += ["-key", key, value]
        args += r.extra_args
        # Caller scenarios take the calling number from [field0]: one row per call, cycled.
        rows = r.inject or ([[r.keys["caller"]]] if "caller" in r.keys else [])
        if rows:
            inf = self.workdir / "inject.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in rows))
            args += ["-inf", str(inf)]
        return args

    async def start(self) -> None:
        argv = self.argv()
        log.info("sipp %s", " ".join(argv[1:]))
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)

    async def wait(self, timeout: float | None = None) -> SippResult:
        assert self.proc is not None
        wait_for = timeout if timeout is not None else self.run.timeout_s + 15
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), wait_for)
        except TimeoutError:
            self.proc.kill()
            out, _ = await self.proc.communicate()
        except asyncio.CancelledError:
            # The test gave up on this call (or ended with it running): SIPp must not outlive
            # it, still calling an Asterisk a later test may have on the same ports, and its
            # pipes not be left to a closed event loop.
            await self._end_now()
            raise
        return self._result(self.proc.returncode if self.proc.returncode is not None else -9,
                            out.decode(errors="replace") if out else "")

    async def _end_now(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)

    async def stop(self) -> SippResult:
        """End a background run (a UAS) and collect its figures."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
        return await self.wait(10)

    def _result(self, code: int, stdout: str) -> SippResult:
        successful = failed = 0
        stat = self.workdir / "stat.csv"
        if stat.exists():
            rows = list(csv.reader(stat.read_text().splitlines(), delimiter=";"))
            if len(rows) >= 2:
                header, last = rows[0], rows[-1]
                col = {name: i for i, name in enumerate(header)}
                successful = stat_int(last, col.get("SuccessfulCall(C)"))
                failed = stat_int(last, col.get("FailedCall(C)"))
        rtts: list[float] = []
        for rtt in self.workdir.glob("*_rtt.csv"):
            for row in csv.reader(rtt.read_text().splitlines()[1:], delimiter=";"):
                if len(row) >= 3:
                    try:
                        rtts.append(float(row[2]))
                    except ValueError:
                        continue
        errors_path = self.workdir / "errors.log"
        errors = errors_path.read_text(errors="replace") if errors_path.exists() else ""
        return SippResult(code, successful, failed, rtts, stdout, errors, self.workdir)


def talk_pcap() -> Path:
    """A long talking-caller pcap, made once per machine (SIPp's own g711a.pcap is short)."""
    path = Path(tempfile.gettempdir()) / "siaga112-talk-v1.pcap"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        speech_pcap(tmp, seconds=60)
        tmp.replace(path)
    return path


def fill_template(text: str, values: dict[str, str]) -> str:
    """Scenario parameters SIPp cannot take as keys (file names in exec actions, digits)."""
    # An operator answers after a few rings (3 s), not at once: the phone rings from the app's
    # answer, so a caller's key at 1.5 s reaches the menu while it rings, as with a person.
    merged = {"pcap_dir": str(PCAP_DIR), "talk_pcap": str(talk_pcap()),
              "bye_timeout_ms": "120000", "key_after_ms": "1500", "answer_after_ms": "3000"} | values

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in merged:
            raise KeyError(f"scenario needs template value {m.group(1)!r}")
        return merged[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", sub, text)


def stat_int(row: list[str], index: int | None) -> int:
    """One integer cell of a SIPp -trace_stat row (0 when absent or not a number)."""
    if index is None or index >= len(row):
        return 0
    try:
        return int(row[index])
    except ValueError:
        return 0


async def run_sipp(run: SippRun) -> SippResult:
    proc = SippProcess(run)
    await proc.start()
    return await proc.wait()
