"""presence.py with a real redis-server: a client without state anywhere costs no round trip; what
one instance writes, another hears; the race can only miss an injection, never make a wrong one."""

from __future__ import annotations

import asyncio
import time

from credhop import presence
from credhop.urls import Origin
from tests.unit.test_redis_store import A, Instance, grant, redis, redis_server  # noqa: F401 (fixtures)

STATE_OPS = ("hget", "lpop", "lrange", "evalsha", "eval", "zrangebyscore")


def _calls(server) -> dict[str, int]:
    stats = server.command("INFO", "commandstats")  # parsed by redis-py: cmdstat_NAME -> {"calls": n, …}
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_")}


def _state_calls(server) -> int:
    calls = _calls(server)
    return sum(calls.get(op, 0) for op in STATE_OPS)


async def _until_live(*instances: Instance, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    for one in instances:
        one.store.may_hold("warm-up")  # starts the subscription
    while not all(one.link.presence.live for one in instances):
        assert time.monotonic() < deadline, "the subscription never became live"
        await asyncio.sleep(0.01)


async def _ask(one: Instance, client: str, origin: Origin = A):
    """What the addon does for a request: ask only when something may be held or pending."""
    if not (one.pending.awaits(client) or one.store.may_hold(client)):
        return None
    return await one.store.get(client, origin)


def test_a_client_without_state_anywhere_costs_no_round_trip(redis):
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        assert await a.store.grant(grant(client="10.0.0.1")) is None
        await asyncio.sleep(0.05)
        before = _state_calls(redis)
        for i in range(200):
            assert await _ask(b, f"10.9.{i // 250}.{i % 250}") is None
        assert _state_calls(redis) == before  # 200 requests, no command about state
        # positive control: the client with a grant on the other instance is asked about, and found
        assert (await _ask(b, "10.0.0.1")).value == "Basic xyz"
        assert _state_calls(redis) == before + 1
        await a.close(), await b.close()
    asyncio.run(go())


def test_state_written_on_one_instance_is_heard_on_another(redis):
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        assert not b.store.may_hold("10.0.0.7") and not b.pending.awaits("10.0.0.7")
        await a.pending.expect("10.0.0.7", "https://a.example/s/", A, _position())
        deadline = time.monotonic() + 2
        while not b.pending.awaits("10.0.0.7"):
            assert time.monotonic() < deadline, "instance b never heard of the follow-up"
            await asyncio.sleep(0.001)
        assert (await b.pending.follow("10.0.0.7", "https://a.example/s/")).chain == "c"
        # the sorted set holds sealed names and times only: nothing readable
        names = redis.command("ZRANGE", presence.KEY, "0", "-1")
        assert names and not any(b"10.0.0.7" in n for n in names)
        await a.close(), await b.close()
    asyncio.run(go())


def _position():
    from credhop.pending import ChainPosition

    return ChainPosition("c", 1)


def test_the_race_never_injects_wrongly_and_its_misses_are_measured(redis, capsys):
    """Instance a grants, b gets the follow-up `delay` later (a real client needs the 3xx first:
    a round trip at least). Every answer b gives is a's grant or nothing; misses are counted."""
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        results = {}
        for delay in (0.0, 0.001, 0.005):
            misses = wrong = 0
            for i in range(300):
                client = f"10.{int(delay * 1000)}.{i // 250}.{i % 250}"
                given = grant(client=client, value=f"Basic v{i}", fingerprint=f"hm:{i}")
                assert await a.store.grant(given) is None
                if delay:
                    await asyncio.sleep(delay)
                got = await _ask(b, client)
                if got is None:
                    misses += 1
                elif (got.client, got.origin, got.value) != (given.client, given.origin, given.value):
                    wrong += 1
            results[delay] = misses
            assert wrong == 0
        with capsys.disabled():
            print(f"\npresence race, misses of 300 by delay before the follow-up: {results}")
        assert results[0.005] <= 3  # a follow-up 5 ms after the grant is (nearly) always heard of
        await a.close(), await b.close()
    asyncio.run(go())


def test_a_lost_subscription_asks_on_every_request_until_it_has_read_the_set_again(redis, capsys):
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        resyncs = b.link.presence.resyncs
        killed = time.monotonic()
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")  # both lose their subscription
        while b.link.presence.live:  # noticed at b's next read of the closed connection
            assert time.monotonic() - killed < presence.HEARTBEAT + 1, "a closed subscription was still trusted"
            await asyncio.sleep(0.001)
        noticed = time.monotonic() - killed
        assert await a.store.grant(grant(client="10.0.0.9")) is None  # published while b is not subscribed
        deadline = time.monotonic() + 5
        while b.link.presence.resyncs == resyncs:
            # until b has read the set again, it must not say "nothing" about the client a just granted
            assert b.store.may_hold("10.0.0.9")
            assert time.monotonic() < deadline, "b never subscribed again"
            await asyncio.sleep(0.005)
        await _until_live(b)
        assert b.store.may_hold("10.0.0.9") and (await b.store.get("10.0.0.9", A)).value == "Basic xyz"
        assert not b.store.may_hold("10.0.0.10")
        with capsys.disabled():
            print(f"\npresence: a killed subscription noticed after {noticed * 1000:.1f} ms")
        await a.close(), await b.close()
    asyncio.run(go())


def test_a_stopped_redis_is_noticed_by_the_heartbeat(redis):
    async def go():
        b = Instance(redis.url)
        await _until_live(b)
        redis.freeze()
        try:
            deadline = time.monotonic() + presence.STALE_AFTER + 2
            while b.link.presence.live:
                assert time.monotonic() < deadline, "a frozen Redis was trusted past the heartbeat"
                await asyncio.sleep(0.05)
            assert b.store.may_hold("10.0.0.11")  # not sure: ask (the link answers locally while down)
        finally:
            redis.thaw()
        await b.close()
    asyncio.run(go())


# -- views: a client's later requests to one origin, without a round trip -------------------------


async def _request(one: Instance, client: str, url: str, origin: Origin = A):
    """As hop.Hops.follow_up asks the stores for one request."""
    if not (one.pending.awaits(client) or one.store.may_hold(client)):
        return None, None
    position = await one.pending.follow(client, url)
    if position is None:
        await one.pending.watching(client, origin)
    return position, await one.store.get(client, origin)


def test_downloads_after_the_follow_up_make_no_round_trip_until_something_is_written(redis):
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        client = "10.0.0.20"
        assert await a.store.grant(grant(client=client, value="Basic one")) is None
        await a.pending.expect(client, "https://a.example/s/", A, _position())
        await asyncio.sleep(0.05)
        position, held = await _request(b, client, "https://a.example/s/")  # the follow-up: taken from Redis
        assert position.chain == "c" and held.value == "Basic one"
        await _request(b, client, "https://a.example/files/first.whl")  # reads that nothing is queued: a view
        before = _state_calls(redis)
        for i in range(50):  # the other downloads: what b read last still holds
            position, held = await _request(b, client, f"https://a.example/files/{i}.whl")
            assert position is None and held.value == "Basic one"
        assert _state_calls(redis) == before
        # the redirector hands out a fresh credential on instance a: b hears of it and asks again
        assert await a.store.grant(grant(client=client, value="Basic two")) is None
        await asyncio.sleep(0.05)
        assert (await _request(b, client, "https://a.example/files/x.whl"))[1].value == "Basic two"
        assert _state_calls(redis) > before
        # a new redirect on a: the follow-up queued there is found on b, not answered from the view
        await a.pending.expect(client, "https://a.example/t/", A, _position())
        await asyncio.sleep(0.05)
        assert (await _request(b, client, "https://a.example/t/"))[0].chain == "c"
        await a.close(), await b.close()
    asyncio.run(go())


def test_a_view_is_not_used_after_a_gap_in_the_subscription(redis):
    async def go():
        a, b = Instance(redis.url), Instance(redis.url)
        await _until_live(a, b)
        client = "10.0.0.21"
        assert await a.store.grant(grant(client=client, value="Basic one")) is None
        await asyncio.sleep(0.05)
        await _request(b, client, "https://a.example/files/0.whl")
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        while b.link.presence.live:
            await asyncio.sleep(0.001)
        assert await a.store.grant(grant(client=client, value="Basic two")) is None  # b hears nothing of it
        await _until_live(b)
        assert (await _request(b, client, "https://a.example/files/1.whl"))[1].value == "Basic two"
        await a.close(), await b.close()
    asyncio.run(go())
