"""One fixture per ecosystem, each an auth-only origin behind a redirector on another origin.

- ``pypi``: the core's PEP 503 index (``tests.fixtures.registry.AuthIndex``) and ``Redirector``;
- ``npm``: a registry serving a packument whose ``dist.tarball`` goes through the redirector too,
  and the tarball;
- ``git``: a bare repository served by ``git http-backend`` (smart HTTP, protocol v2).

The redirector is ``127.0.0.1:<port>``, the auth-only origin ``127.0.0.2:<port>``; every site gets
fresh ports, so runs in parallel never share an origin. Over HTTPS both serve a leaf certificate
signed by the test CA (``tests.fixtures.pki``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.fixtures.pki import TestPKI
from tests.fixtures.registry import AuthIndex, Redirector
from tests.fixtures.server import AuthOrigin, Request, Response, Server, not_found, redirect
from tests.fixtures.wheel import MODULE_VALUE

_Server = TypeVar("_Server", bound=Server)
USER = "aws"
PACKAGE = "credhop-demo-pkg"
MODULE = "credhop_demo_pkg"
NPM_VERSION = "1.0.0"
GIT_REPO = "credhop-demo.git"
MARKER = MODULE_VALUE  # "installed-through-credhop": in the wheel, the npm package and the git repo


# -- artifacts, built once per matrix run ---------------------------------------------------


@dataclass
class NpmPackage:
    tarball: bytes
    shasum: str
    integrity: str

    @property
    def filename(self) -> str:
        return f"{PACKAGE}-{NPM_VERSION}.tgz"


def build_npm_package() -> NpmPackage:
    files = {
        "package/package.json": json.dumps(
            {
                "name": PACKAGE,
                "version": NPM_VERSION,
                "main": "index.js",
                "description": "Test package for credhop",
                "license": "MIT",
            }
        ).encode(),
        "package/index.js": f'module.exports = "{MARKER}";\n'.encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    return NpmPackage(
        data,
        hashlib.sha1(data).hexdigest(),
        "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
    )


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "credhop",
        "GIT_AUTHOR_EMAIL": "credhop@example.invalid",
        "GIT_COMMITTER_NAME": "credhop",
        "GIT_COMMITTER_EMAIL": "credhop@example.invalid",
        "LANG": "C.UTF-8",
    }


def build_git_root(directory: Path) -> Path:
    """A project root holding the bare repository GIT_REPO, one commit on main with README = MARKER."""
    directory.mkdir(parents=True, exist_ok=True)
    env = git_env(directory)
    work, bare = directory / "work", directory / "root" / GIT_REPO
    bare.parent.mkdir()
    for argv in (["git", "init", "-q", "--bare", str(bare)], ["git", "init", "-q", "-b", "main", str(work)]):
        subprocess.run(argv, check=True, env=env, capture_output=True)
    (work / "README").write_text(MARKER + "\n")
    for argv in (
        ["git", "add", "README"],
        ["git", "commit", "-q", "-m", "credhop demo"],
        ["git", "push", "-q", str(bare), "main"],
    ):
        subprocess.run(argv, check=True, env=env, cwd=work, capture_output=True)
    subprocess.run(
        ["git", "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/main"], check=True, env=env
    )
    return bare.parent


@dataclass
class Artifacts:
    pki: TestPKI
    wheel: Path
    npm: NpmPackage
    git_root: Path


class PathRedirector(Server):
    """Redirects every request below ``prefix`` to the same path and query on ``target``, with userinfo."""

    def __init__(self, prefix: str, tls: ssl.SSLContext | None = None, status: int = 302) -> None:
        super().__init__(tls=tls)
        self.prefix = prefix
        self.status = status
        self.target: AuthOrigin | None = None

    def respond(self, request: Request) -> Response:
        if self.target is None or not request.path.startswith(self.prefix):
            return not_found()
        return redirect(self.target.credentials_url(request.target), self.status)


# -- sites -----------------------------------------------------------------------------------

# Every origin of a matrix run is new to the shared mitmdump: credhop keeps a credential per origin
# for its TTL, and a port the kernel hands out again would meet the previous run's credential there.
_USED_ORIGINS: set[tuple[str, int]] = set()
_USED_LOCK = threading.Lock()


def start_fresh(make: Callable[[], _Server]) -> _Server:
    """``make()`` (a started server) until it listens on a host:port no earlier server here used."""
    rejected: list[_Server] = []
    try:
        for _ in range(100):
            server = make()
            with _USED_LOCK:
                if (server.host, server.port) not in _USED_ORIGINS:
                    _USED_ORIGINS.add((server.host, server.port))
                    return server
            rejected.append(server)  # kept listening until the end, so the kernel hands out another port
        raise RuntimeError("no unused port after 100 tries")
    finally:
        for server in rejected:
            server.stop()


class Site:
    """A redirector plus the auth-only origin it points to; ``index`` is that origin's server."""

    ecosystem = ""

    def __init__(self, scheme: str, unauth: int, token: str, artifacts: Artifacts) -> None:
        self.scheme = scheme
        self.unauth = unauth
        self.token = token
        self.artifacts = artifacts
        self.redirector: Redirector | PathRedirector
        self.index: AuthIndex | AuthOrigin

    def tls(self):
        return self.artifacts.pki.server_context() if self.scheme == "https" else None

    @property
    def ca(self) -> Path | None:
        """What a client must trust to talk to the site directly."""
        return self.artifacts.pki.ca_cert if self.scheme == "https" else None

    @property
    def expected_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{USER}:{self.token}".encode()).decode()

    def stop(self) -> None:
        self.redirector.stop()
        self.index.stop()


