"""The Redis store on a real Redis Cluster (3 primaries, 3 replicas): a client's keys on one slot so
every script stays atomic, clients spread over the shards, grants and follow-ups shared across
instances, presence per bucket, the bound per bucket, what `credhop check` says, and a primary killed
mid-traffic: calls stay within their deadline, nothing wrong is answered, sharing resumes on the
promoted replica."""

from __future__ import annotations

import asyncio
import time

import pytest

from credhop.pending import ChainPosition
from credhop.redis_store import BUCKETS, RedisLink, RedisPending, RedisStore, describe, is_cluster
from credhop.sealing import Sealer
from credhop.store import Grant
from credhop.urls import Origin
from tests.fixtures.cluster import RedisCluster
from tests.fixtures.fleet import find

A = Origin("https", "a.example", 443)
B = Origin("https", "b.example", 443)
REDIRECTOR = Origin("https", "redirector.example", 443)
EVIL = Origin("https", "evil.example", 443)
KEY = bytes(range(32))
TIMEOUT = 0.2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not find("redis-server", "CREDHOP_REDIS_SERVER") or not find("redis-cli", "CREDHOP_REDIS_CLI"):
        pytest.skip("redis-server / redis-cli not found (make system-deps installs them)")
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture
def fresh(cluster):
    """An empty, healthy cluster for each test."""
    cluster.wait_ok()
    for node in cluster.primaries():
        cluster.command(node, "FLUSHALL")
    return cluster


class Instance:
    def __init__(self, url: str, **bounds) -> None:
        self.seen: list[tuple[str, float, str | None]] = []
        self.link = RedisLink(url, Sealer([KEY]), TIMEOUT, observer=lambda *a: self.seen.append(a))
        self.store = RedisStore(self.link, **bounds)
        self.pending = RedisPending(self.link)

    async def warm(self) -> Instance:
        """As at start (announce_store looks at the store): the cluster's topology read before traffic."""
        assert (await self.link.look(write=False)).answers
        return self

    async def close(self) -> None:
        await self.link.close()


async def started(url: str, **bounds) -> Instance:
    return await Instance(url, **bounds).warm()


def grant(client="10.0.0.1", origin=A, issuer=REDIRECTOR, fingerprint="hm:1", value="Basic xyz", ttl=60.0):
    return Grant(client, origin, issuer, "Authorization", value, "r", "u", fingerprint, time.time() + ttl, False,
                 "chain1", 1)


def keys_of(cluster) -> dict[str, str]:
    """Every key of the cluster -> the port of the primary holding it."""
    found = {}
    for node in cluster.primaries():
        for key in cluster.command(node, "KEYS", "credhop:*").splitlines():
            if key:
                found[key] = node.port
    return found


def test_the_url_names_a_cluster_and_hides_its_password():
    assert is_cluster("redis+cluster://a:1,b:2") and is_cluster("rediss+cluster://a:1")
    assert not is_cluster("redis://a:1")
    assert describe("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7000") == "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"


def test_node_lists_take_a_default_port_and_ipv6():
    from credhop.redis_store import StoreConfigError, _hosts

    assert _hosts("u:pw@a:7000,b,[::1]:7001,[::1],::1", 6379) == [
        ("a", 7000), ("b", 6379), ("::1", 7001), ("::1", 6379), ("::1", 6379)]
    with pytest.raises(StoreConfigError, match="HOST"):
        _hosts("a:port", 6379)


def test_a_clients_keys_share_one_slot_and_clients_spread_over_every_shard(fresh):
    async def go():
        one = await started(fresh.url)
        for i in range(120):
            client = f"10.1.0.{i}"
            await one.store.grant(grant(client=client))
            await one.store.grant(grant(client=client, origin=B, fingerprint="hm:2"))
            await one.pending.expect(client, "https://a.example/simple/x/", A, ChainPosition("c", 1, REDIRECTOR))
        await one.close()
    asyncio.run(go())
    found = keys_of(fresh)
    tags: dict[str, set[str]] = {}
    for key in found:
        if "{" in key:
            tag = key[key.index("{") + 1:key.index("}")]
            tags.setdefault(tag, set()).add(fresh.command(fresh.primaries()[0], "CLUSTER", "KEYSLOT", key))
    assert tags and all(len(slots) == 1 for slots in tags.values())  # each bucket on one slot
    assert all(len(tag) == 2 for tag in tags) and len(tags) <= BUCKETS
    assert len(set(found.values())) == 3  # every primary holds some: the buckets spread
    assert not [k for k in found if "{" not in k and k != "credhop:v1:keycheck"]  # nothing untagged but the check


