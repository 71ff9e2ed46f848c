"""`siaga112 edge render|start`: the SIP edge (Kamailio) from the site's [edge] table."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ari_app.config import Site
from ari_app.edge.kamailio import (
    EdgeError,
    EdgeSettings,
    KamailioProcess,
    RenderedEdge,
    check_config,
    control_socket,
    nodes_from,
    render,
    sync_operators,
)


async def _operator_digests(site: Site, var_dir: Path) -> tuple[tuple[str, str], ...]:
    """The active operators' HA1 digests (realm "asterisk"), as the nodes have them."""
    from ari_app.routing.operators import endpoints
    from ari_app.tickets.db import database_url, make_engine, sessions

    engine = make_engine(database_url(var_dir))
    try:
        async with sessions(engine)() as s:
            return tuple((op.name, op.md5_cred) for op in await endpoints(s, site.code))
    finally:
        await engine.dispose()


def render_edge(site: Site, var_dir: Path) -> RenderedEdge:
    if site.edge is None:
        raise EdgeError(f"{site.file}: no [edge] table: this site runs as a single node")
    rendered = render(edge_settings(site, asyncio.run(_operator_digests(site, var_dir))), var_dir)
    check_config(rendered)
    return rendered


def cmd_edge_render(site: Site, var_dir: Path) -> int:
    try:
        rendered = render_edge(site, var_dir)
    except EdgeError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2
    print(f"rendered {rendered.config} and {rendered.dispatcher_list} "
          f"({len(rendered.settings.nodes)} nodes, {len(rendered.settings.operators)} operators); "
          "kamailio -c accepts it")
    return 0


def edge_settings(site: Site, operators: tuple[tuple[str, str], ...]) -> EdgeSettings:
    if site.edge is None:
        raise EdgeError(f"{site.file}: no [edge] table: this site runs as a single node")
    return EdgeSettings(listen=site.edge.listen, nodes=nodes_from(site.edge.nodes),
                        ping_interval_s=site.edge.ping_interval_s, operators=operators)


def follow_operators(site: Site, var_dir: Path, digests: dict[str, str]) -> str | None:
    """After an operator change: the edge on this machine (if it runs here) takes the new
    digests at once, and its rendered config too (for its next start). None: no edge here."""
    if site.edge is None:
        return None
    settings = edge_settings(site, tuple(sorted(digests.items())))
    render(settings, var_dir)  # the next start has them; the running edge is changed live
    ctl = control_socket(var_dir)
    if not ctl.exists():
        return ("the edge does not run on this machine: run `siaga112 edge sync` where it runs "
                "(its rendered config here has the new digests)")
    changed = sync_operators(ctl, digests)
    return (f"the edge (Kamailio) follows: {', '.join(changed)}" if changed
            else "the edge (Kamailio) already had these operators")


def cmd_edge_sync(site: Site, var_dir: Path) -> int:
    """The running edge's operator digests from the database, without a restart."""
    try:
        digests = dict(asyncio.run(_operator_digests(site, var_dir)))
        line = follow_operators(site, var_dir, digests)
        if line is None or not control_socket(var_dir).exists():
            raise EdgeError(f"no running edge here (no control socket at "
                            f"{control_socket(var_dir)}): start it with `siaga112 edge start`")
    except EdgeError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


def cmd_edge_start(site: Site, var_dir: Path) -> int:
    """Kamailio in the foreground until SIGTERM/SIGINT (systemd or a supervisor restarts it)."""
    try:
        process = KamailioProcess(render_edge(site, var_dir))
        process.start()
    except EdgeError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2
    stop = False

    def ask_stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    assert process.proc is not None
    while not stop and process.proc.poll() is None:
        try:
            process.proc.wait(timeout=1.0)  # our child; a signal sets `stop` in between
        except subprocess.TimeoutExpired:
            continue
    code = process.proc.poll()
    process.stop()
    return 1 if code not in (None, 0) else 0


def add_edge_commands(sub: Any, site_of: Any, var_of: Any) -> None:
    ed = sub.add_parser("edge", help="the SIP edge (Kamailio) in front of several nodes")
    es = ed.add_subparsers(dest="edge_cmd", required=True)
    r = es.add_parser("render", help="render kamailio.cfg and the dispatcher list, check them")
    r.set_defaults(func=lambda a: cmd_edge_render(site_of(a), var_of(a)))
    sy = es.add_parser("sync", help="the running edge takes the operators' digests from the "
                                    "database now (no restart; `operators ...` does it too)")
    sy.set_defaults(func=lambda a: cmd_edge_sync(site_of(a), var_of(a)))
    st = es.add_parser("start", help="run Kamailio in the foreground (supervised)")
    st.set_defaults(func=lambda a: cmd_edge_start(site_of(a), var_of(a)))
