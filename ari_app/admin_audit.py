"""The admin audit trail: every change to users, tokens, agencies, operators, shifts, site settings,
login locks and retention deletions, with who, when, before and after.

Callers write the entry in the same transaction as the change, so a refused or failed change
leaves no entry and an entry never describes a change that did not happen.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.models import AdminAudit

log = logging.getLogger(__name__)

ENTITIES = ("user", "token", "agency", "operator", "shift", "site_settings", "login_lock",
            "retention", "backup")


def cli_actor() -> str:
    """Who runs an admin command on the server: the OS account (the CLI has no console login)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return f"os:{name}"


def _json(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


async def record_admin_change(s: AsyncSession, *, actor: str, entity: str, key: str, action: str,
                              before: Any, after: Any, at: datetime | None = None) -> AdminAudit:
    """Add one audit entry to the session's transaction (``before``/``after`` as JSON; None = none)."""
    if entity not in ENTITIES:
        raise ValueError(f"admin audit entity: expected one of {', '.join(ENTITIES)}, got {entity!r}")
    row = AdminAudit(at=at or datetime.now(UTC), actor=actor[:128], entity=entity, key=key[:128],
                     action=action[:40], before=_json(before), after=_json(after))
    s.add(row)
    await s.flush()
    return row


async def admin_changes(s: AsyncSession, *, entity: str | None = None, key: str | None = None,
                        limit: int = 100) -> list[dict[str, Any]]:
    q = select(AdminAudit)
    if entity:
        q = q.where(AdminAudit.entity == entity)
    if key:
        q = q.where(AdminAudit.key == key)
    rows = await s.scalars(q.order_by(AdminAudit.id.desc()).limit(limit))
    return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "entity": r.entity,
             "key": r.key, "action": r.action,
             "before": json.loads(r.before) if r.before else None,
             "after": json.loads(r.after) if r.after else None} for r in rows]


def site_file_settings(path: str | Path) -> dict[str, Any]:
    """The site file as parsed TOML (what the admin wrote, before environment overrides)."""
    with open(path, "rb") as fh:
        return tomllib.load(fh)


async def record_site_settings(s: AsyncSession, site_code: str, file: str | Path, *,
                               actor: str, at: datetime | None = None) -> bool:
    """Site settings live in a TOML file the admin edits: each start compares it with the last
    audited version and writes an entry (before, after) when it changed. True if one was written."""
    try:
        after = site_file_settings(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:  # loaded at start; changed since: say so
        log.warning("site settings of %s not audited: %s: %s", site_code, file, exc)
        return False
    last = await s.scalar(select(AdminAudit).where(AdminAudit.entity == "site_settings",
                                                   AdminAudit.key == site_code)
                          .order_by(AdminAudit.id.desc()).limit(1))
    before = json.loads(last.after) if last is not None and last.after else None
    if before == json.loads(_json(after)):
        return False
    await record_admin_change(s, actor=f"{actor} file:{file}", entity="site_settings",
                              key=site_code, action="changed" if before is not None else "first seen",
                              before=before, after=after, at=at)
    return True
