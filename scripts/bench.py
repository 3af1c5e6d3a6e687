#!/usr/bin/env python3
"""credhop's benchmark (`make bench`): real mitmdump processes on loopback, credhop against bare mitmdump
in the same run, configurations interleaved in rounds; micro-benchmarks; memory. Writes
docs/performance.md and a chart. `--smoke` runs it with tiny counts (the test suite does that)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "addons")]

from scripts.bench import callgrind, load, micro, rulegen  # noqa: E402
from tests.e2e.harness import clean_env, free_port  # noqa: E402
from tests.fixtures.fleet import RedisServer  # noqa: E402
from tests.fixtures.pki import make_pki  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
SOURCES = {"plain": "127.0.1.1", "redirect": "127.0.1.2", "download": "127.0.1.3", "noauth": "127.0.1.4"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Config:
    name: str
    label: str
    rules: int | None  # number of rules (None: bare mitmdump)
    args: list[str]
    proc: subprocess.Popen | None = None
    port: int = 0
    counts: Path | None = None  # under callgrind (--instructions): where it dumps its counts
    program: list[str] | None = None  # instead of mitmdump: `credhop proxy`, credhop built in
    pythonpath: str | None = None  # where that credhop is imported from


@dataclass
class Cell:
    cpu: float = 0.0
    backend_cpu: float = 0.0
    redis_cpu: float = 0.0  # redis-server's CPU, for the configuration that uses it
    redis_commands: int = 0  # commands redis-server processed for it
    requests: int = 0
    authed: int = 0
    errors: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    per_round: list[float] = field(default_factory=list)  # CPU per request in each round
    instructions: float = 0  # --instructions: executed by the mitmdump process (callgrind), less its idle work
    counted: float = 0.0  # seconds the instructions were counted over
    idle_rate: float = 0.0  # instructions a second the process executes with no request
    lines: int = 0  # lines the process wrote (mitmdump's flow lines, the event log)


def start_mitmdump(config: Config, workdir: Path, confdir: Path, ca: Path, mitmdump: str,
                   instructions: bool = False, wait: bool = True) -> None:
    config.port = free_port()
    argv = [*(config.program or [mitmdump]), "--listen-host", "127.0.0.1", "--listen-port", str(config.port),
            "--set", f"confdir={confdir}", "--set", f"ssl_verify_upstream_trusted_ca={ca}", *config.args]
    if instructions:
        config.counts = workdir / f"callgrind-{config.name}.out"
        argv = callgrind.wrap(argv, config.counts)
    out = (workdir / f"mitmdump-{config.name}.out").open("wb")
    env = {**clean_env(workdir / "home"), "PYTHONUNBUFFERED": "1"}
    if config.pythonpath:
        env["PYTHONPATH"] = config.pythonpath
    config.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if wait:
        wait_for(config, workdir, confdir, instructions)


def output_lines(config: Config, workdir: Path) -> int:
    with (workdir / f"mitmdump-{config.name}.out").open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def wait_for(config: Config, workdir: Path, confdir: Path, instructions: bool = False) -> None:
    assert config.proc is not None
    deadline = time.monotonic() + (900 if instructions else 120)  # callgrind: about 50 times slower
    while time.monotonic() < deadline:
        text = (workdir / f"mitmdump-{config.name}.out").read_text(errors="replace")
        if config.proc.poll() is not None:
            raise RuntimeError(f"mitmdump ({config.name}) exited {config.proc.returncode}:\n{text[-2000:]}")
        if (confdir / "mitmproxy-ca-cert.pem").exists() and _accepts(config.port):  # (at warning level no
            return  # "listening" line is printed)
        time.sleep(0.05)
    raise RuntimeError(f"mitmdump ({config.name}) did not start")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def key_file(path: Path) -> Path:
    """A fresh 32-byte key, 64 hex digits, in a file only we can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


# not about any request: presence.py's heartbeat on its subscription, and this bench's own INFO
_NOT_REQUESTS = ("cmdstat_ping", "cmdstat_info", "cmdstat_subscribe", "cmdstat_unsubscribe")


def redis_commands(redis: RedisServer) -> int:
    """Commands about requests redis-server has processed so far (INFO commandstats)."""
    stats = redis.command("INFO", "commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_") and k not in _NOT_REQUESTS)


