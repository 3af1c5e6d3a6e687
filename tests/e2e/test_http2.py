"""HTTP/2 on both sides: h2 clients (curl --http2, uv 0.5.25) -> mitmdump with credhop -> nginx speaking h2.

nginx (Debian's 1.22, our own process and config) plays both servers, over TLS with ALPN h2:

- the redirector on 127.0.0.1: `/simple/...` answers `302 Location: https://aws:TOKEN@127.0.0.2:PORT/simple/...`,
  `/chatty/` the same with a body that repeats the Location many times, and `/blocked/` points at
  127.0.0.3, for which the rules say `block`;
- the index on 127.0.0.2: static `simple/<pkg>/index.html` and the wheel behind `auth_basic`, so it
  answers 200 only with the right Authorization (its access log shows the user, never the header).

mitmproxy offers the server what the client offered, so an h2 client gives h2 on both sides; nginx's
access log (`$server_protocol`, `$http2`) and curl's `%{http_version}` say so. mitmproxy lowercases a
header name with capitals on an h2 request and logs "Lowercased ... header": credhop's injected header
must not cause that.
"""

from __future__ import annotations

import hashlib
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Mitmdump, clean_env, free_port, proxy_env, run, tool
from tests.fixtures.nginx import Nginx, find_nginx, htpasswd_line
from tests.secrets_check import assert_no_leak

USER = "aws"
PACKAGE = "credhop-demo-pkg"
MODULE = "credhop_demo_pkg"
CHATTY_REPEATS = 400  # ~60 kB: several h2 DATA frames, so a Location can be split across chunks

RULES = """\
rules:
  - name: no-tokens-for-127-0-0-3
    match: {host: 127.0.0.3}
    action: block
  - name: default
    action: inject
    on_leak: strip
"""


@dataclass
class H2Servers:
    nginx: Nginx
    redirector: str  # https://127.0.0.1:PORT
    index: str  # https://127.0.0.2:PORT
    index_port: int
    wheel: Path

    def lines_since(self, mark: int, server: str) -> list[str]:
        """Access-log lines written after `mark` by `server` (the redirector's or the index's base URL)."""
        addr = server.removeprefix("https://")
        return [line for line in self.nginx.access_lines()[mark:] if line.startswith(addr + " ")]


def nginx_binary() -> str:
    path = find_nginx()
    if not path:  # an error under CREDHOP_STRICT=1 (tests/conftest.py)
        pytest.skip("nginx not found (set CREDHOP_NGINX or run `make tools`, which installs Debian's nginx)")
    return path


@pytest.fixture(scope="session")
def h2_servers(tmp_path_factory, pki, token, wheel):
    binary = nginx_binary()
    prefix = tmp_path_factory.mktemp("nginx")
    redirector_port, index_port = free_port("127.0.0.1"), free_port("127.0.0.2")
    userinfo = f"{USER}:{urllib.parse.quote(token, safe='')}@"
    index_base = f"https://{userinfo}127.0.0.2:{index_port}"
    location = f"{index_base}/simple/{PACKAGE}/"

    www = prefix / "www"
    pkg_dir = www / "index" / "simple" / PACKAGE
    pkg_dir.mkdir(parents=True)
    (www / "index" / "files").mkdir()
    (www / "index" / "files" / wheel.name).write_bytes(wheel.read_bytes())
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (pkg_dir / "index.html").write_text(
        f'<!DOCTYPE html>\n<html><body><a href="/files/{wheel.name}#sha256={sha}">{wheel.name}</a></body></html>\n')
    (www / "redirector").mkdir()
    (www / "redirector" / "redirect-body.html").write_text(
        f'<html>Redirecting to <a href="{location}">{location}</a></html>\n' * CHATTY_REPEATS)
    htpasswd = prefix / "htpasswd"
    htpasswd.write_text(htpasswd_line(USER, token))
    tls = f"ssl_certificate {pki.leaf_cert}; ssl_certificate_key {pki.leaf_key};"
    servers = f"""
  server {{
    listen 127.0.0.1:{redirector_port} ssl http2;
    {tls}
    root {www / 'redirector'};
    location /simple/ {{ return 302 "{index_base}$request_uri"; }}
    location /chatty/ {{ error_page 418 =302 /redirect-body.html; return 418; }}
    location = /redirect-body.html {{ internal; add_header Location "{location}" always; }}
    location /blocked/ {{ return 302 "https://{userinfo}127.0.0.3:{free_port('127.0.0.3')}/simple/{PACKAGE}/"; }}
  }}
  server {{
    listen 127.0.0.2:{index_port} ssl http2;
    {tls}
    root {www / 'index'};
    auth_basic "credhop test index";
    auth_basic_user_file {htpasswd};
  }}
"""
    with Nginx(binary, prefix, servers) as nginx:
        yield H2Servers(nginx, f"https://127.0.0.1:{redirector_port}", f"https://127.0.0.2:{index_port}",
                        index_port, wheel)