class PypiSite(Site):
    ecosystem = "pypi"

    def __init__(self, scheme: str, unauth: int, token: str, artifacts: Artifacts) -> None:
        super().__init__(scheme, unauth, token, artifacts)
        self.index = start_fresh(
            lambda: AuthIndex(
                USER,
                token,
                artifacts.wheel,
                unauth_status=unauth,
                host="127.0.0.2",
                tls=self.tls(),
                prefix="/pypi/python",
            ).start()
        )
        self.redirector = start_fresh(
            lambda: Redirector(target=self.index.credentials_url("/simple/"), tls=self.tls()).start()
        )

    @property
    def simple_url(self) -> str:
        return self.redirector.simple_url

    @property
    def project_url(self) -> str:
        """The project page, through the redirector."""
        return f"{self.redirector.simple_url}{PACKAGE}/"

    @property
    def wheel_url(self) -> str:
        """The wheel, through the redirector."""
        return f"{self.redirector.url}/files/{self.index.wheel.name}"


class NpmSite(Site):
    ecosystem = "npm"

    def __init__(self, scheme: str, unauth: int, token: str, artifacts: Artifacts) -> None:
        super().__init__(scheme, unauth, token, artifacts)
        self.index = start_fresh(
            lambda: AuthOrigin(USER, token, self._app, unauth_status=unauth, tls=self.tls()).start()
        )
        self.redirector = start_fresh(lambda: PathRedirector("/npm/", tls=self.tls()).start())
        self.redirector.target = self.index

    @property
    def registry_url(self) -> str:
        return f"{self.redirector.url}/npm/"

    @property
    def packument_url(self) -> str:
        return f"{self.registry_url}{PACKAGE}"

    @property
    def tarball_url(self) -> str:
        """As the packument gives it: through the redirector."""
        return f"{self.redirector.url}/npm/{PACKAGE}/-/{self.artifacts.npm.filename}"

    def _app(self, request: Request) -> Response:
        npm = self.artifacts.npm
        if request.method not in ("GET", "HEAD"):
            return Response(405, [("Allow", "GET, HEAD")])
        if request.path == f"/npm/{PACKAGE}":
            version = {
                "name": PACKAGE,
                "version": NPM_VERSION,
                "main": "index.js",
                "dist": {"tarball": self.tarball_url, "shasum": npm.shasum, "integrity": npm.integrity},
            }
            doc = {
                "_id": PACKAGE,
                "name": PACKAGE,
                "dist-tags": {"latest": NPM_VERSION},
                "versions": {NPM_VERSION: version},
                "modified": "2024-01-01T00:00:00.000Z",
            }
            return Response(200, [("Content-Type", "application/json")], json.dumps(doc).encode())
        if request.path == f"/npm/{PACKAGE}/-/{npm.filename}":
            return Response(200, [("Content-Type", "application/octet-stream")], npm.tarball)
        return Response(404, [("Content-Type", "application/json")], b'{"error":"not found"}')


class GitSite(Site):
    ecosystem = "git"

    def __init__(self, scheme: str, unauth: int, token: str, artifacts: Artifacts) -> None:
        super().__init__(scheme, unauth, token, artifacts)
        self.index = start_fresh(
            lambda: AuthOrigin(USER, token, self._app, unauth_status=unauth, tls=self.tls()).start()
        )
        self.redirector = start_fresh(lambda: PathRedirector("/git/", tls=self.tls()).start())
        self.redirector.target = self.index

    @property
    def clone_url(self) -> str:
        return f"{self.redirector.url}/git/{GIT_REPO}"

    def _app(self, request: Request) -> Response:
        """Run ``git http-backend`` as a CGI script."""
        if not request.path.startswith("/git/"):
            return Response(404)
        root = self.artifacts.git_root
        env = {
            **git_env(root),
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path[len("/git") :],
            "QUERY_STRING": request.query,
            "CONTENT_TYPE": request.first_header("content-type") or "",
            "CONTENT_LENGTH": str(len(request.body)),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": USER,
        }
        if request.header("content-encoding"):
            env["HTTP_CONTENT_ENCODING"] = request.first_header("content-encoding") or ""
        if request.header("git-protocol"):
            env["GIT_PROTOCOL"] = request.first_header("git-protocol") or ""
        proc = subprocess.run(
            ["git", "http-backend"], input=request.body, env=env, capture_output=True, timeout=60
        )
        head, _, body = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, body = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name.strip(), value.strip()))
        if proc.returncode and status == 200:
            status = 500
        return Response(status, headers, body)


SITES: dict[str, type[Site]] = {"pypi": PypiSite, "npm": NpmSite, "git": GitSite}
