"""The shipped systemd units: installed under a prefix, checked by `systemd-analyze verify`."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from ari_app.service import UNIT_NAMES


def install(prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ari_app.cli", "--site", "batola", "service",
                           "install", "--prefix", str(prefix), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_installed_units_pass_systemd_analyze_verify_and_run_hardened_as_their_own_user(
    tmp_path: Path,
) -> None:
    out = install(tmp_path)
    assert out.returncode == 0, out.stderr
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    for name in UNIT_NAMES:
        assert f"write {unit_dir / name}" in out.stdout
    assert "Nothing was started or enabled." in out.stdout
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    verify = subprocess.run([analyze, "verify", *[str(unit_dir / n) for n in UNIT_NAMES]],
                            capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0 and verify.stderr == "" and verify.stdout == "", verify

    services = {n: unit(unit_dir / n) for n in UNIT_NAMES if n.endswith(".service")}
    for name, svc in services.items():
        s = svc["Service"]
        assert (s["User"], s["Restart"], s["NoNewPrivileges"]) == ("siaga112", "always", "yes"), name
        assert s["ProtectSystem"] == "strict" and s["ReadWritePaths"] == "/var/lib/siaga112"
        assert svc["Unit"]["StartLimitIntervalSec"] == "0", name  # never gives up restarting
        assert s["ExecStart"].startswith(str(Path(sys.executable).parent / "siaga112") + " ")
    # In order: Asterisk, then the screening server, then the app; and Asterisk depends on
    # nothing of the app, so an app crash or stop never stops it.
    assert "siaga112-asterisk.service" in services["siaga112-agi.service"]["Unit"]["After"]
    assert services["siaga112-app.service"]["Unit"]["After"].split() == [
        "siaga112-asterisk.service", "siaga112-agi.service"]
    asterisk = services["siaga112-asterisk.service"]
    assert asterisk["Service"]["Type"] == "notify"  # ready once ARI answers
    assert not any(k in asterisk["Unit"] for k in ("Requires", "BindsTo", "Requisite"))
    assert services["siaga112-app.service"]["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_dry_run_lists_the_steps_and_writes_nothing(tmp_path: Path) -> None:
    out = install(tmp_path, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would write" in out.stdout and "would make state directory" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_checkout_the_service_user_cannot_enter_is_named_before_anything_is_installed(
    tmp_path: Path,
) -> None:
    from ari_app.service import closed_dirs

    private = tmp_path / "home"
    (private / "venv" / "bin").mkdir(parents=True)
    private.chmod(0o700)
    try:
        assert private in closed_dirs(private / "venv" / "bin" / "siaga112")
        assert closed_dirs(Path("/usr/bin/env")) == []
    finally:
        private.chmod(0o755)
