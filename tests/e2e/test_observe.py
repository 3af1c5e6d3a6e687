"""Observe mode with uv 0.5.25 over plain HTTP (issue 26): `credhop report` must fail the install that failed.

credhop only observes, so uv 0.5.25 gets the redirector's `302 Location: http://aws:TOKEN@127.0.0.2:PORT/…`
as it is, keeps the userinfo and puts it into its absolute request line to the proxy; mitmproxy refuses
that line with 400 before any addon sees a flow, and uv prints the URL, token included, in its error. The
hop log then holds the redirect and nothing after it. The same install with credhop injecting works.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from credhop.sinks import FOLLOW_GRACE
from tests.e2e.harness import REPO, Mitmdump
from tests.e2e.test_proxy import wait_for
from tests.e2e.test_clients import CLIENTS, installed
from tests.secrets_check import assert_no_leak, leaks


def credhop_report(hoplog: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "credhop", "report", str(hoplog)], capture_output=True,
                          text=True, cwd=REPO, timeout=60, env={**os.environ, "NO_COLOR": "1"})


def masked(text: str, forms: set[str]) -> str:
    """`text` fit for a failure message: uv's own output holds the token."""
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "<secret>") if form else text
    return "\n".join(text.splitlines()[-30:])


def test_observe_mode_over_http_fails_the_report_and_names_the_request_line(registry_factory, tmp_path, forms):
    registry = registry_factory("http", 404)
    with Mitmdump(tmp_path / "proxy", registry.test_ca, options={"credhop_observe": "true"}) as proxy:
        assert "observe mode (credhop_observe=true): credhop changes nothing" in proxy.output  # said at start
        result = CLIENTS["uv-0.5.25"](registry, tmp_path / "client", proxy)
        # and live: no follow-up came within the grace, so the chain is judged and warned about
        assert wait_for(lambda: " failed: CH503 " in proxy.output, FOLLOW_GRACE + 10), proxy.output[-3000:]
    assert "chains_failed=1" in proxy.output  # the stats line at shutdown
    # what happened: uv sent the userinfo in its request line, mitmproxy answered 400, the index saw nothing
    assert result.returncode != 0 and "400 Bad Request" in result.output, masked(result.output, forms)
    assert leaks(result.output, forms), "uv 0.5.25 no longer prints the token: revisit the observe warning"
    assert "Bad HTTP request line" in proxy.output and not registry.index.requests
    records = proxy.records()
    assert [(r["event"], r["hop"], r["action"], r["observe"]) for r in records] == [("redirect", 0, "inject", True)]

    report = credhop_report(proxy.hoplog)
    assert report.returncode == 1, report.stdout + report.stderr
    first = report.stdout.splitlines()[0]
    assert "FAILED" in first and "CH503 userinfo-in-request-line" in first, report.stdout
    assert "credhop_observe=false" in report.stdout and "1 failed, 0 unknown, 0 ok" in report.stdout
    assert_no_leak(report.stdout + report.stderr, forms, "credhop report output")
    assert_no_leak(proxy.hoplog.read_text() + proxy.output, forms, "hop log and mitmdump output")


def test_the_same_install_through_credhop_injecting_installs_and_reports_ok(registry_factory, tmp_path, forms):
    registry = registry_factory("http", 404)
    with Mitmdump(tmp_path / "proxy", registry.test_ca) as proxy:
        result = CLIENTS["uv-0.5.25"](registry, tmp_path / "client", proxy)
    assert result.returncode == 0 and installed(tmp_path / "client", registry), masked(result.output, forms)

    report = credhop_report(proxy.hoplog)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "0 failed, 0 unknown, 1 ok" in report.stdout and "CH503" not in report.stdout, report.stdout
    assert_no_leak(report.stdout + report.stderr + proxy.hoplog.read_text() + proxy.output, forms,
                   "credhop report, hop log and mitmdump output")
