"""/metrics access from a non-loopback peer (a real one needs another interface: judged here)."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from ari_app.web.server import is_loopback, metrics_refusal


def _request(peer: str, auth: str | None = None) -> object:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default)
    headers = {"Authorization": auth} if auth else {}
    return make_mocked_request("GET", "/metrics", headers=headers, transport=transport)


def test_a_remote_peer_needs_the_metrics_token_and_loopback_does_not() -> None:
    remote = _request("192.0.2.7")
    refused = metrics_refusal(remote, "t0ken", loopback_open=True)  # type: ignore[arg-type]
    assert refused is not None and refused.status == 401
    assert metrics_refusal(_request("192.0.2.7", "Bearer t0ken"), "t0ken", True) is None  # type: ignore[arg-type]
    wrong = metrics_refusal(_request("192.0.2.7", "Bearer nope"), "t0ken", True)  # type: ignore[arg-type]
    assert wrong is not None and wrong.status == 403
    assert metrics_refusal(_request("127.0.0.1"), "t0ken", True) is None  # type: ignore[arg-type]
    assert metrics_refusal(_request("::1"), "t0ken", True) is None  # type: ignore[arg-type]
    closed = metrics_refusal(_request("127.0.0.1"), "t0ken", False)  # type: ignore[arg-type]
    assert closed is not None and closed.status == 401


def test_loopback_test_is_strict() -> None:
    assert is_loopback("127.0.0.5") and is_loopback("::1")
    assert not is_loopback("10.0.0.1") and not is_loopback("") and not is_loopback(None)
    assert not is_loopback("localhost")  # a name, not an address
