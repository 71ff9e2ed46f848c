"""Console auth (roles, CSRF, cookies), the REST API and web complaints, on a real database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ari_app.config import Site
from ari_app.tickets.models import Ticket
from tests.integration.console_stack import browser, csrf_field, web_stack


async def test_api_without_credentials_is_401_but_healthz_is_open(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack, browser() as http:
        for method, path in [("GET", "/api/v1/tickets"), ("POST", "/api/v1/tickets/X/dispatch"),
                             ("POST", "/api/v1/complaints")]:
            async with http.request(method, stack.url + path, json={}) as resp:
                assert resp.status == 401, (path, resp.status)
        async with http.get(stack.url + "/api/v1/tickets",
                            headers={"Authorization": "Bearer s112_wrong"}) as resp:
            assert resp.status == 401
        async with http.get(stack.url + "/healthz") as resp:
            assert resp.status in (200, 503)  # open, whatever ARI's state
        async with http.get(stack.url + "/console", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/login")


async def test_operator_gets_403_on_admin_pages_and_admin_gets_them(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        op_pw = await stack.add_user("op1", "operator")
        admin_pw = await stack.add_user("boss", "admin")
        async with browser() as http:
            csrf = await stack.login(http, "op1", op_pw)
            cookie = next(c for c in http.cookie_jar if c.key == "siaga_session")
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
            async with http.get(stack.url + "/admin") as resp:
                assert resp.status == 403
            async with http.post(stack.url + "/admin/users",
                                 data={"csrf": csrf, "username": "evil", "role": "admin"}) as resp:
                assert resp.status == 403
            async with http.get(stack.url + "/kpi") as resp:
                assert resp.status == 403
            async with http.get(stack.url + "/console") as resp:
                assert resp.status == 200
        async with browser() as http:
            await stack.login(http, "boss", admin_pw)
            async with http.get(stack.url + "/admin") as resp:
                assert resp.status == 200 and "DAMKAR" in await resp.text()


async def test_wrong_or_missing_csrf_is_refused(db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        pw = await stack.add_user("op1", "operator")
        await stack.ticket("JPR-20250519-0001", channel_id="c1", caller_number="0812")
        async with browser() as http:
            # login form with a forged CSRF field
            async with http.get(f"{stack.url}/login") as resp:
                csrf_field(await resp.text())
            async with http.post(f"{stack.url}/login", data={
                    "username": "op1", "password": pw, "csrf": "forged"}) as resp:
                assert resp.status == 403
            assert not any(c.key == "siaga_session" for c in http.cookie_jar)
            csrf = await stack.login(http, "op1", pw)
            url = f"{stack.url}/api/v1/tickets/JPR-20250519-0001/classify"
            async with http.post(url, json={"category": "fire"}) as resp:
                assert resp.status == 403
            async with http.post(url, json={"category": "fire"},
                                 headers={"X-CSRF-Token": csrf + "x"}) as resp:
                assert resp.status == 403
            async with http.post(url, json={"category": "fire"},
                                 headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 200
            async with http.post(f"{stack.url}/logout", data={"csrf": "nope"}) as resp:
                assert resp.status == 403


async def test_classify_prank_sets_outcome_and_dispatch_validates_agencies(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        token = await stack.token("api", "operator")
        auth = {"Authorization": f"Bearer {token}"}
        await stack.ticket("JPR-20250519-0001", channel_id="c1", caller_number="0812",
                           caller_key="+62812")
        await stack.ticket("JPR-20250519-0002", channel_id="c2", caller_number="0812",
                           caller_key="+62812")
        async with browser(headers=auth) as http:
            base = f"{stack.url}/api/v1/tickets"
            async with http.post(f"{base}/JPR-20250519-0001/classify", json={"status": "prank"}) as r:
                assert r.status == 200 and (await r.json())["status"] == "prank"
            async with http.post(f"{base}/JPR-20250519-0002/classify",
                                 json={"category": "arson", "colour": "red"}) as r:
                assert r.status == 422
                fields = {e["field"] for e in (await r.json())["errors"]}
                assert fields == {"category", "colour"}
            async with http.post(f"{base}/JPR-20250519-0002/dispatch", json={"agencies": ["NASA"]}) as r:
                assert r.status == 422 and "NASA" in (await r.json())["error"]
            async with http.post(f"{base}/JPR-20250519-0001/dispatch",
                                 json={"agencies": ["DAMKAR"]}) as r:
                assert r.status == 409  # a prank is not dispatched
            async with http.get(f"{base}/JPR-20250519-0002") as r:
                data = await r.json()
                assert [e["reference"] for e in data["earlier_tickets"]] == ["JPR-20250519-0001"]
            async with http.get(f"{stack.url}/api/v1/openapi.json") as r:
                doc = await r.json()
                assert doc["openapi"].startswith("3.") and "/api/v1/complaints" in doc["paths"]
        async with stack.app.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.reference == "JPR-20250519-0001"))
            assert t is not None and t.outcome == "prank"  # counted by screen_caller


async def test_complaints_by_api_and_public_form_become_tickets(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        token = await stack.token("portal", "operator")
        async with browser() as http:
            async with http.post(f"{stack.url}/api/v1/complaints",
                                 headers={"Authorization": f"Bearer {token}"},
                                 json={"phone": "abc", "description": "short"}) as r:
                assert r.status == 422
                errors = {e["field"]: e["message"] for e in (await r.json())["errors"]}
                assert set(errors) == {"phone", "description"}
            async with http.post(f"{stack.url}/api/v1/complaints",
                                 headers={"Authorization": f"Bearer {token}"},
                                 json={"phone": "081234567890",
                                       "description": "Lampu jalan mati di Jl. Kartini"}) as r:
                assert r.status == 201
                ref = (await r.json())["reference"]
                assert ref.startswith("JPR-")
            async with http.get(f"{stack.url}/complaint") as r:
                form_csrf = csrf_field(await r.text())
            data = {"phone": "081234567891", "description": "Sampah menumpuk di pasar"}
            async with http.post(f"{stack.url}/api/v1/complaints",
                                 data=data | {"csrf": "forged"}) as r:
                assert r.status == 403
            async with http.post(f"{stack.url}/api/v1/complaints",
                                 data=data | {"csrf": form_csrf}) as r:
                assert r.status == 200 and "Terima kasih" in await r.text()
        async with stack.app.sessions() as s:
            rows = list(await s.scalars(select(Ticket).order_by(Ticket.id)))
        assert [(t.kind, t.caller_number, t.channel_id) for t in rows] == [
            ("complaint", "081234567890", None), ("complaint", "081234567891", None)]
