"""The web side is HTTPS by default: a self-signed certificate made at first start (verified here
against that certificate), Secure/HttpOnly/SameSite cookies, HSTS, plain HTTP only on loopback
and only for /healthz; the public URL the agencies need is reported when missing."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest

from ari_app.config import Site
from ari_app.testing.ports import free_port
from ari_app.tls import ensure_pair, fingerprint
from tests.integration.console_stack import browser, web_stack
from tests.integration.test_admin_cli import cli


async def test_https_with_the_generated_certificate_hsts_and_secure_cookies(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        cert = var_dir / "secrets" / "web-tls.crt"
        assert stack.url.startswith("https://")
        assert stat.S_IMODE((var_dir / "secrets" / "web-tls.key").stat().st_mode) == 0o600
        trusted = ssl.create_default_context(cafile=str(cert))  # verified, not ssl=False
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as http:
            async with http.get(f"{stack.url}/healthz") as resp:
                assert resp.status in (200, 503)
                assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"
        port = int(stack.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusted)
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        writer.close()
        assert hashlib.sha256(der).hexdigest().upper() == fingerprint(cert).replace(":", "")
        strict = ssl.create_default_context()  # the system's CAs: a self-signed cert is refused
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=strict)) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{stack.url}/healthz")
        async with aiohttp.ClientSession() as http:  # plain HTTP on the HTTPS port: no answer
            with pytest.raises(aiohttp.ClientError):
                await http.get(stack.url.replace("https://", "http://") + "/healthz")
        password = await stack.add_user("sari", "operator")
        async with browser() as http:
            await stack.login(http, "sari", password)
            cookies = {c.key: c for c in http.cookie_jar}
        for name in ("siaga_session", "siaga_pre"):
            c = cookies[name]
            assert c["secure"] and c["httponly"] and c["samesite"] == "Strict", (name, c)
    # the next start keeps the same certificate (made once, fingerprint printed once)
    again = ensure_pair(var_dir, "web-tls", ["127.0.0.1"])
    assert not again.generated and again.fingerprint == fingerprint(cert)


async def test_plain_http_is_loopback_only_and_serves_only_healthz(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    health = free_port()
    site = dataclasses.replace(jepara, web=dataclasses.replace(jepara.web, health_port=health))
    async with web_stack(db_url, var_dir, site), aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{health}/healthz") as resp:
            assert resp.status in (200, 503) and "db_ok" in await resp.json()
            assert "Strict-Transport-Security" not in resp.headers
        for path in ("/login", "/api/v1/tickets", "/metrics", "/console"):
            async with http.get(f"http://127.0.0.1:{health}{path}", allow_redirects=False) as resp:
                assert resp.status == 403, path
                assert "only /healthz" in (await resp.json())["error"]
        async with http.post(f"http://127.0.0.1:{health}/aml", data="lt=1") as resp:
            assert resp.status == 403


async def test_status_says_when_the_public_url_is_missing_for_agencies(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara):
        quiet = await asyncio.to_thread(cli, var_dir, db_url, "security", "status")
        assert quiet.returncode == 0, quiet.stderr
        assert "no agency gets notifications yet" in quiet.stdout
        assert "web-tls.crt SHA-256" in quiet.stdout
        done = await asyncio.to_thread(cli, var_dir, db_url, "agencies", "set", "DAMKAR",
                                       "--webhook-url", "https://damkar.example/hook")
        assert done.returncode == 0, done.stderr
        missing = await asyncio.to_thread(cli, var_dir, db_url, "security", "status")
        assert missing.returncode == 1
        assert "public URL: MISSING" in missing.stdout and "DAMKAR" in missing.stdout