def test_a_grant_made_on_one_instance_is_used_on_another_and_a_swap_is_refused(fresh):
    async def go():
        one, two = await started(fresh.url), await started(fresh.url)
        assert await one.store.grant(grant()) is None
        got = await two.store.get("10.0.0.1", A)
        assert got is not None and got.value == "Basic xyz" and got.issuer == REDIRECTOR
        assert await two.store.get("10.0.0.2", A) is None and await two.store.get("10.0.0.1", B) is None
        refusal = await two.store.grant(grant(issuer=EVIL, fingerprint="hm:evil", value="Basic evil"))
        assert refusal is not None and refusal.why == "swap-refused"
        assert (await one.store.get("10.0.0.1", A)).value == "Basic xyz"
        await one.close(), await two.close()
    asyncio.run(go())


def test_two_instances_racing_for_one_client_and_origin_cannot_both_win(fresh):
    async def go():
        instances = [Instance(fresh.url) for _ in range(4)]
        for i in instances:
            await i.warm()
        reader = await started(fresh.url)
        for round_ in range(20):
            client = f"10.2.0.{round_}"
            answers = await asyncio.gather(*(
                i.store.grant(grant(client=client, issuer=Origin("https", f"r{n}.example", 443),
                                    fingerprint=f"hm:{n}", value=f"Basic {n}"))
                for n, i in enumerate(instances)))
            winners = [n for n, refusal in enumerate(answers) if refusal is None]
            assert len(winners) == 1, answers
            held = await reader.store.get(client, A)
            assert held is not None and held.value == f"Basic {winners[0]}"
        for i in [*instances, reader]:
            await i.close()
    asyncio.run(go())


def test_a_follow_up_expected_on_one_instance_is_found_on_another(fresh):
    async def go():
        one, two = await started(fresh.url), await started(fresh.url)
        position = ChainPosition("chain7", 1, REDIRECTOR)
        assert await one.store.grant_and_expect(grant(client="10.3.0.1"), one.pending,
                                                ("10.3.0.1", "https://a.example/simple/x/", A, position)) is None
        assert one.link.down is False
        found = await two.pending.follow("10.3.0.1", "https://a.example/simple/x/")
        assert found is not None and found.chain == "chain7"
        assert await two.pending.follow("10.3.0.1", "https://a.example/simple/x/") is None  # taken once
        assert (await two.store.get("10.3.0.1", A)).value == "Basic xyz"
        await one.close(), await two.close()
    asyncio.run(go())


def test_presence_per_bucket_spares_clients_without_state_a_round_trip(fresh):
    async def go():
        one, two = await started(fresh.url), await started(fresh.url)
        await one.store.grant(grant(client="10.4.0.1"))
        for _ in range(100):  # subscribing and reading every bucket's set
            if two.link.presence.live:
                break
            two.link.presence.may_have("warm-up")
            await asyncio.sleep(0.05)
        assert two.link.presence.live
        assert two.store.may_hold("10.4.0.1") and not two.store.may_hold("10.4.0.99")
        await one.store.grant(grant(client="10.4.0.2"))  # published cluster-wide from inside the script
        for _ in range(100):
            if two.store.may_hold("10.4.0.2"):
                break
            await asyncio.sleep(0.02)
        assert two.store.may_hold("10.4.0.2")
        await one.close(), await two.close()
    asyncio.run(go())


def test_the_bound_holds_per_bucket(fresh):
    async def go():
        # 256 buckets, 512 credentials at most: a bucket holds at most ceil(512 * 1.25 / 256) = 3
        one = await started(fresh.url, max_entries=512)
        assert one.link.max_in_bucket(512) == 3
        for i in range(600):
            await one.store.grant(grant(client=f"10.5.{i // 250}.{i % 250}"))
        await one.close()
    asyncio.run(go())
    found = keys_of(fresh)
    per_bucket: dict[str, int] = {}
    for key in found:
        if "}g:" in key:
            tag = key[key.index("{") + 1:key.index("}")]
            per_bucket[tag] = per_bucket.get(tag, 0) + 1
    assert max(per_bucket.values()) <= 3
    assert 256 <= sum(per_bucket.values()) <= 3 * 256  # the fleet holds about the bound, never far above it


def test_check_says_it_is_a_cluster_of_three_primaries(fresh):
    async def go():
        link = RedisLink(fresh.url, Sealer([KEY]), TIMEOUT)
        report = await link.look(write=True)
        await link.close()
        return report
    report = asyncio.run(go())
    assert report.answers and not report.problem, report
    assert report.kind == "Redis Cluster of 3 primaries" and report.key.startswith("key check written")


def test_the_first_contact_reads_the_topology_within_a_deadline_of_its_own(fresh):
    """redis-py's first cluster call parses the command table (COMMAND, thousands of lines): longer than
    a tight store deadline. The look at start must still find the cluster answering, and later calls
    keep the tight deadline."""
    tight = 0.03

    async def go():
        link = RedisLink(fresh.url, Sealer([KEY]), tight)
        start = time.perf_counter()
        await link.redis.initialize()  # what the first contact costs here, to show the deadline is short
        first_contact = time.perf_counter() - start
        await link.close()
        link = RedisLink(fresh.url, Sealer([KEY]), tight)
        report = await link.look(write=False)
        await link.close()
        return first_contact, report
    first_contact, report = asyncio.run(go())
    assert first_contact > tight, "the first contact was quicker than the tight deadline: nothing shown"
    assert report.answers and not report.problem, report


