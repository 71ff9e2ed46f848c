"""Shared fixtures: prompts, databases (SQLite and, where given, PostgreSQL), private Asterisk."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ari_app.config import Site, load_site
from ari_app.prompts import build as build_prompts
from ari_app.tickets.migrate import upgrade

PG_URL = os.environ.get("SIAGA112_TEST_POSTGRES_URL", "")
# The backends the `db_url` tests run on: SQLite always, PostgreSQL when its URL is given.
# SIAGA112_TEST_DB_BACKENDS=sqlite narrows them (CI's second Asterisk run: what a test does with
# PostgreSQL does not depend on the Asterisk, and it already ran on the first). Tests that need
# PostgreSQL itself (outage, shared queue, backup) still use PG_URL.
_WANTED = os.environ.get("SIAGA112_TEST_DB_BACKENDS", "sqlite,postgresql").split(",")
BACKENDS = [b for b in ["sqlite"] + (["postgresql"] if PG_URL else []) if b in _WANTED]
if not BACKENDS:
    raise pytest.UsageError(f"SIAGA112_TEST_DB_BACKENDS={','.join(_WANTED)!r}: no backend to run "
                            "on (sqlite, postgresql with SIAGA112_TEST_POSTGRES_URL)")


def pytest_report_header(config: pytest.Config) -> str:
    """Say which Asterisk this run's integration tests start (SIAGA112_ASTERISK & co)."""
    from ari_app.pbx.installation import InstallationError, installation

    try:
        return f"asterisk: {installation().describe()}"
    except InstallationError as exc:
        return f"asterisk: none usable ({exc})"


@pytest.fixture(scope="session")
def sounds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompts built once per run with the real espeak-ng and sox."""
    path = tmp_path_factory.mktemp("sounds")
    build_prompts(path)
    return path


@pytest.fixture
def var_dir(tmp_path: Path, sounds_dir: Path) -> Path:
    var = tmp_path / "var"
    var.mkdir()
    (var / "sounds").symlink_to(sounds_dir)
    return var


async def _create_pg_database() -> str:
    import asyncpg

    name = "siaga_test_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def _drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database on each backend in use (SQLite always; PostgreSQL in CI)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/siaga112.db"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    raw = await _create_pg_database()
    url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await _drop_pg_database(raw)


@pytest.fixture
def jepara() -> Site:
    return load_site("jepara")


@pytest.fixture
def batola() -> Site:
    return load_site("batola")


@pytest.fixture
def cleanup() -> Iterator[Callable[[Callable[[], Any]], None]]:
    """Register teardown steps that run even when the test fails (last registered, first run)."""
    steps: list[Callable[[], Any]] = []
    yield steps.append
    for step in reversed(steps):
        step()


@pytest.fixture(autouse=True)
async def no_task_ignores_cancel() -> AsyncIterator[None]:
    """After every test (its fixtures torn down first): the tasks it left behind are cancelled
    here, and one that does not end within 5 s fails the test with its name and stack.

    pytest-asyncio cancels leftovers when it closes the loop, and waits for them without a
    limit: a task that swallows its cancellation (3.11's wait_for can) hung a CI run with no
    name. The app's own stop would hang the same way, so it is a bug, shown here."""
    import sys

    yield
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in left:
        task.cancel()
    if not left:
        return
    _, pending = await asyncio.wait(left, timeout=5)
    for task in pending:
        print(f"task {task.get_name()} ignored its cancellation:", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    assert not pending, f"tasks that ignore cancellation: {[t.get_name() for t in pending]}"
