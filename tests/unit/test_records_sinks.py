"""Typed hop records and the sinks they go to: what is written, what is counted, when a chain is judged."""

from __future__ import annotations

import json
import logging

import pytest

from credhop.diagnosis import diagnose, parse_records
from credhop.records import Action, ErrorRecord, Event, InjectRecord, RedirectRecord, ResponseRecord, Why
from credhop.scrub import Redactor
from credhop.sinks import COUNTERS, FOLLOW_GRACE, RETRY_GRACE, Counters, EventLog, HopLogFile, RecentChains, level_of

BASE = dict(ts=1.5, client="10.0.0.5", chain="c1", hop=0, flow="f", method="GET",
            url="https://redirector.example/simple/pkg/")


def redirect(**kw) -> RedirectRecord:
    return RedirectRecord(**{**BASE, "status": 302, **kw})


def test_codes_are_plain_strings_on_the_wire():
    record = redirect(action=Action.KEEP, why=Why.NO_RULE, reason="no rule matched", fingerprint="hm:1")
    data = json.loads(json.dumps(record.as_dict()))
    assert data["event"] == "redirect" and data["action"] == "keep" and data["why"] == "no-rule"
    assert f"{Why.NO_RULE}" == "no-rule" and Why.NO_RULE == "no-rule"
    assert "retry" not in data and "observe" not in data and "ttl" not in data  # false and empty left out
    assert data["user"] is None  # kept: null means the user name is the token


def test_the_diagnosis_reads_what_the_writer_writes_and_version_1_logs_alike(tmp_path):
    log = tmp_path / "hops.jsonl"
    sink = HopLogFile(log, Redactor())
    sink.emit(redirect(action=Action.INJECT, location="https://aws:***@registry.example/simple/pkg/",
                       target="https://registry.example", rule="default", user="aws", fingerprint="hm:1", ttl=600))
    sink.emit(ResponseRecord(**{**BASE, "hop": 1, "flow": "g", "url": "https://registry.example/simple/pkg/"},
                             status=404))
    sink.close()
    v1 = ('{"v":1,"ts":1.0,"event":"redirect","client":"10.0.0.6","chain":"old","hop":0,"flow":"g",'
          '"method":"GET","url":"https://r.example/","status":302,"location":"https://aws:***@x.example/",'
          '"target":"https://x.example","action":"keep","rule":null,"reason":"no rule matched",'
          '"user":"aws","fingerprint":"hm:2"}')
    read = parse_records(log.read_text().splitlines() + [v1])
    chains = {c.id: c for c in diagnose(read.records)}
    assert chains["c1"].verdict == "failed" and "CH101" in {f.code for f in chains["c1"].findings}
    assert chains["old"].hops[0].why == Why.NO_RULE  # words of a v1 log read as the code
    assert all(json.loads(line)["v"] == 1 for line in log.read_text().splitlines())


def test_hop_log_lines_are_scrubbed_with_the_configured_headers(tmp_path):
    log = tmp_path / "hops.jsonl"
    sink = HopLogFile(log, Redactor({"x-jfrog-art-api"}))
    sink.emit(ErrorRecord(**BASE, reason="upstream said X-JFrog-Art-Api: AKCpSECRET"))
    sink.close()
    assert "AKCpSECRET" not in log.read_text() and "X-JFrog-Art-Api: ***" in log.read_text()


@pytest.mark.parametrize(("record", "level"), [
    (redirect(action=Action.NONE), logging.DEBUG),
    (redirect(action=Action.NONE, why=Why.LOCATION_MISSING), logging.WARNING),
    (redirect(action=Action.INJECT, fingerprint="hm:1"), logging.INFO),
    (ResponseRecord(**BASE, status=200), logging.DEBUG),
    (ErrorRecord(**BASE, reason="refused"), logging.WARNING),
    # carrying out a decision is debug (one line per download would flood the log); not doing it is news
    (InjectRecord(**BASE, rule="r", header="Authorization", user="aws", fingerprint="hm:1",
                  action=Action.INJECT), logging.DEBUG),
    (InjectRecord(**BASE, rule="r", header="Authorization", user="aws", fingerprint="hm:1",
                  action=Action.SKIP, why=Why.CLIENT_HEADER), logging.INFO),
])
def test_event_log_levels(record, level):
    assert level_of(record) == level


def test_event_log_lines_are_one_line_whatever_the_values(caplog):
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        EventLog(Redactor()).emit(redirect(action=Action.BLOCK, fingerprint="hm:1", user="a\r\nforged\x1b[2K\u2028"))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line


def test_counters_are_declared_and_derived_from_records():
    counters = Counters()
    counters.emit(redirect(action=Action.INJECT, fingerprint="hm:1"))
    counters.emit(redirect(action=Action.KEEP, fingerprint="hm:1", rule="default", why=Why.SWAP_REFUSED))
    counters.emit(redirect(action=Action.NONE, why=Why.LOCATION_UNPARSEABLE))
    counters.emit(InjectRecord(**BASE, rule="r", header="Authorization", user=None, fingerprint="hm:1",
                               action=Action.SKIP, why=Why.CLIENT_HEADER))
    assert (counters["redirects"], counters["action_inject"], counters["action_keep"], counters["inject_refused"],
            counters["location_unparseable"], counters["inject_skipped_client_header"]) == (3, 1, 1, 1, 1, 1)
    assert set(counters.counts) <= set(COUNTERS)
    with pytest.raises(KeyError):
        counters.add("typo")


