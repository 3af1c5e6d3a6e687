"""`credhop check RULES…`: validates rules files for CI, with file:line:column errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from credhop.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "addons" / "credhop" / "rules.yaml"


def check(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def test_the_shipped_rules_are_valid():
    code, out, err = check(str(SHIPPED))
    assert code == 0 and out.endswith("rule(s), valid\n") and err == ""


def test_an_invalid_file_exits_1_with_file_line_column_key(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: corp\n    match:\n      hots: '*.corp.test'\n    action: inject\n")
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - name: corp\n    match: {host: '*.corp.test'}\n    action: inject\n")
    code, out, err = check(str(good), str(bad))
    assert code == 1
    assert err == (f"{bad}:4:7: rules[0].match.hots: unknown key (did you mean 'host'?); "
                   "allowed: host, from_host, scheme, port, path_prefix, status, client\n")
    assert out == f"{good}: 1 rule(s), valid\n"


def test_yaml_errors_and_unreadable_files_name_a_position(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - name: [unclosed\n")
    code, _, err = check(str(broken), str(tmp_path / "missing.yaml"))
    lines = err.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"{broken}:3:1: yaml: ")
    assert lines[1].startswith(f"{tmp_path / 'missing.yaml'}:1:1: file: cannot read")


def test_warnings_pass_unless_strict(tmp_path):
    loose = tmp_path / "loose.yaml"
    loose.write_text("rules:\n  - name: everywhere\n    action: inject\n    allow_plaintext: true\n")
    code, out, err = check(str(loose))
    assert code == 0 and "1 warning(s)" in out and f"{loose}:2:" in err and "(warning)" in err
    assert check("--strict", str(loose))[0] == 1


def test_usage_errors_exit_2_and_the_console_command_runs_without_mitmproxy(tmp_path):
    assert subprocess.run([sys.executable, "-m", "credhop", "check"], capture_output=True).returncode == 2
    # the check imports no mitmproxy: it runs in CI jobs that only have the rules
    code = ("import sys, credhop.cli as c; rc = c.main(['check', sys.argv[1]]); "
            "assert 'mitmproxy' not in sys.modules; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(SHIPPED)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
