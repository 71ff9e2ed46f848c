"""A thin asyncio ARI client: REST over aiohttp, the events websocket, reconnect.

It knows ARI and nothing of 112.
"""

from ari_app.ari.client import AriClient
from ari_app.ari.errors import (
    AriConnectionError,
    AriError,
    BadRequest,
    NotFound,
    NotInStasis,
    Unavailable,
    Unprocessable,
)
from ari_app.ari.events import EventLoop

__all__ = [
    "AriClient",
    "AriConnectionError",
    "AriError",
    "BadRequest",
    "EventLoop",
    "NotFound",
    "NotInStasis",
    "Unavailable",
    "Unprocessable",
]
