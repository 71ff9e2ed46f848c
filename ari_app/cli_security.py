"""`siaga112` commands for security and personal data: API tokens, login locks, the admin audit.

(Retention and backup/restore join here.) Kept apart from cli.py so the admin-facing security
commands read in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.admin_audit import admin_changes, cli_actor


def _run_db(args: argparse.Namespace, work: Any, write: bool = False) -> int:
    from ari_app.cli import _run_db as run

    return run(args, work, write=write)


def cmd_tokens_list(args: argparse.Namespace) -> int:
    from ari_app.web.auth import list_tokens

    async def work(s: AsyncSession) -> int:
        rows = await list_tokens(s, args.name)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        now = datetime.now(UTC)
        for r in rows:
            if r["revoked_at"]:
                state = f"revoked {r['revoked_at']} by {r['revoked_by']}"
            elif r["expires_at"] is None:
                state = "no expiry (made before tokens expired): revoke and reissue"
            elif datetime.fromisoformat(str(r["expires_at"])) <= now:
                state = f"expired {r['expires_at']}"
            else:
                state = f"valid until {r['expires_at']}"
            print(f"{r['id']:>5} {r['user']:<16} {r['name']:<16} {state}")
        if not rows:
            print("no API tokens")
        return 0

    return _run_db(args, work)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from ari_app.web.auth import UserError, revoke_token

    async def work(s: AsyncSession) -> int:
        try:
            await revoke_token(s, args.id, datetime.now(UTC), actor=cli_actor())
        except UserError as exc:
            print(f"siaga112: {exc}", file=sys.stderr)
            return 1
        print(f"API token {args.id} revoked")
        return 0

    return _run_db(args, work, write=True)


def cmd_unlock(args: argparse.Namespace) -> int:
    from ari_app.web.auth import clear_lock

    kind, key = ("address", args.address) if args.address else ("user", args.name or "")
    if not key:
        print("siaga112: users unlock: give a user name or --address IP", file=sys.stderr)
        return 2

    async def work(s: AsyncSession) -> int:
        if not await clear_lock(s, kind, key, datetime.now(UTC), actor=cli_actor()):
            print(f"siaga112: {kind} {key} has no failed logins or lock", file=sys.stderr)
            return 1
        print(f"{kind} {key}: failed logins and lock cleared")
        return 0

    return _run_db(args, work, write=True)


def cmd_locks(args: argparse.Namespace) -> int:
    from ari_app.web.auth import list_locks

    async def work(s: AsyncSession) -> int:
        rows = await list_locks(s)
        if args.json:
            print(json.dumps(rows, indent=1))
        for r in rows if not args.json else []:
            print(f"{r['kind']:<8} {r['key']:<24} failures {r['failures']:>3}  "
                  f"{'locked until ' + str(r['locked_until']) if r['locked_until'] else ''}")
        return 0

    return _run_db(args, work)


def cmd_audit(args: argparse.Namespace) -> int:
    async def work(s: AsyncSession) -> int:
        rows = await admin_changes(s, entity=args.entity, key=args.key, limit=args.limit)
        if args.json:
            print(json.dumps(rows, indent=1, ensure_ascii=False))
        for r in rows if not args.json else []:
            print(f"{r['at']}  {r['actor']:<24} {r['entity']:<13} {r['key']:<20} {r['action']:<12} "
                  f"{json.dumps(r['before'], ensure_ascii=False)} -> "
                  f"{json.dumps(r['after'], ensure_ascii=False)}")
        return 0

    return _run_db(args, work)


def cmd_whatsapp_secret(args: argparse.Namespace) -> int:
    """Keep the WhatsApp app secret (from Meta's app dashboard) in var/secrets, mode 0600."""
    import getpass

    from ari_app.cli import _site, _var_dir

    site = _site(args)
    path = _var_dir(args) / "secrets" / site.web.whatsapp_app_secret
    value = (sys.stdin.readline().strip() if args.stdin
             else getpass.getpass("WhatsApp app secret: ").strip())
    if not value:
        print("siaga112: empty secret: nothing saved", file=sys.stderr)
        return 2
    from ari_app.secrets import save_given_secret

    save_given_secret(path, value)
    print(f"WhatsApp app secret saved in {path}; X-Hub-Signature-256 is checked with it")
    return 0


def cmd_retention_run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ari_app.cli import _db, _site, _var_dir
    from ari_app.pbx.cel import cel_path
    from ari_app.tickets.retention import run_retention

    site = _site(args)
    var_dir = _var_dir(args)
    cel = cel_path(var_dir)

    async def main() -> int:
        engine, maker = _db(args)
        try:
            report = await run_retention(maker, site.retention, datetime.now(UTC),
                                         actor=cli_actor(), site_code=site.code, cel=cel,
                                         var_dir=var_dir)
        finally:
            await engine.dispose()
        data = asdict(report)
        print(json.dumps(data, indent=1) if args.json else
              ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in data.items()))
        return 1 if report.errors else 0

    return asyncio.run(main())


