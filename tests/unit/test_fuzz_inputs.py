"""Fuzz every external input: each is accepted or rejected with our own error, never a crash.

Inputs: AML SMS text, data-SMS hex, the HTTPS form, PIDF-LO XML, Asterisk GEOLOC_PROFILE
variables, P-Access-Network-Info, site config (TOML text, parsed tables and files), and over
HTTP, POST /aml (a gateway's token) and POST /api/v1/complaints (JSON) against the real aiohttp
app on a loopback port with a real (SQLite) database.

Strategies are structure-aware (valid seeds with fields dropped, duplicated, swapped or given
boundary/unicode/huge values) plus raw text and bytes. CI runs 10,000 cases in all; set
SIAGA112_FUZZ_SCALE=20 (``make fuzz``) for 200,000, and SIAGA112_FUZZ_RANDOM=1 to leave the
derandomised (reproducible) search and explore new ground each run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import tomllib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ari_app.config import SITES_DIR, ConfigError, load_site, parse_site
from ari_app.location.aml import (
    _GSM7_BASIC,
    HTTPS_FIELDS,
    parse_any,
    parse_https_form,
    parse_sms_text,
    parse_sms_user_data_hex,
)
from ari_app.location.cell import CellId, parse_p_access_network_info
from ari_app.location.model import Location, LocationParseError
from ari_app.location.pidf import CIVIC_ELEMENTS, parse_geoloc_profile_vars, parse_pidf_lo
from ari_app.secrets import secret
from ari_app.testing.web import web_session
from ari_app.tickets.migrate import upgrade
from ari_app.tickets.models import InputRejection, LocationRecord, Ticket
from ari_app.web.ratelimit import AML_LIMITER, COMPLAINTS_LIMITER, RateLimit
from tests.integration.console_stack import WebStack, web_stack
from tests.unit.test_aml import pack_septets
from tests.unit.test_location_fuzz import PIDF_SEEDS

T = TypeVar("T")

SCALE = max(1, int(os.environ.get("SIAGA112_FUZZ_SCALE", "1") or "1"))
RANDOM = os.environ.get("SIAGA112_FUZZ_RANDOM", "") == "1"

# Cases per target at scale 1: 10,000 in all.
BUDGET = {
    "sms_text": 1200, "data_sms": 800, "https_form": 1200, "pidf": 1200, "geoloc": 800,
    "pani": 800, "parse_any": 400,
    "config_tables": 800, "config_text": 600, "config_file": 300,
    "aml_http": 1400, "complaints_http": 500,
}
assert sum(BUDGET.values()) == 10_000


def fuzz(target: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=BUDGET[target] * SCALE,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# ---------------------------------------------------------------------------------------------
# seeds and boundary values

SMS_SEEDS = (
    'A"ML=1;lt=+54.76397;lg=-0.18305;rd=50;top=20130717141935;lc=90;pm=W;'
    "si=123456789012345;ei=1234567890123456;mcc=234;mnc=30;ml=128",
    'A"ML=1;lt=-6.58870;lg=+110.66840;rd=N;top=20250519030405;lc=0;pm=N;ml=70',
    'A"ML=2;en=+15555555555;et=1593187189;lo=-37.42175,-122.08461,2000.1;lt=-9999;lc=68;'
    "lz=-100.1,100.1;ls=G;ei=358239059042542;nc=310260;hc=310260;lg=en-US",
    'A"ML=2;en=112;et=1747623845;lo=-6.5887,110.6684,0;lt=-3;ls=W;nc=51010',
)
FORM_SEEDS = (
    "v=3&emergency_number=112&source=CALL&time=1438101600123&location_latitude=-6.5887"
    "&location_longitude=110.6684&location_accuracy=20&location_confidence=0.6827"
    "&location_source=wifi&device_number=%2B6281234567890&location_time=1438101600999",
    "v=1&emergency_number=112&source=sms&time=1747623845000&location_latitude=-6.5887"
    "&location_longitude=110.6684&location_altitude=12.5&location_floor=2&location_certainty=68"
    "&location_vertical_accuracy=3&location_bearing=359&location_speed=1.5&device_imei="
    "353472104343540&device_imsi=510100000000000&device_iccid=8962100000000000000&device_model="
    "Pixel%207&device_languages=id-ID%2Cen&device_os=Android&cell_carrier=&cell_home_mcc=510"
    "&cell_home_mnc=10&cell_network_mcc=510&cell_network_mnc=10&cell_id=1A2B3C&hmac=0123456789abcdef",
)
GEOLOC_SEEDS = (
    'shape="Circle",crs="2d",pos="-6.58870 110.66840",radius="850"',
    'shape="Polygon",crs="2d",pos="-6.6 110.6",pos="-6.6 110.7",pos="-6.5 110.7"',
    'shape=Ellipsoid,crs=3d,pos3d="-6.5 110.6 20",semiMajorAxis=100,semiMinorAxis=50,'
    "verticalAxis=10,orientation=20",
    'shape=ArcBand,pos="-6.5 110.6",innerRadius=10,outerRadius=900,startAngle=0,openingAngle=90',
    'country="ID",A1="Jawa Tengah",A3="Jepara",HNO="12"',
)
PANI_SEEDS = (
    '3GPP-E-UTRAN-FDD; utran-cell-id-3gpp="5101012AB0123456"',
    "3GPP-GERAN; cgi-3gpp=51001ABCD1234; network-provided, IEEE-802.11",
    '3GPP-NR-FDD; utran-cell-id-3gpp="51010000ABC123456789"',
    "3GPP-UTRAN-TDD; utran-cell-id-3gpp=51010ABCD1234567",
)
TIMESTAMPS = (
    "2025-05-19T03:04:05Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z", "2025-05-19T03:04:05", "2025-13-40T25:61:61Z", "2025-05-19",
)
BOUNDARY = (
    "", " ", "0", "-0", "+0", "00", "1", "-1", "0.5", "1.0000001", "-90", "90", "90.0000001",
    "-90.000000000000001", "180", "-180", "180.1", "360", "361", "100", "101", "-9999",
    "999999999", "999999999.999999999", "1" * 20, "9" * 400, "1e5", "1e308", "-1e308",
    "nan", "NaN", "inf", "-inf", "Infinity", "0x1F", "1_000", "+", "-", ".", "1.", ".5",
    "\uff12\uff13", "\u0663\u0664", "\U0001d7d7\U0001d7d7", "\u0661\u0660\u0660",
    "9" * 14, "0" * 14, "20250230010101", "99991231235959",
    "4102444800", "4102444800000", "4102444800001", "N", "G", "W", "C", "F", "U", "gps", "fused",
    "A\"ML=1", "A\"ML=2", ";", "&", "=", ",", "\"", "\\", "%", "%ff", "%C3%28", "%00", "%2B",
    "\x00", "\x1b", "\r\n", "\t", "é", "\u202e", "\ufeff", "\U0001f4a9", "x" * 101, "x" * 5000,
    "<", "<x/>", "]]>", "&amp;", "&lt;", *TIMESTAMPS,
)


def boundary_or_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(BOUNDARY), st.text(max_size=24),
                     st.integers().map(str), st.floats().map(repr),
                     st.decimals(allow_nan=False, places=12).map(str))


# ---------------------------------------------------------------------------------------------
# structure-aware mutation of separator-delimited key=value messages


@st.composite
def mutated_fields(draw: st.DrawFn, seeds: Sequence[str], sep: str,
                   keys: Sequence[str] = ()) -> str:
    """A seed split on ``sep``, with 1-4 fields dropped, duplicated, swapped or rewritten."""
    parts = draw(st.sampled_from(seeds)).split(sep)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("drop", "dup", "value", "key", "insert", "swap", "noise")))
        i = draw(st.integers(0, max(0, len(parts) - 1)))
        if not parts:
            parts.append("")
        key, eq, _ = parts[i].partition("=")
        if op == "drop" and len(parts) > 1:
            del parts[i]
        elif op == "dup":
            parts.insert(i, parts[i])
        elif op == "value":
            parts[i] = f"{key}={draw(boundary_or_text())}" if eq else draw(boundary_or_text())
        elif op == "key":
            new_key = draw(st.sampled_from(keys) if keys else st.text(max_size=8))
            parts[i] = f"{new_key}={parts[i].partition('=')[2]}"
        elif op == "insert":
            new_key = draw(st.sampled_from(keys) if keys else st.text(max_size=8))
            parts.insert(i, f"{new_key}={draw(boundary_or_text())}")
        elif op == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        else:
            at = draw(st.integers(0, len(parts[i])))
            parts[i] = parts[i][:at] + draw(st.text(max_size=6)) + parts[i][at:]
    return sep.join(parts)


@st.composite
def sliced(draw: st.DrawFn, seeds: Sequence[str]) -> str:
    """A seed with one random slice replaced by random text (reaches the deeper checks)."""
    seed = draw(st.sampled_from(seeds))
    start = draw(st.integers(0, len(seed)))
    end = draw(st.integers(start, len(seed)))
    return seed[:start] + draw(st.text(max_size=12)) + seed[end:]


def raw_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(),
        st.binary().map(lambda data: data.decode("utf-8", errors="replace")),
        st.builds(lambda unit, n: unit * n, st.sampled_from(("9", "A", ";", "=", "<a>", "é", "\x00")),
                  st.integers(500, 20_000)),
    )


def inputs(seeds: Sequence[str], sep: str, keys: Sequence[str] = ()) -> st.SearchStrategy[str]:
    return st.one_of(mutated_fields(seeds, sep, keys), sliced(seeds), raw_text(),
                     st.sampled_from(seeds))


SMS_KEYS = ("lt", "lg", "rd", "top", "lc", "pm", "si", "ei", "mcc", "mnc", "ml", "en", "et", "lo",
            "lz", "ls", "nc", "hc", 'A"ML', "", "x")
GSM7_INDEX = {char: index for index, char in enumerate(_GSM7_BASIC)}


def gsm7_pack_hex(text: str) -> str:
    """Pack text as GSM 7-bit septets (LSB first); characters outside the alphabet become '?'."""
    return pack_septets([GSM7_INDEX.get(char, GSM7_INDEX["?"]) for char in text]).hex().upper()


def sms_texts() -> st.SearchStrategy[str]:
    return inputs(SMS_SEEDS, ";", SMS_KEYS)


@st.composite
def data_sms_hex(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(("packed", "udh", "bytes", "text")))
    if kind == "bytes":
        return draw(st.binary(max_size=1100)).hex()
    if kind == "text":
        return draw(raw_text())
    packed = gsm7_pack_hex(draw(sms_texts()))
    if kind == "udh":  # a TP-UDH the gateway left in: length, then IEIs (maybe lying)
        header = draw(st.binary(min_size=1, max_size=12))
        packed = header.hex() + packed
    spacing = draw(st.sampled_from(("", " ", "\n")))
    return spacing.join(packed[i:i + 8] for i in range(0, len(packed), 8)) if spacing else packed


@st.composite
def https_forms(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(inputs(FORM_SEEDS, "&", sorted(HTTPS_FIELDS)))
    fields = draw(st.dictionaries(st.sampled_from(sorted(HTTPS_FIELDS)), boundary_or_text(),
                                  max_size=12))
    from urllib.parse import quote_plus
    return "&".join(f"{quote_plus(k)}={quote_plus(v, errors='surrogatepass')}"
                    for k, v in fields.items())


@st.composite
def pidf_documents(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(("template", "template", "tokens", "slice", "raw", "bytes")))
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "raw":
        return draw(raw_text())
    if kind == "slice":
        return draw(sliced(PIDF_SEEDS))
    if kind == "tokens":
        import re
        tokens = [t for t in re.split(r"(<[^>]*>)", PIDF_SEEDS[0]) if t]
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(tokens) - 1))
            op = draw(st.sampled_from(("drop", "dup", "text")))
            if op == "drop":
                del tokens[i]
            elif op == "dup":
                tokens.insert(i, tokens[i])
            else:
                tokens[i] = draw(boundary_or_text()).replace("<", "&lt;").replace("&", "&amp;")
        return "".join(tokens)
    shape = draw(st.sampled_from(("Point", "Circle", "Sphere", "Ellipse", "Ellipsoid", "ArcBand",
                                  "Polygon", "Prism", "LineString", "")))
    ns = "gml" if shape in ("Point", "Polygon") else "gs"
    srs = draw(st.sampled_from(("urn:ogc:def:crs:EPSG::4326", "urn:ogc:def:crs:EPSG::4979", "",
                                "EPSG:4326")))
    uom = draw(st.sampled_from(("urn:ogc:def:uom:EPSG::9001", "m", "")))
    pos = " ".join(draw(st.lists(boundary_or_text().filter(lambda s: "<" not in s and "&" not in s),
                                 min_size=0, max_size=3)))
    pos = draw(st.sampled_from((pos, "-6.5887 110.6684", "-6.5887 110.6684 12", "90 180",
                                "-90 -180 -99999")))
    body = f"<gml:pos>{pos}</gml:pos>"
    if shape in ("Polygon", "Prism"):
        vertices = draw(st.lists(st.sampled_from(("-6.6 110.6", "-6.6 110.7", "-6.5 110.7",
                                                  "90 180", "-90 -180", pos)), max_size=6))
        body = ("<gml:exterior><gml:LinearRing>"
                + "".join(f"<gml:pos>{v}</gml:pos>" for v in vertices)
                + "</gml:LinearRing></gml:exterior>")
    for child in ("radius", "semiMajorAxis", "outerRadius"):
        if draw(st.booleans()):
            value = draw(st.sampled_from(("850", "0", "-1", "1e9", "9" * 30, pos)))
            body += f'<gs:{child} uom="{uom}">{value}</gs:{child}>'
    civic = ""
    if draw(st.booleans()):
        elements = draw(st.lists(st.sampled_from([*sorted(CIVIC_ELEMENTS), "XX", "country"]),
                                 max_size=5))
        value = draw(st.sampled_from(("ID", "Jepara", "", "x" * 300, "\u202e", "i d")))
        civic = ("<ca:civicAddress>" + "".join(f"<ca:{e}>{value}</ca:{e}>" for e in elements)
                 + "</ca:civicAddress>")
    timestamp = draw(st.sampled_from((*TIMESTAMPS, "")))
    ts = f"<timestamp>{timestamp}</timestamp>" if timestamp else ""
    method = draw(st.sampled_from(("Cell", "gps", "", "bogus", "802.11")))
    confidence = draw(st.sampled_from(("", "68", "101", "-1", "nan")))
    conf = (f'<con:confidence xmlns:con="urn:ietf:params:xml:ns:geopriv:conf">{confidence}'
            "</con:confidence>") if confidence else ""
    shape_xml = f'<{ns}:{shape} srsName="{srs}">{body}</{ns}:{shape}>' if shape else ""
    repeat = draw(st.integers(1, 2))
    document = (
        '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml" '
        'xmlns:gs="http://www.opengis.net/pidflo/1.0" '
        'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" entity="pres:+62812@x">'
        + ('<tuple id="a"><status><gp:geopriv><gp:location-info>'
           f"{shape_xml}{civic}{conf}</gp:location-info><gp:method>{method}</gp:method>"
           f"</gp:geopriv></status>{ts}</tuple>") * repeat
        + "</presence>")
    return document.encode() if draw(st.booleans()) else document


GEOLOC_KEYS = ("shape", "crs", "pos", "pos3d", "radius", "semiMajorAxis", "outerRadius",
               "orientation", "country", "A1", "A3", "HNO", "bogus", "")
PANI_KEYS = ("utran-cell-id-3gpp", "cgi-3gpp", "nrcgi", "network-provided", "i-wlan-node-id", "")


@st.composite
def pani_headers(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(inputs(PANI_SEEDS, draw(st.sampled_from((";", ","))), PANI_KEYS))
    access = draw(st.sampled_from(("3GPP-GERAN", "3GPP-UTRAN-FDD", "3GPP-E-UTRAN-TDD",
                                   "3GPP-NR-FDD", "IEEE-802.11", "3gpp-e-utran-fdd", "")))
    mcc = draw(st.sampled_from(("510", "234", "001", "\u0665\u0661\u0660", "51")))
    rest = draw(st.text(alphabet="0123456789ABCDEFabcdefG", max_size=20))
    quote = draw(st.sampled_from(('"', "", '"""')))
    parameter = draw(st.sampled_from(PANI_KEYS))
    return f"{access}; {parameter}={quote}{mcc}{rest}{quote}"


