"""Start `siaga112 agi serve` for a private Asterisk, as scripts/run.sh does beside the app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ari_app.config import PROJECT_ROOT, Site


def start_agi_server(site: Site, var_dir: Path, log_path: Path,
                     timeout: float = 20.0) -> subprocess.Popen[bytes]:
    """The FastAGI screening server on ``site.asterisk.fastagi_port``, listening on return."""
    env = dict(os.environ, SIAGA112_VAR=str(var_dir),
               SIAGA112_FASTAGI_PORT=str(site.asterisk.fastagi_port))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ari_app.cli", "--site", site.code, "agi", "serve"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"AGI server exited with {proc.returncode}; see {log_path}")
        try:
            socket.create_connection(("127.0.0.1", site.asterisk.fastagi_port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"AGI server did not listen within {timeout:.0f} s; see {log_path}")


def stop_agi_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
