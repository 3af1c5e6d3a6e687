"""Downloads counted together (downloads.py): good ones in one record per chain, origin and method;
a failed one keeps its own inject and response records, so a report still names it."""

from __future__ import annotations

from mitmproxy.test import tflow

from credhop import downloads
from credhop.diagnosis import diagnose, parse_records
from credhop.report import render_text
from tests.unit.addon_helpers import ENCODED, TOKEN, basic, follow, run_redirect, send

LOCATION = f"https://aws:{ENCODED}@registry.example/simple/pkg/"


def _download(hop, path, status=200, body=b"x" * 100, method="GET"):
    f = send(hop, f"https://registry.example{path}")
    f.request.method = method
    f.response = tflow.tresp(status_code=status, content=body)
    hop.response(f)
    return f


def _follow_up(hop):
    run_redirect(hop, LOCATION)
    _download(hop, "/simple/pkg/")


def test_good_downloads_are_one_record_with_count_bytes_and_statuses(hop):
    _follow_up(hop)
    before = len(hop.records())
    files = [_download(hop, f"/files/pkg-{i}.whl", status=206 if i == 3 else 200, body=b"w" * (10 + i))
             for i in range(19)]
    assert all(f.request.headers["authorization"] == basic("aws", TOKEN) for f in files)
    assert all(f.marked and "injected" in f.comment for f in files)
    assert len(hop.records()) == before  # nothing written per download
    assert hop.addon.counters["injected"] == 20  # the follow-up and 19 downloads, counted as they go
    hop.addon.hops.flush_downloads(everything=True)
    tally = hop.records()[before:]
    assert [r["event"] for r in tally] == ["downloads"]
    (r,) = tally
    assert (r["count"], r["bytes"], r["statuses"]) == (19, sum(10 + i for i in range(19)), {"200": 18, "206": 1})
    assert (r["hop"], r["reuse"], r["method"], r["url"], r["rule"]) == (1, True, "GET", "https://registry.example",
                                                                        "registry")
    assert "flow" not in r and r["first"] <= r["ts"]
    assert all(form not in hop.log.read_text() for form in (str(TOKEN), ENCODED))


def test_a_failed_download_keeps_its_own_records_and_the_report_names_it(hop):
    _follow_up(hop)
    for i in range(5):
        _download(hop, f"/files/ok-{i}.whl")
    _download(hop, "/files/missing.whl", status=404)
    hop.addon.hops.flush_downloads(everything=True)
    records = hop.records()
    failed = [(r["event"], r["url"]) for r in records if "missing" in r.get("url", "")]
    assert failed == [("inject", "https://registry.example/files/missing.whl"),
                      ("response", "https://registry.example/files/missing.whl")]
    assert [r["count"] for r in records if r["event"] == "downloads"] == [5]
    (chain,) = diagnose(parse_records(hop.log.read_text().splitlines()).records)
    assert chain.verdict == "failed" and [f.code for f in chain.findings if f.severity == "error"] == ["CH102"]
    text = render_text([chain])
    assert "missing.whl" in text and "5 × GET https://registry.example (downloads, 500 bytes)" in text


def test_a_download_answered_with_a_redirect_or_an_error_is_recorded_whole(hop):
    _follow_up(hop)
    moved = send(hop, "https://registry.example/files/moved.whl")
    moved.response = tflow.tresp(status_code=302, headers=((b"location", b"https://cdn.example/f.whl"),))
    hop.responseheaders(moved)
    hop.response(moved)
    broken = send(hop, "https://registry.example/files/broken.whl")
    broken.error = tflow.terr()
    hop.error(broken)
    events = [(r["event"], r["url"].rsplit("/", 1)[-1]) for r in hop.records() if "/files/" in r["url"]]
    assert events == [("inject", "moved.whl"), ("redirect", "moved.whl"), ("inject", "broken.whl"),
                      ("error", "broken.whl")]


def test_a_tally_is_written_once_quiet_or_long_open_and_at_shutdown(hop):
    _follow_up(hop)
    _download(hop, "/files/a.whl")
    hop.addon.hops.flush_downloads()
    assert not [r for r in hop.records() if r["event"] == "downloads"]  # still going on
    hop.clock.now += downloads.QUIET
    hop.addon.hops.flush_downloads()
    assert [r["count"] for r in hop.records() if r["event"] == "downloads"] == [1]
    for _ in range(int(downloads.LONGEST // 2) + 1):  # downloads every 2 s: never quiet
        _download(hop, "/files/b.whl")
        hop.clock.now += 2
        hop.addon.hops.flush_downloads()
    # written once open for LONGEST seconds (30 downloads 2 s apart), the next one starts a new tally
    assert [r["count"] for r in hop.records() if r["event"] == "downloads"] == [1, downloads.LONGEST // 2]
    _download(hop, "/files/c.whl", method="HEAD")
    hop.addon.done()
    assert [(r["method"], r["count"]) for r in hop.records() if r["event"] == "downloads"][2:] == [("GET", 1),
                                                                                                  ("HEAD", 1)]


def test_the_report_command_counts_downloads_not_yet_written(hop):
    _follow_up(hop)
    for i in range(3):
        _download(hop, f"/files/{i}.whl")
    assert "3 × GET https://registry.example (downloads, 300 bytes)" in hop.addon.report()


def test_with_stores_in_this_process_a_download_costs_no_coroutine(hop):
    """mitmproxy awaits what a hook returns: for a plain request and a download with in-process
    stores, credhop's hooks return None (nothing to schedule), and still inject once."""
    addon = hop.addon
    _follow_up(hop)
    plain = follow("https://elsewhere.example/x", client=("10.9.9.9", 4000))
    assert addon.requestheaders(plain) is None and "authorization" not in plain.request.headers
    f = follow("https://registry.example/files/a.whl")
    assert addon.requestheaders(f) is None
    assert f.request.headers.get_all("authorization") == [basic("aws", TOKEN)]
    f.response = tflow.tresp(status_code=200, content=b"w")
    assert addon.responseheaders(f) is None and addon.response(f) is None
    own = follow("https://registry.example/files/b.whl", headers=[("AUTHORIZATION", "Bearer mine")])
    assert addon.requestheaders(own) is None
    assert own.request.headers.get_all("authorization") == ["Bearer mine"]  # the client's own wins, once


def test_an_injected_header_on_http2_is_lower_case_and_appended_once(hop):
    _follow_up(hop)
    f = follow("https://registry.example/files/c.whl")
    f.request.http_version = "HTTP/2.0"
    hop.requestheaders(f)
    assert [k for k, _ in f.request.headers.fields].count(b"authorization") == 1
    assert b"Authorization" not in [k for k, _ in f.request.headers.fields]
