"""The one shape every location takes once parsed, and the one error every parser raises.

A parser either returns a :class:`Location` (possibly one that says "no location", which is
stored like any other) or raises :class:`LocationParseError` with a reason an operator or an
admin can act on. The raw input travels with both, so a rejection is stored with its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

SOURCES = ("aml-sms", "aml-https", "pidf", "cell", "manual")

# How the position was obtained, reduced to what a console needs to show.
METHODS = ("GNSS", "WiFi", "Cell", "Fused", "Manual", "Network", "Unknown", "None")


class LocationParseError(ValueError):
    """Input that is not a location we accept; ``reason`` says exactly why."""

    def __init__(self, reason: str, raw: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


@dataclass(frozen=True, kw_only=True)
class Location:
    """A caller location from any source, with the raw message it came from.

    Coordinates are WGS84 decimal degrees; distances are metres; times are aware UTC.
    ``method == "None"`` with no coordinates is the handset saying it has no fix: it is kept.
    """

    source: str
    raw: str
    latitude: float | None = None
    longitude: float | None = None
    radius_m: float | None = None
    confidence_pct: float | None = None
    method: str | None = None
    fix_time: datetime | None = None
    caller_number: str | None = None
    imei: str | None = None
    imsi: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    # A dict is what callers want to read; it is left out of the hash so the object stays hashable.
    civic: dict[str, str] | None = field(default=None, hash=False)
    warnings: tuple[str, ...] = ()
    altitude_m: float | None = None
    vertical_accuracy_m: float | None = None
    floor: str | None = None
    emergency_number: str | None = None
    call_time: datetime | None = None
    home_mcc: str | None = None
    home_mnc: str | None = None
    device_model: str | None = None
    language: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {'/'.join(SOURCES)}, got {self.source!r}")
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method must be one of {'/'.join(METHODS)}, got {self.method!r}")
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude must be given together")
        if self.latitude is not None and not -90.0 <= self.latitude <= 90.0:
            raise ValueError(f"latitude out of range -90..90: {self.latitude}")
        if self.longitude is not None and not -180.0 <= self.longitude <= 180.0:
            raise ValueError(f"longitude out of range -180..180: {self.longitude}")
        for name in ("fix_time", "call_time"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() != timedelta(0):
                raise ValueError(f"{name} must be an aware UTC datetime, got {value!r}")

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    @property
    def has_location(self) -> bool:
        """True when there is something to send a responder to: coordinates or an address."""
        return self.has_coordinates or bool(self.civic)

    def age(self, now: datetime) -> timedelta | None:
        """How old the fix is at ``now`` (aware), for the console's "age" column."""
        return None if self.fix_time is None else now - self.fix_time
