"""Every client of the matrix: where it is installed, its version, how it runs, what success is.

Each run gets an environment built from scratch (``client_env``): a fresh HOME, no configuration
file of any tool, caches inside the run's own directory, no proxy unless given, the CA to trust only
as given. Clients come from ``scripts/clients/install.sh`` (``.venvs/clients/<name>``) and Debian.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.harness import REPO, Result, clean_env

from .sites import MARKER, MODULE, PACKAGE, SITES, GitSite, NpmSite, PypiSite, Site

CLIENTS_DIR = Path(os.environ.get("CREDHOP_CLIENTS_DIR") or REPO / ".venvs" / "clients")
RUNNERS = Path(__file__).resolve().parent / "runners"
TIMEOUT = float(os.environ.get("CREDHOP_MATRIX_CLIENT_TIMEOUT", "240"))


class Proxy:
    """What a client needs to know about the proxy: its URL and the CA to trust."""

    def __init__(self, url: str, ca: Path) -> None:
        self.url, self.ca = url, ca


def client_env(workdir: Path, path: list[Path | str] = (), **extra: str) -> dict[str, str]:
    home = workdir / "home"
    env = clean_env(home)
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    env["PATH"] = os.pathsep.join([*map(str, path), "/usr/local/bin", "/usr/bin", "/bin"])
    env["TMPDIR"] = str(workdir / "tmp")
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = TIMEOUT) -> Result:
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            argv, env=env, cwd=cwd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        err = (exc.stderr or b"").decode(
            errors="replace"
        ) + f"\n[credhop matrix: timed out after {timeout:.0f} s]"
        return Result(argv, -9, out, err)
    return Result(
        argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def combine(*results: Result) -> Result:
    """Several commands as one run: the first failure's status, everything they printed."""
    status = next((r.returncode for r in results if r.returncode), 0)
    return Result(
        [a for r in results for a in r.argv],
        status,
        "".join(r.stdout for r in results),
        "".join(r.stderr for r in results),
    )


def version_of(argv: list[str], pick: Callable[[str], str] = lambda s: s.split()[1]) -> str:
    try:
        with tempfile.TemporaryDirectory(prefix="credhop-matrix-version-") as home:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean_env(Path(home)))
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip()
    try:
        return pick(text)
    except Exception:
        return text.splitlines()[0] if text else "?"


@dataclass
class Client:
    name: str
    label: str  # as in the table
    kind: str
    ecosystem: str  # pypi | npm | git
    runner: Callable[[Client, Site, Path, Proxy | None], Result]
    check: Callable[[Client, Site, Path], bool]
    files: list[str]  # what must exist for the client to be installed (relative to CLIENTS_DIR, or absolute)
    get_version: Callable[[Client], str]
    works_alone: bool = False  # said to work without credhop: must get exactly one correct header through it
    venv: str | None = None  # directory under CLIENTS_DIR, when not the client's name
    _version: str | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return CLIENTS_DIR / (self.venv or self.name)

    def path(self, relative: str) -> Path:
        return CLIENTS_DIR / relative if not relative.startswith("/") else Path(relative)

    def missing(self) -> str | None:
        for f in self.files:
            p = self.path(f) if "/" in f else Path(shutil.which(f) or f"/nonexistent/{f}")
            if not p.exists():
                return f"{self.label}: {p} not found (run scripts/clients/install.sh)"
        return None

    def version(self) -> str:
        if self._version is None:
            self._version = self.get_version(self)
        return self._version

    def run(self, site: Site, workdir: Path, proxy: Proxy | None) -> Result:
        return self.runner(self, site, workdir, proxy)

    def succeeded(self, site: Site, workdir: Path) -> bool:
        try:
            return self.check(self, site, workdir)
        except OSError:
            return False


def _ca(site: Site, proxy: Proxy | None) -> Path | None:
    return proxy.ca if proxy else site.ca


def _proxy_vars(proxy: Proxy | None) -> dict[str, str]:
    if not proxy:
        return {}
    return {
        "HTTP_PROXY": proxy.url,
        "HTTPS_PROXY": proxy.url,
        "http_proxy": proxy.url,
        "https_proxy": proxy.url,
    }


# -- Python installers -----------------------------------------------------------------------


def pip_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    argv = [
        str(c.home / "bin/python"),
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--target",
        str(wd / "target"),
        "--index-url",
        site.simple_url,
    ]
    if c.name.endswith("--no-input"):
        argv.append("--no-input")
    if proxy:
        argv += ["--proxy", proxy.url]
    if _ca(site, proxy):
        argv += ["--cert", str(_ca(site, proxy))]
    return run(argv + [PACKAGE], client_env(wd), wd)


