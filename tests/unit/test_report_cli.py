"""Rendering (text, markdown, json, html) and the `credhop report` command line."""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from credhop.cli import main
from credhop.diagnosis import diagnose
from credhop.findings import CATALOGUE
from credhop.html_report import render_html
from credhop.report import render_json, render_markdown, render_text, summary_line
from tests.secrets_check import Secret, assert_no_leak, secret_forms
from tests.unit.test_diagnosis import (
    CASES,
    FP,
    Log,
    injected_ok,
    leak,
    lost_observe,
    no_credential_404,
    renamed,
    skipped,
    unfollowed,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = Secret("s3cr3t:T0KEN@/%z-value")
FORMS = secret_forms(SECRET)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def write_log(path: Path, *logs: Log, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(r) for log in logs for r in log.records]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# -- rendering -------------------------------------------------------------------------------------


def test_text_first_line_names_the_lost_credential():
    text = render_text(diagnose(lost_observe().records))
    first = text.splitlines()[0]
    assert first.startswith("✗ FAILED chain c1")
    assert "CH101 credential-lost-on-redirect" in first and "got 404 without a credential" in first
    assert FP in first
    assert "\x1b[" not in text


def test_text_is_a_tree_one_hop_a_line():
    lines = render_text(diagnose(injected_ok().records)).splitlines()
    hop_lines = [line for line in lines if re.match(r"\s+[├└│]", line)]
    assert hop_lines[0].lstrip().startswith("├─ #0 GET https://redirector.example/simple/pkg/ → 302 → https://aws:***@")
    assert "moved into a header (rule default)" in hop_lines[0] and "CH110" in hop_lines[0]
    assert hop_lines[1].lstrip().startswith("└─ #1 GET https://registry.example/pypi/simple/pkg/ → 200")
    assert "Authorization injected (aws hm:0123456789abcdef)" in hop_lines[1]
    assert "pkg-1.0-py3-none-any.whl" in hop_lines[2]  # the reuse request, a child of hop 1
    assert lines[-1] == "1 chain(s): 0 failed, 0 unknown, 1 ok"


def test_text_colour_only_on_request():
    chains = diagnose(lost_observe().records)
    coloured = render_text(chains, color=True)
    assert "\x1b[31;1m" in coloured
    assert ANSI.sub("", coloured) == render_text(chains)


def test_summary_line_is_one_line():
    [bad] = diagnose(lost_observe().records)
    [good] = diagnose(injected_ok().records)
    assert summary_line(bad).startswith(
        "credhop: chain c1 (client 10.0.0.5) failed: CH101 credential-lost-on-redirect: ")
    assert summary_line(good) == ("credhop: chain c1 (client 10.0.0.5) ok: 2 hop(s), GET "
                                  "https://registry.example/pypi/simple/pkg/ -> 200")
    assert "\n" not in summary_line(bad) + summary_line(good)


def test_markdown_and_json():
    chains = diagnose(lost_observe().records + renamed(injected_ok(), "c2").records)
    md = render_markdown(chains)
    assert md.startswith("# credhop report\n") and "| hop | request | status | credential | findings |" in md
    assert "`CH101` credential-lost-on-redirect" in md
    doc = json.loads(render_json(chains, malformed=[3]))
    assert doc["malformed_lines"] == [3]
    assert doc["summary"] == {"chains": 2, "failed": 1, "unknown": 0, "ok": 1}
    chain = doc["chains"][0]
    assert chain["verdict"] == "failed" and chain["findings"][0]["code"] == "CH101"
    assert [h["move"] for h in chain["hops"]] == [None, "lost"]
    assert doc["codes"]["CH101"] == "credential-lost-on-redirect"


def test_html_is_self_contained_and_draws_the_chain():
    page = render_html(diagnose(lost_observe().records + renamed(unfollowed(), "c2").records), malformed=[2],
                       source="hops.jsonl")
    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page  # the browser may fetch nothing
    assert not re.search(r"<script|<link|<img|\bsrc=|@import|url\((?!#)", page)
    assert '<svg class="chain-diagram" data-chain="c1"' in page
    assert 'data-move="lost"' in page and "no credential: LOST" in page
    assert 'class="hop ghost"' in page  # the unfollowed redirect
    assert 'data-code="CH101"' in page and "1 malformed line(s) skipped" in page


SECRET_B64 = base64.b64encode(f"aws:{SECRET}".encode()).decode()


def poisoned() -> Log:
    """A log a buggy writer produced: secrets in every free-text field."""
    log = Log()
    log.redirect(0, f"https://aws:{SECRET}@redirector.example/simple/", f"https://aws:{SECRET}@registry.example/x/",
                 credential=True, action="keep", reason=f"Authorization: Basic {SECRET_B64}")
    flow = log.leak(1, f"https://u:{SECRET}@registry.example/x/", "other-host")
    log.response(1, "https://registry.example/x/", 401,
                 [{"header": "authorization", "scheme": f"Bearer {SECRET_B64}", "fingerprint": FP,
                   "injected": False}],
                 flow=flow)
    log.error(1, "https://registry.example/y/",
              f"failed https://x:{SECRET}@h/ Authorization: Bearer {SECRET_B64}")
    log.inject(1, "https://registry.example/z/", action="skip", reason=f"sent Basic {SECRET_B64}")
    return log


def test_no_report_format_writes_a_secret_even_from_a_bad_log():
    chains = diagnose(poisoned().records)
    for name, text in [("text", render_text(chains, color=True)), ("markdown", render_markdown(chains)),
                       ("json", render_json(chains)), ("html", render_html(chains)),
                       ("summary", "\n".join(summary_line(c) for c in chains))]:
        assert_no_leak(text, FORMS | {SECRET_B64}, f"{name} report")


@pytest.mark.parametrize("code", sorted(CASES))
def test_reports_do_not_mangle_their_own_words(code, monkeypatch):
    # the last-line scrub must be a no-op on clean logs: our wording must never look like a secret
    import credhop.scrub
    import credhop.html_report
    import credhop.report

    chains = diagnose([r for log in CASES[code][0] for r in log.records])
    def everything() -> list[str]:
        return [render_text(chains, color=True), render_markdown(chains), render_json(chains),
                render_html(chains)]

    scrubbed = everything()
    for module in (credhop.report, credhop.html_report, credhop.scrub):
        monkeypatch.setattr(module, "scrub", lambda text: text)
    assert everything() == scrubbed


# -- the command line -------------------------------------------------------------------------------


def test_exit_status_follows_error_findings(tmp_path):
    bad = write_log(tmp_path / "bad.jsonl", lost_observe())
    good = write_log(tmp_path / "good.jsonl", injected_ok(), renamed(skipped(), "c2"))
    code, out, err = cli("report", str(bad))
    assert code == 1 and out.splitlines()[0].startswith("✗ FAILED") and not err
    assert cli("report", str(good))[0] == 0


def test_usage_errors_and_unreadable_logs_exit_2_without_traceback(tmp_path):
    for argv in (["report", str(tmp_path / "missing.jsonl")], ["report", str(tmp_path)],
                 ["report", str(write_log(tmp_path / "x.jsonl", lost_observe())), "--finding", "CH999"], []):
        code, out, err = cli(*argv)
        assert code == 2 and "Traceback" not in err and err.startswith(("credhop", "usage")), argv
    not_a_log = tmp_path / "rules.yaml"
    not_a_log.write_text("rules:\n  - name: x\n")
    code, _, err = cli("report", str(not_a_log))
    assert code == 2 and "holds no hop-log records (2 malformed line(s))" in err
    with pytest.raises(SystemExit) as e:
        main(["report", "x", "--format", "yaml"], out=io.StringIO(), err=io.StringIO())
    assert e.value.code == 2


def test_malformed_lines_are_reported(tmp_path):
    log = write_log(tmp_path / "h.jsonl", lost_observe(), extra_lines=("{oops", '{"event": 1}'))
    code, out, _ = cli("report", str(log))
    assert code == 1 and out.rstrip().endswith("skipped 2 malformed line(s): 3, 4")
    code, out, _ = cli("report", str(log), "--format", "json")
    assert json.loads(out)["malformed_lines"] == [3, 4]


def test_filters(tmp_path):
    other = Log("c2", client="10.0.0.9")
    for record in no_credential_404().records:
        other.records.append({**record, "chain": "c2", "client": "10.0.0.9",
                              "url": record["url"].replace("registry.example", "files.internal")})
    stripped = renamed(leak("other-host", "https://o.example/", "strip"), "c3")
    log = write_log(tmp_path / "h.jsonl", lost_observe(), other, stripped)

    def chains(*argv: str) -> tuple[int, list[str]]:
        code, out, _ = cli("report", str(log), "--format", "json", *argv)
        return code, sorted(c["chain"] + "@" + c["client"] for c in json.loads(out)["chains"])

    assert chains("--client", "10.0.0.9") == (0, ["c2@10.0.0.9"])
    assert chains("--host", "*.INTERNAL") == (0, ["c2@10.0.0.9"])
    assert chains("--host", "registry.example", "--host", "o.example")[1] == ["c1@10.0.0.5", "c3@10.0.0.5"]
    assert chains("--finding", "CH101") == (1, ["c1@10.0.0.5"])
    assert chains("--finding", "leak-stripped") == (0, ["c3@10.0.0.5"])
    assert chains("--finding", "CH204", "--finding", "ch103") == (0, ["c2@10.0.0.9", "c3@10.0.0.5"])
    code, out, _ = cli("report", str(log), "--format", "json", "--severity", "error")
    assert {f["severity"] for c in json.loads(out)["chains"] for f in c["findings"]} == {"error"}
    assert cli("report", str(log), "--client", "10.9.9.9")[0] == 0


def test_html_option_writes_the_page(tmp_path):
    log = write_log(tmp_path / "h.jsonl", lost_observe())
    code, out, err = cli("report", str(log), "--html", str(tmp_path / "r.html"))
    assert code == 1 and "wrote" in err and out.startswith("✗ FAILED")
    assert '<svg class="chain-diagram"' in (tmp_path / "r.html").read_text()
    assert cli("report", str(log), "--html", str(tmp_path / "no" / "dir" / "r.html"))[0] == 2


def test_findings_lists_every_code():
    code, out, _ = cli("findings")
    assert code == 0 and "CH101  error    credential-lost-on-redirect" in out and len(out.splitlines()) == len(CATALOGUE)


# -- as a program, without mitmproxy ----------------------------------------------------------------


GUARD = """
import sys
class NoMitmproxy:
    def find_spec(self, name, path=None, target=None):
        if name == "mitmproxy" or name.startswith("mitmproxy."):
            raise ImportError("mitmproxy is not installed here")
        return None
sys.meta_path.insert(0, NoMitmproxy())
sys.argv[0] = "credhop"
from credhop.cli import main
sys.exit(main())
"""


def run_python(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})})


