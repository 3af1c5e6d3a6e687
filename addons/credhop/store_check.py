"""A shared store looked at once: does it answer, what kind of Redis it is, and does the fleet key open
what the fleet wrote. Used at start (one line in the proxy's log) and by `credhop check --store URL`,
the first step of a deployment (docs/fleet.md). Imports neither mitmproxy nor the addon.

The key check is one sealed value, `credhop:v1:keycheck`, written by the first instance that starts
(`SET NX`). An instance whose key file cannot open it would see nothing the fleet shares: it still
injects only what it granted itself (never a wrong credential), but the fleet is not a fleet, and
nothing else would say so. An instance that opens it with an older key of its file (a rotation, step
2 in docs/fleet.md) seals it again with its first key, so the value follows the newest key.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .deadlines import within
from .sealing import Sealer, Unsealable

KEY_CHECK = "credhop:v1:keycheck"
KEY_CHECK_TEXT = b"credhop: the fleet's store key"
MIN_VERSION = (7, 0)
PINGS = 5


@dataclass
class StoreReport:
    where: str
    problem: str | None = None  # why credhop cannot use the store as given: one line, no secret in it
    kind: str = ""  # "single primary", "primary of Sentinel service NAME", "Redis Cluster node" …
    version: str = ""
    round_trip_ms: float | None = None
    key: str = ""  # what the key check said
    warnings: list[str] = field(default_factory=list)

    @property
    def answers(self) -> bool:
        return self.round_trip_ms is not None

    def summary(self) -> str:
        """What answers, in one line (`credhop check --store` prints it)."""
        facts = [self.kind, f"Redis {self.version}" if self.version else "",
                 f"round trip {self.round_trip_ms or 0:.2f} ms", self.key]
        return f"{self.where}: answers; " + "; ".join(f for f in facts if f)


def _info(reply: Any) -> dict[str, str]:
    """INFO's reply (redis-py parses it into a dict) with its values as text."""
    return {str(k): str(v) for k, v in dict(reply).items()}


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        return ()


def cause_of(error: BaseException) -> str:
    """The error's kind and its text on one line (redis-py's texts name host and port, never a password)."""
    detail = " ".join(str(error).split())[:160]
    name = type(error).__name__
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) or name == "TimeoutError":
        return "no answer within the deadline"
    return f"{name}: {detail}" if detail else name


async def check(client: Any, sealer: Sealer, where: str, timeout: float, kind: str = "",
                write: bool = False) -> StoreReport:
    """Look at the store `client` talks to, each call bounded by `timeout` seconds. `write`: write the key
    check when there is none, or seal it again with the first key (an instance at start does; the
    check command only reads)."""
    report = StoreReport(where, kind=kind)
    try:
        times = []
        for _ in range(PINGS):
            start = time.perf_counter()
            await within(client.ping(), timeout)
            times.append(time.perf_counter() - start)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        report.problem = f"does not answer ({cause_of(e)})"
        return report
    report.round_trip_ms = statistics.median(times) * 1000
    try:
        await _describe(client, report, timeout)
        await _key_check(client, sealer, report, timeout, write)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # an ACL that forbids INFO or GET, a server gone meanwhile
        report.problem = report.problem or f"answers PING but not credhop's commands ({cause_of(e)})"
    return report


async def _describe(client: Any, report: StoreReport, timeout: float) -> None:
    info = _info(await within(client.info(), timeout))
    report.version = info.get("redis_version", "?")
    mode, role = info.get("redis_mode", "standalone"), info.get("role", "master")
    if mode == "cluster" and report.kind == "Redis Cluster":
        cluster = await within(client.cluster_info(), timeout)
        report.kind = f"Redis Cluster of {cluster.get('cluster_size', '?')} primaries"
        if cluster.get("cluster_state") != "ok":
            report.problem = (f"is a Redis Cluster whose state is {cluster.get('cluster_state')!r}: some slots "
                              "have no primary answering")
    elif mode == "cluster":
        report.kind = "Redis Cluster node"
        report.problem = ("is a Redis Cluster node: name the cluster as redis+cluster://host:port[,host:port…] "
                          "(a redis:// store is one primary)")
    elif report.kind == "Redis Cluster":
        report.problem = "is not a Redis Cluster node: use redis://host:port for one primary"
    elif role != "master":
        report.kind = "replica"
        report.problem = "is a replica, which refuses writes: point credhop_store at the primary, or use redis+sentinel://"
    elif not report.kind:
        report.kind = "single primary"
    if _version(report.version) < MIN_VERSION and not report.problem:
        report.problem = f"runs Redis {report.version}: credhop needs 7.0 or newer"
    policy = info.get("maxmemory_policy", "noeviction")
    if info.get("maxmemory", "0") not in ("0", "") and policy.startswith("allkeys"):
        report.warnings.append(f"maxmemory-policy {policy} may evict grants and follow-ups when memory runs "
                               "short (injections missed); noeviction or volatile-ttl keep what is live")


async def _key_check(client: Any, sealer: Sealer, report: StoreReport, timeout: float, write: bool) -> None:
    sealed = await within(client.get(KEY_CHECK), timeout)
    if sealed is None:
        if write and await within(client.set(KEY_CHECK, sealer.seal(KEY_CHECK_TEXT, KEY_CHECK), nx=True),
                                   timeout):
            report.key = "key check written (the first instance of this fleet)"
        else:
            report.key = "no key check yet (the first instance to start writes it)"
        return
    try:
        opened = sealer.open(sealed, KEY_CHECK)
    except Unsealable:
        opened = None
    if opened != KEY_CHECK_TEXT:
        report.key = "the store key does not open the fleet's key check"
        report.problem = report.problem or (
            "holds values sealed with a key this store key file does not have: another instance seals with a "
            "different key (a rotation's first step not done here, or another fleet's store); this instance "
            "would see nothing the fleet shares")
        return
    report.key = "the store key opens the fleet's key check"
    if write and sealer.generation_of(sealed) != 0:  # opened by an older key: follow the newest
        await within(client.set(KEY_CHECK, sealer.seal(KEY_CHECK_TEXT, KEY_CHECK)), timeout)
        report.key += " (sealed again with the first key)"
