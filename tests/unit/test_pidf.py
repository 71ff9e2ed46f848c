"""Carrier location from SIP: PIDF-LO bodies, Asterisk GEOLOC_PROFILE variables, cell headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ari_app.location.cell import parse_p_access_network_info
from ari_app.location.model import LocationParseError
from ari_app.location.pidf import parse_geoloc_profile_vars, parse_pidf_lo

NAMESPACES = (
    'xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" '
    'xmlns:gml="http://www.opengis.net/gml" '
    'xmlns:gs="http://www.opengis.net/pidflo/1.0" '
    'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" '
    'xmlns:con="urn:ietf:params:xml:ns:geopriv:conf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
)
CRS_2D = "urn:ogc:def:crs:EPSG::4326"
METRE = "urn:ogc:def:uom:EPSG::9001"


def pidf(location_info: str, method: str = "Cell", extra: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence {NAMESPACES} entity="pres:+6281234567890@telkomsel.example">'
        '<tuple id="loc"><status><gp:geopriv>'
        f"<gp:location-info>{location_info}</gp:location-info>"
        f"<gp:usage-rules/><gp:method>{method}</gp:method>"
        "</gp:geopriv></status>"
        f"<timestamp>2025-05-19T10:04:05+07:00</timestamp>{extra}</tuple></presence>"
    )


CIRCLE = (
    f'<gs:Circle srsName="{CRS_2D}"><gml:pos>-6.58870 110.66840</gml:pos>'
    f'<gs:radius uom="{METRE}">850</gs:radius></gs:Circle>'
)
CIVIC = (
    '<ca:civicAddress xml:lang="id"><ca:country>id</ca:country><ca:A1>Jawa Tengah</ca:A1>'
    "<ca:A2>Jepara</ca:A2><ca:A3>Tahunan</ca:A3><ca:RD>Jl. Kartini</ca:RD><ca:HNO>5</ca:HNO>"
    "<ca:PC>59425</ca:PC></ca:civicAddress>"
)


def rejection(document: str | bytes) -> str:
    with pytest.raises(LocationParseError) as caught:
        parse_pidf_lo(document)
    return caught.value.reason


# --- PIDF-LO ----------------------------------------------------------------------------------


def test_carrier_circle_gives_centre_radius_method_time_and_caller() -> None:
    location = parse_pidf_lo(pidf(CIRCLE))
    assert location.source == "pidf"
    assert (location.latitude, location.longitude, location.radius_m) == (-6.5887, 110.6684, 850)
    assert location.method == "Cell"
    assert location.fix_time == datetime(2025, 5, 19, 3, 4, 5, tzinfo=UTC)
    assert location.caller_number == "+6281234567890"
    assert location.warnings == ()


def test_carrier_point_in_bytes_parses() -> None:
    point = f'<gml:Point srsName="{CRS_2D}"><gml:pos>-3.0123 114.5678</gml:pos></gml:Point>'
    location = parse_pidf_lo(pidf(point, method="GPS").encode("utf-8"))
    assert (location.latitude, location.longitude, location.radius_m) == (-3.0123, 114.5678, None)
    assert location.method == "GNSS"


def test_asterisk_test_document_with_confidence_and_manual_method() -> None:
    point = f'<gml:Point srsName="{CRS_2D}"><gml:pos>-34.410649 150.87651</gml:pos></gml:Point>'
    location = parse_pidf_lo(pidf(point + '<con:confidence pdf="normal">66</con:confidence>',
                                  method="Manual"))
    assert location.confidence_pct == 66
    assert location.method == "Manual"


def test_civic_address_becomes_a_dict_and_counts_as_a_location() -> None:
    location = parse_pidf_lo(pidf(CIVIC))
    assert location.civic == {
        "country": "ID", "A1": "Jawa Tengah", "A2": "Jepara", "A3": "Tahunan",
        "RD": "Jl. Kartini", "HNO": "5", "PC": "59425",
    }
    assert not location.has_coordinates and location.has_location


def test_circle_and_civic_together_are_both_kept() -> None:
    location = parse_pidf_lo(pidf(CIRCLE + CIVIC))
    assert location.radius_m == 850 and location.civic is not None


def test_polygon_is_reduced_to_centroid_and_enclosing_radius_with_a_warning() -> None:
    polygon = (
        f'<gml:Polygon srsName="{CRS_2D}"><gml:exterior><gml:LinearRing><gml:posList>'
        "-6.60 110.66 -6.60 110.68 -6.58 110.68 -6.58 110.66 -6.60 110.66"
        "</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>"
    )
    location = parse_pidf_lo(pidf(polygon))
    assert location.latitude == pytest.approx(-6.59)
    assert location.longitude == pytest.approx(110.67)
    assert location.radius_m == pytest.approx(1560, abs=10)
    assert location.warnings == ("Polygon reduced to its centroid and enclosing radius",)


def test_billion_laughs_is_refused_before_expansion() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<presence>&lol2;</presence>"
    )
    assert rejection(bomb) == "DOCTYPE declarations are not accepted (entity expansion risk)"


def test_external_entity_is_refused() -> None:
    xxe = '<?xml version="1.0"?><!DOCTYPE p SYSTEM "file:///etc/passwd"><presence/>'
    assert "DOCTYPE" in rejection(xxe)


def test_document_over_64_kib_is_refused() -> None:
    big = pidf(CIRCLE, extra="<!--" + "x" * 70_000 + "-->")
    assert rejection(big).endswith("bytes; the limit is 65536")


def test_radius_in_kilometres_is_rejected_naming_the_uom() -> None:
    circle = CIRCLE.replace(METRE, "urn:ogc:def:uom:EPSG::9036")
    assert rejection(pidf(circle)) == (
        f"Circle radius uom must be {METRE}, got 'urn:ogc:def:uom:EPSG::9036'"
    )


def test_point_outside_the_globe_is_rejected() -> None:
    point = f'<gml:Point srsName="{CRS_2D}"><gml:pos>-96.1 110.6</gml:pos></gml:Point>'
    assert rejection(pidf(point)) == "Point gml:pos latitude out of range -90..90: -96.1"


def test_unknown_civic_element_is_rejected() -> None:
    civic = CIVIC.replace("<ca:PC>59425</ca:PC>", "<ca:KELURAHAN>Mulyoharjo</ca:KELURAHAN>")
    assert rejection(pidf(civic)) == "unknown civic element 'KELURAHAN'"


def test_timestamp_without_offset_is_rejected() -> None:
    document = pidf(CIRCLE).replace("2025-05-19T10:04:05+07:00", "2025-05-19T10:04:05")
    assert rejection(document) == "timestamp has no UTC offset: '2025-05-19T10:04:05'"


def test_presence_without_geopriv_is_rejected() -> None:
    assert rejection(f"<presence {NAMESPACES}><tuple id='a'/></presence>") == (
        "no gp:geopriv element: the document carries no location"
    )


def test_non_pidf_root_is_rejected() -> None:
    assert rejection("<html><body/></html>") == "root element must be PIDF presence, got 'html'"


def test_broken_xml_is_rejected_as_not_well_formed() -> None:
    assert rejection("<presence").startswith("not well-formed XML")


# --- Asterisk GEOLOC_PROFILE ------------------------------------------------------------------


def test_asterisk_circle_variables_as_seen_on_asterisk_16() -> None:
    location = parse_geoloc_profile_vars(
        'shape="Circle",crs="2d",pos="-6.58870 110.66840",radius="850"', "GML", "Cell"
    )
    assert location.source == "pidf"
    assert (location.latitude, location.longitude, location.radius_m) == (-6.5887, 110.6684, 850)
    assert location.method == "Cell"
    assert "location_info=shape=" in location.raw


def test_asterisk_point_variables_without_quotes() -> None:
    location = parse_geoloc_profile_vars('shape=Point, crs=3d, pos="-6.5 110.6 25"', "GML", "GPS")
    assert (location.latitude, location.longitude, location.altitude_m) == (-6.5, 110.6, 25)
    assert location.radius_m is None and location.method == "GNSS"


def test_asterisk_civic_variables_become_a_civic_dict() -> None:
    location = parse_geoloc_profile_vars(
        'country="ID",A1="Jawa Tengah",A3="Jepara",RD="Jl. Kartini, Gang 2"', "civicAddress", ""
    )
    assert location.civic == {
        "country": "ID", "A1": "Jawa Tengah", "A3": "Jepara", "RD": "Jl. Kartini, Gang 2",
    }


def test_asterisk_uri_format_is_rejected_as_not_fetched() -> None:
    with pytest.raises(LocationParseError, match="format URI"):
        parse_geoloc_profile_vars("URI='https://lis.example/loc/1'", "URI", "")


def test_asterisk_circle_without_radius_is_rejected() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_geoloc_profile_vars('shape="Circle",crs="2d",pos="-6.5 110.6"', "GML", "Cell")
    assert caught.value.reason == "Circle has no radius"


def test_asterisk_unknown_key_is_rejected_naming_it() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_geoloc_profile_vars('shape="Point",pos="-6.5 110.6",colour="red"', "GML", "")
    assert caught.value.reason == "unknown location_info key 'colour'"


def test_asterisk_crs_2d_with_three_numbers_is_rejected() -> None:
    with pytest.raises(LocationParseError, match="Point pos must be 'lat lon'"):
        parse_geoloc_profile_vars('shape="Point",crs="2d",pos="-6.5 110.6 20"', "GML", "")


def test_unrecognised_method_is_kept_as_unknown_with_a_warning() -> None:
    location = parse_geoloc_profile_vars('shape="Point",pos="-6.5 110.6"', "GML", "Telepathy")
    assert location.method == "Unknown"
    assert location.warnings == ("unrecognised method 'Telepathy'",)


# --- P-Access-Network-Info --------------------------------------------------------------------


def test_lte_cell_of_an_indonesian_operator() -> None:
    cell = parse_p_access_network_info('3GPP-E-UTRAN-FDD; utran-cell-id-3gpp="5101012AB0123456"')
    assert cell is not None
    assert (cell.radio, cell.mcc, cell.mnc) == ("E-UTRAN", "510", "10")
    assert cell.tac == 0x12AB and cell.lac is None
    assert cell.eci == 0x0123456
    assert cell.enodeb_id == 0x01234
    assert not cell.network_provided


def test_lte_cell_towards_5gc_has_a_six_digit_tac() -> None:
    cell = parse_p_access_network_info("3GPP-E-UTRAN-TDD;utran-cell-id-3gpp=51011ABCDEF0123456")
    assert cell is not None and cell.tac == 0xABCDEF and cell.eci == 0x0123456


def test_gsm_cell_global_identity() -> None:
    cell = parse_p_access_network_info("3GPP-GERAN; cgi-3gpp=51001ABCD1234; network-provided")
    assert cell is not None
    assert (cell.radio, cell.mnc, cell.lac, cell.cell_identity) == ("GERAN", "01", 0xABCD, 0x1234)
    assert cell.network_provided


def test_umts_cell() -> None:
    cell = parse_p_access_network_info("3GPP-UTRAN-FDD; utran-cell-id-3gpp=510890001ABCDEF0")
    assert cell is not None and (cell.lac, cell.cell_identity) == (0x0001, 0xABCDEF0)


def test_nr_cell() -> None:
    cell = parse_p_access_network_info("3GPP-NR-FDD; utran-cell-id-3gpp=51010000001000000ABC")
    assert cell is not None and (cell.radio, cell.tac, cell.cell_identity) == ("NR", 1, 0xABC)


def test_three_digit_mnc_elsewhere_is_inferred_from_length() -> None:
    cell = parse_p_access_network_info("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=3102601234ABCDEF0")
    assert cell is not None and (cell.mcc, cell.mnc) == ("310", "260")


def test_indonesian_cell_implying_a_three_digit_mnc_is_rejected() -> None:
    with pytest.raises(LocationParseError, match="MCC 510 \\(Indonesia\\) uses 2-digit MNCs"):
        parse_p_access_network_info("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=51010012AB0123456")


def test_caller_can_insist_on_mnc_length() -> None:
    with pytest.raises(LocationParseError) as caught:
        parse_p_access_network_info(
            "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=3102601234ABCDEF0", mnc_digits=2
        )
    assert caught.value.reason == (
        "E-UTRAN cell id '3102601234ABCDEF0' has 17 characters; expected 16 or 18"
    )


def test_wifi_access_has_no_cell() -> None:
    assert parse_p_access_network_info("IEEE-802.11; i-wlan-node-id=ffeeddccbbaa") is None


def test_cell_id_with_non_hex_is_rejected() -> None:
    with pytest.raises(LocationParseError, match="must be MCC\\+MNC digits then hex"):
        parse_p_access_network_info("3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=5101012XY0123456")
