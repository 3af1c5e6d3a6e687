"""`credhop report` on captures written here: HAR in the shapes real writers use, mitmproxy flow files,
files told apart by content, presigned URLs, and no secret of a capture in any output."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from credhop.captures import read_har, sniff
from credhop.cli import main
from credhop.diagnosis import diagnose
from credhop.replay import collect
from credhop.signed import signed_url_kind
from credhop.urls import redact_params
from tests.secrets_check import Secret, assert_no_leak, secret_forms
from tests.unit.test_diagnosis import lost_observe
from tests.unit.test_report_cli import GUARD, write_log

REPO = Path(__file__).resolve().parents[2]
TOKEN = Secret("s3cr3t:T0KEN@/%z-value")
SIGNATURE = Secret("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
SESSION = Secret("FwoGZXIvYXdzEJr//////////wEaDAsession+token/with=chars")
FORMS = secret_forms(TOKEN, SIGNATURE, SESSION)
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
REDIRECTOR = "https://redirector.example/simple/pkg/"
INDEX = "https://registry.example/pypi/simple/pkg/"
USERINFO = f"aws:{quote(TOKEN, safe='')}@"
LOCATION = INDEX.replace("https://", f"https://{USERINFO}")
BASIC = "Basic " + base64.b64encode(f"aws:{TOKEN}".encode()).decode()
SIGNED = ("https://bucket.s3.example/pkg-1.0-py3-none-any.whl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          f"&X-Amz-Credential=AKIAEXAMPLE%2F20261202%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261202T090000Z"
          f"&X-Amz-Expires=300&X-Amz-Security-Token={quote(SESSION, safe='')}&X-Amz-SignedHeaders=host"
          f"&X-Amz-Signature={SIGNATURE}")


def entry(n: int, method: str, url: str, status: int, location: str | None = None,
          headers: list[tuple[str, str]] = (), style: str = "chrome", **extra: Any) -> dict[str, Any]:
    """One HAR entry the way Chrome DevTools (or Firefox, Playwright) writes it."""
    started = T0 + timedelta(milliseconds=100 * n)
    when = started.isoformat(timespec="milliseconds")
    when = when.replace("+00:00", "Z") if style == "chrome" else when.replace("+00:00", "+00:00")
    request_headers = [{"name": k, "value": v} for k, v in headers]
    if style == "chrome":
        request_headers.insert(0, {"name": ":authority", "value": url.split("/")[2].split("@")[-1]})
    response_headers = [{"name": "Location", "value": location}] if location and style != "firefox" else []
    out = {"startedDateTime": when, "time": 12.5, "pageref": "page_1", "connection": str(1000 + n),
           "request": {"method": method, "url": url, "httpVersion": "HTTP/1.1", "headers": request_headers,
                       "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
           "response": {"status": status, "statusText": "", "httpVersion": "HTTP/1.1", "headers": response_headers,
                        "cookies": [], "content": {"size": 0, "mimeType": "text/html"},
                        "redirectURL": location or "", "headersSize": -1, "bodySize": 0},
           "cache": {}, "timings": {"blocked": 1, "dns": -1, "connect": 5, "send": 0.2, "wait": 4, "receive": 1}}
    out.update(extra)
    return out


def har(*entries: dict[str, Any], creator: str = "WebInspector") -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": {"name": creator, "version": "537.36"},
                    "pages": [{"id": "page_1", "startedDateTime": T0.isoformat(), "title": "x", "pageTimings": {}}],
                    "entries": list(entries)}}


def write_har(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


def chromium_404() -> dict[str, Any]:
    """Chromium following the userinfo Location: it records the follow-up's URL with the userinfo."""
    return har(entry(0, "GET", REDIRECTOR, 302, LOCATION),
               entry(1, "GET", LOCATION.replace(INDEX, INDEX), 404))


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def every_output(path: Path, tmp: Path) -> str:
    texts = []
    for fmt in ("text", "markdown", "json"):
        code, out, err = cli("report", str(path), "--format", fmt, "--html", str(tmp / "r.html"))
        texts += [out, err, (tmp / "r.html").read_text()]
    return "\n".join(texts)


def codes(path: Path, *more: str) -> set[str]:
    return {f.code for c in diagnose(collect([str(path), *more]).records) for f in c.findings}


