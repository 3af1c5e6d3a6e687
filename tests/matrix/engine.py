"""Runs the client matrix: every client, direct and through credhop, over HTTP and HTTPS, with a 401
and a 404 auth-only origin, and records what happened.

One mitmdump with credhop per scheme is shared by all runs of that scheme; every run has its own
fixture servers (ports never used before in the process, own token), so no two runs share an origin
or a secret, and credhop state from one run cannot reach another. The
result is plain data (``MatrixResult.to_json``): no secret in it, only whether one was seen where.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import secrets
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.e2e.harness import Mitmdump
from tests.fixtures.pki import make_pki
from tests.fixtures.wheel import build_wheel
from tests.secrets_check import Secret, leaks, secret_forms

from .clients import BY_NAME, CLIENTS, SITES_BY_ECOSYSTEM, Client, Proxy, version_of
from .sites import USER, Artifacts, Site, build_git_root, build_npm_package

SCHEMES = ("http", "https")
UNAUTH = (401, 404)
VIAS = ("direct", "credhop")
RULE = "matrix-fixture"
RULES_YAML = f"""\
# The client matrix: inject the Location's credentials for the fixtures' auth-only origin.
rules:
  - name: {RULE}
    match: {{host: 127.0.0.2}}
    action: inject
    on_leak: strip
