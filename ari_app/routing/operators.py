"""Operators and shifts: tables, CLI services, and the PJSIP endpoints rendered from them."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.admin_audit import cli_actor, record_admin_change
from ari_app.config import Site
from ari_app.pbx.render import OperatorEndpoint
from ari_app.tickets.db import database_url, make_engine, sessions
from ari_app.tickets.models import Operator, Shift

REALM = "asterisk"
NAME = re.compile(r"[a-z][a-z0-9_]{1,30}")


class OperatorError(ValueError):
    pass


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
    await record_admin_change(s, actor=cli_actor(), entity="operator", key=name, action="added",
                              before=None, after={"display_name": display_name, "contact": contact,
                                                  "site": site.code}, at=at)
    return password


async def add_shift(s: AsyncSession, name: str, starts_at: datetime, ends_at: datetime) -> Shift:
    if ends_at <= starts_at:
        raise OperatorError(f"shift: end {ends_at.isoformat()} is not after start {starts_at.isoformat()}")
    op_id = await s.scalar(select(Operator.id).where(Operator.name == name))
    if op_id is None:
        raise OperatorError(f"no operator named {name!r}")
    shift = Shift(operator_id=op_id, starts_at=starts_at, ends_at=ends_at)
    s.add(shift)
    await s.flush()
    await record_admin_change(s, actor=cli_actor(), entity="shift", key=str(shift.id), action="added",
                              before=None, after={"operator": name, "starts_at": starts_at,
                                                  "ends_at": ends_at})
    return shift


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
