"""The `siaga112` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.admin_audit import cli_actor, record_admin_change
from ari_app.config import (
    ConfigError,
    Site,
    default_site_code,
    is_email_address,
    is_http_url,
    load_site,
)
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
    from ari_app.pbx.process import AsteriskError, AsteriskProcess, pid_path, running_pid
    from ari_app.pbx.render import render

    site, var_dir = _site(args), _var_dir(args)
    pid_file = pid_path(var_dir)
    pid = running_pid(var_dir)
    if pid is not None:
        print(f"asterisk already running (pid {pid})", file=sys.stderr if args.foreground
              else sys.stdout)
        return 1 if args.foreground else 0  # a supervisor must not think it runs this one
    if pid_file.exists():  # stale: its process is gone, or the number is another program's now
        print(f"removing stale {pid_file} (pid {pid_file.read_text().strip()} is not our "
              "Asterisk)")
        pid_file.unlink()
    rendered = render(site, var_dir, operators=asyncio.run(_operator_endpoints(site, var_dir)))
    proc = AsteriskProcess(var_dir, rendered)
    # Asterisk speaks sd_notify itself when it has booted; only we say READY (after ARI answers)
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    try:
        proc.start(detach=not args.foreground)
    except AsteriskError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 1
    if notify_socket is not None:
        os.environ["NOTIFY_SOCKET"] = notify_socket
    print(f"asterisk started: {rendered.asterisk.describe() if rendered.asterisk else ''}, "
          f"pid {proc.pid}, SIP {rendered.bind}:{rendered.sip_port}, "
          f"ARI http://{rendered.bind}:{rendered.http_port}/ari", flush=True)
    if args.foreground:  # under a supervisor (systemd): live and die with it
        return _wait_foreground(proc)
    return 0


def _wait_foreground(proc: Any) -> int:
    """Stay with a foreground Asterisk until it exits, or SIGTERM/SIGINT stop it cleanly.

    The signals are taken with sigwait (blocked before READY is sent, so a stop right after
    READY is handled too), never in a handler that would interrupt our own wait on the child.
    """
    from ari_app.service import sd_notify

    wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    child = proc.proc
    sd_notify("READY=1")  # ARI answers: the screening server and the app may start
    while child is not None and child.poll() is None:
        if signal.sigwait(wanted) in (signal.SIGTERM, signal.SIGINT):
            proc.stop()
            return 0
    return int(child.returncode or 1) if child is not None else 1


def cmd_asterisk_stop(args: argparse.Namespace) -> int:
    from ari_app.pbx.process import NotOurAsterisk, pid_path, stop_pid

    var_dir = _var_dir(args)
    pid_file = pid_path(var_dir)
    if not pid_file.exists():
        print("asterisk is not running")
        return 0
    try:
        stop_pid(int(pid_file.read_text()), var_dir)
    except (NotOurAsterisk, ValueError) as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 1
    print("asterisk stopped")
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    from ari_app.pbx.render import render
    from ari_app.supervise import supervise

    site, var_dir = _site(args), _var_dir(args)

    def render_now() -> Any:
        return render(site, var_dir, operators=asyncio.run(_operator_endpoints(site, var_dir)))

    return supervise(site, var_dir, render_now)


def cmd_service_install(args: argparse.Namespace) -> int:
    from ari_app.service import InstallPlan, ServiceError, default_bin, install, next_steps

    plan = InstallPlan(prefix=Path(args.prefix).resolve(), user=args.user,
                       var_dir=Path(args.state_dir), site=args.site or default_site_code(),
                       bin=default_bin())
    if not plan.var_dir.is_absolute():
        print(f"siaga112: --state-dir: expected an absolute path, got {args.state_dir!r}",
              file=sys.stderr)
        return 2
    if plan.root and not args.dry_run and os.geteuid() != 0:
        print("siaga112: installing into / needs root (or use --prefix DIR / --dry-run)",
              file=sys.stderr)
        return 2
    try:
        steps = install(plan, dry_run=args.dry_run)
    except (ServiceError, OSError, subprocess.CalledProcessError) as exc:
        print(f"siaga112: service install: {exc}", file=sys.stderr)
        return 1
    for line in steps:
        print(line)
    print("Nothing was started or enabled." + ("" if not plan.root else " Next:"))
    if plan.root:
        for line in next_steps(plan):
            print(f"  {line}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ari_app.status import collect, format_text
    from ari_app.tickets.db import database_url

    site, var_dir = _site(args), _var_dir(args)
    st = asyncio.run(collect(site, var_dir, database_url(var_dir)))
    print(json.dumps(st.as_dict(), indent=1) if args.json else format_text(st))
    return st.code


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


def _freeze_startup_heap() -> None:
    """Keep the cyclic GC off what startup loaded (modules, SQLAlchemy, aiohttp: most of the
    heap): full collections then scan only what calls made since, not the whole process."""
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace) -> int:
    from ari_app.app import App, AppAlreadyRunning, AppSettings
    from ari_app.running import ROSTER_SIGNAL

    site, var_dir = _site(args), _var_dir(args)
    settings = AppSettings.from_env(site, var_dir)

    async def main() -> None:
        app = App(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(ROSTER_SIGNAL, app.roster_changed)  # `operators ...`, `shifts ...`
        try:
            await app.start()
        except AppAlreadyRunning as exc:
            print(f"siaga112: {exc}", file=sys.stderr)
            await app.engine.dispose()
            raise SystemExit(3) from None
        _freeze_startup_heap()
        log.info("serving site=%s app=%s ARI=%s", site.code, site.stasis_app, settings.ari_url)
        await stop.wait()
        await app.stop()

    asyncio.run(main())
    return 0


def _db(args: argparse.Namespace) -> tuple[Any, Any]:
    from ari_app.tickets.db import database_url, make_engine, sessions

    engine = make_engine(database_url(_var_dir(args)))
    return engine, sessions(engine)


def _run_db(args: argparse.Namespace, work: Callable[[AsyncSession], Awaitable[int]],
            write: bool = False) -> int:
    async def main() -> int:
        engine, maker = _db(args)
        try:
            async with maker() as s:
                if write:
                    async with s.begin():
                        return await work(s)
                return await work(s)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _local_time(site: Site, raw: str, option: str) -> datetime:
    try:
        value = datetime.strptime(raw, "%Y-%m-%d %H:%M")
    except ValueError:
        raise ConfigError("command line", option, "YYYY-MM-DD HH:MM (site local time)",
                          raw) from None
    return value.replace(tzinfo=site.timezone)


def cmd_agi_serve(args: argparse.Namespace) -> int:
    from ari_app.pbx.agi_server import serve
    from ari_app.pbx.render import write_agi

    site, var_dir = _site(args), _var_dir(args)
    config = var_dir / "agi" / "config.json"
    if not config.exists():  # normally written by `asterisk start` (render), read per call
        (var_dir / "asterisk" / "agi-bin").mkdir(parents=True, exist_ok=True)
        write_agi(site, var_dir, None)
    serve(site.asterisk.fastagi_port, config)
    return 0


def cmd_tickets_list(args: argparse.Namespace) -> int:
    from ari_app import admin

    site = _site(args)

    async def work(s: AsyncSession) -> int:
        rows = await admin.list_tickets(s, site.code, status=args.status, callback=args.callback,
                                        limit=args.limit)
        print(json.dumps(rows, indent=1) if args.json
              else admin.format_tickets(rows, site, reasons=args.callback))
        return 0

    return _run_db(args, work)


def _journal_path(args: argparse.Namespace) -> Path:
    return _var_dir(args) / "journal" / f"{_site(args).stasis_app}.db"


def cmd_journal(args: argparse.Namespace) -> int:
    """What the write journal holds: writes waiting for the database, and dead ones."""
    from ari_app.tickets.writer import Journal

    path = _journal_path(args)
    if not path.exists():
        print(f"siaga112: no journal at {path} (the app has not run here)", file=sys.stderr)
        return 1
    journal = Journal(path)
    try:
        dead = journal.dead_entries()
        if args.json:
            print(json.dumps({"pending": journal.count(), "dead": dead}, indent=1, default=str))
            return 0
        print(f"journal {path}: {journal.count()} write(s) waiting for the database, "
              f"{sum(d['held_by'] is None for d in dead)} refused, "
              f"{sum(d['held_by'] is not None for d in dead)} held behind a refused one")
        for d in dead:
            when = datetime.fromtimestamp(d["created"], UTC).isoformat(timespec="seconds")
            call = d["key"] or "-"
            print(f"  #{d['seq']:<7} {d['kind']:<16} call={call:<24} {when}  {d['error']}")
        if dead:
            print("fix the cause, then: siaga112 journal retry [SEQ...]")
        return 0
    finally:
        journal.close()


def cmd_journal_retry(args: argparse.Namespace) -> int:
    """Put dead writes (and the writes held behind them) back in the queue, in order."""
    from ari_app.tickets.writer import NOTICE, Journal

    path = _journal_path(args)
    if not path.exists():
        print(f"siaga112: no journal at {path}", file=sys.stderr)
        return 1
    journal = Journal(path)
    try:
        keys = {d["seq"]: d["key"] for d in journal.dead_entries()}
        moved = journal.retry_dead(args.seq or None)
        for key in sorted({keys[old] for old, _new, _kind in moved if keys.get(old)}):
            journal.append(NOTICE, {"ticket_channel": key, "at": datetime.now(UTC).timestamp(),
                                    "action": "writes retried",
                                    "detail": {"by": "siaga112 journal retry",
                                               "writes": [f"{k}#{o}" for o, _n, k in moved
                                                          if keys.get(o) == key]}})
        for old, new, kind in moved:
            print(f"#{old} {kind} queued again as #{new}")
        print(f"{len(moved)} write(s) queued again; the app applies them within seconds "
              "(or when it next starts)")
        return 0
    finally:
        journal.close()


def cmd_tickets_show(args: argparse.Namespace) -> int:
    from ari_app import admin

    async def work(s: AsyncSession) -> int:
        data = await admin.show_ticket(s, args.reference)
        if data is None:
            print(f"siaga112: no ticket {args.reference}", file=sys.stderr)
            return 1
        print(json.dumps(data, indent=1) if args.json else admin.format_ticket(data))
        return 0

    return _run_db(args, work)


def _admin_change(args: argparse.Namespace,
                  work: Callable[[AsyncSession, datetime], Awaitable[Any]]) -> int:
    """One operator/shift change: in one transaction, then applied to the running system
    (PJSIP + dialplan reload, the app's roster). Bad input changes nothing and exits 2."""
    from ari_app.clock import Clock
    from ari_app.routing.operators import Change, OperatorError, apply_live

    site, var_dir = _site(args), _var_dir(args)

    async def main() -> int:
        engine, maker = _db(args)
        try:
            try:
                async with maker() as s, s.begin():
                    change = await work(s, Clock.from_env().now())
            except OperatorError as exc:
                print(f"siaga112: {exc}", file=sys.stderr)
                return 2
            if isinstance(change, Change):
                print(change.done)
                for warning in change.warnings:
                    print(warning, file=sys.stderr)
                if change.secret:
                    print(f"  password: {change.secret}   (shown once)")
                if not change.live:
                    return 0
            async with maker() as s:
                lines, followed = await apply_live(site, var_dir, s)
            for line in lines:
                print(line, file=sys.stdout if followed else sys.stderr)
            if not followed:
                print("siaga112: the database is changed, but the running Asterisk did not "
                      "take it: fix the problem above, then `siaga112 operators apply`",
                      file=sys.stderr)
            return 0 if followed else 1
        finally:
            await engine.dispose()

    return asyncio.run(main())


def cmd_operators_add(args: argparse.Namespace) -> int:
    from ari_app.routing.operators import Change, add_operator

    site = _site(args)

    async def work(s: AsyncSession, now: datetime) -> Change:
        password = await add_operator(s, site, args.name, args.display_name or args.name,
                                      now, contact=args.contact)
        a = site.asterisk
        domain = (f"{a.bind}:{a.tls_port} (TLS, SRTP required)" if a.operators_use_tls
                  else f"{a.bind}:{a.sip_port} (UDP)")
        return Change(f"operator {args.name} added. SIP account for the softphone:\n"
                      f"  user/auth name: {args.name}\n  password: {password}   (shown once)\n"
                      f"  domain: {domain}\n"
                      "Add a shift (`siaga112 shifts add`) to have them rung.")

    return _admin_change(args, work)


def cmd_operators_set(args: argparse.Namespace) -> int:
    """operators disable|enable|remove|passwd NAME"""
    from ari_app.routing.operators import Change, remove_operator, set_active, set_password

    site = _site(args)
    password = sys.stdin.readline().rstrip("\n") if getattr(args, "password_stdin", False) else None

    async def work(s: AsyncSession, now: datetime) -> Change:
        if args.op_cmd == "disable":
            return await set_active(s, site.code, args.name, False, now, force=args.force)
        if args.op_cmd == "enable":
            return await set_active(s, site.code, args.name, True, now)
        if args.op_cmd == "remove":
            return await remove_operator(s, site.code, args.name, now, force=args.force)
        return await set_password(s, site.code, args.name, password)

    return _admin_change(args, work)


def cmd_operators_apply(args: argparse.Namespace) -> int:
    """Make the running Asterisk and app follow the database as it is (nothing changes in it)."""
    from ari_app.routing.operators import Change

    async def work(_s: AsyncSession, _now: datetime) -> Change:
        return Change("operators and shifts as stored:")

    return _admin_change(args, work)


def cmd_operators_list(args: argparse.Namespace) -> int:
    from ari_app.routing.operators import list_operators

    site = _site(args)

    async def work(s: AsyncSession) -> int:
        rows = await list_operators(s, site.code)
        if args.json:
            print(json.dumps([r.__dict__ for r in rows], indent=1))
        else:
            for r in rows:
                print(f"{r.name:<12} {r.display_name:<24} {'active' if r.active else 'disabled':<8}"
                      f" {r.contact or '(registers)'}")
        return 0

    return _run_db(args, work)


def cmd_shifts_add(args: argparse.Namespace) -> int:
    from ari_app.routing.operators import Change, add_shift

    site = _site(args)
    start = _local_time(site, args.start, "--from")
    end = _local_time(site, args.end, "--to")

    async def work(s: AsyncSession, _now: datetime) -> Change:
        shift = await add_shift(s, args.name, start, end)
        return Change(f"shift {shift.id} added: {args.name} {start:%Y-%m-%d %H:%M} - "
                      f"{end:%Y-%m-%d %H:%M} {site.timezone.key}")

    return _admin_change(args, work)


def cmd_shifts_remove(args: argparse.Namespace) -> int:
    from ari_app.routing.operators import Change, remove_shift

    site = _site(args)
    if (args.target.isdigit()) == (args.at is not None):
        print("siaga112: shifts remove: give a shift id (see `shifts list`), or an operator "
              "and --at \"YYYY-MM-DD HH:MM\"", file=sys.stderr)
        return 2
    covering = _local_time(site, args.at, "--at") if args.at is not None else None

    async def work(s: AsyncSession, now: datetime) -> Change:
        if covering is None:
            return await remove_shift(s, site.code, now, shift_id=int(args.target),
                                      force=args.force)
        return await remove_shift(s, site.code, now, name=args.target, covering=covering,
                                  force=args.force)

    return _admin_change(args, work)


def cmd_shifts_list(args: argparse.Namespace) -> int:
    from ari_app.routing.operators import list_shifts

    site = _site(args)

    async def work(s: AsyncSession) -> int:
        rows = await list_shifts(s, site.code)
        if args.json:
            print(json.dumps([{"id": r.id, "operator": r.operator,
                               "starts_at": r.starts_at.isoformat(),
                               "ends_at": r.ends_at.isoformat()} for r in rows], indent=1))
            return 0
        for r in rows:
            a, b = r.starts_at.astimezone(site.timezone), r.ends_at.astimezone(site.timezone)
            print(f"{r.id:>5} {r.operator:<12} {a:%Y-%m-%d %H:%M} - {b:%Y-%m-%d %H:%M} "
                  f"{site.timezone.key}")
        return 0

    return _run_db(args, work)


def cmd_dialplan(args: argparse.Namespace) -> int:
    """`dialplan check` (a throw-away Asterisk) or `dialplan reload` (check, then the live one)."""
    from ari_app.pbx.dialplan_check import check, reload
    from ari_app.pbx.render import DIALPLAN_DIR

    directory = Path(args.dir) if args.dir else DIALPLAN_DIR
    live = args.dp_cmd == "reload"
    result = (reload(_site(args), _var_dir(args), directory) if live
              else check(_site(args), directory))
    if result.problems:
        print(result.format(), file=sys.stderr if not result.ok else sys.stdout)
    if result.ok:
        print("dialplan reloaded" if live else "dialplan OK")
    else:
        print("dialplan NOT reloaded: the running Asterisk keeps its old dialplan" if live
              else "dialplan REFUSED: fix the errors above")
    return 0 if result.ok else 1


def cmd_aml_parse(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ari_app.location.aml import parse_any
    from ari_app.location.model import LocationParseError

    raw = sys.stdin.read()
    try:
        location = parse_any(raw)
    except LocationParseError as exc:
        print(f"rejected: {exc.reason}", file=sys.stderr)
        return 1
    data = {k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in asdict(location).items()}
    print(json.dumps(data, indent=1, ensure_ascii=False))
    return 0


def _caller_key_or_exit(number: str) -> str:
    from ari_app.location.numbers import InvalidNumber, normalise_msisdn

    try:
        return normalise_msisdn(number)
    except InvalidNumber as exc:
        raise ConfigError("command line", "NUMBER", "a phone number", number) from exc


def cmd_callers_history(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from ari_app.admin import caller_history

    site = _site(args)
    key = _caller_key_or_exit(args.number)
    since = datetime.now(UTC) - timedelta(hours=args.hours or site.screening.window_h)

    async def work(s: AsyncSession) -> int:
        data = await caller_history(s, key, since)
        flagged = data["counts"]["prank"] + data["counts"]["ghost"] >= site.screening.threshold
        data["flagged"] = flagged and key not in site.screening.allowlist
        print(json.dumps(data, indent=1) if args.json else
              f"{key}: " + ", ".join(f"{k} {v}" for k, v in data["counts"].items())
              + (" (FLAGGED: warning + lower priority)" if data["flagged"] else ""))
        return 0

    return _run_db(args, work)


def cmd_callers_clear(args: argparse.Namespace) -> int:
    from ari_app.admin import clear_flags

    key = _caller_key_or_exit(args.number)

    async def work(s: AsyncSession) -> int:
        await clear_flags(s, key, args.by, args.reason, datetime.now(UTC))
        print(f"{key}: prank/ghost history cleared by {args.by}")
        return 0

    return _run_db(args, work, write=True)


def cmd_tickets_mark(args: argparse.Namespace) -> int:
    from ari_app.admin import mark_ticket

    async def work(s: AsyncSession) -> int:
        if not await mark_ticket(s, args.reference, args.status, args.by, datetime.now(UTC)):
            print(f"siaga112: no ticket {args.reference}", file=sys.stderr)
            return 1
        print(f"{args.reference} marked {args.status} by {args.by}")
        return 0

    return _run_db(args, work, write=True)


def cmd_users_add(args: argparse.Namespace) -> int:
    from ari_app.web.auth import UserError, add_user

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None

    async def work(s: AsyncSession) -> int:
        try:
            made = await add_user(s, args.name, args.role, password, datetime.now(UTC),
                                  actor=cli_actor())
        except UserError as exc:
            print(f"siaga112: {exc}", file=sys.stderr)
            return 2
        print(f"user {args.name} ({args.role}) added" +
              ("" if password else f". password: {made}   (shown once)"))
        return 0

    return _run_db(args, work, write=True)


def cmd_users_token(args: argparse.Namespace) -> int:
    from ari_app.web.auth import UserError, add_token

    async def work(s: AsyncSession) -> int:
        try:
            token = await add_token(s, args.name, args.label, datetime.now(UTC), days=args.days,
                                    actor=cli_actor())
        except UserError as exc:
            print(f"siaga112: {exc}", file=sys.stderr)
            return 2
        print(f"API token for {args.name} (shown once, valid {args.days} days): {token}")
        return 0

    return _run_db(args, work, write=True)


def cmd_users_link(args: argparse.Namespace) -> int:
    """Tie a console user to the SIP operator they take calls as (screen pop, ready state)."""
    from ari_app.web.profiles import ProfileError, link_operator, set_lang

    async def work(s: AsyncSession) -> int:
        try:
            await link_operator(s, args.name, None if args.unlink else args.operator)
            if args.lang:
                await set_lang(s, args.name, args.lang)
        except ProfileError as exc:
            print(f"siaga112: {exc}", file=sys.stderr)
            return 2
        print(f"user {args.name}: " + ("no operator" if args.unlink else f"operator {args.operator}")
              + (f", language {args.lang}" if args.lang else ""))
        return 0

    if not args.unlink and not args.operator:
        print("siaga112: users link: expected --operator NAME or --unlink", file=sys.stderr)
        return 2
    return _run_db(args, work, write=True)


def cmd_agencies_seed(args: argparse.Namespace) -> int:
    from ari_app.web.agencies import seed_agencies

    site, var_dir = _site(args), _var_dir(args)

    async def work(s: AsyncSession) -> int:
        print(f"{await seed_agencies(s, site.code, var_dir)} agencies added")
        return 0

    return _run_db(args, work, write=True)


def cmd_agencies_set(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ari_app.tickets.models import Agency

    site = _site(args)

    async def work(s: AsyncSession) -> int:
        agency = await s.scalar(select(Agency).where(Agency.site == site.code,
                                                     Agency.code == args.code))
        if agency is None:
            print(f"siaga112: no agency {args.code} (run `siaga112 agencies seed`)", file=sys.stderr)
            return 1
        before = {"webhook_url": agency.webhook_url, "email": agency.email}
        if args.webhook_url is not None:
            if args.webhook_url and not is_http_url(args.webhook_url):
                print("siaga112: --webhook-url: expected an http(s) URL", file=sys.stderr)
                return 2
        if args.email is not None:
            address = args.email.strip()
            if address and not is_email_address(address):
                print(f"siaga112: --email: expected an e-mail address like damkar@jeparakab.go.id "
                      f"(or \"\" to remove it), got {args.email!r}", file=sys.stderr)
                return 2
        if args.webhook_url is not None:  # both checked first: a refusal changes nothing
            agency.webhook_url = args.webhook_url
        if args.email is not None:
            agency.email = args.email.strip()
        after = {"webhook_url": agency.webhook_url, "email": agency.email}
        if after != before:
            await record_admin_change(s, actor=cli_actor(), entity="agency", key=agency.code,
                                      action="set", before=before, after=after)
        print(f"{agency.code}: webhook {agency.webhook_url or '-'}, e-mail {agency.email or '-'}")
        return 0

    return _run_db(args, work, write=True)


def cmd_notifications_list(args: argparse.Namespace) -> int:
    from ari_app.web.outbox import deliveries

    site = _site(args)

    async def work(s: AsyncSession) -> int:
        rows = await deliveries(s, site.code, status=args.status, limit=args.limit)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no notifications")
        for r in rows if not args.json else []:
            print(f"{r['notification']:>6} {r['ticket']:<20} {r['agency']:<8} {r['channel']:<8} "
                  f"{r['status']:<9} {r['attempts']:>3}  {r['last_error']}")
        return 0

    return _run_db(args, work)


def cmd_smtp_password(args: argparse.Namespace) -> int:
    """Keep the SMTP password in var/secrets (0600), never in the site file or the repo."""
    import getpass

    from ari_app.web.mail import password_file

    site = _site(args)
    path = password_file(_var_dir(args), site.code)
    if site.smtp is None or not site.smtp.username:
        print(f"siaga112: {site.file}: smtp.username is not set: the mail server is used without "
              "a password", file=sys.stderr)
        return 2
    password = (sys.stdin.readline().rstrip("\n") if args.password_stdin
                else getpass.getpass(f"SMTP password for {site.smtp.username}@{site.smtp.host}: "))
    if not password:
        print("siaga112: empty password: nothing saved", file=sys.stderr)
        return 2
    from ari_app.secrets import save_given_secret

    save_given_secret(path, password)
    print(f"SMTP password saved in {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import date

    from ari_app.web import kpi

    site = _site(args)
    try:
        start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    except ValueError:
        raise ConfigError("command line", "--from/--to", "YYYY-MM-DD", f"{args.start} {args.end}") from None

    async def work(s: AsyncSession) -> int:
        k = await kpi.load(s, site.code, site.timezone, start, end)
        print(kpi.to_csv(k) if args.csv else kpi.to_text(k), end="\n" if not args.csv else "")
        return 0

    return _run_db(args, work)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siaga112", description="Siaga 112 emergency line")
    p.add_argument("--site", help="site code or TOML file (default: $SIAGA112_SITE or jepara)")
    p.add_argument("--var-dir", help="state directory (default: $SIAGA112_VAR or ./var)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--log-json", action="store_true",
                   help="log lines as JSON, call ids as fields (or SIAGA112_LOG_FORMAT=json)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the ARI application").set_defaults(func=cmd_serve)
    sub.add_parser("supervise", help="run Asterisk, the screening server and the app; restart "
                   "the app and the server when they exit (scripts/run.sh, no systemd)"
                   ).set_defaults(func=cmd_supervise)
    agi = sub.add_parser("agi", help="the screening AGI").add_subparsers(dest="agi_cmd",
                                                                           required=True)
    agi.add_parser("serve", help="FastAGI server: screens each call in a forked process "
                   "(the dialplan falls back to a process per call without it)"
                   ).set_defaults(func=cmd_agi_serve)

    stp = sub.add_parser("status", help="can the line answer now: Asterisk, app, calls, "
                         "operators, journal, last error (exit 0 ok, 1 degraded, 2 cannot answer)")
    stp.add_argument("--json", action="store_true")
    stp.set_defaults(func=cmd_status)

    sv = sub.add_parser("service", help="systemd units (systemd/)").add_subparsers(
        dest="sv_cmd", required=True)
    si = sv.add_parser("install", help="install the units (Asterisk, screening server, app; "
                       "a dedicated user); prints every step, starts nothing")
    si.add_argument("--prefix", default="/", help="install under this directory instead of /")
    si.add_argument("--dry-run", action="store_true", help="only print what would be done")
    si.add_argument("--user", default="siaga112", help="system user the services run as")
    si.add_argument("--state-dir", default="/var/lib/siaga112",
                    help="the state directory (SIAGA112_VAR) the services may write")
    si.set_defaults(func=cmd_service_install)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", help="run migrations").set_defaults(func=cmd_db_upgrade)

    ast = sub.add_parser("asterisk", help="our Asterisk").add_subparsers(dest="ast_cmd",
                                                                          required=True)
    ast.add_parser("render", help="render config into var/asterisk/etc").set_defaults(
        func=cmd_render)
    ast_start = ast.add_parser("start", help="render and start Asterisk")
    ast_start.add_argument("--foreground", action="store_true",
                           help="stay attached until Asterisk exits (for systemd, run.sh)")
    ast_start.set_defaults(func=cmd_asterisk_start)
    ast.add_parser("stop", help="stop Asterisk cleanly").set_defaults(func=cmd_asterisk_stop)

    tk = sub.add_parser("tickets", help="tickets").add_subparsers(dest="tk_cmd", required=True)
    tl = tk.add_parser("list", help="recent tickets")
    tl.add_argument("--json", action="store_true")
    tl.add_argument("--status")
    tl.add_argument("--callback", action="store_true", help="only the callback list")
    tl.add_argument("--limit", type=int, default=50)
    tl.set_defaults(func=cmd_tickets_list)
    ts = tk.add_parser("show", help="one ticket with its audit trail")
    ts.add_argument("reference")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(func=cmd_tickets_show)

    tm = tk.add_parser("mark", help="mark a ticket prank/ghost/duplicate (counts for screening)")
    tm.add_argument("reference")
    tm.add_argument("status", choices=["prank", "ghost", "duplicate"])
    tm.add_argument("--by", required=True, help="who marks it (audited)")
    tm.set_defaults(func=cmd_tickets_mark)

    jn = sub.add_parser("journal", help="the local write journal: waiting and dead writes")
    jn.add_argument("--json", action="store_true")
    jn.set_defaults(func=cmd_journal)
    jns = jn.add_subparsers(dest="jn_cmd")
    jr = jns.add_parser("retry", help="queue dead writes again after a fix (all, or SEQ...)")
    jr.add_argument("seq", nargs="*", type=int)
    jr.set_defaults(func=cmd_journal_retry)

    cl = sub.add_parser("callers", help="caller history and flags").add_subparsers(
        dest="cl_cmd", required=True)
    ch = cl.add_parser("history", help="outcome counts for a number")
    ch.add_argument("number")
    ch.add_argument("--hours", type=float)
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(func=cmd_callers_history)
    cc = cl.add_parser("clear", help="a supervisor clears a number's prank/ghost flags")
    cc.add_argument("number")
    cc.add_argument("--by", required=True, help="the supervisor (audited)")
    cc.add_argument("--reason", default="")
    cc.set_defaults(func=cmd_callers_clear)

    ops = sub.add_parser("operators", help="operators (each change applies to the running "
                         "Asterisk and app at once)").add_subparsers(dest="op_cmd", required=True)
    oa = ops.add_parser("add", help="add an operator and their SIP account")
    oa.add_argument("name")
    oa.add_argument("--display-name")
    oa.add_argument("--contact", help="static SIP contact (desk phone); softphones register")
    oa.set_defaults(func=cmd_operators_add)
    for verb, text in (("disable", "stop ringing an operator (kept, can be enabled again)"),
                       ("enable", "ring a disabled operator again"),
                       ("remove", "delete an operator and their shifts"),
                       ("passwd", "set a new SIP password (generated and shown once)")):
        op_set = ops.add_parser(verb, help=text)
        op_set.add_argument("name")
        if verb in ("disable", "remove"):
            op_set.add_argument("--force", action="store_true",
                                help="even if it leaves nobody on duty (a warning is printed)")
        if verb == "passwd":
            op_set.add_argument("--password-stdin", action="store_true",
                                help="read the password from stdin")
        op_set.set_defaults(func=cmd_operators_set)
    ol = ops.add_parser("list")
    ol.add_argument("--json", action="store_true")
    ol.set_defaults(func=cmd_operators_list)
    ops.add_parser("apply", help="make the running Asterisk and app follow the database "
                   "(after a reload that failed)").set_defaults(func=cmd_operators_apply)

    sh = sub.add_parser("shifts", help="operator shifts (applied to the running app at once)"
                        ).add_subparsers(dest="sh_cmd", required=True)
    sa = sh.add_parser("add", help="add a shift (site local time)")
    sa.add_argument("name")
    sa.add_argument("--from", dest="start", required=True, help="YYYY-MM-DD HH:MM")
    sa.add_argument("--to", dest="end", required=True, help="YYYY-MM-DD HH:MM")
    sa.set_defaults(func=cmd_shifts_add)
    sr = sh.add_parser("remove", help="remove a shift: by id, or NAME --at TIME (the shift of "
                       "NAME that covers that site-local time)")
    sr.add_argument("target", help="shift id, or operator name with --at")
    sr.add_argument("--at", help="YYYY-MM-DD HH:MM (site local time)")
    sr.add_argument("--force", action="store_true",
                    help="even if it leaves nobody on duty (a warning is printed)")
    sr.set_defaults(func=cmd_shifts_remove)
    sl = sh.add_parser("list")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_shifts_list)

    dp = sub.add_parser("dialplan", help="dialplan/ for admins").add_subparsers(dest="dp_cmd",
                                                                             required=True)
    dc = dp.add_parser("check", help="load dialplan/ into a throw-away Asterisk, list errors")
    dc.add_argument("--dir", help="dialplan directory (default: dialplan/)")
    dc.set_defaults(func=cmd_dialplan)
    dr = dp.add_parser("reload", help="check, then reload the running Asterisk")
    dr.add_argument("--dir", help="dialplan directory (default: dialplan/)")
    dr.set_defaults(func=cmd_dialplan)

    aml = sub.add_parser("aml", help="Advanced Mobile Location").add_subparsers(dest="aml_cmd",
                                                                              required=True)
    aml.add_parser("parse", help="parse one message from stdin (SMS text, hex, HTTPS form)"
                   ).set_defaults(func=cmd_aml_parse)

    us = sub.add_parser("users", help="console users").add_subparsers(dest="us_cmd", required=True)
    ua = us.add_parser("add", help="add a console user (password generated and shown once)")
    ua.add_argument("name")
    ua.add_argument("--role", required=True, choices=["operator", "supervisor", "admin"])
    ua.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    ua.set_defaults(func=cmd_users_add)
    ut = us.add_parser("token", help="make an API bearer token for a user (shown once)")
    ut.add_argument("name")
    ut.add_argument("--label", default="cli")
    ut.add_argument("--days", type=int, default=90, help="lifetime in days (default 90)")
    ut.set_defaults(func=cmd_users_token)
    from ari_app.cli_security import add_security_commands

    add_security_commands(sub, us)
    from ari_app.edge.cli import add_edge_commands

    add_edge_commands(sub, _site, _var_dir)
    ul = us.add_parser("link", help="link a console user to their SIP operator (or --unlink)")
    ul.add_argument("name")
    ul.add_argument("--operator", help="the operator's name (as in `operators add`)")
    ul.add_argument("--unlink", action="store_true", help="take calls as nobody")
    ul.add_argument("--lang", choices=["id", "en"], help="the user's console language")
    ul.set_defaults(func=cmd_users_link)

    ag = sub.add_parser("agencies", help="agencies tickets are dispatched to").add_subparsers(
        dest="ag_cmd", required=True)
    ag.add_parser("seed", help="add the site's agencies from config/agencies/<site>.toml"
                  ).set_defaults(func=cmd_agencies_seed)
    ags = ag.add_parser("set", help="set an agency's webhook URL or e-mail")
    ags.add_argument("code")
    ags.add_argument("--webhook-url")
    ags.add_argument("--email", help="address notification e-mails go to (\"\" removes it)")
    ags.set_defaults(func=cmd_agencies_set)

    no = sub.add_parser("notifications", help="notification deliveries (webhook, e-mail)"
                        ).add_subparsers(dest="no_cmd", required=True)
    nl = no.add_parser("list", help="each channel's delivery state, newest first")
    nl.add_argument("--status", choices=["pending", "delivered", "failed", "skipped"])
    nl.add_argument("--limit", type=int, default=50)
    nl.add_argument("--json", action="store_true")
    nl.set_defaults(func=cmd_notifications_list)

    sm = sub.add_parser("smtp", help="outgoing mail ([smtp] in the site file)").add_subparsers(
        dest="smtp_cmd", required=True)
    sp = sm.add_parser("password", help="set the SMTP password (kept in var/secrets, mode 0600)")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sp.set_defaults(func=cmd_smtp_password)

    rp = sub.add_parser("report", help="KPIs for a period (site-local dates, inclusive)")
    rp.add_argument("--from", dest="start", required=True, help="YYYY-MM-DD")
    rp.add_argument("--to", dest="end", required=True, help="YYYY-MM-DD")
    rp.add_argument("--csv", action="store_true")
    rp.set_defaults(func=cmd_report)

    pr = sub.add_parser("prompts", help="IVR prompts").add_subparsers(dest="pr_cmd", required=True)
    b = pr.add_parser("build", help="speak config/prompts/*.toml into var/sounds")
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_prompts_build)
    return p


def main(argv: list[str] | None = None) -> int:
    from ari_app import logs

    args = build_parser().parse_args(argv)
    logs.setup(verbose=args.verbose, as_json=args.log_json)
    from ari_app.pbx.installation import InstallationError
    from ari_app.pbx.process import AsteriskError
    from ari_app.pbx.render import RenderError

    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2
    except (InstallationError, RenderError, AsteriskError) as exc:  # which Asterisk, its start
        print(f"siaga112: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