def configs(args: argparse.Namespace, workdir: Path, redis: RedisServer | None = None) -> list[Config]:
    entry = str(Path(args.credhop_src or REPO / "addons") / "credhop.py")
    out = [Config("bare", "bare mitmdump", None, [])]
    if args.instructions:  # what mitmproxy charges for any `-s` script, before it does anything
        out.append(Config("empty", "a script with an addon that has no hooks", None,
                          ["-s", str(REPO / "scripts" / "bench" / "empty.py")]))
    shipped = ["-s", entry, "--set", f"credhop_rules={REPO / 'addons' / 'credhop' / 'rules.yaml'}"]
    out.append(Config("shipped", "credhop, shipped rules", 2, shipped))
    if args.instructions:  # as `make run` starts it: built into mitmdump's master, no script
        python = Path(args.mitmdump).parent / "python"
        out.append(Config("builtin", "`credhop proxy`, shipped rules (built in, no script)", 2, shipped[2:],
                          program=[str(python), "-m", "credhop", "proxy"], pythonpath=str(Path(entry).parent)))
    for n in args.rule_sets:
        path = workdir / f"rules-{n}.yaml"
        path.write_text(rulegen.to_yaml(rulegen.specs(n)))
        out.append(Config(f"rules{n}", f"credhop, {n:,} rules", n, ["-s", entry, "--set", f"credhop_rules={path}"]))
    if args.instructions:  # credhop_plain_redirects=count: a 3xx that cannot start a credential hop is only counted
        out.append(Config("count", "credhop, shipped rules, plain redirects counted", 2,
                          shipped + ["--set", "credhop_plain_redirects=count"]))
    out.append(Config("hoplog", "credhop, shipped rules + hop log", 2,
                      shipped + ["--set", f"credhop_log={workdir / 'hops.jsonl'}"]))
    # the one info line per credential hop costs more in mitmproxy's log handlers than the decision:
    # without it (the terminal at warning level), what credhop's own work costs
    out.append(Config("quiet", "credhop, shipped rules, terminal at warning", 2,
                      shipped + ["--set", "termlog_verbosity=warn"]))
    # the floor under every figure: the least any addon does for this job (scripts/bench/floor.py)
    floor = ["-s", str(REPO / "scripts" / "bench" / "floor.py")]
    out.append(Config("floor", "floor: userinfo cut and added back, nothing else", None, floor))
    out.append(Config("floorlog", "floor + one info line per credential redirect", None,
                      floor + ["--set", "floor_log=true"]))
    if args.instructions:  # mitmdump's flow lines, which credhop scrubs (issue 25): every config above
        # prints two a request (flow_detail 1); 0 prints none, 2 adds the headers, a line each
        for detail in (0, 2):
            out.append(Config(f"bare{detail}", f"bare mitmdump, flow_detail {detail}", None,
                              ["--set", f"flow_detail={detail}"]))
            out.append(Config(f"shipped{detail}", f"credhop, shipped rules, flow_detail {detail}", 2,
                              shipped + ["--set", f"flow_detail={detail}"]))
    if redis is not None:  # the shared store of a fleet (issue 16): one instance here, its Redis on loopback
        store_key = key_file(workdir / "store.key")
        fingerprint_key = key_file(workdir / "fingerprint.key")
        out.append(Config("redis", "credhop, shipped rules + Redis store", 2,
                          shipped + ["--set", f"credhop_store={redis.url}", "--set", f"credhop_store_key={store_key}",
                                     "--set", f"credhop_fingerprint_key={fingerprint_key}"]))
    return out


def e2e(args: argparse.Namespace, workdir: Path, log) -> tuple[list[Config], dict, dict]:
    pki = make_pki(workdir / "pki")
    confdir = workdir / "mitmproxy-conf"
    # the backend's userinfo secret, never written anywhere (the smoke test chooses it, to look for it)
    token = os.environ.get("CREDHOP_BENCH_TOKEN") or secrets.token_urlsafe(16)
    backend = subprocess.Popen([sys.executable, "-m", "scripts.bench.backend", str(workdir / "pki")], cwd=REPO,
                               stdout=subprocess.PIPE, env={**clean_env(workdir / "home"), "BENCH_TOKEN": token})
    redis: RedisServer | None = None
    cfgs: list[Config] = []
    try:
        if not args.no_redis and (not args.configs or "redis" in args.configs):
            try:
                redis = RedisServer(workdir / "redis")
            except FileNotFoundError:
                raise RuntimeError("redis-server not found (make system-deps, or CREDHOP_REDIS_SERVER); "
                                   "--no-redis leaves the Redis configuration out") from None
            redis.start()  # --save '' --appendonly no, loopback, its own free port
            log(f"started redis-server on {redis.port} (pid {redis.proc.pid})")  # type: ignore[union-attr]
        cfgs = [c for c in configs(args, workdir, redis) if not args.configs or c.name in ("bare", *args.configs)]
        ports = json.loads(backend.stdout.readline())  # type: ignore[union-attr]
        # one after the other (each makes the CA on first start); under callgrind, once the CA is there, the
        # rest at once: a start takes a minute there
        for n, c in enumerate(cfgs):
            start_mitmdump(c, workdir, confdir, pki.ca_cert, args.mitmdump, args.instructions,
                           wait=not args.instructions or n == 0)
        for c in cfgs:
            wait_for(c, workdir, confdir, args.instructions)
            log(f"started {c.name} (pid {c.proc.pid})")  # type: ignore[union-attr]
        ca = str(confdir / "mitmproxy-ca-cert.pem")
        cells: dict[tuple[str, str, str], Cell] = {}
        shapes = [(w, s) for w in args.workloads for s in args.schemes]
        ports_list = [c.port for c in cfgs]
        for w, s in shapes:  # warm-up: certificates generated, code paths imported
            load.Run(ports_list, s, ports, SOURCES[w], ca, w, 30, 2, "warm").go()
        for r in range(args.rounds):
            for w, s in shapes:
                run = load.Run(ports_list, s, ports, SOURCES[w], ca, w, args.requests, args.threads, f"{r}")
                cmds0 = redis_commands(redis) if redis else 0  # outside the CPU interval
                for c in cfgs if args.instructions else ():
                    callgrind.zero(c.proc.pid)  # type: ignore[union-attr]
                lines0 = [output_lines(c, workdir) for c in cfgs]
                counted0 = time.monotonic()
                cpu0 = [cpu_seconds(c.proc.pid) for c in cfgs]  # type: ignore[union-attr]
                bcpu0 = cpu_seconds(backend.pid)
                rcpu0 = cpu_seconds(redis.proc.pid) if redis else 0.0  # type: ignore[union-attr]
                outcomes = run.go()
                cpu1 = [cpu_seconds(c.proc.pid) for c in cfgs]  # type: ignore[union-attr]
                bcpu1 = cpu_seconds(backend.pid)
                rcpu1 = cpu_seconds(redis.proc.pid) if redis else 0.0  # type: ignore[union-attr]
                cmds1 = redis_commands(redis) if redis else 0
                counted = [callgrind.dump(c.proc.pid, c.counts) if args.instructions else 0  # type: ignore
                           for c in cfgs]
                counted1 = time.monotonic()
                total = sum(o.requests for o in outcomes) or 1
                for c, outcome, a, b, n, l0 in zip(cfgs, outcomes, cpu0, cpu1, counted, lines0):
                    cell = cells.setdefault((c.name, w, s), Cell())
                    cell.lines += output_lines(c, workdir) - l0
                    cell.cpu += b - a
                    cell.instructions += n
                    cell.counted += counted1 - counted0
                    # the backend served every configuration at once: its CPU shared out by requests
                    cell.backend_cpu += (bcpu1 - bcpu0) * outcome.requests / total
                    if c.name == "redis":  # only that mitmdump talks to redis-server
                        cell.redis_cpu += rcpu1 - rcpu0
                        cell.redis_commands += cmds1 - cmds0
                    cell.requests += outcome.requests
                    cell.authed += outcome.authed
                    cell.errors += outcome.errors
                    cell.wall += sum(outcome.latencies)
                    cell.latencies += outcome.latencies
                    cell.per_round.append((b - a) / max(1, outcome.requests))
            log(f"round {r + 1}/{args.rounds} done")
        if args.instructions:
            idle_work(cfgs, cells, log)
        for c in cfgs:
            if c.proc and c.proc.poll() is not None:
                raise RuntimeError(f"mitmdump ({c.name}) died during the run")
        if redis and redis.proc and redis.proc.poll() is not None:
            raise RuntimeError("redis-server died during the run")
        return cfgs, cells, ports
    finally:
        for c in cfgs:
            stop(c.proc)
        stop(backend)
        if redis is not None:
            redis.__exit__(None, None, None)


