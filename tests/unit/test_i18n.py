"""Console texts: both languages have the same keys, templates hold no words of their own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ari_app.web.i18n import LANGS, MissingText, Translator, pick_lang, texts

TEMPLATES = Path(__file__).resolve().parents[2] / "ari_app" / "web" / "templates"
STATIC = Path(__file__).resolve().parents[2] / "ari_app" / "web" / "static"


def test_every_language_has_the_same_keys_and_none_is_empty() -> None:
    indonesian = texts("id")
    for lang in LANGS:
        table = texts(lang)
        assert set(table) == set(indonesian), (lang, set(table) ^ set(indonesian))
        assert all(v.strip() for v in table.values()), lang


def test_indonesian_comes_first_and_unknown_choices_fall_back_to_it() -> None:
    assert LANGS[0] == "id"
    assert pick_lang(None, "xx", "en") == "en"
    assert pick_lang(None, None) == "id"
    assert Translator("id")("login.submit") == "Masuk"
    assert Translator("en")("login.submit") == "Log in"


def test_a_missing_key_is_an_error_naming_the_file_and_key() -> None:
    with pytest.raises(MissingText, match=r"id\.toml.*'nope\.nothing'"):
        Translator("id")("nope.nothing")
    assert Translator("en")("category.sar_boat", "sar_boat") == "sar_boat"  # open-ended codes


def _words_outside_jinja(source: str) -> list[str]:
    text = re.sub(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", " ", source, flags=re.S)
    text = re.sub(r"<script[^>]*>.*?</script>", " ", text, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", text)
    return re.findall(r"[A-Za-z]{2,}", text)


@pytest.mark.parametrize("template", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_templates_take_every_word_from_the_text_files(template: str) -> None:
    source = (TEMPLATES / template).read_text()
    assert _words_outside_jinja(source) == [], template
    for key in re.findall(r"""_\("([a-z_.]+)"\)""", source):
        for lang in LANGS:
            assert key in texts(lang), (template, lang, key)


def test_console_script_shows_no_words_of_its_own() -> None:
    """The console's JavaScript puts text on screen only through t(group, key)."""
    source = (STATIC / "console.js").read_text()
    assigned = re.findall(r"textContent = (\"[^\"]*[A-Za-z]{2,}[^\"]*\"|'[^']*[A-Za-z]{2,}[^']*')", source)
    assert assigned == []
