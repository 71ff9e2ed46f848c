"""Console texts, one file per language (ari_app/web/texts/<lang>.toml); Bahasa Indonesia first.

Templates and the console's JavaScript take every word from here through ``_("key")``; a key
missing from a language is an error at render time (tests render every page in every language).
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

TEXTS = Path(__file__).parent / "texts"
LANGS = ("id", "en")
DEFAULT_LANG = "id"


class MissingText(KeyError):
    pass


def _flatten(prefix: str, table: dict[str, Any], out: dict[str, str]) -> None:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(name + ".", value, out)
        elif isinstance(value, str):
            out[name] = value
        else:
            raise ValueError(f"{TEXTS}/{prefix.split('.')[0]}: {name}: expected a string, "
                             f"found {type(value).__name__}")


@cache
def texts(lang: str) -> dict[str, str]:
    if lang not in LANGS:
        raise ValueError(f"language: expected one of {', '.join(LANGS)}, got {lang!r}")
    out: dict[str, str] = {}
    with open(TEXTS / f"{lang}.toml", "rb") as f:
        _flatten("", tomllib.load(f), out)
    return out


def pick_lang(*choices: str | None) -> str:
    """The first supported language among the choices (user's setting, cookie, site), else id."""
    for choice in choices:
        if choice in LANGS:
            return str(choice)
    return DEFAULT_LANG


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.table = texts(lang)

    def __call__(self, key: str, default: str | None = None, **values: Any) -> str:
        """The text for ``key``; ``default`` for open-ended keys (a site's category codes)."""
        text = self.table.get(key, default)
        if text is None:
            raise MissingText(f"{TEXTS / self.lang}.toml: no text for {key!r}")
        return text.format(**values) if values else text

    def prefix(self, prefix: str) -> dict[str, str]:
        """Every text under ``prefix.`` (what the console's JavaScript needs), keys shortened."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.table.items() if k.startswith(prefix + ".")}
