"""The fallback's Dial() stays within what Asterisk's app_dial can watch at once."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from ari_app.pbx import agi_query
from ari_app.pbx.agi_query import FALLBACK_RING_MAX, fallback_dial
from ari_app.pbx.render import AGI_DIR


def test_the_dial_string_names_each_operator_once_up_to_the_cap() -> None:
    assert fallback_dial(["op1", "op2"]) == "PJSIP/op1&PJSIP/op2"
    names = [f"op{n:03d}" for n in range(400)]
    rung = fallback_dial(names).split("&")
    assert len(rung) == FALLBACK_RING_MAX < 256  # app_dial's AST_MAX_WATCHERS, caller included
    assert rung[0] == "PJSIP/op000" and len(set(rung)) == len(rung)


def test_on_duty_operators_are_rung_within_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("fallback_log", AGI_DIR / "fallback_log.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def four_hundred_on_shift(*_: Any) -> list[tuple[str]]:
        return [(f"op{n:03d}",) for n in range(400)]

    monkeypatch.setattr(agi_query, "query", four_hundred_on_shift)
    dial = script.on_duty_dial({"database_url": "sqlite:///x.db", "site": "jepara"})
    assert dial.count("PJSIP/") == FALLBACK_RING_MAX
