"""CPU and memory of processes, from /proc (Linux only)."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (threads included), in seconds; 0 if it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0  # stat(5) 14, 15


def reaped_children_cpu_seconds(pid: int) -> float:
    """cutime + cstime: CPU of the children a live process has waited for (Asterisk: AGIs)."""
    fields = _stat(pid)
    return (int(fields[13]) + int(fields[14])) / TICK if fields else 0.0  # stat(5) 16, 17


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


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children...), from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                parent[int(entry.name)] = int(fields[1])  # stat(5) 4: ppid
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and every live descendant, plus what it reaped (Kamailio:
    its main process and all the children it forks)."""
    return (cpu_seconds(pid) + reaped_children_cpu_seconds(pid)
            + sum(cpu_seconds(c) for c in descendants(pid)))


def sched_seconds(pid: int) -> float:
    """CPU time of a live process from the scheduler (/proc/<pid>/task/*/schedstat, in ns):
    exact, where utime+stime is counted in whole clock ticks per process."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def tree_sched_seconds(pid: int) -> float:
    """sched_seconds of a process and every live descendant."""
    return sched_seconds(pid) + sum(sched_seconds(c) for c in descendants(pid))
