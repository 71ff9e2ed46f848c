"""Wiring: ARI client, event loop, call registry, roster, queue, database writer. One per site."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ari_app.ari import AriClient, AriError, EventLoop, NotFound
from ari_app.calls.call import Call
from ari_app.calls.context import CallContext
from ari_app.calls.flow import handle
from ari_app.calls.registry import UNUSED_EVENTS, CallRegistry
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import LiveBus
from ari_app.location.service import LocationService
from ari_app.pbx.cel import CelRecord, cel_path
from ari_app.pbx.render import node_name
from ari_app.pbx.taskprocessors import TaskprocessorWatch
from ari_app.routing.queue import CallQueue, MemoryQueue
from ari_app.routing.roster import Roster
from ari_app.routing.shared_queue import LostNode, SharedQueue
from ari_app.routing.shedding import Shedder, ShedPolicy
from ari_app.routing.states import OperatorStates
from ari_app.secrets import secret
from ari_app.tickets.calls import CallStore, open_calls
from ari_app.tickets.db import database_url, make_engine, sessions
from ari_app.tickets.fallback import FallbackImporter
from ari_app.tickets.service import NODE_LOST, TicketService
from ari_app.tickets.writer import Writer
from ari_app.web.console import start_background
from ari_app.web.server import WebServer

log = logging.getLogger(__name__)


@dataclass
class AppSettings:
    site: Site
    var_dir: Path
    database_url: str
    ari_url: str
    ari_user: str
    ari_password: str
    clock: Clock = field(default_factory=Clock)
    roster_refresh_s: float = 2.0
    # How often the app looks for callers left in its Stasis app with no coroutine of ours (a
    # failed rescue under overload): one seen unowned on two sweeps in a row is adopted.
    stranded_sweep_s: float = 15.0
    web_port: int | None = None   # None: the site's web.port; 0 disables the web side
    # How often the app checks that every call the database holds as live still has its
    # channel (besides every reconnect); a ticket whose call ended unseen is closed from CEL.
    reconcile_every_s: float = 60.0
    # This machine's node name on a site of several nodes sharing one PostgreSQL (SIAGA112_NODE):
    # the waiting queue and the operator claims are then shared (routing/shared_queue.py).
    node: str = ""
    node_lease_s: float = 10.0

    @classmethod
    def from_env(cls, site: Site, var_dir: Path) -> AppSettings:
        a = site.asterisk
        host = a.bind if a.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        return cls(
            site=site,
            var_dir=var_dir,
            database_url=database_url(var_dir),
            ari_url=os.environ.get("SIAGA112_ARI_URL") or f"http://{host}:{a.http_port}",
            ari_user=os.environ.get("SIAGA112_ARI_USER", "siaga112"),
            ari_password=os.environ.get("SIAGA112_ARI_PASSWORD") or secret(var_dir, "ari.password"),
            clock=Clock.from_env(),
            node=node_name(),
        )


class AppAlreadyRunning(Exception):
    """Another app holds this site's Stasis name: ARI would silently starve one of them."""