# ---------------------------------------------------------------------------------------------
# parsers


def only_rejects(parse: Callable[[T], object], payload: T) -> None:
    try:
        result = parse(payload)
    except LocationParseError as error:
        assert error.reason
        return
    assert result is None or isinstance(result, Location | CellId)
    if isinstance(result, Location) and result.latitude is not None:
        assert math.isfinite(result.latitude) and result.longitude is not None
        assert math.isfinite(result.longitude)


@fuzz("sms_text")
@given(sms_texts())
def test_sms_text(payload: str) -> None:
    only_rejects(parse_sms_text, payload)


@fuzz("data_sms")
@given(data_sms_hex())
def test_data_sms_hex(payload: str) -> None:
    only_rejects(parse_sms_user_data_hex, payload)


@fuzz("https_form")
@given(https_forms())
def test_https_form(payload: str) -> None:
    only_rejects(parse_https_form, payload)


@fuzz("pidf")
@given(pidf_documents())
def test_pidf_lo(payload: str | bytes) -> None:
    only_rejects(parse_pidf_lo, payload)


@fuzz("geoloc")
@given(inputs(GEOLOC_SEEDS, ",", GEOLOC_KEYS),
       st.sampled_from(("GML", "gml", "civicAddress", "URI", "", " GML ", "xml")),
       st.one_of(st.sampled_from(("GPS", "Cell", "", "manual", "bogus")), st.text(max_size=10)))
