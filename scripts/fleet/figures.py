"""From a run's cells to the report's figures (one row per configuration), and what in them is a bug."""

from __future__ import annotations

import re
from collections import Counter

from scripts.fleet.runner import Cell
from scripts.fleet.topology import Config, Fleet


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# all of Redis, or (Redis Cluster) one primary: "shared store URL: primary HOST:PORT unavailable (…"
OUTAGE = re.compile(r"credhop: shared store \S+?:?(?: primary \S+)? unavailable \((\w+)")
RECOVERED = re.compile(r"credhop: shared store \S+?:? (?:answers again|the slots of \S+ are served again) "
                       r"after ([0-9.]+) s")
STORE_ERRORS = re.compile(r"\bstore_errors=(\d+)")
MIN_HELD = 200  # below a few hundred grants, allocator and buffer noise is larger than what they take


def store_trouble(outputs: list[str]) -> dict:
    """From the instances' own lines: how often each marked the store down (and why), for how long, and
    the calls it answered locally (the shutdown stats line's store_errors)."""
    causes = Counter(m for o in outputs for m in OUTAGE.findall(o))
    return {"outages": sum(causes.values()), "causes": dict(causes),
            "down_s": sum(float(x) for o in outputs for x in RECOVERED.findall(o)),
            "store_errors": sum(int(x) for o in outputs for x in STORE_ERRORS.findall(o)[-1:])}


def rows(cfgs: list[Config], cells: dict[str, Cell], fleets: dict[str, Fleet],
         outputs: dict[str, list[str]]) -> list[dict]:
    out = []
    for c in cfgs:
        cell, fleet = cells[c.name], fleets[c.name]
        names = [fleet.instance_name(i) for i in range(c.instances)]
        seen = Counter()
        for counts in cell.backend.values():
            seen.update(counts)
        per_instance = [cell.backend.get(n, Counter())["requests"] for n in names]
        requests = max(cell.requests, 1)
        held = cell.grants_after - cell.grants_before
        memory = cell.redis_memory_after - cell.redis_memory_before
        shared = c.store != "memory"
        lines = outputs.get(c.name, [])
        out.append({
            "config": c.name, "label": c.label, "store": c.store, "instances": c.instances,
            "balance": c.balance,
            "installs": dict(cell.installs), "unexpected": dict(cell.unexpected),
            "requests": cell.requests, "backend_requests": seen["requests"], "wall_s": cell.wall,
            # requests that reached the backend without an instance's name: not through this fleet
            "unattributed": sum(v["requests"] for k, v in cell.backend.items() if k not in names),
            "rps": cell.requests / cell.wall if cell.wall else 0.0,
            "requests_per_instance": per_instance,
            "rps_per_instance": [n / cell.wall if cell.wall else 0.0 for n in per_instance],
            "p50_ms": pct(cell.latencies, .5) * 1e3, "p99_ms": pct(cell.latencies, .99) * 1e3,
            "cpu_instances_ms": sum(cell.cpu_instances) / requests * 1e3,
            "cpu_per_instance_ms": [x / max(n, 1) * 1e3 for x, n in zip(cell.cpu_instances, per_instance)],
            "cpu_haproxy_ms": cell.cpu_haproxy / requests * 1e3,
            "cpu_redis_ms": cell.cpu_redis / requests * 1e3,
            "cpu_backend_ms": cell.cpu_backend / requests * 1e3,
            "cpu_generator_ms": cell.cpu_generator / requests * 1e3,
            "redis_commands_per_request": sum(cell.redis_commands.values()) / requests if shared else None,
            "redis_top_commands": {k: round(n / requests, 2) for k, n in cell.redis_commands.most_common(6)},
            "redis_memory_bytes": memory if shared else None, "grants_held": held if shared else None,
            "bytes_per_credential": memory / held if held >= MIN_HELD else None,
            "follow_ups": seen["follow_ups"], "crossed": seen["crossed"],
            "wrong": seen["wrong"], "other_client": seen["other"], "missing_credential": seen["missing"],
            "proxy_authorization_forwarded": seen["proxy_authorization"], "unknown_paths": seen["unknown"],
            "died": cell.died, "store_trouble": store_trouble(lines), "store_calls": cell.store,
            "tracebacks": sum(o.count("Traceback") + o.count("internal error") for o in lines),
        })
    for row in out:  # against the memory store with sticky balancing, at the same number of instances
        base = next((r for r in out if r["store"] == "memory" and r["instances"] == row["instances"]), None)
        row["added_p50_ms"] = row["p50_ms"] - base["p50_ms"] if base else None
        row["added_p99_ms"] = row["p99_ms"] - base["p99_ms"] if base else None
        row["rps_ratio"] = row["rps"] / base["rps"] if base and base["rps"] else None
    return out


def bugs(population: dict) -> list[str]:
    """What must not happen in any configuration (the bench exits 1, naming it)."""
    found = []
    for r in population["rows"]:
        where = f"{population['clients']} clients, {r['config']}"
        for what, n in (("wrong injection(s)", r["wrong"]),
                        ("unexpected failed install(s)", r["installs"].get("unexpected", 0)),
                        ("registry request(s) without the credential", r["missing_credential"]),
                        ("request(s) carrying the proxy password to the origin",
                         r["proxy_authorization_forwarded"]),
                        ("traceback(s) or internal error(s) in mitmdump's output", r["tracebacks"]),
                        ("request(s) to an unknown path", r["unknown_paths"]),
                        ("request(s) not through this fleet's instances", r["unattributed"])):
            if n:
                found.append(f"{where}: {n} {what}")
        if r["backend_requests"] != r["requests"]:
            found.append(f"{where}: the backend counted {r['backend_requests']} requests, the generator "
                         f"{r['requests']} answered")
        if r["died"]:
            found.append(f"{where}: {', '.join(r['died'])} died")
        if r["store"] == "memory" and r["crossed"]:
            found.append(f"{where}: {r['crossed']} follow-up(s) reached another instance than their 3xx "
                         "although balancing is sticky")
    for name, check in population.get("report_check", {}).items():
        if "error" in check:
            found.append(f"{population['clients']} clients, {name}: {check['error']}")
        for what, n in check.get("unexplained", {}).items():
            found.append(f"{population['clients']} clients, {name}: credhop report: {n} chain(s) of a {what}")
    return found
