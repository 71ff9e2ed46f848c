"""An operator's phone dials out only to the site's agency and forward numbers (real Asterisk,
SIPp as the authenticated phone and as the carrier's far end)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.pbx.render import operator_outbound_numbers
from ari_app.routing.operators import add_operator, endpoints
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.sipp import SippRun, run_sipp
from ari_app.tickets.db import make_engine, sessions
from tests.integration.conftest import PhoneFactory

pytestmark = pytest.mark.integration

PASSWORD = "op-secret-123"


def test_the_allowed_numbers_are_the_sites_services_forward_and_agency_phones(jepara: Site) -> None:
    numbers = operator_outbound_numbers(jepara)
    assert {"110", "113", "118", "119", "115"} <= set(numbers)
    assert "112" not in numbers and "114" not in numbers


async def test_operator_phone_reaches_an_agency_but_not_any_other_number(
        db_url: str, var_dir: Path, jepara: Site, phone: PhoneFactory) -> None:
    site = on_free_ports(jepara)
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            await add_operator(s, site, "op1", "Sari", Clock().now(), password=PASSWORD)
        async with sessions(engine)() as s:
            eps = await endpoints(s, site.code)
    finally:
        await engine.dispose()
    agency, trunk = await phone("operator_answer_wait.xml", name="damkar")
    ast = PrivateAsterisk(site, var_dir, operators=eps, trunk_contact=trunk.replace("damkar@", ""))
    await asyncio.to_thread(ast.start)
    try:
        def dial(scenario: str, number: str) -> SippRun:
            return SippRun(scenario=scenario, target_port=ast.sip_port, service=number,
                           keys={"caller": "op1"}, timeout_s=20,
                           extra_args=["-au", "op1", "-ap", PASSWORD])

        for number in ("114", "0291123456", "+6281234567890", "112"):
            refused = await run_sipp(dial("operator_dials_refused.xml", number))
            assert refused.ok, (number, refused.stdout[-1500:], refused.errors[-1500:])
        allowed = await run_sipp(dial("operator_dials_agency.xml", "113"))
        assert allowed.ok, (allowed.stdout[-1500:], allowed.errors[-1500:])
        far_end = await agency.stop()
        # the carrier's far end saw exactly one call: the 113 one (its message trace)
        messages = "".join(p.read_text(errors="replace") for p in far_end.workdir.glob("*_messages.log"))
        assert messages.count("INVITE sip:113@") == 1 and "114@" not in messages
    finally:
        await asyncio.to_thread(ast.stop)
