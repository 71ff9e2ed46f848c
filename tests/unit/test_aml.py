"""AML as a handset sends it: ETSI/ELS SMS text, data-SMS user data and the HTTPS form."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ari_app.location.aml import (
    decode_gsm7_packed,
    parse_any,
    parse_https_form,
    parse_sms_text,
    parse_sms_user_data_hex,
)
from ari_app.location.model import LocationParseError

# ETSI TS 103 625 example message (128 characters, so its ml=128 is right).
ETSI_V1 = (
    'A"ML=1;lt=+54.76397;lg=-0.18305;rd=50;top=20130717141935;lc=90;pm=W;'
    "si=123456789012345;ei=1234567890123456;mcc=234;mnc=30;ml=128"
)
# Google ELS SMS reference examples.
ELS_NO_LOCATION = (
    'A"ML=1;lt=+00.00000;lg=+000.00000;rd=N;top=20220131173734;lc=0;pm=N;'
    "si=234159000000000;ei=123456789012345;mcc=234;mnc=15;ml=127"
)
ELS_COMPUTED = (
    'A"ML=1;lt=+51.53321;lg=-0.12601;rd=14;top=20220131171748;lc=68;pm=W;'
    "si=234159000000000;ei=123456789012345;mcc=234;mnc=15;ml=126"
)
ELS_V2 = (
    'A"ML=2;en=+15555555555;et=1593187189;lo=-37.42175,-122.08461,2000.1;lt=-9999;lc=68;'
    "lz=-100.1,100.1;ls=G;ei=358239059042542;nc=310260;hc=310260;lg=en-US"
)
# ELS data-SMS example: the 7-bit packed user data of a v1 message.
ELS_DATA_SMS_HEX = (
    "415193D98BEDD8F4DEECE6A2C962B7DA8E7DEEB56232990B86A3D9623B39B92783EDE86F784F068BD560B6D80C"
    "1683E568B81D7BDCB3E176F076EFB89BA77B39DCCD56A3C966B15D39DD9BD570B2590E56CBC168B21A4DB66B8F"
    "C7BD590CB66BBBC73D990DB66BB37B31D90C"
)
# ETSI TS 103 625 HTTPS example body.
ETSI_HTTPS = (
    "v=1&device_number=%2B447477593102&location_latitude=55.85732&location_longitude=-4.26325"
    "&location_time=1476189444435&location_accuracy=10.4&location_source=GPS"
    "&location_certainty=83&location_altitude=0.0&location_floor=5"
    "&device_model=ABC+ABC+Detente+530&device_imei=354773072099116&device_imsi=234159176307582"
    "&device_os=AOS&cell_carrier=&cell_home_mcc=234&cell_home_mnc=15&cell_network_mcc=234"
    "&cell_network_mnc=15&cell_id=0213454321"
)


def rejection(text: str) -> str:
    with pytest.raises(LocationParseError) as caught:
        parse_sms_text(text)
    assert caught.value.raw == text, "a rejection keeps the raw text so it can be stored"
    return caught.value.reason


# --- SMS v1 -----------------------------------------------------------------------------------


def test_etsi_example_sms_gives_wifi_fix_with_every_field() -> None:
    assert len(ETSI_V1) == 128
    location = parse_sms_text(ETSI_V1)
    assert location.source == "aml-sms"
    assert (location.latitude, location.longitude) == (54.76397, -0.18305)
    assert location.radius_m == 50
    assert location.confidence_pct == 90
    assert location.method == "WiFi"
    assert location.fix_time == datetime(2013, 7, 17, 14, 19, 35, tzinfo=UTC)
    assert location.imsi == "123456789012345"
    assert location.imei == "1234567890123456"
    assert (location.mcc, location.mnc) == ("234", "30")
    assert location.warnings == ()
    assert location.raw == ETSI_V1
    assert location.has_location


def test_aml_sms_whose_ml_disagrees_is_kept_with_a_warning() -> None:
    text = ETSI_V1.replace("ml=128", "ml=10")
    location = parse_sms_text(text)
    assert location.latitude == 54.76397
    assert location.warnings == ("ml=10 but message has 127 characters",)


def test_google_computed_example_has_an_off_by_one_ml_and_still_parses() -> None:
    location = parse_sms_text(ELS_COMPUTED)
    assert location.warnings == ("ml=126 but message has 127 characters",)
    assert location.method == "WiFi"


def test_handset_without_a_fix_is_stored_as_no_location() -> None:
    location = parse_sms_text(ELS_NO_LOCATION)
    assert location.method == "None"
    assert location.latitude is None and location.longitude is None
    assert location.radius_m is None
    assert not location.has_location
    assert location.warnings == ()
    assert location.fix_time == datetime(2022, 1, 31, 17, 37, 34, tzinfo=UTC)


def test_rd_n_with_a_real_method_means_no_location_and_says_so() -> None:
    location = parse_sms_text(ETSI_V1.replace("rd=50", "rd=N").replace("ml=128", "ml=127"))
    assert location.method == "None" and not location.has_location
    assert location.warnings == ("pm=W but rd=N: treated as no location",)


def test_gateway_line_ending_does_not_count_towards_ml() -> None:
    location = parse_sms_text(ETSI_V1 + "\r\n")
    assert location.warnings == ()
    assert location.raw == ETSI_V1 + "\r\n"


def test_aml_sms_with_unknown_key_is_rejected_naming_the_key() -> None:
    assert rejection(ETSI_V1 + ";kl=23") == "unknown key 'kl'"


def test_aml_sms_with_fractional_confidence_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("lc=90", "lc=99.9")) == (
        "lc must be an integer 0-100, got '99.9'"
    )


def test_aml_sms_with_unknown_positioning_method_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("pm=W", "pm=Z")) == "pm must be one of G/W/C/N/U, got 'Z'"


def test_aml_sms_with_date_only_time_of_positioning_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("top=20130717141935", "top=20130717")) == (
        "top must be YYYYMMDDhhmmss, got '20130717'"
    )


def test_aml_sms_with_impossible_calendar_date_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("top=20130717141935", "top=20131317141935")) == (
        "top is not a real date and time: '20131317141935'"
    )


def test_aml_sms_with_latitude_beyond_the_pole_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("lt=+54.76397", "lt=91.0")) == "lt out of range -90..90: 91.0"


def test_aml_sms_with_longitude_beyond_the_antimeridian_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("lg=-0.18305", "lg=-180.5")) == (
        "lg out of range -180..180: -180.5"
    )


def test_aml_sms_with_repeated_key_is_rejected() -> None:
    assert rejection(ETSI_V1 + ";lt=+1.0") == "duplicate key 'lt'"


@pytest.mark.parametrize("value", ["nan", "inf", "1e5", "54,76", "+", ""])
def test_aml_sms_latitude_must_be_plain_decimal_degrees(value: str) -> None:
    reason = rejection(ETSI_V1.replace("lt=+54.76397", f"lt={value}"))
    assert reason == f"lt must be decimal degrees, got {value!r}"


def test_aml_sms_missing_a_core_key_is_rejected() -> None:
    assert rejection(ETSI_V1.replace("pm=W;", "")) == "missing key 'pm'"


def test_message_that_is_not_aml_is_rejected() -> None:
    assert rejection("hello, I need help") == "message does not start with A\"ML=: 'hello, I need help'"


def test_unsupported_aml_version_is_rejected() -> None:
    assert rejection('A"ML=3;lt=1') == "unsupported AML version '3': expected 1 or 2"


def test_attribute_without_equals_sign_is_rejected() -> None:
    assert rejection(ETSI_V1 + ";oops") == "attribute 'oops' has no '='"


# --- SMS v2 (ELS beta) ------------------------------------------------------------------------


def test_els_v2_example_parses_with_altitude_and_call_details() -> None:
    location = parse_sms_text(ELS_V2)
    assert (location.latitude, location.longitude) == (-37.42175, -122.08461)
    assert location.radius_m == 2000.1
    assert location.confidence_pct == 68
    assert location.method == "GNSS"
    assert location.altitude_m == -100.1
    assert location.vertical_accuracy_m == 100.1
    assert location.emergency_number == "+15555555555"
    assert location.call_time == datetime.fromtimestamp(1593187189, UTC)
    assert location.imei == "358239059042542"
    assert (location.mcc, location.mnc, location.home_mcc, location.home_mnc) == (
        "310", "260", "310", "260",
    )
    assert location.language == "en-US"
    # lt=-9999 is ELS's "location time unknown": no fix time is invented from it.
    assert location.fix_time is None
    assert location.warnings == ("lt=-9999: location time unknown",)


def test_els_v2_location_time_is_relative_to_the_call() -> None:
    location = parse_sms_text(ELS_V2.replace("lt=-9999", "lt=5"))
    assert location.fix_time == datetime.fromtimestamp(1593187189 + 5, UTC)
    assert location.warnings == ()


def test_els_v2_zero_accuracy_means_unknown_radius() -> None:
    location = parse_sms_text(ELS_V2.replace(",2000.1;", ",0;"))
    assert location.radius_m is None and location.has_location


def test_els_v2_without_lo_is_no_location() -> None:
    location = parse_sms_text('A"ML=2;en=112;et=1593187189;ei=358239059042542;nc=51010')
    assert location.method == "None" and not location.has_location
    assert (location.mcc, location.mnc) == ("510", "10")


def test_els_v2_with_unknown_location_source_is_rejected() -> None:
    assert rejection(ELS_V2.replace("ls=G", "ls=X")) == "ls must be one of W/G/C/F/U, got 'X'"


def test_els_v2_with_a_v1_only_key_is_rejected() -> None:
    assert rejection(ELS_V2 + ";pm=G") == "unknown key 'pm'"


# --- data SMS ---------------------------------------------------------------------------------

# Only characters whose GSM 7-bit code equals their ASCII code, plus the ones tested specially.
_TEST_GSM7 = {chr(code): code for code in range(0x20, 0x60) if chr(code) not in "$@[\\]^_"}
_TEST_GSM7.update({chr(code): code for code in range(0x61, 0x7B)})
_TEST_GSM7.update({"@": 0x00, "$": 0x02, "\n": 0x0A, "\r": 0x0D})
_TEST_GSM7_ESCAPED = {"€": 0x65, "[": 0x3C, "]": 0x3E, "{": 0x28, "}": 0x29, "^": 0x14}


def pack_gsm7(text: str) -> bytes:
    """Test-local packer: septets LSB first; 7 spare bits at the end are filled with CR."""
    septets: list[int] = []
    for char in text:
        if char in _TEST_GSM7_ESCAPED:
            septets += [0x1B, _TEST_GSM7_ESCAPED[char]]
        else:
            septets.append(_TEST_GSM7[char])
    if len(septets) % 8 == 7:
        septets.append(0x0D)
    return pack_septets(septets)


def pack_septets(septets: list[int]) -> bytes:
    """Test-local GSM 7-bit packing: septets into octets, least significant bit first."""
    packed = bytearray()
    accumulator = bits = 0
    for septet in septets:
        accumulator |= septet << bits
        bits += 7
        while bits >= 8:
            packed.append(accumulator & 0xFF)
            accumulator >>= 8
            bits -= 8
    if bits:
        packed.append(accumulator & 0xFF)
    return bytes(packed)


def test_packed_etsi_message_round_trips_through_the_data_sms_parser() -> None:
    hex_text = pack_gsm7(ETSI_V1).hex().upper()
    location = parse_sms_user_data_hex(hex_text)
    expected = parse_sms_text(ETSI_V1)
    assert location.raw == hex_text
    assert location == replace(expected, raw=hex_text)


def test_els_data_sms_example_decodes_to_a_gps_fix() -> None:
    assert decode_gsm7_packed(bytes.fromhex(ELS_DATA_SMS_HEX)).startswith(
        'A"ML=1;lt=37.42175;lg=-122.08461;rd=20;'
    )
    location = parse_sms_user_data_hex(ELS_DATA_SMS_HEX)
    assert (location.latitude, location.longitude, location.method) == (
        37.42175, -122.08461, "GNSS",
    )
    assert location.imei == "358239059042542"
    assert location.warnings == ()


@pytest.mark.parametrize(
    "text", ["1234567", "12345678", 'A"ML=', "@x@", "price 5€ [ok] {x} ^", "line\nbreak"]
)
def test_gsm7_unpacking_handles_padding_escapes_and_specials(text: str) -> None:
    assert decode_gsm7_packed(pack_gsm7(text)) == text


def test_data_sms_with_port_addressing_header_left_in_is_still_parsed() -> None:
    header = bytes([0x06, 0x05, 0x04, 0x0B, 0x84, 0x00, 0x00])
    location = parse_sms_user_data_hex((header + pack_gsm7(ETSI_V1)).hex())
    assert location.latitude == 54.76397


def test_data_sms_with_odd_hex_length_is_rejected() -> None:
    with pytest.raises(LocationParseError, match="even number of hex digits, got 7"):
        parse_sms_user_data_hex("4151939")


def test_data_sms_with_non_hex_is_rejected_naming_the_character() -> None:
    with pytest.raises(LocationParseError, match="found 'Z'"):
        parse_sms_user_data_hex("41Z1")


def test_data_sms_whose_text_is_bad_says_it_was_decoded() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_sms_user_data_hex(pack_gsm7(ETSI_V1 + ";kl=23").hex())
    assert caught.value.reason == "decoded user data: unknown key 'kl'"


# --- HTTPS form -------------------------------------------------------------------------------


def test_etsi_https_example_parses() -> None:
    location = parse_https_form(ETSI_HTTPS)
    assert location.source == "aml-https"
    assert (location.latitude, location.longitude, location.radius_m) == (55.85732, -4.26325, 10.4)
    assert location.method == "GNSS"
    assert location.confidence_pct == 83
    assert location.fix_time == datetime(2016, 10, 11, 12, 37, 24, 435000, tzinfo=UTC)
    assert location.caller_number == "+447477593102"
    assert location.imei == "354773072099116"
    assert location.imsi == "234159176307582"
    assert (location.mcc, location.mnc, location.home_mcc, location.home_mnc) == (
        "234", "15", "234", "15",
    )
    assert location.floor == "5"
    assert location.device_model == "ABC ABC Detente 530"
    assert location.warnings == ()


def test_els_https_confidence_fraction_is_stored_as_percent() -> None:
    location = parse_https_form(
        "v=3&emergency_number=112&source=CALL&time=1438101600123&location_latitude=-6.5887"
        "&location_longitude=110.6684&location_accuracy=20&location_confidence=0.6827"
        "&location_source=wifi&device_number=%2B6281234567890"
    )
    assert location.confidence_pct == pytest.approx(68.27)
    assert location.method == "WiFi"
    assert location.call_time == datetime(2015, 7, 28, 16, 40, 0, 123000, tzinfo=UTC)
    assert location.emergency_number == "112"


def test_https_form_given_as_mapping_parses_the_same() -> None:
    fields = {"v": "1", "location_latitude": "-6.5887", "location_longitude": "110.6684"}
    location = parse_https_form(fields)
    assert (location.latitude, location.longitude, location.method) == (-6.5887, 110.6684, "Unknown")
    assert "location_latitude=-6.5887" in location.raw


def test_https_form_with_unknown_field_is_rejected_naming_it() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_https_form(ETSI_HTTPS + "&favourite_colour=red")
    assert caught.value.reason == "unknown field 'favourite_colour'"


def test_https_form_with_confidence_as_percent_is_rejected() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_https_form("v=1&location_confidence=68")
    assert caught.value.reason == "location_confidence must be a fraction 0-1, got '68'"


def test_https_form_with_latitude_but_no_longitude_is_rejected() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_https_form("v=1&location_latitude=-6.5")
    assert caught.value.reason == "location_latitude given without location_longitude"


def test_https_form_with_repeated_field_is_rejected() -> None:
    with pytest.raises(LocationParseError, match="duplicate field 'v'"):
        parse_https_form("v=1&v=2")


def test_https_form_time_in_seconds_instead_of_ms_is_still_a_valid_1970s_time() -> None:
    location = parse_https_form("v=1&location_time=1476189444")
    assert location.fix_time is not None and location.fix_time.year == 1970


def test_https_form_time_past_2100_is_rejected() -> None:
    with pytest.raises(LocationParseError, match=r"location_time out of range 1970\.\.2100"):
        parse_https_form("v=1&location_time=99999999999999")


# --- sniffing ---------------------------------------------------------------------------------


def test_parse_any_recognises_each_form() -> None:
    assert parse_any(ETSI_V1).source == "aml-sms"
    assert parse_any(ELS_DATA_SMS_HEX).source == "aml-sms"
    assert parse_any(ETSI_HTTPS).source == "aml-https"


def test_parse_any_rejects_what_it_cannot_recognise() -> None:
    with pytest.raises(LocationParseError, match="unrecognised location payload"):
        parse_any("tolong, rumah saya terbakar")
