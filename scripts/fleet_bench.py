#!/usr/bin/env python3
"""The cost of the Redis store against the memory store: real mitmdump processes with credhop on
loopback, the same requests through each (interleaved rounds), CPU per request from /proc (mitmdump
and, for Redis, redis-server too) and latency. Plain requests (the common case: a client nothing is
pending or held for) and redirect chains (3xx + follow-up with the credential injected).

    .venv/bin/python scripts/fleet_bench.py [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "addons")]

from tests.e2e.harness import Mitmdump  # noqa: E402
from tests.fixtures.fleet import RedisServer  # noqa: E402
from tests.fixtures.pki import make_pki  # noqa: E402
from tests.fixtures.registry import AuthIndex, Redirector  # noqa: E402
from tests.fixtures.wheel import build_wheel  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def drive(port: int, urls: list[str]) -> list[float]:
    """One keep-alive connection to the proxy; absolute-form requests; redirects followed by hand."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    for url in urls:
        start = time.perf_counter()
        while url:
            conn.request("GET", url)
            response = conn.getresponse()
            response.read()
            url = response.getheader("location") if response.status in (301, 302, 303, 307, 308) else None
        times.append(time.perf_counter() - start)
    conn.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("CREDHOP_MITMDUMP", str(REPO / ".venv" / "bin" / "mitmdump"))
    work = Path(tempfile.mkdtemp(prefix="credhop-fleet-bench-"))
    pki = make_pki(work / "pki")
    index = AuthIndex("aws", "bench-token-not-secret", build_wheel(work / "wheel"), host="127.0.0.2").start()
    redirector = Redirector(index.credentials_url("/simple/")).start()
    key = work / "store.key"
    key.write_text("5a" * 32 + "\n")
    key.chmod(0o600)
    plain = [f"{index.url}/files/{index.wheel.name}?n={i}" for i in range(args.requests)]
    chains = [f"{redirector.url}/simple/credhop-demo-pkg/" for _ in range(args.requests // 4)]
    results: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        stack.callback(redirector.stop)
        stack.callback(index.stop)
        redis = stack.enter_context(RedisServer(work / "redis"))
        configs = {"memory": {}, "redis": {"credhop_store": redis.url, "credhop_store_key": str(key)}}
        proxies = {name: stack.enter_context(Mitmdump(work / name, pki.ca_cert, options=opts))
                   for name, opts in configs.items()}
        for _ in range(args.rounds):
            for name, proxy in proxies.items():
                for kind, urls in (("plain", plain), ("chain", chains)):
                    r = results.setdefault(f"{name} {kind}", {"lat": [], "cpu": [], "redis": []})
                    before, rbefore = cpu(proxy.proc.pid), cpu(redis.proc.pid)
                    r["lat"] += drive(proxy.port, urls)
                    r["cpu"].append((cpu(proxy.proc.pid) - before) / len(urls))
                    r["redis"].append((cpu(redis.proc.pid) - rbefore) / len(urls) if name == "redis" else 0.0)
    print(f"{'configuration':<16} {'median':>9} {'p99':>9} {'mitmdump CPU/req':>17} {'redis CPU/req':>14}")
    for name, r in results.items():
        lat = sorted(r["lat"])
        print(f"{name:<16} {statistics.median(lat) * 1000:>7.2f}ms {lat[int(len(lat) * 0.99)] * 1000:>7.2f}ms "
              f"{statistics.median(r['cpu']) * 1e6:>14.0f} µs {statistics.median(r['redis']) * 1e6:>11.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