def test_a_chain_is_judged_when_it_ends_and_warned_about_once():
    failed = []
    recent = RecentChains(failed.append)
    recent.emit(redirect(action=Action.KEEP, fingerprint="hm:1", rule=None, why=Why.NO_RULE,
                         location="https://aws:***@registry.example/", target="https://registry.example"))
    assert recent.diagnosed == 0
    follow = {**BASE, "hop": 1, "flow": "g", "url": "https://registry.example/"}
    recent.emit(ResponseRecord(**follow, status=401))  # pip will ask again: not the end yet
    assert recent.diagnosed == 0
    recent.emit(ResponseRecord(**{**follow, "retry": True}, status=401))
    assert recent.diagnosed == 1 and len(failed) == 1
    recent.emit(ResponseRecord(**{**follow, "reuse": True}, status=403))  # already failed: no second warning
    assert len(failed) == 1 and recent.diagnosed == 1
    assert {r["event"] for r in recent.records()} == {Event.REDIRECT, Event.RESPONSE}


def test_a_401_without_a_retry_ends_its_chain_after_the_grace_and_with_a_retry_not_twice():
    # curl and uv never ask again after a 401: their chain is judged once RETRY_GRACE has passed
    now = [100.0]
    failed, judged = [], []
    recent = RecentChains(failed.append, clock=lambda: now[0], on_judged=judged.append)
    follow = {**BASE, "hop": 1, "url": "https://registry.example/"}
    for chain in ("curl", "pip"):
        recent.emit(redirect(chain=chain, action=Action.KEEP, fingerprint="hm:1", rule=None, why=Why.NO_RULE,
                             location="https://aws:***@registry.example/", target="https://registry.example"))
        recent.emit(ResponseRecord(**{**follow, "chain": chain, "flow": f"{chain}-1"}, status=401))
    now[0] += RETRY_GRACE / 2
    recent.judge_due()
    assert failed == [] and judged == []  # pip may still ask again
    recent.emit(ResponseRecord(**{**follow, "chain": "pip", "flow": "pip-2", "retry": True}, status=200))
    assert [c.id for c in judged] == ["pip"] and failed == []  # its retry with credentials worked
    now[0] += RETRY_GRACE
    recent.judge_due()
    assert [c.id for c in failed] == ["curl"] and failed[0].verdict == "failed"
    assert [c.id for c in judged] == ["pip", "curl"]
    recent.judge_due(everything=True)  # nothing left to judge twice
    assert len(judged) == 2


def test_a_credential_redirect_never_followed_is_judged_after_the_grace():
    # observe mode, uv 0.5.25 through an http:// proxy: mitmproxy refuses its follow-up before any flow
    # exists, so the redirect is the chain's last record (CH503); the proxy warns about it all the same
    now = [100.0]
    failed, judged = [], []
    recent = RecentChains(failed.append, clock=lambda: now[0], on_judged=judged.append)
    observed = dict(action=Action.INJECT, observe=True, fingerprint="hm:1", rule="registry", user="aws",
                    location="http://aws:***@registry.example/", target="http://registry.example")
    recent.emit(redirect(chain="refused", **observed))
    recent.emit(redirect(chain="stopped", **{**observed, "location": "https://aws:***@registry.example/",
                                              "target": "https://registry.example"}))
    recent.emit(redirect(chain="followed", **observed))
    recent.emit(ResponseRecord(**{**BASE, "chain": "followed", "hop": 1, "flow": "g",
                                  "url": "http://registry.example/"}, status=200))
    now[0] += FOLLOW_GRACE / 2
    recent.judge_due()
    assert failed == [] and [c.id for c in judged] == ["followed"]
    now[0] += FOLLOW_GRACE
    recent.judge_due()
    assert [c.id for c in failed] == ["refused"] and failed[0].findings[0].code == "CH503"
    assert {c.id: c.verdict for c in judged} == {"followed": "ok", "refused": "failed", "stopped": "unknown"}
    recent.judge_due(everything=True)
    assert len(judged) == 3 and len(failed) == 1


def test_every_awaited_401_chain_is_judged_at_shutdown():
    failed = []
    recent = RecentChains(failed.append, clock=lambda: 0.0)
    recent.emit(redirect(action=Action.KEEP, fingerprint="hm:1", rule=None, why=Why.NO_RULE,
                         location="https://aws:***@registry.example/", target="https://registry.example"))
    recent.emit(ResponseRecord(**{**BASE, "hop": 1, "flow": "g", "url": "https://registry.example/"}, status=401))
    recent.judge_due()
    assert failed == []
    recent.judge_due(everything=True)
    assert len(failed) == 1


def test_the_redactor_masks_new_secrets_at_once_however_many():
    r = Redactor()
    r.remember({"first-secret-1"})
    assert r("x first-secret-1 y") == "x *** y"
    for i in range(200):  # a client sending a new credential with every redirect
        r.remember({f"rotating-secret-{i:03d}"})
        assert r(f"GET /p/rotating-secret-{i:03d}/x") == "GET /p/***/x"
    assert r("first-secret-1 rotating-secret-000") == "*** ***"


def test_hop_log_lines_are_what_json_dumps_writes(tmp_path):
    # the sink keeps one encoder: its lines must stay byte for byte those of json.dumps (ASCII, no spaces)
    log = tmp_path / "hops.jsonl"
    redactor = Redactor()
    record = ErrorRecord(**BASE, reason="é \u2028 \ud800 \x1b nan-free", instance="ü")
    sink = HopLogFile(log, redactor)
    sink.emit(record)
    sink.close()
    expected = json.dumps({"v": 1, **redactor.record(record.as_dict())}, separators=(",", ":")) + "\n"
    assert log.read_bytes() == expected.encode("ascii")
