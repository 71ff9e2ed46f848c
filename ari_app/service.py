"""`siaga112 service install`: put the systemd units of systemd/ in place, and say what was done.

The units run this checkout's venv (``.venv/bin/siaga112``) as a dedicated system user, with the
state in one directory (default ``/var/lib/siaga112``) that is the only place they may write.
Nothing is started or enabled: the admin does that (the commands are printed), so installing
never changes a running service. With ``--prefix DIR`` the files go under DIR (packaging,
tests) and no user, directory owner or systemd state of this machine is touched.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.config import PROJECT_ROOT

UNITS_DIR = PROJECT_ROOT / "systemd"
UNIT_NAMES = ("siaga112-asterisk.service", "siaga112-agi.service", "siaga112-app.service",
              "siaga112.target")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class ServiceError(Exception):
    pass


@dataclass
class InstallPlan:
    prefix: Path
    user: str
    var_dir: Path
    site: str
    bin: Path
    steps: list[str] = field(default_factory=list)

    @property
    def root(self) -> bool:
        """Installing into this machine itself (not a staging prefix)."""
        return self.prefix == Path("/")

    def under(self, path: str) -> Path:
        return self.prefix / path.lstrip("/")

    @property
    def env_file(self) -> str:
        return "/etc/siaga112/siaga112.env"


def fill(text: str, values: dict[str, str], name: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise ServiceError(f"{name}: unknown placeholder {{{{{m.group(1)}}}}}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def units(plan: InstallPlan) -> dict[str, str]:
    """Unit file name -> text, filled in for this installation."""
    values = {"user": plan.user, "var_dir": str(plan.var_dir), "bin": str(plan.bin),
              "project": str(PROJECT_ROOT), "env_file": plan.env_file}
    return {name: fill((UNITS_DIR / name).read_text(), values, f"systemd/{name}")
            for name in UNIT_NAMES}


def env_text(plan: InstallPlan) -> str:
    return ("# Siaga 112 settings for the systemd units (see README: Settings).\n"
            f"SIAGA112_SITE={plan.site}\n"
            "# DATABASE_URL=postgresql://siaga112@127.0.0.1/siaga112\n"
            "# SIAGA112_SIP_PORT=5060\n# SIAGA112_BIND=0.0.0.0\n")


def closed_dirs(path: Path) -> list[Path]:
    """Directories on the way to ``path`` that a user other than their owner cannot enter
    (e.g. /root): the service user could not run the venv from there."""
    return [d for d in [*reversed(path.parents)] if d.exists() and not d.stat().st_mode & 0o001]


def install(plan: InstallPlan, *, dry_run: bool = False) -> list[str]:
    """Do (or, with ``dry_run``, only list) each step; returns the steps in words."""
    if not plan.bin.exists():
        raise ServiceError(f"{plan.bin} does not exist: run ./scripts/setup.sh first")
    steps: list[str] = []
    python = Path(sys.executable).resolve()  # the venv's interpreter may live elsewhere
    for needed in (plan.bin, python):
        for closed in closed_dirs(needed):
            steps.append(f"WARNING: {closed} is closed to other users, so {plan.user} cannot "
                         f"run {needed}: put the checkout and its Python where it can "
                         "(e.g. /opt/siaga112, a system python3)")

    def step(text: str) -> bool:
        steps.append(("would " if dry_run else "") + text)
        return not dry_run

    if plan.root:
        try:
            pwd.getpwnam(plan.user)
            steps.append(f"system user {plan.user} exists: kept")
        except KeyError:
            if step(f"create system user {plan.user} (home {plan.var_dir}, no login shell)"):
                subprocess.run(["useradd", "--system", "--user-group", "--home-dir",
                                str(plan.var_dir), "--no-create-home", "--shell",
                                "/usr/sbin/nologin", plan.user], check=True)
    var_dir = plan.under(str(plan.var_dir))
    if step(f"make state directory {var_dir} (mode 0750"
            + (f", owner {plan.user})" if plan.root else ")")):
        var_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(var_dir, 0o750)
        if plan.root:
            shutil.chown(var_dir, plan.user, plan.user)
    unit_dir = plan.under("/etc/systemd/system")
    for name, text in units(plan).items():
        path = unit_dir / name
        verb = "replace" if path.exists() else "write"
        if step(f"{verb} {path}"):
            unit_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            os.chmod(path, 0o644)
    env = plan.under(plan.env_file)
    if env.exists():
        steps.append(f"{env} exists: kept as it is")
    elif step(f"write {env} (site {plan.site}; edit it for the database and ports)"):
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(env_text(plan))
        os.chmod(env, 0o640)
        if plan.root:
            shutil.chown(env, "root", plan.user)
    if plan.root and shutil.which("systemctl") and step("run systemctl daemon-reload"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    plan.steps = steps
    return steps


def next_steps(plan: InstallPlan) -> list[str]:
    run_as = f"sudo -u {plan.user} SIAGA112_VAR={plan.var_dir} {plan.bin}"
    return [f"{run_as} db upgrade && {run_as} prompts build",
            "systemctl enable --now siaga112.target",
            f"{run_as} status"]


def default_bin() -> Path:
    return Path(sys.executable).parent / "siaga112"


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) e.g. ``READY=1``; False when not run by systemd."""
    import socket

    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True
