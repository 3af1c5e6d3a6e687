"""A fleet on a Redis Cluster (3 primaries + 3 replicas) and on a Sentinel-managed primary, failing over
under traffic.

Two credhop mitmdumps behind haproxy (test_fleet's `fleet`: --proxyauth, credhop_client_id=proxyauth, one
store key and fingerprint key, credhop_store_timeout=200) share a real Redis Cluster
(`credhop_store=redis+cluster://…`, tests/fixtures/cluster.py), or a primary, its replica and Sentinel
(`redis+sentinel://…`). While each fault happens, proxy users install with uv 0.5.25 and pip through the
balancer, a fresh pair of users per fault (no instance holds their grants yet), from a redirector whose
Location carries a token of each user's own (`https://aws:TOKEN_user@index/u/user/…`); a proxy user who
never installs asks their index pages directly. Per fault: installs and chains that failed, the longest
store wait, how long the store took to heal and an install to succeed again, and wrong injections, which
must be 0 (failures are allowed while a fault lasts):

- the index got a credential on a request for another user than the token's (by path, or `who=` for the
  bystander), or the redirector got one at all;
- a hop log's injection (an `inject` that injected, a `downloads` record) has no `redirect` before it of
  the same client granting the same fingerprint for the same origin.

The figures are printed (pytest -s) and written as JSON to $CREDHOP_FAILOVER_REPORT when it is set.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.harness import Result, clean_env, proxy_env, run, tool
from tests.e2e.test_fleet import (STORE_TIMEOUT_MS, USERS, Fleet, _addons, _crossed, _delta, _fetch,
                                  _longest_wait, _store_figures, fleet, need)
from tests.fixtures.cluster import ClusterNode, RedisCluster, RedisReplica, promote
from tests.fixtures.fleet import RedisSentinel, RedisServer
from tests.fixtures.registry import AuthIndex, Redirector
from tests.fixtures.server import Request, Response, Server, not_found, userinfo_url
from tests.secrets_check import Secret, assert_no_leak, leaks, secret_forms

PACKAGE = "credhop-demo-pkg"
BYSTANDER = "bob"  # asks the others' index pages directly, never installs: holds no grant anywhere
RECOVERY = 40.0  # seconds an install may take to succeed again once the fault healed (generous: loaded CI)
STORE_BACK = 20.0  # seconds both instances may take to report the store up again after that
FREEZE = 3.0  # seconds a primary stays stopped: longer than the node timeout (1 s), so it is voted out
MIGRATE_PAUSE = 0.05  # seconds between two keys of a slot being moved: ASK meanwhile


# -- a registry for many users, a token each, on one origin -------------------------------------------

class ByUser(Server):
    """One origin for several fixture origins, each mounted below /u/<user>/ (their prefix)."""

    def __init__(self, parts: dict[str, Server], host: str, tls) -> None:
        super().__init__(None, host, 0, tls)
        self.parts = parts

    def respond(self, request: Request) -> Response:
        segments = request.path.split("/")
        part = self.parts.get(segments[2]) if len(segments) > 2 and segments[1] == "u" else None
        return part.respond(request) if part is not None else not_found()


@dataclass
class Tenants:
    """The redirector and the auth-only index: user U's index pages are /u/U/simple/…, served only with
    U's token, and the redirector's /u/U/simple/… answers 302 Location: https://aws:TOKEN_U@index/u/U/…"""

    redirector: Server
    index: Server
    tokens: dict[str, Secret]
    test_ca: Path  # what mitmproxy trusts upstream (test_fleet's fleet reads it)

    def simple_url(self, user: str) -> str:
        return f"{self.redirector.url}/u/{user}/simple/"

    def project_url(self, user: str) -> str:
        return f"{self.index.url}/u/{user}/simple/{PACKAGE}/"

    def authorization(self, user: str) -> str:
        return "Basic " + base64.b64encode(f"aws:{self.tokens[user]}".encode()).decode()

    @property
    def forms(self) -> set[str]:
        return secret_forms(*self.tokens.values())


