"""What 20-emergency.conf hands the app in Stasis(): the carrier location and talk detection."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from ari_app.calls import flow
from ari_app.calls.silent import CARRIER_ARG, CarrierInfo, carrier_from_args

DIALPLAN = Path(__file__).resolve().parents[2] / "dialplan" / "20-emergency.conf"
SCREENING = ["emergency", "112", "clean", "", "12", "/var/rec/1.2.wav", "talk"]


def packed(*values: str) -> str:
    """As the dialplan writes it: base64 of "=" + value, joined by "."."""
    return ".".join(["loc1", *(base64.b64encode(f"={v}".encode()).decode() for v in values)])


def test_pidf_lo_and_cell_values_come_back_exactly_commas_and_quotes_included() -> None:
    info = 'shape="Circle",crs="2d",pos="-3.05000 114.60000",radius="850"'
    pani = "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=510100A1B2C3D4E5F6"
    arg = packed("<cid:loc-1@carrier.test>", pani, info, "GML", "Cell")
    assert "," not in arg
    assert carrier_from_args([*SCREENING, arg]) == CarrierInfo(
        location_info=info, geolocation="<cid:loc-1@carrier.test>", format="GML",
        method="Cell", pani=pani)


def test_a_call_without_geolocation_header_brings_only_the_two_headers() -> None:
    assert carrier_from_args([*SCREENING, packed("", "")]) == CarrierInfo()
    assert carrier_from_args([*SCREENING, packed("", "3GPP-GERAN")]) == CarrierInfo(
        pani="3GPP-GERAN")


def test_absent_or_unreadable_values_mean_asking_asterisk_over_ari() -> None:
    assert CARRIER_ARG == len(SCREENING)
    for args in (SCREENING, SCREENING[:5], [*SCREENING, ""], [*SCREENING, "loc1"],
                 [*SCREENING, "loc2." + packed("", "")[5:]], [*SCREENING, "loc1.!!.PQ=="],
                 [*SCREENING, "loc1.eA==.PQ=="],  # decodes without the "=" prefix
                 [*SCREENING, packed("a", "b", "c")]):
        assert carrier_from_args(args) is None, args


def test_the_dialplan_sets_the_talk_detection_the_app_would_set_and_says_so() -> None:
    text = DIALPLAN.read_text()
    [value] = re.findall(r"Set\(TALK_DETECT\(set\)=([^)]*)\)", text)
    assert value == flow.TALK_DETECT
    [stasis] = re.findall(r"n\(stasis\),Stasis\(\$\{SIAGA_APP\},(.*)\)$", text, re.M)
    args = stasis.split(",")
    assert args[flow.TALK_ARG] == "talk" and args[CARRIER_ARG] == "${SIAGA_CARRIER}"
