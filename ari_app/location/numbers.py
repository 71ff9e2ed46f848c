"""Caller numbers in one canonical form, so an AML message finds the call it belongs to.

Canonical form is E.164 with a plus: ``+62812...``. Indonesian input comes as ``+62812...``,
``62812...``, ``0812...`` (trunk prefix), ``812...`` (mobile without trunk prefix) or
``0062812...`` (international prefix), with spaces, dashes, dots or parentheses, and sometimes
inside a ``tel:``/``sip:`` URI. A ``(0)`` after +62 is a common way of writing and is dropped.
Short codes (3-5 digits: 112, 110, 113, 1500...) are service numbers and stay as they are.
Foreign numbers given with + or 00 are kept in E.164 form.
"""

from __future__ import annotations

import re

__all__ = ["InvalidNumber", "normalise_msisdn"]

COUNTRY_CODE = "62"
MAX_INPUT_CHARS = 64
# Indonesian national significant numbers: landlines 7-11 digits, mobiles (8xx) 9-12.
NSN_MIN, NSN_MAX = 7, 12
MOBILE_NSN_MIN = 9
E164_MIN, E164_MAX = 8, 15
SHORT_CODE_MAX = 5

_WITHHELD = frozenset({"anonymous", "unknown", "restricted", "private", "unavailable", "withheld"})
_SEPARATORS = re.compile(r"[\s\-.()/]")
_URI = re.compile(r"(?:tel|sip|sips):([^@;]*)(?:[@;].*)?", re.IGNORECASE)


class InvalidNumber(ValueError):
    """A caller number that cannot be used to match or call back; the message says why."""


def normalise_msisdn(number: str) -> str:
    """Return ``+62...`` (or another country's E.164, or a short code); raise InvalidNumber."""
    text = number.strip()
    if not text:
        raise InvalidNumber("caller number is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidNumber(f"caller number has {len(text)} characters; at most {MAX_INPUT_CHARS}")
    uri = _URI.fullmatch(text)
    if uri:
        text = uri.group(1)
    if text.lower() in _WITHHELD:
        raise InvalidNumber(f"caller number is withheld ({text!r})")
    compact = _SEPARATORS.sub("", text)
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    bad = next((char for char in digits if char not in "0123456789"), None)
    if bad is not None or not digits:
        shown = bad if bad is not None else "+"
        raise InvalidNumber(
            f"{number!r} contains {shown!r}: only digits, spaces, dashes, dots, parentheses and "
            "a leading + are allowed"
        )

    if plus:
        return _international(digits, number)
    if digits.startswith("00"):
        return _international(digits[2:], number)
    if len(digits) <= SHORT_CODE_MAX and not digits.startswith("0"):
        if len(digits) < 3:
            raise InvalidNumber(f"{number!r} is too short to be a number or a short code")
        return digits
    if digits.startswith(COUNTRY_CODE) and len(digits) - len(COUNTRY_CODE) >= NSN_MIN:
        return _indonesian(digits[len(COUNTRY_CODE) :], number)
    if digits.startswith("0"):
        return _indonesian(digits[1:], number)
    if digits.startswith("8"):
        if len(digits) < MOBILE_NSN_MIN:
            raise InvalidNumber(f"{number!r} is too short for a mobile number without its 0")
        return _indonesian(digits, number)
    raise InvalidNumber(
        f"cannot tell whether {number!r} is Indonesian: expected +62..., 62..., 0... or 8..."
    )


def _international(digits: str, original: str) -> str:
    if digits.startswith(COUNTRY_CODE):
        return _indonesian(digits[len(COUNTRY_CODE) :], original)
    if digits.startswith("0"):
        raise InvalidNumber(f"{original!r}: a country code cannot start with 0")
    if not E164_MIN <= len(digits) <= E164_MAX:
        raise InvalidNumber(
            f"{original!r} has {len(digits)} digits after the country prefix; "
            f"E.164 allows {E164_MIN}-{E164_MAX}"
        )
    return "+" + digits


def _indonesian(national: str, original: str) -> str:
    if national.startswith("0"):
        national = national[1:]  # "+62 (0)812..." writes the trunk 0 that must not be dialled
    if not NSN_MIN <= len(national) <= NSN_MAX:
        raise InvalidNumber(
            f"{original!r} leaves {len(national)} digits after the 62/0 prefix; Indonesian "
            f"numbers have {NSN_MIN}-{NSN_MAX}"
        )
    if national.startswith("0"):
        raise InvalidNumber(f"{original!r}: digits after +62 cannot start with 00")
    return "+" + COUNTRY_CODE + national
