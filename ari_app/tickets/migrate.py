"""`siaga112 db upgrade`: alembic, driven from code so no alembic.ini is needed."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from ari_app.config import PROJECT_ROOT


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking; from async code run it in a thread (alembic's env.py runs its own loop)."""
    command.upgrade(alembic_config(url), revision)