def test_a_primary_killed_mid_traffic_bounds_every_call_and_sharing_resumes(cluster, tmp_path):
    cluster.wait_ok()

    async def go():
        one, two = await started(cluster.url), await started(cluster.url)
        clients = [f"10.6.0.{i}" for i in range(60)]
        for client in clients:
            assert await one.store.grant(grant(client=client, value=f"Basic {client}")) is None
        victim = cluster.primaries()[1]
        cluster.command(victim, "WAIT", "1", "2000")  # its replica has what it wrote: the test is the failover
        cluster.kill(victim)
        waits, wrong = [], 0
        deadline = time.monotonic() + 30
        healed = False
        while time.monotonic() < deadline:
            for client in clients:
                start = time.monotonic()
                held = await two.store.get(client, A)  # two has no local copies: only Redis answers it
                waits.append(time.monotonic() - start)
                if held is not None and held.value != f"Basic {client}":
                    wrong += 1
            found = [await two.store.get(c, A) for c in clients]
            if all(found):
                healed = True
                break
            await asyncio.sleep(0.1)
        await one.close(), await two.close()
        return waits, wrong, healed, victim
    waits, wrong, healed, victim = asyncio.run(go())
    try:
        assert wrong == 0
        assert max(waits) < TIMEOUT * 3  # a dead node: refused at once, or given up at the deadline
        assert healed, "the promoted replica never served the killed primary's grants"
    finally:
        cluster.start_again(victim)
        cluster.wait_ok()


def test_a_frozen_primary_stops_only_its_own_clients_calls(cluster):
    """One primary stops answering (SIGSTOP): the first call to it waits out the deadline, later calls
    for its buckets are answered locally at once, and every other shard's clients keep sharing. Once
    it answers again, or its replica took over, its clients share again."""
    from redis.crc import key_slot

    cluster.wait_ok()
    victim = cluster.primaries()[2]

    async def go():
        one, two = await started(cluster.url), await started(cluster.url)
        clients = [f"10.7.0.{i}" for i in range(60)]
        for client in clients:
            assert await one.store.grant(grant(client=client, value=f"Basic {client}")) is None
        on_victim = {c for c in clients if cluster.owner(key_slot(two.link.tag(c).encode())).port == victim.port}
        assert 0 < len(on_victim) < len(clients)
        # the victim's clients first: with the whole store taken for down, no other could share after
        order = sorted(clients, key=lambda c: c not in on_victim)
        cluster.freeze(victim)
        try:
            waits, found = [], {}
            for client in order:
                start = time.monotonic()
                found[client] = await two.store.get(client, A)  # two has no local copies: only Redis answers
                waits.append(time.monotonic() - start)
        finally:
            cluster.thaw(victim)
        shared_meanwhile = {c for c, held in found.items() if held is not None}
        wrong = [c for c, held in found.items() if held is not None and held.value != f"Basic {c}"]
        deadline, healed = time.monotonic() + 30, False
        while time.monotonic() < deadline and not healed:
            await asyncio.sleep(0.2)
            healed = all([await two.store.get(c, A) for c in clients]) and not two.link.down
        await one.close(), await two.close()
        return on_victim, shared_meanwhile, wrong, waits, healed, set(clients)
    on_victim, shared_meanwhile, wrong, waits, healed, clients = asyncio.run(go())
    cluster.wait_ok()
    assert not wrong
    assert clients - on_victim <= shared_meanwhile, "a healthy shard's clients stopped sharing"
    assert sum(w > TIMEOUT / 2 for w in waits) <= 2, "calls kept waiting on the frozen primary"
    assert max(waits) < TIMEOUT * 3
    assert healed, "the frozen primary's clients never shared again"


def test_credhop_check_store_names_the_cluster(fresh, tmp_path):
    import io

    from credhop import cli

    key = tmp_path / "store.key"
    key.write_text(KEY.hex() + "\n")
    key.chmod(0o600)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["check", "--store", fresh.url, "--store-key", str(key)], out=out, err=err) == 0, err.getvalue()
    assert "Redis Cluster of 3 primaries" in out.getvalue() and "Redis 7." in out.getvalue()
    node = fresh.url.removeprefix("redis+cluster://").split(",")[0]
    out, err = io.StringIO(), io.StringIO()  # one node of it named as a single primary: refused, and why
    assert cli.main(["check", "--store", f"redis://{node}", "--store-key", str(key)], out=out, err=err) == 1
    assert "redis+cluster://" in err.getvalue()
