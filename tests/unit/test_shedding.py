"""Shedding new callers while ARI is slow: the round-trip figures and the decision (pure logic;
the call path itself is tests/integration/test_overload.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ari_app.ari.errors import Unavailable
from ari_app.ari.latency import RoundTrips
from ari_app.config import SITES_DIR, ConfigError, load_site
from ari_app.routing.shedding import SHED_VARIABLE, Shedder, ShedPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def burst(trips: RoundTrips, clock: Clock, count: int, seconds: float) -> None:
    """``count`` requests sent together, each answered after ``seconds``."""
    tokens = [trips.started() for _ in range(count)]
    clock.now += seconds
    for token in tokens:
        trips.ended(token)


def trips_with(clock: Clock, durations: list[float]) -> RoundTrips:
    trips = RoundTrips(window_s=5.0, clock=clock)
    for seconds in sorted(set(durations)):
        burst(trips, clock, durations.count(seconds), seconds)
    return trips


def test_the_90th_percentile_is_of_the_window_only() -> None:
    clock = Clock()
    trips = trips_with(clock, [0.01] * 9 + [3.0])
    p90, count = trips.percentile(0.9)
    assert p90 == pytest.approx(0.01) and count == 10  # one slow request in ten is not the p90
    trips = trips_with(clock, [0.01] * 8 + [3.0, 3.0])
    assert trips.percentile(0.9)[0] == 3.0
    clock.now += 5.1  # all of them older than the window now
    assert trips.percentile(0.9) == (0.0, 0)


def test_a_request_still_open_counts_with_its_age() -> None:
    clock = Clock()
    trips = trips_with(clock, [0.02] * 3)
    trips.started()
    clock.now += 4.0
    assert max(trips.samples()) == pytest.approx(4.0)
    assert len(trips.samples()) == 4


class FakeAri:
    """Records what the shedder tells Asterisk; can refuse like an Asterisk going away."""

    def __init__(self, trips: RoundTrips) -> None:
        self.round_trips = trips
        self.told: list[dict[str, Any]] = []
        self.refuse = False

    async def post(self, *path: str, **params: Any) -> None:
        if self.refuse:
            raise Unavailable("POST", "/".join(path), 503, "going away")
        self.told.append({"path": path, **params})


def shedder(ari: FakeAri) -> Shedder:
    return Shedder(ari,  # type: ignore[arg-type]
                   ShedPolicy(above_s=2.0, below_s=0.5, min_samples=5, hold_s=5.0),
                   wall=lambda: 1_765_000_000.0)


async def test_slow_ari_turns_shedding_on_renews_it_and_turns_it_off_when_fast_again() -> None:
    clock = Clock()
    trips = trips_with(clock, [0.02] * 10)
    ari = FakeAri(trips)
    shed = shedder(ari)
    await shed.tick()
    assert not shed.shedding and ari.told == []  # nothing to say while fast
    burst(trips, clock, 10, 2.5)
    await shed.tick()
    assert shed.shedding and shed.turned_on == 1
    assert ari.told[-1] == {"path": ("asterisk", "variable"), "variable": SHED_VARIABLE,
                            "value": "1765000005"}
    await shed.tick()  # still slow: the deadline is renewed, not left to lapse
    assert len(ari.told) == 2 and shed.shedding
    # between the two figures: stays on (no flapping on every tick)
    clock.now += 6
    burst(trips, clock, 10, 0.8)
    await shed.tick()
    assert shed.shedding
    clock.now += 6
    burst(trips, clock, 10, 0.03)
    await shed.tick()
    assert not shed.shedding and ari.told[-1]["value"] == "0"
    await shed.tick()
    assert len(ari.told) == 4  # off: nothing more to say
    assert shed.turned_on == 1


async def test_a_few_slow_requests_are_not_a_trend() -> None:
    clock = Clock()
    ari = FakeAri(trips_with(clock, [3.0] * 4))
    shed = shedder(ari)
    await shed.tick()
    assert not shed.shedding and ari.told == []


async def test_shedding_ends_when_nothing_is_measured_any_more() -> None:
    clock = Clock()
    ari = FakeAri(trips_with(clock, [3.0] * 6))
    shed = shedder(ari)
    await shed.tick()
    assert shed.shedding
    clock.now += 10  # every call ended: no request open, none in the window
    await shed.tick()
    assert not shed.shedding and ari.told[-1]["value"] == "0"


async def test_asterisk_refusing_the_word_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    ari = FakeAri(trips_with(clock, [3.0] * 6))
    ari.refuse = True
    shed = shedder(ari)
    await shed.tick()
    assert shed.shedding
    assert f"could not set {SHED_VARIABLE}" in caplog.text


def test_the_site_file_sets_the_figures_and_refuses_a_resume_above_the_limit(
    tmp_path: Path,
) -> None:
    shipped = "shed_when_ari_p90_ms = 2000\nresume_when_ari_p90_ms = 500\n"

    def site_with(queue: str) -> Path:
        text = (SITES_DIR / "jepara.toml").read_text()
        assert shipped in text  # what an admin finds in the site file, to change
        path = tmp_path / "site.toml"
        path.write_text(text.replace(shipped, queue, 1))
        return path

    assert load_site(SITES_DIR / "jepara.toml").queue.shed_when_ari_p90_ms == 2000

    site = load_site(site_with("shed_when_ari_p90_ms = 1500\nresume_when_ari_p90_ms = 300\n"))
    assert (site.queue.shed_when_ari_p90_ms, site.queue.resume_when_ari_p90_ms) == (1500, 300)
    assert load_site(site_with("shed_when_ari_p90_ms = 0\n")).queue.shed_when_ari_p90_ms == 0
    with pytest.raises(ConfigError, match=r"queue\.resume_when_ari_p90_ms: expected a figure "
                                          r"below queue\.shed_when_ari_p90_ms"):
        load_site(site_with("shed_when_ari_p90_ms = 500\nresume_when_ari_p90_ms = 800\n"))
