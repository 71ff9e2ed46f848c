"""Secrets generated at setup/render time, kept under var/secrets with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def secret(var_dir: Path, name: str, nbytes: int = 24) -> str:
    """Return the named secret, creating it (0600) on first use. Never a default value."""
    directory = var_dir / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / name
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def save_given_secret(path: Path, value: str) -> None:
    """Keep a secret an admin typed (SMTP password, WhatsApp app secret): 0600 in a 0700 dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
