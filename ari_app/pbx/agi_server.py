"""Our FastAGI server for the per-call AGI scripts (screening, and the record of a caller the full
line refuses): Asterisk opens a socket instead of forking Python.

Why. Asterisk starts a per-call AGI script with fork() and exec(). Asterisk is a large process
with hundreds of threads: each fork write-protects all of its memory, and every page it writes
afterwards takes a copy-on-write fault, with TLB shoot-downs across the cores. On the bench at
4 cps, perf put a quarter of Asterisk's CPU in those faults, on top of the script's own Python
start-up of about 40 ms per call (BENCHMARKS.md).

How. This small single-threaded process loads pyst2 and ``agi_scripts/screen_caller.py`` once
and forks per connection. It is still one process per call running pyst2's AGI class (never its
fastagi module, never in a thread), but the fork is of a small process that has everything
loaded, and Asterisk itself forks nothing.

Never in a call's way:
* each child arms an alarm (the screening budget plus a margin) and dies with its socket if
  anything hangs; Asterisk then goes on with the call unscreened;
* if the server is not running, the connection is refused at once and the dialplan runs the
  same script as its own process (dialplan/20-emergency.conf), as before.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import signal
import socketserver
import time
from pathlib import Path
from types import ModuleType

from ari_app.pbx.render import AGI_DIR

log = logging.getLogger(__name__)

# What may be asked for: agi://host:port/<script>; each module's ``fastagi(agi, config, started)``
# serves one call. fallback_log: the record of a caller the full line refuses (dialplan
# siaga112-overload), so that shedding load does not fork Python from Asterisk per caller.
SCRIPTS = ("screen_caller", "fallback_log")


def load_script(name: str) -> ModuleType:
    """The script module exactly as the dialplan's per-process AGI would run it."""
    spec = importlib.util.spec_from_file_location(f"siaga112_agi_{name}", AGI_DIR / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no AGI script {name!r} in {AGI_DIR}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Call(socketserver.StreamRequestHandler):
    """One call, in its own forked process."""

    server: AgiServer

    def handle(self) -> None:
        started = time.monotonic()
        signal.alarm(self.server.hard_limit_s)  # a hung screening dies; the call goes on
        from asterisk.agi import AGI  # loaded by the parent: no import cost here

        stdin = self.connection.makefile("r", encoding="utf-8", errors="replace", newline="\n")
        stdout = self.connection.makefile("w", encoding="utf-8", newline="\n")  # pyst2 flushes
        agi = AGI(stdin=stdin, stdout=stdout, stderr=io.StringIO())  # pyst2's chatter: dropped
        if not agi.env:  # the peer closed before a word (a port check)
            return
        call = agi.env.get("agi_uniqueid", "?")
        script = agi.env.get("agi_network_script", "").strip("/")
        module = self.server.scripts.get(script)
        if module is None:
            log.warning("call=%s FastAGI asked for %r; not served here", call, script)
            agi.verbose(f"siaga112: no FastAGI script {script!r}", 1)
            return
        module.fastagi(agi, str(self.server.config_path), started)
        log.info("call=%s %s done in %.0f ms", call, script, (time.monotonic() - started) * 1000)


class AgiServer(socketserver.ForkingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 128
    max_children = 64  # past this, accept waits for a child to end (each ends within its alarm)

    def __init__(self, port: int, config_path: Path, *, host: str = "127.0.0.1") -> None:
        self.config_path = config_path
        with open(config_path) as fh:
            budget_ms = int(json.load(fh).get("budget_ms", 400))
        self.hard_limit_s = max(1, -(-budget_ms // 1000) + 1)
        self.scripts = {name: load_script(name) for name in SCRIPTS}
        self._preload()
        super().__init__((host, port), _Call)

    @staticmethod
    def _preload() -> None:
        """Import here, once, what a child would otherwise import per call."""
        import asyncio  # noqa: F401  (PostgreSQL sites)
        import sqlite3  # noqa: F401

        import asterisk.agi  # noqa: F401

        import ari_app.location.numbers
        import ari_app.pbx.agi_query  # noqa: F401


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(port: int, config_path: Path) -> None:
    """Run until SIGTERM/SIGINT (``siaga112 agi serve``)."""
    signal.signal(signal.SIGTERM, _stop)
    with AgiServer(port, config_path) as server:
        log.info("FastAGI screening on 127.0.0.1:%d (config %s)", port, config_path)
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
