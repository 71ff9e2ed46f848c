"""Start and stop our Asterisk as the current user: ``asterisk -C <var>/asterisk/etc/asterisk.conf -f``."""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ari_app.pbx.installation import Installation, InstallationError, installation
from ari_app.pbx.render import RenderResult

log = logging.getLogger(__name__)


class AsteriskError(Exception):
    pass


class NotOurAsterisk(AsteriskError):
    """The pid file names a process that is not our Asterisk: it is never signalled."""


def conf_path(var_dir: Path) -> Path:
    return var_dir.resolve() / "asterisk" / "etc" / "asterisk.conf"


def pid_path(var_dir: Path) -> Path:
    return var_dir.resolve() / "asterisk" / "run" / "siaga112-asterisk.pid"


def asterisk_command(asterisk: Installation | None = None) -> tuple[str, ...]:
    """How to run the chosen Asterisk binary (through its root's loader for a private root).

    For a private root, ``/proc/<pid>/cmdline`` of our Asterisk therefore starts with the root's
    ``ld-linux-x86-64.so.2 --library-path ...`` and only then ``.../usr/sbin/asterisk -C <our
    asterisk.conf>``: a check that a PID is ours should look for our ``-C`` path, not argv[0].
    """
    try:
        return (asterisk or installation()).command
    except InstallationError as exc:
        raise AsteriskError(str(exc)) from exc


def cli(var_dir: Path, command: str, timeout: float = 10.0,
        asterisk: Installation | None = None) -> str:
    """Run one Asterisk CLI command through the control socket (``asterisk -rx``)."""
    out = subprocess.run(
        [*asterisk_command(asterisk), "-C", str(conf_path(var_dir)), "-rx", command],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if out.returncode != 0:
        raise AsteriskError(f"asterisk -rx {command!r}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def ari_answers(rendered: RenderResult, timeout: float = 1.0) -> bool:
    host = rendered.bind if rendered.bind not in ("0.0.0.0", "::") else "127.0.0.1"
    req = urllib.request.Request(f"http://{host}:{rendered.http_port}/ari/asterisk/info")
    token = base64.b64encode(f"{rendered.ari_user}:{rendered.ari_password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ports_in_use(rendered: RenderResult) -> list[str]:
    """The site's SIP (UDP) and HTTP (TCP) ports that another program holds, e.g. a system
    Asterisk left running by its package: ours would start without them, so say so first."""
    taken = []
    for kind, port, sock_type in (("SIP (UDP)", rendered.sip_port, socket.SOCK_DGRAM),
                                  ("HTTP/ARI (TCP)", rendered.http_port, socket.SOCK_STREAM)):
        with socket.socket(socket.AF_INET, sock_type) as s:
            if sock_type == socket.SOCK_STREAM:  # as Asterisk does: TIME_WAIT is not "in use"
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((rendered.bind, port))
            except OSError:
                taken.append(f"{kind} {rendered.bind}:{port}")
    return taken


class AsteriskProcess:
    """One private Asterisk. ``start`` returns once ARI answers and Asterisk is fully booted."""

    def __init__(self, var_dir: Path, rendered: RenderResult) -> None:
        self.var_dir = var_dir.resolve()
        self.rendered = rendered
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.var_dir / "asterisk" / "log" / "console.log"

    def start(self, timeout: float = 30.0, detach: bool = False) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        taken = ports_in_use(self.rendered)
        if taken:
            raise AsteriskError(
                f"{', '.join(taken)} already in use by another program (a system Asterisk?); "
                "set asterisk.sip_port / http_port in the site file, or SIAGA112_SIP_PORT / "
                "SIAGA112_HTTP_PORT")
        with open(self.log_path, "ab") as out:
            # -g: a crash leaves a core file, in var/asterisk (never in the source tree).
            self.proc = subprocess.Popen(
                [*asterisk_command(self.rendered.asterisk), "-C", str(self.rendered.asterisk_conf),
                 "-f", "-n", "-g"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=detach, cwd=self.var_dir / "asterisk",
            )
        pid_path(self.var_dir).write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AsteriskError(
                    f"asterisk exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self._tail())
            if ari_answers(self.rendered, timeout=0.5):
                try:
                    cli(self.var_dir, "core waitfullybooted",
                        timeout=max(1.0, deadline - time.monotonic()), asterisk=self.rendered.asterisk)
                except (AsteriskError, subprocess.TimeoutExpired):
                    pass
                log.info("asterisk pid=%d ready, ARI on port %d", self.proc.pid,
                         self.rendered.http_port)
                return
            time.sleep(0.05)  # polling a child's port: there is no event to await
        self.stop()
        raise AsteriskError(f"asterisk did not answer ARI within {timeout:.0f}s\n{self._tail()}")

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, self.var_dir, timeout, self.proc)
        self.proc = None

    def kill(self) -> None:
        """Hard kill (fault tests): no clean shutdown, channels die with it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


def cmdline(pid: int) -> list[str]:
    """A process's argv from /proc (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_our_asterisk(pid: int, var_dir: Path) -> bool:
    """True only if ``pid`` runs an ``asterisk`` binary with ``-C`` our own asterisk.conf.

    Any other Asterisk on the host (the distribution's, another project's, another helper's
    private one) has another -C path, or none, and is left alone. Asterisk 22 run through a
    private root's loader (``ld-linux... --library-path ... .../asterisk -C ...``) matches too.
    """
    argv = cmdline(pid)
    ours = str(conf_path(var_dir))
    for i, arg in enumerate(argv[:-1]):
        if arg == "-C" and any(os.path.basename(a) == "asterisk" for a in argv[:i]):
            try:
                return str(Path(argv[i + 1]).resolve()) == ours
            except OSError:
                return False
    return False


def running_pid(var_dir: Path) -> int | None:
    """The pid in our pid file if that process is our Asterisk; None otherwise."""
    try:
        pid = int(pid_path(var_dir).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if is_our_asterisk(pid, var_dir) else None


def stop_pid(pid: int, var_dir: Path, timeout: float = 10.0,
             proc: subprocess.Popen[bytes] | None = None) -> None:
    """Clean stop through the control socket, then SIGTERM, then SIGKILL.

    Without a child handle (``proc``), the pid must be our Asterisk (``is_our_asterisk``):
    a stale pid file whose number now belongs to another process raises NotOurAsterisk, and
    that process gets no signal.
    """
    if proc is None and not is_our_asterisk(pid, var_dir):
        shown = " ".join(cmdline(pid)) or "no such process"
        raise NotOurAsterisk(
            f"{pid_path(var_dir)}: pid {pid} is not our Asterisk (expected asterisk -C "
            f"{conf_path(var_dir)}, found: {shown[:200]}); no signal sent")
    try:
        cli(var_dir, "core stop now", timeout=5)
    except (AsteriskError, subprocess.TimeoutExpired, OSError) as exc:
        log.info("asterisk clean stop failed (%s); sending SIGTERM", exc)
        _signal(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout, proc) and (proc is not None or is_our_asterisk(pid, var_dir)):
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, 5, proc)
    pid_path(var_dir).unlink(missing_ok=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)  # not our child: no handle to wait on
    return False
