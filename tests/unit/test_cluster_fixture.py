"""The Redis Cluster fixture (tests/fixtures/cluster.py) against real redis-server nodes: it forms, serves a
key on each primary, fails over, rejoins, reshards, and leaves no process behind.

Slow: each test forms its own 6-node cluster (about 3 s); the failover tests wait for the cluster
(node timeout 1 s) to elect a replica. About 20 to 25 s in all.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.fixtures.cluster import BUS_OFFSET, SLOTS, RedisCluster, key_slot, parse_nodes
from tests.fixtures.fleet import find


@pytest.fixture
def cluster(tmp_path):
    for name, env in (("redis-server", "CREDHOP_REDIS_SERVER"), ("redis-cli", "CREDHOP_REDIS_CLI")):
        if not find(name, env):
            pytest.skip(f"{name} not found (make system-deps installs it)")
    with RedisCluster(tmp_path / "cluster") as c:
        yield c


def key_on(cluster: RedisCluster, primary, prefix: str) -> str:
    """A key the cluster itself (CLUSTER KEYSLOT) places in one of `primary`'s slots."""
    ranges = []
    for item in next(v for v in cluster.view() if v.id == primary.id).slots:
        first, _, last = item.partition("-")
        ranges.append(range(int(first), int(last or first) + 1))
    for n in range(200):
        key = f"{prefix}:{n}"
        slot = int(cluster.command(primary, "CLUSTER", "KEYSLOT", key))
        assert key_slot(key) == slot
        if any(slot in r for r in ranges):
            return key
    raise AssertionError(f"no key of 200 lands on {primary.address}")


def written(cluster: RedisCluster, primary, prefix: str) -> str:
    """A key of `primary`, set through another node (redis-cli -c follows MOVED) and replicated."""
    key = key_on(cluster, primary, prefix)
    other = next(n for n in cluster.nodes if n is not primary and n.answering)
    assert cluster.command(other, "SET", key, f"value of {key}", follow=True) == "OK"
    assert cluster.command(primary, "WAIT", "1", "2000") == "1"  # its replica has it too
    return key


def test_the_cluster_forms_and_each_primary_serves_its_keys(cluster):
    primaries = cluster.primaries()
    assert len(primaries) == 3 and len(cluster.nodes) == 6
    assert cluster.url == "redis+cluster://" + ",".join(p.address for p in primaries)
    assert all(n.port < 55536 and n.port + BUS_OFFSET < 65536 for n in cluster.nodes)
    assert sum(cluster.slot_count(p) for p in primaries) == SLOTS
    replicas = [cluster.replica_of(p) for p in primaries]
    assert len({r.port for r in replicas} | {p.port for p in primaries}) == 6
    assert all(cluster.role(r) == "slave" for r in replicas)
    for primary, replica in zip(primaries, replicas):
        key = written(cluster, primary, "k")
        assert cluster.command(primary, "GET", key) == f"value of {key}"  # no redirection: it lives there
        for other in primaries:
            if other is not primary:
                assert cluster.command(other, "GET", key).startswith("MOVED ")
                assert cluster.command(other, "GET", key, follow=True) == f"value of {key}"
        assert cluster.command(replica, "GET", key).startswith("MOVED ")  # a replica sends clients on
    assert cluster.problems() == []


def test_a_killed_primary_is_replaced_by_its_replica_and_rejoins_as_a_replica(cluster):
    primary = cluster.primaries()[0]
    replica = cluster.replica_of(primary)
    key = written(cluster, primary, "before")
    cluster.kill(primary)
    assert cluster.problems()  # unhealthy until the replica took over
    took = cluster.wait_ok(timeout=20)
    assert cluster.role(replica) == "master"
    assert replica in cluster.primaries() and primary not in cluster.primaries()
    assert cluster.command(replica, "GET", key) == f"value of {key}"  # the replica had it
    cluster.start_again(primary)
    cluster.wait_ok(timeout=20)
    assert cluster.role(primary) == "slave"
    assert cluster.replica_of(replica) is primary
    assert cluster.command(primary, "GET", key).startswith("MOVED ")  # a replica: not its slots any more
    assert took < 20


def test_reshard_moves_the_slots_and_their_keys(cluster):
    source, target, third = cluster.primaries()
    keys = [written(cluster, source, f"r{n}") for n in range(3)]
    before = {n.port: cluster.slot_count(n) for n in (source, target, third)}
    cluster.reshard(source, target, slots=100)
    cluster.wait_ok(timeout=20)
    assert cluster.slot_count(source) == before[source.port] - 100
    assert cluster.slot_count(target) == before[target.port] + 100
    assert cluster.slot_count(third) == before[third.port]
    for key in keys:  # wherever each went, it went with its slot
        assert cluster.command(third, "GET", key, follow=True) == f"value of {key}"
    views = parse_nodes(cluster.command(third, "CLUSTER", "NODES"))
    assert sum(v.slot_count() for v in views if v.is_primary) == SLOTS


def test_move_slot_splits_a_slot_while_its_keys_move(cluster):
    keys = ["{moving}:1", "{moving}:2", "{moving}:3"]
    assert key_slot(keys[0]) == int(cluster.command(cluster.nodes[0], "CLUSTER", "KEYSLOT", keys[0]))
    slot = key_slot(keys[0])
    source = cluster.owner(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    for key in keys:
        cluster.command(source, "SET", key, "v")
    assert cluster.slots_with_keys("{moving}:*") == {slot: 3}
    moved: list[int] = []
    mover = threading.Thread(target=lambda: moved.append(cluster.move_slot(slot, target, pause=0.5)))
    mover.start()
    replies = set()
    while mover.is_alive():  # a key already moved: the source sends the client on for this one request
        replies |= {cluster.command(source, "GET", key).split(" ")[0] for key in keys}
        time.sleep(0.05)
    mover.join()
    assert moved == [3] and "ASK" in replies and "v" in replies
    assert cluster.owner(slot) is target and slot not in cluster.slots_of(source)
    assert [cluster.command(target, "GET", key) for key in keys] == ["v"] * 3
    assert cluster.command(source, "GET", keys[0]).startswith("MOVED ")
    cluster.wait_ok(timeout=20)


def test_a_frozen_primary_is_voted_out_and_every_process_ends_even_when_a_test_fails(tmp_path):
    if not (find("redis-server", "CREDHOP_REDIS_SERVER") and find("redis-cli", "CREDHOP_REDIS_CLI")):
        pytest.skip("redis-server or redis-cli not found (make system-deps installs it)")
    cluster = RedisCluster(tmp_path / "cluster")
    with pytest.raises(RuntimeError, match="the test failed"):
        with cluster:
            frozen = cluster.primaries()[1]
            replica = cluster.replica_of(frozen)
            cluster.freeze(frozen)
            deadline = time.monotonic() + 20
            while cluster.role(replica) != "master":
                assert time.monotonic() < deadline, "the replica of a frozen primary never took over"
                time.sleep(0.1)
            pids = [n.proc.pid for n in cluster.nodes]
            still_frozen = cluster.nodes.index(frozen)
            raise RuntimeError("the test failed")
    assert all(n.proc is None for n in cluster.nodes)
    for pid in pids:  # killed and reaped, the frozen one included
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Redis is starting" in cluster.nodes[still_frozen].out.read_text()  # its output stays
