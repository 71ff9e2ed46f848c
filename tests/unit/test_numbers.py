"""Caller numbers in the one form that lets an AML message find its call."""

from __future__ import annotations

import pytest

from ari_app.location.numbers import InvalidNumber, normalise_msisdn


@pytest.mark.parametrize(
    "written",
    [
        "+6281234567890",
        "6281234567890",
        "081234567890",
        "81234567890",
        "+62 812-3456-7890",
        "0812 3456 7890",
        "0812.3456.7890",
        "+62 (0)812 3456 7890",
        "006281234567890",
        "tel:+6281234567890",
        "sip:081234567890@ims.operator.example;user=phone",
    ],
)
def test_every_way_of_writing_an_indonesian_mobile_gives_one_number(written: str) -> None:
    assert normalise_msisdn(written) == "+6281234567890"


def test_jepara_landline_with_area_code() -> None:
    assert normalise_msisdn("(0291) 591234") == "+62291591234"


@pytest.mark.parametrize("short_code", ["112", "110", "113", "118", "119", "129", "1500"])
def test_emergency_and_service_short_codes_stay_as_they_are(short_code: str) -> None:
    assert normalise_msisdn(short_code) == short_code


def test_foreign_roamer_keeps_their_country_code() -> None:
    assert normalise_msisdn("+44 7477 593102") == "+447477593102"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("", "caller number is empty"),
        ("   ", "caller number is empty"),
        ("anonymous", "caller number is withheld ('anonymous')"),
        ("Anonymous", "caller number is withheld ('Anonymous')"),
        ("sip:anonymous@anonymous.invalid", "caller number is withheld ('anonymous')"),
        (
            "0812-ABC-789",
            "'0812-ABC-789' contains 'A': only digits, spaces, dashes, dots, parentheses and a "
            "leading + are allowed",
        ),
        ("0812", "'0812' leaves 3 digits after the 62/0 prefix; Indonesian numbers have 7-12"),
        ("12", "'12' is too short to be a number or a short code"),
        ("2912345678", "cannot tell whether '2912345678' is Indonesian: expected +62..., 62..., "
         "0... or 8..."),
        ("+0123456789", "'+0123456789': a country code cannot start with 0"),
    ],
)
def test_unusable_caller_numbers_are_rejected_with_the_reason(written: str, reason: str) -> None:
    with pytest.raises(InvalidNumber) as caught:
        normalise_msisdn(written)
    assert str(caught.value) == reason


def test_invalid_number_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalise_msisdn("call me maybe")
