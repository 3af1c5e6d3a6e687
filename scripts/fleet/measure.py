"""What the bench reads from the processes around a run: CPU time from /proc, and from Redis its memory,
the commands it processed and the grants it holds."""

from __future__ import annotations

import json
import os
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
# not about any request: presence.py's heartbeat on its subscription, and the bench's own INFO and SCAN
NOT_REQUESTS = ("cmdstat_ping", "cmdstat_info", "cmdstat_subscribe", "cmdstat_unsubscribe", "cmdstat_scan",
                "cmdstat_cluster", "cmdstat_command", "cmdstat_hello", "cmdstat_client")
GRANT_PATTERNS = ("credhop:v1:g:*", "credhop:v1:{*}g:*")  # single primary; Redis Cluster's hash-tagged names


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, ended ones too), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class RedisNodes:
    """The redis-server processes of a store: one, or a cluster's nodes. Memory, commands and grants are
    read on the primaries (what holding and serving costs once; a replica repeats the primary's writes),
    CPU on every node."""

    def __init__(self, store: object) -> None:
        self.nodes = _nodes(store)  # (port, pid)
        self.primaries = [port for port, _ in self.nodes
                          if self._ask(port, lambda c: c.info("replication")["role"]) == "master"]

    @staticmethod
    def _ask(port: int, fn):
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        try:
            return fn(client)
        finally:
            client.close()

    def _each_primary(self, fn) -> list:
        return [self._ask(port, fn) for port in self.primaries]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for _, pid in self.nodes if pid)

    def used_memory(self) -> int:
        return sum(info["used_memory"] for info in self._each_primary(lambda c: c.info("memory")))

    def commands(self) -> dict[str, int]:
        """Commands about requests processed so far, by command (INFO commandstats; a script's own
        redis.call()s are counted under their command too)."""
        out: dict[str, int] = {}
        for stats in self._each_primary(lambda c: c.info("commandstats")):
            for k, v in stats.items():
                if k.startswith("cmdstat_") and k not in NOT_REQUESTS:
                    out[k[8:]] = out.get(k[8:], 0) + int(v["calls"])
        return out

    def grants(self) -> int:
        """Grants held: credhop's grant keys (`credhop:v1:g:…`, docs/fleet.md), counted by SCAN."""
        return sum(self._each_primary(lambda c: sum(1 for pattern in GRANT_PATTERNS
                                                    for _ in c.scan_iter(match=pattern, count=1000))))


def _nodes(store: object) -> list[tuple[int, int | None]]:
    """(port, pid) of each redis-server of a RedisServer or of the cluster fixture (whatever it calls
    its nodes: `nodes` or `servers`, each with `port` and `proc`)."""
    members = getattr(store, "nodes", None) or getattr(store, "servers", None) or [store]
    out = []
    for node in members:
        proc = getattr(node, "proc", None)
        out.append((int(node.port), proc.pid if proc is not None else None))  # type: ignore[attr-defined]
    return out


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """One instance's /metrics (credhop_metrics), as (name, labels, value) samples."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    families = text_string_to_metric_families(text)
    return [(s.name, s.labels, s.value) for family in families for s in family.samples]


def store_figures(ports: list[int], slow: float = 0.1) -> dict:
    """The fleet's store calls from its instances' metrics: how many, how many waited longer than `slow`
    seconds, how many were answered locally and why (credhop_store_errors_total by cause)."""
    calls = over = 0.0
    causes: dict[str, float] = {}
    for port in ports:
        buckets: dict[float, float] = {}
        for name, labels, value in scrape(port):
            if name == "credhop_store_latency_seconds_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + value  # summed over ops
            elif name == "credhop_store_errors_total":
                causes[labels["cause"]] = causes.get(labels["cause"], 0.0) + value
        total = buckets.get(float("inf"), 0.0)
        under = max((v for le, v in buckets.items() if le <= slow), default=0.0)
        calls, over = calls + total, over + total - under
    return {"calls": int(calls), "slow": int(over), "slow_s": slow,
            "answered_locally": {k: int(v) for k, v in causes.items()}}


def backend_counts(stats_port: int) -> dict[str, dict[str, int]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats", timeout=10) as r:
        return json.loads(r.read())


def wait_quiet(pids: list[int], seconds: float = 0.3, deadline: float = 10.0) -> None:
    """Until the processes have used (almost) no CPU for `seconds`: what a slice left behind (a 401's
    chain ends a second later, hop-log records flushed) is done before the next one is measured."""
    end = time.monotonic() + deadline
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < end:
        time.sleep(seconds)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last <= 0.02 * len(pids):
            return
        last = now
