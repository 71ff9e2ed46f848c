"""Access control on a real database (no Asterisk): login throttle and locks, API token expiry
and revocation, /metrics protection, and the admin audit trail of CLI and console changes."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.secrets import secret
from ari_app.testing.web import web_session
from ari_app.tickets.models import AdminAudit, ApiToken, LoginThrottle
from ari_app.web.auth import ThrottlePolicy, add_token, revoke_token
from ari_app.web.i18n import Translator
from tests.integration.console_stack import WebStack, browser, csrf_field, web_stack
from tests.integration.test_admin_cli import cli

POLICY = ThrottlePolicy(backoff_after=2, base_delay_s=30, max_delay_s=120, lock_after_user=4,
                        lock_after_address=6, lock_for=timedelta(minutes=15))


async def _try_login(stack: WebStack, http: aiohttp.ClientSession, name: str,
                     password: str, lang: str = "") -> tuple[int, str, str | None]:
    """One login through the form; ``lang`` asks for the page's language (kept in a cookie)."""
    async with http.get(f"{stack.url}/login" + (f"?lang={lang}" if lang else "")) as resp:
        form = csrf_field(await resp.text())
    async with http.post(f"{stack.url}/login", allow_redirects=False, data={
            "username": name, "password": password, "csrf": form, "next": "/console"}) as resp:
        return resp.status, await resp.text(), resp.headers.get("Retry-After")


async def _audit(stack: WebStack, entity: str) -> list[AdminAudit]:
    async with stack.app.sessions() as s:
        return list(await s.scalars(select(AdminAudit).where(AdminAudit.entity == entity)
                                    .order_by(AdminAudit.id)))


def _said(lang: str, key: str, **values: int) -> str:
    """A refusal exactly as the login page shows it in ``lang`` (HTML-escaped like the page)."""
    return html.escape(Translator(lang)(f"login.{key}").format(**values), quote=False)


@pytest.mark.parametrize("lang", ["", "en"])  # '' = nobody asked: the site's language, Indonesian
async def test_wrong_passwords_back_off_then_lock_the_account_even_for_the_right_password(
        db_url: str, var_dir: Path, jepara: Site, lang: str) -> None:
    clock = Clock()
    said = lang or "id"
    assert jepara.languages[0] == "id"
    async with web_stack(db_url, var_dir, jepara, clock) as stack:
        stack.console.auth.policy = POLICY
        pw = await stack.add_user("sari", "operator")
        async with browser() as http:
            for _ in range(2):
                status, body, _ = await _try_login(stack, http, "sari", "wrong password!", lang)
                assert status == 401 and _said(said, "wrong") in body
            # back-off: the next attempt is refused before the password is even checked
            status, body, retry = await _try_login(stack, http, "sari", pw, lang)
            assert status == 429 and retry is not None and 0 < int(retry) <= 30
            assert _said(said, "backoff", wait=int(retry)) in body
            clock.advance(31)
            assert (await _try_login(stack, http, "sari", "wrong again!!", lang))[0] == 401
            clock.advance(61)
            status, body, _ = await _try_login(stack, http, "sari", "wrong again!!", lang)
            assert status == 401  # the 4th failure: locked now
            clock.advance(121)  # past any back-off: only the lock refuses now
            status, body, retry = await _try_login(stack, http, "sari", pw, lang)
            assert status == 429 and retry is not None and int(retry) > 600
            assert _said(said, "locked_user", failures=4, wait=int(retry)) in body
            # and never the other language's words
            other = "en" if said == "id" else "id"
            assert _said(other, "locked_user", failures=4, wait=int(retry)) not in body
        locked = await _audit(stack, "login_lock")
        assert [(a.key, a.action) for a in locked] == [("user:sari", "locked")]
        assert json.loads(locked[0].after)["failures"] == 4
        # an admin clears it through the API (audited); an operator may not
        admin_token, op_token = await stack.token("boss", "admin"), await stack.token("op2", "operator")
        async with web_session() as http:
            url = f"{stack.url}/api/v1/login-locks"
            async with http.get(url, headers={"Authorization": f"Bearer {admin_token}"}) as resp:
                locks = (await resp.json())["locks"]
                assert {(x["kind"], x["key"]) for x in locks if x["locked_until"]} == {("user", "sari")}
            lock = {"kind": "user", "key": "sari"}
            async with http.post(url + "/clear", json=lock,
                                 headers={"Authorization": f"Bearer {op_token}"}) as resp:
                assert resp.status == 403
            async with http.post(url + "/clear", json=lock,
                                 headers={"Authorization": f"Bearer {admin_token}"}) as resp:
                assert resp.status == 200 and (await resp.json())["cleared"]
            async with http.post(url + "/clear", json=lock,
                                 headers={"Authorization": f"Bearer {admin_token}"}) as resp:
                assert resp.status == 404
        assert [(a.key, a.action, a.actor) for a in await _audit(stack, "login_lock")][1] == \
            ("user:sari", "cleared", "console:boss")
        async with browser() as http:
            await stack.login(http, "sari", pw)
        async with stack.app.sessions() as s:
            keys = {(r.kind, r.key) for r in await s.scalars(select(LoginThrottle))}
        assert ("user", "sari") not in keys and ("address", "127.0.0.1") in keys


