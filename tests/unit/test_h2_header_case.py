"""The injected header's name on the wire: lower-case on HTTP/2 (RFC 9113 §8.2.1), as the rule
spells it on HTTP/1.

With a capital letter mitmproxy lowercases the name itself and logs "Lowercased ... header" on every
h2 request. End to end over real h2: tests/e2e/test_http2.py.
"""

from __future__ import annotations

import pytest
from mitmproxy.test import taddons, tflow

from credhop.addon import CredHop

RULES = """\
rules:
  - name: gitlab
    match: {host: gitlab.example}
    action: inject
    header: {name: PRIVATE-TOKEN, value: "{password}"}
  - name: registry
    match: {host: registry.example}
    action: inject
"""
CLIENT = ("10.0.0.5", 40000)


@pytest.fixture
def addon(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "rules.yaml").write_text(RULES)
    addon = CredHop()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, credhop_rules=str(tmp_path / "rules.yaml"))
        yield addon
        addon.done()


def injected_names(addon: CredHop, host: str, http_version: str) -> list[bytes]:
    f = tflow.tflow(resp=True)
    f.request.url = "https://redirector.example/simple/pkg/"
    f.client_conn.peername = CLIENT
    f.response.status_code = 302
    f.response.headers["location"] = f"https://aws:t0ken@{host}/simple/pkg/"
    addon.responseheaders(f)
    addon.response(f)
    follow = tflow.tflow()
    follow.request.url = f"https://{host}/simple/pkg/"
    follow.request.http_version = http_version
    follow.client_conn.peername = CLIENT
    before = {name for name, _ in follow.request.headers.fields}
    addon.requestheaders(follow)
    return [name for name, _ in follow.request.headers.fields if name not in before]


@pytest.mark.parametrize(("host", "name"), [("registry.example", b"Authorization"),
                                           ("gitlab.example", b"PRIVATE-TOKEN")])
def test_injected_header_name_is_lower_case_on_http2_only(addon, host, name):
    assert injected_names(addon, host, "HTTP/2.0") == [name.lower()]
    assert injected_names(addon, host, "HTTP/1.1") == [name]
