"""Operators and shifts: tables, CLI services, and the PJSIP endpoints rendered from them.

Every change to an operator or a shift goes through a function here (add, disable, enable,
remove, password; shift add and remove), and each of them calls ``changed()`` once: the one
place an admin audit is written. The caller then applies the change to the running system
(``apply_live``: PJSIP and dialplan reload, the app's roster).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.admin_audit import cli_actor, record_admin_change
from ari_app.config import Site
from ari_app.pbx.render import OperatorEndpoint
from ari_app.tickets.db import database_url, make_engine, sessions
from ari_app.tickets.models import Operator, Shift

log = logging.getLogger(__name__)

REALM = "asterisk"
NAME = re.compile(r"[a-z][a-z0-9_]{1,30}")


class OperatorError(ValueError):
    pass


@dataclass
class Change:
    """What an admin command did, in words, and what it warns about."""

    done: str
    warnings: list[str] = field(default_factory=list)
    live: bool = True        # the running Asterisk and app must follow (False: nothing changed)
    secret: str = ""         # a new SIP password, shown once


async def changed(s: AsyncSession, action: str, operator: str, detail: str, *, entity: str,
                  key: str, before: Any, after: Any, at: datetime | None = None) -> None:
    """Every operator and shift change passes here once, inside its transaction: the admin
    audit entry (who, when, before and after) is written with it."""
    log.info("admin: %s operator=%s %s", action, operator, detail)
    await record_admin_change(s, actor=cli_actor(), entity=entity, key=key,
                              action=action.split(" ", 1)[-1], before=before, after=after, at=at)


async def _operator(s: AsyncSession, site: str, name: str) -> Operator:
    op = await s.scalar(select(Operator).where(Operator.name == name, Operator.site == site))
    if op is None:
        known = list((await s.scalars(select(Operator.name).where(Operator.site == site)
                                      .order_by(Operator.name))).all())
        raise OperatorError(f"no operator named {name!r} at site {site} (known: "
                            f"{', '.join(known) or 'none'})")
    return op


async def _nobody_left(s: AsyncSession, site: str, at: datetime, *, operator_id: int | None = None,
                       shift_id: int | None = None) -> list[str]:
    """Who is on duty at ``at``, if it would be nobody once this operator or shift is gone;
    [] when someone would remain (or nobody was on duty anyway)."""
    rows = (await s.execute(
        select(Operator.id, Operator.name, Shift.id).join(Shift, Shift.operator_id == Operator.id)
        .where(Operator.site == site, Operator.active.is_(True), Shift.starts_at <= at,
               Shift.ends_at > at))).all()
    before = sorted({name for _, name, _ in rows})
    after = {name for op_id, name, sh_id in rows if op_id != operator_id and sh_id != shift_id}
    return before if before and not after else []


def _leaves_nobody(what: str, on_duty: list[str], force: bool) -> list[str]:
    if not on_duty:
        return []
    message = (f"{what} leaves nobody on duty now (on duty: {', '.join(on_duty)}): 112 calls "
               "would wait for an operator, and the fallback would ring everyone")
    if not force:
        raise OperatorError(f"{message}. Nothing changed; add --force to do it anyway")
    return [f"WARNING: {message}"]


def sip_md5(name: str, password: str) -> str:
    """PJSIP's md5_cred: the digest HA1, so the password itself is never stored."""
    return hashlib.md5(f"{name}:{REALM}:{password}".encode()).hexdigest()


async def add_operator(s: AsyncSession, site: Site, name: str, display_name: str, at: datetime,
                       contact: str | None = None, password: str | None = None) -> str:
    """Create an operator; returns the SIP password (shown once, then only its digest is kept)."""
    if not NAME.fullmatch(name):
        raise OperatorError(f"operator name: expected lower-case letters/digits/_ "
                            f"(2-31, starting with a letter), got {name!r}")
    if contact is not None and not re.fullmatch(r"sips?:[^\s<>]+", contact):
        raise OperatorError(f"contact: expected a SIP URI like sip:op1@192.0.2.10:5060, got {contact!r}")
    if await s.scalar(select(Operator.id).where(Operator.name == name)) is not None:
        raise OperatorError(f"operator {name!r} already exists")
    password = password or secrets.token_urlsafe(12)
    s.add(Operator(name=name, display_name=display_name, site=site.code,
                   sip_md5=sip_md5(name, password), contact=contact, created_at=at))
    await changed(s, "operator added", name, f"contact={contact or '(registers)'}",
                  entity="operator", key=name, before=None,
                  after={"display_name": display_name, "contact": contact, "site": site.code},
                  at=at)
    return password


