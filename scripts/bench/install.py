"""make bench's realistic workload: a real `uv pip install` (uv 0.5.25, which drops a redirect's
userinfo) of one package that needs 29 others, from the redirector fixture, through each mitmdump.

Per scheme, two sites from the same catalog (tests/fixtures/catalog.py): for bare mitmdump a
redirector that sends no userinfo to an open index, so bare works; for every other configuration a
redirector whose Location carries the index's credentials, which only credhop or the floor can make
work. Every install is one redirect per project page, its follow-up, the wheel's PEP 658 metadata and
the wheel from the index: 4 requests a package. Installs run one at a time, configurations in a rotating order in each
round, and a configuration's CPU is its process's over its own installs, less its idle rate.
"""

from __future__ import annotations

import glob
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import clean_env, proxy_env
from tests.fixtures.catalog import CatalogApp, build_catalog, package_name
from tests.fixtures.registry import Redirector
from tests.fixtures.server import AuthOrigin, Server

USER = "aws"
SETTLE = 0.3  # after uv exits: mitmdump closes its connections


def cpu_seconds(pid: int) -> float:
    """The CPU time of a process's live threads, to the microsecond (``/proc/PID/stat`` counts 10 ms
    ticks: 4 % of an install). mitmproxy's threads live as long as it does."""
    total = 0.0
    for path in glob.glob(f"/proc/{pid}/task/*/sched"):
        try:
            with open(path) as f:
                total += next(float(line.split(":")[1]) for line in f if line.startswith("se.sum_exec_runtime"))
        except (OSError, StopIteration):  # a thread that just ended
            pass
    return total / 1e3


@dataclass
class Site:
    scheme: str
    index: Server
    redirector: Redirector

    @property
    def index_url(self) -> str:
        return self.redirector.simple_url


@dataclass
class InstallCell:
    cpu: float = 0.0
    wall: float = 0.0
    installs: int = 0
    requests: int = 0  # requests the index and the redirector answered
    refused: int = 0  # answered 401 by the index
    per_install: list[float] = field(default_factory=list)


@contextmanager
def sites(workdir: Path, pki, token: str, schemes: list[str], count: int) -> Iterator[dict[tuple[str, bool], Site]]:
    """(scheme, with credentials) -> a started site; all stopped on exit."""
    packages = build_catalog(workdir / "catalog", count)
    app = CatalogApp(packages)
    started: list[Server] = []
    out: dict[tuple[str, bool], Site] = {}
    try:
        for scheme in schemes:
            for authed in (False, True):
                tls = pki.server_context() if scheme == "https" else None
                index = (AuthOrigin(USER, token, app, host="127.0.0.2", tls=tls) if authed
                         else Server(app, host="127.0.0.2", tls=tls)).start()
                started.append(index)
                target = (index.credentials_url("/simple/") if authed else f"{index.url}/simple/")
                redirector = Redirector(target, tls=tls).start()
                started.append(redirector)
                out[(scheme, authed)] = Site(scheme, index, redirector)
        yield out
    finally:
        for server in started:
            server.stop()


def install(uv: str, python: str, port: int, site: Site, ca: Path, workdir: Path) -> float:
    """One fresh install (empty cache and target) through the proxy on ``port``; its wall time."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="install-") as tmp:
        home = Path(tmp)
        env = clean_env(home / "home", **proxy_env(f"http://127.0.0.1:{port}", ca))
        argv = [uv, "pip", "install", "--no-config", "--cache-dir", str(home / "cache"), "--target",
                str(home / "target"), "--python", python, "--index-url", site.index_url, package_name(0)]
        start = time.monotonic()
        proc = subprocess.run(argv, env=env, cwd=home, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"uv pip install through port {port} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        missing = [p for p in range(len(site.index.app.projects))  # type: ignore[union-attr]
                   if not (home / "target" / package_name(p).replace("-", "_") / "data.bin").exists()]
        if missing:
            raise RuntimeError(f"uv pip install through port {port}: packages {missing} not installed")
        return wall


def run(cfgs: list, schemes: list[str], rounds: int, uv: str, python: str, ca: Path, workdir: Path, pki,
        token: str, count: int, log) -> dict[tuple[str, str], InstallCell]:
    """(config name, scheme) -> its cells, over ``rounds`` rounds of one install per config and scheme."""
    cells: dict[tuple[str, str], InstallCell] = {}
    with sites(workdir, pki, token, schemes, count) as site_of:
        idle = idle_rates(cfgs)
        for scheme in schemes:  # warm-up: certificates made, uv's and credhop's code paths run once
            for c in cfgs:
                install(uv, python, c.port, site_of[(scheme, c.name != "bare")], ca, workdir)
        for r in range(rounds):
            order = cfgs[r % len(cfgs):] + cfgs[:r % len(cfgs)]
            for scheme in schemes:
                for c in order:
                    site = site_of[(scheme, c.name != "bare")]
                    seen = len(site.index.requests) + len(site.redirector.requests)
                    refused = sum(q.status == 401 for q in site.index.requests)
                    start, cpu0 = time.monotonic(), cpu_seconds(c.proc.pid)
                    wall = install(uv, python, c.port, site, ca, workdir)
                    time.sleep(SETTLE)
                    cpu = cpu_seconds(c.proc.pid) - cpu0 - idle[c.name] * (time.monotonic() - start)
                    cell = cells.setdefault((c.name, scheme), InstallCell())
                    cell.cpu += cpu
                    cell.wall += wall
                    cell.installs += 1
                    cell.per_install.append(cpu)
                    cell.requests += len(site.index.requests) + len(site.redirector.requests) - seen
                    cell.refused += sum(q.status == 401 for q in site.index.requests) - refused
            log(f"install round {r + 1}/{rounds} done")
    return cells


def idle_rates(cfgs: list, seconds: float = 2.0) -> dict[str, float]:
    """CPU seconds a second each process spends with no request (its timers)."""
    before = {c.name: cpu_seconds(c.proc.pid) for c in cfgs}
    time.sleep(seconds)
    return {c.name: (cpu_seconds(c.proc.pid) - before[c.name]) / seconds for c in cfgs}


def rows(cells: dict[tuple[str, str], InstallCell], cfgs: list, schemes: list[str]) -> list[dict]:
    out = []
    for scheme in schemes:
        bare = cells[("bare", scheme)]
        per_bare = bare.cpu / bare.installs
        for c in cfgs:
            cell = cells[(c.name, scheme)]
            spread = [x / y for x, y in zip(cell.per_install, bare.per_install) if y > 0]
            out.append({
                "scheme": scheme, "config": c.name, "label": c.label, "installs": cell.installs,
                "cpu_ms": cell.cpu / cell.installs * 1e3, "cpu_ratio": cell.cpu / cell.installs / per_bare,
                "round_min": min(spread, default=float("nan")), "round_max": max(spread, default=float("nan")),
                "wall_s": cell.wall / cell.installs, "requests_per_install": cell.requests / cell.installs,
                "refused": cell.refused,
            })
    return out
