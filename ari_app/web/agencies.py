"""Agencies per site, seeded from config/agencies/<site>.toml; webhook secrets live in var/secrets."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.config import PROJECT_ROOT, ConfigError, is_email_address, is_http_url
from ari_app.secrets import secret
from ari_app.tickets.models import Agency

AGENCIES_DIR = PROJECT_ROOT / "config" / "agencies"
KEYS = {"code", "name", "phone", "webhook_url", "email"}


@dataclass(frozen=True)
class AgencyConfig:
    code: str
    name: str
    phone: str = ""
    webhook_url: str = ""
    email: str = ""


def load_agencies(site_code: str, directory: Path = AGENCIES_DIR) -> list[AgencyConfig]:
    path = directory / f"{site_code}.toml"
    file = str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(file)", "valid TOML", str(exc)) from None
    unknown = set(data) - {"agency"}
    if unknown:
        raise ConfigError(file, sorted(unknown)[0], "only [[agency]] tables", "an unknown key")
    result: list[AgencyConfig] = []
    for i, entry in enumerate(data.get("agency", [])):
        where = f"agency[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(file, where, "a table", entry)
        extra = set(entry) - KEYS
        if extra:
            raise ConfigError(file, f"{where}.{sorted(extra)[0]}", f"one of {sorted(KEYS)}",
                              "an unknown key")
        for key in KEYS:
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(file, f"{where}.{key}", "a string", entry[key])
        code = entry.get("code", "")
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{1,31}", code):
            raise ConfigError(file, f"{where}.code", "an upper-case agency code", code)
        url = entry.get("webhook_url", "")
        if url and not is_http_url(url):
            raise ConfigError(file, f"{where}.webhook_url", "an http(s) URL", url)
        email = entry.get("email", "")
        if email and not is_email_address(email):
            raise ConfigError(file, f"{where}.email", "an e-mail address like damkar@jeparakab.go.id",
                              email)
        if not entry.get("name"):
            raise ConfigError(file, f"{where}.name", "a name", None, missing=True)
        result.append(AgencyConfig(code=code, name=entry["name"], phone=entry.get("phone", ""),
                                   webhook_url=url, email=email))
    return result


async def seed_agencies(s: AsyncSession, site_code: str, var_dir: Path,
                        configs: list[AgencyConfig] | None = None) -> int:
    """Insert missing agencies, refresh names/phones; keep a webhook URL set later by an admin."""
    configs = load_agencies(site_code) if configs is None else configs
    existing = {a.code: a for a in await s.scalars(select(Agency).where(Agency.site == site_code))}
    added = 0
    for c in configs:
        agency = existing.get(c.code)
        if agency is None:
            s.add(Agency(site=site_code, code=c.code, name=c.name, phone=c.phone,
                         webhook_url=c.webhook_url, email=c.email, active=True,
                         webhook_secret=secret(var_dir, f"agency-{site_code}-{c.code}.webhook", 32)))
            added += 1
            continue
        agency.name, agency.phone = c.name, c.phone
        if c.webhook_url:
            agency.webhook_url = c.webhook_url
        if c.email:
            agency.email = c.email
    await s.flush()
    return added


async def public_url_problem(s: AsyncSession, site_code: str, public_url: str | None) -> str | None:
    """Why agency links would be wrong, or None: once an agency gets notifications (a webhook
    or an e-mail address), their acknowledge/resolve links need web.public_url."""
    if public_url:
        return None
    rows = list(await s.scalars(select(Agency.code).where(
        Agency.site == site_code, Agency.active.is_(True),
        (Agency.webhook_url != "") | (Agency.email != "")).order_by(Agency.code)))
    if not rows:
        return None
    return (f"web.public_url is not set, but agencies {', '.join(rows)} get notifications: their "
            "acknowledge links would point at this server's own address. Set web.public_url "
            "(e.g. https://112.jeparakab.go.id) in the site file")
