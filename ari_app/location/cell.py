"""The serving cell from a P-Access-Network-Info header (3GPP TS 24.229 clause 7.2A.4).

Cell identities are fixed-width strings of MCC (3 digits), MNC (2 or 3 digits) and hex fields:

==================  ======================  ===============================================
access type         parameter               after MCC+MNC
==================  ======================  ===============================================
3GPP-GERAN          cgi-3gpp                LAC (4 hex) + CI (4 hex)
3GPP-UTRAN-*        utran-cell-id-3gpp      LAC (4 hex) + UMTS cell id (7 hex)
3GPP-E-UTRAN-*      utran-cell-id-3gpp      TAC (4 hex, 6 hex towards a 5GC) + ECI (7 hex)
3GPP-NR-*           utran-cell-id-3gpp      5GS TAC (6 hex) + NR cell id (9 hex)
==================  ======================  ===============================================

Because every field after the MNC has a fixed width, the total length tells the MNC length.
Indonesia (MCC 510) assigns only 2-digit MNCs, so a 510 cell whose length implies a 3-digit MNC is
rejected unless the caller says ``mnc_digits=3``; ``mnc_digits`` also lets a caller insist on a
length for any country.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ari_app.location.model import LocationParseError

__all__ = ["CellId", "parse_p_access_network_info"]

MAX_HEADER_CHARS = 1024
INDONESIA_MCC = "510"
INDONESIA_MNC_DIGITS = 2

# radio -> (widths the LAC/TAC may have, width of the cell identity), in hex digits
_LAYOUT: dict[str, tuple[tuple[int, ...], int]] = {
    "GERAN": ((4,), 4),
    "UTRAN": ((4,), 7),
    "E-UTRAN": ((4, 6), 7),
    "NR": ((6,), 9),
}
_CELL_PARAMETERS = ("cgi-3gpp", "utran-cell-id-3gpp", "nrcgi")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")


@dataclass(frozen=True)
class CellId:
    """A serving cell: ``area_code`` is the LAC (GERAN/UTRAN) or TAC (E-UTRAN/NR)."""

    access_type: str
    radio: str
    mcc: str
    mnc: str
    area_code: int
    cell_identity: int
    network_provided: bool
    raw: str

    @property
    def lac(self) -> int | None:
        return self.area_code if self.radio in ("GERAN", "UTRAN") else None

    @property
    def tac(self) -> int | None:
        return self.area_code if self.radio in ("E-UTRAN", "NR") else None

    @property
    def eci(self) -> int | None:
        """E-UTRAN cell identity (28 bits): eNodeB id in the top 20 bits, cell in the low 8."""
        return self.cell_identity if self.radio == "E-UTRAN" else None

    @property
    def enodeb_id(self) -> int | None:
        return self.cell_identity >> 8 if self.radio == "E-UTRAN" else None


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise LocationParseError("P-Access-Network-Info has an unterminated quoted string", text)
    parts.append("".join(current))
    return parts


def _radio(access_type: str) -> str | None:
    upper = access_type.upper()
    for prefix, radio in (
        ("3GPP-GERAN", "GERAN"),
        ("3GPP-UTRAN", "UTRAN"),
        ("3GPP-E-UTRAN", "E-UTRAN"),
        ("3GPP-NR", "NR"),
    ):
        if upper.startswith(prefix):
            return radio
    return None


def parse_p_access_network_info(value: str, mnc_digits: int | None = None) -> CellId | None:
    """The first 3GPP cell in the header, None when it names no cell (e.g. Wi-Fi access).

    Raises LocationParseError for a header that is malformed or a cell id of the wrong shape.
    """
    raw = value
    if len(value) > MAX_HEADER_CHARS:
        raise LocationParseError(
            f"P-Access-Network-Info has {len(value)} characters; the limit is {MAX_HEADER_CHARS}",
            raw,
        )
    if mnc_digits not in (None, 2, 3):
        raise ValueError(f"mnc_digits must be 2 or 3, got {mnc_digits!r}")
    if not value.strip():
        raise LocationParseError("P-Access-Network-Info is empty", raw)
    for spec in _split_outside_quotes(value, ","):
        items = [item.strip() for item in _split_outside_quotes(spec, ";")]
        access_type = items[0]
        if not _TOKEN.fullmatch(access_type):
            raise LocationParseError(f"access type must be a token, got {_show(access_type)}", raw)
        parameters: dict[str, str | None] = {}
        for item in items[1:]:
            name, equals, parameter = item.partition("=")
            name = name.strip().lower()
            if not _TOKEN.fullmatch(name):
                raise LocationParseError(f"parameter name must be a token, got {_show(name)}", raw)
            parameters[name] = parameter.strip().strip('"') if equals else None
        radio = _radio(access_type)
        if radio is None:
            continue
        cell_text = next((parameters[p] for p in _CELL_PARAMETERS if parameters.get(p)), None)
        if cell_text is None:
            continue
        provided = "network-provided" in parameters
        return _cell(access_type, radio, cell_text, provided, mnc_digits, raw)
    return None


def _cell(
    access_type: str,
    radio: str,
    text: str,
    network_provided: bool,
    mnc_digits: int | None,
    raw: str,
) -> CellId:
    area_widths, cell_width = _LAYOUT[radio]
    if not _HEX.fullmatch(text) or not text[:5].isdigit():
        raise LocationParseError(
            f"{radio} cell id must be MCC+MNC digits then hex, got {_show(text)}", raw
        )
    mnc_lengths = (mnc_digits,) if mnc_digits else (2, 3)
    shapes = [
        (mnc, area)
        for mnc in mnc_lengths
        for area in area_widths
        if 3 + mnc + area + cell_width == len(text)
    ]
    if not shapes:
        expected = sorted({3 + m + a + cell_width for m in mnc_lengths for a in area_widths})
        raise LocationParseError(
            f"{radio} cell id {_show(text)} has {len(text)} characters; expected "
            + " or ".join(str(n) for n in expected),
            raw,
        )
    mnc_length, area_width = shapes[0]
    mcc, mnc = text[:3], text[3 : 3 + mnc_length]
    if not mnc.isdigit():
        raise LocationParseError(f"{radio} cell id MNC must be digits, got {_show(mnc)}", raw)
    if mcc == INDONESIA_MCC and mnc_digits is None and mnc_length != INDONESIA_MNC_DIGITS:
        raise LocationParseError(
            f"{radio} cell id {_show(text)} implies a {mnc_length}-digit MNC, but MCC 510 "
            "(Indonesia) uses 2-digit MNCs",
            raw,
        )
    area_start = 3 + mnc_length
    area = int(text[area_start : area_start + area_width], 16)
    cell_identity = int(text[area_start + area_width :], 16)
    return CellId(
        access_type=access_type,
        radio=radio,
        mcc=mcc,
        mnc=mnc,
        area_code=area,
        cell_identity=cell_identity,
        network_provided=network_provided,
        raw=raw,
    )
