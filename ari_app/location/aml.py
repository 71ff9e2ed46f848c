"""Advanced Mobile Location: ETSI TS 103 625 SMS, Android ELS SMS v2 and data SMS, HTTPS form.

Every parser here is strict: an unknown or repeated key, a malformed value or an impossible
coordinate raises :class:`LocationParseError` naming the key and what was found. Two things are
kept rather than rejected, because real handsets send them:

* "no location" (``pm=N`` or ``rd=N``; v2 without ``lo``): a Location with no coordinates and
  method ``"None"``; the call still needs to know the handset tried.
* an ``ml`` that disagrees with the message length: published vectors do (Google's own
  "location computed" example says ``ml=126`` over 127 characters), so it becomes a warning.

Spec facts used (ETSI TS 103 625, Google ELS SMS and HTTPS references):

* ``ml`` counts every character of the message, the ``A"ML=1;`` header and ``ml=NNN`` included.
* v1 ``top`` is ``YYYYMMDDhhmmss`` UTC; ``lc`` an integer percentage; ``rd`` metres or ``N``.
* v2 ``et`` is Unix seconds of the emergency call; ``lo`` is ``lat,lon,accuracy`` where an
  accuracy of 0 means unknown; ``lt`` is the fix time in seconds relative to ``et`` (fix = et+lt)
  and ``-9999`` is the sentinel for "location time unknown"; ``lz`` is ``altitude,vertical
  accuracy``; ``ls`` the location source W/G/C/F/U; ``nc``/``hc`` network/home MCC+MNC.
* HTTPS ``time`` (call start) and ``location_time`` are Unix milliseconds;
  ``location_confidence`` is a 0-1 fraction (stored as percent); the older ETSI-style
  ``location_certainty`` is already a percentage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus, urlencode

from ari_app.location.model import Location, LocationParseError

__all__ = [
    "Location",
    "LocationParseError",
    "decode_gsm7_packed",
    "parse_any",
    "parse_https_form",
    "parse_sms_text",
    "parse_sms_user_data_hex",
]

HEADER = 'A"ML='
MAX_SMS_CHARS = 1024  # a concatenated SMS of 7 parts; anything longer is not a handset
MAX_USER_DATA_BYTES = 1024
MAX_FORM_CHARS = 16 * 1024
MAX_TEXT_FIELD = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST_MS = 4_102_444_800_000  # 2100-01-01: later (or negative) times are corrupt, not future

_COORDINATE = re.compile(r"[+-]?\d{1,3}(?:\.\d{1,15})?")
_UNSIGNED = re.compile(r"\d{1,9}(?:\.\d{1,9})?")
_SIGNED = re.compile(r"[+-]?\d{1,9}(?:\.\d{1,9})?")
_INT_PERCENT = re.compile(r"\d{1,3}")
_TOP = re.compile(r"\d{14}")
_IMSI = re.compile(r"\d{5,15}")  # ELS truncates the IMSI; Google's data-SMS example has 9 digits
_IMEI = re.compile(r"\d{14,16}")  # 14 without check digit, 15 with, 16 for an IMEISV
_MCC = re.compile(r"\d{3}")
_MNC = re.compile(r"\d{2,3}")
_PLMN = re.compile(r"\d{5,6}")
_ML = re.compile(r"\d{1,4}")
_DIALLED = re.compile(r"\+?[0-9*#]{1,20}")
_PHONE = re.compile(r"\+?\d{3,20}")
_UNIX_S = re.compile(r"\d{1,11}")
_UNIX_MS = re.compile(r"\d{1,14}")
_REL_SECONDS = re.compile(r"[+-]?\d{1,6}")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,7}")
_LANGUAGES = re.compile(rf"{_LANGUAGE.pattern}(?:,{_LANGUAGE.pattern})*")
_ICCID = re.compile(r"\d{18,22}[Ff]?")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_VERSION = re.compile(r"\d{1,3}")
_CELL_ID = re.compile(r"[0-9A-Fa-f]{1,32}")
_HEX_DIGEST = re.compile(r"[0-9A-Fa-f]{16,128}")

V2_UNKNOWN_LOCATION_TIME = -9999

_PM_METHODS = {"G": "GNSS", "W": "WiFi", "C": "Cell", "N": "None", "U": "Unknown"}
_LS_METHODS = {"W": "WiFi", "G": "GNSS", "C": "Cell", "F": "Fused", "U": "Unknown"}
_HTTPS_METHODS = {
    "gps": "GNSS", "wifi": "WiFi", "cell": "Cell", "fused": "Fused", "unknown": "Unknown",
}

_V1_KEYS = ("lt", "lg", "rd", "top", "lc", "pm", "si", "ei", "mcc", "mnc", "ml")
_V1_REQUIRED = ("lt", "lg", "rd", "top", "lc", "pm")
_V2_KEYS = ("en", "et", "lo", "lt", "lc", "lz", "ls", "ei", "nc", "hc", "lg")

# Google's ELS HTTPS field table, plus the fields of the ETSI TS 103 625 HTTPS example
# (location_certainty, device_os, cell_carrier, cell_id) and ELS's hmac/device_languages.
HTTPS_FIELDS = frozenset({
    "v", "emergency_number", "source", "thunderbird_version", "time",
    "location_latitude", "location_longitude", "location_time", "location_altitude",
    "location_altitude_msl", "location_floor", "location_source", "location_accuracy",
    "location_vertical_accuracy", "location_vertical_accuracy_msl", "location_confidence",
    "location_certainty", "location_bearing", "location_speed",
    "device_number", "device_model", "device_imsi", "device_imei", "device_iccid",
    "device_languages", "device_os",
    "cell_carrier", "cell_home_mcc", "cell_home_mnc", "cell_network_mcc", "cell_network_mnc",
    "cell_id", "hmac",
})


# ---------------------------------------------------------------------------------------------
# value helpers: each raises LocationParseError naming the key and quoting what it found


def _show(value: str, limit: int = 40) -> str:
    """repr() of a value, cut so a hostile 64 KiB field cannot flood the error log."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _coordinate(key: str, value: str, limit: int, raw: str) -> float:
    if not _COORDINATE.fullmatch(value):
        raise LocationParseError(f"{key} must be decimal degrees, got {_show(value)}", raw)
    number = float(value)
    if not -limit <= number <= limit:
        raise LocationParseError(f"{key} out of range -{limit}..{limit}: {number}", raw)
    return number


