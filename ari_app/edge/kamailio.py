"""Render and run Kamailio as the SIP edge: dispatcher to the nodes, registrar for operators.

``render`` writes ``<var>/kamailio/kamailio.cfg`` and ``dispatcher.list`` from the edge settings;
``KamailioProcess`` runs it in the foreground as our own child (a supervisor or systemd restarts
it), and stops only the PID it started. ``rpc`` talks to it through its control socket (kamcmd).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.config import PROJECT_ROOT
from ari_app.pbx.render import fill

log = logging.getLogger(__name__)

TEMPLATE = PROJECT_ROOT / "config" / "kamailio" / "kamailio.cfg"
KAMAILIO = os.environ.get("SIAGA112_KAMAILIO_BIN", shutil.which("kamailio") or "/usr/sbin/kamailio")
KAMCMD = os.environ.get("SIAGA112_KAMCMD_BIN", shutil.which("kamcmd") or "/usr/sbin/kamcmd")
MODULE_DIR = os.environ.get("SIAGA112_KAMAILIO_MODULES", "/usr/lib/x86_64-linux-gnu/kamailio/modules")
_HOSTPORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HA1 = re.compile(r"^[0-9a-f]{32}$")


class EdgeError(Exception):
    pass


@dataclass(frozen=True)
class Node:
    name: str
    address: str                     # host:port of the node's Asterisk (SIP, UDP)

    @property
    def uri(self) -> str:
        return f"sip:{self.address}"


@dataclass(frozen=True)
class EdgeSettings:
    listen: str                      # host:port Kamailio listens on (carrier and phones)
    nodes: tuple[Node, ...]
    ping_interval_s: int = 2         # OPTIONS probing: a dead node is out within this time
    fr_timer_ms: int = 1500          # a node silent this long after an INVITE counts as failed
    children: int = 2
    debug: int = 2
    operators: tuple[tuple[str, str], ...] = field(default=())  # (name, HA1 realm "asterisk")

    def __post_init__(self) -> None:
        check_hostport("edge.listen", self.listen)
        if not self.nodes:
            raise EdgeError("edge.nodes: expected at least one node, got none")
        seen: set[str] = set()
        for node in self.nodes:
            check_hostport(f"edge.nodes.{node.name}", node.address)
            if node.address in seen:
                raise EdgeError(f"edge.nodes: {node.address} is listed twice")
            seen.add(node.address)
        if not 1 <= self.ping_interval_s <= 60:
            raise EdgeError(f"edge.ping_interval_s: expected 1..60, got {self.ping_interval_s}")
        for name, ha1 in self.operators:
            if not _NAME.match(name) or not _HA1.match(ha1):
                raise EdgeError(f"edge operator {name!r}: expected a name and an MD5 HA1")


def check_hostport(key: str, value: str) -> None:
    m = _HOSTPORT.match(value)
    if not m or not all(0 <= int(p) <= 255 for p in m.group(1).split(".")) \
            or not 1 <= int(m.group(2)) <= 65535:
        raise EdgeError(f"{key}: expected IPv4 host:port, got {value!r}")


@dataclass(frozen=True)
class RenderedEdge:
    config: Path
    dispatcher_list: Path
    ctl_socket: Path
    pid_file: Path
    settings: EdgeSettings


def edge_dir(var_dir: Path) -> Path:
    return var_dir.resolve() / "kamailio"


def render(settings: EdgeSettings, var_dir: Path) -> RenderedEdge:
    """Write kamailio.cfg and the dispatcher list (set 1 = the nodes) under <var>/kamailio/."""
    out = edge_dir(var_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds_list = out / "dispatcher.list"
    ds_list.write_text("# set destination flags priority attributes\n" + "".join(
        f"1 {node.uri} 0 0 name={node.name}\n" for node in settings.nodes))
    ctl = out / "kamailio_ctl"
    ha1 = "\n".join(f'\t$sht(ha1=>{name}) = "{digest}";' for name, digest in settings.operators)
    values = {
        "debug": str(settings.debug),
        "children": str(settings.children),
        "listen": settings.listen,
        "module_dir": MODULE_DIR.rstrip("/") + "/",
        "ctl_socket": str(ctl),
        "fr_timer_ms": str(settings.fr_timer_ms),
        "dispatcher_list": str(ds_list),
        "ping_interval_s": str(settings.ping_interval_s),
        "operator_digests": ha1 or "\txlog(\"L_INFO\", \"no operator digests rendered\\n\");",
    }
    config = out / "kamailio.cfg"
    config.write_text(fill(TEMPLATE.read_text(), values, str(TEMPLATE)))
    return RenderedEdge(config, ds_list, ctl, out / "kamailio.pid", settings)


def check_config(rendered: RenderedEdge) -> None:
    """``kamailio -c``: a config Kamailio refuses is an error naming its line, never a start."""
    out = subprocess.run([KAMAILIO, "-c", "-f", str(rendered.config)], capture_output=True,
                         text=True, timeout=30, check=False)
    if out.returncode != 0:
        errors = [line for line in (out.stderr + out.stdout).splitlines()
                  if "ERROR" in line or "CRITICAL" in line]
        raise EdgeError(f"{rendered.config}: kamailio refused it:\n" + "\n".join(errors[-10:]))


def rpc(rendered: RenderedEdge, *command: str, timeout: float = 5.0) -> str:
    """One RPC command through the control socket, e.g. ``rpc(r, "dispatcher.list")``."""
    return rpc_at(rendered.ctl_socket, *command, timeout=timeout)


def control_socket(var_dir: Path) -> Path:
    """Where the edge rendered under ``var_dir`` answers RPC (it exists while it runs here)."""
    return edge_dir(var_dir) / "kamailio_ctl"


def rpc_at(ctl_socket: Path, *command: str, timeout: float = 5.0) -> str:
    out = subprocess.run([KAMCMD, "-s", f"unix:{ctl_socket}", *command],
                         capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise EdgeError(f"kamcmd {' '.join(command)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def node_states(rendered: RenderedEdge) -> dict[str, str]:
    """Each node's dispatcher flags by URI: ``AP`` active and probed, ``IP`` inactive, ..."""
    text = rpc(rendered, "dispatcher.list")
    states: dict[str, str] = {}
    uri: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("URI:"):
            uri = line.split(":", 1)[1].strip()
        elif line.startswith("FLAGS:") and uri is not None:
            states[uri] = line.split(":", 1)[1].strip()
            uri = None
    return states


