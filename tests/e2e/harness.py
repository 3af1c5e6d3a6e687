"""Real processes for end-to-end tests: mitmdump with credhop, and isolated clients."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = REPO / "addons" / "credhop.py"
SHIPPED_RULES = REPO / "addons" / "credhop" / "rules.yaml"


def tool(env_var: str, name: str) -> str:
    """A client binary: from the Makefile's variable, else PATH; skip (an error under CREDHOP_STRICT) if absent."""
    path = os.environ.get(env_var) or shutil.which(name)
    if not path or not Path(path).exists():
        pytest.skip(f"{name} not found (set {env_var} or run `make test`)")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Mitmdump:
    """A real `mitmdump -s addons/credhop.py` process (or bare mitmdump with credhop=False).

    `command` replaces `mitmdump -s …` with a command that has credhop built in, such as an
    installed `credhop proxy`; it then keeps its own default rules unless `rules` is given,
    and runs in `cwd` (default: the checkout).
    """

    def __init__(self, workdir: Path, upstream_ca: Path, credhop: bool = True, options: dict[str, str] | None = None,
                 rules: Path | None = None, command: list[str] | None = None, cwd: Path = REPO) -> None:
        self.workdir = workdir
        self.cwd = cwd
        self.confdir = workdir / "mitmproxy-conf"
        self.hoplog = workdir / "hops.jsonl"
        self.port = free_port()
        self.output_file = workdir / "mitmdump.out"
        argv = [*(command or [tool("CREDHOP_MITMDUMP", "mitmdump")]),
                "--listen-host", "127.0.0.1", "--listen-port", str(self.port),
                "--set", f"confdir={self.confdir}", "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
        if credhop and command is None:
            argv += ["-s", str(ENTRY_SCRIPT), "--set", f"credhop_rules={rules or SHIPPED_RULES}"]
        elif credhop and rules:
            argv += ["--set", f"credhop_rules={rules}"]
        if credhop:
            argv += ["--set", f"credhop_log={self.hoplog}"]
        for key, value in (options or {}).items():
            argv += ["--set", f"{key}={value}"]
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def __enter__(self) -> Mitmdump:
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = self.output_file.open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     env={**clean_env(self.workdir / "mitm-home"), "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited {self.proc.returncode}:\n{self.output}")
            if "proxy listening" in self.output and self.ca_cert.exists():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"mitmdump did not start:\n{self.output}")

    def run_expecting_failure(self, timeout: float = 30) -> int:
        """Start mitmdump for a configuration it must refuse; return its exit status."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.output_file.open("wb") as out:
            proc = subprocess.run(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, timeout=timeout,
                                  env=clean_env(self.workdir / "mitm-home"))
        return proc.returncode

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def output(self) -> str:
        return self.output_file.read_text(errors="replace") if self.output_file.exists() else ""

    def records(self) -> list[dict]:
        import json

        if not self.hoplog.exists():
            return []
        return [json.loads(line) for line in self.hoplog.read_text().splitlines()]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing of this machine's configuration: fresh HOME, no proxies, no pip/uv config."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "NO_COLOR": "1",
    }
    env.update(extra)
    return env


def proxy_env(proxy: str, ca: Path) -> dict[str, str]:
    return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
            "SSL_CERT_FILE": str(ca), "CURL_CA_BUNDLE": str(ca)}


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Result:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout)
    return Result(argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def all_text_under(*roots: Path, exclude: set[Path] = frozenset()) -> str:
    """Every file the run wrote, for secret scanning (binary files decoded leniently)."""
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path not in exclude and not path.is_symlink():
                chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)
