"""The running `siaga112 serve` of a site, found through its instance lock, and told things.

The lock file (``var/run/<stasis app>.lock``) holds the app's pid while the app holds an flock
on it. A pid is signalled only if the lock is held right now and /proc says that pid is a
``siaga112 serve``: a stale file, or a pid number reused by another program, gets nothing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
from pathlib import Path

from ari_app.pbx.process import cmdline

log = logging.getLogger(__name__)

# SIGHUP to `siaga112 serve`: the operators or shifts changed, read the roster again now.
ROSTER_SIGNAL = signal.SIGHUP


def lock_path(var_dir: Path, stasis_app: str) -> Path:
    return var_dir / "run" / f"{stasis_app}.lock"


def is_serve(pid: int) -> bool:
    argv = cmdline(pid)
    named = any(os.path.basename(a) == "siaga112" or a == "ari_app.cli" for a in argv)
    return named and "serve" in argv and "agi" not in argv


def app_pid(var_dir: Path, stasis_app: str) -> int | None:
    """The pid of this site's running app, or None (not running, or not provably ours)."""
    path = lock_path(var_dir, stasis_app)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True   # the app holds it exclusively: it is alive
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            held = False  # nobody holds it: no app (the file is left from an earlier run)
        raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
    finally:
        os.close(fd)
    if not held or not raw.isdigit():
        return None
    pid = int(raw)
    return pid if is_serve(pid) else None


def notify_roster_changed(var_dir: Path, stasis_app: str) -> int | None:
    """Tell the running app to reload its roster now; its pid, or None if none is running
    (it reads the roster when it starts, and every few seconds anyway)."""
    pid = app_pid(var_dir, stasis_app)
    if pid is None:
        return None
    try:
        os.kill(pid, ROSTER_SIGNAL)
    except ProcessLookupError:
        return None
    log.info("told app pid=%d to reload its roster", pid)
    return pid
