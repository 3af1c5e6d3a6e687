"""One configuration of the fleet, started and stopped as a whole: its store (a redis-server, a Redis
Cluster, or none), N mitmdump instances with credhop (proxy users from one htpasswd file, grants bound
to the proxy user, one CA, one fingerprint key, one store key), and haproxy in front of them in TCP
mode: round-robin, or balanced by the client's source address (sticky: every simulated client has a
loopback address of its own).
"""

from __future__ import annotations

import shutil
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import Mitmdump, free_port
from tests.fixtures.fleet import Haproxy, RedisServer

STORE_LABELS = {"redis": "Redis store", "cluster": "Redis Cluster store", "memory": "memory store"}
STORES = tuple(STORE_LABELS)
MAX_CREDENTIALS = 100_000  # above any population here: no grant is evicted to keep the bound
TTL = 3600  # seconds: longer than a run, so that every grant it made is still held when Redis is measured


@dataclass(frozen=True)
class Config:
    store: str  # one of STORES
    instances: int

    @property
    def name(self) -> str:
        return f"{self.store}-{self.instances}"

    @property
    def balance(self) -> str:
        # the memory store only works when a client's connections all reach the instance that holds its grant
        return "source" if self.store == "memory" else "roundrobin"

    @property
    def label(self) -> str:
        store = STORE_LABELS[self.store]
        balance = "sticky by source" if self.balance == "source" else "round-robin"
        return f"{self.instances} × credhop, {store}, {balance}"


def instance_name(config: Config, i: int) -> str:
    """What the instance calls itself (credhop_instance) and adds to what it forwards (X-Bench-Instance)."""
    return f"{config.name}-{'abcd'[i] if i < 4 else i + 1}"


class Balancer(Haproxy):
    """The fixtures' haproxy, with a chosen balance and room for thousands of connections."""

    def __init__(self, workdir: Path, backends: list[int], balance: str) -> None:
        super().__init__(workdir, backends)
        self.balance = balance

    def render(self) -> str:
        text = super().render().replace("maxconn 1000", "maxconn 8000")
        return text.replace("balance roundrobin", f"balance {self.balance}")


class ClusterUnavailable(RuntimeError):
    pass


def cluster_fixture():
    """tests/fixtures/cluster.py's RedisCluster, when it exists (it is being written alongside)."""
    try:
        from tests.fixtures.cluster import RedisCluster
    except ImportError as e:
        raise ClusterUnavailable(
            f"--store cluster needs tests/fixtures/cluster.py with RedisCluster(workdir) ({e}); "
            "and credhop's redis+cluster:// store") from None
    return RedisCluster


@dataclass
class Fleet:
    config: Config
    proxies: list[Mitmdump]
    metrics_ports: list[int]  # each instance's operator listener (credhop_metrics): /metrics
    balancer: Balancer
    redis: object | None  # RedisServer, the cluster fixture, or None for the memory store
    stack: ExitStack = field(repr=False, default_factory=ExitStack)

    @property
    def port(self) -> int:
        return self.balancer.port

    def instance_name(self, i: int) -> str:
        return instance_name(self.config, i)

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.proxies]  # type: ignore[union-attr]

    def alive(self) -> list[str]:
        dead = [self.instance_name(i) for i, p in enumerate(self.proxies)
                if p.proc is None or p.proc.poll() is not None]
        if self.balancer.proc is None or self.balancer.proc.poll() is not None:
            dead.append("haproxy")
        return dead

    def close(self) -> None:
        self.stack.close()


def start(config: Config, workdir: Path, ca: Path, shared: dict[str, Path],
          extra: dict[str, str] | None = None) -> Fleet:
    """Start one configuration; `shared`: htpasswd, store_key, fingerprint_key, and `ca_dir` (where the
    fleet's mitmproxy CA is, or goes: the first instance started anywhere makes it); `extra`: more
    mitmproxy/credhop options for every instance."""
    stack = ExitStack()
    try:
        redis = _store(config, workdir, stack)
        proxies, metrics_ports = [], [free_port() for _ in range(config.instances)]
        for i in range(config.instances):
            name = instance_name(config, i)
            options = {"proxyauth": f"@{shared['htpasswd']}", "credhop_client_id": "proxyauth",
                       "credhop_instance": name, "credhop_fingerprint_key": str(shared["fingerprint_key"]),
                       "credhop_max_credentials": str(MAX_CREDENTIALS), "credhop_ttl": str(TTL),
                       "credhop_metrics": f"127.0.0.1:{metrics_ports[i]}",
                       "modify_headers": f"/~q/X-Bench-Instance/{name}"}  # who forwarded it, for the backend
            if redis is not None:
                options |= {"credhop_store": redis.url, "credhop_store_key": str(shared["store_key"])}
            proxy = Mitmdump(workdir / name, ca, options=options | (extra or {}))
            proxy.confdir.mkdir(parents=True, exist_ok=True)
            for pem in shared["ca_dir"].glob("mitmproxy-ca*"):  # one CA for the whole fleet
                shutil.copy(pem, proxy.confdir / pem.name)
            proxies.append(proxy)
        _enter_all(stack, proxies)
        ports = [p.port for p in proxies]
        balancer = stack.enter_context(Balancer(workdir / "haproxy", ports, config.balance))
        return Fleet(config, proxies, metrics_ports, balancer, redis, stack)
    except BaseException:
        stack.close()
        raise


def _store(config: Config, workdir: Path, stack: ExitStack):
    if config.store == "memory":
        return None
    if config.store == "cluster":
        return stack.enter_context(cluster_fixture()(workdir / "cluster"))
    return stack.enter_context(RedisServer(workdir / "redis"))


def _enter_all(stack: ExitStack, proxies: list[Mitmdump]) -> None:
    """Start the instances side by side (each takes a second or two to listen); every one that
    started is stopped with the stack, also when another failed."""
    errors: list[BaseException] = []
    started: list[Mitmdump] = []
    lock = threading.Lock()

    def enter(proxy: Mitmdump) -> None:
        try:
            proxy.__enter__()
            with lock:
                started.append(proxy)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after every thread ended
            with lock:
                errors.append(e)
            if proxy.proc is not None:
                proxy.proc.kill()
                proxy.proc.wait()

    threads = [threading.Thread(target=enter, args=(p,)) for p in proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for proxy in started:
        stack.push(proxy.__exit__)
    if errors:
        raise errors[0]


def make_ca(workdir: Path, ca: Path) -> Path:
    """The fleet's CA, made once by starting (and stopping) one plain mitmdump."""
    with Mitmdump(workdir / "ca-maker", ca, credhop=False) as maker:
        pass
    return maker.confdir