@pytest.mark.parametrize("lang", ["", "en"])
async def test_many_user_names_from_one_address_lock_that_address(
        db_url: str, var_dir: Path, jepara: Site, lang: str) -> None:
    clock = Clock()
    async with web_stack(db_url, var_dir, jepara, clock) as stack:
        stack.console.auth.policy = dataclasses.replace(POLICY, backoff_after=100)
        pw = await stack.add_user("budi", "operator")
        async with browser() as http:
            for i in range(6):  # a different (unknown) name each time: only the address counts up
                assert (await _try_login(stack, http, f"guess{i}", "password123", lang))[0] == 401
            status, body, retry = await _try_login(stack, http, "budi", pw, lang)
            assert status == 429 and retry is not None
            assert _said(lang or "id", "locked_address", failures=6, wait=int(retry)) in body
        assert [a.key for a in await _audit(stack, "login_lock")] == ["address:127.0.0.1"]
        cleared = await asyncio.to_thread(cli, var_dir, db_url, "users", "unlock", "--address",
                                          "127.0.0.1")
        assert cleared.returncode == 0, cleared.stderr
        async with browser() as http:
            await stack.login(http, "budi", pw)
            # old failures are forgotten and their rows deleted: guessed names do not pile up
            clock.advance(POLICY.forget_after.total_seconds() + 60)
            assert (await _try_login(stack, http, "zz", "password123"))[0] == 401
        async with stack.app.sessions() as s:
            left = {(r.kind, r.key, r.failures) for r in await s.scalars(select(LoginThrottle))}
        assert left == {("user", "zz", 1), ("address", "127.0.0.1", 1)}


