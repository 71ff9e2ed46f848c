"""ARI REST: build a URL, then get/post/put/delete. No code generation."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from ari_app.ari.errors import AriConnectionError, error_for
from ari_app.ari.latency import RoundTrips

log = logging.getLogger(__name__)

Params = str | int | float | bool | None


class AriClient:
    """REST calls to one Asterisk's ARI, with typed errors.

    >>> await ari.post("channels", channel_id, "answer")
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        request_timeout: float = 10.0,
        max_connections: int = 40,
        connect_retries: int = 3,
    ) -> None:
        self.max_connections, self.connect_retries = max_connections, connect_retries
        self.base_url = base_url.rstrip("/")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self.round_trips = RoundTrips()  # how slow ARI is now (routing/shedding.py reads it)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # A bounded pool: Asterisk refuses HTTP sessions past its sessionlimit, and a refused
            # request must never be what leaves a caller unanswered.
            connector = aiohttp.TCPConnector(limit=self.max_connections)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, *path: str) -> str:
        return self.base_url + "/ari/" + "/".join(quote(str(p), safe="") for p in path)

    def ws_url(self, app: str, subscribe_all: bool = False) -> str:
        base = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        sub = "true" if subscribe_all else "false"
        return f"{base}/ari/events?app={quote(app, safe='')}&subscribeAll={sub}"

    async def request(
        self, method: str, *path: str, body: Any = None, **params: Params
    ) -> Any:
        query = {k: _param(v) for k, v in params.items() if v is not None}
        shown = "/".join(path)
        for attempt in range(self.connect_retries):
            try:
                return await self._once(method, path, shown, query, body)
            except AriConnectionError as exc:
                # A dropped or refused connection: Asterisk never saw the request, or it did and
                # the ARI verbs we use are safe to repeat (ids are ours). A time-out is not
                # retried: the request may still be running. Give up when Asterisk is gone.
                if exc.timed_out or attempt + 1 == self.connect_retries:
                    raise
                log.warning("ARI %s %s: %s; retrying", method, shown, exc)
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: tuple[str, ...], shown: str,
                    query: dict[str, str], body: Any) -> Any:
        token = self.round_trips.started()
        try:
            async with self.session.request(
                method, self.url(*path), params=query,
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
            ) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise error_for(method, shown, resp.status, _message(text) or resp.reason or "")
                if not text:
                    return None
                return json.loads(text)
        except TimeoutError as exc:
            raise AriConnectionError(method, shown, "timed out", timed_out=True) from exc
        except aiohttp.ClientConnectionError as exc:
            raise AriConnectionError(method, shown, str(exc) or type(exc).__name__) from exc
        finally:
            self.round_trips.ended(token)

    async def post_repeatable(self, *path: str, tries: int = 3, still_wanted: Callable[[], bool]
                              = lambda: True, **params: Params) -> Any:
        """POST a request that is safe to repeat (answering a channel: Asterisk answers an
        answered channel at once), asking again when it times out, up to ``tries`` times while
        ``still_wanted()``.

        Not for creating a bridge by id: asked again, Asterisk 22 refuses it as a conflict (409)
        and 16 as an error (500) once the first request made it.

        A time-out means Asterisk is too busy to reply within ``request_timeout``, not that the
        request failed: it may still run, and running it twice does no harm. Other errors, and
        the last time-out, are raised as ``request`` raises them.
        """
        for attempt in range(1, tries + 1):
            try:
                return await self.post(*path, **params)
            except AriConnectionError as exc:
                if not exc.timed_out or attempt == tries or not still_wanted():
                    raise
                log.warning("ARI POST %s timed out (try %d of %d): Asterisk is busy; asking "
                            "again", "/".join(path), attempt, tries)
        raise AssertionError("unreachable")

    async def get(self, *path: str, **params: Params) -> Any:
        return await self.request("GET", *path, **params)

    async def post(self, *path: str, body: Any = None, **params: Params) -> Any:
        return await self.request("POST", *path, body=body, **params)

    async def put(self, *path: str, body: Any = None, **params: Params) -> Any:
        return await self.request("PUT", *path, body=body, **params)

    async def delete(self, *path: str, **params: Params) -> Any:
        return await self.request("DELETE", *path, **params)


def _param(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return text.strip()[:200]
