#!/usr/bin/env python3
"""credhop's benchmark (`make bench`): real mitmdump processes on loopback, credhop against bare mitmdump
in the same run, configurations interleaved in rounds; micro-benchmarks; memory. Writes
docs/performance.md and a chart. `--smoke` runs it with tiny counts (the test suite does that)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "addons")]

from scripts.bench import callgrind, install, load, micro, rulegen  # noqa: E402
from scripts.bench.cpu_report import draw_chart, write_report  # noqa: E402
from scripts.bench.instructions_report import IDLE_SECONDS, write_instruction_report  # noqa: E402
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
    if args.instructions:  # credhop_plain_redirects=record (the default before 'failed'): every plain 3xx recorded
        out.append(Config("record", "credhop, shipped rules, every plain redirect recorded", 2,
                          shipped + ["--set", "credhop_plain_redirects=record"]))
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
        installs: dict = {}
        if args.install_rounds and not args.instructions:
            chosen = [c for c in cfgs if c.name in ("bare", *args.install_configs)]
            installs = install.run(chosen, args.schemes, args.install_rounds, args.uv, sys.executable,
                                   Path(ca), workdir, pki, token, args.install_packages, log)
            installs = {"rows": install.rows(installs, chosen, args.schemes), "packages": args.install_packages}
        for c in cfgs:
            if c.proc and c.proc.poll() is not None:
                raise RuntimeError(f"mitmdump ({c.name}) died during the run")
        if redis and redis.proc and redis.proc.poll() is not None:
            raise RuntimeError("redis-server died during the run")
        return cfgs, cells, installs
    finally:
        for c in cfgs:
            stop(c.proc)
        stop(backend)
        if redis is not None:
            redis.__exit__(None, None, None)


# -- rows --------------------------------------------------------------------------------------------


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
    p.add_argument("--install-rounds", type=int, default=5, help="rounds of the uv install workload (0: none)")
    p.add_argument("--install-packages", type=int, default=30, help="packages a uv install fetches")
    p.add_argument("--install-configs", nargs="*", default=["floor", "shipped", "hoplog", "redis"],
                   help="configurations the uv install workload runs through, besides bare")
    p.add_argument("--uv", default=os.environ.get("CREDHOP_UV_OLD") or str(REPO / ".tools" / "uv-0.5.25" / "bin" / "uv"),
                   help="the uv of the install workload (0.5.25 drops a redirect's userinfo)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--instructions", action="store_true")
    if pre.parse_known_args(argv)[0].instructions:  # a slower process: fewer requests, one round, no micro
        p.set_defaults(out=REPO / "docs" / "performance-instructions.md", requests=200, rounds=1, threads=2,
                       rule_sets=[10000], schemes=["http", "https"], no_micro=True, compare=None)
    args = p.parse_args(argv)
    if args.instructions and not callgrind.available():
        p.error("--instructions needs valgrind and callgrind_control (make system-deps installs them)")
    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--instructions"]
    target = "make bench-instructions" if args.instructions else "make bench"
    args.command = (target + (f" BENCH_ARGS={shlex.quote(shlex.join(given))}" if given else "")) \
        if os.environ.get("CREDHOP_BENCH_MAKE") else \
        "python scripts/bench.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.smoke:
        args.requests, args.rounds, args.threads = 42, 1, 1
        args.install_rounds, args.install_packages = 1, 4
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
    installs: dict = {}
    with tempfile.TemporaryDirectory(prefix="credhop-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.no_e2e:
            cfgs, cells, installs = e2e(args, workdir, log)
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
    report = write_report(args, rows, micro_out, installs, started, time.time() - started,
                          os.path.relpath(chart, args.out.parent) if has_chart else None)
    args.out.write_text(report)
    (args.out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "installs": installs, "micro": micro_out}, indent=1))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
