"""Do the Asterisk 16 Stasis-wait workarounds still pay on this Asterisk? One short measurement.

    python -m bench.stasis_wait [--calls 10]      # on the Asterisk SIAGA112_ASTERISK chooses

Asterisk 16 runs a queued ARI command on a channel in Stasis only when the channel's control
loop wakes: on a frame, or after 200 ms (fixed upstream in 18.21/20.6/22.0). Two workarounds in
the product rest on that:

* ``Playtones(ring)`` before ``Stasis()`` (dialplan/20-emergency.conf): the tone's 20 ms timer
  wakes the loop, so the app's ``answer`` runs at once;
* ringing the operator while the caller's move to the holding bridge is pending
  (calls/flow.py ``to_operator``): a caller silent after the key would make ``addChannel``
  wait the 200 ms.

Here SIPp callers send no RTP at all (the worst case: DTX, mute, a prank). Each call enters a
probe Stasis app, with or without the ring tone first; the probe times ``answer``, stops the
tone as the app does (``DELETE /channels/{id}/ring``), then times ``addChannel`` into a holding
bridge, and hangs up. Both are the HTTP round trip, which on every version returns after the
command has run on the channel. The same Asterisk, the same session, the two variants
interleaved call by call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ari_app.ari import AriClient, AriError
from ari_app.ari.events import Event, iter_events
from ari_app.config import load_site
from ari_app.pbx.installation import installation
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from bench.sipp import SippProc, SippSpec

APP = "bench-stasis-wait"
DIALPLAN = f"""; bench.stasis_wait only: the product's entry (Progress, optional tone), then a probe app.
[from-carrier]
exten => 9200,1,Progress()
 same => n,Playtones(ring)
 same => n,Stasis({APP},tone)
 same => n,Hangup()
exten => 9201,1,Progress()
 same => n,Stasis({APP},silent)
 same => n,Hangup()
"""


async def measure(calls: int, work: Path) -> dict[str, dict[str, list[float]]]:
    site = on_free_ports(load_site("jepara"))
    var = work / "var"
    var.mkdir(parents=True)
    (var / "sounds").mkdir()
    extra = work / "stasis-wait.conf"
    extra.write_text(DIALPLAN)
    ast = PrivateAsterisk(site, var, extra_dialplan=[extra])
    await asyncio.to_thread(ast.start)
    r = ast.rendered
    client = AriClient(ast.ari_url, r.ari_user, r.ari_password)
    events: asyncio.Queue[Event] = asyncio.Queue()
    opened = asyncio.Event()
    results: dict[str, dict[str, list[float]]] = {
        v: {"answer_ms": [], "hold_ms": []} for v in ("tone", "silent")}

    async def on_open() -> None:
        opened.set()

    async def pump() -> None:
        async for e in iter_events(client, APP, on_open=on_open):
            events.put_nowait(e)

    pump_task = asyncio.create_task(pump())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        for i in range(calls):
            for variant, service in (("tone", "9200"), ("silent", "9201")):
                spec = SippSpec(name="probe", scenario="probe.xml",
                                workdir=work / f"{variant}-{i}", target_port=ast.sip_port,
                                service=service, calls=1, timeout_s=30, numbers=["081200000001"],
                                template={"probe_media": "sends no RTP", "probe_play": ""})
                sipp = SippProc(spec)
                sipp.start()
                try:
                    async with asyncio.timeout(15):
                        while True:
                            e = await events.get()
                            if e.get("type") == "StasisStart":
                                break
                    ch = e["channel"]["id"]
                    t0 = time.perf_counter()
                    await client.post("channels", ch, "answer")
                    t1 = time.perf_counter()
                    with contextlib.suppress(AriError):
                        await client.delete("channels", ch, "ring")
                    bridge = f"hold-{variant}-{i}"
                    await client.post("bridges", bridge, type="holding")
                    t2 = time.perf_counter()
                    await client.post("bridges", bridge, "addChannel", channel=ch, role="participant")
                    t3 = time.perf_counter()
                    results[variant]["answer_ms"].append(1000 * (t1 - t0))
                    results[variant]["hold_ms"].append(1000 * (t3 - t2))
                    await client.delete("channels", ch)
                    await client.delete("bridges", bridge)
                finally:
                    await asyncio.to_thread(sipp.stop, 5)
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump_task
        await client.close()
        await asyncio.to_thread(ast.stop)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stasis_wait", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10, help="calls per variant (default 10)")
    p.add_argument("--json", type=Path, help="also write the samples here")
    args = p.parse_args(argv)
    if not 1 <= args.calls <= 200:
        print("bench.stasis_wait: --calls must be 1..200", file=sys.stderr)
        return 2
    ast = installation()
    work = Path(tempfile.mkdtemp(prefix="siaga112-stasis-wait-"))
    results = asyncio.run(measure(args.calls, work))
    shutil.rmtree(work, ignore_errors=True)
    print(f"{ast.describe()}, {args.calls} silent callers per variant")
    print("| variant | answer p50 ms | answer max ms | addChannel p50 ms | addChannel max ms |")
    print("|---|---|---|---|---|")
    for variant, label in (("tone", "Playtones(ring) first"), ("silent", "no tone")):
        a, h = results[variant]["answer_ms"], results[variant]["hold_ms"]
        print(f"| {label} | {statistics.median(a):.1f} | {max(a):.1f} | "
              f"{statistics.median(h):.1f} | {max(h):.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"asterisk": ast.version, "calls": args.calls,
                                         "samples": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
