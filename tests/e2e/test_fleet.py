"""A fleet: real haproxy (TCP, round-robin) in front of two real mitmdump instances running credhop
with --proxyauth, sharing a real redis-server; uv 0.5.25 and pip install through the balancer over
HTTPS. Then faults (Redis killed, restarted empty, hung; one instance killed) under traffic, with
figures printed: failed requests, the longest store wait, wrong injections (always 0).
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.harness import Mitmdump, clean_env, proxy_env, run, tool
from tests.fixtures.fleet import Haproxy, RedisServer, find, free_port
from tests.fixtures.nginx import htpasswd_line
from tests.secrets_check import assert_no_leak, leaks

PACKAGE = "credhop-demo-pkg"
USERS = {"alice": "alice-proxy-pw", "bob": "bob-proxy-pw",
         **{f"user{i}": f"user{i}-proxy-pw" for i in range(8)}}  # the fault phases: a fresh user each
STORE_TIMEOUT_MS = 200


def need(name: str, env: str) -> str:
    path = find(name, env)
    if not path:
        pytest.skip(f"{name} not found (make system-deps installs it)")
    return path


@dataclass
class Fleet:
    proxies: list[Mitmdump]
    metrics_ports: list[int]
    lb: Haproxy
    redis: RedisServer | None

    def proxy_url(self, user: str) -> str:
        return f"http://{user}:{USERS[user]}@127.0.0.1:{self.lb.port}"

    @property
    def ca(self) -> Path:
        return self.proxies[0].ca_cert

    def records(self) -> list[list[dict]]:
        return [p.records() for p in self.proxies]

    def scrape(self, index: int) -> dict[tuple[str, tuple], float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_ports[index]}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


@contextmanager
def fleet(tmp_path: Path, registry, store: str, redis: RedisServer | None = None) -> Iterator[Fleet]:
    need("haproxy", "CREDHOP_HAPROXY")
    shared = tmp_path / "shared"
    shared.mkdir(parents=True)
    key, fingerprint, users = shared / "store.key", shared / "fingerprint.key", shared / "htpasswd"
    for path, text in ((key, "# credhop fleet key\n" + "5a" * 32 + "\n"), (fingerprint, "ab" * 32 + "\n"),
                       (users, "".join(htpasswd_line(u, p) for u, p in USERS.items()))):
        path.write_text(text)
        path.chmod(0o600)
    ports = [free_port(), free_port()]
    proxies = []
    with ExitStack() as stack:
        for i, name in enumerate("ab"):
            options = {"credhop_store": store, "credhop_client_id": "proxyauth", "proxyauth": f"@{users}",
                       "credhop_instance": f"credhop-{name}", "credhop_fingerprint_key": str(fingerprint),
                       "credhop_metrics": f"127.0.0.1:{ports[i]}", "credhop_store_timeout": str(STORE_TIMEOUT_MS)}
            if store != "memory":
                options["credhop_store_key"] = str(key)
            proxy = Mitmdump(tmp_path / f"proxy-{name}", registry.test_ca, options=options)
            if proxies:  # one CA for the fleet, as a deployment would copy it
                proxy.confdir.mkdir(parents=True, exist_ok=True)
                for pem in proxies[0].confdir.glob("mitmproxy-ca*"):
                    shutil.copy(pem, proxy.confdir / pem.name)
            proxies.append(stack.enter_context(proxy))
        lb = stack.enter_context(Haproxy(tmp_path / "haproxy", [p.port for p in proxies]))
        yield Fleet(proxies, ports, lb, redis)


@pytest.fixture
def redis_server(tmp_path):
    need("redis-server", "CREDHOP_REDIS_SERVER")
    with RedisServer(tmp_path / "redis") as server:
        yield server


def uv_install(fleet_: Fleet, registry, workdir: Path, user: str = "alice"):
    env = clean_env(workdir / "home", **proxy_env(fleet_.proxy_url(user), fleet_.ca))
    return run([tool("CREDHOP_UV_OLD", "uv-0.5.25"), "pip", "install", "-v", "--no-config", "--cache-dir",
                str(workdir / "uv-cache"), "--target", str(workdir / "target"), "--python", sys.executable,
                "--index-url", registry.simple_url, PACKAGE], env, workdir)


def pip_install(fleet_: Fleet, registry, workdir: Path, user: str = "alice"):
    return run([sys.executable, "-m", "pip", "install", "-v", "--isolated", "--no-cache-dir", "--no-input",
                "--disable-pip-version-check", "--target", str(workdir / "target"), "--index-url",
                registry.simple_url, "--proxy", fleet_.proxy_url(user), "--cert", str(fleet_.ca), PACKAGE],
               clean_env(workdir / "home"), workdir)


def crossings(records: list[list[dict]]) -> tuple[int, int]:
    """(chains whose 3xx went through one instance and follow-up through the other, of those, injected)."""
    redirected = {r["chain"]: r["instance"] for recs in records for r in recs
                  if r["event"] == "redirect" and r.get("action") == "inject"}
    crossed, injected = set(), set()
    for recs in records:
        for r in recs:
            if r["chain"] in redirected and r["hop"] > 0 and r["instance"] != redirected[r["chain"]]:
                crossed.add(r["chain"])
                if r["event"] == "inject" and r["action"] == "inject":
                    injected.add(r["chain"])
    return len(crossed), len(injected)


def expected_authorization(token: str) -> str:
    return "Basic " + base64.b64encode(f"aws:{token}".encode()).decode()


def test_uv_and_pip_install_through_a_balanced_fleet_sharing_redis(registry_factory, redis_server, tmp_path, token,
                                                                   forms, capsys):
    registry = registry_factory("https", 404)
    with fleet(tmp_path, registry, redis_server.url, redis_server) as f:
        results = {}
        for n in range(2):
            results[f"uv-0.5.25 #{n + 1}"] = uv_install(f, registry, tmp_path / f"uv{n}")
        results["pip"] = pip_install(f, registry, tmp_path / "pip")
        for name, result in results.items():
            assert result.returncode == 0, f"{name}: " + "\n".join(result.output.splitlines()[-30:])
            assert_no_leak(result.output, forms, f"{name} output")
        alice_requests = len(registry.index.requests)
        # bob, another proxy user behind the same balancer address, asks the index directly
        bob_codes = [_fetch(f, "bob", registry.index.project_url + "?who=bob") for _ in range(6)]
        records = f.records()
        scrapes = [f.scrape(0), f.scrape(1)]
        report = subprocess.run([sys.executable, "-m", "credhop", "report", "--format", "json",
                                 *(str(p.hoplog) for p in f.proxies)], capture_output=True, text=True,
                                cwd=tmp_path, env={**clean_env(tmp_path / "home"), "PYTHONPATH": str(_addons())})
        dump = redis_server.dump()
        outputs = [p.output for p in f.proxies]

    # every request the index got from alice's installs carried her credential, bob's none
    assert bob_codes == [404] * 6
    for request in registry.index.requests[:alice_requests]:
        assert request.header("authorization") == [expected_authorization(token)], request.path
    assert all(not r.header("authorization") for r in registry.index.requests[alice_requests:])
    assert all(not r.header("authorization") for r in registry.redirector.requests)

    crossed, injected = crossings(records)
    assert crossed >= 1 and injected == crossed  # the 3xx on one instance, the follow-up on the other
    assert all(r["client"] == "user:alice" for recs in records for r in recs if "who=bob" not in r["url"])

    # credhop report a.jsonl b.jsonl: one chain per install step, none cut in two
    doc = json.loads(report.stdout)
    assert report.returncode == 0, report.stderr
    assert doc["summary"]["failed"] == 0 and doc["summary"]["ok"] >= 3

    # Redis never held the token in any form, nor the client's name
    blob = b"\n".join(k + b" " + b" ".join(v) for k, v in dump).decode("latin-1")
    assert dump and not leaks(blob, forms) and "alice" not in blob and "127.0.0.2" not in blob
    for output in outputs:
        assert_no_leak(output, forms, "mitmdump output")
        assert "Traceback" not in output and "internal error" not in output

    # /metrics parses, and each instance's counters match its hop log
    for recs, samples in zip(records, scrapes):
        redirects = sum(v for (n, _), v in samples.items() if n == "credhop_redirects_total")
        injections = sum(v for (n, _), v in samples.items() if n == "credhop_injections_total")
        assert redirects == sum(1 for r in recs if r["event"] == "redirect")
        assert injections == sum(1 for r in recs if r["event"] == "inject" and r["action"] == "inject")
        assert samples[("credhop_store_up", ())] == 1
        assert any(n == "credhop_store_latency_seconds_count" for n, _ in samples)
        labels = {v for (n, ls), _ in samples.items() for _, v in ls}
        assert not {"alice", "bob", "user:alice", "127.0.0.1", "127.0.0.2"} & labels
    chains = sum(v for samples in scrapes for (n, _), v in samples.items() if n == "credhop_chains_total")
    assert chains >= 3  # each instance judges the chains (or halves of chains) that ended on it
    with capsys.disabled():
        print(f"\nfleet (redis): {crossed} chain(s) crossed instances, {injected} injected on the other instance; "
              f"{len(dump)} Redis keys, no token form found")


def test_memory_store_behind_a_balancer_loses_the_follow_up(registry_factory, tmp_path, capsys):
    registry = registry_factory("https", 404)
    with fleet(tmp_path, registry, "memory") as f:
        result = uv_install(f, registry, tmp_path / "uv")
        records = f.records()
    granted = {r["instance"] for recs in records for r in recs if r["event"] == "redirect" and r["action"] == "inject"}
    injected = sum(1 for recs in records for r in recs if r["event"] == "inject")
    with capsys.disabled():
        print(f"\nfleet (memory): uv 0.5.25 exit {result.returncode}; credential granted on {sorted(granted)}, "
              f"{injected} injection(s); the index got {len(registry.index.requests)} request(s) without it")
    assert result.returncode != 0 and "not found" in result.output
    # the 3xx went through one instance, which held the credential; the follow-up reached the other
    assert len(granted) == 1 and injected == 0
    assert registry.index.requests and all(not r.header("authorization") for r in registry.index.requests)


# -- faults ----------------------------------------------------------------------------------------

def _addons() -> Path:
    return Path(__file__).resolve().parents[2] / "addons"


def _opener(f: Fleet, user: str) -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=str(f.ca))
    return urllib.request.build_opener(urllib.request.ProxyHandler({"https": f.proxy_url(user)}),
                                       urllib.request.HTTPSHandler(context=context))


def _fetch(f: Fleet, user: str, url: str, timeout: float = 10) -> int:
    try:
        with _opener(f, user).open(url, timeout=timeout) as r:  # a new connection: the next instance
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


@dataclass
class Phase:
    name: str
    requests: int = 0
    failed: int = 0
    longest: float = 0.0
    bob: int = 0
    wrong: int = 0
    store_wait: str = ""
    store_errors: int = 0
    codes: dict = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    crossed: int = 0
    crossed_injected: int = 0
    delta: dict = field(default_factory=dict)


def _traffic(f: Fleet, registry, seconds: float, phase: Phase, user: str) -> None:
    """`user` follows the redirector's 3xx to the index, over and over; bob asks the index directly."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def alice() -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            code = _fetch(f, user, registry.simple_url + PACKAGE + "/")
            with lock:
                phase.requests += 1
                phase.failed += code != 200
                phase.codes[code] = phase.codes.get(code, 0) + 1
                phase.longest = max(phase.longest, time.monotonic() - start)

    def bob() -> None:
        while time.monotonic() < stop:
            _fetch(f, "bob", registry.index.project_url + "?who=bob")
            with lock:
                phase.bob += 1
            time.sleep(0.05)

    # one thread for `user`: its 3xx and follow-up are consecutive connections, which round-robin sends
    # to different instances unless one of bob's falls in between (two threads in lockstep would each
    # stay on one instance and hide the faults)
    threads = [threading.Thread(target=alice), threading.Thread(target=bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _store_figures(f: Fleet, alive: list[int]) -> dict[int, dict[str, float]]:
    """Per instance: the store-latency histogram's buckets, and `errors` (store errors of every cause)."""
    figures: dict[int, dict[str, float]] = {}
    for i in alive:
        mine = figures[i] = {"errors": 0.0}
        for (name, labels), value in f.scrape(i).items():
            if name == "credhop_store_latency_seconds_bucket":
                le = dict(labels)["le"]
                mine[le] = mine.get(le, 0.0) + value  # summed over ops
            elif name == "credhop_store_errors_total":
                mine["errors"] += value
    return figures


def _delta(before: dict[int, dict[str, float]], after: dict[int, dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, values in after.items():
        for k, v in values.items():
            out[k] = out.get(k, 0) + v - before.get(i, {}).get(k, 0)
    return out


def _longest_wait(delta: dict[str, float]) -> str:
    """The smallest histogram bound every store wait of the phase stayed under."""
    total = delta.get("+Inf", 0)
    for le in sorted((b for b in delta if b not in ("+Inf", "errors")), key=float):
        if delta[le] >= total:
            return f"<= {float(le) * 1000:g} ms"
    return "> 2.5 s"


def _crossed(records: list[list[dict]], start: float, end: float) -> tuple[int, int]:
    """Chains redirected in [start, end) whose follow-up went through the other instance, and of
    those, how many got the credential there."""
    window = [[r for r in recs if r["event"] != "redirect" or start <= r["ts"] < end] for recs in records]
    return crossings(window)


def test_faults_under_traffic(registry_factory, redis_server, tmp_path, token, forms, capsys):
    registry = registry_factory("https", 404)
    phases: list[Phase] = []
    with fleet(tmp_path, registry, redis_server.url, redis_server) as f:
        alive = [0, 1]

        def measure(name: str, seconds: float, before_traffic=None) -> Phase:
            phase = Phase(name)
            seen = len(registry.index.requests)
            before = _store_figures(f, alive)
            if before_traffic:
                before_traffic()
            phase.start = time.time()
            _traffic(f, registry, seconds, phase, f"user{len(phases)}")
            phase.end = time.time()
            delta = _delta(before, _store_figures(f, alive))
            phase.store_wait = _longest_wait(delta)
            phase.delta = delta
            phase.store_errors = int(delta.get("errors", 0))
            for request in registry.index.requests[seen:]:
                auth = request.header("authorization")
                if "who=bob" in request.target and auth:
                    phase.wrong += 1
                elif auth and auth != [expected_authorization(token)]:
                    phase.wrong += 1
            phases.append(phase)
            return phase

        measure("baseline (Redis up)", 2.0)
        measure("Redis killed (SIGKILL)", 2.5, redis_server.kill)
        measure("Redis restarted empty", 2.5, redis_server.start)
        measure("Redis hung (SIGSTOP)", 2.5, redis_server.freeze)
        redis_server.thaw()
        time.sleep(1.0)  # the probe notices within PROBE_INTERVAL + timeout
        measure("Redis resumed (SIGCONT)", 2.0)

        def kill_b() -> None:
            f.proxies[1].proc.kill()
            alive.remove(1)
        measure("instance b killed (SIGKILL)", 2.5, kill_b)
        survivor = f.proxies[0]
        assert survivor.proc.poll() is None, "instance a crashed"
        outputs = [p.output for p in f.proxies]
        records = f.records()

    for p in phases:
        p.crossed, p.crossed_injected = _crossed(records, p.start, p.end)
    lines = [f"{'phase':<30} {'requests':>8} {'failed':>6} {'crossed (injected)':>18} {'longest request':>15} "
             f"{'store wait':>11} {'store errors':>12} {'bob':>4} {'wrong injections':>16}"]
    for p in phases:
        crossed = f"{p.crossed} ({p.crossed_injected})"
        lines.append(f"{p.name:<30} {p.requests:>8} {p.failed:>6} {crossed:>18} {p.longest * 1000:>12.0f} ms "
                     f"{p.store_wait:>11} {p.store_errors:>12} {p.bob:>4} {p.wrong:>16}")
    with capsys.disabled():
        print("\nfleet faults (2 instances behind haproxy, credhop_store_timeout=%d ms):\n%s"
              % (STORE_TIMEOUT_MS, "\n".join(lines)))
    (tmp_path / "figures.txt").write_text("\n".join(lines) + "\n" + "\n".join(str(p.delta) for p in phases))

    assert all(p.wrong == 0 for p in phases)
    assert all(p.requests > 5 and p.bob > 5 for p in phases)
    for quiet in (phases[0], phases[4]):  # Redis up: every chain works (unless a missed deadline on a
        assert quiet.failed == 0 or quiet.store_errors > 0, quiet  # busy machine sent it local)
    for p in phases:
        assert p.store_wait != "> 2.5 s"
        assert p.longest < 5.0, p
    hung = phases[3]
    assert hung.store_wait in ("<= 500 ms", "<= 250 ms", "<= 100 ms", "<= 50 ms", "<= 25 ms", "<= 10 ms"), hung
    for output in outputs:
        assert_no_leak(output, forms, "mitmdump output")
        assert "Traceback" not in output and "internal error" not in output
    warnings = [line for line in outputs[0].splitlines() if "shared store" in line and "unavailable" in line]
    assert 2 <= len(warnings) <= 4  # once per outage, with its cause
    assert any("connection" in w for w in warnings) and any("timeout" in w for w in warnings)
    assert all(r.get("instance") in ("credhop-a", "credhop-b") for recs in records for r in recs)


def test_a_redis_store_without_a_key_refuses_to_start(pki, tmp_path):
    proxy = Mitmdump(tmp_path / "proxy", pki.ca_cert, options={"credhop_store": "redis://127.0.0.1:9/0"})
    assert proxy.run_expecting_failure() == 1
    assert "credhop_store: a Redis store needs credhop_store_key" in proxy.output
    assert "proxy listening" not in proxy.output and "Traceback" not in proxy.output
