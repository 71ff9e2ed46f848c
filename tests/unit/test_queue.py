"""The waiting queue and operator claims (MemoryQueue): priority then age, one claim each."""

from __future__ import annotations

from typing import Any

from ari_app.clock import Clock
from ari_app.routing.queue import MemoryQueue, WaitingQueue
from ari_app.routing.roster import Roster


def roster(*free: str) -> Roster:
    r = Roster(ari=None, sessions=None, site="jepara", clock=Clock())  # type: ignore[arg-type]
    r.on_shift = list(free)
    r.reachable = dict.fromkeys(free, True)
    return r


def offered(q: MemoryQueue, call_id: str) -> Any:
    offer = q.next_offer(q.entries[call_id])
    return offer.result() if offer.done() else None


async def test_the_menus_answer_orders_the_waiting_callers_priority_then_age() -> None:
    r = roster()
    q: WaitingQueue = MemoryQueue(r)
    assert isinstance(q, MemoryQueue)
    for call_id in ("a", "b", "c"):  # all joined at the uncategorised priority, in this order
        q.join(call_id, 3)
    q.reprioritise("a", 5)   # a complaint
    q.reprioritise("c", 1)   # a fire, the newest
    assert [q.position(c) for c in ("c", "b", "a")] == [0, 1, 2]
    r.on_shift, r.reachable = ["op1"], {"op1": True}
    r.release("op1", talked=False)  # the operator becomes free: the roster tells the queue
    assert (offered(q, "c"), offered(q, "b"), offered(q, "a")) == ("op1", None, None)
    assert r.candidates() == []  # claimed: nobody else is offered op1


async def test_an_unanswered_ring_keeps_the_callers_place_and_tries_the_next_operator() -> None:
    r = roster("op1", "op2")
    q = MemoryQueue(r)
    entry = q.join("a", 2)
    first = q.accept(entry)
    q.requeue(entry, first)
    second = offered(q, "a")
    assert {first, second} == {"op1", "op2"}
    assert r.reserved == {second}


async def test_leaving_with_an_offer_not_taken_releases_the_operator() -> None:
    r = roster("op1")
    q = MemoryQueue(r)
    q.join("a", 1)
    assert offered(q, "a") == "op1" and r.candidates() == []
    q.leave("a")  # e.g. the call's task was cancelled the moment the offer came
    assert r.candidates() == ["op1"] and q.position("a") == -1
    q.claim("op1")  # an adopted call re-claims the operator it is bridged to
    assert r.candidates() == []
    q.release("op1", talked=True)
    assert r.candidates() == ["op1"]
