"""A stop signals only our own Asterisk: /proc/PID/cmdline must be `asterisk -C <our conf>`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ari_app.pbx.process import NotOurAsterisk, cmdline, conf_path, is_our_asterisk, pid_path, stop_pid


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:  # only the processes this test started, by their own handles
        p.kill()
        p.wait(5)


def fake_asterisk(tmp_path: Path, procs: list[subprocess.Popen[bytes]], conf: Path
                  ) -> subprocess.Popen[bytes]:
    """A process whose argv reads `.../asterisk -C <conf> -f` (a sleeping Python script)."""
    script = tmp_path / "bin" / "asterisk"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "-C", str(conf), "-f"])
    procs.append(proc)
    # Popen returns once exec has begun; the kernel fills /proc/PID/cmdline a moment later.
    deadline = time.monotonic() + 5
    while not cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_a_pid_file_pointing_at_a_foreign_process_is_refused_and_nothing_is_signalled(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]],
) -> None:
    var = tmp_path / "var"
    pid_path(var).parent.mkdir(parents=True)
    foreign = subprocess.Popen(["sleep", "60"])
    procs.append(foreign)
    pid_path(var).write_text(str(foreign.pid))
    with pytest.raises(NotOurAsterisk, match=f"pid {foreign.pid} is not our Asterisk"):
        stop_pid(foreign.pid, var, timeout=0.5)
    assert foreign.poll() is None  # still running: no SIGTERM, no SIGKILL


def test_another_asterisk_with_another_config_is_not_ours_but_ours_is(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]],
) -> None:
    var = tmp_path / "var"
    other = fake_asterisk(tmp_path, procs, tmp_path / "other" / "asterisk.conf")
    ours = fake_asterisk(tmp_path, procs, conf_path(var))
    assert not is_our_asterisk(other.pid, var)
    assert is_our_asterisk(ours.pid, var), (cmdline(ours.pid), conf_path(var))
    with pytest.raises(NotOurAsterisk):
        stop_pid(other.pid, var, timeout=0.5)
    assert other.poll() is None


def test_the_asterisk_stop_command_refuses_a_foreign_pid_with_a_clear_message(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]],
) -> None:
    var = tmp_path / "var"
    pid_path(var).parent.mkdir(parents=True)
    foreign = subprocess.Popen(["sleep", "60"])
    procs.append(foreign)
    pid_path(var).write_text(str(foreign.pid))
    out = subprocess.run([sys.executable, "-m", "ari_app.cli", "--var-dir", str(var),
                          "asterisk", "stop"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 1
    assert f"pid {foreign.pid} is not our Asterisk" in out.stderr and "sleep 60" in out.stderr
    assert foreign.poll() is None