# -- HAR without mitmproxy ---------------------------------------------------------------------------------


def run_python(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "NO_COLOR": "1"})


def test_har_report_runs_where_mitmproxy_cannot_be_imported(tmp_path):
    path = write_har(tmp_path / "devtools.har", chromium_404())
    proc = run_python("-c", GUARD, "report", str(path), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 1, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("✗ FAILED chain") and "client devtools.har (WebInspector)" in first
    assert "CH101 credential-lost-on-redirect" in first and "Traceback" not in proc.stderr
    assert_no_leak(proc.stdout + proc.stderr + (tmp_path / "r.html").read_text(), FORMS, "guarded HAR report")


def test_flow_file_without_mitmproxy_is_one_line_with_the_install_hint(tmp_path):
    from mitmproxy import io as mitmio
    from mitmproxy.test import tflow

    path = tmp_path / "capture.mitm"
    with path.open("wb") as f:
        mitmio.FlowWriter(f).add(tflow.tflow(resp=True))
    proc = run_python("-c", GUARD, "report", str(path))
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"credhop report: {path}: reading mitmproxy flow files needs mitmproxy: "
                                  "pip install mitmproxy")


def test_flow_file_written_with_mitmproxy_is_replayed(tmp_path):
    from mitmproxy import http
    from mitmproxy import io as mitmio
    from mitmproxy.test import tflow

    redirect = tflow.tflow(resp=True)
    redirect.request.url = REDIRECTOR
    redirect.response = http.Response.make(302, b"", {"Location": LOCATION})
    follow = tflow.tflow(resp=True)
    follow.request.url = INDEX
    follow.response = http.Response.make(404, b"not found")
    for n, flow in enumerate((redirect, follow)):
        flow.request.timestamp_start = T0.timestamp() + n
        flow.response.timestamp_start = T0.timestamp() + n + 0.5
        flow.client_conn.peername = ("10.1.2.3", 5000 + n)
    path = tmp_path / "capture.mitm"
    with path.open("wb") as f:
        writer = mitmio.FlowWriter(f)
        writer.add(redirect)
        writer.add(follow)
    code, out, _ = cli("report", str(path))
    assert code == 1 and "client 10.1.2.3" in out.splitlines()[0] and "CH101" in out.splitlines()[0]
    assert_no_leak(every_output(path, tmp_path), FORMS, "flow file report")


# -- telling files apart, merging ----------------------------------------------------------------------


def test_files_are_told_apart_by_content_and_merge(tmp_path):
    log = write_log(tmp_path / "whatever.har", lost_observe())  # a hop log, whatever its name
    capture = write_har(tmp_path / "capture.jsonl", chromium_404())  # a HAR, whatever its name
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps(chromium_404()))
    assert sniff(log.read_bytes())[0] == "hoplog" and sniff(capture.read_bytes())[0] == "har"
    assert sniff(one_line.read_bytes())[0] == "har" and sniff(b"1234:5:hello,")[0] == "flows"
    code, out, _ = cli("report", "--format", "json", str(log), str(capture), str(one_line))
    doc = json.loads(out)
    assert code == 1 and doc["summary"]["chains"] == 3 and doc["summary"]["failed"] == 3
    assert {c["client"] for c in doc["chains"]} == {"10.0.0.5", "capture.jsonl (WebInspector)",
                                                      "one.json (WebInspector)"}


def test_unusable_inputs_exit_2_in_one_line(tmp_path):
    garbage = tmp_path / "x.bin"
    garbage.write_bytes(b"\x00\x01binary\xff\n")
    broken_flow = tmp_path / "x.mitm"
    broken_flow.write_bytes(b"12:not a flow,")
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("rules:\n  - name: x\n    action: nope\n")
    short_key = tmp_path / "key"
    short_key.write_text("short")
    capture = write_har(tmp_path / "c.har", chromium_404())
    for argv, words in ((["report", str(garbage)], "holds no hop-log records"),
                        (["report", str(broken_flow)], "not a readable mitmproxy flow file"),
                        (["report", str(capture), "--rules", str(bad_rules)], "rules.yaml:3:13: rules[0].action"),
                        (["report", str(capture), "--fingerprint-key", str(short_key)], "fewer than 16 bytes"),
                        (["report", str(tmp_path / "missing.har")], "cannot read")):
        code, out, err = cli(*argv)
        assert code == 2 and not out and err.count("\n") == 1 and words in err, (argv, err)


