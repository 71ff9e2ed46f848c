"""Time, injectable: tests set the wall clock (e.g. 22:00 WIB) instead of waiting for it."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock time, optionally shifted so that 'now' starts at a chosen instant."""

    def __init__(self, start_at: datetime | None = None) -> None:
        self._offset = 0.0
        if start_at is not None:
            if start_at.tzinfo is None:
                raise ValueError("the injected start time must carry a UTC offset")
            self._offset = start_at.timestamp() - time.time()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (tests and drills), as if that much time had passed."""
        self._offset += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self._offset, UTC)

    def at(self, epoch: float) -> datetime:
        """A real instant (e.g. from Asterisk's record) on this clock."""
        return datetime.fromtimestamp(epoch + self._offset, UTC)

    @classmethod
    def from_env(cls) -> Clock:
        """``SIAGA112_FAKE_TIME=2025-05-19T22:00:00+07:00`` starts the clock at that instant."""
        raw = os.environ.get("SIAGA112_FAKE_TIME")
        if not raw:
            return cls()
        try:
            start = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                f"SIAGA112_FAKE_TIME: expected an ISO time with offset, got {raw!r}") from None
        return cls(start)