async def set_active(s: AsyncSession, site: str, name: str, active: bool, at: datetime,
                     *, force: bool = False) -> Change:
    """Disable (never rung again, by the app or the fallback; their endpoint is removed) or
    enable an operator. A call they are on goes on."""
    op = await _operator(s, site, name)
    word = "enabled" if active else "disabled"
    if op.active == active:
        return Change(f"operator {name} is already {word}; nothing changed", live=False)
    warnings = [] if active else _leaves_nobody(
        f"disabling {name}", await _nobody_left(s, site, at, operator_id=op.id), force)
    op.active = active
    await changed(s, f"operator {word}", name, "forced" if warnings else "", entity="operator",
                  key=name, before={"active": not active}, after={"active": active}, at=at)
    return Change(f"operator {name} {word}", warnings)


async def remove_operator(s: AsyncSession, site: str, name: str, at: datetime,
                          *, force: bool = False) -> Change:
    """Delete an operator and their shifts. Tickets keep the name they were handled by."""
    op = await _operator(s, site, name)
    warnings = _leaves_nobody(f"removing {name}",
                              await _nobody_left(s, site, at, operator_id=op.id), force)
    shifts = await s.execute(delete(Shift).where(Shift.operator_id == op.id))
    await s.delete(op)
    await changed(s, "operator removed", name,
                  f"shifts={getattr(shifts, 'rowcount', 0)}" + (" forced" if warnings else ""),
                  entity="operator", key=name, at=at, after=None,
                  before={"display_name": op.display_name, "contact": op.contact,
                          "active": op.active, "shifts": getattr(shifts, "rowcount", 0)})
    return Change(f"operator {name} removed with {getattr(shifts, 'rowcount', 0)} shift(s)",
                  warnings)


async def set_password(s: AsyncSession, site: str, name: str, password: str | None = None) -> Change:
    """A new SIP password (generated unless given); only its digest is kept."""
    op = await _operator(s, site, name)
    if password is not None and len(password) < 8:
        raise OperatorError("password: expected at least 8 characters")
    password = password or secrets.token_urlsafe(12)
    op.sip_md5 = sip_md5(name, password)
    await changed(s, "operator password", name, "", entity="operator", key=name,
                  before={"sip_password": "(old digest)"}, after={"sip_password": "(new digest)"})
    return Change(f"SIP password of {name} changed (the softphone must use the new one)",
                  secret=password)


async def add_shift(s: AsyncSession, name: str, starts_at: datetime, ends_at: datetime) -> Shift:
    if ends_at <= starts_at:
        raise OperatorError(f"shift: end {ends_at.isoformat()} is not after start {starts_at.isoformat()}")
    op_id = await s.scalar(select(Operator.id).where(Operator.name == name))
    if op_id is None:
        raise OperatorError(f"no operator named {name!r}")
    shift = Shift(operator_id=op_id, starts_at=starts_at, ends_at=ends_at)
    s.add(shift)
    await s.flush()
    await changed(s, "shift added", name,
                  f"shift={shift.id} {starts_at.isoformat()} - {ends_at.isoformat()}",
                  entity="shift", key=str(shift.id), before=None,
                  after={"operator": name, "starts_at": starts_at, "ends_at": ends_at})
    return shift


@dataclass(frozen=True)
class ShiftRow:
    id: int
    operator: str
    starts_at: datetime
    ends_at: datetime


async def list_shifts(s: AsyncSession, site: str) -> list[ShiftRow]:
    rows = await s.execute(select(Shift.id, Operator.name, Shift.starts_at, Shift.ends_at)
                           .join(Operator, Shift.operator_id == Operator.id)
                           .where(Operator.site == site).order_by(Shift.starts_at, Shift.id))
    return [ShiftRow(i, n, a, b) for i, n, a, b in rows]


