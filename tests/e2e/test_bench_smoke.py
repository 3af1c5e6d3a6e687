"""`make bench` keeps working: the benchmark with tiny counts, into a temporary directory.
It checks that the tables are there, never how fast anything was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.e2e.harness import REPO, all_text_under, tool
from tests.secrets_check import assert_no_leak, secret_forms


def test_bench_smoke_run_writes_its_tables(tmp_path, token):
    mitmdump = tool("CREDHOP_MITMDUMP", "mitmdump")
    out = tmp_path / "performance.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--smoke", "--out", str(out),
                           "--mitmdump", mitmdump, "--workdir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CREDHOP_BENCH_TOKEN": token})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("CPU per request, ratio to bare mitmdump", "Throughput and latency", "Rule matching",
                    "Redis store against the memory store", "The floor", "Hooks", "Scrubbing what credhop writes", "Stores", "Memory", "## Reproduce"):
        assert heading in text, heading
    data = json.loads(out.with_suffix(".json").read_text())
    shapes = {(r["workload"], r["scheme"]) for r in data["rows"]}
    assert shapes == {(w, s) for w in ("plain", "redirect", "download", "noauth") for s in ("http", "https")}
    # the Redis store configuration ran, against a redis-server of the bench's own that it used
    assert {r["config"] for r in data["rows"]} >= {"bare", "shipped", "redis", "floor", "floorlog"}
    redis_rows = [r for r in data["rows"] if r["config"] == "redis"]
    assert all(r["redis_commands"] > 0 for r in redis_rows if r["workload"] in ("redirect", "download")), redis_rows
    assert all(r["redis_cpu_ms"] == 0 == r["redis_commands"] for r in data["rows"] if r["config"] != "redis")
    for row in data["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
        # credhop (and the floor, the reference addon) injected into follow-ups and downloads; bare never does
        if row["workload"] in ("redirect", "download"):
            assert (row["authed"] > 0) == (row["config"] != "bare"), row
    # the uv install workload: a real install per configuration and scheme; every configuration but bare
    # went through the credential redirect, and no follow-up reached the index without the credential
    installs = data["installs"]["rows"]
    assert {(r["config"], r["scheme"]) for r in installs} == {
        (c, s) for c in ("bare", "floor", "shipped", "hoplog", "redis") for s in ("http", "https")}
    for row in installs:
        assert row["installs"] == 1 and row["refused"] == 0 and row["cpu_ms"] > 0, row
        assert row["requests_per_install"] == 4 * data["installs"]["packages"], row  # redirect, page, metadata, wheel
    assert "A real install" in text
    # the backend's userinfo secret is in no output (the hop log, mitmdump's output, the report)
    assert_no_leak(all_text_under(tmp_path) + proc.stdout + proc.stderr, secret_forms(token, user="aws"), "bench output")


def test_bench_instructions_smoke_run_counts_every_configuration(tmp_path, token):
    """`make bench-instructions` keeps working: mitmdump under callgrind, tiny counts. Instructions per
    request must be a mitmdump's (millions), for every configuration: zero or a few thousand would be an
    idle process or a count read from the wrong dump. No test compares them: tiny runs are noisy."""
    mitmdump = tool("CREDHOP_MITMDUMP", "mitmdump")
    tool("CREDHOP_VALGRIND", "valgrind")
    out = tmp_path / "performance-instructions.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--instructions", "--smoke",
                           "--configs", "shipped", "builtin", "floor", "--workloads", "download",
                           "--out", str(out), "--mitmdump", mitmdump, "--workdir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CREDHOP_BENCH_TOKEN": token})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| download | http |" in out.read_text()
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["config"] for r in rows} == {"bare", "shipped", "builtin", "floor"}
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert 1e6 < row["instructions"] < 1e9, row
        # credhop as a script and built in (`credhop proxy`), and the floor, injected; bare never does
        assert (row["authed"] > 0) == (row["config"] != "bare"), row
    assert_no_leak(all_text_under(tmp_path) + proc.stdout + proc.stderr, secret_forms(token, user="aws"), "bench output")