def test_geoloc_profile_variables(info: str, fmt: str, method: str) -> None:
    only_rejects(lambda text: parse_geoloc_profile_vars(text, fmt, method), info)


@fuzz("pani")
@given(pani_headers(), st.sampled_from((None, 2, 3)))
def test_p_access_network_info(header: str, digits: int | None) -> None:
    only_rejects(lambda text: parse_p_access_network_info(text, mnc_digits=digits), header)


@fuzz("parse_any")
@given(st.one_of(sms_texts(), data_sms_hex(), https_forms(),
                 pidf_documents().map(lambda d: d if isinstance(d, str)
                                      else d.decode("utf-8", errors="replace"))))
def test_parse_any(payload: str) -> None:
    only_rejects(parse_any, payload)


# ---------------------------------------------------------------------------------------------
# site configuration

CONFIG_SEEDS = tuple((SITES_DIR / f"{code}.toml").read_text() for code in ("jepara", "batola"))
CONFIG_TABLES = tuple(tomllib.loads(text) for text in CONFIG_SEEDS)

toml_scalars: st.SearchStrategy[Any] = st.one_of(
    boundary_or_text(), st.integers(), st.integers(-(10**30), 10**30), st.just(10**400),
    st.floats(), st.booleans(), st.datetimes(), st.dates(), st.times(),
    st.sampled_from(("Asia/Jakarta", "Asia", "Asia/", "a" * 300, "UTC", "../etc", "07:00",
                     "24:00", "forward", "message_callback", "DAMKAR", "health", "112")),
)
toml_values: st.SearchStrategy[Any] = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_tables(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(CONFIG_TABLES))))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(data))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = draw(st.sampled_from(("drop", "replace", "replace", "add", "dup")))
        if op == "drop":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(toml_values)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(("bogus", "extra", "web", "screening", "prompts",
                                         "other_services", "x")))] = draw(toml_values)
        elif op == "dup" and isinstance(parent, list):
            parent.append(parent[last])
    return data


