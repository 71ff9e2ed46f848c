"""How tests and harnesses reach the app's web side: one place for the URL and the client.

The web side is HTTPS with a certificate made at first start (self-signed unless the site names
the admin's). Clients here skip verification of it (``ssl=False``); tests about TLS itself verify
against the generated certificate (tests/integration/test_https.py).
"""

from __future__ import annotations

from typing import Any

import aiohttp


def web_url(port: int, host: str = "127.0.0.1") -> str:
    """The base URL of an app's web side (console, API, /aml, /healthz, /metrics)."""
    return f"https://{host}:{port}"


def web_session(*, cookies: bool = False, **kw: Any) -> aiohttp.ClientSession:
    """A client for the app's web side; ``cookies`` keeps cookies for 127.0.0.1 as a browser
    does (aiohttp's default jar refuses IP hosts)."""
    if cookies:
        kw.setdefault("cookie_jar", aiohttp.CookieJar(unsafe=True))
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), **kw)