def test_report_runs_where_mitmproxy_cannot_be_imported(tmp_path):
    log = write_log(tmp_path / "h.jsonl", lost_observe())
    proc = run_python("-c", GUARD, "report", str(log), "--html", str(tmp_path / "r.html"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("✗ FAILED chain c1") and "Traceback" not in proc.stderr


def test_python_dash_m_imports_no_mitmproxy_module(tmp_path):
    log = write_log(tmp_path / "h.jsonl", injected_ok())
    proc = run_python("-X", "importtime", "-m", "credhop", "report", str(log))
    assert proc.returncode == 0 and proc.stdout.startswith("✓ ok chain c1")
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if "import time:" in line]
    assert "credhop.cli" in imported
    assert not [m for m in imported if m.split(".")[0] == "mitmproxy" or m == "credhop.addon"]


def test_console_script_is_declared_and_works_when_installed(tmp_path):
    assert 'credhop = "credhop.cli:main"' in (REPO / "pyproject.toml").read_text()
    script = Path(sys.executable).parent / "credhop"
    if script.exists():  # present once the package is (re)installed with the [project.scripts] table
        proc = subprocess.run([str(script), "report", str(write_log(tmp_path / "h.jsonl", lost_observe()))],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and "CH101" in proc.stdout.splitlines()[0]


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False), ("", False)])
def test_colour_on_a_terminal_unless_no_color(tmp_path, no_color, coloured):
    log = write_log(tmp_path / "h.jsonl", lost_observe())
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color is not None:
        env["NO_COLOR"] = no_color
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "credhop", "report", str(log)], stdout=follower,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 1
    assert ("\x1b[" in b"".join(chunks).decode()) is coloured
    piped = run_python("-m", "credhop", "report", str(log),
                       env={"NO_COLOR": ""} if no_color is None else None)
    assert "\x1b[" not in piped.stdout