class InstanceLock:
    """One app per Stasis name on this node: an flock, released by the kernel even on SIGKILL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AppAlreadyRunning(
                f"another siaga112 serve (pid {holder}) already runs Stasis app "
                f"{self.path.stem!r}; two apps on one name make ARI drop calls. "
                f"Stop it first (lock: {self.path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class App:
    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        site = settings.site
        self.engine = make_engine(settings.database_url)
        self.sessions = sessions(self.engine)
        self.writer = Writer(self.sessions, settings.var_dir / "journal" / f"{site.stasis_app}.db",
                             node=site.stasis_app)
        self.ari = AriClient(settings.ari_url, settings.ari_user, settings.ari_password)
        self.registry = CallRegistry(self.ari, self._handle)
        self.shedder = Shedder(self.ari, ShedPolicy(
            above_s=site.queue.shed_when_ari_p90_ms / 1000,
            below_s=site.queue.resume_when_ari_p90_ms / 1000))
        self.states = OperatorStates(self.writer, settings.clock.now)
        self.roster = Roster(self.ari, self.sessions, site.code, settings.clock,
                             refresh_s=settings.roster_refresh_s, states=self.states,
                             wrap_up_s=site.console.wrap_up_s)
        self.shared_queue: SharedQueue | None = None
        self.queue: MemoryQueue = CallQueue(self.roster)
        if settings.node:
            if not settings.database_url.startswith("postgresql"):
                raise ValueError(f"node {settings.node!r}: several nodes share one PostgreSQL; "
                                 f"DATABASE_URL is {settings.database_url.split(':', 1)[0]}")
            self.shared_queue = SharedQueue(
                self.roster, site=site.code, node=settings.node, dsn=settings.database_url,
                lease_s=settings.node_lease_s, alive=lambda: self.events.ready,
                on_node_lost=self._node_lost)
            self.queue = self.shared_queue
        self.live = LiveBus()
        self.locations = LocationService(self.writer, self.live)
        self.cel = CelRecord(cel_path(settings.var_dir))
        self.ctx = CallContext(
            site=site, sounds_dir=settings.var_dir / "sounds",
            recordings_dir=settings.var_dir / "asterisk" / "spool" / "recording",
            clock=settings.clock, calls=CallStore(self.writer, site.code),
            tickets=TicketService(self.writer, site.code, site.reference_prefix, site.timezone),
            ari=self.ari, registry=self.registry, roster=self.roster, queue=self.queue,
            live=self.live, locations=self.locations,
            holding_bridge=f"{site.stasis_app}-holding",
            cel=self.cel)
        self.fallback = FallbackImporter(settings.var_dir / "fallback" / "calls.jsonl",
                                         self.writer, self.ctx.tickets)
        self.events = EventLoop(self.ari, site.stasis_app, self.registry.on_event,
                                self._on_connect, unused_events=UNUSED_EVENTS,
                                on_disconnect=self._on_disconnect)
        self.disconnected_at: datetime | None = None  # last time the websocket dropped
        self._reconcile_now = asyncio.Event()
        self.reconciled = 0  # tickets closed by reconcile (for /metrics and tests)
        self.reconcile_runs = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.taskprocessors = TaskprocessorWatch(settings.var_dir)
        self.lock = InstanceLock(settings.var_dir / "run" / f"{site.stasis_app}.lock")
        self.web: WebServer | None = None
        if settings.web_port != 0:
            self.web = WebServer(self, settings.web_port)

    async def _handle(self, call: Call) -> None:
        await handle(self.ctx, call)

    def _on_disconnect(self) -> None:
        self.disconnected_at = self.settings.clock.now()

    async def _on_connect(self, channel_ids: list[str]) -> None:
        self.fallback.import_new()
        self._close_lost_calls(set(channel_ids))
        await self._holding_bridge()
        await self.roster.refresh()
        await self._adopt(channel_ids)
        if self.shedder.policy.enabled:  # after the callers: a word a dead app left lapses anyway
            await self.shedder.clear()
        self._reconcile_now.set()  # after adoption: callers first, records next

    def _close_lost_calls(self, present: set[str]) -> None:
        """Calls whose channels died with Asterisk are closed (end reason "asterisk restart"),
        at the time the websocket to that Asterisk dropped."""
        for call_id, call in list(self.registry.calls.items()):
            if call_id not in present:
                log.warning("%s channel gone after reconnect: Asterisk restarted", call.tag)
                call.lost_reason = "asterisk restart"
                call.lost_at = self.disconnected_at
                call.deliver({"type": "ChannelDestroyed", "channel": {"id": call_id},
                              "cause_txt": "asterisk restart"})

    async def _reconcile_loop(self) -> None:
        """Reconcile after every (re)connect and every ``reconcile_every_s``; a database or
        ARI that is not there yet is tried again, with back-off, until one pass completes."""
        delay = 1.0
        while True:
            try:  # asyncio.timeout: 3.11's wait_for can lose a cancel
                async with asyncio.timeout(self.settings.reconcile_every_s):
                    await self._reconcile_now.wait()
            except TimeoutError:
                pass
            self._reconcile_now.clear()
            if not self.events.ready:
                continue  # the next connect asks again
            try:
                await self.reconcile()
                delay = 1.0
            except Exception as exc:  # the database or ARI away: the next pass will do it
                log.warning("reconcile not done (%s: %s); again in %.0f s", type(exc).__name__,
                            exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._reconcile_now.set()

    async def _asterisk_started(self) -> datetime | None:
        try:
            info = await self.ari.get("asterisk", "info", only="status")
        except AriError as exc:
            log.warning("Asterisk start time unknown: %s", exc)
            return None
        text = str((info.get("status") or {}).get("startup_time") or "")
        for parse in (datetime.fromisoformat,
                      lambda t: datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%f%z")):
            try:
                return parse(text)
            except ValueError:
                continue
        return None

    async def reconcile(self) -> int:
        """Close every ticket whose call the database holds as live but whose channel is gone.

        What happened comes from Asterisk's own record (CEL, ``var/asterisk/log/master.db``):
        the caller's hangup, an operator's answer, the bridge. A call with no hangup recorded
        that started before this Asterisk did died with the previous one ("asterisk restart",
        at the time it went away). The audit line says what was known and what was not.
        Returns how many tickets were asked to close.
        """
        self.fallback.import_new()  # the dialplan's own records first: they are exact
        # what the journal held when we came back (the dead app's last writes) is in first, so
        # the calls it opened are seen and the ones it closed are not closed twice
        await self.writer.wait_applied(self.writer.last_seq, 30.0)
        live = await open_calls(self.sessions, self.settings.site.code)
        if not live:
            self.reconcile_runs += 1
            return 0
        present = {str(c.get("id")) for c in await self.ari.get("channels")}
        started = await self._asterisk_started()
        clock = self.settings.clock
        now = clock.now()
        started_at = clock.at(started.timestamp()) if started else None
        closed = 0
        for channel_id, arrived in sorted(live.items(), key=lambda kv: kv[1]):
            if channel_id in present or channel_id in self.registry.owners \
                    or channel_id in self.registry.calls:
                continue
            story = self.cel.story(channel_id)
            known: dict[str, object] = {"source": "cel" if story else "none"}
            unknown: list[str] = []
            if story is not None:
                known["events"] = story.events[-12:]
            if story is not None and story.hangup_at is not None:
                ended = clock.at(story.hangup_at)
                reason = f"{story.ended_by} hangup (app down)"
                known["hangup"] = ended.isoformat()
                if story.hangup_cause is not None:
                    known["hangup_cause"] = story.hangup_cause
            elif started_at is not None and arrived < started_at:
                lost = self.disconnected_at if self.disconnected_at and \
                    self.disconnected_at <= started_at else None
                if lost is None and started is not None:
                    last = self.cel.last_event_before(started.timestamp())
                    lost = clock.at(last) if last is not None else started_at
                ended, reason = lost or started_at, "asterisk restart"
                unknown.append("exact end time: Asterisk stopped without recording a hangup; "
                               "this is when it went away (last record before its restart)")
            else:
                ended, reason = now, "ended unseen (no record)"
                unknown.append("end time: Asterisk recorded no hangup; the call ended at or "
                               "before this time")
            human = bool(story and story.bridged_at is not None)
            # an operator counts once they were in the bridge with the caller (one who
            # answered after the caller had gone never talked to them)
            operator = story.operator if story and human else None
            op_answered = clock.at(story.operator_answered_at) \
                if story and story.operator_answered_at else None
            if story is not None:
                known["operator_answered"] = op_answered.isoformat() if op_answered else None
                known["bridged"] = clock.at(story.bridged_at).isoformat() \
                    if story.bridged_at else None
                if op_answered and not human:
                    unknown.append("whether the caller heard the operator: answered, "
                                   "never bridged")
            self.ctx.tickets.reconcile(
                channel_id, now, ended_at=max(ended, arrived), end_reason=reason, known=known,
                unknown=unknown, operator=operator,
                operator_answered_at=op_answered if human else None,
                answered_at=clock.at(story.answered_at) if story and story.answered_at
                else None, human=human,
                # a key pressed while no app listened is not on the ticket: with no menu choice
                # recorded, it says so for the operator to classify, as an adopted call's does
                uncategorised_after_restart=True)
            log.warning("call=%s gone while unwatched: closing its ticket (%s, %s)", channel_id,
                        reason, "from CEL" if story else "no CEL record")
            closed += 1
        self.reconciled += closed
        self.reconcile_runs += 1
        return closed

    async def _holding_bridge(self) -> None:
        bridge = self.ctx.holding_bridge
        try:
            try:
                await self.ari.get("bridges", bridge)  # still there after an app restart
            except NotFound:
                await self.ari.post("bridges", bridge, type="holding", name="112 waiting callers")
                await self.ari.post("bridges", bridge, "moh", mohClass="default")
        except AriError as exc:
            log.error("holding bridge %s not ready: %s (callers get channel music)", bridge, exc)

    def _unhandled(self, channel_ids: list[str]) -> list[str]:
        """The callers among ``channel_ids`` that no call coroutine here owns. Operator and
        agency legs are left out: they are paired again by their caller's adoption."""
        return [c for c in channel_ids
                if c not in self.registry.owners and not c.startswith(("op-", "ag-"))]

    async def _adopt(self, channel_ids: list[str]) -> None:
        """Calls in our app that nothing here handles (after a reconnect, a restart, a failed
        rescue) are taken up again."""
        for channel_id in self._unhandled(channel_ids):
            try:
                channel = await self.ari.get("channels", channel_id)
            except NotFound:
                continue
            log.warning("call=%s adopted", channel_id)
            self.registry.start(channel, ["adopted"])

    def _node_lost(self, lost: LostNode) -> None:
        """Another node died (its lease ran out): the calls that were waiting or talking there
        died with it. Their tickets are closed as "node lost" and their callers called back."""
        now = self.settings.clock.now()
        for channel_id in lost.calls:
            log.warning("call=%s closed: node %s lost (last seen %s)", channel_id, lost.node,
                        lost.last_seen.isoformat())
            self.ctx.tickets.reconcile(
                channel_id, now, ended_at=min(lost.last_seen, now), end_reason=NODE_LOST,
                known={"node": lost.node, "node last seen": lost.last_seen.isoformat(),
                       "closed by node": self.settings.node},
                unknown=["when the call ended (at the latest when its node fell silent)",
                         "what happened on that node after it fell silent"])

    async def start(self) -> None:
        self.lock.acquire()
        if self.web is not None:
            await self.web.start()
        self._tasks = [
            asyncio.create_task(self.writer.run(), name="db-writer"),
            asyncio.create_task(self.events.run(), name="ari-events"),
            asyncio.create_task(self._roster_loop(), name="roster"),
            asyncio.create_task(self._fallback_loop(), name="fallback-import"),
            asyncio.create_task(self._stranded_loop(), name="stranded-sweep"),
            asyncio.create_task(self.taskprocessors.run(), name="taskprocessors"),
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self.shedder.run(), name="shedder"),
        ]
        self._tasks.append(start_background(self))  # agencies seeded, notification worker
        if self.shared_queue is not None:
            self._tasks.append(asyncio.create_task(self.shared_queue.run(), name="shared-queue"))

    def roster_changed(self) -> None:
        """An admin changed operators or shifts (`siaga112 operators|shifts ...` signals us):
        read the roster now rather than at the next periodic refresh."""
        log.info("roster changed by an admin command: reloading it")
        task = asyncio.create_task(self.roster.refresh(), name="roster-changed")
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _roster_loop(self) -> None:
        await self.events.wait_ready(None)
        await self.roster.run()

    async def _fallback_loop(self) -> None:
        while True:  # calls the dialplan took during a websocket gap become tickets too
            await asyncio.sleep(15)
            self.fallback.import_new()

    async def _stranded_loop(self) -> None:
        """Callers in our Stasis app that no call coroutine owns are taken up again.

        That happens when a call's handler failed and its rescue (``continue`` to the fallback)
        failed too, e.g. ARI requests timing out under overload: nobody would act on the caller
        again. A channel must be unowned on two sweeps in a row, so a call whose StasisStart is
        still on its way is never taken for one.
        """
        unowned: set[str] = set()
        while True:
            await asyncio.sleep(self.settings.stranded_sweep_s)
            if not self.events.ready:
                unowned.clear()  # a reconnect adopts everything in the app anyway
                continue
            try:
                app = await self.ari.get("applications", self.settings.site.stasis_app)
            except AriError as exc:
                log.warning("stranded-call sweep skipped: %s", exc)
                continue
            now = set(self._unhandled([str(c) for c in app.get("channel_ids", [])]))
            stranded, unowned = now & unowned, now - unowned
            for channel_id in sorted(stranded):
                log.error("call=%s in the app with no call handling it: adopting it", channel_id)
            await self._adopt(sorted(stranded))

    async def wait_ready(self, timeout: float = 15.0) -> None:
        await self.events.wait_ready(timeout)

    async def stop(self, flush_timeout: float = 10.0) -> None:
        self.events.stop()
        await self.registry.cancel_all()
        try:
            await self.writer.flush(flush_timeout)
        except TimeoutError:
            log.error("stopping with %d database writes not done", self.writer.backlog)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.web is not None:
            await self.web.stop()
        if self.shared_queue is not None:
            await self.shared_queue.stop()
        await self.ari.close()
        await self.engine.dispose()
        self.writer.close()
        self.lock.release()
