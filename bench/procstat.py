"""CPU and memory of processes, from /proc (Linux only)."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (threads included), in seconds; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def reaped_children_cpu_seconds(pid: int) -> float:
    """cutime + cstime: CPU of the children a live process has waited for (Asterisk: AGIs)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[13]) + int(fields[14])) / TICK  # fields 16 and 17 of stat(5)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the highest resident set size the process has had, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Reaped:
    """A child that ended, with its own rusage (exact CPU, peak RSS)."""

    pid: int
    status: int
    cpu_s: float
    max_rss_mb: float


def reap(pid: int, block: bool) -> Reaped | None:
    """wait4() one child; None if it is still running (block=False)."""
    try:
        got, status, ru = os.wait4(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return Reaped(pid, -1, 0.0, 0.0)
    if got == 0:
        return None
    return Reaped(pid, status, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
