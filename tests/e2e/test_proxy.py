"""The proxy itself: blocking, live rule reloads, option mistakes, observe mode, secrets in mitmproxy's own lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.harness import ENTRY_SCRIPT, SHIPPED_RULES, Mitmdump, clean_env, proxy_env, run, tool
from tests.e2e.test_clients import CLIENTS, PACKAGE, curl_fetch, uv_install
from tests.fixtures.registry import Redirector, Response
from tests.secrets_check import assert_no_leak

INJECT = "rules:\n  - name: loopback-registry\n    match: {host: 127.0.0.2}\n    action: inject\n"
STRIP = "rules:\n  - name: loopback-registry\n    match: {host: 127.0.0.2}\n    action: strip\n"
BLOCK = "rules:\n  - name: no-tokens-in-redirects\n    action: block\n"


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_block_answers_403_naming_rule_and_redacted_location(registry_factory, tmp_path, forms):
    registry = registry_factory("https", 401)
    rules = tmp_path / "rules.yaml"
    rules.write_text(BLOCK)
    with Mitmdump(tmp_path / "proxy", registry.test_ca, rules=rules) as proxy:
        result = run([tool("CREDHOP_CURL", "curl"), "-sS", "-i", "--proxy", proxy.url, "--cacert", str(proxy.ca_cert),
                      f"{registry.simple_url}{PACKAGE}/"], clean_env(tmp_path / "home"), tmp_path)
    assert "HTTP/1.1 403 Forbidden" in result.stdout
    assert "rule 'no-tokens-in-redirects' blocked a 302 redirect" in result.stdout
    assert f"aws:***@127.0.0.2:{registry.index.port}" in result.stdout
    assert not registry.index.requests
    assert_no_leak(result.output + proxy.output + proxy.hoplog.read_text(), forms, "curl, mitmdump, hop log")


def test_rules_reload_while_running_and_broken_edit_keeps_previous(registry_factory, tmp_path, forms):
    registry = registry_factory("https", 401)
    rules = tmp_path / "rules.yaml"
    rules.write_text(STRIP)
    with Mitmdump(tmp_path / "proxy", registry.test_ca, rules=rules) as proxy:
        stripped = curl_fetch(registry, tmp_path / "c1", proxy)
        assert stripped.returncode != 0 and "401" in stripped.output  # stripped, nothing injected

        rules.write_text(INJECT)
        assert wait_for(lambda: proxy.output.count("credhop: loaded 1 rule(s)") == 2), proxy.output
        assert curl_fetch(registry, tmp_path / "c2", proxy).returncode == 0

        rules.write_text(INJECT + "    ttl: often\n")
        assert wait_for(lambda: "rules not reloaded" in proxy.output), proxy.output
        assert f"{rules}:5:10: rules[0].ttl: must be a whole number" in proxy.output
        assert curl_fetch(registry, tmp_path / "c3", proxy).returncode == 0  # previous rules still serve
    assert_no_leak(proxy.output, forms, "mitmdump output")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [("credhop_tll", "5", "unknown option 'credhop_tll' (did you mean 'credhop_ttl'?)"),
     # values mitmproxy cannot parse: before, the script failed to load without a word (issue 12, defect 3)
     ("credhop_ttl", "abc", "credhop_ttl='abc'"), ("credhop_observe", "maybe", "credhop_observe='maybe'"),
     ("credhop_max_credentials", "x", "credhop_max_credentials='x'"),
     ("credhop_ttl", "0", "credhop_ttl must be 1..604800 seconds, not 0"),
     ("credhop_secret_headers", "bad header", "invalid header name(s): bad header")],
)
def test_an_unusable_option_stops_the_proxy_with_one_line(tmp_path, pki, option, value, says):
    proxy = Mitmdump(tmp_path, pki.ca_cert, options={option: value})
    assert proxy.run_expecting_failure() != 0
    lines = [line for line in proxy.output.splitlines() if line.strip() and "Loading script" not in line]
    assert lines == [f"credhop: {lines[0].removeprefix('credhop: ')}"] and says in lines[0], proxy.output
    assert "Traceback" not in proxy.output and "listening" not in proxy.output


def test_a_redis_store_without_the_redis_package_stops_with_one_line(tmp_path, pki):
    # a real mitmdump whose interpreter cannot import redis (as a venv without the fleet extra):
    # before, start-up printed a ModuleNotFoundError traceback
    key = tmp_path / "store.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    python = Path(tool("CREDHOP_MITMDUMP", "mitmdump")).parent / "python"
    without_redis = "import sys; sys.modules['redis'] = None; from mitmproxy.tools.main import mitmdump; mitmdump()"
    proxy = Mitmdump(tmp_path, pki.ca_cert, command=[str(python), "-c", without_redis, "-s", str(ENTRY_SCRIPT)],
                     rules=SHIPPED_RULES,
                     options={"credhop_store": "redis://127.0.0.1:1/0", "credhop_store_key": str(key)})
    assert proxy.run_expecting_failure() != 0
    lines = [line for line in proxy.output.splitlines() if line.strip() and "Loading script" not in line]
    assert len(lines) == 1 and "needs the redis package" in lines[0] and "pip install 'credhop[fleet]'" in lines[0], \
        proxy.output
    assert "Traceback" not in proxy.output and "listening" not in proxy.output


def test_broken_rules_file_at_start_names_file_line_column(tmp_path, pki):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    action: inject\n    match: {clinet: 10.0.0.0/8}\n")
    proxy = Mitmdump(tmp_path, pki.ca_cert, rules=rules)
    assert proxy.run_expecting_failure() != 0
    assert f"{rules}:4:13: rules[0].match.clinet: unknown key (did you mean 'client'?)" in proxy.output
    assert "Traceback" not in proxy.output and "listening" not in proxy.output


def test_observe_mode_changes_nothing_and_logs_the_decision(registry_factory, tmp_path):
    registry = registry_factory("https", 404)
    with Mitmdump(tmp_path / "proxy", registry.test_ca, options={"credhop_observe": "true"}) as proxy:
        result = CLIENTS["uv-0.5.25"](registry, tmp_path / "client", proxy)
    assert result.returncode != 0  # uv 0.5.25 drops the credential, as without credhop
    redirect = next(r for r in proxy.records() if r["event"] == "redirect" and r.get("fingerprint"))
    assert redirect["observe"] is True and redirect["action"] == "inject"
    assert not any(r["event"] == "inject" for r in proxy.records())
    assert all(not r.header("authorization") for r in registry.index.requests)


def test_userinfo_in_a_clients_request_line_is_scrubbed_from_mitmproxy_output(registry_factory, tmp_path, forms):
    # With the Location kept, uv 0.5.25 sends its userinfo in the absolute-form request line
    # through an HTTP proxy; mitmproxy rejects the line and logs it. That log line must be scrubbed.
    registry = registry_factory("http", 401)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: hands-off\n    action: keep\n")
    with Mitmdump(tmp_path / "proxy", registry.test_ca, rules=rules) as proxy:
        result = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), registry, tmp_path / "client",
                            proxy_env(proxy.url, proxy.ca_cert))
        assert wait_for(lambda: "Bad HTTP request line" in proxy.output), proxy.output
    assert result.returncode != 0 and "400 Bad Request" in result.output
    assert f"GET http://aws:***@127.0.0.2:{registry.index.port}/" in proxy.output
    assert_no_leak(proxy.output + proxy.hoplog.read_text(), forms, "mitmdump output and hop log")


class ChattyRedirector(Redirector):
    """A redirector whose 3xx body repeats the Location, userinfo and all, as many servers do."""

    def _redirect(self, location: str) -> Response:
        body = f'<html>Redirecting to <a href="{location}">{location}</a></html>\n'.encode() * 50
        return Response(self.status, [("Location", location), ("Content-Type", "text/html")], body)


@pytest.mark.parametrize("stream_large_bodies", ["", "1k"])
@pytest.mark.parametrize("rules_text", [INJECT, BLOCK])
def test_redirect_bodies_never_carry_the_secret_streamed_or_not(registry_factory, pki, tmp_path, forms,
                                                                stream_large_bodies, rules_text):
    registry = registry_factory("https", 401)
    chatty = ChattyRedirector(target=registry.index.credentials_url("/simple/"), tls=pki.server_context()).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    try:
        options = {"stream_large_bodies": stream_large_bodies} if stream_large_bodies else {}
        with Mitmdump(tmp_path / "proxy", registry.test_ca, rules=rules, options=options) as proxy:
            result = run([tool("CREDHOP_CURL", "curl"), "-sS", "-i", "--proxy", proxy.url, "--cacert",
                          str(proxy.ca_cert), f"{chatty.simple_url}credhop-demo-pkg/"], clean_env(tmp_path / "home"), tmp_path)
    finally:
        chatty.stop()
    assert result.returncode == 0, result.stderr
    if rules_text == BLOCK:
        assert "HTTP/1.1 403 Forbidden" in result.stdout and "blocked a 302 redirect" in result.stdout
        assert "Redirecting" not in result.stdout
    else:
        assert "HTTP/1.1 302" in result.stdout and result.stdout.count("Redirecting to") == 50
        assert f'href="https://127.0.0.2:{registry.index.port}/pypi/python/simple/credhop-demo-pkg/"' in result.stdout
    assert_no_leak(result.output + proxy.output, forms, "curl and mitmdump output")


@pytest.mark.parametrize("client", ["curl", "uv-0.5.25"])
def test_a_chain_ending_in_401_is_warned_about_live_and_counted(registry_factory, tmp_path, client):
    # observe mode changes nothing, so the client's follow-up without the credential gets the registry's 401;
    # curl and uv never ask again: the chain is judged once no retry came (before, only `credhop report` said so)
    registry = registry_factory("https", 401)
    with Mitmdump(tmp_path / "proxy", registry.test_ca, options={"credhop_observe": "true"}) as proxy:
        if client == "curl":
            result = curl_fetch(registry, tmp_path / "client", proxy)
        else:
            result = CLIENTS[client](registry, tmp_path / "client", proxy)
        assert result.returncode != 0
        ended = time.monotonic()
        assert wait_for(lambda: " failed: CH101 " in proxy.output, 5), proxy.output[-3000:]
        noticed = time.monotonic() - ended
    warnings = [line for line in proxy.output.splitlines() if " failed: CH101 " in line]
    assert len(warnings) == 1, proxy.output[-3000:]
    assert "chains_failed=1" in proxy.output  # the stats line at shutdown
    assert noticed < 3.5  # within the retry grace and the once-a-second look