# -- report ---------------------------------------------------------------------------------------------

IDLE_SECONDS = 10


def idle_work(cfgs: list[Config], cells: dict, log) -> None:
    """Take off what each process executes when no request comes: timers (the script and rules file
    watchers, a second each) run by the clock, and a request takes up to a second of wall time under
    callgrind, so their share would otherwise change with how many processes share the machine."""
    for c in cfgs:
        callgrind.zero(c.proc.pid)  # type: ignore[union-attr]
    start = time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle = [callgrind.dump(c.proc.pid, c.counts) for c in cfgs]  # type: ignore[union-attr,arg-type]
    seconds = time.monotonic() - start
    for c, n in zip(cfgs, idle):
        rate = n / seconds
        log(f"{c.name}: {rate / 1e3:,.0f} k instructions a second when idle")
        for (name, _, _), cell in cells.items():
            if name == c.name:
                cell.instructions -= rate * cell.counted
                cell.idle_rate = rate


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ratio_rows(cfgs: list[Config], cells: dict, args: argparse.Namespace) -> list[dict]:
    rows = []
    for w in args.workloads:
        for s in args.schemes:
            bare = cells[("bare", w, s)]
            b_cpu = bare.cpu / bare.requests
            for c in cfgs:
                cell = cells[(c.name, w, s)]
                cpu = cell.cpu / cell.requests
                spread = [x / y for x, y in zip(cell.per_round, bare.per_round) if y]
                rows.append({
                    "workload": w, "scheme": s, "config": c.name, "label": c.label, "rules": c.rules,
                    "cpu_ms": cpu * 1e3, "cpu_ratio": cpu / b_cpu,
                    "round_min": min(spread) if spread else float("nan"),
                    "round_max": max(spread) if spread else float("nan"),
                    "rps": cell.requests / cell.wall, "rps_ratio": (cell.requests / cell.wall) / (bare.requests / bare.wall),
                    "p50_ms": pct(cell.latencies, .5) * 1e3, "p99_ms": pct(cell.latencies, .99) * 1e3,
                    "p50_ratio": pct(cell.latencies, .5) / pct(bare.latencies, .5),
                    "p99_ratio": pct(cell.latencies, .99) / pct(bare.latencies, .99),
                    "backend_cpu_ms": cell.backend_cpu / cell.requests * 1e3,
                    "redis_cpu_ms": cell.redis_cpu / cell.requests * 1e3,
                    "redis_commands": cell.redis_commands,
                    # mitmdump and its redis-server together, against bare mitmdump
                    "total_cpu_ratio": (cell.cpu + cell.redis_cpu) / cell.requests / b_cpu,
                    "requests": cell.requests, "authed": cell.authed, "errors": cell.errors,
                    "instructions": cell.instructions / cell.requests,
                    "lines_per_request": cell.lines / cell.requests,
                    "idle_instructions_per_second": cell.idle_rate,
                    "instructions_ratio": cell.instructions / cell.requests / (bare.instructions / bare.requests)
                    if bare.instructions else float("nan"),
                })
    return rows


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mitmproxy.version

    load1 = os.getloadavg()
    return [f"- CPU: {cpu}, {os.cpu_count()} cores; load average at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}",
            f"- {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"mitmproxy {mitmproxy.version.VERSION}",
            f"- memory: {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB"]


def fmt(x: float, d: int = 2) -> str:
    return "-" if x != x else f"{x:.{d}f}"


