"""`make run`, as the README says: a proxy through which uv 0.5.25 installs from the redirector fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.e2e.harness import REPO, clean_env, free_port, proxy_env, tool
from tests.e2e.test_clients import installed, uv_install
from tests.secrets_check import assert_no_leak


def test_make_run_serves_uv_0_5_25(registry_factory, tmp_path, forms):
    registry = registry_factory("https", 404)
    port = free_port()
    home = tmp_path / "home"
    hoplog = tmp_path / "hops.jsonl"
    env = clean_env(home, PATH=os.environ["PATH"], PYTHONUNBUFFERED="1")  # make needs PATH to find python
    argv = ["make", "--no-print-directory", "run", f"LISTEN_PORT={port}", f"HOPLOG={hoplog}",
            f"ARGS=--set ssl_verify_upstream_trusted_ca={registry.test_ca}"]
    out = (tmp_path / "make-run.out").open("wb")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ca = home / ".mitmproxy" / "mitmproxy-ca-cert.pem"
    output = lambda: (tmp_path / "make-run.out").read_text(errors="replace")  # noqa: E731
    try:
        deadline = time.monotonic() + 180  # the first run may create .venv
        while not ("proxy listening" in output() and ca.exists()):
            assert proc.poll() is None, output()
            assert time.monotonic() < deadline, output()
            time.sleep(0.1)
        assert f"export HTTP_PROXY=http://127.0.0.1:{port}" in output()
        result = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), registry, tmp_path / "client",
                            proxy_env(f"http://127.0.0.1:{port}", ca))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert result.returncode == 0, result.output[-2000:]
    assert installed(tmp_path / "client", registry)
    assert '"action":"inject"' in hoplog.read_text()
    assert_no_leak(output() + hoplog.read_text() + result.output, forms, "make run output, hop log, uv output")


def test_make_run_installs_what_the_proxy_needs_and_nothing_for_the_tests(tmp_path):
    # its own venv, as on a fresh machine: `make run` must not install pytest, hypothesis or playwright.
    # The machine's own pip settings (its package registry), as `make run` gets them
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDHOP_", "VIRTUAL_ENV", "PYTEST"))}
    done = subprocess.run(["make", "--no-print-directory", "run-deps", f"VENV={venv}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    python = str(venv / "bin" / "python")
    for module in ("credhop.addon", "credhop.redis_store", "mitmproxy.tools.dump", "prometheus_client"):
        assert subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0, module
    for module in ("pytest", "hypothesis", "playwright"):
        assert subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode != 0, module
    # and `make run` would go straight to the proxy from there (make -n: what it would run)
    plan = subprocess.run(["make", "--no-print-directory", "-n", "run", f"VENV={venv}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0 and "pip install" not in plan.stdout and "credhop proxy" in plan.stdout, plan.stdout
