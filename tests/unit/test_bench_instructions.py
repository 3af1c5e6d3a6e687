"""`make bench-instructions`: how mitmdump is put under callgrind, and what the report works out from the counts."""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.bench import callgrind, instructions_report

REPO = Path(__file__).resolve().parents[2]


def test_a_console_script_runs_under_its_own_interpreter(tmp_path):
    (tmp_path / "python").write_text("")
    script = tmp_path / "mitmdump"
    script.write_text("#!/venv/bin/python\nimport mitmproxy\n")
    argv = callgrind.wrap([str(script), "--listen-port", "1"], tmp_path / "cg.out")
    assert argv[:2] == ["valgrind", "--tool=callgrind"]
    assert f"--callgrind-out-file={tmp_path / 'cg.out'}" in argv
    # valgrind would otherwise count the loader of the #! line, not mitmdump
    assert argv[-4:] == [str(tmp_path / "python"), str(script), "--listen-port", "1"]


def test_a_program_that_is_no_script_runs_as_it_is(tmp_path):
    binary = tmp_path / "python3"
    binary.write_bytes(b"\x7fELF")
    argv = callgrind.wrap([str(binary), "-m", "credhop", "proxy"], tmp_path / "cg.out")
    assert argv[-4:] == [str(binary), "-m", "credhop", "proxy"]


def _row(config: str, workload: str, instructions: float) -> dict:
    return {"config": config, "workload": workload, "scheme": "http", "instructions": instructions,
            "label": config}


def test_the_findings_are_worked_out_from_the_counts():
    counts = {  # per request, as a run measures them
        "plain": {"bare": 9_000_000, "empty": 9_100_000},
        "redirect": {"bare": 10_000_000, "floor": 10_100_000, "floorlog": 10_500_000, "shipped": 11_300_000,
                     "quiet": 10_800_000},
        "download": {"bare": 9_000_000, "floor": 9_050_000, "shipped": 9_600_000, "builtin": 9_480_000},
    }
    rows = [_row(c, w, n) for w, by in counts.items() for c, n in by.items()]
    args = argparse.Namespace(schemes=["http"])
    text = "\n".join(instructions_report._instruction_findings(args, rows))
    assert "costs 100 k instructions per plain request" in text  # the script alone
    assert "costs 480 k per download request, `mitmdump -s addons/credhop.py` 600 k" in text
    # one line per redirect and follow-up (two requests): 2 x 400 k; 4.0 % of the pair's 20 M
    assert "One info line** costs the floor 800 k instructions, 4.0 %" in text
    assert "credhop's line, which skips that event, costs 1,000 k" in text  # 2 x (shipped - quiet)
    assert "+800 k per request on redirects, +550 k per download request" in text


def test_findings_leave_out_what_the_run_did_not_measure():
    rows = [_row("bare", "download", 9e6), _row("shipped", "download", 9.6e6)]
    lines = instructions_report._instruction_findings(argparse.Namespace(schemes=["http"]), rows)
    assert lines == ["## What it shows", ""]


def test_the_targets_table_says_met_or_not_for_each_scheme(tmp_path, monkeypatch):
    before = tmp_path / "before.json"
    before.write_text('{"rows": [{"config": "shipped", "workload": "download", "scheme": "http", '
                      '"instructions_ratio": 1.065}]}')
    monkeypatch.setattr(instructions_report, "BEFORE", before)
    rows = [{"config": "shipped", "label": "credhop", "workload": "download", "scheme": s, "instructions_ratio": r}
            for s, r in (("http", 1.019), ("https", 1.031))]
    rows.append({"config": "redis", "label": "credhop + Redis", "workload": "plain", "scheme": "http",
                 "instructions_ratio": 1.016, "requests": 200, "redis_commands": 0})
    table = instructions_report._instruction_targets(argparse.Namespace(schemes=["http", "https"]), rows)
    assert "| credhop | download | http | x1.020 | x1.065 | x1.019 | yes |" in table
    assert "| credhop | download | https | x1.020 | — | x1.031 | **no** |" in table
    assert "| credhop + Redis | plain | http | x1.020 | — | x1.016, 0.00 Redis commands/request | yes |" in table
    assert not [line for line in table if "| redirect |" in line]  # no row: nothing measured, nothing claimed