@pytest.fixture
def tenants(pki, wheel) -> Iterator[Tenants]:
    tokens = {user: Secret(f"tk:{secrets.token_urlsafe(12)}@/%x") for user in USERS}
    indexes = {u: AuthIndex("aws", t, wheel, unauth_status=404, prefix=f"/u/{u}") for u, t in tokens.items()}
    index = ByUser(indexes, "127.0.0.2", pki.server_context()).start()
    try:
        locations = {u: userinfo_url("https", index.host, index.port, "aws", t, f"/u/{u}/simple/")
                     for u, t in tokens.items()}
        redirectors = {u: Redirector(location, prefix=f"/u/{u}") for u, location in locations.items()}
        redirector = ByUser(redirectors, "127.0.0.1", pki.server_context()).start()
        try:
            yield Tenants(redirector, index, tokens, pki.ca_cert)
        finally:
            redirector.stop()
    finally:
        index.stop()


# -- traffic -----------------------------------------------------------------------------------------

def install(f: Fleet, tenants: Tenants, user: str, client: str, workdir: Path) -> Result:
    """One install of the package with a fresh cache, through the balancer as proxy user `user`."""
    url = tenants.simple_url(user)
    if client == "uv":
        env = clean_env(workdir / "home", **proxy_env(f.proxy_url(user), f.ca))
        argv = [tool("CREDHOP_UV_OLD", "uv-0.5.25"), "pip", "install", "-v", "--no-config", "--cache-dir",
                str(workdir / "uv-cache"), "--target", str(workdir / "target"), "--python", sys.executable,
                "--index-url", url, PACKAGE]
    else:
        env = clean_env(workdir / "home")
        argv = [sys.executable, "-m", "pip", "install", "-v", "--isolated", "--no-cache-dir", "--no-input",
                "--disable-pip-version-check", "--retries", "0", "--timeout", "15", "--target",
                str(workdir / "target"), "--index-url", url, "--proxy", f.proxy_url(user),
                "--cert", str(f.ca), PACKAGE]
    try:
        return run(argv, env, workdir, timeout=60)
    except subprocess.TimeoutExpired as e:
        return Result(argv, -1, "", f"timed out after {e.timeout} s")


@dataclass
class Install:
    user: str
    client: str
    ok: bool
    start: float
    end: float
    error: str = ""  # the last line of a failed install's output


def last_error(output: str) -> str:
    """The client's last error line, control characters escaped (it came from the network, in part)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "not found" in line.lower()]
    line = (errors or lines or [""])[-1][:160]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)


class Traffic:
    """Each user of `clients` installs in a loop (one thread each, uv or pip), and the bystander asks
    their index pages directly, until stopped; a new connection each time, so the balancer spreads a
    chain's 3xx and follow-up over both instances."""

    def __init__(self, f: Fleet, tenants: Tenants, clients: dict[str, str], workdir: Path) -> None:
        self.f, self.tenants, self.clients, self.workdir = f, tenants, clients, workdir
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.installs: list[Install] = []
        self.outputs: list[str] = []
        self.bystander_requests = 0
        self.errors: list[BaseException] = []  # of the threads, raised again on exit
        self.threads = [threading.Thread(target=self._guarded, args=(self._installs, u, c))
                        for u, c in clients.items()]
        self.threads.append(threading.Thread(target=self._guarded, args=(self._bystander,)))

    def _guarded(self, work: Callable[..., None], *args: str) -> None:
        try:
            work(*args)
        except BaseException as e:
            self.errors.append(e)
            self.stopping.set()

    def _installs(self, user: str, client: str) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            start = time.time()
            result = install(self.f, self.tenants, user, client, self.workdir / f"{user}-{n}")
            ok = result.returncode == 0
            with self.lock:
                self.installs.append(Install(user, client, ok, start, time.time(),
                                             "" if ok else last_error(result.output)))
                self.outputs.append(result.output)

    def _bystander(self) -> None:
        while not self.stopping.is_set():
            for user in self.clients:
                _fetch(self.f, BYSTANDER, self.tenants.project_url(user) + f"?who={BYSTANDER}", timeout=10)
                with self.lock:
                    self.bystander_requests += 1
            self.stopping.wait(0.05)

    def succeeded_since(self, since: float) -> float | None:
        """The end of the first install started at `since` or later that succeeded."""
        with self.lock:
            ends = [i.end for i in self.installs if i.ok and i.start >= since]
        return min(ends) if ends else None

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]


# -- judging -----------------------------------------------------------------------------------------

