"""Find and mask personal data in free text (notes, audit details) when retention anonymises a
ticket: the strings we know (the caller's number as stored, a complaint's name), the location
note the silent-caller procedure writes, and every Indonesian phone number written in a form we
recognise.

Recognised: ``+62 812-3456-7890``, ``62812...``, ``0062...``, ``0812 3456 7890``,
``(0291) 591234``, ``+62 (0) 812...``: a run of digit groups separated by spaces, dashes or dots,
starting with +62, 0062, 62 or 0, that :func:`normalise_msisdn` reads as an Indonesian number.
Not recognised: a mobile written without its 0 (``812...``: too like an amount), numbers spelled
in words (``nol delapan satu dua``), foreign numbers, and names nobody structured (a caller's
or a neighbour's name typed into the notes). SECURITY.md says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ari_app.location.numbers import InvalidNumber, normalise_msisdn

MASK = "[anonymised]"
MAX_GROUPS = 6  # "+62 (0) 812 3456 7890" is 6 groups; a longer run is two numbers or none
# a run of digit groups (a group may carry parentheses and a leading +), joined by one separator,
# not inside a word: a SHA-256 in an audit entry holds digit runs too
_RUN = re.compile(r"(?<![\w+])\+?\(?\d[\d()]*(?:[ .\-]\(?\d[\d()]*)*(?!\w)")
_GROUP = re.compile(r"\+?\(?\d[\d()]*")
_PREFIXES = ("+62", "0062", "62", "0", "(0")
# what calls/silent.py writes into a silent caller's notes: "location aml: -6.58,110.66 ±50.0 m"
_LOCATION_NOTE = re.compile(r"(location [\w-]+: )-?\d+(?:\.\d+)?, ?-?\d+(?:\.\d+)?(?: ±[\d.]+ m)?")


def _is_indonesian_number(candidate: str) -> bool:
    if not candidate.startswith(_PREFIXES):
        return False
    try:
        return normalise_msisdn(candidate).startswith("+62")
    except InvalidNumber:
        return False


def phone_spans(text: str) -> list[tuple[int, int]]:
    """Where the Indonesian phone numbers are in ``text`` (start, end), left to right.

    Each run of digit groups is cut greedily: from its first group, the longest stretch of at
    most MAX_GROUPS groups that is a number; then on from the group after it.
    """
    spans: list[tuple[int, int]] = []
    for run in _RUN.finditer(text):
        groups = [(run.start() + g.start(), run.start() + g.end())
                  for g in _GROUP.finditer(run.group())]
        i = 0
        while i < len(groups):
            for j in range(min(len(groups), i + MAX_GROUPS) - 1, i - 1, -1):
                start, end = groups[i][0], groups[j][1]
                if _is_indonesian_number(text[start:end]):
                    spans.append((start, end))
                    i = j + 1
                    break
            else:
                i += 1
    return spans


def scrub_text(text: str, known: Iterable[str] = ()) -> tuple[str, int]:
    """``text`` with the known strings (case-insensitive) and phone numbers masked; how many."""
    count = 0
    for value in sorted({k for k in known if len(k.strip()) >= 3}, key=len, reverse=True):
        # whole words only: the name "Ali" is not masked inside "Bali"
        text, n = re.subn(rf"(?<!\w){re.escape(value.strip())}(?!\w)", MASK, text,
                          flags=re.IGNORECASE)
        count += n
    text, n = _LOCATION_NOTE.subn(rf"\g<1>{MASK}", text)
    count += n
    spans = phone_spans(text)
    for start, end in reversed(spans):
        text = text[:start] + MASK + text[end:]
    return text, count + len(spans)


def _scrub_value(value: Any, known: tuple[str, ...]) -> tuple[Any, int]:
    if isinstance(value, str):
        return scrub_text(value, known)
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            new, n = _scrub_value(item, known)
            out.append(new)
            total += n
        return out, total
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        total = 0
        for key, item in value.items():
            new, n = _scrub_value(item, known)
            result[key] = new
            total += n
        return result, total
    return value, 0


def scrub_json(text: str, known: Iterable[str] = ()) -> tuple[str, int]:
    """An audit detail (JSON, or plain text from older entries) with its strings scrubbed.

    Strings are scrubbed after decoding: a name with non-ASCII letters is ``\\u00e9`` in the
    JSON text and would not match there. The text is rewritten only when something was masked.
    """
    keys = tuple(known)
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return scrub_text(text, keys)
    if data is None:
        return text, 0
    new, n = _scrub_value(data, keys)
    return (json.dumps(new, sort_keys=True), n) if n else (text, 0)