def set_operator(rendered: RenderedEdge | Path, name: str, ha1: str | None) -> None:
    """Live change of an operator's digest (None: the operator may no longer register).

    ``s:`` makes kamcmd send strings: without it a digest (or a name) of digits only goes as a
    number, and Kamailio stores an integer that no longer matches (seen: 2^64-1).
    """
    ctl = rendered.ctl_socket if isinstance(rendered, RenderedEdge) else rendered
    if ha1 is None:
        rpc_at(ctl, "htable.delete", "ha1", f"s:{name}")
    else:
        rpc_at(ctl, "htable.sets", "ha1", f"s:{name}", f"s:{ha1}")


_DUMP_ENTRY = re.compile(r"name:\s*(\S+)\s*\n\s*value:\s*(\S+)")


def operators_at_edge(ctl_socket: Path) -> dict[str, str]:
    """The digests the running edge holds now, by operator name (``htable.dump ha1``)."""
    return dict(_DUMP_ENTRY.findall(rpc_at(ctl_socket, "htable.dump", "ha1")))


def sync_operators(ctl_socket: Path, digests: dict[str, str]) -> list[str]:
    """Make the running edge hold exactly ``digests`` (name -> HA1): new and changed ones set,
    the others deleted (they can no longer register). Returns what changed, one item each."""
    for name, ha1 in digests.items():
        if not _NAME.match(name) or not _HA1.match(ha1):
            raise EdgeError(f"edge operator {name!r}: expected a name and an MD5 HA1")
    current = operators_at_edge(ctl_socket)
    changed: list[str] = []
    for name, ha1 in sorted(digests.items()):
        if current.get(name) != ha1:
            set_operator(ctl_socket, name, ha1)
            changed.append(f"{name} {'added' if name not in current else 'changed'}")
    for name in sorted(current.keys() - digests.keys()):
        set_operator(ctl_socket, name, None)
        changed.append(f"{name} removed")
    return changed


class KamailioProcess:
    """Our Kamailio in the foreground; ``start`` returns once its control socket answers."""

    def __init__(self, rendered: RenderedEdge) -> None:
        self.rendered = rendered
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = rendered.config.parent / "kamailio.log"

    def start(self, timeout: float = 20.0) -> None:
        check_config(self.rendered)
        with open(self.log_path, "ab") as out:
            # -DD: stay in the foreground (a supervisor owns us); -E: log to stderr.
            self.proc = subprocess.Popen(
                [KAMAILIO, "-DD", "-E", "-f", str(self.rendered.config),
                 "-P", str(self.rendered.pid_file), "-Y", str(self.rendered.config.parent)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgeError(f"kamailio exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                rpc(self.rendered, "core.version", timeout=1.0)
                log.info("kamailio pid=%d ready on %s", self.proc.pid, self.rendered.settings.listen)
                return
            except (EdgeError, subprocess.TimeoutExpired):
                time.sleep(0.05)  # polling a child's socket: there is no event to await
        self.stop()
        raise EdgeError(f"kamailio did not answer on its control socket within {timeout:.0f}s")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the PID we started (never a PID read from a file), then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def nodes_from(pairs: Iterable[tuple[str, str]]) -> tuple[Node, ...]:
    return tuple(Node(name, address) for name, address in pairs)
