"""`make fleet-bench` keeps working: the fleet bench with tiny numbers (20 clients, 2 instances behind
haproxy, Redis round-robin and memory sticky), into a temporary directory. It checks that the report was
written and that its figures agree with the run and with each other, never how fast anything was; and
that the bench's own checks catch a fleet that mixes clients up."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.fleet.population import KINDS, population, proxy_password, token
from tests.e2e.harness import REPO, all_text_under, tool
from tests.fixtures.fleet import find
from tests.secrets_check import assert_no_leak, secret_forms

SCRIPT = REPO / "scripts" / "fleet_bench.py"
CLIENTS = 20
MIX = {"ok": 80, "denied": 10, "missing": 10}  # the bench's default --mix
DOWNLOADS = (10, 30)


def need(name: str, env: str) -> None:
    if not find(name, env):
        pytest.skip(f"{name} not found (make system-deps installs it)")


def bench(tmp_path: Path, seed: str, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    tool("CREDHOP_MITMDUMP", "mitmdump")
    need("redis-server", "CREDHOP_REDIS_SERVER")
    need("haproxy", "CREDHOP_HAPROXY")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--clients", str(CLIENTS),
                           "--rounds", "1", "--concurrency", "4", "--downloading", "1", "--out", str(out),
                           "--json", str(tmp_path / "fb.json"), "--workdir", str(tmp_path / "work"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "CREDHOP_FLEET_SEED": seed})
    return proc, out


def forms_of(seed: str) -> set[str]:
    """Every client's registry token and proxy password, in every spelling."""
    forms: set[str] = set()
    for c in population(CLIENTS, MIX, DOWNLOADS, seed):
        forms |= secret_forms(token(seed, c.name), user="aws")
        forms |= secret_forms(proxy_password(seed, c), user=c.proxy_user)
    return forms


def test_fleet_bench_smoke_run_writes_a_consistent_report(tmp_path):
    seed = secrets.token_urlsafe(16)
    # a generous store deadline: on a busy CI machine a missed 200 ms one sends calls local and fails
    # installs (docs/fleet-bench.md measures that); this test is about the bench's own figures
    proc, out = bench(tmp_path, seed, "--instances", "2", "--set", "credhop_store_timeout=2000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "fleet-bench.md").read_text()
    doc = json.loads((tmp_path / "fb.json").read_text())
    [result] = doc["populations"]

    # what the population must be, worked out here from the seed, not read from the run
    clients = population(CLIENTS, MIX, DOWNLOADS, seed)
    planned = sum(2 + c.downloads for c in clients)
    kinds = {k: sum(c.kind == k for c in clients) for k in KINDS}
    assert all(kinds.values())  # every kind of registry is in the run
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == {"redis-2", "memory-2"}
    for name, r in rows.items():
        # every request the generator sent was answered by the backend, through this fleet's two instances
        assert r["requests"] == planned == r["backend_requests"] == sum(r["requests_per_instance"]), (name, r)
        assert all(n > 0 for n in r["requests_per_instance"]), (name, r)
        assert r["installs"] == {k: n for k, n in kinds.items() if n}, (name, r)
        assert r["wrong"] == r["other_client"] == r["missing_credential"] == 0, (name, r)
        assert r["proxy_authorization_forwarded"] == r["unattributed"] == 0, (name, r)
        assert r["follow_ups"] == CLIENTS and r["died"] == [] and r["tracebacks"] == 0
        assert r["cpu_instances_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        check = result["report_check"][name]  # credhop report's verdict on every client's chain
        assert check["chains"] == CLIENTS and check["unexplained"] == {}, check
        assert check["by_kind"]["ok"] == {"ok": kinds["ok"]}, check
        # the tables show the run's own counts
        assert f"| {r['label']} | {kinds['ok']} | {kinds['denied']} | {kinds['missing']} | 0 | 0 (0) | " \
               f"{planned} / {planned} |" in text
    redis, memory = rows["redis-2"], rows["memory-2"]
    # round-robin sends some follow-ups to the other instance, where only Redis can have the grant;
    # source-sticky balancing never does
    assert redis["crossed"] > 0 and memory["crossed"] == 0
    # the bench read the Redis the fleet used: a grant for each client of the run, commands for its requests
    assert redis["grants_held"] == CLIENTS, redis
    assert redis["redis_commands_per_request"] > 0, redis  # (its CPU is below /proc's 10 ms ticks here)
    assert memory["grants_held"] is None and memory["cpu_redis_ms"] == 0
    assert redis["added_p99_ms"] == pytest.approx(redis["p99_ms"] - memory["p99_ms"])
    for heading in ("## What runs", f"## {CLIENTS} clients", "### Throughput and latency",
                    "### Cost per request", "### Correctness", "## Proxy users: the htpasswd file",
                    "## Problems found", "## Reproduce"):
        assert heading in text, heading
    assert "\nNone: no wrong injection" in text
    try:
        import matplotlib  # noqa: F401  (a bench-only dependency: make bench-deps)
        assert (out / "fleet-scaling.png").stat().st_size > 1000 and "](fleet-scaling.png)" in text
    except ImportError:
        assert "](fleet-scaling.png)" not in text  # no chart linked (the reproduce line still names it)
    assert_no_leak(all_text_under(tmp_path) + proc.stdout + proc.stderr, forms_of(seed), "fleet bench output")


def test_fleet_bench_catches_a_fleet_that_mixes_clients_up(tmp_path):
    """Grants bound to the client's address: behind haproxy every client is the balancer, so one client's
    credential goes to another's downloads. The registries see it, and the bench fails naming it."""
    seed = secrets.token_urlsafe(16)
    proc, out = bench(tmp_path, seed, "--instances", "1", "--no-report-check",
                      "--set", "credhop_client_id=address")
    rows = json.loads((tmp_path / "fb.json").read_text())["populations"][0]["rows"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert all(r["wrong"] > 0 and r["other_client"] > 0 for r in rows), rows
    assert "wrong injection(s)" in (out / "fleet-bench.md").read_text().split("## Problems found")[1]
    assert_no_leak(all_text_under(tmp_path) + proc.stdout + proc.stderr, forms_of(seed), "fleet bench output")