async def remove_shift(s: AsyncSession, site: str, at: datetime, *, shift_id: int | None = None,
                       name: str | None = None, covering: datetime | None = None,
                       force: bool = False) -> Change:
    """Remove one shift: by id, or the operator's shift that covers (or starts at) a time."""
    q = select(Shift, Operator.name).join(Operator, Shift.operator_id == Operator.id).where(
        Operator.site == site)
    if shift_id is not None:
        found = (await s.execute(q.where(Shift.id == shift_id))).all()
        wanted, missing = f"shift {shift_id}", f"no shift {shift_id}"
    elif name is not None and covering is not None:
        await _operator(s, site, name)
        found = (await s.execute(q.where(Operator.name == name, Shift.starts_at <= covering,
                                         Shift.ends_at > covering))).all()
        wanted = f"a shift of {name} at {covering.isoformat()}"
        missing = f"{name} has no shift at {covering.isoformat()}"
    else:
        raise OperatorError("shifts remove: give a shift id, or an operator and --at TIME")
    if not found:
        raise OperatorError(f"{missing} (see `siaga112 shifts list`); nothing changed")
    if len(found) > 1:
        ids = ", ".join(str(sh.id) for sh, _ in found)
        raise OperatorError(f"{len(found)} shifts match {wanted} (ids {ids}): remove one by "
                            "id; nothing changed")
    [(shift, op_name)] = found
    warnings = _leaves_nobody(f"removing shift {shift.id} of {op_name}",
                              await _nobody_left(s, site, at, shift_id=shift.id), force)
    await s.delete(shift)
    await changed(s, "shift removed", op_name,
                  f"shift={shift.id} {shift.starts_at.isoformat()} - {shift.ends_at.isoformat()}"
                  + (" forced" if warnings else ""), entity="shift", key=str(shift.id), at=at,
                  before={"operator": op_name, "starts_at": shift.starts_at,
                          "ends_at": shift.ends_at}, after=None)
    return Change(f"shift {shift.id} of {op_name} removed "
                  f"({shift.starts_at:%Y-%m-%d %H:%M} - {shift.ends_at:%Y-%m-%d %H:%M} UTC)",
                  warnings)


async def on_shift(s: AsyncSession, site: str, at: datetime) -> list[str]:
    rows = await s.scalars(
        select(Operator.name).join(Shift, Shift.operator_id == Operator.id)
        .where(Operator.site == site, Operator.active.is_(True), Shift.starts_at <= at,
               Shift.ends_at > at).distinct().order_by(Operator.name))
    return list(rows.all())


@dataclass(frozen=True)
class OperatorRow:
    name: str
    display_name: str
    contact: str | None
    active: bool


async def list_operators(s: AsyncSession, site: str) -> list[OperatorRow]:
    rows = await s.scalars(select(Operator).where(Operator.site == site).order_by(Operator.name))
    return [OperatorRow(o.name, o.display_name, o.contact, o.active) for o in rows]


async def endpoints(s: AsyncSession, site: str) -> list[OperatorEndpoint]:
    rows = await s.scalars(select(Operator).where(Operator.site == site, Operator.active.is_(True))
                           .order_by(Operator.name))
    return [OperatorEndpoint(o.name, md5_cred=o.sip_md5, display_name=o.display_name,
                             contact=o.contact) for o in rows]


async def endpoints_from_db(site: Site, var_dir: Path) -> list[OperatorEndpoint]:
    engine = make_engine(database_url(var_dir))
    try:
        async with sessions(engine)() as s:
            return await endpoints(s, site.code)
    except Exception as exc:  # a fresh system without migrations still renders
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return []
        raise
    finally:
        await engine.dispose()


async def apply_live(site: Site, var_dir: Path, s: AsyncSession) -> tuple[list[str], bool]:
    """Make the running system follow the database after a change: the PJSIP endpoints and the
    fallback's list (rewritten, Asterisk reloaded) and the app's roster (told at once).
    Returns what was done, one line each, and False if the running Asterisk did not follow."""
    from ari_app.pbx.reload import apply_operators
    from ari_app.running import notify_roster_changed

    eps = await endpoints(s, site.code)
    result = apply_operators(var_dir, eps, tls=site.asterisk.operators_use_tls)
    pid = notify_roster_changed(var_dir, site.stasis_app)
    lines = [result.describe(),
             f"the app (pid {pid}) reloaded its roster" if pid is not None else
             "the app is not running: it reads the roster when it starts"]
    followed = not result.failed
    if site.edge is not None:  # several nodes: the edge registers the phones
        from ari_app.edge.cli import follow_operators
        from ari_app.edge.kamailio import EdgeError

        try:
            edge = follow_operators(site, var_dir, {e.name: e.md5_cred for e in eps})
        except (EdgeError, OSError, subprocess.SubprocessError) as exc:
            edge, followed = f"the edge did NOT follow: {exc}", False
        if edge:
            lines.append(edge)
    return lines, followed
