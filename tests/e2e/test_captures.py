"""`credhop report` on real captures: flow files written by a real `mitmdump -w`, HAR files written by
mitmproxy's `hardump` and by a real headless Chromium (Playwright driving Debian's chromium), while real
clients (uv 0.5.25, pip, curl) fail or succeed against the registry fixtures. Captures are replayed
through credhop's decisions in observe mode, so they must explain the traffic exactly as the live addon
does; presigned download hops are their own authorization.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from credhop.diagnosis import Chain, diagnose, parse_records
from credhop.replay import collect
from credhop.scrub import scrub
from tests.e2e.harness import REPO, Mitmdump, clean_env, run, tool
from tests.e2e.test_clients import CLIENTS, PACKAGE
from tests.fixtures.presigned import start_presigned
from tests.secrets_check import Secret, assert_no_leak, secret_forms

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def credhop(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "credhop", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env={**os.environ, "NO_COLOR": "1"})


@dataclass
class Capture:
    """What one mitmdump run leaves behind: its flow file, its HAR, and (with credhop) its hop log."""

    proxy: Mitmdump
    flows: Path
    har: Path

    @property
    def hoplog(self) -> Path:
        return self.proxy.hoplog

    @property
    def key(self) -> Path:
        return self.proxy.confdir / "credhop-fingerprint.key"


def capturing_proxy(workdir: Path, ca: Path, live_credhop: bool = False, browser: bool = False
                    ) -> tuple[Mitmdump, Capture]:
    """mitmdump writing a flow file (-w, i.e. save_stream_file) and a HAR (hardump, written at exit);
    with `live_credhop` also credhop in observe mode, whose hop log describes the very same traffic."""
    flows, har = workdir / "capture.mitm", workdir / "capture.har"
    # loopback only: whatever else a client tries (Chromium's updater does, whatever its flags) is killed
    # at the proxy; for the browser also before mitmproxy resolves or connects to anything (lazy: the
    # clients here speak plain HTTP to it; uv's TLS tunnels need the default, eager)
    options = {"save_stream_file": str(flows), "hardump": str(har), "block_list": r"|!~d ^127\.|444"}
    if browser:
        options["connection_strategy"] = "lazy"
    if live_credhop:
        options["credhop_observe"] = "true"
    proxy = Mitmdump(workdir / "proxy", ca, credhop=live_credhop, options=options)
    return proxy, Capture(proxy, flows, har)


def shape(chains: list[Chain]) -> list[Any]:
    """What a report says about each chain, without ids, clients, times or fingerprints."""
    return sorted(
        (c.verdict, tuple(sorted(f.code for f in c.findings)),
         tuple((h.index, h.method, h.url, h.status, h.move, tuple(sorted(f.code for f in h.findings)))
               for h in c.main))
        for c in chains)


def chains_of(*paths: Path, key: Path | None = None) -> list[Chain]:
    return diagnose(collect([str(p) for p in paths], fingerprint_key=key.read_bytes().strip() if key else None)
                    .records)


def all_reports(path: Path, tmp: Path) -> str:
    """Everything `credhop report` prints or writes for `path`, in every format."""
    out = []
    for fmt in ("text", "markdown", "json"):
        proc = credhop("report", str(path), "--format", fmt)
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
        out += [proc.stdout, proc.stderr]
    page = tmp / f"{path.name}.html"
    proc = credhop("report", str(path), "--html", str(page))
    out += [proc.stdout, proc.stderr, page.read_text()]
    return "\n".join(out)


# -- the seed failure: uv 0.5.25 against the 404 index, captured by mitmdump without credhop ---------------


def test_flow_file_of_failing_uv_0_5_25_names_the_lost_credential(registry_factory, tmp_path, forms):
    registry = registry_factory("https", 404)
    proxy, capture = capturing_proxy(tmp_path, registry.test_ca)
    with proxy:
        result = CLIENTS["uv-0.5.25"](registry, tmp_path / "uv", proxy)
    failed_as_expected = result.returncode != 0 and "not found in the package registry" in result.output
    assert failed_as_expected, scrub(result.output[-2000:])  # pytest would print the raw output
    assert capture.flows.exists() and capture.har.exists()
    assert "-s" not in proxy.argv and not proxy.hoplog.exists()  # a plain mitmdump, no credhop

    proc = credhop("report", str(capture.flows))
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("✗ FAILED chain ") and "· client 127.0.0.1 ·" in lines[0]
    assert "CH101 credential-lost-on-redirect" in lines[0]
    assert "got 404 without a credential, although the Location of hop 0 carried one (user aws, hm:" in lines[0]
    assert "→ 302 → https://aws:***@127.0.0.2:" in lines[1] and "would inject (capture replayed, rule default)" in lines[1]
    assert lines[2].endswith("→ 404 · no credential sent: LOST · CH101")
    assert "this capture was made without credhop" in lines[4] and "rule default would inject" in lines[4]
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "report-uv-0.5.25-capture.txt").write_text(proc.stdout)

    # mitmproxy's own HAR of the same run tells the same story
    assert shape(chains_of(capture.har)) == shape(chains_of(capture.flows))
    both = credhop("report", str(capture.flows), str(capture.har))  # several files merge
    assert both.returncode == 1 and both.stdout.count("✗ FAILED chain") == 2

    assert_no_leak(all_reports(capture.flows, tmp_path) + all_reports(capture.har, tmp_path) + both.stdout,
                   forms, "reports of the uv 0.5.25 capture")
    assert_no_leak(result.output + proxy.output, forms, "uv and mitmdump output")


@pytest.mark.parametrize(("client", "unauth", "status", "verdict"), [
    ("pip", 401, 0, "ok"),  # pip retries the 401 with the Location's credential and installs
    ("curl", 401, 1, "failed"),  # curl -L drops the userinfo: CH101
])
def test_flow_files_of_pip_and_curl_against_the_401_index(client, unauth, status, verdict, registry_factory,
                                                          tmp_path, forms):
    registry = registry_factory("https", unauth)
    proxy, capture = capturing_proxy(tmp_path, registry.test_ca)
    with proxy:
        result = CLIENTS[client](registry, tmp_path / client, proxy)
    assert (result.returncode == 0) == (verdict == "ok"), scrub(result.output[-2000:])
    proc = credhop("report", str(capture.flows))
    assert proc.returncode == status, proc.stdout + proc.stderr[-2000:]
    chains = chains_of(capture.flows)
    credential_chains = [c for c in chains if "CH110" in {f.code for f in c.findings}]
    assert credential_chains and {c.verdict for c in credential_chains} == {verdict}
    if verdict == "failed":
        assert proc.stdout.splitlines()[0].startswith("✗ FAILED chain") and "CH101" in proc.stdout.splitlines()[0]
    else:
        retried = [h for c in credential_chains for h in c.main if h.retry]
        assert retried and all(h.status == 200 and h.move == "forwarded" for h in retried)
    assert shape(chains_of(capture.har)) == shape(chains)
    assert_no_leak(all_reports(capture.flows, tmp_path) + all_reports(capture.har, tmp_path), forms,
                   f"reports of the {client} capture")


# -- replayed captures say what the live addon says about the same traffic -------------------------------


@pytest.mark.parametrize(("client", "scheme", "unauth"), [
    ("uv-0.5.25", "https", 404), ("pip", "https", 401), ("curl", "https", 401), ("curl", "http", 404),
])
def test_replayed_captures_match_the_live_addon(client, scheme, unauth, registry_factory, tmp_path, forms):
    registry = registry_factory(scheme, unauth)
    proxy, capture = capturing_proxy(tmp_path, registry.test_ca, live_credhop=True)
    with proxy:
        CLIENTS[client](registry, tmp_path / client, proxy)
    live = diagnose(parse_records(capture.hoplog.read_text().splitlines()).records)
    assert live and any("CH110" in {f.code for f in c.findings} for c in live)
    replayed = chains_of(capture.flows, key=capture.key)
    assert shape(replayed) == shape(live)
    assert shape(chains_of(capture.har, key=capture.key)) == shape(live)
    # with the proxy's key the fingerprints are the proxy's too
    live_fps = {h.fingerprint for c in live for h in c.hops if h.fingerprint}
    assert live_fps and live_fps == {h.fingerprint for c in replayed for h in c.hops if h.fingerprint}
    # and the records are the ones the addon wrote, field for field (ids and times aside)
    def records(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        drop = {"ts", "flow", "chain", "replay", "v", "instance"}  # instance: the proxy's name, not a decision
        return sorted((json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True) for r in rs))
    assert records(collect([str(capture.flows)], fingerprint_key=capture.key.read_bytes().strip()).records) == \
        records(parse_records(capture.hoplog.read_text().splitlines()).records)


# -- a real Chromium following the fixture's redirect ------------------------------------------------------


@pytest.fixture
def chromium_binary() -> str:
    return tool("CREDHOP_CHROMIUM", "chromium")


def test_chromium_har_gives_the_same_chains_as_the_flow_file(chromium_binary, registry_factory, tmp_path, forms):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (Playwright)")
    registry = registry_factory("http", 404)
    proxy, capture = capturing_proxy(tmp_path, registry.test_ca, browser=True)
    browser_har = tmp_path / "chromium.har"
    profile = tmp_path / "chromium-profile"
    with proxy:
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile), executable_path=chromium_binary, headless=True, record_har_path=str(browser_har),
                args=[*CHROMIUM_FLAGS, f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>"],
                env={**clean_env(tmp_path / "chromium-home")})
            try:
                page = context.new_page()
                response = page.goto(f"{registry.simple_url}{PACKAGE}/", timeout=30_000)
                assert response is not None and response.status == 404
            finally:
                context.close()
    from mitmproxy import io as mitmio

    with capture.flows.open("rb") as f:
        flows = list(mitmio.FlowReader(f).stream())
    assert {f.request.host for f in flows if f.server_conn.timestamp_start} <= {"127.0.0.1", "127.0.0.2"}
    assert "error establishing server connection" not in proxy.output  # nothing tried to leave loopback
    entries = [e for e in json.loads(browser_har.read_text())["log"]["entries"]
               if e["request"]["url"].startswith(("http://127.", "http://aws:"))]
    assert [e["response"]["status"] for e in entries[:2]] == [302, 404]
    recorded_with_userinfo = "@127.0.0.2" in entries[1]["request"]["url"]  # bools: failures print no secret
    index_got_a_credential = bool(registry.index.headers_seen("authorization"))
    assert recorded_with_userinfo  # Chromium records the follow-up's URL with the userinfo
    assert registry.index.requests and not index_got_a_credential

    proc = credhop("report", str(browser_har))
    assert proc.returncode == 1, proc.stderr[-2000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("✗ FAILED chain") and "client chromium.har (Playwright)" in first
    assert "CH101 credential-lost-on-redirect" in first
    (REPO / "artifacts").mkdir(exist_ok=True)
    (REPO / "artifacts" / "report-chromium-har.txt").write_text(proc.stdout)

    from_flows = chains_of(capture.flows)
    assert shape(chains_of(browser_har)) == shape(from_flows) == shape(chains_of(capture.har))
    assert [c.verdict for c in from_flows] == ["failed"]
    assert_no_leak(all_reports(browser_har, tmp_path) + all_reports(capture.flows, tmp_path), forms,
                   "reports of the Chromium capture")


# -- presigned download hops -----------------------------------------------------------------------------


@pytest.fixture
def presigned(pki, wheel, token):
    signature, credential = Secret(secrets.token_hex(32)), Secret(f"AKIA{secrets.token_hex(8).upper()}/20261202/"
                                                                  "us-east-1/s3/aws4_request")
    index, store = start_presigned("aws", token, wheel, signature, credential, tls=pki.server_context())
    yield index, store, secret_forms(signature, credential)
    index.stop()
    store.stop()


@dataclass
class _Registry:  # what the client runners need of a registry
    index: Any
    redirector: Any
    ca: Path | None = None

    @property
    def simple_url(self) -> str:
        return self.redirector.simple_url


def test_presigned_download_is_its_own_chain_with_credhop(presigned, pki, tmp_path, forms):
    from tests.fixtures.registry import Redirector

    index, store, signed_forms = presigned
    redirector = Redirector(index.credentials_url("/simple/"), tls=pki.server_context()).start()
    try:
        with Mitmdump(tmp_path / "proxy", pki.ca_cert) as proxy:  # credhop injecting
            result = CLIENTS["uv"](_Registry(index, redirector), tmp_path / "uv", proxy)
    finally:
        redirector.stop()
    assert result.returncode == 0, scrub(result.output[-3000:])
    storage_saw_a_token = bool(store.headers_seen("authorization"))  # a bool: a failure must not print it
    assert store.requests and not storage_saw_a_token

    chains = diagnose(parse_records(proxy.hoplog.read_text().splitlines()).records)
    index_chains = [c for c in chains if any(h.fingerprint for h in c.hops)]
    signed_chains = [c for c in chains if any(h.signed for h in c.hops)]
    assert index_chains and all(c.verdict == "ok" for c in index_chains)
    assert not any(h.signed for c in index_chains for h in c.hops)  # not drawn as part of the index chain
    assert signed_chains and all(c.id.split("~")[0] in {i.id for i in index_chains} for c in signed_chains)
    for chain in signed_chains:
        assert chain.verdict == "ok" and not chain.findings
        assert [h.move for h in chain.main][-1] == "signed"
    proc = credhop("report", str(proxy.hoplog))
    assert proc.returncode == 0 and "no client credential: the presigned URL carries its own" in proc.stdout
    assert "X-Amz-Signature=REDACTED" in proc.stdout
    assert_no_leak(all_reports(proxy.hoplog, tmp_path), forms | signed_forms, "reports of the presigned run")


def test_authorization_leaked_to_a_presigned_url(presigned, pki, tmp_path, forms, token):
    index, store, signed_forms = presigned
    proxy, capture = capturing_proxy(tmp_path, pki.ca_cert)
    wd = tmp_path / "curl"
    wd.mkdir()
    with proxy:  # curl --location-trusted re-sends its -u credential to the storage origin
        result = run([tool("CREDHOP_CURL", "curl"), "-sS", "-L", "--location-trusted", "-u", f"aws:{token}",
                      "--proxy", proxy.url, "--cacert", str(proxy.ca_cert), "-o", str(wd / "out"),
                      index.file_url], clean_env(wd / "home"), wd)
    assert result.returncode == 0 and b"Only one auth mechanism allowed" in (wd / "out").read_bytes()
    storage_got_authorization = bool(store.headers_seen("authorization"))
    assert storage_got_authorization

    proc = credhop("report", str(capture.flows))
    assert proc.returncode == 1, proc.stderr[-2000:]
    [chain] = [c for c in chains_of(capture.flows) if any(h.signed for h in c.hops)]
    codes = {f.code for f in chain.findings}
    assert {"CH205", "CH201"} <= codes and not codes & {"CH101", "CH102", "CH103", "CH104"}
    assert chain.main[-1].status == 400 and chain.main[-1].move == "leaked"
    assert "CH205 authorization-sent-to-signed-url" in proc.stdout
    assert shape(chains_of(capture.har)) == shape(chains_of(capture.flows))
    assert_no_leak(all_reports(capture.flows, tmp_path) + all_reports(capture.har, tmp_path) + result.output,
                   forms | signed_forms, "reports of the leak to a presigned URL")
