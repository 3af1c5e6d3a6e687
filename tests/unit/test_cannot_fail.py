"""The live proxy skips the diagnosis of a chain whose records show it cannot have failed
(`diagnosis.cannot_fail`); on random chains, whatever it clears `diagnose` never calls failed."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from credhop.diagnosis import cannot_fail, diagnose

URLS = ["https://r.example/simple/p/", "https://i.example/simple/p/", "https://i.example/files/p.whl",
        "http://i.example/simple/p/", "https://r.example/simple/p/#x", "https://i.example:8443/simple/p/"]
LOCATIONS = ["https://aws:***@i.example/simple/p/", "https://i.example/simple/p/", "/simple/p/",
             "https://r.example/simple/p/", "http://i.example//x", None]


@st.composite
def record(draw, hop: int, good: bool) -> dict:
    # `good` chains lean towards what cannot fail, so the property is tested where it clears chains
    event = draw(st.sampled_from(["redirect", "inject", "response"] if good else
                                 ["redirect", "inject", "response", "leak", "error", "redirect", "response"]))
    r = {"v": 1, "ts": draw(st.floats(0, 10)), "client": "10.0.0.1", "chain": "c", "hop": hop,
         "flow": draw(st.sampled_from(["f0", "f1", "f2", "f3", None])), "method": draw(st.sampled_from(["GET", "POST"])),
         "url": draw(st.sampled_from(URLS[hop:] + URLS[:hop] if good else URLS)), "event": event}
    if draw(st.integers(0, 3 if good else 1)) == 0:
        r["reuse"] = True
    if draw(st.integers(0, 4)) == 0:
        r["retry"] = True
    if event == "redirect":
        r.update(status=draw(st.sampled_from([301, 302, 303, 307])), action=draw(st.sampled_from(
            ["inject", "strip", "keep", "block", "none"])), location=draw(st.sampled_from(LOCATIONS)),
            target=draw(st.sampled_from(["https://i.example", "http://i.example", None])),
            relative=draw(st.booleans()), fingerprint=draw(st.sampled_from(["hm:1", "hm:2", None])),
            observe=draw(st.booleans()))
        if draw(st.integers(0, 12 if good else 2)) == 0:
            r["why"] = draw(st.sampled_from(["location-missing", "location-unparseable", "no-rule",
                                             "plaintext-refused", "swap-refused"]))
            r["reason"] = "words"
    elif event == "response":
        r["status"] = draw(st.sampled_from([200, 200, 204, 304, 302, 401, 404, 500] if good else
                                           [200, 204, 304, 302, 401, 403, 404, 500]))
        if draw(st.booleans()):
            r["sent"] = [{"header": "authorization", "scheme": "Basic", "fingerprint": draw(st.sampled_from(
                ["hm:1", "hm:2"])), "injected": draw(st.booleans())}]
    elif event == "inject":
        r.update(rule="default", header="Authorization", user="aws", fingerprint="hm:1",
                 action=draw(st.sampled_from(["inject", "skip"])))
    elif event == "leak":
        r.update(header="authorization", fingerprint="hm:2", kind="other-host", came_from="https://r.example",
                 target="https://i.example", action=draw(st.sampled_from(["log", "strip"])))
    else:
        r["reason"] = "connection refused"
    return r


@st.composite
def chains(draw) -> list[dict]:
    hops = draw(st.lists(st.integers(0, 3), min_size=1, max_size=8))
    good = draw(st.booleans())
    return [draw(record(h, good)) for h in hops]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
@example([{"v": 1, "ts": 1.0, "client": "c", "chain": "c", "hop": 0, "flow": "a", "method": "GET",
           "url": URLS[0], "event": "redirect", "status": 302, "action": "inject", "location": LOCATIONS[0],
           "target": "https://i.example", "fingerprint": "hm:1"},
          {"v": 1, "ts": 2.0, "client": "c", "chain": "c", "hop": 1, "flow": "b", "method": "GET",
           "url": URLS[1], "event": "response", "status": 200}])
def test_what_cannot_fail_is_never_diagnosed_failed(records):
    if cannot_fail(records):
        assert all(chain.verdict != "failed" for chain in diagnose(records)), records


def test_the_usual_good_chain_is_cleared_and_a_bad_one_is_not():
    good = [{"chain": "c", "hop": 0, "event": "redirect", "url": URLS[0], "status": 302, "action": "inject"},
            {"chain": "c", "hop": 1, "event": "inject", "url": URLS[1], "action": "inject"},
            {"chain": "c", "hop": 1, "event": "response", "url": URLS[1], "status": 200}]
    assert cannot_fail(good)
    assert not cannot_fail(good[:2] + [{**good[2], "status": 404}])
    assert not cannot_fail(good[:1])  # no answer yet
    assert not cannot_fail(good + [{"chain": "c", "hop": 1, "event": "leak", "url": URLS[1]}])
