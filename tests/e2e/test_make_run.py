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
