"""Hostile inputs to `credhop report`, in process (security round 3): nesting that exhausts the stack,
files that are not hop logs, damaged flow files, and text that a terminal, a markdown page or an HTML
page would act on. The real process (exit status, memory) is tests/e2e/test_report_hostile.py."""

from __future__ import annotations

import html.parser
import io
import json
from pathlib import Path
from typing import Any

import pytest

from credhop.captures import CaptureError, read_flows, sniff
from credhop.cli import main
from credhop.diagnosis import diagnose, parse_records
from credhop.html_report import render_html
from credhop.report import render_json, render_markdown, render_text
from credhop.scrub import printable
from tests.unit.test_diagnosis import A, B, LOC, Log
from tests.unit.test_report_cli import write_log

REPO = Path(__file__).resolve().parents[2]
# every character the issue names, and a few of the same kind: each reorders, hides or controls text
INVISIBLE = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
             "\u200e", "\u200f", "\u061c", "\u200b", "\u200d", "\u2060", "\ufeff"]
CONTROLS = ["\x1b[2J", "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "\x07", "\x9b31m", "\x7f"]
RAW = ["\x1b", "\x07", "\x9b", "\x7f", *INVISIBLE]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def one_line_refusal(code: int, out: str, err: str) -> None:
    assert code == 2 and not out, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("credhop report: "), err


# -- nesting ---------------------------------------------------------------------------------------


def test_a_har_nested_200000_deep_is_a_capture_error_not_a_recursion_error():
    with pytest.raises(CaptureError, match="nested too deeply"):
        sniff(b'{"log": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def test_a_hop_log_line_nested_100000_deep_is_one_malformed_line():
    good = json.dumps(_record())
    read = parse_records([good + "\n", "[" * 100_000 + "]" * 100_000 + "\n"])
    assert read.malformed == [2] and len(read.records) == 1


def test_report_of_a_deep_har_is_one_line_exit_2(tmp_path):
    path = tmp_path / "deep.har"
    path.write_text('{"log": ' + "[" * 200_000 + "]" * 200_000 + "}")
    one_line_refusal(*cli("report", str(path)))


@pytest.mark.parametrize("where", ["credhop.captures.json.loads", "credhop.replay.parse_records"])
def test_memory_exhausted_while_parsing_is_one_line_exit_2(tmp_path, monkeypatch, where):
    def no_memory(*_: Any, **__: Any) -> Any:
        raise MemoryError

    # the HAR sniffing parse catches it itself; anything else reaches the command's last guard
    monkeypatch.setattr(where, no_memory)
    log = write_log(tmp_path / "hops.jsonl", _log())
    code, out, err = cli("report", str(log))
    one_line_refusal(code, out, err)
    assert "memory" in err


# -- files that are not hop logs -------------------------------------------------------------------


def test_the_readme_is_refused_as_a_hop_log(tmp_path):
    code, out, err = cli("report", str(REPO / "README.md"))
    one_line_refusal(code, out, err)
    assert "README.md is not a hop log" in err


def test_a_hop_log_cut_off_by_a_crash_is_still_read_with_its_warning(tmp_path):
    lines = [json.dumps(r) for r in _log().records]
    path = tmp_path / "hops.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][: len(lines[0]) // 2])  # the proxy killed mid-write
    code, out, err = cli("report", str(path))
    assert code == 1 and not err, err
    assert f"skipped 1 malformed line(s): {len(lines) + 1}" in out


def test_a_hop_log_with_more_bad_lines_than_records_is_refused(tmp_path):
    path = write_log(tmp_path / "hops.jsonl", _log(), extra_lines=("not json",) * 3)
    code, out, err = cli("report", str(path))
    one_line_refusal(code, out, err)
    assert "3 of its lines are not hop-log records (the first at line 3), 2 are" in err


# -- damaged flow files (mitmproxy's reader raises more than FlowReadException) -----------------------


def _tnet_nested(depth: int) -> bytes:
    inner = b"0:]"
    for _ in range(depth):
        inner = str(len(inner)).encode() + b":" + inner + b"]"
    return inner


@pytest.mark.parametrize("data, reason", [
    (_tnet_nested(50_000), "nested too deeply"),  # RecursionError in mitmproxy's tnetstring.parse
    (b"29:7:version;2:20#4:type;4:http;}", "KeyError"),  # a flow without its fields
])
def test_a_damaged_flow_file_is_a_capture_error(data, reason):
    pytest.importorskip("mitmproxy")
    with pytest.raises(CaptureError, match=reason):
        read_flows(io.BytesIO(data), 0)


def test_a_damaged_flow_file_is_one_line_exit_2(tmp_path):
    pytest.importorskip("mitmproxy")
    path = tmp_path / "deep.mitm"
    path.write_bytes(_tnet_nested(50_000))
    one_line_refusal(*cli("report", str(path)))


# -- hostile text in every output ------------------------------------------------------------------


def _record() -> dict[str, Any]:
    return _log().records[0]


def _log(user: str = "aws", client: str = "10.0.0.5", url: str = A) -> Log:
    log = Log(client=client)
    log.redirect(0, url, LOC, credential=True, action="inject", observe=True, user=user)
    log.response(1, B, 404)
    return log


@pytest.mark.parametrize("char", INVISIBLE)
def test_printable_escapes_bidi_and_invisible_characters(char):
    shown = printable(f"ad{char}min")
    assert char not in shown and shown == f"ad{ascii(char)[1:-1]}min"


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("hostile", [*INVISIBLE, *CONTROLS, "<script>alert(1)</script>",
                                     "\"'><img src=x onerror=alert(2)>"])
def test_hostile_user_client_and_url_are_escaped_in_every_output(hostile):
    chains = diagnose(_log(user=f"u{hostile}", client=f"c{hostile}", url=f"{A}?q={hostile}").records)
    outputs = {"text": render_text(chains), "color": render_text(chains, color=True),
               "markdown": render_markdown(chains), "json": render_json(chains), "html": render_html(chains)}
    for name, out in outputs.items():
        for raw in RAW:
            if name == "color" and raw == "\x1b":
                continue  # the report's own colours; the hostile ESC is checked in "text"
            assert raw not in out, f"{raw!r} reached the {name} output raw"
    for name in ("markdown", "html"):
        assert "<script>" not in outputs[name] and "<img" not in outputs[name]
    assert json.loads(outputs["json"])["chains"][0]["client"] == f"c{hostile}"  # escaped, same value
    tags = _Tags()
    tags.feed(outputs["html"])
    assert not [t for t, _ in tags.tags if t in ("script", "img", "iframe", "object")]
    assert not [a for _, a in tags.tags if any(k.startswith("on") for k in a)]


def test_a_hostile_file_name_stays_on_one_escaped_line(tmp_path):
    path = tmp_path / "a\x1b]8;;https://evil.example/\x07\u202e\nb.jsonl"
    code, out, err = cli("report", str(path))  # no such file
    one_line_refusal(code, out, err)
    assert not any(raw in err for raw in RAW)
