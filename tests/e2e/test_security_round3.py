"""Security round 3 (issue 25) through real processes: mitmproxy's own output and option mistakes.

- mitmdump's dumper prints flow lines straight to its stream, not through logging: from
  flow_detail 2 on they hold the header credhop injected, and at every level the request line,
  which can hold a copy of the secret in its path. Every level must show no spelling of it.
- A misspelled choice (`credhop_client_id=proxy_auth`) or option name must stop the proxy at
  start with one line, under `mitmdump -s` and `credhop proxy` alike, from `--set` or config.yaml.

The other round-3 classes: tests/e2e/test_report_hostile.py (captures into `credhop report`),
tests/e2e/test_store_adversarial.py (sealed store values), tests/e2e/test_identity_metrics.py
(proxyauth identity, metrics).
"""

from __future__ import annotations

import base64
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Mitmdump, clean_env, run
from tests.fixtures.pki import make_pki
from tests.fixtures.server import Request, Response, Server, redirect
from tests.secrets_check import Secret, assert_no_leak, secret_forms

TOKEN = Secret("r3-Hd8sK2pQ9vX4mN7bT1")
USER = "bench"
CUSTOM = Secret("r3-Zc5wR8tY2uI6oP3aS9")
RULES = """\
rules:
  - name: custom-header
    match: {path_prefix: /custom/}
    action: inject
    header: {name: X-Registry-Token, value: "{password}"}
  - name: loopback
    action: inject
"""
CREDHOP = Path(sys.executable).parent / "credhop"


