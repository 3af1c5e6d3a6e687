"""Real clients through a real mitmdump running credhop, against the redirector + auth-only index.

The redirector answers `302 Location: scheme://aws:TOKEN@127.0.0.2:PORT/pypi/python/simple/pkg/`
(TOKEN holds `:`, `@`, `/`, `%`); the index answers 401 or 404 without the right Basic credentials.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import Mitmdump, all_text_under, clean_env, proxy_env, run, tool
from tests.secrets_check import assert_no_leak

PACKAGE = "credhop-demo-pkg"
MODULE = "credhop_demo_pkg"


def uv_install(uv: str, registry, workdir: Path, env_extra: dict[str, str]):
    env = clean_env(workdir / "home", **env_extra)
    return run([uv, "pip", "install", "-v", "--no-config", "--cache-dir", str(workdir / "uv-cache"),
                "--target", str(workdir / "target"), "--python", sys.executable,
                "--index-url", registry.simple_url, PACKAGE], env, workdir)


def pip_install(registry, workdir: Path, proxy: Mitmdump | None):
    argv = [sys.executable, "-m", "pip", "install", "-v", "--isolated", "--no-cache-dir", "--no-input",
            "--disable-pip-version-check", "--target", str(workdir / "target"), "--index-url", registry.simple_url]
    if proxy:
        argv += ["--proxy", proxy.url, "--cert", str(proxy.ca_cert)]
    elif registry.ca:
        argv += ["--cert", str(registry.ca)]
    return run(argv + [PACKAGE], clean_env(workdir / "home"), workdir)


def curl_fetch(registry, workdir: Path, proxy: Mitmdump | None, *flags: str):
    argv = [tool("CREDHOP_CURL", "curl"), "-sS", "-v", "--fail", "-L", *flags, "-o", str(workdir / "target" / "page.html")]
    if proxy:
        argv += ["--proxy", proxy.url, "--cacert", str(proxy.ca_cert)]
    elif registry.ca:
        argv += ["--cacert", str(registry.ca)]
    (workdir / "target").mkdir(parents=True, exist_ok=True)
    page = run(argv + [f"{registry.simple_url}{PACKAGE}/"], clean_env(workdir / "home"), workdir)
    if page.returncode:
        return page
    wheel_url = registry.redirector.url + "/files/" + registry.index.wheel.name
    argv[argv.index("-o") + 1] = str(workdir / "target" / registry.index.wheel.name)
    wheel = run(argv + [wheel_url], clean_env(workdir / "home"), workdir)
    wheel.stdout, wheel.stderr = page.stdout + wheel.stdout, page.stderr + wheel.stderr
    return wheel


def installed(workdir: Path, registry) -> bool:
    init = workdir / "target" / MODULE / "__init__.py"
    fetched = workdir / "target" / registry.index.wheel.name
    if fetched.exists():
        return fetched.read_bytes() == registry.index.wheel_bytes
    return init.exists() and "installed-through-credhop" in init.read_text()


def expected_authorization(token: str) -> str:
    return "Basic " + base64.b64encode(f"aws:{token}".encode()).decode()


CLIENTS = {
    "uv-0.5.25": lambda reg, wd, px: uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), reg, wd,
                                                proxy_env(px.url, px.ca_cert) if px else _direct_tls(reg)),
    "uv": lambda reg, wd, px: uv_install(tool("CREDHOP_UV", "uv"), reg, wd,
                                         proxy_env(px.url, px.ca_cert) if px else _direct_tls(reg)),
    "pip": pip_install,
    "curl": lambda reg, wd, px: curl_fetch(reg, wd, px),
}


def _direct_tls(registry) -> dict[str, str]:
    return {"SSL_CERT_FILE": str(registry.ca)} if registry.ca else {}


@pytest.mark.parametrize(
    ("client", "scheme", "unauth"),
    [("uv-0.5.25", "http", 401), ("uv-0.5.25", "https", 401), ("uv-0.5.25", "http", 404), ("uv-0.5.25", "https", 404),
     ("uv", "https", 404), ("uv", "http", 404), ("pip", "https", 404), ("pip", "http", 404),
     ("curl", "https", 404), ("curl", "http", 401)],
)
def test_client_installs_through_credhop(client, scheme, unauth, registry_factory, tmp_path, token, forms):
    registry = registry_factory(scheme, unauth)
    with Mitmdump(tmp_path / "proxy", registry.test_ca) as proxy:
        result = CLIENTS[client](registry, tmp_path / "client", proxy)
    assert result.returncode == 0, _tail(result.output)
    assert installed(tmp_path / "client", registry)

    # the index got the credential on every request, exactly once, and nothing else
    index_requests = registry.index.requests
    assert any(r.path.endswith(f"/simple/{PACKAGE}/") for r in index_requests)
    assert any(r.path.endswith(registry.index.wheel.name) and r.method == "GET" for r in index_requests)
    for request in index_requests:
        assert request.header("authorization") == [expected_authorization(token)], request.path
    # the redirector never did
    assert registry.redirector.requests
    assert all(not r.header("authorization") for r in registry.redirector.requests)

    # the hop log tells the story
    records = proxy.records()
    redirects = [r for r in records if r["event"] == "redirect" and r.get("fingerprint")]
    injects = [r for r in records if r["event"] == "inject"]
    assert redirects and all(r["action"] == "inject" and r["rule"] == "default" and r["user"] == "aws" for r in redirects)
    assert {r["target"] for r in redirects} == {registry.index.origin}
    assert injects and all(r["url"].startswith(registry.index.origin + "/") for r in injects)
    assert {r["chain"] for r in injects} <= {r["chain"] for r in redirects}

    # and no secret anywhere but in the header the index received
    assert_no_leak(result.output, forms, f"{client} output")
    assert_no_leak(proxy.output, forms, "mitmdump output")
    assert_no_leak(all_text_under(tmp_path), forms, "files the run wrote (hop log, caches, target)")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("unauth", [401, 404])
def test_uv_0_5_25_fails_without_credhop(scheme, unauth, registry_factory, tmp_path, forms):
    registry = registry_factory(scheme, unauth)
    result = CLIENTS["uv-0.5.25"](registry, tmp_path, None)
    assert result.returncode != 0
    assert "credhop-demo-pkg" in result.output and ("not found" in result.output or "401" in result.output)
    # it followed the redirect but dropped the userinfo
    assert registry.index.requests
    assert all(not r.header("authorization") for r in registry.index.requests)


def test_pip_fails_without_credhop_when_the_index_answers_404(registry_factory, tmp_path):
    registry = registry_factory("https", 404)
    result = pip_install(registry, tmp_path, None)
    assert result.returncode != 0 and "from versions: none" in result.output
    assert all(not r.header("authorization") for r in registry.index.requests)


def test_curl_location_drops_credentials_on_host_change(registry_factory, tmp_path):
    registry = registry_factory("https", 401)
    result = curl_fetch(registry, tmp_path, None)
    assert result.returncode != 0 and "401" in result.output
    assert all(not r.header("authorization") for r in registry.index.requests)
