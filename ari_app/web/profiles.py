"""A console user's language and the SIP operator they take calls as."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.console_models import ConsoleProfile
from ari_app.tickets.models import Operator, User
from ari_app.web.i18n import LANGS


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    lang: str | None = None
    operator: str | None = None


async def profile_of(s: AsyncSession, user_id: int) -> Profile:
    row = await s.get(ConsoleProfile, user_id)
    return Profile(row.lang, row.operator_name) if row is not None else Profile()


async def _row(s: AsyncSession, username: str) -> ConsoleProfile:
    user_id = await s.scalar(select(User.id).where(User.username == username))
    if user_id is None:
        raise ProfileError(f"no user {username!r}")
    row = await s.get(ConsoleProfile, user_id)
    if row is None:
        row = ConsoleProfile(user_id=user_id)
        s.add(row)
    return row


async def set_lang(s: AsyncSession, username: str, lang: str) -> None:
    if lang not in LANGS:
        raise ProfileError(f"language: expected one of {', '.join(LANGS)}, got {lang!r}")
    (await _row(s, username)).lang = lang


async def link_operator(s: AsyncSession, username: str, operator: str | None) -> None:
    """Tie a console user to a SIP operator (None unlinks). One user per operator."""
    row = await _row(s, username)
    if operator is not None:
        if await s.scalar(select(Operator.id).where(Operator.name == operator)) is None:
            raise ProfileError(f"operator: no operator named {operator!r}")
        holder = await s.scalar(select(User.username).join(
            ConsoleProfile, ConsoleProfile.user_id == User.id)
            .where(ConsoleProfile.operator_name == operator, User.username != username))
        if holder is not None:
            raise ProfileError(f"operator {operator!r} is already linked to user {holder!r}")
    row.operator_name = operator