def uv_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    ca = _ca(site, proxy)
    env = client_env(wd, **_proxy_vars(proxy), **({"SSL_CERT_FILE": str(ca)} if ca else {}))
    return run(
        [
            str(c.home / "bin/uv"),
            "pip",
            "install",
            "--no-config",
            "--cache-dir",
            str(wd / "uv-cache"),
            "--target",
            str(wd / "target"),
            "--python",
            str(c.home / "bin/python"),
            "--index-url",
            site.simple_url,
            PACKAGE,
        ],
        env,
        wd,
    )


def target_has_module(c: Client, site: Site, wd: Path) -> bool:
    init = wd / "target" / MODULE / "__init__.py"
    return init.exists() and MARKER in init.read_text()


def project_venv_has_module(c: Client, site: Site, wd: Path) -> bool:
    return any(
        MARKER in p.read_text()
        for p in (wd / "project" / ".venv").glob(f"lib/python*/site-packages/{MODULE}/__init__.py")
    )


PYPROJECT = """\
[project]
name = "matrix-probe"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["{package}"]
"""


def poetry_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    project = wd / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        PYPROJECT.format(package=PACKAGE)
        + f"""
[tool.poetry]
package-mode = false

[[tool.poetry.source]]
name = "fixture"
url = "{site.simple_url}"
priority = "primary"
"""
    )
    ca = _ca(site, proxy)
    env = client_env(
        wd,
        **_proxy_vars(proxy),
        **({"REQUESTS_CA_BUNDLE": str(ca)} if ca else {}),
        POETRY_VIRTUALENVS_IN_PROJECT="true",
        POETRY_CACHE_DIR=str(wd / "poetry-cache"),
        POETRY_NO_INTERACTION="1",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    return run([str(c.home / "bin/poetry"), "install", "--no-interaction"], env, project)


def pdm_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    project = wd / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text(
        PYPROJECT.format(package=PACKAGE)
        + f"""
[tool.pdm]
distribution = false

[[tool.pdm.source]]
name = "pypi"
url = "{site.simple_url}"
verify_ssl = true
"""
    )
    ca = _ca(site, proxy)
    # no PDM_PYTHON: pdm then creates the project's own .venv (given its own venv's python, pdm installs
    # into pdm's venv; given a base interpreter, it falls back to __pypackages__)
    env = client_env(
        wd,
        **_proxy_vars(proxy),
        **({"SSL_CERT_FILE": str(ca)} if ca else {}),
        PDM_CACHE_DIR=str(wd / "pdm-cache"),
        PDM_CHECK_UPDATE="false",
        PDM_NON_INTERACTIVE="1",
        PDM_VENV_IN_PROJECT="true",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    return run([str(c.home / "bin/pdm"), "install"], env, project)


# -- Python libraries ------------------------------------------------------------------------


def library_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    argv = [
        str(c.home / "bin/python"),
        "-I",
        str(RUNNERS / "pylib.py"),
        c.name,
        site.project_url,
        site.wheel_url,
        str(wd / "target" / site.index.wheel.name),
    ]
    (wd / "target").mkdir(parents=True, exist_ok=True)
    if proxy:
        argv += ["--proxy", proxy.url]
    if _ca(site, proxy):
        argv += ["--ca", str(_ca(site, proxy))]
    return run(argv, client_env(wd), wd)


def wheel_downloaded(c: Client, site: PypiSite, wd: Path) -> bool:
    path = wd / "target" / site.index.wheel.name
    return path.exists() and path.read_bytes() == site.index.wheel_bytes


# -- command line ------------------------------------------------------------------------------


def _page_then_wheel(argv: list[str], output_flag: str, site: PypiSite, wd: Path) -> Result:
    """A downloader fetches the project page, then the wheel, both through the redirector."""
    (wd / "target").mkdir(parents=True, exist_ok=True)
    env = client_env(wd)
    page = run(argv + [output_flag, str(wd / "target/page.html"), site.project_url], env, wd)
    if page.returncode:
        return page
    wheel = run(argv + [output_flag, str(wd / "target" / site.index.wheel.name), site.wheel_url], env, wd)
    return combine(page, wheel)


def curl_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    argv = [
        "curl",
        "-q",
        "-sS",
        "--fail",
        "-L",
        *(["--location-trusted"] if c.name == "curl-trusted" else []),
    ]
    if proxy:
        argv += ["--proxy", proxy.url]
    if _ca(site, proxy):
        argv += ["--cacert", str(_ca(site, proxy))]
    return _page_then_wheel(argv, "-o", site, wd)


def wget_run(c: Client, site: PypiSite, wd: Path, proxy: Proxy | None) -> Result:
    argv = ["wget", "--no-config", "--tries=1", "--timeout=60"]
    if proxy:
        argv += ["-e", "use_proxy=on", "-e", f"http_proxy={proxy.url}", "-e", f"https_proxy={proxy.url}"]
    if _ca(site, proxy):
        argv += [f"--ca-certificate={_ca(site, proxy)}"]
    return _page_then_wheel(argv, "-O", site, wd)


def git_run(c: Client, site: GitSite, wd: Path, proxy: Proxy | None) -> Result:
    ca = _ca(site, proxy)
    env = client_env(
        wd,
        **_proxy_vars(proxy),
        **({"GIT_SSL_CAINFO": str(ca)} if ca else {}),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return run(["git", "clone", site.clone_url, str(wd / "clone")], env, wd)


def git_cloned(c: Client, site: GitSite, wd: Path) -> bool:
    readme = wd / "clone" / "README"
    return readme.exists() and MARKER in readme.read_text()


# -- JavaScript --------------------------------------------------------------------------------


def npm_run(c: Client, site: NpmSite, wd: Path, proxy: Proxy | None) -> Result:
    project = wd / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "package.json").write_text('{"name": "matrix-probe", "version": "0.1.0", "private": true}\n')
    argv = [
        "node",
        str(c.home / "node_modules/npm/bin/npm-cli.js"),
        "install",
        "--no-audit",
        "--no-fund",
        "--no-update-notifier",
        "--registry",
        site.registry_url,
        "--cache",
        str(wd / "npm-cache"),
    ]
    if proxy:
        argv += ["--proxy", proxy.url, "--https-proxy", proxy.url]
    if _ca(site, proxy):
        argv += ["--cafile", str(_ca(site, proxy))]
    home = wd / "home"
    env = client_env(
        wd, npm_config_userconfig=str(home / ".npmrc"), npm_config_globalconfig=str(home / "npmrc")
    )
    return run(argv + [PACKAGE], env, project)


def npm_installed(c: Client, site: NpmSite, wd: Path) -> bool:
    index = wd / "project" / "node_modules" / PACKAGE / "index.js"
    return index.exists() and MARKER in index.read_text()


def fetch_run(c: Client, site: NpmSite, wd: Path, proxy: Proxy | None) -> Result:
    ca = _ca(site, proxy)
    env = client_env(
        wd,
        CREDHOP_UNDICI=str(CLIENTS_DIR / "undici" / "node_modules"),
        **({"CREDHOP_FETCH_PROXY": proxy.url} if proxy else {}),
        **({"NODE_EXTRA_CA_CERTS": str(ca)} if ca else {}),
    )
    (wd / "target").mkdir(parents=True, exist_ok=True)
    return run(
        ["node", str(RUNNERS / "fetch.mjs"), site.packument_url, str(wd / "target" / "package.tgz")], env, wd
    )


def tarball_downloaded(c: Client, site: NpmSite, wd: Path) -> bool:
    path = wd / "target" / "package.tgz"
    return path.exists() and path.read_bytes() == site.artifacts.npm.tarball


# -- versions ------------------------------------------------------------------------------------


def _py(c: Client, code: str) -> str:
    return version_of([str(c.home / "bin/python"), "-I", "-c", code], lambda s: s.strip())


def _pkg_version(dist: str) -> Callable[[Client], str]:
    return lambda c: _py(c, f"import importlib.metadata as m; print(m.version({dist!r}))")


def _node_version() -> str:
    return version_of(["node", "--version"], lambda s: s.strip().lstrip("v"))


CLIENTS: list[Client] = [
    Client(
        "pip-bundled",
        "pip (bundled with the venv)",
        "Python installer",
        "pypi",
        pip_run,
        target_has_module,
        ["pip-bundled/bin/python"],
        lambda c: _py(c, "import pip; print(pip.__version__)"),
    ),
    Client(
        "pip",
        "pip (newest)",
        "Python installer",
        "pypi",
        pip_run,
        target_has_module,
        ["pip/bin/python"],
        lambda c: _py(c, "import pip; print(pip.__version__)"),
    ),
    Client(
        "pip--no-input",
        "pip (newest) --no-input",
        "Python installer",
        "pypi",
        pip_run,
        target_has_module,
        ["pip/bin/python"],
        lambda c: _py(c, "import pip; print(pip.__version__)"),
        venv="pip",
    ),
    Client(
        "uv-0.5.25",
        "uv 0.5.25",
        "Python installer",
        "pypi",
        uv_run,
        target_has_module,
        ["uv-0.5.25/bin/uv"],
        lambda c: version_of([str(c.home / "bin/uv"), "--version"]),
    ),
    Client(
        "uv-0.7.15",
        "uv 0.7.15",
        "Python installer",
        "pypi",
        uv_run,
        target_has_module,
        ["uv-0.7.15/bin/uv"],
        lambda c: version_of([str(c.home / "bin/uv"), "--version"]),
    ),
    Client(
        "uv",
        "uv (newest)",
        "Python installer",
        "pypi",
        uv_run,
        target_has_module,
        ["uv/bin/uv"],
        lambda c: version_of([str(c.home / "bin/uv"), "--version"]),
        works_alone=True,
    ),
    Client(
        "poetry",
        "poetry",
        "Python installer",
        "pypi",
        poetry_run,
        project_venv_has_module,
        ["poetry/bin/poetry"],
        _pkg_version("poetry"),
    ),
    Client(
        "pdm",
        "pdm (hishel<2)",
        "Python installer",
        "pypi",
        pdm_run,
        project_venv_has_module,
        ["pdm/bin/pdm"],
        lambda c: _pkg_version("pdm")(c) + " / hishel " + _pkg_version("hishel")(c),
    ),
    Client(
        "requests",
        "requests",
        "Python library",
        "pypi",
        library_run,
        wheel_downloaded,
        ["requests/bin/python"],
        _pkg_version("requests"),
    ),
    Client(
        "httpx",
        "httpx",
        "Python library",
        "pypi",
        library_run,
        wheel_downloaded,
        ["httpx/bin/python"],
        _pkg_version("httpx"),
    ),
    Client(
        "urllib3",
        "urllib3 (ProxyManager)",
        "Python library",
        "pypi",
        library_run,
        wheel_downloaded,
        ["urllib3/bin/python"],
        _pkg_version("urllib3"),
    ),
    Client(
        "urllib",
        "urllib.request (stdlib)",
        "Python library",
        "pypi",
        library_run,
        wheel_downloaded,
        ["urllib/bin/python"],
        lambda c: "Python " + _py(c, "import platform; print(platform.python_version())"),
    ),
    Client(
        "aiohttp",
        "aiohttp",
        "Python library",
        "pypi",
        library_run,
        wheel_downloaded,
        ["aiohttp/bin/python"],
        _pkg_version("aiohttp"),
        works_alone=True,
    ),
    Client(
        "curl",
        "curl -L",
        "command line",
        "pypi",
        curl_run,
        wheel_downloaded,
        ["curl"],
        lambda c: version_of(["curl", "--version"]),
    ),
    Client(
        "curl-trusted",
        "curl -L --location-trusted",
        "command line",
        "pypi",
        curl_run,
        wheel_downloaded,
        ["curl"],
        lambda c: version_of(["curl", "--version"]),
        works_alone=True,
    ),
    Client(
        "wget",
        "wget",
        "command line",
        "pypi",
        wget_run,
        wheel_downloaded,
        ["wget"],
        lambda c: version_of(["wget", "--version"], lambda s: s.split()[2]),
    ),
    Client(
        "git",
        "git clone (smart HTTP)",
        "command line",
        "git",
        git_run,
        git_cloned,
        ["git"],
        lambda c: version_of(["git", "--version"], lambda s: s.split()[2]),
    ),
    Client(
        "npm",
        "npm (newest for this node)",
        "JavaScript",
        "npm",
        npm_run,
        npm_installed,
        ["node", "npm/node_modules/npm/bin/npm-cli.js"],
        lambda c: (
            version_of(
                ["node", str(c.home / "node_modules/npm/bin/npm-cli.js"), "--version"], lambda s: s.strip()
            )
            + f" (node {_node_version()})"
        ),
    ),
    Client(
        "node-fetch",
        "node fetch + undici ProxyAgent",
        "JavaScript",
        "npm",
        fetch_run,
        tarball_downloaded,
        ["node", "undici/node_modules/undici/package.json"],
        lambda c: (
            f"node {_node_version()} (fetch: undici "
            + version_of(["node", "-p", "process.versions.undici"], lambda s: s.strip())
            + "; ProxyAgent: undici "
            + version_of(
                [
                    "node",
                    "-p",
                    f"require({str(CLIENTS_DIR / 'undici/node_modules/undici/package.json')!r}).version",
                ],
                lambda s: s.strip(),
            )
            + ")"
        ),
    ),
]
BY_NAME = {c.name: c for c in CLIENTS}
SITES_BY_ECOSYSTEM = SITES
__all__ = ["BY_NAME", "CLIENTS", "SITES_BY_ECOSYSTEM", "Client", "Proxy"]