def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def injections(records: list[dict]) -> list[dict]:
    """Every request a credential was added to: inject records that injected, and downloads (counted)."""
    return [r for r in records
            if (r["event"] == "inject" and r.get("action") == "inject") or r["event"] == "downloads"]


def unmatched_injections(records: list[dict]) -> list[dict]:
    """Injections no earlier redirect of the same client granted: same origin, user and fingerprint."""
    granted: dict[tuple, float] = {}
    for r in records:
        if r["event"] == "redirect" and r.get("action") == "inject":
            key = (r["client"], r["target"], r.get("user"), r.get("fingerprint"))
            granted[key] = min(granted.get(key, r["ts"]), r["ts"])
    wrong = []
    for r in injections(records):
        first = granted.get((r["client"], origin(r["url"]), r.get("user"), r.get("fingerprint")))
        if first is None or first > r.get("first", r["ts"]):
            wrong.append(r)
    return wrong


def wrong_at_the_origins(tenants: Tenants, index: list[Request], redirector: list[Request]) -> int:
    """Requests that reached the index with a credential other than the one of the user they were for,
    and requests that reached the redirector with any credential."""
    wrong = sum(1 for r in redirector if r.header("authorization"))
    for r in index:
        sent = r.header("authorization")
        if not sent:
            continue
        segments = r.path.split("/")
        owner = segments[2] if len(segments) > 2 and segments[1] == "u" else ""
        user = parse_qs(r.query).get("who", [owner])[0]
        wrong += user not in tenants.tokens or sent != [tenants.authorization(user)]
    return wrong


def judged_chains(records: list[dict], workdir: Path, start: float, end: float) -> dict[str, int]:
    """Chains started in [start, end) by verdict (`chains`, `failed`, `unknown`, `ok`), as `credhop report`
    judges the merged hop logs. A follow-up that reached an instance which could not know it (the store
    down) is no part of its chain: that chain ends at its 3xx, unknown."""
    chains = {r["chain"] for r in records if r["hop"] == 0 and start <= r["ts"] < end}
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "hops.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records if r["chain"] in chains))
    report = subprocess.run([sys.executable, "-m", "credhop", "report", "--format", "json", str(log)],
                            capture_output=True, text=True, cwd=workdir,
                            env={**clean_env(workdir / "home"), "PYTHONPATH": str(_addons())})
    return json.loads(report.stdout)["summary"]


@dataclass
class Phase:
    name: str
    users: dict[str, str]
    start: float = 0.0
    end: float = 0.0
    healed_s: float | None = None  # from the fault until the store was healthy again (the fixture says)
    recovered_s: float | None = None  # from then until an install started after it succeeded
    note: str = ""
    installs: list[Install] = field(default_factory=list)
    bystander_requests: int = 0
    store_wait: str = ""
    store_errors: int = 0
    store_back: bool = False
    index_seen: tuple[int, int] = (0, 0)
    redirector_seen: tuple[int, int] = (0, 0)
    # from the hop logs, after the proxies stopped
    chains: int = 0
    chains_failed: int = 0
    chains_unknown: int = 0
    crossed: int = 0
    crossed_injected: int = 0
    injections: int = 0
    wrong_at_origins: int = 0
    wrong_in_hop_logs: int = 0

    @property
    def failed_installs(self) -> int:
        return sum(not i.ok for i in self.installs)

    @property
    def wrong(self) -> int:
        return self.wrong_at_origins + self.wrong_in_hop_logs

    def figures(self) -> dict:
        fields = asdict(self)
        for name in ("installs", "index_seen", "redirector_seen", "start", "end"):
            fields.pop(name)
        return {**fields, "installs": len(self.installs), "failed_installs": self.failed_installs,
                "install_errors": [f"{i.client} as {i.user}: {i.error}" for i in self.installs if not i.ok],
                "clients": sorted(set(self.users.values())), "wrong_injections": self.wrong}


def store_up(f: Fleet) -> bool:
    try:
        return all(f.scrape(i).get(("credhop_store_up", ())) == 1 for i in (0, 1))
    except (OSError, urllib.error.URLError):
        return False


