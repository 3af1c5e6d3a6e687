"""Issue 26: observe mode with uv 0.5.25 over an http:// proxy must not pass a failed install.

credhop only observes, so uv gets the Location with its userinfo and puts it into its absolute request line
(`GET http://aws:TOKEN@127.0.0.2:PORT/… HTTP/1.1`); mitmproxy refuses that line with 400 before any addon
sees a flow, so the hop log holds the redirect and nothing after it. The records below are copied from such
a real run (tests/e2e/test_observe.py makes it); the hop log never held the token.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from credhop.cli import main
from credhop.diagnosis import diagnose

# uv 0.5.25 through mitmdump with credhop_observe=true against the fixture over http (index answers 404)
OBSERVED = [
    {"v": 1, "ts": 1796646314.147392, "client": "127.0.0.1", "chain": "e383e4ad6342efe3", "hop": 0,
     "flow": "d9665fb9-48d3-476a-a677-30489953cef0", "method": "GET",
     "url": "http://127.0.0.1:37511/simple/credhop-demo-pkg/", "instance": "vm:60879", "event": "redirect",
     "status": 302, "action": "inject",
     "location": "http://aws:***@127.0.0.2:36873/pypi/python/simple/credhop-demo-pkg/",
     "target": "http://127.0.0.2:36873", "relative": False, "rule": "default", "user": "aws",
     "fingerprint": "hm:028b7d6874dcdf47", "observe": True},
]

# the same install with credhop injecting (it installs): its redirect differs only in the run's values
INJECTED = [
    {**{k: v for k, v in OBSERVED[0].items() if k != "observe"},
     "ts": 1796646427.62288, "chain": "739869e7533a5844", "flow": "62485211-7720-42db-969a-5d5076e50be3",
     "url": "http://127.0.0.1:46275/simple/credhop-demo-pkg/", "instance": "vm:55117",
     "location": "http://aws:***@127.0.0.2:34533/pypi/python/simple/credhop-demo-pkg/",
     "target": "http://127.0.0.2:34533", "fingerprint": "hm:404a7bd4c08757aa", "ttl": 600},
    {"v": 1, "ts": 1796646427.627048, "client": "127.0.0.1", "chain": "739869e7533a5844", "hop": 1,
     "flow": "297e5deb-3158-40b7-8714-9348f1550102", "method": "GET",
     "url": "http://127.0.0.2:34533/pypi/python/simple/credhop-demo-pkg/", "instance": "vm:55117",
     "event": "inject", "rule": "default", "header": "Authorization", "user": "aws",
     "fingerprint": "hm:404a7bd4c08757aa", "action": "inject"},
    {"v": 1, "ts": 1796646427.633306, "client": "127.0.0.1", "chain": "739869e7533a5844", "hop": 1,
     "flow": "297e5deb-3158-40b7-8714-9348f1550102", "method": "GET",
     "url": "http://127.0.0.2:34533/pypi/python/simple/credhop-demo-pkg/", "instance": "vm:55117",
     "event": "response", "status": 200,
     "sent": [{"header": "authorization", "scheme": "Basic", "fingerprint": "hm:404a7bd4c08757aa",
               "injected": True}]},
    {"v": 1, "ts": 1796646427.637346, "client": "127.0.0.1", "chain": "739869e7533a5844", "hop": 1,
     "method": "HEAD", "url": "http://127.0.0.2:34533", "reuse": True, "instance": "vm:55117",
     "event": "downloads", "rule": "default", "header": "Authorization", "user": "aws",
     "fingerprint": "hm:404a7bd4c08757aa", "count": 1, "bytes": 0, "statuses": {"200": 1},
     "first": 1796646427.637346},
    {"v": 1, "ts": 1796646427.643935, "client": "127.0.0.1", "chain": "739869e7533a5844", "hop": 1,
     "method": "GET", "url": "http://127.0.0.2:34533", "reuse": True, "instance": "vm:55117",
     "event": "downloads", "rule": "default", "header": "Authorization", "user": "aws",
     "fingerprint": "hm:404a7bd4c08757aa", "count": 2, "bytes": 2064, "statuses": {"200": 2},
     "first": 1796646427.640002},
]


def observed(**changes: Any) -> list[dict[str, Any]]:
    """The observed redirect, with some fields changed (None removes one)."""
    record = {**copy.deepcopy(OBSERVED[0]), **changes}
    return [{k: v for k, v in record.items() if v is not None}]


def report(tmp_path: Path, records: list[dict[str, Any]], *args: str) -> tuple[int, str]:
    log = tmp_path / "hops.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, err = io.StringIO(), io.StringIO()
    status = main(["report", str(log), *args], out=out, err=err)
    assert not err.getvalue(), err.getvalue()
    return status, out.getvalue()


def test_the_observed_chain_is_failed_with_userinfo_in_request_line_first():
    [chain] = diagnose(OBSERVED)
    assert chain.verdict == "failed"
    top = chain.findings[0]
    assert (top.code, top.name, top.severity, top.hop) == ("CH503", "userinfo-in-request-line", "error", 0)
    assert "http://127.0.0.2:36873" in top.message and "hm:028b7d6874dcdf47" in top.message
    assert "request line" in top.message and "400" in top.message
    assert "credhop_observe=false" in top.hint and "rule default" in top.hint and "inject" in top.hint
    # the more precise finding replaces the generic "follow-up not seen"
    assert {f.code for f in chain.findings} == {"CH503", "CH110"}


def test_credhop_report_exits_1_and_names_the_finding(tmp_path):
    status, out = report(tmp_path, OBSERVED)
    assert status == 1
    first = out.splitlines()[0]
    assert "FAILED" in first and "CH503 userinfo-in-request-line" in first
    assert "1 failed, 0 unknown, 0 ok" in out
    status, text = report(tmp_path, OBSERVED, "--format", "json")
    [chain] = json.loads(text)["chains"]
    assert status == 1 and chain["verdict"] == "failed" and chain["findings"][0]["code"] == "CH503"
    assert report(tmp_path, OBSERVED, "--finding", "userinfo-in-request-line")[0] == 1


def test_the_same_install_injected_is_ok(tmp_path):
    [chain] = diagnose(INJECTED)
    assert chain.verdict == "ok" and [f.code for f in chain.findings] == ["CH110"]
    assert report(tmp_path, INJECTED)[0] == 0


def test_observe_and_strip_fails_the_same_way():
    [chain] = diagnose(observed(action="strip"))
    assert chain.verdict == "failed" and chain.findings[0].code == "CH503"
    assert "strips it" in chain.findings[0].hint


@pytest.mark.parametrize(
    ("why", "records"),
    [("https: the client's CONNECT would have been seen", observed(target="https://127.0.0.2:36873",
      location="https://aws:***@127.0.0.2:36873/pypi/python/simple/credhop-demo-pkg/")),
     ("a replayed capture: no proxy of ours refused anything", observed(replay=True)),
     ("not observed: credhop injected, the client stopped", observed(observe=None, ttl=600)),
     ("not observed: the rule kept the Location", observed(observe=None, action="keep")),
     ("observed, but credhop would have kept it too", observed(action="keep", reason="no rule matched",
                                                                 why="no-rule", rule=None)),
     ("observed, but credhop would refuse plaintext", observed(action="keep", why="plaintext-refused",
                                                               reason="plaintext http destination")),
     ("observed, but no credential in the Location", observed(fingerprint=None, user=None))],
)
def test_other_unfollowed_chains_keep_their_verdict(why, records):
    [chain] = diagnose(records)
    codes = {f.code for f in chain.findings}
    assert "CH503" not in codes, why
    assert chain.verdict == "unknown", why


FOLLOW_UP = {"v": 1, "ts": OBSERVED[0]["ts"] + 0.01, "client": "127.0.0.1", "chain": "e383e4ad6342efe3",
             "hop": 1, "flow": "f2", "method": "GET",
             "url": "http://127.0.0.2:36873/pypi/python/simple/credhop-demo-pkg/"}


@pytest.mark.parametrize(("record", "code"), [({"event": "response", "status": 404}, "CH101"),
                                              ({"event": "error", "reason": "Connection refused"}, "CH501")])
def test_a_follow_up_that_arrived_is_judged_by_what_it_got(record, code):
    # a client that dropped the userinfo reached the index (404: CH101), or the proxy could not reach it
    # (CH501): neither is a request line that mitmproxy refused
    [chain] = diagnose([*OBSERVED, {**FOLLOW_UP, **record}])
    codes = {f.code for f in chain.findings}
    assert code in codes and "CH503" not in codes and chain.verdict == "failed"
