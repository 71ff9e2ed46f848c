"""Typed ARI errors. Every service expects NotFound: callers hang up at any moment."""

from __future__ import annotations


class AriError(Exception):
    status: int = 0

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        super().__init__(f"ARI {method} {path}: {status} {message}")


class BadRequest(AriError):
    """400: a parameter ARI did not accept."""


class NotFound(AriError):
    """404: the channel, bridge or playback is gone (the caller hung up)."""


class NotInStasis(AriError):
    """409: the channel is not (or no longer) in our Stasis application."""


class Unprocessable(AriError):
    """422: the request is well formed but cannot be done (e.g. endpoint not found)."""


class Unavailable(AriError):
    """503: Asterisk cannot serve the request now."""


class AriConnectionError(AriError):
    """Asterisk did not answer at all (refused, reset, time-out)."""

    def __init__(self, method: str, path: str, message: str, *, timed_out: bool = False) -> None:
        super().__init__(method, path, 0, message)
        self.timed_out = timed_out


_BY_STATUS: dict[int, type[AriError]] = {
    400: BadRequest,
    404: NotFound,
    409: NotInStasis,
    422: Unprocessable,
    503: Unavailable,
}


def error_for(method: str, path: str, status: int, message: str) -> AriError:
    return _BY_STATUS.get(status, AriError)(method, path, status, message)