def write_report(args: argparse.Namespace, rows: list[dict], micro_out: dict, started: float, duration: float,
                 chart: str | None) -> str:
    names = {r["config"]: r["label"] for r in rows}
    lines = [
        "# credhop performance",
        "",
        f"Generated by `{args.command}` on {datetime.fromtimestamp(started, timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"in {duration / 60:.1f} minutes. Do not edit: run it again.",
        "",
        *machine(),
        "",
        "## Overhead against bare mitmdump (same run, interleaved)",
        "",
        f"Real mitmdump processes on loopback, one per configuration, all running. Every workload runs against "
        f"all configurations at once, interleaved unit by unit: each client thread sends one unit (a request, a "
        f"redirect and its follow-up, or a hop and its downloads) to every configuration in turn, rotating who "
        f"goes first, so load from other processes falls on all configurations alike. {args.requests} requests "
        f"per configuration, workload and round, {args.threads} client threads with a keep-alive connection to "
        f"each origin through each proxy, {args.rounds} rounds. The figure is the mitmdump process's CPU time "
        "(utime+stime from /proc/PID/stat) per request, as a ratio to bare mitmdump in the same run; in "
        "brackets the lowest and highest ratio of a single round (the noise). "
        "Each workload has its own client address. HTTPS goes through mitmproxy's CA (CONNECT, TLS both "
        "ways). Rule sets of 1,000 and more are a mix of exact hosts, `*.suffix` globs, client CIDRs, path "
        "prefixes and a few irregular globs; the matching rule is the last one.",
        "",
        "Workloads: " + "; ".join(f"**{w}**: {load.WORKLOADS[w]}" for w in args.workloads) + ".",
        "",
    ]
    configs_ = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "bare"]
    lines += ["### CPU per request, ratio to bare mitmdump", "",
              "| workload | scheme | bare mitmdump (ms CPU/request) | " + " | ".join(names[c] for c in configs_) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in configs_) + " |"]
    for w in args.workloads:
        for s in args.schemes:
            by = {r["config"]: r for r in rows if r["workload"] == w and r["scheme"] == s}
            lines.append(f"| {w} | {s} | {fmt(by['bare']['cpu_ms'])} | " + " | ".join(
                f"**x{fmt(by[c]['cpu_ratio'], 3)}** ({fmt(by[c]['round_min'])}-{fmt(by[c]['round_max'])})"
                for c in configs_) + " |")
    if "redis" in configs_ and "shipped" in configs_:
        lines += ["", "### Redis store against the memory store (issue 16)", "",
                  f"**{names['redis']}** is credhop with the shipped rules and `credhop_store=redis://127.0.0.1:PORT/0` "
                  "(with `credhop_store_key` and `credhop_fingerprint_key`, fresh 32-byte keys), on a redis-server "
                  "the benchmark starts on a free loopback port (`--save '' --appendonly no`) and only that mitmdump "
                  f"uses; **{names['shipped']}** is the same with the default memory store, in the same run. Next to "
                  "mitmdump's CPU per request, redis-server's (utime+stime from /proc/PID/stat over the same "
                  "interval, all of it charged to the Redis configuration; that includes its idle housekeeping, "
                  "a few ms a second), and the two together as a ratio to bare mitmdump.", "",
                  "| workload | scheme | bare mitmdump (ms CPU/request) | memory store: mitmdump ms (ratio) | "
                  "Redis store: mitmdump ms (ratio) | redis-server ms CPU/request | Redis store: mitmdump + "
                  "redis-server ms (ratio) | Redis / memory, mitmdump + redis-server |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for w in args.workloads:
            for s in args.schemes:
                by = {r["config"]: r for r in rows if r["workload"] == w and r["scheme"] == s}
                b, m, r = by["bare"], by["shipped"], by["redis"]
                both = r["cpu_ms"] + r["redis_cpu_ms"]
                lines.append(f"| {w} | {s} | {fmt(b['cpu_ms'], 3)} | {fmt(m['cpu_ms'], 3)} (x{fmt(m['cpu_ratio'], 3)}) | "
                             f"{fmt(r['cpu_ms'], 3)} (x{fmt(r['cpu_ratio'], 3)}) | {fmt(r['redis_cpu_ms'], 3)} | "
                             f"{fmt(both, 3)} (**x{fmt(r['total_cpu_ratio'], 3)}**) | "
                             f"x{fmt(both / m['cpu_ms'] if m['cpu_ms'] else float('nan'), 3)} |")
    lines += ["", "### Throughput and latency, ratio to bare mitmdump", "",
              "Requests per second of one client connection (closed loop: 1 / mean latency; higher is better) and "
              "p50/p99 latency of single requests (lower is better), each as credhop's figure divided by bare "
              "mitmdump's. These depend on what else the machine does; the CPU figure above is the stable one.", "",
              "| workload | scheme | configuration | req/s (bare) | req/s ratio | p50 ms (bare) | p50 ratio | p99 ms (bare) | p99 ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for w in args.workloads:
        for s in args.schemes:
            by = {r["config"]: r for r in rows if r["workload"] == w and r["scheme"] == s}
            for c in configs_:
                r, b = by[c], by["bare"]
                lines.append(f"| {w} | {s} | {names[c]} | {b['rps']:.0f} | {fmt(r['rps_ratio'], 3)} | {fmt(b['p50_ms'])} | "
                             f"{fmt(r['p50_ratio'], 3)} | {fmt(b['p99_ms'])} | {fmt(r['p99_ratio'], 3)} |")
    lines += ["", "### Sanity: the backend and the injections", "",
              "The backend (asyncio, one process, serving all configurations; its CPU shared out by requests) is not "
              "the bottleneck: its CPU per request next to mitmdump's. "
              "`authed` counts follow-ups and downloads that reached the index with `Authorization` (credhop "
              "or the floor injected it; bare mitmdump never does).", "",
              "| workload | scheme | configuration | requests | backend ms CPU/request | mitmdump ms CPU/request | redis-server ms CPU/request | authed | errors |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        redis_ms = (f"{fmt(r['redis_cpu_ms'], 3)} ({r['redis_commands'] / r['requests']:.1f} commands/request)"
                    if r["config"] == "redis" else "-")
        lines.append(f"| {r['workload']} | {r['scheme']} | {names[r['config']]} | {r['requests']} | "
                     f"{fmt(r['backend_cpu_ms'], 3)} | {fmt(r['cpu_ms'], 3)} | {redis_ms} | {r['authed']} | {r['errors']} |")
    targets = {"plain": 1.02}
    judged = [c for c in ("shipped", "rules10000", "hoplog") if c in configs_]
    if judged:
        lines += ["", "### Against the targets of issue 14", "",
                  "Plain traffic at most x1.02; redirect-heavy and download-heavy traffic at most x1.05, with the "
                  "shipped rules, 10,000 rules and the hop log on (the worst of HTTP and HTTPS shown).", "",
                  "| workload | target | " + " | ".join(names[c] for c in judged) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in judged) + " |"]
        for w in args.workloads:
            target = targets.get(w, 1.05)
            cells = []
            for c in judged:
                worst = max(r["cpu_ratio"] for r in rows if r["workload"] == w and r["config"] == c)
                cells.append(f"x{worst:.2f} {'met' if worst <= target else 'missed'}")
            lines.append(f"| {w} | x{target:.2f} | " + " | ".join(cells) + " |")
    floors = [c for c in ("floor", "floorlog") if c in configs_]
    if judged and floors:
        lines += ["", "### The floor: what mitmproxy charges any addon for this job", "",
                  "`scripts/bench/floor.py` does the least the job takes, in the same run: it cuts the userinfo out "
                  "of a 3xx's Location, holds it for that client and origin, and adds it as `Authorization` to the "
                  "client's later requests there (no rules, expiry, checks or records); with `floor_log` it also "
                  "writes one info line per credential redirect, as credhop's event log does. A target below the floor cannot "
                  "be met by any mitmproxy addon that does this work; credhop's cost above the floor is what its "
                  "rules, checks and records add (the worst of HTTP and HTTPS shown).", "",
                  "| workload | target | " + " | ".join(names[c] for c in floors) + " | credhop, shipped rules | "
                  "credhop above the floor with the info line |",
                  "| --- | --- | " + " | ".join("---" for _ in floors) + " | --- | --- |"]
        for w in args.workloads:
            worst = {c: max(r["cpu_ratio"] for r in rows if r["workload"] == w and r["config"] == c)
                     for c in [*floors, "shipped"] if c in configs_}
            above = worst["shipped"] - worst.get("floorlog", worst[floors[0]])
            lines.append(f"| {w} | x{targets.get(w, 1.05):.2f} | " + " | ".join(f"x{worst[c]:.2f}" for c in floors)
                         + f" | x{worst['shipped']:.2f} | {above:+.2f} |")
        lines += ["", "Below the noise of CPU time: `make bench-instructions` counts the instructions per request of "
                  "the same configurations under callgrind ([performance-instructions.md](performance-instructions.md)), "
                  "with what any `-s` script and one info line cost on their own."]
    if judged:
        lines += ["", "Where the rest goes: `scripts/bench/hook_cpu.py` loaded after credhop in a running mitmdump "
                  "(thread CPU per call, HTTP, 6,000 requests, one client), 2026-12-02 after the second round of "
                  "issue 14. Under load the same code takes several times what it takes alone, and how many depends "
                  "on the machine's state that hour, so read shares, not microseconds:", "",
                  "- a 302 with userinfo (`responseheaders`): `decide_redirect` about a quarter (reading the "
                  "Location, the rule, the fingerprint, the header rendered); its one info line about 30 % (the "
                  "line scrubbed, then mitmproxy's handlers: LogRecord, the terminal, and the deprecated `add_log` "
                  "event; since then the hop lines skip that event, which under callgrind was 720 k of the 820 k "
                  "instructions a line cost, see performance-instructions.md); the "
                  "3xx rewrite about 7 %; the hop record and its other sinks about 15 %; the grant, the pending "
                  "follow-up and the chain id the rest;",
                  "- its follow-up: `requestheaders` about half of what the 302 costs (the pending follow-up "
                  "found, the header added, the inject record), `response` a fifth (the response record, the "
                  "chain judged);",
                  "- a download: `requestheaders` about twice `response`; each writes one record, and the "
                  "sinks take about a fifth of the two hooks.", "",
                  "No single part left is more than a third of the cost. Turning parts off inside a running "
                  "mitmdump (a profiling aid, not shipped) showed: no records at all (so no info line either) "
                  "took the redirect workload from x1.33 to x1.22 and downloads from x1.16 to x1.13; turning off "
                  "the diagnosis bookkeeping or the flow marks changed nothing measurable, nor did turning off "
                  "the garbage collector in both bare mitmdump and credhop. What is left is the Python of the decision, the "
                  "stores and the flow changes, spread over about a dozen functions per request."]
    if args.compare and args.compare.exists():
        before = {(r["workload"], r["scheme"], r["config"]): r for r in json.loads(args.compare.read_text())["rows"]}
        compared = [c for c in configs_ if any(key[2] == c for key in before)]
        lines += ["", "### Before and after", "",
                  f"CPU ratios of `{args.compare.name}` (credhop before this work, commit b808937, measured with this "
                  "benchmark, `--credhop-src` pointing at that commit's `addons/`) next to this run's.", "",
                  "| workload | scheme | " + " | ".join(f"{names[c]}: before → now" for c in compared) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in compared) + " |"]
        for w in args.workloads:
            for s in args.schemes:
                cells = []
                for c in compared:
                    b, a = before.get((w, s, c)), next((r for r in rows if (r["workload"], r["scheme"], r["config"])
                                                        == (w, s, c)), None)
                    cells.append(f"x{b['cpu_ratio']:.2f} → x{a['cpu_ratio']:.2f}" if b and a else "-")
                lines.append(f"| {w} | {s} | " + " | ".join(cells) + " |")
    if chart:
        lines += ["", f"![CPU overhead against the number of rules]({chart})"]
    rm = micro_out.get("rules")
    if rm:
        lines += ["", "## Micro-benchmarks", "", "### Rule matching (`RuleSet.first_match`, one redirect)", "",
                  "The index looks exact hosts up in a hash and `*.suffix` globs by each suffix of the host; only "
                  "irregular globs, `*` and rules without a host are tried in turn (`scanned`). `linear` is the "
                  "plain scan of every rule, the reference the property test checks the index against.", "",
                  "| rules | scanned | index, matching rule last (µs) | index, no rule matches (µs) | index, `*.suffix` hit (µs) | linear, matching rule last (µs) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rm:
            lines.append(f"| {r['rules']:,} | {r['scanned']} | {fmt(r['index_last_us'])} | {fmt(r['index_miss_us'])} | "
                         f"{fmt(r['index_suffix_us'])} | {fmt(r['linear_last_us'], 1)} |")
    if micro_out.get("hooks"):
        lines += ["", "### Hooks (taddons, tflow flows, the async hooks awaited; shipped rules)", "",
                  "| flow | hop log | µs per flow |", "| --- | --- | --- |"]
        for r in micro_out["hooks"]:
            lines.append(f"| {r['hook']} | {r['config']} | {fmt(r['us'], 1)} |")
    if micro_out.get("stores"):
        lines += ["", "### Stores", "", "| operation | µs |", "| --- | --- |"]
        for r in micro_out["stores"]:
            lines.append(f"| {r['op']} | {fmt(r['us'], 2)} |")
    if micro_out.get("scrubbing"):
        lines += ["", "### Scrubbing what credhop writes (`Redactor`, with credentials remembered)", "",
                  "Every line and record field credhop writes passes the `Redactor`, which masks every spelling of "
                  "every secret it has seen (at most 4,096 spellings). From 32 spellings on, text is first looked "
                  "at in 4-character blocks against the pieces of the secrets, so the cost stays flat.", "",
                  "| credentials remembered | spellings | event line of a credential redirect (µs) | a follow-up URL (µs) |",
                  "| --- | --- | --- | --- |"]
        for r in micro_out["scrubbing"]:
            lines.append(f"| {r['credentials']:,} | {r['forms']:,} | {fmt(r['line_us'], 1)} | {fmt(r['url_us'], 1)} |")
    mem = micro_out.get("memory")
    if mem:
        lines += ["", "### Memory (a fresh process, RSS growth)", "",
                  "| what | figure |", "| --- | --- |",
                  f"| {mem['credentials']:,} held credentials ({max(1, mem['credentials'] // 1000):,} clients, 1,000 "
                  f"each; value, fingerprint and chain id unique to each; 1,000 registries shared by the clients) | "
                  f"**{mem['credentials_rss_mb']:.0f} MB** ({mem['credentials_rss_mb'] * 2**20 / mem['credentials']:.0f} bytes each), "
                  f"{mem['grant_fill_us']:.1f} µs per grant |"]
        worst = micro_out.get("memory_own_origins")
        if worst:
            lines.append(f"| the same, but every grant to an origin of its own (the worst case) | "
                         f"**{worst['credentials_rss_mb']:.0f} MB** "
                         f"({worst['credentials_rss_mb'] * 2**20 / worst['credentials']:.0f} bytes each) |")
        lines += [f"| bound: {mem['extra']:,} more grants into a full store | held {mem['held_after']:,} "
                  f"(was {mem['held']:,}), evicted {mem['evicted']:,}, {mem['evicting_grant_us']:.1f} µs per evicting grant |",
                  f"| {mem['pending']:,} pending follow-ups | **{mem['pending_rss_mb']:.0f} MB** "
                  f"({mem['pending_rss_mb'] * 2**20 / mem['pending']:.0f} bytes each), {mem['expect_fill_us']:.1f} µs per expect |",
                  f"| bound: {mem['pending_extra']:,} more into a full pending table | {mem['pending_after']:,} pending |",
                  "", "How a held credential is kept (`store.MemoryStore`): the parts unique to it (value, fingerprint, "
                  "chain id, expiry, hop) packed in one bytes object under its client and origin; origins and the "
                  "terms grants share (issuer, header, rule, user) once each, counted and dropped with their last "
                  "grant; expiry in one-second buckets. Before issue 14 a `Grant` object, its own `Origin` and "
                  "strings, an ordered-dict entry and an expiry-heap entry took about 690 bytes."]
    lines += ["", "## Reproduce", "", f"```\n{args.command}\n```", ""]
    return "\n".join(lines)


def write_instruction_report(args: argparse.Namespace, rows: list[dict], started: float, duration: float) -> str:
    names = {r["config"]: r["label"] for r in rows}
    configs_ = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "bare"]
    lines = [
        "# credhop performance: instructions per request",
        "",
        f"Generated by `{args.command}` on {datetime.fromtimestamp(started, timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"in {duration / 60:.1f} minutes. Do not edit: run it again. The CPU-time figures are in "
        "[performance.md](performance.md).",
        "",
        *machine(),
        "",
        "Each configuration is a real mitmdump process run under valgrind's callgrind, all of them at once, with "
        "the same interleaved clients as `make bench` (scripts/bench/load.py). After a warm-up the counts are "
        f"zeroed, {args.requests} requests per configuration and workload are sent, and the instructions the "
        "process executed are read back (`callgrind_control`), less what it executes when idle (timers such as "
        f"the file watchers; measured over {IDLE_SECONDS} s at the end, times the seconds counted: under callgrind a "
        "request takes up to a second). The figure is instructions per request as a ratio "
        "to bare mitmdump, with the difference in thousands of instructions. Unlike CPU time it hardly moves "
        "between runs (about 0.1 %), so it shows what a commit changed below the noise of CPU time. It is not "
        "time: cache misses, system calls and the kernel are not in it, and credhop's code costs more time per "
        "instruction than mitmproxy's average under load, so a CPU ratio is larger than the instruction ratio.",
        "",
        "**a script with an addon that has no hooks** (scripts/bench/empty.py) is what mitmproxy charges for "
        "loading any `-s` script: every event of every flow, and the `update` event after each, walks the addon "
        "chain down to the script's addon. **floor** is scripts/bench/floor.py, the least any addon does for "
        "credhop's job (see performance.md).",
        "",
        "Workloads: " + "; ".join(f"**{w}**: {load.WORKLOADS[w]}" for w in args.workloads) + ".",
        "",
        "| workload | scheme | bare mitmdump (instructions/request) | "
        + " | ".join(names[c] for c in configs_) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in configs_) + " |",
    ]
    for w in args.workloads:
        for s in args.schemes:
            by = {r["config"]: r for r in rows if r["workload"] == w and r["scheme"] == s}
            bare = by["bare"]["instructions"]
            lines.append(f"| {w} | {s} | {bare / 1e6:.2f} M | " + " | ".join(
                f"**x{fmt(by[c]['instructions_ratio'], 3)}** ({(by[c]['instructions'] - bare) / 1e3:+,.0f} k)"
                for c in configs_) + " |")
    lines += ["", *_instruction_targets(args, rows), "", *_instruction_findings(args, rows), "", "## Reproduce", "",
              f"```\n{args.command}\n```"]
    return "\n".join(lines) + "\n"


