"""The live chains page and the operator listener, served for real by a taddons CredHop: what each
path answers, the filters, the token, the event stream, the records a chain downloads as (which
`credhop report` reads), escaping, and that the proxy port never reaches the listener."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import urllib.error
import urllib.request

import pytest
from mitmproxy.test import tutils

from credhop import cli
from tests.e2e.harness import free_port
from tests.unit.addon_helpers import CLIENT, ENCODED, FORMS, hop, run_redirect, send  # noqa: F401  (hop: a fixture)

LOCATION = f"https://aws:{ENCODED}@registry.example/simple/pkg/"


def get(port, path, headers=None, timeout=5):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def no_secret(text):
    for form in FORMS:
        assert form not in text


@pytest.fixture
def page(hop):
    port = free_port()
    hop.tctx.configure(hop.addon, credhop_metrics=f"127.0.0.1:{port}", credhop_instance="gw-1:8080")
    hop.port = port
    return hop


def injected_then(hop, status, client=CLIENT, host="registry.example"):
    """A credential redirect and its follow-up, answered with `status`."""
    run_redirect(hop, f"https://aws:{ENCODED}@{host}/simple/pkg/", client=client)
    f = send(hop, f"https://{host}/simple/pkg/", client=client)
    f.response = tutils.tresp(status_code=status)
    hop.responseheaders(f)
    hop.response(f)
    return f


def chain_ids(html):
    return re.findall(r'id="chain-([^"]+)"', html)


def test_the_page_shows_this_instances_chains_newest_first_with_verdict_code_and_hint(page):
    injected_then(page, 200)
    injected_then(page, 404, client=("10.0.0.6", 1))
    status, headers, html = get(page.port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    ids = chain_ids(html)
    records = page.records()
    by_chain = {}
    for r in records:
        by_chain.setdefault(r["chain"], r)
    assert ids == list(reversed(list(by_chain)))  # newest first, every chain of the hop log
    failed = re.search(r'<section class="chain verdict-failed"[^>]*>.*?</section>', html, re.S).group(0)
    assert "10.0.0.6" in failed and 'data-code="CH' in failed and "fix:" in failed
    assert 'verdict-ok' in html
    assert "gw-1:8080" in html and "each instance shows its own" in html
    no_secret(html)


def test_filters_failed_client_rule_and_code(page):
    injected_then(page, 200)
    injected_then(page, 404, client=("10.0.0.6", 1))
    _, _, everything = get(page.port, "/chains")
    assert len(chain_ids(everything)) == 2
    _, _, failed = get(page.port, "/chains?failed=1")
    assert len(chain_ids(failed)) == 1 and "verdict-failed" in failed and "verdict-ok" not in failed
    _, _, one = get(page.port, "/chains?client=10.0.0.5")
    assert len(chain_ids(one)) == 1 and "verdict-ok" in one
    code = re.search(r"<p class=\"cause\">(CH\d+)", failed).group(1)  # the failing finding
    _, _, by_code = get(page.port, f"/chains?code={code.lower()}")
    assert chain_ids(by_code) == chain_ids(failed)
    _, _, by_rule = get(page.port, "/chains?rule=registry")
    assert len(chain_ids(by_rule)) == 2
    _, _, none = get(page.port, "/chains?rule=gitlab")
    assert chain_ids(none) == [] and "no chain matches" in none
    _, _, limited = get(page.port, "/chains?limit=1")
    assert len(chain_ids(limited)) == 1 and "the newest 1 of 2" in limited


def test_a_chains_records_download_as_json_lines_that_credhop_report_reads(page, tmp_path):
    injected_then(page, 404)
    _, _, html = get(page.port, "/")
    href = re.search(r'href="(chain/[^"]+\.jsonl)"', html).group(1)
    status, headers, body = get(page.port, "/" + href)
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    logged = [r for r in page.records()]
    served = [json.loads(line) for line in body.splitlines()]
    assert served == logged  # what the hop log holds, no more
    no_secret(body)
    path = tmp_path / "chain.jsonl"
    path.write_text(body)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["report", str(path)], out=out, err=err) == 1  # the failed chain, explained again
    assert "FAILED" in out.getvalue()
    assert get(page.port, "/chain/nope.jsonl")[0] == 404


def test_chains_json_is_the_reports_json(page):
    injected_then(page, 404)
    status, headers, body = get(page.port, "/chains.json?failed=1")
    data = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [c["verdict"] for c in data["chains"]] == ["failed"]


def test_the_event_stream_says_when_a_chain_comes(page):
    got: list[str] = []
    seen_first = threading.Event()
    done = threading.Event()

    def read():
        with urllib.request.urlopen(f"http://127.0.0.1:{page.port}/events", timeout=10) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    got.append(line[6:])
                    seen_first.set()
                    if len(got) == 2:
                        done.set()
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen_first.wait(5)
    injected_then(page, 200)
    assert done.wait(5), got
    assert int(got[1]) > int(got[0])


def test_the_token_guards_every_path(page, tmp_path):
    token_file = tmp_path / "operator.token"
    token_file.write_text("s3cr3t-operator-token-0123456789\n")
    page.tctx.configure(page.addon, credhop_operator_token=str(token_file))
    for path in ("/", "/metrics", "/chains", "/events", "/chains.json"):
        status, headers, body = get(page.port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), path
    bearer = {"Authorization": "Bearer s3cr3t-operator-token-0123456789"}
    assert get(page.port, "/metrics", bearer)[0] == 200
    basic = base64.b64encode(b"anyone:s3cr3t-operator-token-0123456789").decode()
    assert get(page.port, "/", {"Authorization": f"Basic {basic}"})[0] == 200
    assert get(page.port, "/", {"Authorization": "Bearer s3cr3t-operator-token-012345678"})[0] == 401
    assert get(page.port, "/", {"Authorization": "Basic !!!"})[0] == 401
    page.tctx.configure(page.addon, credhop_operator_token="")  # taken off again, on the same listener
    assert get(page.port, "/")[0] == 200


def test_a_short_or_missing_token_file_is_refused_and_nothing_changes(page, tmp_path):
    from mitmproxy import exceptions

    short = tmp_path / "short.token"
    short.write_text("abc")
    for value, words in ((str(short), "at least 16"), (str(tmp_path / "absent"), "cannot read")):
        with pytest.raises(exceptions.OptionsError, match=words):
            page.tctx.configure(page.addon, credhop_operator_token=value)
        assert get(page.port, "/")[0] == 200  # still open: the listener kept its (no) token


def test_network_text_is_escaped_and_only_the_pages_own_script_runs(page):
    run_redirect(page, f"https://u\"'><img src=x onerror=alert(2)>:{ENCODED}@registry.example/p/",
                 url="https://redirector.example/<script>alert(1)</script>/\x1b[31mred")
    send(page, "https://registry.example/p/")
    run_redirect(page, f"https://aws:{ENCODED}@x<script>alert(3)</script>.example/", client=("10.0.0.7", 1))
    status, headers, html = get(page.port, "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == [f'<script nonce="{nonce}">']  # markup from the network is text, not a tag
    assert "<img" not in html and "\x1b" not in html
    assert "&lt;script&gt;alert(1)" in html and "&lt;img src=x" in html  # shown, as text
    assert "&lt;script&gt;alert(3)" in html
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    # each response has its own nonce
    assert re.search(r"'nonce-([^']+)'", get(page.port, "/")[1]["Content-Security-Policy"]).group(1) != nonce
    no_secret(html)


def test_the_proxy_port_never_reaches_the_operator_listener(page):
    for host in ("127.0.0.1", "localhost", "[::1]"):
        f = send(page, f"http://{host}:{page.port}/metrics")
        assert f.response is not None and f.response.status_code == 403, host
    other = send(page, f"http://registry.example:{page.port}/")
    assert other.response is None  # the same port on another host is just a request


def test_without_the_listener_nothing_is_served_and_the_port_is_free(page):
    port = page.port
    page.tctx.configure(page.addon, credhop_metrics="")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    f = send(page, f"http://127.0.0.1:{port}/")
    assert f.response is None


def test_a_bad_peer_url_is_refused(page):
    from mitmproxy import exceptions

    with pytest.raises(exceptions.OptionsError, match="credhop_ui_peers"):
        page.tctx.configure(page.addon, credhop_ui_peers="gw-2:9464")
    page.tctx.configure(page.addon, credhop_ui_peers="http://gw-2.internal:9464/,https://gw-3:9464/")
    html = get(page.port, "/")[2]
    assert 'href="http://gw-2.internal:9464/"' in html and 'href="https://gw-3:9464/"' in html


@pytest.mark.parametrize(("host", "token", "warned"), [
    ("127.0.0.1", None, None), ("::1", None, None),
    ("0.0.0.0", None, "to anyone who reaches it: set credhop_operator_token=FILE"),
    ("192.0.2.10", b"t" * 32, "only to holders of credhop_operator_token")])
def test_a_listener_beyond_loopback_is_warned_about_at_start(caplog, host, token, warned):
    from types import SimpleNamespace

    from credhop.backends import announce_operator

    with caplog.at_level("INFO", logger="credhop"):
        announce_operator(SimpleNamespace(host=host, port=9464, token=token))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("live chains on http://" in r.getMessage() for r in caplog.records)
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "is not loopback" in warnings[0] and warned in warnings[0], warnings


def test_a_wildcard_listener_is_refused_through_the_proxy_by_this_machines_names_too():
    import socket
    from types import SimpleNamespace

    from credhop.backends import Operator

    wildcard = Operator(None, SimpleNamespace(host="0.0.0.0", port=9464))
    assert wildcard.reached_by(socket.gethostname()) and wildcard.reached_by("127.0.0.1")
    assert not wildcard.reached_by("registry.example")
    bound = Operator(None, SimpleNamespace(host="127.0.0.1", port=9464))
    assert bound.reached_by("localhost") and not bound.reached_by(socket.gethostname() + ".invalid")
