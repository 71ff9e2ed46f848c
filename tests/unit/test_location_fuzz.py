"""Hostile input never crashes a location parser: it is rejected with LocationParseError.

Each parser gets raw text, bytes decoded with replacement characters, and valid messages with a
random slice replaced by junk (which reaches the deeper validation code). Set
LOCATION_FUZZ_EXAMPLES to run more or fewer examples per test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ari_app.location.aml import (
    HTTPS_FIELDS,
    parse_any,
    parse_https_form,
    parse_sms_text,
    parse_sms_user_data_hex,
)
from ari_app.location.cell import CellId, parse_p_access_network_info
from ari_app.location.model import Location, LocationParseError
from ari_app.location.numbers import InvalidNumber, normalise_msisdn
from ari_app.location.pidf import parse_geoloc_profile_vars, parse_pidf_lo

settings.register_profile(
    "location-fuzz",
    max_examples=int(os.environ.get("LOCATION_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ = settings.get_profile("location-fuzz")
T = TypeVar("T")

SMS_SEEDS = (
    'A"ML=1;lt=+54.76397;lg=-0.18305;rd=50;top=20130717141935;lc=90;pm=W;'
    "si=123456789012345;ei=1234567890123456;mcc=234;mnc=30;ml=128",
    'A"ML=2;en=+15555555555;et=1593187189;lo=-37.42175,-122.08461,2000.1;lt=-9999;lc=68;'
    "lz=-100.1,100.1;ls=G;ei=358239059042542;nc=310260;hc=310260;lg=en-US",
)
HEX_SEEDS = (
    "415193D98BEDD8F4DEECE6A2C962B7DA8E7DEEB56232990B86A3D9623B39B92783EDE86F784F068BD560B6D80C"
    "1683E568B81D7BDCB3E176F076EFB89BA77B39DCCD56A3C966B15D39DD9BD570B2590E56CBC168B21A4DB66B8F"
    "C7BD590CB66BBBC73D990DB66BB37B31D90C",
)
FORM_SEEDS = (
    "v=3&emergency_number=112&source=CALL&time=1438101600123&location_latitude=-6.5887"
    "&location_longitude=110.6684&location_accuracy=20&location_confidence=0.6827"
    "&location_source=wifi&device_number=%2B6281234567890&location_time=1438101600999",
)
PIDF_SEEDS = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml" '
    'xmlns:gs="http://www.opengis.net/pidflo/1.0" '
    'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" entity="pres:+62812@x">'
    '<tuple id="a"><status><gp:geopriv><gp:location-info>'
    '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>-6.5887 110.6684</gml:pos>'
    '<gs:radius uom="urn:ogc:def:uom:EPSG::9001">850</gs:radius></gs:Circle>'
    "<ca:civicAddress><ca:country>ID</ca:country><ca:A3>Jepara</ca:A3></ca:civicAddress>"
    "</gp:location-info><gp:method>Cell</gp:method></gp:geopriv></status>"
    "<timestamp>2025-05-19T03:04:05Z</timestamp></tuple></presence>",
)
GEOLOC_SEEDS = (
    'shape="Circle",crs="2d",pos="-6.58870 110.66840",radius="850"',
    'shape="Polygon",crs="2d",pos="-6.6 110.6",pos="-6.6 110.7",pos="-6.5 110.7"',
    'country="ID",A1="Jawa Tengah",A3="Jepara"',
)
PANI_SEEDS = (
    '3GPP-E-UTRAN-FDD; utran-cell-id-3gpp="5101012AB0123456"',
    "3GPP-GERAN; cgi-3gpp=51001ABCD1234; network-provided, IEEE-802.11",
)
NUMBER_SEEDS = ("+62 812-3456-7890", "0812 3456 7890", "112", "sip:+6281234567890@x")


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[str]) -> str:
    """A valid message with one random slice replaced by random text."""
    seed = draw(st.sampled_from(seeds))
    start = draw(st.integers(0, len(seed)))
    end = draw(st.integers(start, len(seed)))
    return seed[:start] + draw(st.text(max_size=12)) + seed[end:]


def anything(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(),
        st.binary().map(lambda data: data.decode("utf-8", errors="replace")),
        mutated(seeds),
    )


def only_rejects(parse: Callable[[T], object], payload: T) -> None:
    try:
        result = parse(payload)
    except LocationParseError as error:
        assert error.reason
    else:
        assert result is None or isinstance(result, Location | CellId)


@FUZZ
@given(anything(SMS_SEEDS))
def test_sms_text_parser_only_ever_rejects(payload: str) -> None:
    only_rejects(parse_sms_text, payload)


@FUZZ
@given(st.one_of(anything(HEX_SEEDS), st.binary().map(bytes.hex)))
def test_data_sms_parser_only_ever_rejects(payload: str) -> None:
    only_rejects(parse_sms_user_data_hex, payload)


@FUZZ
@given(anything(FORM_SEEDS))
def test_https_form_parser_only_ever_rejects(payload: str) -> None:
    only_rejects(parse_https_form, payload)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(HTTPS_FIELDS)), st.text(max_size=20)))
def test_https_form_mapping_parser_only_ever_rejects(fields: dict[str, str]) -> None:
    only_rejects(lambda _: parse_https_form(fields), "")


@FUZZ
@given(anything(SMS_SEEDS + HEX_SEEDS + FORM_SEEDS + PIDF_SEEDS))
def test_parse_any_only_ever_rejects(payload: str) -> None:
    only_rejects(parse_any, payload)


@FUZZ
@given(st.one_of(anything(PIDF_SEEDS), st.binary()))
def test_pidf_parser_only_ever_rejects(payload: str | bytes) -> None:
    only_rejects(parse_pidf_lo, payload)


@FUZZ
@given(anything(GEOLOC_SEEDS), st.sampled_from(["GML", "civicAddress", "URI", "gml", ""]),
       st.text(max_size=10))
def test_geoloc_variables_parser_only_ever_rejects(info: str, fmt: str, method: str) -> None:
    only_rejects(lambda text: parse_geoloc_profile_vars(text, fmt, method), info)


@FUZZ
@given(anything(PANI_SEEDS), st.sampled_from([None, 2, 3]))
def test_p_access_network_info_parser_only_ever_rejects(header: str, digits: int | None) -> None:
    only_rejects(lambda text: parse_p_access_network_info(text, mnc_digits=digits), header)


@FUZZ
@given(anything(NUMBER_SEEDS))
def test_number_normaliser_only_ever_rejects_with_invalid_number(number: str) -> None:
    try:
        result = normalise_msisdn(number)
    except InvalidNumber:
        return
    assert result == normalise_msisdn(result), "normalising twice changes nothing"


@FUZZ
@given(
    st.floats(-90, 90, allow_nan=False),
    st.floats(-180, 180, allow_nan=False),
    st.integers(0, 100_000),
    st.integers(0, 100),
    st.sampled_from("GWCU"),
)
def test_any_valid_v1_message_round_trips(
    latitude: float, longitude: float, radius: int, confidence: int, method: str
) -> None:
    body = (
        f'A"ML=1;lt={latitude:+.5f};lg={longitude:+.5f};rd={radius};top=20250519030405;'
        f"lc={confidence};pm={method};si=510100000000000;ei=353472104343540;mcc=510;mnc=10;ml="
    )
    text = body + str(len(body) + 3)  # these messages are 100-999 characters, so ml has 3 digits
    location = parse_sms_text(text)
    assert location.latitude is not None and location.longitude is not None
    assert abs(location.latitude - latitude) <= 6e-6
    assert abs(location.longitude - longitude) <= 6e-6
    assert location.radius_m == radius
    assert location.confidence_pct == confidence
    assert location.warnings == ()