@pytest.fixture
def proxy_factory(tmp_path, pki):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    def make(**options: str) -> Mitmdump:
        return Mitmdump(tmp_path / "proxy", pki.ca_cert, rules=rules, options=options)

    return make


def curl(proxy: Mitmdump, url: str, workdir: Path, *flags: str):
    """curl over h2 through the proxy; stdout ends with `HTTP_VERSION=<version of the last response>`."""
    argv = [tool("CREDHOP_CURL", "curl"), "-sS", "--http2", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert),
            "--suppress-connect-headers", "-w", "\nHTTP_VERSION=%{http_version}\n", *flags, url]
    return run(argv, clean_env(workdir / "home"), workdir)


def assert_h2_without_lowercasing(proxy: Mitmdump) -> None:
    # mitmdump prints each flow as `... GET https://... HTTP/2.0` / `<< HTTP/2.0 200 OK`
    assert "HTTP/2.0" in proxy.output, "mitmproxy saw no HTTP/2 flow"
    lowercased = [line for line in proxy.output.splitlines() if "Lowercased" in line]
    assert not lowercased, f"mitmproxy had to lowercase a header on an h2 request: {lowercased[:3]}"


def assert_no_secret(forms, proxy: Mitmdump, servers: H2Servers, *outputs: str) -> None:
    logs = [proxy.output, proxy.hoplog.read_text() if proxy.hoplog.exists() else "",
            servers.nginx.access_log.read_text(), servers.nginx.diagnostics()]
    assert_no_leak("\n".join([*outputs, *logs]), forms, "client output, mitmdump output, hop log, nginx logs")


def test_injected_authorization_reaches_nginx_over_h2(h2_servers, proxy_factory, tmp_path, forms):
    mark = len(h2_servers.nginx.access_lines())
    with proxy_factory() as proxy:
        # control: the index refuses a request that carries no credential
        direct = curl(proxy, f"{h2_servers.index}/simple/{PACKAGE}/", tmp_path, "-o", "/dev/null")
        assert direct.returncode == 0 and "HTTP_VERSION=2" in direct.stdout, direct.stderr
        assert h2_servers.lines_since(mark, h2_servers.index)[-1].endswith(
            f"HTTP/2.0 http2=h2 user=- status=401 GET /simple/{PACKAGE}/")
        mark = len(h2_servers.nginx.access_lines())
        result = curl(proxy, f"{h2_servers.redirector}/simple/{PACKAGE}/", tmp_path, "-L", "--fail", "-i")
        records = proxy.records()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/2 302") and "\nHTTP/2 200" in result.stdout
    assert "HTTP_VERSION=2" in result.stdout  # client <-> mitmproxy: h2
    assert PACKAGE.replace("-", "_") in result.stdout  # the index page
    # mitmproxy <-> nginx: h2, and nginx's auth_basic accepted the injected credential
    assert [line.split(" ", 1)[1] for line in h2_servers.lines_since(mark, h2_servers.redirector)] == [
        f"HTTP/2.0 http2=h2 user=- status=302 GET /simple/{PACKAGE}/"]
    assert [line.split(" ", 1)[1] for line in h2_servers.lines_since(mark, h2_servers.index)] == [
        f"HTTP/2.0 http2=h2 user={USER} status=200 GET /simple/{PACKAGE}/index.html"]
    injects = [r for r in records if r["event"] == "inject"]
    assert [r["action"] for r in injects] == ["inject"]
    assert_h2_without_lowercasing(proxy)
    assert_no_secret(forms, proxy, h2_servers, result.output)