def cmd_retention_hold(args: argparse.Namespace) -> int:
    from ari_app.tickets.retention import set_legal_hold

    hold = args.ret_cmd == "hold"

    async def work(s: AsyncSession) -> int:
        if not await set_legal_hold(s, args.reference, hold, datetime.now(UTC),
                                    actor=f"{args.by} ({cli_actor()})", reason=args.reason):
            print(f"siaga112: no ticket {args.reference}", file=sys.stderr)
            return 1
        print(f"{args.reference}: legal hold {'on' if hold else 'lifted'}")
        return 0

    return _run_db(args, work, write=True)


def _audit_backup(args: argparse.Namespace, action: str, directory: str, after: Any) -> None:
    from ari_app.admin_audit import record_admin_change

    async def work(s: AsyncSession) -> int:
        await record_admin_change(s, actor=cli_actor(), entity="backup", key=directory[:128],
                                  action=action, before=None, after=after)
        return 0

    _run_db(args, work, write=True)


def cmd_backup(args: argparse.Namespace) -> int:
    from ari_app.backup import BackupError, backup
    from ari_app.cli import _var_dir
    from ari_app.tickets.db import database_url

    var_dir = _var_dir(args)
    try:
        manifest = backup(Path(args.dir), var_dir, database_url(var_dir))
    except BackupError as exc:
        print(f"siaga112: backup refused: {exc}", file=sys.stderr)
        return 1
    _audit_backup(args, "backup", str(Path(args.dir).resolve()), manifest["counts"])
    print(f"backup written to {Path(args.dir).resolve()}: {len(manifest['files'])} files, "
          + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ari_app.backup import BackupError, restore
    from ari_app.cli import _var_dir
    from ari_app.tickets.db import database_url

    var_dir = _var_dir(args)
    try:
        manifest = restore(Path(args.dir), var_dir, database_url(var_dir))
    except BackupError as exc:
        print(f"siaga112: restore refused: {exc}", file=sys.stderr)
        return 1
    _audit_backup(args, "restore", str(Path(args.dir).resolve()),
                  {"created_at": manifest["created_at"], **manifest["counts"]})
    print(f"restored from {Path(args.dir).resolve()} (backup of {manifest['created_at']}): "
          + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()))
    return 0


async def security_lines(site: Any, var_dir: Any, s: AsyncSession | None) -> tuple[list[str], bool]:
    """What `siaga112 security status` prints (and `siaga112 status` may include), and whether
    something needs the admin (a missing public URL with agencies configured)."""
    from ari_app.tls import TlsError, fingerprint
    from ari_app.web.agencies import public_url_problem

    w, a = site.web, site.asterisk
    lines, problem = [], False

    def cert_line(what: str, given: str | None, name: str) -> str:
        path = given or str(var_dir / "secrets" / f"{name}.crt")
        try:
            return f"{what}: {path} SHA-256 {fingerprint(Path(path))}"
        except TlsError:
            return f"{what}: {path} (not made yet: made at first start)"

    lines.append(cert_line(f"web: https://{w.bind}:{w.port}", w.tls_cert, "web-tls"))
    lines.append(f"web: plain HTTP /healthz on 127.0.0.1:{w.health_port}" if w.health_port
                 else "web: no plain HTTP listener (web.health_port = 0)")
    if a.operators_use_tls:
        lines.append(cert_line(f"SIP: operators on TLS {a.bind}:{a.tls_port}, SRTP required",
                               a.tls_cert, "sip-tls"))
    else:
        lines.append(f"SIP: operators on UDP {a.bind}:{a.sip_port} without SRTP "
                     f"(asterisk.operator_tls = {a.operator_tls}; auto is on beyond loopback)")
    if w.public_url:
        lines.append(f"public URL: {w.public_url}")
    elif s is not None:
        reason = await public_url_problem(s, site.code, w.public_url)
        lines.append(f"public URL: MISSING: {reason}" if reason else
                     "public URL: not set (no agency gets notifications yet)")
        problem = reason is not None
    wa = var_dir / "secrets" / w.whatsapp_app_secret
    lines.append("WhatsApp: app secret set" if wa.exists() else
                 "WhatsApp: no app secret: webhooks are refused (`siaga112 whatsapp secret`)")
    r = site.retention
    lines.append(f"retention: recordings {r.recordings_days} days, numbers and locations "
                 f"{r.personal_days} days, every {r.run_every_h:g} h")
    return lines, problem


