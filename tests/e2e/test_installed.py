"""An installed credhop, as `pip install credhop` leaves it: a wheel in a fresh virtualenv, no checkout.

Its `credhop proxy`, started from an empty directory with a fresh HOME and no rules option, must
find its packaged rules and make uv 0.5.25 install from the redirector fixture. Installing the wheel's
dependencies (mitmproxy …) is the one step that leaves loopback: pip fetches them from PyPI, through
the invoking user's pip cache (CREDHOP_PIP_CACHE, default ~/.cache/pip) so a warm run takes seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Mitmdump, Result, all_text_under, clean_env, proxy_env, run, tool
from tests.e2e.test_clients import expected_authorization, installed, uv_install
from tests.secrets_check import assert_no_leak

log = logging.getLogger(__name__)

PIP_CACHE = Path(os.environ.get("CREDHOP_PIP_CACHE") or Path.home() / ".cache" / "pip")


def _checked(result: Result, what: str) -> Result:
    assert result.returncode == 0, f"{what} failed:\n{result.output[-3000:]}"
    return result


def build_wheel(tmp: Path) -> Path:
    """The wheel pip builds from the project's files, copied out so the build writes nothing into the checkout."""
    source = tmp / "source"
    shutil.copytree(REPO / "addons", source / "addons", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    env = clean_env(tmp / "build-home", PIP_CACHE_DIR=str(PIP_CACHE))
    _checked(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "--no-input",
                  "-w", str(tmp / "dist"), str(source)], env, tmp, timeout=300), "pip wheel")
    (wheel,) = (tmp / "dist").glob("credhop-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed_credhop(tmp_path_factory) -> Path:
    """A fresh virtualenv (not the checkout's, no system site-packages) holding only the wheel and its dependencies."""
    tmp = tmp_path_factory.mktemp("installed")
    started = time.monotonic()
    wheel = build_wheel(tmp)
    assert "credhop/rules.yaml" in zipfile.ZipFile(wheel).namelist()
    venv = tmp / "venv"
    env = clean_env(tmp / "pip-home", PIP_CACHE_DIR=str(PIP_CACHE))
    _checked(run([sys.executable, "-m", "venv", str(venv)], env, tmp), "venv")
    _checked(run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                  str(wheel)], env, tmp, timeout=600), "pip install of the wheel")
    log.info("wheel built and installed into a fresh venv in %.1f s", time.monotonic() - started)
    return venv


def _uv_through(registry, tmp_path: Path, command: list[str]) -> tuple[Mitmdump, Result]:
    """uv 0.5.25 installs from `registry` through the proxy `command` starts in an empty directory."""
    empty = tmp_path / "cwd"
    empty.mkdir()
    with Mitmdump(tmp_path / "proxy", registry.test_ca, command=command, cwd=empty) as proxy:
        result = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), registry, tmp_path / "client",
                            proxy_env(proxy.url, proxy.ca_cert))
    assert result.returncode == 0, result.output[-2000:]
    assert installed(tmp_path / "client", registry)
    return proxy, result


def test_installed_credhop_proxy_serves_uv_0_5_25(installed_credhop, registry_factory, tmp_path, token, forms):
    venv = installed_credhop
    where = run([str(venv / "bin" / "python"), "-c", "import credhop, mitmproxy; print(credhop.__file__)"],
                clean_env(tmp_path / "home"), tmp_path)
    package = Path(_checked(where, "import credhop").stdout.strip()).parent
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO)  # nothing from the checkout

    registry = registry_factory("https", 404)
    proxy, result = _uv_through(registry, tmp_path, [str(venv / "bin" / "credhop"), "proxy"])
    # the packaged rules were found and used: no --set credhop_rules was given
    assert f"from {package / 'rules.yaml'}" in proxy.output
    index_requests = registry.index.requests
    assert any(r.path.endswith(registry.index.wheel.name) for r in index_requests)
    assert all(r.header("authorization") == [expected_authorization(token)] for r in index_requests)
    assert any(r["event"] == "inject" and r["rule"] == "default" for r in proxy.records())
    # the hop's info line reached the terminal: it skips only mitmproxy's deprecated add_log event
    assert any(" redirect: " in line and "action=inject credential user=aws" in line
               for line in proxy.output.splitlines()), proxy.output[-2000:]
    assert_no_leak(proxy.output, forms, "credhop proxy output")
    assert_no_leak(proxy.hoplog.read_text() + result.output, forms, "hop log, uv output")
    assert_no_leak(all_text_under(tmp_path), forms, "files the run wrote (hop log, caches, target)")


def test_installed_credhop_proxy_refuses_a_bad_option(installed_credhop, tmp_path):
    proxy = subprocess.run([str(installed_credhop / "bin" / "credhop"), "proxy", "--listen-host", "127.0.0.1",
                            "--listen-port", "0", "--set", f"confdir={tmp_path / 'conf'}", "--set", "credhop_ttl=abc"],
                           cwd=tmp_path, env=clean_env(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert proxy.returncode == 1
    assert len(proxy.stderr.splitlines()) == 1 and "credhop_ttl" in proxy.stderr, proxy.stderr
    assert "listening" not in proxy.stdout + proxy.stderr


def test_installed_entry_script_loads_into_mitmdump_and_serves_uv_0_5_25(installed_credhop, registry_factory,
                                                                         tmp_path, forms):
    # mitmdump -s …/site-packages/credhop/addon.py failed with "No module named '__mitmproxy_script__'":
    # the installed package's entry script is what `credhop script` prints
    venv = installed_credhop
    script = Path(_checked(run([str(venv / "bin" / "credhop"), "script"], clean_env(tmp_path / "home"), tmp_path),
                           "credhop script").stdout.strip())
    assert script.is_relative_to(venv) and script.name == "script.py"
    registry = registry_factory("https", 404)
    proxy, result = _uv_through(registry, tmp_path, [str(venv / "bin" / "mitmdump"), "-s", str(script)])
    assert f"from {script.parent / 'rules.yaml'}" in proxy.output
    assert any(r["event"] == "inject" for r in proxy.records())
    assert_no_leak(proxy.output, forms, "mitmdump -s output")
