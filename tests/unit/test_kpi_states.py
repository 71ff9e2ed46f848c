"""Time per operator state for a site-local day, from the audited changes (pure logic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from ari_app.web.kpi_states import Change, day_report, hms, minus, operator_day, union, within

WIB = ZoneInfo("Asia/Jakarta")     # Jepara, UTC+7
WITA = ZoneInfo("Asia/Makassar")   # Batola, UTC+8
DAY = date(2025, 5, 19)
LATER = datetime(2030, 1, 1, tzinfo=UTC)


def wib(hh: int, mm: int = 0, ss: int = 0, day: int = 19) -> datetime:
    return datetime(2025, 5, day, hh, mm, ss, tzinfo=WIB)


def only(report: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in report.items() if v}


def test_a_day_of_ready_break_a_call_a_timed_wrap_up_and_a_meeting_open_at_midnight() -> None:
    changes = [Change(wib(8), "ready"),
               Change(wib(10), "not_ready", "break"),
               Change(wib(10, 30), "ready"),
               # after the 11:00-11:50 call: 15 s of wrap-up, then ready with no row written
               Change(wib(11, 50), "wrap_up", until=wib(11, 50, 15)),
               Change(wib(14), "not_ready", "meeting")]    # never closed: counts to midnight
    [day] = day_report({"op1": changes}, {"op1": [(wib(11), wib(11, 50))]}, None, DAY, WIB, LATER)
    assert day.operator == "op1"
    assert only(day.seconds) == {
        "ready": 2 * 3600 + 30 * 60 + (2 * 3600 + 10 * 60 - 15),  # 08-10, 10:30-11, 11:50:15-14
        "not_ready_break": 30 * 60, "wrap_up": 15, "on_call": 50 * 60,
        "not_ready_meeting": 10 * 3600}
    assert day.total == 16 * 3600  # from the first change ever (08:00) to midnight


def test_the_state_from_the_day_before_counts_from_midnight_and_today_stops_at_now() -> None:
    changes = [Change(wib(20, day=18), "not_ready", "training"), Change(wib(7), "ready")]
    [day] = day_report({"op1": changes}, {}, None, DAY, WIB, now=wib(9, 30))
    assert only(day.seconds) == {"not_ready_training": 7 * 3600, "ready": 2.5 * 3600}


def test_day_boundaries_follow_the_sites_zone_wib_and_wita() -> None:
    # one instant, 16:30 UTC: 23:30 WIB on the 19th, but 00:30 WITA on the 20th
    changes = [Change(datetime(2025, 5, 19, 15, 0, tzinfo=UTC), "ready"),
               Change(datetime(2025, 5, 19, 16, 30, tzinfo=UTC), "not_ready", "break")]
    [jepara] = day_report({"op1": changes}, {}, None, DAY, WIB, LATER)
    assert only(jepara.seconds) == {"ready": 1.5 * 3600, "not_ready_break": 0.5 * 3600}
    [batola_19] = day_report({"op1": changes}, {}, None, DAY, WITA, LATER)
    assert only(batola_19.seconds) == {"ready": 3600}  # the 19th WITA ends at 16:00 UTC
    [batola_20] = day_report({"op1": changes}, {}, None, date(2025, 5, 20), WITA, LATER)
    assert only(batola_20.seconds) == {"ready": 0.5 * 3600, "not_ready_break": 23.5 * 3600}
    assert batola_20.total == 24 * 3600


def test_wrap_up_without_an_end_lasts_to_the_next_change_and_ready_pressed_early_ends_it() -> None:
    lo, hi = wib(0), wib(0, day=20)
    untimed = [Change(wib(9), "wrap_up"), Change(wib(9, 5), "ready")]  # a row before 0015
    assert only(operator_day(untimed, [], None, lo, hi)) == {"wrap_up": 300, "ready": 15 * 3600 - 300}
    early = [Change(wib(9), "wrap_up", until=wib(9, 10)), Change(wib(9, 2), "ready")]
    assert only(operator_day(early, [], None, lo, hi))["wrap_up"] == 120


def test_time_outside_the_shifts_is_off_shift_but_a_call_past_the_shift_end_is_on_call() -> None:
    lo, hi = wib(0), wib(0, day=20)
    changes = [Change(wib(6), "ready")]  # ready from 06:00, shift 07:00-15:00
    call = (wib(14, 50), wib(15, 20))
    got = only(operator_day(changes, [call], [(wib(7), wib(15))], lo, hi))
    assert got == {"off_shift": 3600 + (9 * 3600 - 20 * 60),  # 06-07 and 15:20-24:00
                   "ready": 8 * 3600 - 10 * 60, "on_call": 30 * 60}


def test_overlapping_and_midnight_crossing_calls_count_once_within_the_day() -> None:
    lo, hi = wib(0), wib(0, day=20)
    calls = [(wib(23, 50, day=18), wib(0, 10)),  # from the night before: 10 min today
             (wib(12), wib(12, 30)), (wib(12, 20), wib(12, 40)),  # a conference overlap
             (wib(23, 55), wib(0, 5, day=20))]
    got = operator_day([Change(wib(0, day=18), "ready")], calls, None, lo, hi)
    assert got["on_call"] == (10 + 40 + 5) * 60
    assert got["ready"] == 24 * 3600 - got["on_call"]


def test_an_operator_with_calls_but_no_state_change_is_listed_and_a_future_day_is_empty() -> None:
    report = day_report({"op2": [Change(wib(8), "ready")]}, {"op1": [(wib(9), wib(9, 1))]},
                        None, DAY, WIB, LATER)
    assert [(r.operator, only(r.seconds)) for r in report] == [
        ("op1", {"on_call": 60}), ("op2", {"ready": 16 * 3600})]
    [future] = day_report({"op2": [Change(wib(8), "ready")]}, {}, None, DAY, WIB, now=wib(23, day=18))
    assert future.total == 0


def test_span_helpers_and_the_shown_duration() -> None:
    a, b, c, d = wib(1), wib(2), wib(3), wib(4)
    assert union([(c, d), (a, b), (b, c), (d, d)]) == [(a, d)]
    assert within((a, d), [(b, c)]) == [(b, c)]
    assert minus((a, d), [(b, c)]) == [(a, b), (c, d)]
    assert minus((b, c), [(a, d)]) == []
    assert hms(timedelta(hours=10, minutes=2, seconds=3).total_seconds()) == "10:02:03"
    assert hms(59.6) == "0:01:00"