def _unsigned(key: str, value: str, what: str, raw: str) -> float:
    if not _UNSIGNED.fullmatch(value):
        raise LocationParseError(f"{key} must be {what}, got {_show(value)}", raw)
    return float(value)


def _signed(key: str, value: str, what: str, raw: str) -> float:
    if not _SIGNED.fullmatch(value):
        raise LocationParseError(f"{key} must be {what}, got {_show(value)}", raw)
    return float(value)


def _int_percent(key: str, value: str, raw: str) -> int:
    if not _INT_PERCENT.fullmatch(value) or int(value) > 100:
        raise LocationParseError(f"{key} must be an integer 0-100, got {_show(value)}", raw)
    return int(value)


def _matching(key: str, value: str, pattern: re.Pattern[str], what: str, raw: str) -> str:
    if not pattern.fullmatch(value):
        raise LocationParseError(f"{key} must be {what}, got {_show(value)}", raw)
    return value


def _optional(
    pairs: Mapping[str, str], key: str, pattern: re.Pattern[str], what: str, raw: str
) -> str | None:
    return _matching(key, pairs[key], pattern, what, raw) if key in pairs else None


def _text(key: str, value: str, raw: str) -> str:
    if len(value) > MAX_TEXT_FIELD or not value.isprintable():
        raise LocationParseError(
            f"{key} must be printable text of at most {MAX_TEXT_FIELD} characters, "
            f"got {_show(value)}",
            raw,
        )
    return value