class Run:
    """The phases of one fleet: traffic while a fault happens, then until an install succeeds again."""

    def __init__(self, f: Fleet, tenants: Tenants, workdir: Path) -> None:
        self.f, self.tenants, self.workdir = f, tenants, workdir
        self.phases: list[Phase] = []
        self.outputs: list[str] = []

    def phase(self, name: str, users: dict[str, str],
              fault: Callable[[Phase, Traffic], float] | None = None) -> Phase:
        """`fault` breaks the store and returns once it healed, with the seconds that took."""
        p = Phase(name, users)
        before = _store_figures(self.f, [0, 1])
        p.index_seen = (len(self.tenants.index.requests), 0)
        p.redirector_seen = (len(self.tenants.redirector.requests), 0)
        p.start = time.time()
        with Traffic(self.f, self.tenants, users, self.workdir / f"phase-{len(self.phases)}") as traffic:
            time.sleep(0.5)  # installs under way when the fault comes
            p.healed_s = fault(p, traffic) if fault else 0.0
            healed = time.time()
            deadline = time.monotonic() + RECOVERY
            while (ok := traffic.succeeded_since(healed)) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            p.recovered_s = None if ok is None else ok - healed
        p.end = time.time()
        deadline = time.monotonic() + STORE_BACK
        while not (back := store_up(self.f)) and time.monotonic() < deadline:
            time.sleep(0.2)
        p.store_back = back
        delta = _delta(before, _store_figures(self.f, [0, 1]))
        p.store_wait, p.store_errors = _longest_wait(delta), int(delta.get("errors", 0))
        p.installs, p.bystander_requests = traffic.installs, traffic.bystander_requests
        p.index_seen = (p.index_seen[0], len(self.tenants.index.requests))
        p.redirector_seen = (p.redirector_seen[0], len(self.tenants.redirector.requests))
        self.outputs += traffic.outputs
        self.phases.append(p)
        return p

    def judge(self) -> list[dict]:
        """After the proxies stopped (their downloads records are written then): every phase's figures."""
        logs = self.f.records()
        merged = sorted((r for recs in logs for r in recs), key=lambda r: r["ts"])
        wrong = unmatched_injections(merged)
        for n, p in enumerate(self.phases):
            verdicts = judged_chains(merged, self.workdir / f"report-{n}", p.start, p.end)
            p.chains, p.chains_failed, p.chains_unknown = (verdicts[v]
                                                           for v in ("chains", "failed", "unknown"))
            p.crossed, p.crossed_injected = _crossed(logs, p.start, p.end)
            within = [r for r in injections(merged) if p.start <= r["ts"] < p.end]
            p.injections = sum(r.get("count", 1) for r in within)
            p.wrong_in_hop_logs = sum(1 for r in wrong if p.start <= r["ts"] < p.end)
            p.wrong_at_origins = wrong_at_the_origins(
                self.tenants, self.tenants.index.requests[slice(*p.index_seen)],
                self.tenants.redirector.requests[slice(*p.redirector_seen)])
        return merged

    COLUMNS = ("installs", "failed", "chains", "failed", "unknown", "crossed (inj.)", "store wait",
               "store err.", "healed", "recovered", "injected", "wrong")

    def table(self, title: str) -> str:
        lines = [title, f"{'phase':<48} " + " ".join(f"{c:>{max(len(c), 6)}}" for c in self.COLUMNS)]
        for p in self.phases:
            recovered = "never" if p.recovered_s is None else f"{p.recovered_s:.1f} s"
            cells = (len(p.installs), p.failed_installs, p.chains, p.chains_failed, p.chains_unknown,
                     f"{p.crossed} ({p.crossed_injected})", p.store_wait, p.store_errors,
                     f"{p.healed_s:.1f} s", recovered, p.injections, p.wrong)
            lines.append(f"{p.name:<48} " + " ".join(f"{cell:>{max(len(c), 6)}}"
                                                     for c, cell in zip(self.COLUMNS, cells)))
            if p.note:
                lines.append(f"    {p.note}")
            failures = Counter(f"{i.client} as {i.user}: {i.error}" for i in p.installs if not i.ok)
            lines += [f"    failed {n}x: {error}" for error, n in failures.most_common(3)]
        return "\n".join(lines)


