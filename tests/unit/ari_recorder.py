"""A stand-in for AriClient in unit tests of the call's ARI requests (pure logic, no Asterisk)."""

from __future__ import annotations

from typing import Any

from ari_app.ari import NotFound, Unprocessable


class Recorder:
    """Records each request as (method, path) in ``requests`` and the ``channel`` parameter in
    ``channels``. ``fail``: paths refused with 422; ``gone``: channels ARI no longer knows (a
    request naming one, in its path or its channel list, is refused with 404)."""

    def __init__(self, fail: set[str] | None = None, gone: set[str] | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        self.channels: list[str] = []
        self.fail = fail or set()
        self.gone = gone or set()

    async def _request(self, method: str, *path: str, **params: Any) -> Any:
        joined = "/".join(path)
        channel = str(params.get("channel", ""))
        self.requests.append((method, joined))
        self.channels.append(channel)
        if joined in self.fail:
            raise Unprocessable(method, joined, 422, "Channel not in bridge")
        if (set(channel.split(",")) | set(path)) & self.gone:
            raise NotFound(method, joined, 404, "Channel not found")
        return {}

    async def post(self, *path: str, **params: Any) -> Any:
        return await self._request("POST", *path, **params)

    async def post_repeatable(self, *path: str, still_wanted: Any = None, **params: Any) -> Any:
        return await self._request("POST", *path, **params)

    async def delete(self, *path: str, **params: Any) -> Any:
        return await self._request("DELETE", *path, **params)

    def sent(self) -> list[tuple[str, str, str]]:
        """(method, path, channel) of every request, in order."""
        return [(m, p, c) for (m, p), c in zip(self.requests, self.channels, strict=True)]