@pytest.mark.parametrize("stream_large_bodies", ["", "1"], ids=["buffered", "streamed"])
def test_302_body_repeating_the_userinfo_is_scrubbed_over_h2(h2_servers, proxy_factory, tmp_path, forms,
                                                             stream_large_bodies):
    options = {"stream_large_bodies": stream_large_bodies} if stream_large_bodies else {}
    mark = len(h2_servers.nginx.access_lines())
    with proxy_factory(**options) as proxy:
        page = curl(proxy, f"{h2_servers.redirector}/chatty/", tmp_path, "-i")
        followed = curl(proxy, f"{h2_servers.redirector}/chatty/", tmp_path, "-L", "--fail", "-o",
                        str(tmp_path / "index.html"))
    assert page.returncode == 0, page.stderr
    assert page.stdout.startswith("HTTP/2 302") and "HTTP_VERSION=2" in page.stdout
    stripped = f"https://127.0.0.2:{h2_servers.index_port}/simple/{PACKAGE}/"
    assert re.search(rf"^location: {re.escape(stripped)}\r?$", page.stdout, re.M | re.I)
    head, _, body = page.stdout.partition("\r\n\r\n")
    assert body.count("Redirecting to") == CHATTY_REPEATS
    assert body.count(f'href="{stripped}"') == CHATTY_REPEATS  # scrubbed, not cut
    assert "@127.0.0.2" not in body
    if stream_large_bodies:
        assert "Streaming response from 127.0.0.1" in proxy.output
    # injection still works with the body rewritten (and streamed)
    assert followed.returncode == 0, followed.stderr
    assert "HTTP_VERSION=2" in followed.stdout
    assert h2_servers.wheel.name in (tmp_path / "index.html").read_text()
    index_lines = h2_servers.lines_since(mark, h2_servers.index)
    assert [line.split(" ", 1)[1] for line in index_lines] == [
        f"HTTP/2.0 http2=h2 user={USER} status=200 GET /simple/{PACKAGE}/index.html"]
    assert all(" HTTP/2.0 http2=h2 " in line and "status=302" in line
               for line in h2_servers.lines_since(mark, h2_servers.redirector))
    assert_h2_without_lowercasing(proxy)
    assert_no_secret(forms, proxy, h2_servers, page.output, followed.output)


def test_block_rule_answers_403_over_h2(h2_servers, proxy_factory, tmp_path, forms):
    mark = len(h2_servers.nginx.access_lines())
    with proxy_factory() as proxy:
        result = curl(proxy, f"{h2_servers.redirector}/blocked/", tmp_path, "-i", "-L")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/2 403") and "HTTP_VERSION=2" in result.stdout
    assert "rule 'no-tokens-for-127-0-0-3' blocked a 302 redirect" in result.stdout
    assert f"{USER}:***@127.0.0.3:" in result.stdout
    assert not h2_servers.lines_since(mark, h2_servers.index)
    assert [line.split(" ", 1)[1] for line in h2_servers.lines_since(mark, h2_servers.redirector)] == [
        "HTTP/2.0 http2=h2 user=- status=302 GET /blocked/"]
    assert_h2_without_lowercasing(proxy)
    assert_no_secret(forms, proxy, h2_servers, result.output)


def test_uv_installs_over_h2_with_the_injected_credential(h2_servers, proxy_factory, tmp_path, forms):
    uv = tool("CREDHOP_UV_OLD", "uv-0.5.25")
    mark = len(h2_servers.nginx.access_lines())
    with proxy_factory() as proxy:
        env = clean_env(tmp_path / "home", **proxy_env(proxy.url, proxy.ca_cert))
        result = run([uv, "pip", "install", "-v", "--no-config", "--cache-dir", str(tmp_path / "uv-cache"),
                      "--target", str(tmp_path / "target"), "--python", sys.executable,
                      "--index-url", f"{h2_servers.redirector}/simple/", PACKAGE], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    init = tmp_path / "target" / MODULE / "__init__.py"
    assert "installed-through-credhop" in init.read_text()
    index_lines = [line.split(" ", 1)[1] for line in h2_servers.lines_since(mark, h2_servers.index)]
    assert f"HTTP/2.0 http2=h2 user={USER} status=200 GET /simple/{PACKAGE}/index.html" in index_lines
    assert f"HTTP/2.0 http2=h2 user={USER} status=200 GET /files/{h2_servers.wheel.name}" in index_lines
    assert all(line.startswith("HTTP/2.0 http2=h2 ") for line in index_lines), index_lines
    assert_h2_without_lowercasing(proxy)
    assert_no_secret(forms, proxy, h2_servers, result.output)
