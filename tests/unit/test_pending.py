"""Pending follow-ups: which hop a request continues."""

from __future__ import annotations

import asyncio

from credhop.pending import ChainPosition, MemoryPending
from credhop.records import Action
from credhop.urls import Origin
from tests.unit.addon_helpers import Clock

ORIGIN = Origin("https", "b.example", 443)


def run(coro):
    return asyncio.run(coro)


def test_two_chains_waiting_for_the_same_url_queue():
    clock = Clock(0)
    pending = MemoryPending(ttl=10, clock=clock)
    first, second = ChainPosition("c1", 1), ChainPosition("c2", 1)
    run(pending.expect("10.0.0.1", "https://b.example/", ORIGIN, first))
    clock.now = 5
    run(pending.expect("10.0.0.2", "https://other.example/", ORIGIN, ChainPosition("c3", 1)))
    clock.now = 6
    run(pending.expect("10.0.0.1", "https://b.example/", ORIGIN, second))
    clock.now = 7
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == first
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == second
    assert run(pending.follow("10.0.0.1", "https://b.example/")) is None
    clock.now = 0
    run(pending.expect("10.0.0.1", "https://b.example/", ORIGIN, first))
    clock.now = 9
    run(pending.expect("10.0.0.1", "https://b.example/", ORIGIN, second))
    clock.now = 12
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == second  # the first expired at 10
    clock.now = 16
    assert not run(pending.follow("10.0.0.2", "https://other.example/"))  # expired at 15


def test_knows_which_clients_await_anything():
    clock = Clock(0)
    pending = MemoryPending(ttl=10, max_pending=2, clock=clock)
    run(pending.expect("10.0.0.1", "https://b.example/", ORIGIN, ChainPosition("c1", 1)))
    assert pending.awaits("10.0.0.1") and not pending.awaits("10.0.0.2")
    run(pending.expect("10.0.0.2", "https://b.example/", ORIGIN, ChainPosition("c2", 1)))
    run(pending.expect("10.0.0.3", "https://b.example/", ORIGIN, ChainPosition("c3", 1)))  # bound: drops c1
    assert not pending.awaits("10.0.0.1") and pending.awaits("10.0.0.3")
    run(pending.follow("10.0.0.2", "https://b.example/"))
    assert len(pending) == 1 and not pending.awaits("10.0.0.2")  # it sent no secret: no origin to watch
    clock.now = 20
    run(pending.follow("10.0.0.3", "https://nothing.example/"))  # purges the expired c3
    assert not pending.awaits("10.0.0.3") and len(pending) == 0


def test_an_origin_a_client_was_sent_to_is_watched_whatever_the_url():
    # issue 13, defect 1: leak detection must not depend on recognising the follow-up's URL
    clock = Clock(0)
    pending = MemoryPending(ttl=10, clock=clock)
    first = ChainPosition("c1", 1, sent=frozenset({"hm:a"}), on_leak=Action.STRIP)
    second = ChainPosition("c2", 1, sent=frozenset({"hm:b"}), on_leak=Action.LOG)
    run(pending.expect("10.0.0.1", "https://b.example/x", ORIGIN, first))
    run(pending.expect("10.0.0.1", "https://b.example/y", ORIGIN, second))
    assert run(pending.follow("10.0.0.1", "https://b.example/x")) == first
    watch = run(pending.watching("10.0.0.1", ORIGIN))
    assert watch.chain == "c2" and watch.sent == {"hm:a", "hm:b"} and watch.on_leak is Action.STRIP
    assert run(pending.watching("10.0.0.1", Origin("http", "b.example", 80))) is None
    assert run(pending.watching("10.0.0.2", ORIGIN)) is None
    clock.now = 11
    assert run(pending.watching("10.0.0.1", ORIGIN)) is None and not pending.awaits("10.0.0.1")
    run(pending.expect("10.0.0.1", "https://b.example/z", ORIGIN, ChainPosition("c3", 1)))  # nothing sent
    assert run(pending.watching("10.0.0.1", ORIGIN)) is None