def write_report(kind: str, run_: Run, table: str) -> None:
    """Into $CREDHOP_FAILOVER_REPORT (JSON), beside what other tests of this file wrote there."""
    path = os.environ.get("CREDHOP_FAILOVER_REPORT")
    if not path:
        return
    target = Path(path)
    doc = json.loads(target.read_text()) if target.exists() and target.stat().st_size else {}
    doc[kind] = {"store_timeout_ms": STORE_TIMEOUT_MS, "phases": [p.figures() for p in run_.phases],
                 "table": table}
    target.write_text(json.dumps(doc, indent=2) + "\n")


def check(run_: Run, merged: list[dict], forms: set[str], outputs: list[str], capsys, title: str,
          kind: str) -> None:
    table = run_.table(title)
    assert_no_leak(table + json.dumps([p.figures() for p in run_.phases]), forms, "the figures")
    with capsys.disabled():
        print("\n" + table)
    write_report(kind, run_, table)
    assert all(p.wrong == 0 for p in run_.phases), [(p.name, p.wrong_at_origins, p.wrong_in_hop_logs)
                                                    for p in run_.phases]

    # the checks had something to bite on: each installing user's redirects carried one fingerprint,
    # their own token's, and no two users share one
    installers = {u for p in run_.phases for u in p.users}
    fingerprints = {u: {r["fingerprint"] for r in merged if r["client"] == f"user:{u}"
                        and r["event"] == "redirect" and r.get("action") == "inject"} for u in installers}
    assert all(len(fps) == 1 for fps in fingerprints.values()), fingerprints
    assert len({fp for fps in fingerprints.values() for fp in fps}) == len(installers)
    assert sum(p.injections for p in run_.phases) > 0
    assert sum(p.crossed_injected for p in run_.phases) > 0  # the store carried grants across instances
    assert not any(r["client"] == f"user:{BYSTANDER}" for r in merged)  # it never had a chain
    for p in run_.phases:
        assert p.installs and p.bystander_requests > 3, p.name
        assert p.recovered_s is not None, f"{p.name}: no install succeeded in {RECOVERY} s after it healed"
        assert p.store_back, f"{p.name}: the store was not up on both instances {STORE_BACK} s after that"
        assert p.store_wait != "> 2.5 s", f"{p.name}: a store call waited longer than 2.5 s (deadline 200 ms)"
    baseline = run_.phases[0]
    assert baseline.failed_installs == 0 or baseline.store_errors > 0, baseline.figures()  # unless a busy
    # machine missed a deadline and sent a follow-up local
    for output in run_.outputs:
        assert_no_leak(output, forms, "an install's output")
    for output in outputs:
        assert_no_leak(output, forms, "mitmdump output")
        assert "Traceback" not in output and "internal error" not in output


def users_for(phase: int, clients: tuple[str, ...] = ("uv", "pip")) -> dict[str, str]:
    """A fresh pair of proxy users for each phase (phase 0: alice alone), none of them the bystander."""
    if phase == 0:
        return {"alice": "uv"}
    return {f"user{2 * (phase - 1) + n}": client for n, client in enumerate(clients)}


# -- Redis Cluster -------------------------------------------------------------------------------------

@pytest.fixture
def cluster(tmp_path) -> Iterator[RedisCluster]:
    need("redis-server", "CREDHOP_REDIS_SERVER")
    need("redis-cli", "CREDHOP_REDIS_CLI")
    with RedisCluster(tmp_path / "cluster") as c:
        yield c


def busiest(cluster: RedisCluster) -> ClusterNode:
    """The primary holding the most keys (credhop's among them): the one a fault hurts most."""
    return max(cluster.primaries(), key=lambda n: int(cluster.command(n, "DBSIZE")))


