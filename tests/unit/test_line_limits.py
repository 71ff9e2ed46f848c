"""The 112 context's own caller limit, rendered below Asterisk's maxcalls (issue 18)."""

from __future__ import annotations

import pytest

from ari_app.pbx.render import RenderError, line_limits


def test_the_dialplan_limit_defaults_below_maxcalls_and_can_be_set() -> None:
    assert line_limits({}) == (400, 360)
    assert line_limits({"SIAGA112_MAXCALLS": "50"}) == (50, 45)
    assert line_limits({"SIAGA112_MAXCALLS": "5"}) == (5, 4)
    assert line_limits({"SIAGA112_MAX_CALLERS": "2"}) == (400, 2)
    assert line_limits({"SIAGA112_MAXCALLS": "0", "SIAGA112_MAX_CALLERS": "700"}) == (0, 700)


@pytest.mark.parametrize("env", [
    {"SIAGA112_MAX_CALLERS": "400"},  # Asterisk would refuse first, leaving no record
    {"SIAGA112_MAXCALLS": "10", "SIAGA112_MAX_CALLERS": "12"},
    {"SIAGA112_MAX_CALLERS": "0"},
    {"SIAGA112_MAX_CALLERS": "many"},
])
def test_a_dialplan_limit_asterisk_would_never_let_us_reach_is_refused(
        env: dict[str, str]) -> None:
    with pytest.raises(RenderError, match="SIAGA112_MAX"):
        line_limits(env)
