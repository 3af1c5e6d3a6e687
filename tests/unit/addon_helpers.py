"""Shared set-up for the addon's unit tests: a configured CredHop in a taddons context, a clock
the tests move, and flows made the way mitmproxy hands them to the hooks."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow

from credhop.addon import CredHop
from tests.secrets_check import Secret, secret_forms

TOKEN = Secret("t:k@/%n-SECRET")
ENCODED = "t%3Ak%40%2F%25n-SECRET"
FORMS = secret_forms(TOKEN)
CLIENT = ("10.0.0.5", 40000)

RULES = """\
rules:
  - name: blocker
    match: {host: blocked.example}
    action: block
  - name: stripper
    match: {host: strip.example}
    action: strip
  - name: keeper
    match: {host: keep.example}
    action: keep
  - name: gitlab
    match: {host: gitlab.example}
    action: inject
    header: {name: PRIVATE-TOKEN, value: "{password}"}
  - name: override
    match: {host: override.example}
    action: inject
    override_client_header: true
  - name: short
    match: {host: short.example}
    action: inject
    ttl: 5
  - name: registry
    match: {host: ["registry.example", "plain.example", "127.0.0.2"]}
    action: inject
  - name: careful
    match: {host: "*.strip-leaks.example"}
    action: inject
    on_leak: strip
"""


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sync(result):
    """Run an async hook to completion; plain hooks pass through."""
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.fixture
def hop(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # mitmproxy's confdir (fingerprint key) goes here
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    log_path = tmp_path / "hops.jsonl"
    clock = Clock()
    addon = CredHop(clock=clock)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, credhop_rules=str(rules), credhop_log=str(log_path))

        def records():
            return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []

        yield SimpleNamespace(
            addon=addon, tctx=tctx, rules=rules, log=log_path, records=records, clock=clock,
            requestheaders=lambda f: sync(addon.requestheaders(f)),
            responseheaders=lambda f: sync(addon.responseheaders(f)),
            response=lambda f: sync(addon.response(f)),
            error=lambda f: sync(addon.error(f)),
        )
        addon.done()


def redirect(location, url="https://redirector.example/simple/pkg/", status=302, client=CLIENT, extra=()):
    f = tflow.tflow(resp=True)
    f.request.url = url
    f.client_conn.peername = client
    f.response.status_code = status
    f.response.headers["location"] = location
    for value in extra:
        f.response.headers.add("location", value)
    return f


def follow(url, client=CLIENT, headers=()):
    f = tflow.tflow()
    f.request.url = url
    f.client_conn.peername = client
    for k, v in headers:
        f.request.headers[k] = v
    return f


def run_redirect(h, location, **kw):
    f = redirect(location, **kw)
    h.responseheaders(f)
    h.response(f)
    return f


def send(h, url, **kw):
    f = follow(url, **kw)
    h.requestheaders(f)
    return f


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