def test_a_fleet_on_redis_cluster_survives_failover_restart_reshard_and_a_partition(
        tenants, cluster, tmp_path, capsys):
    state: dict[str, object] = {}

    def kill_primary(p: Phase, traffic: Traffic) -> float:
        victim = state["victim"] = busiest(cluster)
        replica = cluster.replica_of(victim)
        cluster.kill(victim)
        took = cluster.wait_ok(timeout=30)
        p.note = f"killed {victim.address}; its replica {replica.address} took over: {cluster.role(replica)}"
        return took

    def restart_it(p: Phase, traffic: Traffic) -> float:
        victim = state["victim"]
        start = time.monotonic()
        cluster.start_again(victim)
        cluster.wait_ok(timeout=30)
        p.note = f"{victim.address} started again: {cluster.role(victim)}"
        return time.monotonic() - start

    def reshard(p: Phase, traffic: Traffic) -> float:
        # once this phase's users have keys, every slot holding credhop's keys moves to another primary,
        # its keys one by one: each slot is split between two primaries for a while (ASK), then MOVED
        deadline = time.monotonic() + RECOVERY
        while not traffic.installs and time.monotonic() < deadline:
            time.sleep(0.1)
        start = time.monotonic()
        hot = cluster.slots_with_keys("credhop:*")
        keys = 0
        for slot in sorted(hot):
            primaries = cluster.primaries()
            source = cluster.owner(slot)
            keys += cluster.move_slot(slot, primaries[(primaries.index(source) + 1) % len(primaries)],
                                      pause=MIGRATE_PAUSE)
        cluster.wait_ok(timeout=30)
        p.note = f"{len(hot)} slots holding {keys} of credhop's keys moved, each to the next primary"
        return time.monotonic() - start

    def partition(p: Phase, traffic: Traffic) -> float:
        victim = busiest(cluster)
        start = time.monotonic()
        cluster.freeze(victim)
        time.sleep(FREEZE)
        cluster.thaw(victim)
        cluster.wait_ok(timeout=30)
        p.note = f"{victim.address} stopped for {FREEZE:g} s, then resumed: {cluster.role(victim)}"
        return time.monotonic() - start

    with fleet(tmp_path, tenants, cluster.url) as f:
        run_ = Run(f, tenants, tmp_path / "traffic")
        run_.phase("baseline (cluster healthy)", users_for(0))
        run_.phase("(a) primary killed, its replica takes over", users_for(1), kill_primary)
        run_.phase("(b) the old primary restarted, rejoins", users_for(2), restart_it)
        run_.phase("(c) resharded: the slots of credhop's keys moved", users_for(3), reshard)
        run_.phase(f"(d) a primary stopped {FREEZE:g} s (SIGSTOP), resumed", users_for(4), partition)
        # every key and value the cluster holds, through a RedisServer handle on each (running) primary
        dumps = [RedisServer(n.folder, port=n.port).dump() for n in cluster.primaries()]
    merged = run_.judge()
    outputs = [p.output for p in f.proxies]
    blob = b"\n".join(k + b" " + b" ".join(v) for dump in dumps for k, v in dump).decode("latin-1")
    assert not leaks(blob, tenants.forms) and "alice" not in blob and "127.0.0.2" not in blob
    check(run_, merged, tenants.forms, outputs, capsys,
          f"fleet on Redis Cluster (3 primaries + 3 replicas, node timeout 1 s; 2 instances behind haproxy, "
          f"credhop_store_timeout={STORE_TIMEOUT_MS} ms):", "cluster")


# -- Sentinel --------------------------------------------------------------------------------------------

def test_a_fleet_on_sentinel_survives_a_failover(tenants, tmp_path, capsys):
    need("redis-server", "CREDHOP_REDIS_SERVER")
    with (RedisServer(tmp_path / "redis-primary") as primary,
          RedisReplica(tmp_path / "redis-replica", primary) as replica):
        replica.wait_synced()
        with RedisSentinel(tmp_path / "sentinel", primary) as sentinel:

            def failover(p: Phase, traffic: Traffic) -> float:
                named, converted = promote(sentinel, primary, replica, timeout=60)
                p.note = (f"SENTINEL FAILOVER: {replica.port} named primary after {named:.1f} s; the "
                          f"old primary {primary.port} stayed one (taking writes) until Sentinel turned it "
                          f"into a replica after {converted:.1f} s")
                return converted

            with fleet(tmp_path, tenants, sentinel.url) as f:
                run_ = Run(f, tenants, tmp_path / "traffic")
                run_.phase("baseline (primary up)", users_for(0))
                run_.phase("replica promoted (SENTINEL FAILOVER)", users_for(1), failover)
            merged = run_.judge()
    check(run_, merged, tenants.forms, [p.output for p in f.proxies], capsys,
          f"fleet on Sentinel (a primary, its replica, one Sentinel; 2 instances behind haproxy, "
          f"credhop_store_timeout={STORE_TIMEOUT_MS} ms):", "sentinel")
