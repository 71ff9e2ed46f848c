"""`python -m bench run --target`: names, groups and comma lists, and a clear error otherwise."""

from __future__ import annotations

import argparse

import pytest

from bench.__main__ import parse, parse_targets
from bench.stack import SERVICES


def test_groups_expand_in_order_and_each_target_runs_once() -> None:
    assert parse_targets("both") == ["app", "twin"]
    assert parse_targets("all") == list(SERVICES)
    assert parse_targets("app,twin-full") == ["app", "twin-full"]
    assert parse_targets("twin, both ,twin") == ["twin", "app"]


def test_the_default_is_the_app_beside_the_plain_twin() -> None:
    assert parse(["run"]).target == ["app", "twin"]


@pytest.mark.parametrize("text", ["", "app,", "twins", "app,nope"])
def test_an_unknown_target_is_refused_with_the_choices(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown target .*choose from app, "
                       r"twin, twin-human, twin-full, both, all"):
        parse_targets(text)