def aligned_base64(secret: str) -> set[str]:
    """The base64 of `secret` at each byte offset inside a longer value, cut to the characters that
    depend on it alone: what a careful reader could decode from any base64 blob holding it."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret.encode()).decode()
        cores.add(encoded[-(-8 * offset // 6): 8 * (offset + len(secret)) // 6])
    return cores


FORMS = secret_forms(TOKEN, user=USER) | secret_forms(CUSTOM, user=USER) | aligned_base64(TOKEN) \
    | aligned_base64(CUSTOM)


def _ok(_: Request) -> Response:
    return Response(200, [("Content-Type", "text/plain")], b"ok\n")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server, dict[str, Response]]]:
    routes: dict[str, Response] = {}
    redirector = Server(lambda r: routes.get(r.path, Response(404, [], b"")), host="127.0.0.1").start()
    index = Server(_ok, host="127.0.0.1").start()  # reached as localhost: plaintext on loopback is allowed
    try:
        yield redirector, index, routes
    finally:
        redirector.stop()
        index.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("round3-pki"))


def raw_get(proxy: Mitmdump, url: str) -> bytes:
    """One plain-http GET through the proxy, exactly as written (a path holding `u:T@x` included)."""
    host = url.split("/")[2]
    request = f"GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def follow(proxy: Mitmdump, redirector: Server, routes: dict[str, Response], path: str, location: str) -> bytes:
    """The redirect, then the follow-up a client that drops the userinfo sends."""
    routes[path] = redirect(location)
    answer = raw_get(proxy, f"{redirector.url}{path}")
    status, location_line = answer.split(b"\r\n")[0], next(
        (line for line in answer.split(b"\r\n") if line.lower().startswith(b"location:")), b"")
    # the userinfo is gone from the Location (a copy in its path stays: the client asks for it);
    # checked without an assert that would print the answer
    if b" 302 " not in status or f"{USER}:".encode() in location_line:
        raise AssertionError(f"credhop did not strip the userinfo ({status!r})")
    target = location.split("@", 1)[1]
    return raw_get(proxy, f"http://{target}")


@pytest.mark.parametrize("detail", [1, 2, 3, 4])
def test_the_dumper_never_prints_the_injected_header_or_a_copy_of_the_secret(servers, pki, tmp_path, detail):
    redirector, index, routes = servers
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    port = index.port
    with Mitmdump(tmp_path / "proxy", pki.ca_cert, rules=rules, options={"flow_detail": str(detail)}) as proxy:
        before = len(index.requests)
        follow(proxy, redirector, routes, f"/d{detail}/t", f"http://{USER}:{TOKEN}@localhost:{port}/d{detail}/t")
        # a copy of the secret in the path: the client asks for it as it is (issue 25)
        follow(proxy, redirector, routes, f"/d{detail}/copy",
               f"http://{USER}:{TOKEN}@localhost:{port}/d{detail}/r//u:{TOKEN}@x")
        # a header no option names secret: only the grant says it is one
        follow(proxy, redirector, routes, f"/custom/d{detail}",
               f"http://{USER}:{CUSTOM}@localhost:{port}/custom/d{detail}/pkg/")
        seen = index.requests[before:]
    basic = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    # credhop did inject (else there would be nothing to hide)
    assert [r.first_header("authorization") for r in seen if r.path == f"/d{detail}/t"] == [basic]
    assert [r.first_header("x-registry-token") for r in seen if r.path.startswith("/custom/")] == [CUSTOM]
    output = proxy.output
    assert_no_leak(output, FORMS, f"mitmdump output at flow_detail {detail}")
    # the dumper still speaks: the flow lines are there, with the headers masked, not dropped
    assert f"localhost:{port}/d{detail}/t" in output and "<< 200 OK" in output
    if detail >= 2:
        lines = [line.strip().lower() for line in output.splitlines()]
        assert any(line.startswith("authorization:") and "***" in line for line in lines), output[-3000:]
        assert any(line.startswith("x-registry-token:") and "***" in line for line in lines), output[-3000:]


def test_a_flow_file_with_headers_on_is_warned_about_once(pki, tmp_path):
    flows = tmp_path / "flows.mitm"
    with Mitmdump(tmp_path / "proxy", pki.ca_cert, options={"flow_detail": "2", "save_stream_file": str(flows)}) as p:
        pass
    warned = [line for line in p.output.splitlines() if "show requests as sent" in line]
    assert len(warned) == 1 and "the flow file (-w)" in warned[0], p.output
    with Mitmdump(tmp_path / "quiet", pki.ca_cert, options={"save_stream_file": str(flows)}) as quiet:
        pass
    assert "show requests as sent" not in quiet.output  # flow_detail 1: the user is not reading headers


# -- option mistakes stop the proxy, under both launchers --------------------------------------------

CHOICE_TYPOS = [
    ("credhop_client_id", "proxy_auth", "credhop_client_id='proxy_auth': not one of 'address', 'proxyauth'"),
    ("credhop_store", "memroy", "credhop_store='memroy': not 'memory' or a URL of redis://"),
    ("credhop_tll", "60", "unknown option 'credhop_tll' (did you mean 'credhop_ttl'?)"),
]


def refused(argv: list[str], tmp_path: Path) -> str:
    result = run(argv + ["--listen-host", "127.0.0.1", "--listen-port", "0", "--set",
                         f"confdir={tmp_path / 'conf'}"], clean_env(tmp_path / "home"), tmp_path, timeout=60)
    assert result.returncode == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and "Loading script" not in line]
    assert len(lines) == 1 and lines[0].startswith("credhop: "), result.output
    assert "Traceback" not in result.output and "listening" not in result.output
    return lines[0]


@pytest.mark.parametrize("launcher", ["mitmdump -s", "credhop proxy"])
@pytest.mark.parametrize(("option", "value", "says"), CHOICE_TYPOS)
def test_a_misspelled_option_or_choice_stops_the_proxy(tmp_path, launcher, option, value, says):
    command = ([str(Path(sys.executable).parent / "mitmdump"), "-s", str(Path("addons/credhop.py").resolve())]
               if launcher == "mitmdump -s" else [str(CREDHOP), "proxy"])
    assert says in refused(command + ["--set", f"{option}={value}"], tmp_path)
    # the same mistake in mitmproxy's config.yaml
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(f"{option}: {value}\n")
    assert says in refused(command, tmp_path)


def test_proxyauth_spelled_right_still_starts(pki, tmp_path):
    with Mitmdump(tmp_path / "proxy", pki.ca_cert,
                  options={"credhop_client_id": "proxyauth", "proxyauth": "alice:pw"}) as proxy:
        assert proxy.proc is not None and proxy.proc.poll() is None


def test_mitmwebs_event_view_holds_no_secret_and_its_flow_view_is_warned_about(servers, pki, tmp_path):
    """mitmweb's event view is a logging handler (EventStore): credhop's filter scrubs it. Its flow
    view shows the request as sent, which credhop cannot scrub: it says so once at start."""
    import json
    import urllib.request

    from tests.e2e.harness import ENTRY_SCRIPT, free_port, tool

    redirector, index, routes = servers
    web_port = free_port()
    mitmweb = str(Path(tool("CREDHOP_MITMDUMP", "mitmdump")).with_name("mitmweb"))
    with Mitmdump(tmp_path / "web", pki.ca_cert, command=[mitmweb, "-s", str(ENTRY_SCRIPT)],
                  rules=Path("addons/credhop/rules.yaml").resolve(),
                  options={"web_port": str(web_port), "web_host": "127.0.0.1", "web_open_browser": "false",
                           "web_password": "round3-web"}) as proxy:
        follow(proxy, redirector, routes, "/web/t", f"http://{USER}:{TOKEN}@localhost:{index.port}/web/t")
        # userinfo in a client's own request line: mitmproxy refuses it and logs the line itself
        raw_get(proxy, f"http://{USER}:{TOKEN}@localhost:{index.port}/web/raw")
        answer = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{web_port}/events", headers={"Authorization": "Bearer round3-web"}), timeout=20)
        events = json.loads(answer.read())
    text = "\n".join(str(e.get("message", "")) for e in events)
    assert "redirect: 302" in text and "action=inject" in text  # credhop's line is in the event view
    assert f"{USER}:***@localhost" in text  # mitmproxy's own line, scrubbed
    assert_no_leak(text, FORMS, "mitmweb's event view")
    warned = [line for line in proxy.output.splitlines() if "mitmweb's flow view" in line]
    assert len(warned) == 1, proxy.output[-2000:]
    assert_no_leak(proxy.output, FORMS, "mitmweb's terminal")
