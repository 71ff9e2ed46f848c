"""Retention's free-text scrubbing: which phone numbers and names it finds, and what it leaves."""

from __future__ import annotations

import json

import pytest

from ari_app.tickets.scrub import MASK, phone_spans, scrub_json, scrub_text


@pytest.mark.parametrize("number", [
    "+62 812-3456-7890", "+6281234567890", "62812345678", "0062 812 3456 789",
    "0812 3456 7890", "0812-3456-7890", "0812.3456.7890", "081234567890",
    "(0291) 591234", "0291-591234", "+62 (0) 812 3456 7890", "021 5551234",
])
def test_indonesian_phone_numbers_in_the_usual_forms_are_masked(number: str) -> None:
    text, n = scrub_text(f"Pelapor bisa dihubungi di {number}, terima kasih.")
    assert (text, n) == (f"Pelapor bisa dihubungi di {MASK}, terima kasih.", 1)


@pytest.mark.parametrize("text", [
    "lokasi -6.5887, 110.6684 pada 2026-12-01 12.00",    # coordinates, a date, a time
    "tiket JPR-20261201-0007, call 1700000000.12",        # references and channel ids
    "hubungi 112 atau 110, kerugian Rp 8.500.000",        # short codes, an amount
    "nomor 812 3456 7890 tanpa nol",                       # a mobile without its 0: not recognised
    "sha256 a08123456789ffa1b82d61b8139df6f666f705cdc7",  # digits inside a word (a digest)
])
def test_what_is_not_a_phone_number_stays(text: str) -> None:
    assert scrub_text(text) == (text, 0)


def test_two_numbers_in_one_run_are_both_found() -> None:
    text = "0812 3456 7890 0813 1111 2222"
    assert [text[a:b] for a, b in phone_spans(text)] == ["0812 3456 7890", "0813 1111 2222"]


def test_known_names_are_masked_as_whole_words_in_any_case() -> None:
    text, n = scrub_text("SITI AMINAH dari Bali: tolong Siti Aminah", ["Siti Aminah", "Ali"])
    assert (text, n) == (f"{MASK} dari Bali: tolong {MASK}", 2)


def test_the_silent_callers_location_note_loses_its_coordinates() -> None:
    assert scrub_text("location aml: -6.5887,110.6684 ±50.0 m") == (f"location aml: {MASK}", 1)


def test_json_details_are_scrubbed_inside_their_strings_even_escaped() -> None:
    detail = json.dumps({"name": "Dévi", "changed": {"notes": {"before": "HP 0812 3456 7890",
                                                              "after": "ok"}}, "n": 3})
    assert "\\u00e9" in detail  # the name as the JSON text holds it
    out, n = scrub_json(detail, ["Dévi"])
    assert n == 2 and json.loads(out) == {"name": MASK, "n": 3, "changed": {
        "notes": {"before": f"HP {MASK}", "after": "ok"}}}
    assert scrub_json(json.dumps({"x": "nothing here"})) == (json.dumps({"x": "nothing here"}), 0)
    assert scrub_json("not json 0812-3456-7890") == (f"not json {MASK}", 1)
