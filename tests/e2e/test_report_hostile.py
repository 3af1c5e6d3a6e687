"""Hostile captures into the real `credhop report` process (security round 3, issue 25).

What must hold for any input: no traceback; a file credhop cannot use is refused with one line on
stderr and exit 2 (docs/report.md); memory stays bounded (a file over --max-input-mb is refused
without being read whole); and nothing from the capture reaches a terminal, a markdown page or an
HTML page able to run, paint, hide or reorder anything.
"""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.secrets_check import Secret, assert_no_leak, secret_forms
from tests.unit.test_captures import entry, har
from tests.unit.test_report_hostile import _tnet_nested

CREDHOP = str(Path(sys.executable).parent / "credhop")
TOKEN = Secret("hostile-Qm4xT9wLp2Zr7")
# a terminal reads these as commands: clear the screen, a hyperlink to elsewhere (OSC 8), a bell,
# a right-to-left override that shows "gpj.exe" as "exe.jpg"
HOSTILE = ["<script>alert(1)</script>", "\"'><img src=x onerror=alert(2)>", "\x1b[2J\x1b[31mred",
           "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "bell\x07", "ad\u202emin", "a|b`c"]
RAW = ["\x1b", "\x07", "\u202e", "<script>", "<img"]


# runs one command and reports its peak RSS: RUSAGE_CHILDREN of a fresh process is that one child's
MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(f'rss={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
           "sys.exit(r.returncode)")


def report(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak RSS in KiB) of one real `credhop report` run."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, CREDHOP, "report", *argv], input=stdin,
                          capture_output=True, env={**os.environ, "NO_COLOR": "1"}, timeout=300)
    err, _, rss = proc.stderr.decode(errors="replace").rpartition("rss=")
    return proc.returncode, proc.stdout.decode(errors="replace"), err, int(rss)


def refused(code: int, out: str, err: str) -> None:
    assert code == 2 and not out, (code, err)
    assert err.count("\n") == 1 and err.startswith("credhop report: ") and "Traceback" not in err, err


def test_a_har_nested_200000_deep_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.har"
    path.write_text('{"log": ' + "[" * 200_000 + "]" * 200_000 + "}")
    code, out, err, _ = report(str(path))
    refused(code, out, err)
    assert "nested too deeply" in err


def test_a_hop_log_line_nested_100000_deep_is_one_malformed_line(tmp_path):
    path = tmp_path / "hops.jsonl"
    record = {"v": 1, "event": "redirect", "chain": "c1", "hop": 0, "client": "127.0.0.1", "ts": 1.0,
              "url": "http://a.example/", "status": 302, "location": "http://b.example/", "action": "none"}
    path.write_text(json.dumps(record) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    code, out, err, _ = report(str(path))
    assert code in (0, 1) and "Traceback" not in out + err, err
    assert "skipped 1 malformed line(s): 2" in out


def test_a_100_mb_har_is_refused_without_being_read_whole(tmp_path):
    path = tmp_path / "big.har"
    filler = "x" * (1 << 20)
    with path.open("w") as f:
        f.write('{"log": {"entries": [')
        f.write(",".join(json.dumps(entry(n, "GET", "http://a.example/", 200, note=filler))
                         for n in range(100)))
        f.write("]}}")
    assert path.stat().st_size > 100 * 2**20
    code, out, err, rss = report(str(path))
    refused(code, out, err)
    assert "larger than 64 MB" in err and "--max-input-mb" in err
    # refused by its size, unread: the interpreter's own memory, not the file's, let alone a parse (~750 MB)
    assert rss < 80 * 1024, f"peak RSS {rss // 1024} MB"
    # the limit is the user's to raise: the same file, allowed, is read (and takes its memory)
    code, out, err, _ = report(str(path), "--max-input-mb", "200")
    assert code == 0 and "Traceback" not in err


def test_the_same_limit_holds_on_stdin(tmp_path):
    code, out, err, _ = report("-", "--max-input-mb", "1", stdin=b"{" + b" " * (2 << 20) + b"}")
    refused(code, out, err)


def test_a_truncated_flow_file_is_read_up_to_the_damage_or_refused(tmp_path):
    from mitmproxy import io as mitmio
    from mitmproxy.test import tflow

    path = tmp_path / "flows.mitm"
    with path.open("wb") as f:
        writer = mitmio.FlowWriter(f)
        for n in range(3):
            flow = tflow.tflow(resp=True)
            flow.response.status_code = 302
            flow.response.headers["location"] = f"http://aws:{TOKEN}@127.0.0.2:1/{n}/"
            writer.add(flow)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # mitmdump killed mid-write
    code, out, err, _ = report(str(path))
    assert code in (0, 1) and "Traceback" not in err and "chain" in out
    assert_no_leak(out + err, secret_forms(TOKEN), "report of a truncated flow file")
    path.write_bytes(data[:10])  # nothing whole in it
    refused(*report(str(path))[:3])


@pytest.mark.parametrize("data, reason", [
    (_tnet_nested(50_000), "nested too deeply"),  # was a RecursionError traceback from mitmproxy's reader
    (b"29:7:version;2:20#4:type;4:http;}", "KeyError"),  # a flow without its fields: was a KeyError traceback
])
def test_a_damaged_flow_file_is_refused_in_one_line(tmp_path, data, reason):
    path = tmp_path / "damaged.mitm"
    path.write_bytes(data)
    code, out, err, rss = report(str(path))
    refused(code, out, err)
    assert "not a readable mitmproxy flow file" in err and reason in err
    assert rss < 200 * 1024, f"peak RSS {rss // 1024} MB"


def test_a_file_that_is_mostly_not_a_hop_log_is_refused(tmp_path):
    code, out, err, _ = report(str(Path(__file__).resolve().parents[2] / "README.md"))
    refused(code, out, err)
    assert "is not a hop log" in err


class Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_urls_headers_and_user_names_are_shown_as_text(tmp_path, hostile):
    from urllib.parse import quote

    user = quote(f"u{hostile}", safe="")
    path_part = quote(hostile, safe="/")
    location = f"https://{user}:{TOKEN}@registry.example/simple/{path_part}/"
    doc = har(entry(0, "GET", f"https://redirector.example/{path_part}", 302, location,
                    headers=[("X-Hostile", hostile)]),
              entry(1, "GET", f"https://registry.example/simple/{path_part}/", 404))
    capture = tmp_path / "hostile.har"
    capture.write_text(json.dumps(doc))
    page = tmp_path / "report.html"
    texts = []
    for fmt in ("text", "markdown", "json"):
        code, out, err, _ = report(str(capture), "--format", fmt, "--html", str(page))
        assert code in (0, 1) and "Traceback" not in err, err
        texts.append(out)
        # a terminal runs controls (JSON too: `--format json` is read on one); a markdown page renders HTML
        for raw in RAW if fmt == "markdown" else RAW[:3]:
            assert raw not in out, f"{raw!r} reached the {fmt} output raw"
    assert "FAILED" in texts[0]  # the chain was read, not dropped: there was something to escape
    assert_no_leak("\n".join(texts) + page.read_text(), secret_forms(TOKEN, user=user), "report outputs")
    json.loads(texts[2])
    parser = Elements()
    parser.feed(page.read_text())
    assert not [t for t, a in parser.tags if t in ("img", "iframe", "object")]
    assert not [a for _, a in parser.tags if any(k.startswith("on") for k in a)]
    own_scripts = [t for t, _ in parser.tags if t == "script"]
    assert len(own_scripts) <= 1  # the page's own, if any; never one from the capture
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in page.read_text()
