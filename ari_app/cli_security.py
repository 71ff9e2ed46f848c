"""`siaga112` commands for security and personal data: API tokens, login locks, the admin audit.

(Retention and backup/restore join here.) Kept apart from cli.py so the admin-facing security
commands read in one place.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
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
    import os

    from ari_app.cli import _site, _var_dir

    site = _site(args)
    path = _var_dir(args) / "secrets" / site.web.whatsapp_app_secret
    value = (sys.stdin.readline().strip() if args.stdin
             else getpass.getpass("WhatsApp app secret: ").strip())
    if not value:
        print("siaga112: empty secret: nothing saved", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    print(f"WhatsApp app secret saved in {path}; X-Hub-Signature-256 is checked with it")
    return 0


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

    au = sub.add_parser("audit", help="the admin audit trail (who changed what, before and after)")
    au.add_argument("--entity")
    au.add_argument("--key")
    au.add_argument("--limit", type=int, default=100)
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)
