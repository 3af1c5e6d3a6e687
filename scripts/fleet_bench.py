#!/usr/bin/env python3
"""`make fleet-bench`: a fleet of credhop instances behind haproxy under the installs of thousands of
clients, each its own proxy user (`credhop_client_id=proxyauth`). 1 to 4 instances sharing a Redis store
(round-robin) against the same fleets with the memory store, balanced sticky by the client's source
address; throughput, latency, CPU of the instances and of redis-server, Redis memory per held credential
and commands per request, and correctness: every registry request's credential checked against the
token of that client's redirect. Writes docs/fleet-bench.md and docs/fleet-scaling.png.

    .venv/bin/python scripts/fleet_bench.py [--clients 1000 [10000]] [--instances 1 2 3 4] [--quick]
        [--store redis [cluster]] [--concurrency 8] [--set OPTION=VALUE] [--out DIR] [--json FILE]

Exit status 1 when a request got a wrong credential, an install failed for a reason its registry does
not explain, the backend counted other requests than the generator sent, or a process died.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "addons")]

from scripts.fleet import load, topology  # noqa: E402
from scripts.fleet.crosscheck import credhop_report  # noqa: E402
from scripts.fleet.figures import bugs, rows  # noqa: E402
from scripts.fleet.htpasswd_cost import htpasswd_cost  # noqa: E402
from scripts.fleet.population import KINDS, LARGE, population, proxy_password, write_htpasswd  # noqa: E402
from scripts.fleet.report import draw_chart, write_report  # noqa: E402
from scripts.fleet.runner import run_all  # noqa: E402
from tests.e2e.harness import clean_env  # noqa: E402
from tests.fixtures.fleet import _Process  # noqa: E402
from tests.fixtures.pki import make_pki  # noqa: E402

WARM_INSTALLS = 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1000],
                   help="population sizes, each run through every configuration (default: 1000; 10000 runs "
                   "--large-instances only and takes about 20 minutes here)")
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--large-instances", type=int, nargs="+", default=[4],
                   help="instance counts run for populations of more than 2000 clients (the time budget)")
    p.add_argument("--downloading", type=float, default=0.4,
                   help="share of the ok clients whose installs download files; the others find them all "
                   "cached and fetch the index page only (its 302 and follow-up)")
    p.add_argument("--large-downloading", type=float, default=0.02,
                   help="--downloading for populations of more than 2000 clients (the time budget)")
    p.add_argument("--store", nargs="+", choices=("redis", "cluster"), default=["redis"],
                   help="the shared store(s) measured against the memory+sticky baseline")
    p.add_argument("--mix", default="ok=80,denied=10,missing=10",
                   help="weights of the client kinds: " + ", ".join(KINDS))
    p.add_argument("--downloads", type=int, nargs=2, default=[10, 30], metavar=("MIN", "MAX"),
                   help="files an ok client's install downloads after the index page")
    p.add_argument("--file-bytes", type=int, default=4096)
    p.add_argument("--concurrency", type=int, default=8, help="clients installing at once")
    p.add_argument("--rounds", type=int, default=2,
                   help="slices of the population, each run through every configuration in turn")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="a mitmproxy/credhop option for every instance, e.g. credhop_store_timeout=1000")
    p.add_argument("--htpasswd", choices=("sha1", "bcrypt"), default="sha1",
                   help="hash of the proxy users' htpasswd entries (bcrypt: cost 5, as htpasswd -B)")
    p.add_argument("--no-report-check", action="store_true", help="skip `credhop report` over the hop logs")
    p.add_argument("--quick", action="store_true",
                   help="a run of a minute or two: 300 clients, 1 and 2 instances, one round")
    p.add_argument("--out", type=Path, default=REPO / "docs",
                   help="where fleet-bench.md and fleet-scaling.png go (default: docs/)")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--workdir", type=Path, help="keep the processes' files here (default: a temporary dir)")
    args = p.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if os.environ.get("CREDHOP_BENCH_MAKE"):
        args.command = "make fleet-bench" + (f" FLEET_BENCH_ARGS={shlex.quote(shlex.join(given))}"
                                             if given else "")
    else:
        args.command = "python scripts/fleet_bench.py " + shlex.join(given)
    if args.quick:
        args.clients, args.instances, args.rounds = [300], [1, 2], 1
    try:
        args.mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    except ValueError:
        p.error(f"--mix: KIND=WEIGHT,… with kinds {', '.join(KINDS)}")
    if not set(args.mix) <= set(KINDS) or not args.mix.get("ok"):
        p.error(f"--mix: kinds are {', '.join(KINDS)}, and ok needs a weight")
    if any("=" not in o for o in args.set):
        p.error("--set: OPTION=VALUE")
    args.set = dict(o.split("=", 1) for o in args.set)
    if "cluster" in args.store:
        try:
            topology.cluster_fixture()
        except topology.ClusterUnavailable as e:
            p.error(str(e))
    return args


def configs(args: argparse.Namespace, clients: int) -> list[topology.Config]:
    counts = args.instances if clients <= LARGE else [n for n in args.instances if n in args.large_instances]
    return [topology.Config(store, n) for n in counts for store in [*args.store, "memory"]]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()

    def log(msg: str) -> None:
        print(f"fleet-bench [{time.time() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # the seed of every token and proxy password; the environment only (the smoke test sets it to search
    # the outputs for the tokens)
    seed = os.environ.get("CREDHOP_FLEET_SEED") or secrets.token_urlsafe(24)
    os.environ.setdefault("CREDHOP_MITMDUMP", str(REPO / ".venv" / "bin" / "mitmdump"))
    results = []
    with tempfile.TemporaryDirectory(prefix="credhop-fleet-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for size in args.clients:
            results.append(run_population(args, size, seed, workdir / f"clients-{size}", log))
    cost = htpasswd_cost(max(args.clients))
    log("htpasswd cost measured")
    args.out.mkdir(parents=True, exist_ok=True)
    chart = args.out / "fleet-scaling.png"
    drawn = draw_chart(results, chart)
    (args.out / "fleet-bench.md").write_text(write_report(args, results, cost, started, time.time() - started,
                                                         chart.name if drawn else None))
    if args.json:
        args.json.write_text(json.dumps({"populations": results, "htpasswd": cost}, indent=1))
    found = [b for r in results for b in bugs(r)]
    problems = f"; {len(found)} problem(s): " + "; ".join(found) if found else ""
    log(f"wrote {args.out / 'fleet-bench.md'}{problems}")
    return 1 if found else 0


def run_population(args: argparse.Namespace, size: int, seed: str, workdir: Path, log) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    clients = population(size, args.mix, tuple(args.downloads), seed,
                         downloading=args.downloading if size <= LARGE else args.large_downloading)
    warm = population(WARM_INSTALLS, args.mix, tuple(args.downloads), seed, first=size)
    everyone = clients + warm
    passwords = {c.name: proxy_password(seed, c) for c in everyone}
    cfgs = configs(args, size)
    t0 = time.monotonic()
    shared = {"htpasswd": write_htpasswd(workdir / "htpasswd", seed, everyone, args.htpasswd),
              "store_key": _key(workdir / "store.key"), "fingerprint_key": _key(workdir / "fingerprint.key")}
    log(f"{size} clients: htpasswd ({args.htpasswd}) written in {time.monotonic() - t0:.1f} s; "
        f"configurations {', '.join(c.name for c in cfgs)}")
    pki = make_pki(workdir / "pki")
    backend = Backend(seed, len(everyone), args.file_bytes, workdir / "home")
    ports = backend.ports
    with ExitStack() as stack:
        stack.callback(backend._stop)
        origins = load.Origins(ports["redirector"], {k: ports[k] for k in KINDS})
        shared["ca_dir"] = topology.make_ca(workdir, pki.ca_cert)
        fleets = {}
        for c in cfgs:
            t0 = time.monotonic()
            fleets[c.name] = topology.start(c, workdir / c.name, pki.ca_cert, shared, args.set)
            stack.callback(fleets[c.name].close)
            log(f"started {c.name} in {time.monotonic() - t0:.1f} s")
        cells = run_all(fleets, clients, warm, args.rounds, origins, passwords, args.concurrency,
                        backend.proc.pid, ports["stats"], log)  # type: ignore[union-attr]
        hoplogs = {name: [p.hoplog for p in f.proxies] for name, f in fleets.items()}
    outputs = {name: [p.output for p in f.proxies] for name, f in fleets.items()}  # with their shutdown lines
    checks = {}
    if not args.no_report_check:  # a process each, two at a time: one per core
        def check(name: str) -> dict:
            return credhop_report(hoplogs[name], clients, workdir / f"report-{name}")
        with ThreadPoolExecutor(2) as pool:
            checks = dict(zip(hoplogs, pool.map(check, hoplogs)))
    if checks:
        log("credhop report read every configuration's hop logs")
    return {"clients": size, "mix": args.mix, "downloads": args.downloads, "concurrency": args.concurrency,
            "downloading": sum(c.downloads > 0 for c in clients),
            "rounds": args.rounds, "kinds": {k: sum(c.kind == k for c in clients) for k in KINDS},
            "requests_planned": sum(_planned(c) for c in clients),
            "rows": rows(cfgs, cells, fleets, outputs), "report_check": checks}


def _planned(client) -> int:
    return 2 + client.downloads


def _key(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


class Backend(_Process):
    """scripts/fleet/backend.py in its own process (its CPU is measured apart); stopped on exit."""

    def __init__(self, seed: str, clients: int, file_bytes: int, home: Path) -> None:
        env = {**clean_env(home), "CREDHOP_FLEET_SEED": seed, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "scripts.fleet.backend", str(clients), str(file_bytes)]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, env=env)
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        self.ports: dict[str, int] = json.loads(first or "{}")
        if not self.ports:
            self._stop()
            raise RuntimeError("the fleet bench's backend did not start")


if __name__ == "__main__":
    sys.exit(main())