def cmd_security_status(args: argparse.Namespace) -> int:
    from ari_app.cli import _db, _site, _var_dir

    site, var_dir = _site(args), _var_dir(args)

    async def main() -> int:
        note = ""
        try:
            engine, maker = _db(args)
            try:
                async with maker() as s:
                    lines, problem = await security_lines(site, var_dir, s)
            finally:
                await engine.dispose()
        except Exception as exc:  # a fresh machine: no database (or no tables) yet
            lines, problem = await security_lines(site, var_dir, None)
            note = f"(database not readable yet: {str(exc).splitlines()[0][:120]})"
        print("\n".join(lines + ([note] if note else [])))
        return 1 if problem else 0

    return asyncio.run(main())


def add_security_commands(sub: Any, users: Any) -> None:
    """Register the commands on the main parser (``sub``) and under ``users``."""
    tl = users.add_parser("tokens", help="list API tokens (expiry, revocation)")
    tl.add_argument("name", nargs="?")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_tokens_list)
    tr = users.add_parser("revoke-token", help="revoke an API token by id (audited)")
    tr.add_argument("id", type=int)
    tr.set_defaults(func=cmd_token_revoke)
    un = users.add_parser("unlock", help="clear a user's (or an address's) failed logins and lock")
    un.add_argument("name", nargs="?")
    un.add_argument("--address", help="a source address instead of a user name")
    un.set_defaults(func=cmd_unlock)
    lk = users.add_parser("locks", help="user names and addresses with failed logins or a lock")
    lk.add_argument("--json", action="store_true")
    lk.set_defaults(func=cmd_locks)

    wa = sub.add_parser("whatsapp", help="the WhatsApp channel").add_subparsers(
        dest="wa_cmd", required=True)
    ws = wa.add_parser("secret", help="set the app secret X-Hub-Signature-256 is checked with")
    ws.add_argument("--stdin", action="store_true", help="read it from stdin")
    ws.set_defaults(func=cmd_whatsapp_secret)

    rt = sub.add_parser("retention", help="retention of recordings and personal data "
                        "([retention] in the site file)").add_subparsers(dest="ret_cmd", required=True)
    rr = rt.add_parser("run", help="delete old recordings, anonymise old closed tickets (audited)")
    rr.add_argument("--json", action="store_true")
    rr.set_defaults(func=cmd_retention_run)
    for name, text in (("hold", "put a ticket under legal hold: retention leaves it alone"),
                       ("release", "lift a ticket's legal hold")):
        rh = rt.add_parser(name, help=text)
        rh.add_argument("reference")
        rh.add_argument("--by", required=True, help="who orders it (audited)")
        rh.add_argument("--reason", default="")
        rh.set_defaults(func=cmd_retention_hold)

    bk = sub.add_parser("backup", help="snapshot database, journal, recordings and secrets "
                        "into DIR (manifest + SHA-256)")
    bk.add_argument("dir")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="bring a fresh machine back from a backup DIR "
                        "(checksums verified first)")
    rs.add_argument("dir")
    rs.set_defaults(func=cmd_restore)

    se = sub.add_parser("security", help="TLS, public URL, secrets").add_subparsers(
        dest="sec_cmd", required=True)
    se.add_parser("status", help="certificates, transports, public URL (exit 1 if the public "
                  "URL is missing while agencies get notifications)").set_defaults(
        func=cmd_security_status)

    au = sub.add_parser("audit", help="the admin audit trail (who changed what, before and after)")
    au.add_argument("--entity")
    au.add_argument("--key")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)