@st.composite
def mutated_toml_text(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(CONFIG_SEEDS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(("drop", "dup", "value", "value", "noise")))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "value" and "=" in lines[i]:
            key = lines[i].partition("=")[0]
            value = draw(st.sampled_from((
                '"Asia"', '"a"' * 100, "9" * 400, "9" * 5000, "1e400", "nan", "-inf", "0x" + "f" * 40,
                "true", "[]", "{}", '["xx", 1]', "1979-05-27T07:32:00Z", "07:32:00", '"\\u0000"',
                "'''\n'''", '"' + "é" * 50 + '"', "-1", "0", "65536", "1.5", '"24:00"',
                "[" * 3000, "{ a = " * 2000)))
            lines[i] = f"{key}= {value}"
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=8)) + lines[i][at:]
    return "\n".join(lines)


def parse_toml_site(text: str) -> None:
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        # tomllib's own failures: TOMLDecodeError, ValueError for integers over 4300 digits and
        # RecursionError for deeply nested arrays/tables. load_site must turn all three into a
        # ConfigError (test_site_file checks that).
        return
    try:
        parse_site("fuzz.toml", data)
    except ConfigError:
        pass


@fuzz("config_tables")
@given(mutated_tables())
def test_site_tables(data: dict[str, Any]) -> None:
    try:
        parse_site("fuzz.toml", data)
    except ConfigError as error:
        assert str(error).startswith("fuzz.toml: ")


