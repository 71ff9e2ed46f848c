"""The ARI client's own logic against a tiny in-process HTTP server (typed errors, reconnect)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSMsgType, web

from ari_app.ari import (
    AriClient,
    AriConnectionError,
    EventLoop,
    NotFound,
    NotInStasis,
    Unavailable,
    Unprocessable,
)
from ari_app.ari.errors import AriError
from ari_app.calls.call import Call, CallerHungUp
from ari_app.calls.connect import make_bridge
from ari_app.testing.ports import free_port


class FakeAri:
    """Just enough of ARI's shape: status codes, the events socket, the applications list."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.auth_headers: list[str] = []
        self.connected = asyncio.Event()
        self.channel_ids: list[str] = ["111.1"]

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.json_response({"message": f"status {code}"}, status=code)

    async def app(self, request: web.Request) -> web.Response:
        self.auth_headers.append(request.headers.get("Authorization", ""))
        return web.json_response({"name": request.match_info["app"],
                                  "channel_ids": self.channel_ids})

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.CLOSE:
                break
        return ws


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeAri, AriClient]]:
    fake = FakeAri()
    app = web.Application()
    app.router.add_get("/ari/status/{code}", fake.status)
    app.router.add_get("/ari/applications/{app}", fake.app)
    app.router.add_get("/ari/events", fake.events)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    client = AriClient(f"http://127.0.0.1:{port}", "u", "p")
    yield fake, client
    await client.close()
    await runner.cleanup()


@pytest.mark.parametrize(("code", "error"), [(404, NotFound), (409, NotInStasis),
                                             (422, Unprocessable), (503, Unavailable),
                                             (500, AriError)])
async def test_http_status_becomes_a_typed_error_with_asterisks_message(
    fake: tuple[FakeAri, AriClient], code: int, error: type[AriError],
) -> None:
    _, client = fake
    with pytest.raises(error) as exc:
        await client.get("status", str(code))
    assert exc.value.status == code
    assert f"status {code}" in str(exc.value)


async def test_refused_connection_is_an_ari_connection_error() -> None:
    client = AriClient(f"http://127.0.0.1:{free_port()}", "u", "p")
    with pytest.raises(AriConnectionError):
        await client.get("asterisk", "info")
    await client.close()


async def test_event_loop_lists_app_channels_on_connect_and_reconnects_after_drop(
    fake: tuple[FakeAri, AriClient],
) -> None:
    server, client = fake
    received: list[dict[str, object]] = []
    adopted: list[list[str]] = []
    got_event = asyncio.Event()

    def on_event(event: dict[str, object]) -> None:
        received.append(event)
        got_event.set()

    async def on_connect(ids: list[str]) -> None:
        adopted.append(ids)

    loop = EventLoop(client, "siaga", on_event, on_connect, initial_backoff=0.01, max_backoff=0.05)
    task = asyncio.create_task(loop.run())
    await loop.wait_ready(5)
    assert adopted == [["111.1"]]
    assert server.auth_headers[0].startswith("Basic ")

    await server.sockets[0].send_str(json.dumps({"type": "StasisStart", "channel": {"id": "x"}}))
    await asyncio.wait_for(got_event.wait(), 5)
    assert received[0]["type"] == "StasisStart"

    server.connected.clear()
    await server.sockets[0].close()  # Asterisk went away
    await asyncio.wait_for(server.connected.wait(), 5)
    await loop.wait_ready(5)
    assert loop.connections == 2
    assert adopted == [["111.1"], ["111.1"]]

    loop.stop()
    await server.sockets[-1].close()
    await asyncio.wait_for(task, 5)
    assert not loop.ready


class BusyAsterisk:
    """Answers ``POST channels/{id}/answer`` only after ``slow`` requests that outlast the
    client's time-out, as a saturated Asterisk does; counts every request."""

    def __init__(self, slow: int, delay: float, status: int = 204) -> None:
        self.slow, self.delay, self.status = slow, delay, status
        self.requests = 0

    async def answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.slow:
            await asyncio.sleep(self.delay)
        if self.status == 204:
            return web.Response(status=204)
        return web.json_response({"message": "Channel not found"}, status=self.status)


