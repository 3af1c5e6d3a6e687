"""Running the configurations against one population: every fleet up at once, the population cut into
slices, each round giving one slice to every configuration in turn (rotating who goes first, so what
else the machine does falls on all of them alike), and around each slice the counters read."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from scripts.fleet import load
from scripts.fleet.measure import RedisNodes, backend_counts, cpu_seconds, store_figures, wait_quiet
from scripts.fleet.population import Client
from scripts.fleet.topology import Fleet


@dataclass
class Cell:
    """One configuration's figures over the population, summed over its slices."""
    name: str
    installs: Counter = field(default_factory=Counter)  # outcome -> installs
    unexpected: Counter = field(default_factory=Counter)  # reason -> installs
    requests: int = 0  # answered requests the generator sent
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    backend: dict[str, Counter] = field(default_factory=dict)  # instance -> what the origins counted
    cpu_instances: list[float] = field(default_factory=list)
    cpu_haproxy: float = 0.0
    cpu_redis: float = 0.0
    cpu_backend: float = 0.0
    cpu_generator: float = 0.0
    redis_commands: Counter = field(default_factory=Counter)  # command -> calls during the slices
    redis_memory_before: int = 0
    redis_memory_after: int = 0
    grants_before: int = 0
    grants_after: int = 0
    died: list[str] = field(default_factory=list)
    store: dict = field(default_factory=dict)  # the instances' store metrics at the end (warm-up included)


def _snapshot(fleet: Fleet, redis: RedisNodes | None, backend_pid: int) -> dict:
    return {"instances": [cpu_seconds(p) for p in fleet.pids],
            "haproxy": cpu_seconds(fleet.balancer.proc.pid),  # type: ignore[union-attr]
            "redis": redis.cpu() if redis else 0.0, "backend": cpu_seconds(backend_pid),
            "generator": time.process_time()}


def run_slice(cell: Cell, fleet: Fleet, redis: RedisNodes | None, clients: list[Client],
              origins: load.Origins, passwords: dict[str, str], concurrency: int, backend_pid: int,
              stats_port: int) -> None:
    commands0 = redis.commands() if redis else {}  # outside the CPU interval
    counts0 = backend_counts(stats_port)
    before = _snapshot(fleet, redis, backend_pid)
    results, wall = load.run(clients, fleet.port, origins, passwords, concurrency)
    wait_quiet([*fleet.pids, backend_pid])
    after = _snapshot(fleet, redis, backend_pid)
    counts1 = backend_counts(stats_port)
    if redis:
        cell.redis_commands.update({k: n - commands0.get(k, 0) for k, n in redis.commands().items()})
    cell.wall += wall
    for r in results:
        cell.installs[r.outcome] += 1
        if r.outcome == "unexpected":
            cell.unexpected[r.reason] += 1
        cell.requests += r.requests
        cell.latencies += r.latencies
    spent = [b - a for a, b in zip(before["instances"], after["instances"])]
    cell.cpu_instances = [x + y for x, y in zip(cell.cpu_instances, spent)] if cell.cpu_instances else spent
    for part in ("haproxy", "redis", "backend", "generator"):
        setattr(cell, f"cpu_{part}", getattr(cell, f"cpu_{part}") + after[part] - before[part])
    for instance, counts in counts1.items():
        delta = Counter({k: v - counts0.get(instance, {}).get(k, 0) for k, v in counts.items()})
        if +delta:
            cell.backend.setdefault(instance, Counter()).update(delta)
    cell.died = fleet.alive()


def run_all(fleets: dict[str, Fleet], clients: list[Client], warm: list[Client], rounds: int,
            origins: load.Origins, passwords: dict[str, str], concurrency: int, backend_pid: int,
            stats_port: int,
            log: Callable[[str], None]) -> dict[str, Cell]:
    stores = {name: RedisNodes(f.redis) if f.redis is not None else None for name, f in fleets.items()}
    cells = {name: Cell(name) for name in fleets}
    for name, fleet in fleets.items():  # warm-up: code paths imported, connections made, presence read
        load.run(warm, fleet.port, origins, passwords, concurrency)
        redis = stores[name]
        if redis:
            cells[name].redis_memory_before, cells[name].grants_before = redis.used_memory(), redis.grants()
    log(f"warmed up {len(fleets)} configuration(s) with {len(warm)} install(s) each")
    slices = [clients[r::rounds] for r in range(rounds)]
    names = list(fleets)
    for r, part in enumerate(slices):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run_slice(cells[name], fleets[name], stores[name], part, origins, passwords, concurrency,
                      backend_pid, stats_port)
            cell = cells[name]
            log(f"round {r + 1}/{rounds} {name}: {len(part)} installs, {cell.requests} requests so far, "
                f"{cell.requests / cell.wall:.0f} req/s, unexpected {cell.installs['unexpected']}")
    for name, redis in stores.items():
        if redis:
            cells[name].redis_memory_after, cells[name].grants_after = redis.used_memory(), redis.grants()
            cells[name].store = store_figures(fleets[name].metrics_ports)
    return cells