@fuzz("config_text")
@given(st.one_of(mutated_toml_text(), st.text()))
def test_site_toml_text(text: str) -> None:
    parse_toml_site(text)


@fuzz("config_file")
@given(st.one_of(mutated_toml_text().map(lambda t: t.encode("utf-8", errors="surrogatepass")),
                 st.binary(max_size=400)))
def test_site_file(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-site.toml"
    path.write_bytes(content)
    try:
        load_site(path)
    except ConfigError:
        pass


# ---------------------------------------------------------------------------------------------
# HTTP: the real aiohttp app on a loopback port, a real database, driven from a loop thread


class LoopThread:
    """An event loop in a thread, so hypothesis (synchronous) can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class LiveWeb:
    loop: LoopThread
    stack: WebStack
    http: aiohttp.ClientSession
    aml_token: str
    api_token: str
    max_body: int
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(self.stack.url + path, data=body, headers=headers) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def count(self, model: type[Any]) -> int:
        await self.stack.app.writer.flush(60)
        async with self.stack.app.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture(scope="module")
def live_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWeb]:
    base = tmp_path_factory.mktemp("fuzz-web")
    var_dir = base / "var"
    var_dir.mkdir()
    url = f"sqlite+aiosqlite:///{base}/siaga112.db"
    upgrade(url)
    site = load_site("jepara")
    loop = LoopThread()
    context = web_stack(url, var_dir, site)

    async def start() -> LiveWeb:
        stack = await context.__aenter__()
        assert stack.app.web is not None and stack.app.web.runner is not None
        web_app = stack.app.web.runner.app
        for key in (AML_LIMITER, COMPLAINTS_LIMITER):  # the fuzzer is one very busy client
            web_app[key].limit = RateLimit(1e9, 1_000_000)
        return LiveWeb(loop, stack, web_session(), secret(var_dir, "aml-smsgw.token"),
                       await stack.token("fuzzer", "operator"), site.web.max_body_bytes)

    live = loop.run(start())
    try:
        yield live
    finally:
        async def stop() -> None:
            await live.http.close()
            await context.__aexit__(None, None, None)

        loop.run(stop())
        loop.close()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def aml_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(("form", "json", "json", "raw", "other")))
    if kind == "form":
        content_type = draw(st.sampled_from(("application/x-www-form-urlencoded", "text/plain", "")))
        return content_type, _encode(draw(https_forms()))
    if kind == "json":
        message: dict[str, Any] = {}
        if draw(st.booleans()):
            message["from"] = draw(st.sampled_from(("+6281234567890", "081234567890", "", "anonymous")))
        field_name = draw(st.sampled_from(("text", "hex", "both", "neither")))
        if field_name in ("text", "both"):
            message["text"] = draw(sms_texts())
        if field_name in ("hex", "both"):
            message["hex"] = draw(data_sms_hex())
        if draw(st.integers(0, 9)) == 0:
            message[draw(st.sampled_from(("received_at", "bogus", "from")))] = draw(toml_values.filter(
                lambda v: not isinstance(v, (int | float)) or abs(v) < 10**300).map(str))
        body = json.dumps(message, ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:
            body = draw(st.sampled_from(("[" * 5000, "{}", "null", "[]", '"x"', body[: len(body) // 2])))
        return "application/json", _encode(body)
    if kind == "raw":
        content_type = draw(st.sampled_from(("application/json", "text/plain", "")))
        return content_type, draw(st.one_of(st.binary(max_size=3000), raw_text().map(_encode)))
    content_type = draw(st.sampled_from(("application/xml", "multipart/form-data",
                                         "application/json; charset=latin-1", "x/y")))
    return content_type, draw(st.binary(max_size=200))


def test_aml_endpoint(live_web: LiveWeb) -> None:
    """Every authorised POST /aml is answered 2xx and stored: as a location or a rejection."""
    live = live_web
    before_rejected = live.loop.run(live.count(InputRejection))
    before_locations = live.loop.run(live.count(LocationRecord))
    counts = {"accepted": 0, "rejected": 0, "too_large": 0, "requests": 0}

    @fuzz("aml_http")
    @given(aml_requests())
    def one(request: tuple[str, bytes]) -> None:
        content_type, body = request
        headers = {"Authorization": f"Bearer {live.aml_token}"}
        if content_type:
            headers["Content-Type"] = content_type
        status, answer = live.loop.run(live.post("/aml", body, headers))
        counts["requests"] += 1
        if status == 413:
            assert len(body) > live.max_body, (status, answer)
            counts["too_large"] += 1
            return
        assert status == 200, (status, answer)
        assert isinstance(answer, dict) and answer["status"] in ("accepted", "rejected"), answer
        counts[answer["status"]] += 1

    one()
    assert not live.stack.app.writer.failed, live.stack.app.writer.failed
    rejected = live.loop.run(live.count(InputRejection)) - before_rejected
    locations = live.loop.run(live.count(LocationRecord)) - before_locations
    assert (rejected, locations) == (counts["rejected"], counts["accepted"]), counts
    assert rejected + locations + counts["too_large"] == counts["requests"], counts


complaint_values: st.SearchStrategy[Any] = st.one_of(
    boundary_or_text(), st.sampled_from(("081234567890", "+62 812-3456-7890", "Pohon tumbang di jalan",
                                         "complaint", "fire", "health", "x" * 2001)),
    toml_values.filter(lambda v: not isinstance(v, (int | float)) or abs(v) < 10**300).map(
        lambda v: v if isinstance(v, (str | bool | int | float | list | dict)) else str(v)),
)


@st.composite
def complaint_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("valid", "fields", "fields", "raw")))
    if kind == "raw":
        return draw(st.one_of(st.binary(max_size=2000), raw_text().map(_encode),
                              st.sampled_from((b"[" * 5000, b"{" * 3000, b"null", b"[]", b'{"a":'))))
    body: dict[str, Any] = {"description": "Lampu jalan mati sejak kemarin malam",
                            "phone": "081234567890", "name": "Siti", "category": "complaint"}
    if kind == "fields":
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(("description", "phone", "name", "category", "bogus", "")))
            if draw(st.booleans()) and key in body:
                del body[key]
            else:
                body[key] = draw(complaint_values)
    return json.dumps(body, ensure_ascii=draw(st.booleans()), default=str).encode(
        "utf-8", errors="surrogatepass")


def test_complaints_endpoint(live_web: LiveWeb) -> None:
    """POST /api/v1/complaints: 201 and a ticket, or a 4xx with a JSON error; never a 5xx."""
    live = live_web
    before = live.loop.run(live.count(Ticket))
    created = 0

    @fuzz("complaints_http")
    @given(complaint_bodies())
    def one(body: bytes) -> None:
        nonlocal created
        headers = {"Authorization": f"Bearer {live.api_token}", "Content-Type": "application/json"}
        status, answer = live.loop.run(live.post("/api/v1/complaints", body, headers))
        assert status < 500, (status, answer)
        if status == 201:
            created += 1
            assert isinstance(answer, dict) and answer["status"] == "new"
        else:
            assert status in (413, 422), (status, answer)
            assert status == 413 or (isinstance(answer, dict) and answer.get("error")), answer

    one()
    assert live.loop.run(live.count(Ticket)) - before == created
