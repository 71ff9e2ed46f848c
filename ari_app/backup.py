"""`siaga112 backup DIR` and `siaga112 restore DIR`: the database, recordings, secrets and the
local write journal, with a manifest and SHA-256 checksums.

Backup: the database is snapshotted consistently while the app runs (SQLite's online backup
API; ``pg_dump`` in one transaction for PostgreSQL), the journal files the same way as SQLite,
recordings and secrets copied. Everything is written into ``DIR.partial`` and renamed to ``DIR``
at the end, so a failed backup leaves no directory that looks complete. The directory is 0700
(it holds secrets).

Restore (a fresh machine): every checksum is verified before anything is written; the target
must be fresh (no tickets in its database, no secret that differs); then the database is
restored, migrated to the current schema, recordings and secrets put back under the new var
directory (recording paths on tickets follow), and the row counts compared with the manifest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, make_url, select, text

from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import (
    AdminAudit,
    CallRecord,
    LocationRecord,
    Notification,
    Ticket,
    TicketAudit,
    User,
)

log = logging.getLogger(__name__)

FORMAT = 1
COUNTED = {"tickets": Ticket, "ticket_audit": TicketAudit, "locations": LocationRecord,
           "calls": CallRecord, "notifications": Notification, "users": User,
           "admin_audit": AdminAudit}
RECORDINGS = Path("asterisk") / "spool" / "recording"


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class Database:
    url: str          # the app's async URL

    @property
    def kind(self) -> str:
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"

    @property
    def sqlite_path(self) -> Path:
        database = make_url(self.url).database
        if not database:
            raise BackupError(f"{self.url}: expected a SQLite file path")
        return Path(database)

    @property
    def libpq_url(self) -> str:
        """The URL pg_dump/pg_restore understand (no +asyncpg driver)."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _sqlite_copy(src: Path, dst: Path) -> None:
    """SQLite's online backup: a consistent copy even while the app writes (WAL included)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")


async def _counts(db: Database) -> dict[str, int]:
    engine = make_engine(db.url)
    try:
        async with sessions(engine)() as s:
            return {name: int(await s.scalar(select(func.count()).select_from(model)) or 0)
                    for name, model in COUNTED.items()}
    finally:
        await engine.dispose()


async def _revision(db: Database) -> str:
    engine = make_engine(db.url)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar())
    finally:
        await engine.dispose()


def _copy_tree(src: Path, dst: Path, files: dict[str, dict[str, Any]], root: Path) -> None:
    if not src.is_dir():
        return
    for path in sorted(src.rglob("*")):
        if path.is_file() and not path.name.endswith((".tmp", ".partial")):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            files[str(target.relative_to(root))] = {"sha256": sha256_file(target),
                                                   "size": target.stat().st_size}


def backup(target: Path, var_dir: Path, database_url: str) -> dict[str, Any]:
    """Write a complete backup into ``target`` (which must not exist); returns the manifest."""
    db = Database(database_url)
    target = target.resolve()
    if target.exists():
        raise BackupError(f"{target}: already exists; a backup goes into a new directory")
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by a backup that failed half-way: never a valid one
    partial.mkdir(parents=True, mode=0o700)
    try:
        files: dict[str, dict[str, Any]] = {}
        counts = asyncio.run(_counts(db))
        revision = asyncio.run(_revision(db))
        if db.kind == "sqlite":
            dump = partial / "database.sqlite"
            _sqlite_copy(db.sqlite_path, dump)
        else:
            dump = partial / "database.pgdump"
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                  "--file", str(dump), db.libpq_url], "pg_dump")
        files[dump.name] = {"sha256": sha256_file(dump), "size": dump.stat().st_size}
        journal = var_dir / "journal"
        if journal.is_dir():
            (partial / "journal").mkdir()
            for j in sorted(journal.glob("*.db")):
                out = partial / "journal" / j.name
                _sqlite_copy(j, out)
                files[f"journal/{j.name}"] = {"sha256": sha256_file(out), "size": out.stat().st_size}
        _copy_tree(var_dir / RECORDINGS, partial / "recordings", files, partial)
        _copy_tree(var_dir / "secrets", partial / "secrets", files, partial)
        if (partial / "secrets").is_dir():
            os.chmod(partial / "secrets", 0o700)
            for p in (partial / "secrets").iterdir():
                os.chmod(p, 0o600)
        manifest = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(),
                    "database": db.kind, "schema_revision": revision,
                    "var_dir": str(var_dir.resolve()), "counts": counts, "files": files}
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        (partial / "SHA256SUMS").write_text("".join(f"{v['sha256']}  {k}\n"
                                                    for k, v in sorted(files.items())))
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("backup in %s: %s", target, counts)
    return manifest


def verify(source: Path) -> dict[str, Any]:
    """The manifest, after checking that every file it lists is there with its checksum."""
    try:
        manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    except FileNotFoundError:
        raise BackupError(f"{source}/manifest.json: missing (not a siaga112 backup, or not "
                          "finished)") from None
    except ValueError as exc:
        raise BackupError(f"{source}/manifest.json: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}/manifest.json: format: expected {FORMAT}, "
                          f"got {manifest.get('format')!r}")
    for rel, info in manifest["files"].items():
        path = source / rel
        if not path.is_file():
            raise BackupError(f"{path}: listed in the manifest but missing")
        if sha256_file(path) != info["sha256"]:
            raise BackupError(f"{path}: checksum does not match the manifest (damaged or altered)")
    return manifest


async def _target_is_fresh(db: Database) -> None:
    engine = make_engine(db.url)
    try:
        async with sessions(engine)() as s:
            n = await s.scalar(select(func.count()).select_from(Ticket))
    except Exception as exc:  # no tables yet: as fresh as it gets
        if "no such table" in str(exc) or "does not exist" in str(exc):
            return
        raise
    finally:
        await engine.dispose()
    if n:
        raise BackupError(f"the target database already has {n} ticket(s): restore goes onto a "
                          "fresh machine (an empty database), nothing was changed")


async def _move_recording_paths(db: Database, old_root: str, new_root: str) -> int:
    if old_root == new_root:
        return 0
    engine = make_engine(db.url)
    moved = 0
    try:
        async with sessions(engine)() as s, s.begin():
            for t in await s.scalars(select(Ticket).where(Ticket.recording_path.is_not(None))):
                path = t.recording_path or ""
                if path.startswith(old_root + "/"):
                    t.recording_path = new_root + path[len(old_root):]
                    moved += 1
    finally:
        await engine.dispose()
    return moved


def restore(source: Path, var_dir: Path, database_url: str) -> dict[str, Any]:
    """Bring a fresh machine back from ``source``; returns the manifest (refuses before writing)."""
    from ari_app.tickets.migrate import upgrade

    db = Database(database_url)
    source, var_dir = source.resolve(), var_dir.resolve()
    manifest = verify(source)
    if manifest["database"] != db.kind:
        raise BackupError(f"the backup holds a {manifest['database']} database but DATABASE_URL "
                          f"is {db.kind}: restore onto the same kind")
    asyncio.run(_target_is_fresh(db))
    secrets_src = source / "secrets"
    if secrets_src.is_dir():
        for p in secrets_src.iterdir():
            existing = var_dir / "secrets" / p.name
            if existing.exists() and existing.read_bytes() != p.read_bytes():
                raise BackupError(f"{existing}: exists with a different value; restore goes onto "
                                  "a fresh machine, nothing was changed")
    var_dir.mkdir(parents=True, exist_ok=True)
    if db.kind == "sqlite":
        path = db.sqlite_path
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        _sqlite_copy(source / "database.sqlite", path)
    else:
        _run(["pg_restore", "--no-owner", "--no-privileges", "--clean", "--if-exists",
              "--exit-on-error", "--single-transaction", "--dbname", db.libpq_url,
              str(source / "database.pgdump")], "pg_restore")
    upgrade(db.url)
    if (source / "journal").is_dir():
        (var_dir / "journal").mkdir(parents=True, exist_ok=True)
        for j in (source / "journal").glob("*.db"):
            _sqlite_copy(j, var_dir / "journal" / j.name)
    if (source / "recordings").is_dir():
        shutil.copytree(source / "recordings", var_dir / RECORDINGS, dirs_exist_ok=True)
    if secrets_src.is_dir():
        (var_dir / "secrets").mkdir(parents=True, exist_ok=True)
        os.chmod(var_dir / "secrets", 0o700)
        for p in secrets_src.iterdir():
            out = var_dir / "secrets" / p.name
            shutil.copyfile(p, out)
            os.chmod(out, 0o600)
    old_root = str(Path(manifest["var_dir"]) / RECORDINGS)
    asyncio.run(_move_recording_paths(db, old_root, str(var_dir / RECORDINGS)))
    counts = asyncio.run(_counts(db))
    if counts != manifest["counts"]:
        raise BackupError(f"restored, but the row counts differ from the backup: {counts} != "
                          f"{manifest['counts']}")
    log.info("restored %s into %s: %s", source, var_dir, counts)
    return manifest
