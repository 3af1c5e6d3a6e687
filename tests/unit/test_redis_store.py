"""The Redis store against a real redis-server: shared grants and follow-ups, atomic first grant,
fair bounds, sealed values, and failing closed (bounded waits, local fallback, resumption)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import urllib.parse

import pytest

from credhop.pending import ChainPosition
from credhop.records import Action, Why
from credhop.redis_store import RedisLink, RedisPending, RedisStore, describe
from credhop.sealing import Sealer
from credhop.store import Grant
from credhop.urls import Origin
from tests.fixtures.fleet import RedisServer, find

A = Origin("https", "a.example", 443)
B = Origin("https", "b.example", 443)
REDIRECTOR = Origin("https", "redirector.example", 443)
EVIL = Origin("https", "evil.example", 443)
K1, K2 = bytes(range(32)), bytes(range(1, 33))
TOKEN = "tk:s3cr3t-T0ken@/%x"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if not find("redis-server", "CREDHOP_REDIS_SERVER"):
        pytest.skip("redis-server not found (make system-deps installs it)")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_server):
    if redis_server.proc is None:
        redis_server.start()
    redis_server.command("FLUSHALL")
    yield redis_server
    if redis_server.proc is None:
        redis_server.start()
    redis_server.thaw()


class Instance:
    def __init__(self, url: str, keys=(K1,), timeout: float = 0.2, **bounds) -> None:
        self.seen: list[tuple[str, float, str | None]] = []
        self.link = RedisLink(url, Sealer(list(keys)), timeout, observer=lambda *a: self.seen.append(a))
        self.store = RedisStore(self.link, **bounds)
        self.pending = RedisPending(self.link)

    async def close(self) -> None:
        await self.link.close()


def grant(client="10.0.0.1", origin=A, issuer=REDIRECTOR, fingerprint="hm:1", value="Basic xyz", ttl=60.0):
    return Grant(client, origin, issuer, "Authorization", value, "r", "u", fingerprint, time.time() + ttl, False,
                 "chain1", 1)


def test_describe_hides_credentials():
    assert describe("redis://user:pw@10.0.0.5:6380/2?x=y") == "redis://10.0.0.5:6380"
    assert describe("unix:///run/redis.sock?password=pw") == "unix:///run/redis.sock"
    assert describe("redis+sentinel://:pw@s1:26379,s2:26379/mymaster") == "redis+sentinel://s1:26379,s2:26379/mymaster"


def test_a_grant_made_on_one_instance_is_used_on_another(redis):
    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        assert await one.store.grant(grant()) is None
        got = await two.store.get("10.0.0.1", A)
        assert got is not None and got.value == "Basic xyz" and got.issuer == REDIRECTOR
        assert await two.store.get("10.0.0.2", A) is None  # another client
        assert await two.store.get("10.0.0.1", Origin("https", "a.example", 8443)) is None  # another origin
        assert await two.store.get("10.0.0.1", Origin("http", "a.example", 443)) is None
        await one.close(), await two.close()
    asyncio.run(go())


def test_grants_expire_with_redis(redis):
    async def go():
        one = Instance(redis.url)
        assert await one.store.grant(grant(ttl=0.3)) is None
        one.store.local.clear()
        await asyncio.sleep(0.45)
        assert await one.store.get("10.0.0.1", A) is None
        await one.close()
    asyncio.run(go())


def test_swap_refused_across_instances_and_same_issuer_may_refresh(redis):
    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        assert await one.store.grant(grant()) is None
        refusal = await two.store.grant(grant(issuer=EVIL, fingerprint="hm:2", value="Basic evil"))
        assert refusal and refusal.why is Why.SWAP_REFUSED and "redirector.example" in refusal.reason
        assert (await two.store.get("10.0.0.1", A)).value == "Basic xyz"
        assert await two.store.grant(grant(fingerprint="hm:3", value="Basic fresh")) is None  # same redirector
        assert (await one.store.get("10.0.0.1", A)).value == "Basic fresh"
        await one.close(), await two.close()
    asyncio.run(go())


def test_racing_grants_exactly_one_wins(redis):
    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        for round_ in range(25):
            client = f"10.1.0.{round_}"
            results = await asyncio.gather(
                one.store.grant(grant(client, issuer=REDIRECTOR, fingerprint="hm:good", value="Basic good")),
                two.store.grant(grant(client, issuer=EVIL, fingerprint="hm:evil", value="Basic evil")))
            assert sorted(r is None for r in results) == [False, True], results
            winner = "Basic good" if results[0] is None else "Basic evil"
            assert (await one.store.get(client, A)).value == winner
            assert (await two.store.get(client, A)).value == winner
        await one.close(), await two.close()
    asyncio.run(go())


def test_per_client_bound_evicts_only_that_clients_grants(redis):
    async def go():
        one = Instance(redis.url, max_entries=8, max_per_client=3)
        reader = Instance(redis.url)
        assert await one.store.grant(grant("10.9.9.9", origin=B)) is None
        for i in range(6):
            await one.store.grant(grant("10.0.0.1", origin=Origin("https", f"h{i}.example", 443), ttl=60 + i))
        one.store.local.clear()
        held = [await reader.store.get("10.0.0.1", Origin("https", f"h{i}.example", 443)) for i in range(6)]
        assert [g is not None for g in held] == [False, False, False, True, True, True]  # soonest to expire went
        assert await reader.store.get("10.9.9.9", B) is not None  # the quiet client kept its grant
        # the fleet-wide bound: the client holding the most loses, not the quiet one
        for i in range(3):
            await one.store.grant(grant("10.0.0.2", origin=Origin("https", f"k{i}.example", 443), ttl=90 + i))
        await one.store.grant(grant("10.0.0.3", origin=B))
        one.store.local.clear()
        assert await reader.store.get("10.9.9.9", B) is not None
        assert await reader.store.get("10.0.0.3", B) is not None
        assert one.store.shared <= 8
        await one.close(), await reader.close()
    asyncio.run(go())


def test_follow_ups_are_shared_and_taken_once(redis):
    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        position = ChainPosition("c0ffee", 1, REDIRECTOR, frozenset({"hm:s"}), "hm:1", Action.STRIP)
        await one.pending.expect("10.0.0.1", "https://a.example/simple/pkg/", A, position)
        assert two.pending.awaits("10.0.0.1")
        assert await two.pending.follow("10.0.0.2", "https://a.example/simple/pkg/") is None
        assert await two.pending.follow("10.0.0.1", "https://a.example/simple/pkg/") == position
        assert await one.pending.follow("10.0.0.1", "https://a.example/simple/pkg/") is None  # taken once
        watched = await one.pending.watching("10.0.0.1", A)
        assert watched and watched.sent == {"hm:s"} and watched.on_leak is Action.STRIP
        second = ChainPosition("c0ffee", 1, REDIRECTOR, frozenset({"hm:t"}), None, Action.LOG)
        await two.pending.expect("10.0.0.1", "https://a.example/other/", A, second)
        merged = await one.pending.watching("10.0.0.1", A)
        assert merged.sent == {"hm:s", "hm:t"} and merged.on_leak is Action.STRIP
        assert await one.pending.watching("10.0.0.1", B) is None
        await one.close(), await two.close()
    asyncio.run(go())


def test_redis_holds_no_readable_client_origin_or_secret(redis):
    async def go():
        one = Instance(redis.url)
        value = "Basic " + base64.b64encode(f"aws:{TOKEN}".encode()).decode()
        await one.store.grant(grant("10.0.0.1", value=value))
        await one.pending.expect("10.0.0.1", "https://a.example/simple/pkg/", A, ChainPosition("c", 1, REDIRECTOR))
        await one.close()
    asyncio.run(go())
    dump = b" ".join(k + b" " + b" ".join(v) for k, v in redis.dump())
    forms = {TOKEN, urllib.parse.quote(TOKEN, safe=""), base64.b64encode(f"aws:{TOKEN}".encode()).decode(),
             "10.0.0.1", "a.example", "redirector.example", "simple/pkg", "aws", "hm:1", "chain1", "Authorization"}
    for form in forms:
        assert form.encode() not in dump, f"<form of {len(form)} chars> readable in Redis"


def test_another_key_sees_nothing_and_rotation_keeps_grants(redis):
    async def go():
        old = Instance(redis.url, keys=(K1,))
        assert await old.store.grant(grant()) is None
        stranger = Instance(redis.url, keys=(K2,))
        assert await stranger.store.get("10.0.0.1", A) is None
        rotated = Instance(redis.url, keys=(K2, K1))  # new key first, old one still accepted for reading
        assert (await rotated.store.get("10.0.0.1", A)).value == "Basic xyz"
        await old.pending.expect("10.0.0.1", "https://a.example/x", A, ChainPosition("c", 1))
        assert await rotated.pending.follow("10.0.0.1", "https://a.example/x") == ChainPosition("c", 1)
        for i in (old, stranger, rotated):
            await i.close()
    asyncio.run(go())


def _waited(instance: Instance) -> float:
    return max((s for op, s, cause in instance.seen), default=0.0)


def test_redis_killed_fails_closed_and_sharing_resumes(redis, caplog):
    caplog.set_level(logging.WARNING, "credhop")

    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        assert await one.store.grant(grant(origin=B)) is None  # shared before the outage
        redis.kill()
        start = time.monotonic()
        assert await one.store.grant(grant()) is None  # answered locally
        assert (await one.store.get("10.0.0.1", A)).value == "Basic xyz"  # works where it was granted
        assert (await one.store.get("10.0.0.1", B)).value == "Basic xyz"
        assert await two.store.get("10.0.0.1", A) is None  # never guessed elsewhere
        assert await two.store.get("10.0.0.9", B) is None
        await one.pending.expect("10.0.0.1", "https://a.example/x", A, ChainPosition("c", 1))
        assert await one.pending.follow("10.0.0.1", "https://a.example/x") == ChainPosition("c", 1)
        for _ in range(20):
            await two.store.get("10.0.0.1", A)
        assert time.monotonic() - start < 1.0
        assert max(_waited(one), _waited(two)) <= 0.3
        assert one.link.outages == 1 and two.link.outages == 1
        redis.start()  # empty
        for _ in range(40):
            if not one.link.down and not two.link.down:
                break
            await asyncio.sleep(0.1)
        assert not one.link.down and not two.link.down
        assert (await one.store.get("10.0.0.1", A)).value == "Basic xyz"  # still here, from the local copy
        assert await one.store.grant(grant("10.0.0.5")) is None
        assert (await two.store.get("10.0.0.5", A)).value == "Basic xyz"  # shared again
        await one.close(), await two.close()
    asyncio.run(go())
    unavailable = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(unavailable) == 2  # once per outage and instance, with its cause
    assert all("connection" in r.getMessage() for r in unavailable)
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_redis_hung_never_stalls_a_call_beyond_the_deadline(redis, caplog):
    caplog.set_level(logging.WARNING, "credhop")

    async def go():
        one = Instance(redis.url, timeout=0.15)
        assert await one.store.grant(grant()) is None
        redis.freeze()
        try:
            start = time.monotonic()
            results = await asyncio.gather(*(one.store.get("10.0.0.1", A) for _ in range(10)),
                                           one.store.get("10.0.0.2", A))
            elapsed = time.monotonic() - start
            assert [r is not None for r in results] == [True] * 10 + [False]
            assert elapsed < 0.5, elapsed
            start = time.monotonic()
            for _ in range(10):
                await one.store.get("10.0.0.1", A)
            assert time.monotonic() - start < 0.05  # down: nobody waits on it any more
        finally:
            redis.thaw()
        for _ in range(40):
            if not one.link.down:
                break
            await asyncio.sleep(0.1)
        assert not one.link.down
        await one.close()
    asyncio.run(go())
    assert any("timeout" in r.getMessage() for r in caplog.records)


def test_a_request_costs_one_round_trip(redis):
    """follow() fetches what the same request's watching() and get() ask next, in one pipeline."""
    async def go():
        one = Instance(redis.url)
        assert await one.store.grant(grant()) is None
        one.store.local.clear()
        one.seen.clear()
        assert await one.pending.follow("10.0.0.1", "https://a.example/simple/") is None
        assert await one.pending.watching("10.0.0.1", A) is None
        assert (await one.store.get("10.0.0.1", A)).value == "Basic xyz"
        assert [op for op, _, _ in one.seen] == ["follow"]
        assert (await one.store.get("10.0.0.1", A)).value == "Basic xyz"  # taken once: asks again
        assert [op for op, _, _ in one.seen] == ["follow", "get"]
        await one.close()
    asyncio.run(go())


