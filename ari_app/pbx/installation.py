"""Which Asterisk we run: where its binary, modules and data are, and which version it is.

Three ways to have one, chosen by environment variables (README, "Which Asterisk"):

* ``SIAGA112_ASTERISK=22`` (the default): the private root that ``scripts/setup.sh`` builds
  with mmdebstrap from Debian unstable at :data:`PRIVATE_ROOT` (package version pinned in
  :data:`ASTERISK_22_PACKAGE`). Nothing of it is installed into the system.
* ``SIAGA112_ASTERISK=16``: Debian 11's package, installed system-wide (``/usr/sbin/asterisk``).
* an admin's own build (20 or 22): ``SIAGA112_ASTERISK_BIN`` (and, where they are not beside
  it, ``SIAGA112_ASTERISK_MODDIR`` and ``SIAGA112_ASTERISK_DATADIR``); or
  ``SIAGA112_ASTERISK_ROOT`` for another private root made like ours.

The version is always read from the binary (``asterisk -V``), never assumed from the choice.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path


class InstallationError(Exception):
    pass


PIN_FILE = Path(__file__).resolve().parents[2] / "scripts" / "asterisk-22.pin"


def _pin() -> dict[str, str]:
    """scripts/asterisk-22.pin (also sourced by setup.sh): the package version and its root."""
    values = dict(re.findall(r"^([A-Z0-9_]+)='([^']*)'$", PIN_FILE.read_text(), re.M))
    for key in ("ASTERISK_22_PACKAGE", "ASTERISK_22_ROOT"):
        if key not in values:
            raise InstallationError(f"{PIN_FILE}: {key}='...' line missing")
    return values


#: The Debian unstable package the private root is built from, and where setup builds it.
ASTERISK_22_PACKAGE = _pin()["ASTERISK_22_PACKAGE"]
PRIVATE_ROOT = Path(_pin()["ASTERISK_22_ROOT"])

#: Major versions we render for. 20 is accepted for an admin's own build (same module list as
#: 22 where the module exists); 16 and 22 are the ones CI runs.
SUPPORTED_MAJORS = (16, 20, 22)
DEFAULT_CHOICE = "22"
_MULTIARCH = "x86_64-linux-gnu"


@dataclass(frozen=True)
class Installation:
    """One Asterisk we can run. ``command`` is what runs the binary (a loader prefix for a root)."""

    command: tuple[str, ...]
    module_dir: str
    data_dir: str
    sbin_dir: str
    version: str  # as `asterisk -V` printed it, without the "Asterisk " prefix
    major: int
    root: str | None = None

    def describe(self) -> str:
        where = f"private root {self.root}" if self.root else self.command[-1]
        return f"Asterisk {self.version} ({where})"


def root_command(root: Path) -> tuple[str, ...]:
    """Run a private root's Asterisk on this host through the root's own dynamic loader.

    Loader, not chroot, on purpose: Asterisk must see the host's paths as they are (our rendered
    config and var/ dirs, the AGI wrappers that run the host venv's Python, the prompts), and a
    chroot would need root and bind mounts for each of them. ``--library-path`` applies to this
    process only (it is not LD_LIBRARY_PATH): what Asterisk spawns (AGI scripts, System()) runs
    with the host's own libraries. No system library is touched or shadowed.
    """
    libs = ":".join(str(root / d / _MULTIARCH) for d in ("lib", "usr/lib"))
    return (str(root / "lib64" / "ld-linux-x86-64.so.2"), "--library-path", libs,
            str(root / "usr" / "sbin" / "asterisk"))


def parse_version(text: str) -> tuple[str, int]:
    """``Asterisk 22.10.1+dfsg+~cs6...`` -> ("22.10.1+dfsg+~cs6...", 22)."""
    m = re.search(r"Asterisk\s+((\d+)\.\d+[^\s]*)", text)
    if not m:
        raise InstallationError(f"cannot read an Asterisk version from {text.strip()[:200]!r}")
    return m.group(1), int(m.group(2))


def _first_with_ari(candidates: list[Path]) -> str:
    for c in candidates:
        if (c / "res_ari.so").exists():
            return str(c)
    return str(candidates[0])


def _locate() -> tuple[tuple[str, ...], str, str, str, str | None]:
    env = os.environ
    binary = env.get("SIAGA112_ASTERISK_BIN")
    root_env = env.get("SIAGA112_ASTERISK_ROOT")
    choice = env.get("SIAGA112_ASTERISK", DEFAULT_CHOICE).strip()
    if binary:
        b = Path(binary)
        prefix = b.resolve().parent.parent  # /usr/sbin/asterisk -> /usr; /usr/local/sbin -> /usr/local
        mods = env.get("SIAGA112_ASTERISK_MODDIR") or _first_with_ari(
            [prefix / "lib" / _MULTIARCH / "asterisk" / "modules", prefix / "lib" / "asterisk" / "modules",
             Path("/usr/lib/asterisk/modules")])
        data = env.get("SIAGA112_ASTERISK_DATADIR") or next(
            (str(p) for p in (prefix / "share" / "asterisk", Path("/var/lib/asterisk"))
             if (p / "rest-api").is_dir() or (p / "documentation").is_dir()), "/usr/share/asterisk")
        return (str(b),), mods, data, str(b.parent), None
    if root_env or choice == "22":
        root = Path(root_env) if root_env else PRIVATE_ROOT
        if not (root / "usr" / "sbin" / "asterisk").exists():
            raise InstallationError(
                f"Asterisk 22 is not installed in {root}: run ./scripts/setup.sh (or set "
                "SIAGA112_ASTERISK=16, or SIAGA112_ASTERISK_BIN to your own Asterisk 20/22)")
        mods = env.get("SIAGA112_ASTERISK_MODDIR") or str(
            root / "usr" / "lib" / _MULTIARCH / "asterisk" / "modules")
        data = env.get("SIAGA112_ASTERISK_DATADIR") or str(root / "usr" / "share" / "asterisk")
        return root_command(root), mods, data, str(root / "usr" / "sbin"), str(root)
    if choice == "16":
        b = Path("/usr/sbin/asterisk")
        if not b.exists():
            raise InstallationError(
                "SIAGA112_ASTERISK=16 but /usr/sbin/asterisk is missing: run "
                "SIAGA112_ASTERISK=16 ./scripts/setup.sh")
        mods = env.get("SIAGA112_ASTERISK_MODDIR") or _first_with_ari(
            [Path("/usr/lib/x86_64-linux-gnu/asterisk/modules"), Path("/usr/lib/asterisk/modules")])
        data = env.get("SIAGA112_ASTERISK_DATADIR") or "/usr/share/asterisk"
        return (str(b),), mods, data, "/usr/sbin", None
    raise InstallationError(
        f"SIAGA112_ASTERISK={choice!r}: expected 22 (default, private root) or 16 (Debian 11 "
        "package); for another build set SIAGA112_ASTERISK_BIN")


@functools.lru_cache(maxsize=8)
def _detect(command: tuple[str, ...]) -> tuple[str, int]:
    try:
        out = subprocess.run([*command, "-V"], capture_output=True, text=True, timeout=20,
                             check=False)
    except OSError as exc:
        raise InstallationError(f"cannot run {' '.join(command)} -V: {exc}") from exc
    if out.returncode != 0:
        raise InstallationError(f"{' '.join(command)} -V exited {out.returncode}: "
                                f"{(out.stderr or out.stdout).strip()[:300]}")
    return parse_version(out.stdout)


def installation() -> Installation:
    """The Asterisk chosen by the environment, its version read from the binary itself."""
    command, mods, data, sbin, root = _locate()
    version, major = _detect(command)
    if major not in SUPPORTED_MAJORS:
        raise InstallationError(
            f"{' '.join(command)}: Asterisk {version} is not supported (supported majors: "
            f"{', '.join(map(str, SUPPORTED_MAJORS))})")
    if not Path(mods, "res_ari.so").exists():
        raise InstallationError(
            f"Asterisk {version}: no res_ari.so in module dir {mods} (set SIAGA112_ASTERISK_MODDIR)")
    return Installation(command, mods, data, sbin, version, major, root)


def _main() -> int:
    import sys

    try:
        print(installation().describe())
    except InstallationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
