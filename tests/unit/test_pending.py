"""Pending follow-ups: which hop a request continues."""

from __future__ import annotations

import asyncio

from credhop.pending import ChainPosition, MemoryPending
from tests.unit.addon_helpers import Clock


def run(coro):
    return asyncio.run(coro)


def test_two_chains_waiting_for_the_same_url_queue():
    clock = Clock(0)
    pending = MemoryPending(ttl=10, clock=clock)
    first, second = ChainPosition("c1", 1), ChainPosition("c2", 1)
    run(pending.expect("10.0.0.1", "https://b.example/", first))
    clock.now = 5
    run(pending.expect("10.0.0.2", "https://other.example/", ChainPosition("c3", 1)))
    clock.now = 6
    run(pending.expect("10.0.0.1", "https://b.example/", second))
    clock.now = 7
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == first
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == second
    assert run(pending.follow("10.0.0.1", "https://b.example/")) is None
    clock.now = 0
    run(pending.expect("10.0.0.1", "https://b.example/", first))
    clock.now = 9
    run(pending.expect("10.0.0.1", "https://b.example/", second))
    clock.now = 12
    assert run(pending.follow("10.0.0.1", "https://b.example/")) == second  # the first expired at 10
    clock.now = 16
    assert not run(pending.follow("10.0.0.2", "https://other.example/"))  # expired at 15


def test_knows_which_clients_await_anything():
    clock = Clock(0)
    pending = MemoryPending(ttl=10, max_pending=2, clock=clock)
    run(pending.expect("10.0.0.1", "https://b.example/", ChainPosition("c1", 1)))
    assert pending.awaits("10.0.0.1") and not pending.awaits("10.0.0.2")
    run(pending.expect("10.0.0.2", "https://b.example/", ChainPosition("c2", 1)))
    run(pending.expect("10.0.0.3", "https://b.example/", ChainPosition("c3", 1)))  # bound: drops c1
    assert not pending.awaits("10.0.0.1") and pending.awaits("10.0.0.3")
    run(pending.follow("10.0.0.2", "https://b.example/"))
    assert not pending.awaits("10.0.0.2")
    clock.now = 20
    run(pending.follow("10.0.0.3", "https://nothing.example/"))  # purges the expired c3
    assert not pending.awaits("10.0.0.3") and len(pending) == 0