async def test_api_tokens_expire_and_can_be_revoked_with_a_clear_401(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    clock = Clock()
    async with web_stack(db_url, var_dir, jepara, clock) as stack, web_session() as http:
        await stack.add_user("api", "supervisor")
        async with stack.app.sessions() as s, s.begin():
            short = await add_token(s, "api", "short", clock.now(), days=1)
            other = await add_token(s, "api", "other", clock.now(), days=30)

        async def status(token: str) -> tuple[int, str]:
            async with http.get(f"{stack.url}/api/v1/me",
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status, (await resp.json()).get("error", "")

        assert await status(short) == (200, "")
        clock.advance(timedelta(days=1, seconds=1).total_seconds())
        code, error = await status(short)
        assert code == 401 and "expired" in error
        assert await status(other) == (200, "")
        async with stack.app.sessions() as s, s.begin():
            token_id = await s.scalar(select(ApiToken.id).where(ApiToken.name == "other"))
            assert token_id is not None
            await revoke_token(s, token_id, clock.now(), actor="os:admin")
        code, error = await status(other)
        assert code == 401 and "revoked" in error
        assert [a.action for a in await _audit(stack, "token")] == ["issued", "issued", "revoked"]


async def test_metrics_need_the_token_unless_loopback_is_allowed(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    closed = dataclasses.replace(jepara, web=dataclasses.replace(jepara.web,
                                                                 metrics_loopback_open=False))
    async with web_stack(db_url, var_dir, closed) as stack, web_session() as http:
        token = secret(var_dir, "metrics.token")
        async with http.get(f"{stack.url}/metrics") as resp:
            assert resp.status == 401 and "metrics.token" in (await resp.json())["error"]
        async with http.get(f"{stack.url}/metrics",
                            headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 403
        async with http.get(f"{stack.url}/metrics",
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200 and "siaga112_calls_active" in await resp.text()
        # a console user's API token is not a metrics token
        api = await stack.token("boss", "admin")
        async with http.get(f"{stack.url}/metrics",
                            headers={"Authorization": f"Bearer {api}"}) as resp:
            assert resp.status == 403


async def test_every_admin_change_from_cli_and_console_is_audited_with_before_and_after(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        steps = [("users", "add", "admin2", "--role", "admin"),
                 ("users", "token", "admin2", "--days", "7"),
                 ("agencies", "set", "DAMKAR", "--email", "damkar@jeparakab.go.id"),
                 ("operators", "add", "op9"),
                 ("shifts", "add", "op9", "--from", "2025-05-19 07:00", "--to", "2025-05-19 15:00")]
        for step in steps:
            done = await asyncio.to_thread(cli, var_dir, db_url, *step)
            assert done.returncode == 0, (step, done.stderr)
        refused = await asyncio.to_thread(cli, var_dir, db_url, "agencies", "set", "DAMKAR",
                                          "--webhook-url", "https://ok.example/h", "--email", "bad")
        assert refused.returncode == 2  # nothing half-done: the valid URL was not stored either
        # console: an admin sets a webhook through the admin page
        pw = await stack.add_user("boss", "admin")
        async with browser() as http:
            csrf = await stack.login(http, "boss", pw)
            async with http.post(f"{stack.url}/admin/agencies", data={
                    "csrf": csrf, "code": "BPBD", "webhook_url": "https://bpbd.example/h"}) as resp:
                assert resp.status == 200
        listed = json.loads((await asyncio.to_thread(cli, var_dir, db_url, "audit", "--json")).stdout)
        seen = {(r["entity"], r["key"] if r["entity"] != "token" else "*", r["action"])
                for r in listed}
        assert {("user", "admin2", "added"), ("token", "*", "issued"),
                ("agency", "DAMKAR", "set"), ("operator", "op9", "added"), ("user", "boss", "added"),
                ("agency", "BPBD", "webhook set")} <= seen
        assert any(r["entity"] == "shift" and r["after"]["operator"] == "op9" for r in listed)
        damkar = next(r for r in listed if r["key"] == "DAMKAR")
        assert damkar["before"]["email"] == "" and damkar["after"]["email"] == "damkar@jeparakab.go.id"
        assert damkar["after"]["webhook_url"] == damkar["before"]["webhook_url"]
        assert damkar["actor"].startswith("os:")
        bpbd = next(r for r in listed if r["key"] == "BPBD")
        assert bpbd["actor"] == "console:boss" and bpbd["after"] == {"webhook_url":
                                                                     "https://bpbd.example/h"}


async def test_a_changed_site_file_is_audited_at_the_next_start_with_before_and_after(
        db_url: str, var_dir: Path, tmp_path: Path) -> None:
    from ari_app.config import SITES_DIR, load_site

    path = tmp_path / "jepara.toml"
    path.write_text((SITES_DIR / "jepara.toml").read_text())
    for _ in range(2):  # the same file twice: one entry
        async with web_stack(db_url, var_dir, load_site(path)) as stack:
            await _wait_for_audit(stack, "site_settings", 1)
    path.write_text(path.read_text().replace("ring_timeout_s = 15", "ring_timeout_s = 25"))
    async with web_stack(db_url, var_dir, load_site(path)) as stack:
        rows = await _wait_for_audit(stack, "site_settings", 2)
    assert [r.action for r in rows] == ["first seen", "changed"]
    assert json.loads(rows[1].before)["queue"]["ring_timeout_s"] == 15
    assert json.loads(rows[1].after)["queue"]["ring_timeout_s"] == 25


async def _wait_for_audit(stack: WebStack, entity: str, n: int) -> list[AdminAudit]:
    for _ in range(200):  # written by the start-up task, right after the agencies are seeded
        rows = await _audit(stack, entity)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{entity}: expected {n} audit entries, got {len(rows)}")
