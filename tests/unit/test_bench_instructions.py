"""`make bench-instructions`: how mitmdump is put under callgrind, and what the report works out from the counts."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from scripts.bench import callgrind

REPO = Path(__file__).resolve().parents[2]


def _bench():
    # scripts/bench.py sits beside the scripts/bench package: loaded by path
    spec = importlib.util.spec_from_file_location("credhop_bench_script", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


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
    text = "\n".join(_bench()._instruction_findings(args, rows))
    assert "costs 100 k instructions per plain request" in text  # the script alone
    assert "costs 480 k per download request, `mitmdump -s addons/credhop.py` 600 k" in text
    # one line per redirect and follow-up (two requests): 2 x 400 k; 4.0 % of the pair's 20 M
    assert "One info line** costs the floor 800 k instructions, 4.0 %" in text
    assert "credhop's line, which skips that event, costs 1,000 k" in text  # 2 x (shipped - quiet)
    assert "+800 k per request on redirects, +550 k per download request" in text


def test_findings_leave_out_what_the_run_did_not_measure():
    rows = [_row("bare", "download", 9e6), _row("shipped", "download", 9.6e6)]
    lines = _bench()._instruction_findings(argparse.Namespace(schemes=["http"]), rows)
    assert lines == ["## What it shows", ""]
