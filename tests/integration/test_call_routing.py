"""Who answers, when: hours, priority, ring timeout, abandoned callers, menu edge cases."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ari_app.config import Site
from ari_app.live import next_change
from tests.integration.conftest import WIB, WITA, PhoneFactory, StackFactory, at

pytestmark = pytest.mark.integration




def quick(site: Site, ring_timeout_s: float = 3.0) -> Site:
    return dataclasses.replace(site, queue=dataclasses.replace(site.queue,
                                                               ring_timeout_s=ring_timeout_s))


async def test_jepara_at_ten_at_night_forwards_caller_to_24h_number_through_trunk(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    carrier, contact = await phone("operator_answer_talk.xml", name="110",
                                   extra_args=["-d", "1000"])
    stack = await make_stack(clock=at(22, WIB), trunk_contact=contact.replace("sip:110@", "sip:"))
    result = await stack.call("caller_listen.xml")
    assert result.ok, result.errors
    assert (await carrier.wait(20)).successful == 1  # the 24-hour service got the call
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.status == "forwarded"
    assert ticket.end_reason == "forwarded to 110"
    assert ticket.policy == "forward: closed"
    assert ticket.operator is None


async def test_batola_at_three_in_the_morning_reaches_the_operator(
    make_stack: StackFactory, phone: PhoneFactory, batola: Site,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(batola, operators=[("op1", contact)], clock=at(3, WITA))
    result = await stack.call("caller_key.xml", template={"digit": "5"})
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.reference.startswith("BTL-20250519-")
    assert (ticket.category, ticket.operator, ticket.status) == ("medical", "op1", "classified")


async def test_no_operator_on_duty_applies_the_out_of_hours_policy(
    make_stack: StackFactory, batola: Site,
) -> None:
    stack = await make_stack(batola, clock=at(3, WITA))
    result = await stack.call("caller_listen.xml")
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.callback_needed and ticket.status == "new"
    assert ticket.end_reason == "callback (no operator on duty)"
    [row] = await stack.calls()
    assert row.end_reason == ticket.end_reason and row.ended_at is not None


async def test_first_operator_never_answers_so_the_second_rings_after_the_timeout(
    make_stack: StackFactory, phone: PhoneFactory, jepara: Site,
) -> None:
    silent_phone, c1 = await phone("operator_no_answer.xml", name="op1")
    good_phone, c2 = await phone("operator_answer_talk.xml", name="op2", extra_args=["-d", "1000"],
                                 answer_after_ms="200")  # within the 3 s ring timeout
    stack = await make_stack(quick(jepara), operators=[("op1", c1), ("op2", c2)],
                             clock=at(10, WIB))
    result = await stack.call("caller_key.xml", template={"digit": "1"})
    assert result.ok, result.errors
    assert (await silent_phone.wait(10)).successful == 1
    assert (await good_phone.wait(10)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.operator == "op2"
    rings = [a.actor for a in await stack.audit(ticket) if a.action == "ringing"]
    assert rings == ["op1", "op2"]


async def test_caller_hanging_up_while_queued_leaves_abandoned_ticket_and_rings_nobody_after(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", calls=1, extra_args=["-d", "6000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    assert stack.app is not None
    changes = stack.app.live.listen()
    busy = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                          keys={"caller": "081200000001"}))
    await next_change(changes, "bridged", timeout=40)
    quitter = await stack.call("caller_key_hangup.xml", template={"digit": "9"},
                               keys={"caller": "081200000002"}, extra_args=["-d", "1500"])
    assert quitter.ok, quitter.errors
    assert (await busy).ok
    await stack.settle()
    first, second = await stack.tickets()
    assert first.operator == "op1"
    assert second.status == "abandoned" and second.callback_needed
    assert second.operator is None and second.queued_at is not None
    assert not [a for a in await stack.audit(second) if a.action == "ringing"]
    assert (await uas.wait(10)).successful == 1  # the operator's phone rang exactly once


async def test_higher_priority_is_served_first_then_the_older_call(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", calls=4, extra_args=["-d", "7000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    assert stack.app is not None
    changes, menus = stack.app.live.listen(), stack.app.live.listen()
    first = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                           keys={"caller": "081200000010"}))
    await next_change(changes, "bridged", timeout=40)
    # While the operator talks, three callers arrive one after the other (each is queued from
    # its answer on) and answer the menu: two complaints, then a fire.
    waiting, queued = [], []
    for caller, digit in (("081200000011", "9"), ("081200000012", "9"), ("081200000013", "2")):
        waiting.append(asyncio.create_task(stack.call(
            "caller_key.xml", template={"digit": digit, "key_after_ms": "500"},
            keys={"caller": caller}, timeout_s=150)))
        queued.append((await next_change(changes, "queued", timeout=40))["call"])
    assert len(set(queued)) == 3
    chosen = {(await next_change(menus, "menu", timeout=20))["call"] for _ in range(4)}
    assert chosen >= set(queued)
    assert stack.app.queue.position(queued[2]) == 0  # the fire, newest, goes first
    results = await asyncio.gather(first, *waiting)
    assert all(r.ok for r in results), [r.errors for r in results]
    await stack.settle()
    tickets = await stack.tickets()
    served = sorted(tickets, key=lambda t: t.operator_answered_at)  # type: ignore[arg-type,return-value]
    assert [t.caller_number for t in served] == [
        "081200000010", "081200000013", "081200000011", "081200000012"]


async def test_invalid_key_twice_reaches_an_operator_uncategorised(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    result = await stack.call("caller_invalid_twice.xml", template={"digit": "7"})
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.operator == "op1" and ticket.category == "uncategorised"
    # status is the furthest stage the call reached: an operator talked, nobody classified yet
    assert ticket.menu_choice == "invalid" and ticket.status == "in_call"
    assert ticket.ended_at is not None


async def test_talking_without_a_key_reaches_an_operator_uncategorised(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    result = await stack.call("caller_talks.xml")
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert (ticket.operator, ticket.menu_choice, ticket.silent) == ("op1", "talked", False)
    assert ticket.priority == stack.site.menu.uncategorised_priority


async def test_silent_caller_reaches_operator_at_top_priority_flagged_silent(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    result = await stack.call("caller_silent.xml")
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert (ticket.operator, ticket.menu_choice, ticket.silent) == ("op1", "silent", True)
    assert ticket.priority == stack.site.menu.silent_priority == 1