# -- what different writers leave out ------------------------------------------------------------------------


def test_firefox_style_har_location_only_in_redirect_url_and_a_failed_follow_up(tmp_path):
    doc = har(entry(0, "GET", REDIRECTOR, 302, LOCATION, style="firefox"),
              entry(1, "GET", INDEX, 0, style="firefox", response={
                  "status": 0, "statusText": "", "headers": [], "redirectURL": "", "_error": "NS_ERROR_CONNECTION_REFUSED"}),
              creator="Firefox")
    path = write_har(tmp_path / "firefox.har", doc)
    found = codes(path)
    assert {"CH110", "CH501"} <= found and "CH502" not in found
    assert_no_leak(every_output(path, tmp_path), FORMS, "Firefox HAR report")


def test_a_retry_after_401_continues_the_hop(tmp_path):
    """pip: the follow-up gets 401, the client asks again with the Location's credential, and installs."""
    doc = har(entry(0, "GET", REDIRECTOR, 302, LOCATION), entry(1, "GET", INDEX, 401),
              entry(2, "GET", INDEX, 200, headers=[("Authorization", BASIC)]))
    path = write_har(tmp_path / "pip.har", doc)
    [chain] = diagnose(collect([str(path)]).records)
    assert chain.verdict == "ok" and [f.code for f in chain.findings] == ["CH110"]
    assert [(h.status, h.retry, h.move) for h in chain.main] == [(302, False, None), (200, True, "forwarded")]
    assert [(h.status, h.superseded) for h in chain.hops if h.reuse] == [(401, True)]
    code, out, _ = cli("report", str(path))
    assert code == 0 and "first try; the client retried" in out
    assert_no_leak(every_output(path, tmp_path), FORMS, "pip HAR report")


def test_har_pages_keep_redirect_chains_apart(tmp_path):
    """Two pages (tabs) in one HAR: only a request of the same page follows a redirect."""
    other = entry(1, "GET", INDEX, 200, headers=[("Authorization", BASIC)], pageref="page_2")
    doc = har(entry(0, "GET", REDIRECTOR, 302, LOCATION), other, entry(2, "GET", INDEX, 404))
    [chain] = diagnose(collect([str(write_har(tmp_path / "two.har", doc))]).records)
    assert [h.status for h in chain.main] == [302, 404] and chain.findings[0].code == "CH101"


def test_rules_file_changes_what_credhop_would_do(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: only-elsewhere\n    match: {host: other.example}\n    action: inject\n")
    path = write_har(tmp_path / "c.har", chromium_404())
    assert "CH405" not in codes(path)
    code, out, _ = cli("report", str(path), "--rules", str(rules))
    assert code == 1 and "CH405" in out


# -- presigned URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "kind"), [
    ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=A&X-Amz-Signature=abc", "S3 SigV4 (X-Amz-Signature)"),
    ("https://storage.googleapis.com/b/k?x-goog-signature=abc&X-Goog-Expires=60", "GCS (X-Goog-Signature)"),
    ("https://a.blob.core.windows.net/c/k?sv=2022-11-02&se=2026-12-02T10%3A00Z&sp=r&sig=abc%3D",
     "Azure SAS (sig, se)"),
    ("https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIA&Expires=1796000000&Signature=abc%3D",
     "S3 SigV2 (Signature, AWSAccessKeyId, Expires)"),
    ("https://b.s3.amazonaws.com/k?Signature=abc", None),
    ("https://a.blob.core.windows.net/c/k?sig=abc", None),
    ("https://registry.example/simple/pkg/", None),
])
def test_signed_url_kind(url, kind):
    assert signed_url_kind(url) == kind


def test_signed_query_values_are_redacted_in_any_text():
    text = f"GET {SIGNED} and /login?next=https%3A%2F%2Fb%2Fk%3FX-Amz-Signature%3D{SIGNATURE}%26x%3D1"
    clean = redact_params(text)
    assert_no_leak(clean, FORMS, "redacted text")
    assert "X-Amz-Signature=REDACTED" in clean and "X-Amz-Expires=300" in clean and "%26x%3D1" in clean
    assert redact_params(clean) == clean