# issue 23's targets: (configuration, workload) -> most instructions per request, as a ratio to bare mitmdump
TARGETS = {
    ("shipped", "plain"): 1.012, ("shipped", "noauth"): 1.015, ("shipped", "download"): 1.02,
    ("shipped", "redirect"): 1.07,
    ("hoplog", "plain"): 1.022, ("hoplog", "noauth"): 1.025, ("hoplog", "download"): 1.03, ("hoplog", "redirect"): 1.08,
    ("redis", "plain"): 1.02, ("redis", "download"): 1.05, ("redis", "redirect"): 1.12,
}
BEFORE = REPO / "docs" / "performance-instructions-before.json"  # issue 23's starting point (05eb45f, HTTP)


def _instruction_targets(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """Each target next to this run and the run before issue 23, met or not."""
    before = {}
    if BEFORE.exists():
        before = {(r["config"], r["workload"], r["scheme"]): r["instructions_ratio"]
                  for r in json.loads(BEFORE.read_text())["rows"]}
    now = {(r["config"], r["workload"], r["scheme"]): r for r in rows}
    out = ["## Targets (issue 23)", "",
           "Instructions per request against bare mitmdump in the same run; **before** is the run of "
           "docs/performance-instructions-before.json (HTTP only). The noauth target also shows the "
           "configuration with `credhop_plain_redirects=count`.", "",
           "| configuration | workload | scheme | target | before | now | met |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (config, workload), target in TARGETS.items():
        for scheme in args.schemes:
            for shown in ([config, "count"] if (config, workload) == ("shipped", "noauth") else [config]):
                row = now.get((shown, workload, scheme))
                if row is None:
                    continue
                ratio = row["instructions_ratio"]
                was = before.get((shown, workload, scheme))
                commands = ""
                if shown == "redis" and row.get("requests"):
                    commands = f", {row.get('redis_commands', 0) / row['requests']:.2f} Redis commands/request"
                out.append(f"| {row['label']} | {workload} | {scheme} | x{target:.3f} | "
                           f"{'x' + fmt(was, 3) if was else '—'} | x{fmt(ratio, 3)}{commands} | "
                           f"{'yes' if ratio <= target else '**no**'} |")
    return out


def _instruction_findings(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """What the table says, worked out from this run's rows (thousands of instructions, first scheme)."""
    per = {(r["config"], r["workload"]): r["instructions"] / 1e3 for r in rows if r["scheme"] == args.schemes[0]}

    def over(config: str, workload: str) -> float | None:  # above bare mitmdump, per request
        if (config, workload) not in per or ("bare", workload) not in per:
            return None
        return per[config, workload] - per["bare", workload]

    out = ["## What it shows", ""]
    if (tax := over("empty", "plain")) is not None:
        out.append(f"- **Any script.** A `-s` script whose addon has no hooks costs {tax:,.0f} k instructions per "
                   "plain request: mitmproxy walks down to its addon for every event of every flow.")
    script, built_in = over("shipped", "download"), over("builtin", "download")
    if script is not None and built_in is not None:
        out.append(f"- **`credhop proxy`** (credhop built in, as `make run` starts it) costs {built_in:,.0f} k per "
                   f"download request, `mitmdump -s addons/credhop.py` {script:,.0f} k.")
    floor, floorlog = over("floor", "redirect"), over("floorlog", "redirect")
    shipped, quiet = over("shipped", "redirect"), over("quiet", "redirect")
    if None not in (floor, floorlog, shipped, quiet):
        pair = 2 * per["bare", "redirect"]  # a redirect and its follow-up; one info line each
        line, credhop_line = 2 * (floorlog - floor), 2 * (shipped - quiet)  # type: ignore[operator]
        out.append(f"- **One info line** costs the floor {line:,.0f} k instructions, {100 * line / pair:.1f} % of what "
                   "bare mitmdump spends on a redirect and its follow-up, most of it in mitmproxy's deprecated "
                   f"`add_log` event; credhop's line, which skips that event, costs {credhop_line:,.0f} k (the line "
                   "made and scrubbed, the terminal).")
        downloads = ""
        dl_floor = over("floor", "download")
        if script is not None and dl_floor is not None:
            downloads = f", {script - dl_floor:+,.0f} k per download request"
        out.append(f"- **Above the floor** with its info line: credhop costs {shipped - floorlog:+,.0f} k per request "  # type: ignore[operator]
                   f"on redirects{downloads}.")
    lines = {(r["config"], r["workload"]): r.get("lines_per_request", 0) for r in rows
             if r["scheme"] == args.schemes[0]}
    out += _dumper_findings(per, lines, over)
    return out


def _dumper_findings(per: dict, lines: dict, over: Callable[[str, str], float | None]) -> list[str]:
    """What scrubbing mitmdump's flow lines costs: credhop's cost over bare at flow_detail 1 and 2, less
    its cost at 0 (no flow lines), per line the dumper added (counted in each process's output)."""
    out = []
    for w in dict.fromkeys(w for _, w in per):
        if None in (over("shipped", w), over("shipped0", w)) or ("bare2", w) not in per:
            continue
        at0 = per["shipped0", w] - per["bare0", w]
        at1 = over("shipped", w) - at0  # type: ignore[operator]
        at2 = per["shipped2", w] - per["bare2", w] - at0
        n1 = lines.get(("shipped", w), 0) - lines.get(("shipped0", w), 0)
        n2 = lines.get(("shipped2", w), 0) - lines.get(("shipped0", w), 0)
        each = f": {at1 / n1:,.1f} k and {at2 / n2:,.1f} k a line" if n1 > 0 and n2 > 0 else ""
        out.append(f"- **mitmdump's flow lines, scrubbed** ({w}): {at1:+,.0f} k instructions per request at "
                   f"flow_detail 1 ({n1:.1f} lines), {at2:+,.0f} k at flow_detail 2 ({n2:.1f} lines){each}, "
                   "credhop's cost over bare mitmdump less its cost at flow_detail 0.")
    return out


def draw_chart(rows: list[dict], micro_rules: list[dict], path: Path, required: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if required:
            raise
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for w in dict.fromkeys(r["workload"] for r in rows):
        for s in dict.fromkeys(r["scheme"] for r in rows):
            pts = sorted((r["rules"], r["cpu_ratio"]) for r in rows if r["workload"] == w and r["scheme"] == s
                         and r["rules"] and r["config"] not in ("hoplog", "quiet", "redis"))
            if pts:
                left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{w} {s}",
                          linestyle="-" if s == "http" else "--")
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.axhline(1.05, color="red", linewidth=0.8, linestyle=":")
    left.set_xscale("log")
    left.set_xlabel("rules (shipped = 2)")
    left.set_ylabel("mitmdump CPU per request / bare mitmdump")
    left.set_title("credhop overhead vs number of rules")
    left.legend(fontsize=7)
    if micro_rules:
        xs = [r["rules"] for r in micro_rules]
        right.plot(xs, [r["index_last_us"] for r in micro_rules], marker="o", label="index, match last")
        right.plot(xs, [r["index_miss_us"] for r in micro_rules], marker="o", label="index, no match")
        right.plot(xs, [r["linear_last_us"] for r in micro_rules], marker="o", label="linear scan, match last")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("rules")
        right.set_ylabel("µs per redirect")
        right.set_title("rule matching")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    p.add_argument("--chart", type=Path, default=None, help="PNG path (default: next to --out)")
    p.add_argument("--requests", type=int, default=800, help="requests per configuration, workload and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rule-sets", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--workloads", nargs="*", default=list(load.WORKLOADS))
    p.add_argument("--schemes", nargs="*", default=["http", "https"])
    p.add_argument("--match-counts", type=int, nargs="*", default=[10, 100, 1000, 10000, 100000])
    p.add_argument("--credentials", type=int, default=1_000_000)
    p.add_argument("--pending", type=int, default=100_000)
    p.add_argument("--micro-budget", type=float, default=0.3, help="seconds per micro-benchmark figure")
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--no-micro", action="store_true")
    p.add_argument("--no-redis", action="store_true", help="leave out the Redis store configuration")
    p.add_argument("--smoke", action="store_true", help="tiny counts, for the test suite")
    p.add_argument("--mitmdump", default=os.environ.get("CREDHOP_MITMDUMP") or str(Path(sys.executable).parent / "mitmdump"))
    p.add_argument("--credhop-src", help="addons/ directory to load credhop from (to measure another version)")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--compare", type=Path, default=REPO / "docs" / "performance-before.json",
                   help="a previous run's JSON, shown as before -> now")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions under callgrind instead (make bench-instructions)")
    p.add_argument("--configs", nargs="*", help="only these configurations (bare is always run)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--instructions", action="store_true")
    if pre.parse_known_args(argv)[0].instructions:  # a slower process: fewer requests, one round, no micro
        p.set_defaults(out=REPO / "docs" / "performance-instructions.md", requests=200, rounds=1, threads=2,
                       rule_sets=[10000], schemes=["http", "https"], no_micro=True, compare=None)
    args = p.parse_args(argv)
    if args.instructions and not callgrind.available():
        p.error("--instructions needs valgrind and callgrind_control (make system-deps installs them)")
    args.command = ("make bench-instructions" if args.instructions else "make bench") \
        if os.environ.get("CREDHOP_BENCH_MAKE") else \
        "python scripts/bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.smoke:
        args.requests, args.rounds, args.threads = 42, 1, 1
        args.rule_sets, args.match_counts = [100], [10, 100]
        args.credentials, args.pending, args.micro_budget = 2000, 500, 0.01
        args.compare = None
        if args.instructions:
            args.requests = 21
    chart = args.chart or args.out.with_name(args.out.stem + "-rules.png")
    started = time.time()

    def log(msg: str) -> None:
        print(f"bench [{time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    rows: list[dict] = []
    micro_out: dict = {}
    with tempfile.TemporaryDirectory(prefix="credhop-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.no_e2e:
            cfgs, cells, _ = e2e(args, workdir, log)
            rows = ratio_rows(cfgs, cells, args)
            log("end-to-end done")
    if args.instructions:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(write_instruction_report(args, rows, started, time.time() - started))
        args.out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=1))
        log(f"wrote {args.out}")
        return 0
    if not args.no_micro:
        micro_out["rules"] = micro.rule_matching(args.match_counts, args.micro_budget)
        log("rule matching done")
        micro_out["hooks"] = micro.hooks(args.micro_budget)
        micro_out["stores"] = micro.stores(args.micro_budget)
        micro_out["scrubbing"] = micro.scrubbing([1, 100, 700, 2000], args.micro_budget)
        log("hooks, stores and scrubbing done")
        mem = subprocess.run([sys.executable, "-m", "scripts.bench.micro", "memory", str(args.credentials),
                              str(args.pending)], cwd=REPO, capture_output=True, text=True, check=True)
        micro_out["memory"] = json.loads(mem.stdout)
        worst = subprocess.run([sys.executable, "-m", "scripts.bench.micro", "memory", str(args.credentials),
                                str(args.pending), "own-origins"], cwd=REPO, capture_output=True, text=True, check=True)
        micro_out["memory_own_origins"] = json.loads(worst.stdout)
        log("memory done")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    has_chart = draw_chart(rows, micro_out.get("rules", []), chart, required=not args.smoke)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = write_report(args, rows, micro_out, started, time.time() - started,
                          os.path.relpath(chart, args.out.parent) if has_chart else None)
    args.out.write_text(report)
    (args.out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "micro": micro_out}, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