"""
SLOW_FIRST = ("poetry", "pdm", "npm", "pip-bundled", "pip")  # started first: shorter wall time


def new_token() -> Secret:
    # fresh per run, with every character that needs percent-encoding in userinfo
    return Secret(f"tk:{secrets.token_urlsafe(12)}@/%x")


# -- what a run records ----------------------------------------------------------------------


@dataclass
class Seen:
    """One request as an origin received it, without the secret."""

    method: str
    path: str
    status: int | None
    auth: str  # none | correct | wrong | N headers
    secret_elsewhere: list[
        str
    ]  # header names (or "path") holding a secret form, the correct Authorization aside


@dataclass
class Run:
    client: str
    scheme: str
    unauth: int
    via: str
    ok: bool = False
    returncode: int | None = None
    seconds: float = 0.0
    message: str = ""  # what the user saw on failure: a short, scrubbed excerpt
    token_in_output: bool = False
    token_shown_as: str = ""  # the first output line holding the token, scrubbed: where the client shows it
    token_in_files: list[str] = field(default_factory=list)  # files the client wrote holding a secret form
    redirector: list[Seen] = field(default_factory=list)
    index: list[Seen] = field(default_factory=list)
    hops: list[dict] = field(default_factory=list)  # credhop's hop-log records for this run's origins
    origins: dict[str, str] = field(default_factory=dict)  # redirector / index origin (ports of this run)
    error: str = ""  # the matrix itself failed to run this case

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.client, self.scheme, self.unauth, self.via)


@dataclass
class MatrixResult:
    generated: str
    environment: dict[str, str]
    clients: dict[str, dict]
    runs: list[Run]
    proxy_secret_leaks: dict[str, int]  # scheme -> secret forms found in mitmdump's output and hop log
    seconds: float

    def run(self, client: str, scheme: str, unauth: int, via: str) -> Run | None:
        return next((r for r in self.runs if r.key == (client, scheme, unauth, via)), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> MatrixResult:
        data = json.loads(text)
        runs = []
        for r in data.pop("runs"):
            r["redirector"] = [Seen(**s) for s in r["redirector"]]
            r["index"] = [Seen(**s) for s in r["index"]]
            runs.append(Run(**r))
        return cls(runs=runs, **data)


# -- summarising what happened ----------------------------------------------------------------


def seen(requests, forms, expected: str | None) -> list[Seen]:
    out = []
    for r in list(requests):
        values = r.header("authorization")
        if not values:
            auth = "none"
        elif len(values) > 1:
            auth = f"{len(values)} headers"
        else:
            auth = "correct" if expected is not None and values[0] == expected else "wrong"
        elsewhere = []
        for name, vals in r.headers.items():
            if name == "authorization" and auth == "correct":
                continue
            if any(leaks(v, forms) for v in vals):
                elsewhere.append(name)
        path = r.target  # path and query, as sent
        if leaks(path, forms):
            elsewhere.append("path")
            path = "<path with the token>"
        out.append(Seen(r.method, path, r.status or None, auth, elsewhere))
    return out


_MESSAGE_PATTERNS = [
    r"\[cause\]: .*",  # node: the reason under "TypeError: fetch failed"
    r"^[A-Za-z_][\w.]*(Error|Exception)\b[^:]*: .*",  # a traceback's last line
    r"hint: .*",
    r"[Bb]ecause .*",
    r"^(ERROR|Error|error|fatal|FATAL|npm error)\b.*",
    r".*(No matching distribution|from versions|not found|Not Found|401|403|404|Unauthorized|unauthorized"
    r"|password|credentials|authentication|Authentication|could not read|failed|Failed).*",
]
_NOISE = re.compile(
    r"^\s*(\d+%|\[\s*<=>|Resolving|Connecting|Length:|Saving to|--\d\d:\d\d|HTTP request sent"
    r"|Using (CPython|Python)|Creating virtualenv|Installing dependencies|Updating dependencies"
    r"|Resolving dependencies|Writing lock|Package operations|npm warn|INFO:|at |\^|Node\.js v"
    r"|npm error A complete log|Error\.captureStackTrace|node:internal|Traceback \(most recent"
    r"|File \"|ERROR: Exception:$|For more information check:"
    r"|npm error (If you were|404 Note that|404 tarball|404$)"
    r"|\s*$)"
)
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
_WGET_PROGRESS = re.compile(r"^--\d{4}-\d\d-\d\d \d\d:\d\d:\d\d--")


def scrub(text: str, run: Run, forms, workdir: Path, proxy_url: str | None) -> str:
    """No secret (any form becomes ***), no run-specific path or port."""
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, "***")
    text = text.replace(str(workdir), "<run>")
    for name, origin in run.origins.items():
        text = text.replace(origin.split("://", 1)[1], f"<{name}>")
    if proxy_url:
        text = text.replace(proxy_url.split("://", 1)[1], "<proxy>")
    return text


def _unwrap(lines: list[str]) -> list[str]:
    """Join the lines a client wrapped at 80 columns (an indented line continuing a sentence)."""
    out: list[str] = []
    for line in lines:
        if (
            out
            and line[:1].isspace()
            and out[-1].strip()
            and out[-1].rstrip()[-1].isalnum()
            and not line.strip().startswith(("File ", "at ", "╰", "×", "hint:", "npm ", "["))
        ):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
    return out


def excerpt(output: str, limit: int = 320) -> str:
    """The lines a user would read as the reason (errors, hints), not progress, in their order."""
    lines = [_TIMESTAMP.sub("", line.rstrip()) for line in _unwrap(output.splitlines())]
    lines = [
        line for line in lines if line.strip() and not _NOISE.match(line) and not _WGET_PROGRESS.match(line)
    ]
    lines = [line.replace("╰─▶ ", "").replace("× ", "") for line in lines]
    picked: dict[int, str] = {}
    for pattern in _MESSAGE_PATTERNS:
        rx = re.compile(pattern)
        for i, line in enumerate(lines):
            if rx.search(line) and i not in picked and line.strip() not in picked.values():
                picked[i] = line.strip()
                break
        if len(picked) >= 3:
            break
    if not picked:
        picked = {i: line.strip() for i, line in list(enumerate(lines))[-2:]}
    text = " | ".join(picked[i] for i in sorted(picked))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- running -----------------------------------------------------------------------------------


class Matrix:
    def __init__(self, workroot: Path, clients: list[Client] | None = None, jobs: int | None = None) -> None:
        self.workroot = workroot
        self.clients = clients or CLIENTS
        self.jobs = jobs or int(os.environ.get("CREDHOP_MATRIX_JOBS") or max(3, 2 * (os.cpu_count() or 2)))
        self.forms: set[str] = set()  # every secret form of every run's token
        self.proxy_texts: dict[str, str] = {}  # scheme -> mitmdump's output and hop log, after the run
        self._forms_lock = threading.Lock()

    def _artifacts(self) -> Artifacts:
        root = self.workroot / "artifacts"
        return Artifacts(
            make_pki(root / "pki"),
            build_wheel(root / "wheel"),
            build_npm_package(),
            build_git_root(root / "git"),
        )

    def run(self) -> MatrixResult:
        started = time.monotonic()
        beside = (
            Path(sys.executable).parent / "mitmdump"
        )  # this interpreter's mitmdump, unless told otherwise
        if not os.environ.get("CREDHOP_MITMDUMP") and beside.exists():
            os.environ["CREDHOP_MITMDUMP"] = str(beside)
        self.workroot.mkdir(parents=True, exist_ok=True)
        artifacts = self._artifacts()
        rules = self.workroot / "rules.yaml"
        rules.write_text(RULES_YAML)
        clients_info = {}
        runnable = []
        for c in self.clients:
            missing = c.missing()
            clients_info[c.name] = {
                "label": c.label,
                "kind": c.kind,
                "ecosystem": c.ecosystem,
                "works_alone": c.works_alone,
                "missing": missing,
                "version": None if missing else c.version(),
            }
            if not missing:
                runnable.append(c)
        order = sorted(
            runnable,
            key=lambda c: (c.name not in SLOW_FIRST, SLOW_FIRST.index(c.name) if c.name in SLOW_FIRST else 0),
        )
        cases = [
            (c, scheme, unauth, via) for c in order for via in VIAS for scheme in SCHEMES for unauth in UNAUTH
        ]
        proxies: dict[str, Mitmdump] = {}
        try:
            for scheme in SCHEMES:  # one mitmdump per scheme, shared by every run of it
                proxies[scheme] = Mitmdump(
                    self.workroot / f"mitmdump-{scheme}", artifacts.pki.ca_cert, rules=rules
                )
                proxies[scheme].__enter__()
            with ThreadPoolExecutor(self.jobs) as pool:
                runs = list(pool.map(lambda case: self._run_case(artifacts, proxies, *case), cases))
            time.sleep(0.5)  # the hop log is written as responses pass; let the last lines land
        finally:
            for p in proxies.values():
                p.__exit__(None, None, None)
        leaks_by_scheme = {}
        for scheme, proxy in proxies.items():
            records = proxy.records()
            for r in runs:
                if r.scheme == scheme and r.via == "credhop":
                    r.hops = _hops_for(records, r)
            # everything credhop and mitmproxy wrote, shutdown lines included
            self.proxy_texts[scheme] = proxy.output + (
                proxy.hoplog.read_text() if proxy.hoplog.exists() else ""
            )
            leaks_by_scheme[scheme] = len(leaks(self.proxy_texts[scheme], self.forms))
        return MatrixResult(
            generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            environment=environment(),
            clients=clients_info,
            runs=runs,
            proxy_secret_leaks=leaks_by_scheme,
            seconds=round(time.monotonic() - started, 1),
        )

    def _run_case(
        self,
        artifacts: Artifacts,
        proxies: dict[str, Mitmdump],
        client: Client,
        scheme: str,
        unauth: int,
        via: str,
    ) -> Run:
        run = Run(client.name, scheme, unauth, via)
        token = new_token()
        forms = secret_forms(token, user=USER)
        with self._forms_lock:
            self.forms |= forms
        workdir = self.workroot / "runs" / f"{client.name}-{scheme}-{unauth}-{via}"
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        site: Site | None = None
        mitm = proxies[scheme] if via == "credhop" else None
        try:
            site = SITES_BY_ECOSYSTEM[client.ecosystem](scheme, unauth, token, artifacts)
            run.origins = {"redirector": site.redirector.url, "index": site.index.url}
            t0 = time.monotonic()
            result = client.run(site, workdir, Proxy(mitm.url, mitm.ca_cert) if mitm else None)
            run.seconds = round(time.monotonic() - t0, 1)
            run.returncode = result.returncode
            run.ok = result.returncode == 0 and client.succeeded(site, workdir)
            run.token_in_output = bool(leaks(result.output, forms))
            if run.token_in_output:
                line = next(line for line in result.output.splitlines() if leaks(line, forms))
                shown = scrub(
                    _TIMESTAMP.sub("", line.strip()), run, forms, workdir, mitm.url if mitm else None
                )
                run.token_shown_as = shown if len(shown) <= 160 else shown[:159] + "…"
            run.token_in_files = files_with_secret(workdir, forms)
            if not run.ok:
                run.message = scrub(
                    excerpt(scrub(result.output, run, forms, workdir, mitm.url if mitm else None)),
                    run,
                    forms,
                    workdir,
                    mitm.url if mitm else None,
                )
                (workdir / "client-output.txt").write_text(
                    scrub(result.output, run, forms, workdir, mitm.url if mitm else None)
                )
            run.redirector = seen(site.redirector.requests, forms, None)
            run.index = seen(site.index.requests, forms, site.expected_authorization)
        except Exception as exc:  # the matrix failed, not the client: shown as such
            run.error = f"{type(exc).__name__}: {scrub(str(exc), run, forms, workdir, None)}"
        finally:
            if site is not None:
                site.stop()
        return run


def files_with_secret(root: Path, forms) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != "client-output.txt":
            if leaks(path.read_bytes().decode("latin-1"), forms):
                found.append(str(path.relative_to(root)))
    return found


def _hops_for(records: list[dict], run: Run) -> list[dict]:
    origins = tuple(o + "/" for o in run.origins.values())
    keep = (
        "event",
        "hop",
        "method",
        "url",
        "status",
        "location",
        "target",
        "action",
        "rule",
        "reason",
        "user",
        "header",
        "kind",
        "came_from",
        "sent",
    )
    out = []
    for rec in records:
        if str(rec.get("url", "")).startswith(origins):
            item = {k: rec[k] for k in keep if k in rec}
            for k in ("url", "location", "target", "came_from"):
                if isinstance(item.get(k), str):
                    for name, origin in run.origins.items():
                        item[k] = item[k].replace(origin.split("://", 1)[1], f"<{name}>")
            if item.get("sent"):
                item["sent"] = [{k: v for k, v in s.items() if k != "fingerprint"} for s in item["sent"]]
            out.append(item)
    return out


def environment() -> dict[str, str]:
    import mitmproxy.version

    credhop_version = "?"
    try:
        import importlib.metadata

        credhop_version = importlib.metadata.version("credhop")
    except Exception:
        pass
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else ""
    return {
        "credhop": credhop_version,
        "mitmproxy": mitmproxy.version.VERSION,
        "python": platform.python_version(),
        "node": version_of(["node", "--version"], lambda s: s.strip().lstrip("v")),
        "os": f"{platform.system()} {platform.machine()}" + (f", Debian {debian}" if debian else ""),
    }


def select(names: list[str] | None) -> list[Client]:
    return [BY_NAME[n] for n in names] if names else list(CLIENTS)