def _top(value: str, raw: str) -> datetime:
    if not _TOP.fullmatch(value):
        raise LocationParseError(f"top must be YYYYMMDDhhmmss, got {_show(value)}", raw)
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise LocationParseError(f"top is not a real date and time: {_show(value)}", raw) from None


def _unix(key: str, value: str, pattern: re.Pattern[str], per_second: int, raw: str) -> datetime:
    unit = "seconds" if per_second == 1 else "milliseconds"
    if not pattern.fullmatch(value):
        raise LocationParseError(f"{key} must be Unix time in {unit}, got {_show(value)}", raw)
    amount = int(value)
    if not 0 < amount * (1000 // per_second) <= _LATEST_MS:
        raise LocationParseError(f"{key} out of range 1970..2100: {amount} {unit}", raw)
    return _EPOCH + timedelta(milliseconds=amount * (1000 // per_second))


def _split_plmn(key: str, value: str, raw: str) -> tuple[str, str]:
    # MCC is always 3 digits, so the MNC is whatever follows (2 or 3 digits).
    _matching(key, value, _PLMN, "MCC+MNC as 5 or 6 digits", raw)
    return value[:3], value[3:]


# ---------------------------------------------------------------------------------------------
# SMS text


def parse_sms_text(text: str) -> Location:
    """Parse an AML SMS body (``A"ML=1;...`` or ELS v2 ``A"ML=2;...``)."""
    return _parse_sms_text(text, raw=text)


def _parse_sms_text(text: str, raw: str) -> Location:
    body = text.strip()  # SMS gateways append CR/LF; ml counts the message itself
    if len(body) > MAX_SMS_CHARS:
        raise LocationParseError(
            f"message has {len(body)} characters; an AML SMS has at most {MAX_SMS_CHARS}", raw
        )
    if not body.startswith(HEADER):
        raise LocationParseError(f"message does not start with A\"ML=: {_show(body, 20)}", raw)
    pairs = _split_attributes(body, raw)
    version = pairs.pop('A"ML')
    if version == "1":
        return _parse_v1(body, pairs, raw)
    if version == "2":
        return _parse_v2(pairs, raw)
    raise LocationParseError(f"unsupported AML version {_show(version)}: expected 1 or 2", raw)


def _split_attributes(body: str, raw: str) -> dict[str, str]:
    segments = body.split(";")
    if len(segments) > 1 and segments[-1] == "":
        segments.pop()  # a trailing ';' carries no attribute
    pairs: dict[str, str] = {}
    for index, segment in enumerate(segments, start=1):
        if "=" not in segment:
            if segment == "":
                raise LocationParseError(f"empty attribute at position {index}", raw)
            raise LocationParseError(f"attribute {_show(segment)} has no '='", raw)
        key, _, value = segment.partition("=")
        if key in pairs:
            raise LocationParseError(f"duplicate key {_show(key)}", raw)
        pairs[key] = value
    return pairs


def _check_keys(pairs: Mapping[str, str], allowed: Iterable[str], raw: str) -> None:
    known = set(allowed)
    for key in pairs:
        if key not in known:
            raise LocationParseError(f"unknown key {_show(key)}", raw)


def _parse_v1(body: str, pairs: dict[str, str], raw: str) -> Location:
    _check_keys(pairs, _V1_KEYS, raw)
    for key in _V1_REQUIRED:
        if key not in pairs:
            raise LocationParseError(f"missing key {key!r}", raw)
    warnings: list[str] = []

    pm = pairs["pm"]
    if pm not in _PM_METHODS:
        raise LocationParseError(f"pm must be one of G/W/C/N/U, got {_show(pm)}", raw)
    rd_text = pairs["rd"]
    radius = None if rd_text == "N" else _unsigned("rd", rd_text, "a radius in metres or N", raw)
    latitude = _coordinate("lt", pairs["lt"], 90, raw)
    longitude = _coordinate("lg", pairs["lg"], 180, raw)
    confidence = _int_percent("lc", pairs["lc"], raw)
    fix_time = _top(pairs["top"], raw)

    no_location = pm == "N" or radius is None
    if pm == "N" and radius is not None:
        warnings.append(f"rd={rd_text} but pm=N: treated as no location")
    elif pm != "N" and radius is None:
        warnings.append(f"pm={pm} but rd=N: treated as no location")

    imsi = _optional(pairs, "si", _IMSI, "an IMSI of 5-15 digits", raw)
    imei = _optional(pairs, "ei", _IMEI, "an IMEI of 14-16 digits", raw)
    mcc = _optional(pairs, "mcc", _MCC, "3 digits", raw)
    mnc = _optional(pairs, "mnc", _MNC, "2 or 3 digits", raw)

    if "ml" in pairs:
        declared = int(_matching("ml", pairs["ml"], _ML, "a length in characters", raw))
        if declared != len(body):
            warnings.append(f"ml={declared} but message has {len(body)} characters")
    else:
        warnings.append("ml missing: message length not declared")

    return Location(
        source="aml-sms",
        raw=raw,
        latitude=None if no_location else latitude,
        longitude=None if no_location else longitude,
        radius_m=None if no_location else radius,
        confidence_pct=float(confidence),
        method="None" if no_location else _PM_METHODS[pm],
        fix_time=fix_time,
        imei=imei,
        imsi=imsi,
        mcc=mcc,
        mnc=mnc,
        warnings=tuple(warnings),
    )


def _parse_v2(pairs: dict[str, str], raw: str) -> Location:
    _check_keys(pairs, _V2_KEYS, raw)
    warnings: list[str] = []

    emergency_number = _optional(pairs, "en", _DIALLED, "a dialled number", raw)
    call_time = _unix("et", pairs["et"], _UNIX_S, 1, raw) if "et" in pairs else None
    confidence = _int_percent("lc", pairs["lc"], raw) if "lc" in pairs else None
    imei = _optional(pairs, "ei", _IMEI, "an IMEI of 14-16 digits", raw)
    mcc, mnc = _split_plmn("nc", pairs["nc"], raw) if "nc" in pairs else (None, None)
    home_mcc, home_mnc = _split_plmn("hc", pairs["hc"], raw) if "hc" in pairs else (None, None)
    language = _optional(pairs, "lg", _LANGUAGE, "a BCP 47 language tag", raw)

    latitude = longitude = radius = None
    method = "None"
    if "lo" in pairs:
        parts = pairs["lo"].split(",")
        if len(parts) != 3:
            raise LocationParseError(
                f"lo must be latitude,longitude,accuracy, got {_show(pairs['lo'])}", raw
            )
        latitude = _coordinate("lo latitude", parts[0], 90, raw)
        longitude = _coordinate("lo longitude", parts[1], 180, raw)
        accuracy = _unsigned("lo accuracy", parts[2], "metres", raw)
        radius = accuracy or None  # the spec's 0 means "accuracy unknown"
        method = "Unknown"
        if "ls" in pairs:
            if pairs["ls"] not in _LS_METHODS:
                got = _show(pairs["ls"])
                raise LocationParseError(f"ls must be one of W/G/C/F/U, got {got}", raw)
            method = _LS_METHODS[pairs["ls"]]

    altitude = vertical_accuracy = None
    if "lz" in pairs:
        parts = pairs["lz"].split(",")
        if len(parts) != 2:
            raise LocationParseError(
                f"lz must be altitude,vertical accuracy, got {_show(pairs['lz'])}", raw
            )
        altitude = _signed("lz altitude", parts[0], "metres", raw)
        vertical_accuracy = _unsigned("lz vertical accuracy", parts[1], "metres", raw) or None

    fix_time = None
    if "lt" in pairs:
        relative = int(_matching("lt", pairs["lt"], _REL_SECONDS, "whole seconds", raw))
        if relative == V2_UNKNOWN_LOCATION_TIME:
            warnings.append("lt=-9999: location time unknown")
        elif call_time is None:
            warnings.append(f"lt={relative} without et: location time unknown")
        else:
            fix_time = call_time + timedelta(seconds=relative)

    has_fix = latitude is not None
    return Location(
        source="aml-sms",
        raw=raw,
        latitude=latitude,
        longitude=longitude,
        radius_m=radius,
        confidence_pct=None if confidence is None else float(confidence),
        method=method,
        fix_time=fix_time,
        imei=imei,
        mcc=mcc,
        mnc=mnc,
        warnings=tuple(warnings),
        altitude_m=altitude if has_fix else None,
        vertical_accuracy_m=vertical_accuracy if has_fix else None,
        emergency_number=emergency_number,
        call_time=call_time,
        home_mcc=home_mcc,
        home_mnc=home_mnc,
        language=language,
    )


# ---------------------------------------------------------------------------------------------
# data SMS: GSM 7-bit default alphabet (3GPP TS 23.038 6.2.1), septets packed LSB first

_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = {
    0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\",
    0x3C: "[", 0x3D: "~", 0x3E: "]", 0x40: "|", 0x65: "€",
}
_ESCAPE = 0x1B
_CR = 0x0D


def decode_gsm7_packed(data: bytes) -> str:
    """Unpack GSM 7-bit septets (LSB first) and map them through the default alphabet."""
    septets: list[int] = []
    accumulator = 0
    bits = 0
    for octet in data:
        accumulator |= octet << bits
        bits += 8
        while bits >= 7:
            septets.append(accumulator & 0x7F)
            accumulator >>= 7
            bits -= 7
    # 7 spare bits in the last octet read as one more septet: 23.038 fills them with CR or zeros.
    if len(data) % 7 == 0 and septets and septets[-1] in (0, _CR):
        septets.pop()
    chars: list[str] = []
    escaped = False
    for septet in septets:
        if escaped:
            # An escape before a code with no extension entry shows the basic character (23.038).
            chars.append(_GSM7_EXTENSION.get(septet, _GSM7_BASIC[septet]))
            escaped = False
        elif septet == _ESCAPE:
            escaped = True
        else:
            chars.append(_GSM7_BASIC[septet])
    return "".join(chars)


def _strip_user_data_header(data: bytes) -> bytes:
    """Drop a TP-UDH (e.g. application port addressing) if the gateway left it in."""
    if not data or data[0] & 0x7F == ord("A"):
        return data  # packed text starts with 'A' of A"ML; a UDH length never looks like that
    header_length = data[0]
    end = 1 + header_length
    if header_length < 2 or end >= len(data):
        return data
    position = 1
    while position < end:
        if position + 2 > end:
            return data
        position += 2 + data[position + 1]
    return data[end:] if position == end else data


def parse_sms_user_data_hex(hex_text: str) -> Location:
    """Parse the user data of an ELS data SMS, given as hex of the 7-bit packed octets."""
    raw = hex_text
    compact = "".join(hex_text.split())
    if not compact:
        raise LocationParseError("user data is empty", raw)
    if len(compact) > 2 * MAX_USER_DATA_BYTES:
        raise LocationParseError(
            f"user data has {len(compact) // 2} octets; the limit is {MAX_USER_DATA_BYTES}", raw
        )
    if not _HEX.fullmatch(compact):
        bad = next(char for char in compact if char not in "0123456789abcdefABCDEF")
        raise LocationParseError(f"user data must be hex digits, found {bad!r}", raw)
    if len(compact) % 2:
        raise LocationParseError(
            f"user data must have an even number of hex digits, got {len(compact)}", raw
        )
    text = decode_gsm7_packed(_strip_user_data_header(bytes.fromhex(compact)))
    try:
        return _parse_sms_text(text, raw=raw)
    except LocationParseError as error:
        raise LocationParseError(f"decoded user data: {error.reason}", raw) from None


# ---------------------------------------------------------------------------------------------
# HTTPS form


def _split_form(body: str, raw: str) -> dict[str, str]:
    if len(body) > MAX_FORM_CHARS:
        raise LocationParseError(
            f"form has {len(body)} characters; the limit is {MAX_FORM_CHARS}", raw
        )
    fields: dict[str, str] = {}
    for segment in body.strip().split("&"):
        if segment == "":
            continue  # "a=1&&b=2" and a trailing '&' carry no field
        if "=" not in segment:
            raise LocationParseError(f"field {_show(segment)} has no '='", raw)
        raw_key, _, raw_value = segment.partition("=")
        try:
            key = unquote_plus(raw_key, errors="strict")
            value = unquote_plus(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise LocationParseError(
                f"field {_show(raw_key)} is not valid UTF-8 once percent-decoded", raw
            ) from None
        if key in fields:
            raise LocationParseError(f"duplicate field {_show(key)}", raw)
        fields[key] = value
    return fields


def parse_https_form(body: str | Mapping[str, str]) -> Location:
    """Parse an AML/ELS HTTPS POST body (urlencoded string, or the already-decoded fields)."""
    if isinstance(body, str):
        raw = body
        fields = _split_form(body, raw)
    else:
        items = list(body.items())
        raw = urlencode(items)
        for key, value in items:
            if not isinstance(key, str) or not isinstance(value, str):
                raise LocationParseError(f"field {key!r} is not text", raw)
        fields = dict(items)
    for key in fields:
        if key not in HTTPS_FIELDS:
            raise LocationParseError(f"unknown field {_show(key)}", raw)
    # Empty values mean "not available" (e.g. cell_carrier= in the ETSI example).
    present = {key: value.strip() for key, value in fields.items() if value.strip()}
    if not present:
        raise LocationParseError("form has no fields", raw)
    return _https_location(present, raw)


class _Form:
    """Typed, optional access to form fields; every error names the field and quotes its value."""

    def __init__(self, fields: dict[str, str], raw: str) -> None:
        self.fields, self.raw = fields, raw

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def text(self, key: str) -> str | None:
        return _text(key, self.fields[key], self.raw) if key in self.fields else None

    def matching(self, key: str, pattern: re.Pattern[str], what: str) -> str | None:
        if key not in self.fields:
            return None
        return _matching(key, self.fields[key], pattern, what, self.raw)

    def signed(self, key: str, what: str) -> float | None:
        return _signed(key, self.fields[key], what, self.raw) if key in self.fields else None

    def unsigned(self, key: str, what: str, limit: float | None = None) -> float | None:
        if key not in self.fields:
            return None
        number = _unsigned(key, self.fields[key], what, self.raw)
        if limit is not None and number > limit:
            raise LocationParseError(f"{key} out of range 0..{limit:g}: {number}", self.raw)
        return number

    def coordinate(self, key: str, limit: int) -> float | None:
        if key not in self.fields:
            return None
        return _coordinate(key, self.fields[key], limit, self.raw)

    def unix_ms(self, key: str) -> datetime | None:
        if key not in self.fields:
            return None
        return _unix(key, self.fields[key], _UNIX_MS, 1000, self.raw)


def _https_location(fields: dict[str, str], raw: str) -> Location:
    form = _Form(fields, raw)
    warnings: list[str] = []

    form.matching("v", _VERSION, "a version number")
    if "source" in form and fields["source"].lower() not in ("call", "sms"):
        raise LocationParseError(f"source must be call or sms, got {_show(fields['source'])}", raw)
    for key in ("thunderbird_version", "device_os", "cell_carrier"):
        form.text(key)

    if ("location_latitude" in form) != ("location_longitude" in form):
        given = "location_latitude" if "location_latitude" in form else "location_longitude"
        missing = "location_longitude" if given == "location_latitude" else "location_latitude"
        raise LocationParseError(f"{given} given without {missing}", raw)
    latitude = form.coordinate("location_latitude", 90)
    longitude = form.coordinate("location_longitude", 180)
    radius = form.unsigned("location_accuracy", "metres")
    altitude = form.signed("location_altitude", "metres")
    form.signed("location_altitude_msl", "metres")
    vertical_accuracy = form.unsigned("location_vertical_accuracy", "metres")
    form.unsigned("location_vertical_accuracy_msl", "metres")
    form.unsigned("location_bearing", "degrees", limit=360)
    form.unsigned("location_speed", "metres per second")

    confidence: float | None = None
    if "location_confidence" in form:
        text = fields["location_confidence"]
        fraction = _unsigned("location_confidence", text, "a fraction 0-1", raw)
        if fraction > 1:
            raise LocationParseError(
                f"location_confidence must be a fraction 0-1, got {_show(text)}", raw
            )
        confidence = round(fraction * 100, 4)
    certainty = form.unsigned("location_certainty", "a percentage", limit=100)
    if certainty is not None:
        if confidence is None:
            confidence = certainty
        elif abs(confidence - certainty) > 0.5:
            warnings.append(
                f"location_certainty={certainty:g} disagrees with location_confidence; "
                "used location_confidence"
            )

    method = "None"
    if latitude is not None:
        method = "Unknown"
        if "location_source" in form:
            token = fields["location_source"]
            if token.lower() not in _HTTPS_METHODS:
                raise LocationParseError(
                    "location_source must be one of gps/wifi/cell/fused/unknown, "
                    f"got {_show(token)}",
                    raw,
                )
            method = _HTTPS_METHODS[token.lower()]

    form.matching("device_iccid", _ICCID, "an ICCID of 18-22 digits")
    form.matching("cell_id", _CELL_ID, "a hex or decimal cell id")
    form.matching("hmac", _HEX_DIGEST, "a hex digest")
    has_fix = latitude is not None
    return Location(
        source="aml-https",
        raw=raw,
        latitude=latitude,
        longitude=longitude,
        radius_m=radius if has_fix else None,
        confidence_pct=confidence,
        method=method,
        fix_time=form.unix_ms("location_time"),
        caller_number=form.matching("device_number", _PHONE, "a phone number"),
        imei=form.matching("device_imei", _IMEI, "an IMEI of 14-16 digits"),
        imsi=form.matching("device_imsi", _IMSI, "an IMSI of 5-15 digits"),
        mcc=form.matching("cell_network_mcc", _MCC, "3 digits"),
        mnc=form.matching("cell_network_mnc", _MNC, "2 or 3 digits"),
        warnings=tuple(warnings),
        altitude_m=altitude if has_fix else None,
        vertical_accuracy_m=vertical_accuracy if has_fix else None,
        floor=form.text("location_floor"),
        emergency_number=form.matching("emergency_number", _DIALLED, "a dialled number"),
        call_time=form.unix_ms("time"),
        home_mcc=form.matching("cell_home_mcc", _MCC, "3 digits"),
        home_mnc=form.matching("cell_home_mnc", _MNC, "2 or 3 digits"),
        device_model=form.text("device_model"),
        language=form.matching("device_languages", _LANGUAGES, "comma-separated BCP 47 tags"),
    )


# ---------------------------------------------------------------------------------------------
# sniffing


def parse_any(payload: str) -> Location:
    """Parse whatever a gateway relayed: SMS text, data-SMS hex, an HTTPS form or PIDF-LO."""
    text = payload.strip()
    if text.startswith(HEADER):
        return parse_sms_text(payload)
    compact = "".join(text.split())
    if compact and len(compact) % 2 == 0 and _HEX.fullmatch(compact):
        return parse_sms_user_data_hex(payload)
    if text.startswith("<"):
        from ari_app.location.pidf import parse_pidf_lo  # pidf is the rarer path; import lazily

        return parse_pidf_lo(payload)
    if text.startswith("v=") or ("=" in text and "&" in text):
        return parse_https_form(payload)
    raise LocationParseError(
        'unrecognised location payload: expected AML SMS text (A"ML=...), data-SMS user data '
        f"in hex, an HTTPS form (v=...&...) or PIDF-LO XML; got {_show(text, 30)}",
        payload,
    )

