"""`credhop report` on hop logs of real mitmdump runs with real clients, and its HTML page in Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from credhop.cli import main
from credhop.diagnosis import CATALOGUE, diagnose_file
from credhop.html_report import render_html
from credhop.report import render_json, render_markdown, render_text, summary_line
from tests.e2e.harness import REPO, tool
from tests.e2e.report_cases import CASES, Case, Env, ok
from tests.fixtures.server import redirect
from tests.secrets_check import assert_no_leak

CODES = {k.code for k in CATALOGUE}


@pytest.fixture
def env(tmp_path, pki, registry_factory, token, forms):
    env = Env(tmp_path, pki, registry_factory, token, set(forms))
    yield env
    env.close()


def test_every_code_is_produced_by_one_case_and_ruled_out_by_another():
    assert set().union(*(c.present for c in CASES)) == CODES
    assert set().union(*(c.absent for c in CASES)) == CODES
    assert all(not (c.present & c.absent) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_findings_of_a_real_run(case: Case, env: Env):
    hoplog = case.run(env)
    chains, read = diagnose_file(hoplog)
    assert chains and not read.malformed
    found = {f.code for chain in chains for f in chain.findings}
    summary = "\n".join(summary_line(c) for c in chains)
    assert case.present <= found, f"missing {sorted(case.present - found)}:\n{summary}"
    assert not (case.absent & found), f"unexpected {sorted(case.absent & found)}:\n{summary}"

    out, err = io.StringIO(), io.StringIO()
    status = main(["report", str(hoplog)], out=out, err=err)
    assert status == (1 if any(c.has_error() for c in chains) else 0), err.getvalue()
    reports = [out.getvalue(), render_text(chains, color=True), render_markdown(chains), render_json(chains),
               render_html(chains), summary, hoplog.read_text()]
    assert_no_leak("\n".join(reports), env.forms, f"reports of {case.name}")


def test_by_default_a_plain_chain_is_recorded_only_when_it_fails(env: Env):
    # credhop_plain_redirects=failed: a 302 without a credential is set aside; its chain is written
    # when the follow-up fails, and a chain that ended well leaves no record
    server = env.routes()
    server.routes["/good"] = redirect(f"{server.url}/landing")
    server.routes["/landing"] = ok()
    server.routes["/bad"] = redirect(f"{server.url}/gone")
    with env.proxy() as mitm:
        env.curl(mitm, f"{server.url}/good", "-L")
        env.curl(mitm, f"{server.url}/bad", "-L")
    records = [json.loads(line) for line in mitm.hoplog.read_text().splitlines()]
    assert [(r["event"], r["hop"], r["url"].rsplit("/", 1)[1]) for r in records] == \
        [("redirect", 0, "bad"), ("response", 1, "gone")]
    chains, _ = diagnose_file(mitm.hoplog)
    assert [c.verdict for c in chains] == ["failed"]


# -- the uv 0.5.25 story, end to end: the command line, the page, Chromium -------------------------


@pytest.fixture
def uv_observe_log(env: Env) -> Path:
    case = next(c for c in CASES if c.name == "uv-0-5-25-observe-loses-the-credential")
    return case.run(env)


def credhop(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "credhop", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, "NO_COLOR": "1"})


def test_report_of_failing_uv_names_the_lost_credential_first(uv_observe_log: Path, env: Env):
    proc = credhop("report", str(uv_observe_log))
    assert proc.returncode == 1, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("✗ FAILED chain ") and "CH101 credential-lost-on-redirect" in first
    assert "got 404 without a credential, although the Location of hop 0 carried one (user aws, hm:" in first
    assert "credhop_observe=true" in proc.stdout.splitlines()[4]  # the fix, right under the first finding
    for fmt in ("markdown", "json"):
        formatted = credhop("report", str(uv_observe_log), "--format", fmt)
        assert formatted.returncode == 1 and "credential-lost-on-redirect" in formatted.stdout
        assert_no_leak(formatted.stdout, env.forms, f"{fmt} report")
    doc = json.loads(credhop("report", str(uv_observe_log), "--format", "json").stdout)
    assert doc["chains"][0]["findings"][0]["code"] == "CH101"
    assert_no_leak(proc.stdout + proc.stderr, env.forms, "text report")


@pytest.fixture
def chromium_binary() -> str:
    # first in the test's arguments, so a missing browser skips before anything runs
    return tool("CREDHOP_CHROMIUM", "chromium")


def chromium(binary: str, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(profile)})


def test_html_report_renders_in_headless_chromium(chromium_binary: str, uv_observe_log: Path, env: Env,
                                                  tmp_path: Path):
    page = tmp_path / "report.html"
    proc = credhop("report", str(uv_observe_log), "--html", str(page))
    assert proc.returncode == 1 and page.exists(), proc.stderr
    html = page.read_text()
    assert_no_leak(html, env.forms, "HTML report")

    dom = chromium(chromium_binary, "--dump-dom", page.as_uri(), profile=tmp_path / "chromium-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    chain_id = diagnose_file(uv_observe_log)[0][0].id
    assert f'<svg class="chain-diagram" data-chain="{chain_id}"' in text
    assert text.count('class="lane"') == 3  # the client, the redirector, the index
    assert 'data-hop="0"' in text and 'data-hop="1" data-move="lost"' in text
    assert "no credential: LOST" in text and 'data-code="CH101"' in text
    assert "credential in Location: aws" in text

    shot = tmp_path / "report.png"
    result = chromium(chromium_binary, f"--screenshot={shot}", "--window-size=1400,800", "--hide-scrollbars",
                      page.as_uri(), profile=tmp_path / "chromium-shot")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / "report.png")


def test_demo_script(tmp_path: Path):
    env = {**os.environ, "NO_COLOR": "1", "CREDHOP_UV_OLD": tool("CREDHOP_UV_OLD", "uv-0.5.25"),
           "CREDHOP_MITMDUMP": tool("CREDHOP_MITMDUMP", "mitmdump")}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    observe, inject = proc.stdout.split("=== 2.")
    assert "not found in the package registry" in observe and "uv exit status: 1" in observe
    report = observe.split("$ credhop report", 1)[1].splitlines()
    assert report[1].startswith("✗ FAILED chain") and "CH101 credential-lost-on-redirect" in report[1]
    assert "uv exit status: 0" in inject and "✓ ok chain" in inject and "Authorization injected" in inject