def test_no_swap_through_a_rotation(redis):
    """Mid-rotation, an instance with the new key first must not let another site replace a grant
    stored under the old key's names."""
    async def go():
        old = Instance(redis.url, keys=(K1,))
        assert await old.store.grant(grant()) is None
        rotated = Instance(redis.url, keys=(K2, K1))
        refusal = await rotated.store.grant(grant(issuer=EVIL, fingerprint="hm:2", value="Basic evil"))
        assert refusal and refusal.why is Why.SWAP_REFUSED
        assert (await rotated.store.get("10.0.0.1", A)).value == "Basic xyz"
        assert await rotated.store.grant(grant(fingerprint="hm:3", value="Basic fresh")) is None  # same issuer
        assert (await rotated.store.get("10.0.0.1", A)).value == "Basic fresh"
        for i in (old, rotated):
            await i.close()
    asyncio.run(go())


def test_sentinel_url_finds_the_primary(redis, tmp_path):
    from tests.fixtures.fleet import RedisSentinel

    with RedisSentinel(tmp_path / "sentinel", redis) as sentinel:
        async def go():
            one, two = Instance(sentinel.url), Instance(redis.url)
            assert await one.store.grant(grant()) is None
            assert (await two.store.get("10.0.0.1", A)).value == "Basic xyz"  # it went to the primary
            assert one.link.outages == 0
            await one.close(), await two.close()
        asyncio.run(go())