def signed_download(status: int, authorization: bool) -> dict[str, Any]:
    wheel = "https://registry.example/pypi/files/pkg-1.0-py3-none-any.whl"
    own = [("Authorization", BASIC)] if authorization else []
    return har(entry(0, "GET", wheel, 302, SIGNED, headers=own), entry(1, "GET", SIGNED, status, headers=own))


def test_a_403_at_a_presigned_url_is_its_signature_refused(tmp_path):
    path = write_har(tmp_path / "expired.har", signed_download(403, authorization=False))
    [chain] = diagnose(collect([str(path)]).records)
    assert chain.verdict == "failed" and [f.code for f in chain.findings] == ["CH102"]
    assert "carries its own signature" in chain.findings[0].message and "expire" in chain.findings[0].hint
    assert chain.main[-1].move == "signed"
    output = every_output(path, tmp_path)
    assert "X-Amz-Signature=REDACTED" in output and "X-Amz-Expires=300" in output
    assert_no_leak(output, FORMS, "presigned 403 report")


def test_authorization_sent_to_a_presigned_url(tmp_path):
    path = write_har(tmp_path / "leak.har", signed_download(400, authorization=True))
    [chain] = diagnose(collect([str(path)]).records)
    found = [f.code for f in chain.findings]
    assert found[:2] == ["CH201", "CH205"] and not {"CH101", "CH102", "CH104"} & set(found)
    assert "Only one auth mechanism allowed" in chain.findings[1].message
    code, out, _ = cli("findings")
    assert "CH205  error    authorization-sent-to-signed-url" in out
    assert_no_leak(every_output(path, tmp_path), FORMS, "presigned leak report")


def test_har_reader_ignores_what_it_cannot_use():
    doc = har(entry(0, "GET", REDIRECTOR, 302, LOCATION), {"request": "x"}, entry(2, "CONNECT", "https://a:443", 200),
              entry(3, "GET", "ftp://x.example/", 200), {**entry(4, "GET", INDEX, 200), "startedDateTime": "yesterday"})
    assert [e.url for e in read_har(doc, "x", 0)] == [REDIRECTOR]


def test_captures_imports_mitmproxy_only_to_read_flow_files():
    import ast

    import credhop.captures

    tree = ast.parse(Path(credhop.captures.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mitmproxy"):
            assert node.col_offset > 0  # inside a function: read_flows
    top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert not {m for m in top if m.startswith("mitmproxy")}


def test_a_download_redirected_to_a_presigned_url_is_a_chain_of_its_own():
    """credhop injecting: the index page works, the wheel download (a later request with the injected
    credential) is redirected to object storage, which refuses the signature."""
    from tests.unit.test_diagnosis import INJECTED, injected_ok
    from tests.unit.test_diagnosis import SIGNED as REDACTED_SIGNED

    log = injected_ok()
    wheel = log.records[-1]["url"]
    flow = log.inject(1, wheel)
    log.redirect(1, wheel, REDACTED_SIGNED, flow=flow, sent=INJECTED)
    log.response(2, REDACTED_SIGNED, 403)
    chains = {c.id: c for c in diagnose(log.records)}
    assert set(chains) == {"c1", "c1~signed"}
    index, side = chains["c1"], chains["c1~signed"]
    assert index.verdict == "ok" and [f.code for f in index.findings] == ["CH110"]
    assert not any(h.signed for h in index.hops)
    assert side.verdict == "failed" and [f.code for f in side.findings] == ["CH102"]
    assert [(h.index, h.status, h.move) for h in side.main] == [(1, 302, None), (2, 403, "signed")]
    assert "carries its own signature" in side.findings[0].message


def test_a_presigned_url_no_redirect_led_to_stays_where_it_is():
    from tests.unit.test_diagnosis import SIGNED as REDACTED_SIGNED
    from tests.unit.test_diagnosis import injected_ok

    log = injected_ok()
    log.inject(1, REDACTED_SIGNED)  # credhop's own grant reused on a signed URL of the same origin
    assert [c.id for c in diagnose(log.records)] == ["c1"]
