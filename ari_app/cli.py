"""The `siaga112` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from ari_app.config import ConfigError, Site, default_site_code, load_site
from ari_app.pbx.render import OperatorEndpoint

log = logging.getLogger(__name__)


def _var_dir(args: argparse.Namespace) -> Path:
    return Path(args.var_dir or os.environ.get("SIAGA112_VAR") or "var").resolve()


def _site(args: argparse.Namespace) -> Site:
    return load_site(args.site or default_site_code())


def cmd_render(args: argparse.Namespace) -> int:
    from ari_app.pbx.render import render

    site, var_dir = _site(args), _var_dir(args)
    result = render(site, var_dir, operators=asyncio.run(_operator_endpoints(site, var_dir)))
    print(result.asterisk_conf)
    return 0


async def _operator_endpoints(site: Site, var_dir: Path) -> list[OperatorEndpoint]:
    """Operators from the database, for pjsip.conf; none yet if the database is new."""
    from ari_app.routing.operators import endpoints_from_db

    return await endpoints_from_db(site, var_dir)


def cmd_asterisk_start(args: argparse.Namespace) -> int:
    from ari_app.pbx.process import AsteriskProcess, pid_path
    from ari_app.pbx.render import render

    site, var_dir = _site(args), _var_dir(args)
    pid_file = pid_path(var_dir)
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), 0)
            print(f"asterisk already running (pid {pid_file.read_text().strip()})")
            return 0
        except (ProcessLookupError, ValueError):
            pid_file.unlink()
    rendered = render(site, var_dir, operators=asyncio.run(_operator_endpoints(site, var_dir)))
    proc = AsteriskProcess(var_dir, rendered)
    proc.start(detach=True)
    print(f"asterisk started: pid {proc.pid}, SIP {rendered.bind}:{rendered.sip_port}, "
          f"ARI http://{rendered.bind}:{rendered.http_port}/ari")
    return 0


def cmd_asterisk_stop(args: argparse.Namespace) -> int:
    from ari_app.pbx.process import pid_path, stop_pid

    var_dir = _var_dir(args)
    pid_file = pid_path(var_dir)
    if not pid_file.exists():
        print("asterisk is not running")
        return 0
    stop_pid(int(pid_file.read_text()), var_dir)
    print("asterisk stopped")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from ari_app.tickets.db import database_url
    from ari_app.tickets.migrate import upgrade

    var_dir = _var_dir(args)
    var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(database_url(var_dir))
    print("database is at the latest schema")
    return 0


def cmd_prompts_build(args: argparse.Namespace) -> int:
    from ari_app.prompts import build

    n = build(_var_dir(args) / "sounds", force=args.force)
    print(f"{n} prompt file(s) written")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ari_app.app import App, AppSettings

    site, var_dir = _site(args), _var_dir(args)
    settings = AppSettings.from_env(site, var_dir)

    async def main() -> None:
        app = App(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        log.info("serving site=%s app=%s ARI=%s", site.code, site.stasis_app, settings.ari_url)
        await stop.wait()
        await app.stop()

    asyncio.run(main())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siaga112", description="Siaga 112 emergency line")
    p.add_argument("--site", help="site code or TOML file (default: $SIAGA112_SITE or jepara)")
    p.add_argument("--var-dir", help="state directory (default: $SIAGA112_VAR or ./var)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the ARI application").set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", help="run migrations").set_defaults(func=cmd_db_upgrade)

    ast = sub.add_parser("asterisk", help="our Asterisk").add_subparsers(dest="ast_cmd",
                                                                          required=True)
    ast.add_parser("render", help="render config into var/asterisk/etc").set_defaults(
        func=cmd_render)
    ast.add_parser("start", help="render and start Asterisk").set_defaults(func=cmd_asterisk_start)
    ast.add_parser("stop", help="stop Asterisk cleanly").set_defaults(func=cmd_asterisk_stop)

    pr = sub.add_parser("prompts", help="IVR prompts").add_subparsers(dest="pr_cmd", required=True)
    b = pr.add_parser("build", help="speak config/prompts/*.toml into var/sounds")
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_prompts_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
