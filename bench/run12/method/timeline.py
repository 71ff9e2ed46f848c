"""Per-second figures from timeline.sh's samples (run 12): the machine's busy share, and the
clock ticks Asterisk, SIPp and each app thread used since the previous sample.

    python bench/run12/method/timeline.py /tmp/run12-LABEL.tl
"""

from __future__ import annotations

import sys


def main(path: str) -> None:
    prev: tuple[int, int, int, int, list[int]] | None = None
    for line in open(path):
        when, stat, ast, sipp, app = line.rstrip("\n").split(" | ")
        cpu = [int(x) for x in stat.split()[1:9]]
        total, idle = sum(cpu), cpu[3] + cpu[4]
        ast_ticks = int(ast.split()[1]) if len(ast.split()) > 1 else 0
        sipp_ticks = sum(int(x) for x in sipp.split()[1].split("+") if x)
        threads = [int(x) for x in app.split()[1:]]
        cur = (total, idle, ast_ticks, sipp_ticks, threads)
        if prev is not None:
            dt = cur[0] - prev[0]
            busy = dt - (cur[1] - prev[1])
            per_thread = ([a - b for a, b in zip(cur[4], prev[4], strict=True)]
                          if len(cur[4]) == len(prev[4]) else [])
            print(f"{when} busy {100 * busy / max(dt, 1):5.1f}%  ast {cur[2] - prev[2]:4d} "
                  f"sipp {cur[3] - prev[3]:4d} app {sum(per_thread):3d} "
                  f"{[x for x in per_thread if x]}")
        prev = cur


if __name__ == "__main__":
    main(sys.argv[1])