@pytest.fixture
async def busy(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BusyAsterisk, AriClient]]:
    slow, status = getattr(request, "param", (1, 204))
    server = BusyAsterisk(slow, delay=6.0, status=status)
    app = web.Application()
    app.router.add_post("/ari/channels/{id}/answer", server.answer)
    async with _client_of(app) as client:
        yield server, client


@contextlib.asynccontextmanager
async def _client_of(app: web.Application) -> AsyncIterator[AriClient]:
    """An ARI client of the stand-in ``app``, served on a free loopback port."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # 1 s: a request must reach the stand-in (same event loop) before it times out, on a
    # loaded CI machine too.
    client = AriClient(f"http://127.0.0.1:{port}", "u", "p", request_timeout=1.0)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


def _caller(client: AriClient) -> Call:
    return Call(client, {"id": "1700000000.7", "state": "Ring",
                         "caller": {"number": "081234"}}, ["emergency"])


async def test_an_answer_that_times_out_is_asked_again_not_given_up(
    busy: tuple[BusyAsterisk, AriClient], caplog: pytest.LogCaptureFixture,
) -> None:
    """Asterisk too busy to reply in time: the caller (hearing the ringback) is answered by
    the second request, not handed to the fallback."""
    server, client = busy
    await _caller(client).answer()
    assert server.requests == 2
    assert "channels/1700000000.7/answer timed out (try 1 of 3)" in caplog.text


@pytest.mark.parametrize("busy", [(3, 204)], indirect=True)
async def test_an_answer_timing_out_every_time_is_raised_after_the_last_try(
    busy: tuple[BusyAsterisk, AriClient],
) -> None:
    server, client = busy
    with pytest.raises(AriConnectionError) as exc:
        await _caller(client).answer()
    assert exc.value.timed_out and server.requests == 3


async def test_a_caller_who_hangs_up_while_asterisk_is_slow_is_not_answered_again(
    busy: tuple[BusyAsterisk, AriClient], caplog: pytest.LogCaptureFixture,
) -> None:
    server, client = busy
    call = _caller(client)
    call.gone = True  # the hangup event arrived while the first answer was on its way
    with pytest.raises(CallerHungUp):
        await call.answer()
    assert "asking again" not in caplog.text and server.requests <= 1


@pytest.mark.parametrize("busy", [(0, 404)], indirect=True)
async def test_other_errors_are_not_asked_again(busy: tuple[BusyAsterisk, AriClient]) -> None:
    """Only a time-out is repeated: an answer Asterisk refused (the channel is gone) is
    raised at once, as the caller's hangup."""
    server, client = busy
    with pytest.raises(CallerHungUp):
        await _caller(client).answer()
    assert server.requests == 1


class BusyBridges:
    """``POST/GET bridges/{id}`` of an Asterisk too busy to reply in time to the first
    ``slow`` creations; ``made_anyway``: whether such a slow creation still makes the bridge
    (Asterisk ran it after the client gave up); ``late``: it makes it only just after the
    client's look for it (the look finds nothing). A second creation of a bridge that exists
    is refused, as Asterisk 22 does (409)."""

    def __init__(self, slow: int, made_anyway: bool, late: bool = False) -> None:
        self.slow, self.made_anyway, self.late = slow, made_anyway, late
        self.bridges: dict[str, str] = {}
        self.landing: dict[str, str] = {}  # late: made once the next look has been answered
        self.sent: list[str] = []

    async def create(self, request: web.Request) -> web.Response:
        bridge_id = request.match_info["id"]
        self.sent.append("POST")
        if bridge_id in self.bridges:
            return web.json_response({"message": "Bridge already exists"}, status=409)
        if self.sent.count("POST") <= self.slow:
            if self.made_anyway:
                made = self.landing if self.late else self.bridges
                made[bridge_id] = request.query["type"]
            await asyncio.sleep(6.0)
            return web.json_response({"id": bridge_id})  # long after the client gave up
        self.bridges[bridge_id] = request.query["type"]
        return web.json_response({"id": bridge_id})

    async def get(self, request: web.Request) -> web.Response:
        self.sent.append("GET")
        found = request.match_info["id"] in self.bridges
        self.bridges.update(self.landing)
        self.landing.clear()
        if not found:
            return web.json_response({"message": "Bridge not found"}, status=404)
        return web.json_response({"id": request.match_info["id"]})