def test_report_merges_the_logs_of_several_instances_into_the_same_chains(tmp_path):
    """A fleet: the 3xx went through one proxy instance, the follow-up through another."""
    records = injected_ok().records
    first = [dict(r, instance="proxy-a:8080") for r in records if r["hop"] == 0]
    second = [dict(r, instance="proxy-b:8080") for r in records if r["hop"] > 0]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in first))
    b.write_text("not json\n" + "".join(json.dumps(r) + "\n" for r in second))
    code, out, err = cli("report", "--format", "json", str(a), str(b))
    doc = json.loads(out)
    assert code == 0, err
    assert doc["summary"]["chains"] == 1 and doc["summary"]["ok"] == 1
    assert doc["malformed_lines"] == [len(first) + 1]  # numbered on from the first file's lines
    code_a, out_a, _ = cli("report", "--format", "json", str(a))
    assert json.loads(out_a)["summary"]["ok"] == 0  # one instance's half of the chain alone is not ok


def test_html_shows_a_cut_answer_whole_on_hover_and_an_ok_chains_hint_is_a_note_not_a_fix():
    log = Log()
    long_path = "/simple/" + "a-very-long-package-name-" * 8 + "/"
    log.redirect(0, "https://redirector.example/simple/", f"https://registry.example{long_path}")
    log.response(1, f"https://registry.example{long_path}", 404)
    page = render_html(diagnose(log.records), malformed=[], source="hops.jsonl")
    answers = re.findall(r'<text class="answer"[^>]*><title>([^<]*)</title>([^<]*)</text>', page)
    redirect = next(a for a in answers if a[0].startswith("302"))
    assert redirect[1].endswith("…") and len(redirect[1]) < len(redirect[0])  # cut where it is drawn
    assert long_path in redirect[0]  # whole in its tooltip
    ok = diagnose(injected_ok().records)
    assert ok[0].verdict == "ok" and ok[0].findings and all(f.severity == "info" for f in ok[0].findings)
    page = render_html(ok, malformed=[], source="hops.jsonl")
    assert '<div class="fix">note: ' in page and '<div class="fix">fix: ' not in page
    text = render_text(ok, color=False)
    assert "note: " in text and "fix: " not in text
    assert "*Note:*" in render_markdown(ok, []) and "fix:" in render_text(diagnose(lost_observe().records), color=False)
