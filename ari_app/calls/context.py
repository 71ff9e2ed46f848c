"""What every call's coroutine can reach: site, clock, services. No SQL here."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ari_app.ari import AriClient
from ari_app.calls.registry import CallRegistry
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import LiveBus
from ari_app.location.service import LocationService
from ari_app.pbx.cel import CelRecord
from ari_app.routing.queue import WaitingQueue
from ari_app.routing.roster import Roster
from ari_app.tickets.calls import CallStore
from ari_app.tickets.service import TicketService


@dataclass
class CallContext:
    site: Site
    sounds_dir: Path
    recordings_dir: Path
    clock: Clock
    calls: CallStore
    tickets: TicketService
    ari: AriClient
    registry: CallRegistry
    roster: Roster
    queue: WaitingQueue
    live: LiveBus
    locations: LocationService
    holding_bridge: str = ""
    cel: CelRecord | None = None  # Asterisk's own record: what happened while no app watched
    links: dict[str, Any] = field(default_factory=dict)  # caller id → its Connected, while bridged

    def together(self) -> AbstractContextManager[None]:
        """The call's writes in the block (no await inside) share one journal commit."""
        return self.tickets.writer.together()

    def sound(self, name: str, language: str | None = None) -> str:
        lang = language or self.site.languages[0]
        return f"sound:{self.sounds_dir / lang / name}"