def test_a_credential_redirect_costs_one_round_trip(redis):
    """The grant and the follow-up it expects go to Redis in one pipeline; another instance finds both."""
    from credhop.pending import ChainPosition

    async def go():
        one, two = Instance(redis.url), Instance(redis.url)
        expected = ("10.0.0.1", "https://a.example/simple/", A, ChainPosition("c", 1))
        assert await one.store.grant_and_expect(grant(), one.pending, expected) is None
        assert [op for op, _, cause in one.seen] == ["grant"] and one.pending.expected == 1
        assert (await two.pending.follow("10.0.0.1", "https://a.example/simple/")).chain == "c"
        assert (await two.store.get("10.0.0.1", A)).value == "Basic xyz"
        # a refused swap in the same round trip: the follow-up is still expected (the Location stays)
        other = grant(issuer=EVIL, fingerprint="hm:2", value="Basic evil")
        one.store.local.clear()
        refusal = await one.store.grant_and_expect(other, one.pending, expected)
        assert refusal is not None and refusal.why == "swap-refused"
        assert (await two.pending.follow("10.0.0.1", "https://a.example/simple/")).chain == "c"
        assert (await two.store.get("10.0.0.1", A)).value == "Basic xyz"
        redis.kill()  # down: both are kept locally
        assert await one.store.grant_and_expect(grant(client="10.0.0.2"), one.pending,
                                                ("10.0.0.2", "https://a.example/x/", A, ChainPosition("d", 1))) is None
        assert (await one.pending.follow("10.0.0.2", "https://a.example/x/")).chain == "d"
        assert (await one.store.get("10.0.0.2", A)).value == "Basic xyz"
        await one.close(), await two.close()
    asyncio.run(go())