@contextlib.asynccontextmanager
async def _bridges(slow: int, made_anyway: bool,
                   late: bool = False) -> AsyncIterator[tuple[BusyBridges, AriClient]]:
    server = BusyBridges(slow, made_anyway, late)
    app = web.Application()
    app.router.add_post("/ari/bridges/{id}", server.create)
    app.router.add_get("/ari/bridges/{id}", server.get)
    async with _client_of(app) as client:
        yield server, client


@pytest.mark.parametrize(("made_anyway", "sent"), [(True, ["POST", "GET"]),
                                                   (False, ["POST", "GET", "POST"])])
async def test_a_bridge_whose_creation_times_out_is_looked_for_then_made_once(
    made_anyway: bool, sent: list[str], caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator answered, Asterisk is too busy to reply to the bridge's creation in time:
    the call goes on with the bridge the slow request made, or makes it if it did not, with
    the operator's keypad events (not a rescue into the fallback, nor a 409 taken for one)."""
    async with _bridges(slow=1, made_anyway=made_anyway) as (server, client):
        await make_bridge(client, _caller(client), "call-1700000000.7")
    assert server.sent == sent
    assert server.bridges == {"call-1700000000.7": "mixing,dtmf_events"}
    assert "call=1700000000.7 bridge call-1700000000.7: ARI timed out (try 1 of 3)" in caplog.text


async def test_a_bridge_made_late_by_the_slow_request_is_the_calls_not_a_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The slow creation lands just after the look found nothing, so Asterisk refuses the new
    one (409): the bridge is there, the call goes on with it instead of being rescued."""
    async with _bridges(slow=1, made_anyway=True, late=True) as (server, client):
        await make_bridge(client, _caller(client), "call-1700000000.7")
    assert server.sent == ["POST", "GET", "POST", "GET"]
    assert server.bridges == {"call-1700000000.7": "mixing,dtmf_events"}
    assert ("call=1700000000.7 bridge call-1700000000.7: made by the request that timed out "
            "(the new one was refused with 409)") in caplog.text


async def test_a_refused_first_creation_is_raised_not_taken_for_a_late_one() -> None:
    """Without a time-out before it, a refusal is an error in the call: nothing is looked up."""
    async with _bridges(slow=0, made_anyway=False) as (server, client):
        server.bridges["call-1700000000.7"] = "holding"  # someone else's bridge by that id
        with pytest.raises(NotInStasis):
            await make_bridge(client, _caller(client), "call-1700000000.7")
    assert server.sent == ["POST"]


async def test_a_bridge_that_never_gets_a_reply_in_time_is_raised_after_the_last_try() -> None:
    async with _bridges(slow=3, made_anyway=False) as (server, client):
        with pytest.raises(AriConnectionError):
            await make_bridge(client, _caller(client), "call-1700000000.7")
    assert server.sent == ["POST", "GET", "POST", "GET", "POST"]


async def test_a_caller_gone_while_the_bridge_was_being_made_is_a_hangup_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller hung up while Asterisk was too slow to reply: the call ends as the caller's
    hangup (the operator's leg is then hung up by ``bridge``), not as a bug to rescue."""
    async with _bridges(slow=1, made_anyway=False) as (server, client):
        call = _caller(client)
        call.gone = True
        with pytest.raises(CallerHungUp):
            await make_bridge(client, call, "call-1700000000.7")
    assert "looking again" not in caplog.text and server.sent in ([], ["POST"])
