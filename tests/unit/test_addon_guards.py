"""Which flows the hooks act on: only live ones from real clients, not yet answered or killed
(issue 12, defects 1 and 2), and 3xx responses that other addons made."""

from __future__ import annotations

import logging

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import tflow

from tests.unit.addon_helpers import (
    ENCODED,
    TOKEN,
    basic,
    follow,
    redirect,
    run_redirect,
    send,
)

LOCATION = f"https://aws:{ENCODED}@registry.example/s/"


def test_a_flow_loaded_from_a_file_changes_nothing_and_arms_nothing(hop, caplog):
    # mitmdump -r / mitmweb open a capture: its 3xx must not re-arm a credential for live clients
    f = redirect(LOCATION)
    f.live = False
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        hop.responseheaders(f)
        hop.response(f)
    assert f.response.headers["location"] == LOCATION
    assert not f.marked and not f.comment and "credhop" not in f.metadata
    assert hop.records() == [] and len(hop.addon.store) == 0 and len(hop.addon.pending) == 0
    assert not [r for r in caplog.records if r.name == "credhop"]
    assert "authorization" not in send(hop, "https://registry.example/s/").request.headers


def test_a_loaded_follow_up_neither_gets_nor_uses_up_a_credential(hop):
    run_redirect(hop, LOCATION)
    loaded = follow("https://registry.example/s/")
    loaded.live = False
    hop.requestheaders(loaded)
    assert "authorization" not in loaded.request.headers
    live = send(hop, "https://registry.example/s/")
    injected = live.request.headers.get("authorization") == basic("aws", TOKEN)  # a bool: failures print no secret
    assert injected
    assert [r["hop"] for r in hop.records() if r["event"] == "inject"] == [1]


def test_a_replayed_request_gets_nothing_and_its_3xx_arms_nothing(hop):
    run_redirect(hop, LOCATION)
    replay = follow("https://registry.example/s/")
    replay.is_replay = "request"
    hop.requestheaders(replay)
    assert "authorization" not in replay.request.headers
    again = redirect(f"https://aws:{ENCODED}@other.registry.example/s/".replace("other.", ""))
    again.is_replay = "request"
    hop.responseheaders(again)
    hop.response(again)
    assert "aws:" in again.response.headers["location"] and not again.marked
    assert [r["event"] for r in hop.records()] == ["redirect"]  # only the live one


def test_a_request_another_addon_answered_gets_nothing_and_uses_up_nothing(hop):
    # a 407 from --proxyauth: the real follow-up after it must still be recognised, so the leak
    # it carries is stripped as its rule says
    own = [("Authorization", basic("me", "my-own-secret"))]
    first = redirect("https://b.strip-leaks.example/y", url="https://a.example/x")
    first.request.headers["Authorization"] = own[0][1]
    hop.requestheaders(first)
    hop.responseheaders(first)
    answered = follow("https://b.strip-leaks.example/y", headers=own)
    answered.response = http.Response.make(407)
    hop.requestheaders(answered)
    assert answered.request.headers["authorization"] == own[0][1] and not answered.marked
    real = send(hop, "https://b.strip-leaks.example/y", headers=own)
    assert "authorization" not in real.request.headers
    assert [(r["event"], r["action"]) for r in hop.records() if r["event"] == "leak"] == [("leak", "strip")]


def test_a_killed_request_gets_nothing(hop):
    run_redirect(hop, LOCATION)
    killed = follow("https://registry.example/s/")
    killed.error = mflow.Error(mflow.Error.KILLED_MESSAGE)
    hop.requestheaders(killed)
    assert "authorization" not in killed.request.headers
    assert "authorization" in send(hop, "https://registry.example/s/").request.headers


def test_a_3xx_made_by_another_addon_is_handled_in_response(hop):
    # server replay and map_local answer in `request`: responseheaders never runs for them
    f = tflow.tflow()
    f.request.url = "https://redirector.example/simple/pkg/"
    f.client_conn.peername = ("10.0.0.5", 40000)
    f.response = http.Response.make(302, f'<a href="{LOCATION}">moved</a>', {"location": LOCATION})
    f.is_replay = "response"
    hop.response(f)
    assert f.response.headers["location"] == "https://registry.example/s/"
    assert "aws:" not in f.response.text and "registry.example/s/" in f.response.text
    assert "authorization" in send(hop, "https://registry.example/s/").request.headers
    blocked = tflow.tflow()
    blocked.request.url = "https://redirector.example/b/"
    blocked.response = http.Response.make(302, b"", {"location": f"https://aws:{ENCODED}@blocked.example/"})
    hop.response(blocked)
    assert blocked.response.status_code == 403 and b"blocked" in blocked.response.content


def test_a_3xx_seen_in_responseheaders_is_not_handled_twice(hop):
    f = run_redirect(hop, LOCATION)
    assert [r["event"] for r in hop.records()] == ["redirect"] and f.comment.count("\n") == 0


def test_an_internal_error_fails_closed_with_a_502_and_names_no_secret(hop, monkeypatch, caplog):
    from credhop import hop as addon_module

    run_redirect(hop, LOCATION)

    def broken(*args, **kwargs):
        raise KeyError(f"aws:{ENCODED}")  # an exception whose text would leak

    monkeypatch.setattr(addon_module, "decide_follow_up", broken)
    monkeypatch.setattr(addon_module, "decide_redirect", broken)
    with caplog.at_level(logging.DEBUG):
        g = send(hop, "https://registry.example/s/")
        f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/t/")
    assert g.response.status_code == 502 and b"credhop" in g.response.content
    assert f.response.status_code == 502 and "location" not in f.response.headers
    assert hop.addon.counters["internal_errors"] == 2
    assert "KeyError" in caplog.text and ENCODED not in caplog.text


def test_a_final_answer_is_delivered_even_if_bookkeeping_fails(hop, monkeypatch):
    run_redirect(hop, LOCATION)
    g = send(hop, "https://registry.example/s/")
    g.response = tflow.tresp(status_code=200)

    async def broken(*args, **kwargs):
        raise RuntimeError("bookkeeping")

    monkeypatch.setattr(hop.addon.hops, "close", broken)
    hop.response(g)
    assert g.response.status_code == 200 and hop.addon.counters["internal_errors"] == 1
