"""What an installed credhop needs beyond its modules: the default rules as package data, `credhop proxy`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

import credhop
from credhop import addon, options
from credhop.rules import load_rules

REPO = Path(__file__).resolve().parents[2]


def test_default_rules_are_package_data():
    assert options.DEFAULT_RULES.exists()
    assert options.DEFAULT_RULES.parent == Path(credhop.__file__).parent  # inside the package, not the checkout
    assert load_rules(options.DEFAULT_RULES).rules
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert options.DEFAULT_RULES.name in package_data["credhop"]  # or the wheel ships without it


def test_one_rules_file():
    assert not (REPO / "rules.yaml").exists()  # the packaged file is the only source of truth


def test_credhop_rules_defaults_to_the_packaged_file():
    from mitmproxy.test import taddons

    with taddons.context(addon.CredHop()) as tctx:
        assert Path(tctx.options.credhop_rules) == options.DEFAULT_RULES


# -- `credhop proxy`: mitmdump with credhop built in -------------------------------------------------

CREDHOP = Path(sys.executable).with_name("credhop")  # the console script pip made for this interpreter


def _run(argv: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", "NO_COLOR": "1"}
    # if the proxy failed to refuse, the timeout ends the test (run() kills it) instead of hanging it
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _proxy_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [str(CREDHOP), "proxy", "--listen-host", "127.0.0.1", "--listen-port", "0",
            "--set", f"confdir={tmp_path / 'conf'}", *extra]


def test_credhop_help_lists_proxy(tmp_path):
    result = _run([str(CREDHOP), "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+proxy\s+start mitmdump", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize("value, says", [("abc", "not an integer"), ("0", "must be 1..")])
def test_proxy_refuses_a_bad_credhop_option_before_listening(tmp_path, value, says):
    from mitmproxy.version import VERSION

    result = _run(_proxy_argv(tmp_path, "--set", f"credhop_ttl={value}"), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0].lower(), result.stderr
    # a type error is mitmproxy's own message, which names the option only from 12 on ("Not an integer: abc")
    if value != "abc" or int(VERSION.split(".")[0]) >= 12:
        assert "credhop_ttl" in lines[0], result.stderr
    assert "listening" not in result.stdout + result.stderr


def test_proxy_lists_credhop_options(tmp_path):
    result = _run(_proxy_argv(tmp_path, "--options"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"credhop_rules: {options.DEFAULT_RULES}" in result.stdout
    assert "credhop_ttl: 600" in result.stdout


def test_proxy_applies_the_defaults_before_listening(tmp_path):
    # mitmproxy configures a built-in addon only for options that change: the packaged rules and
    # the fingerprint key must still be in place before the first client can connect
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_proxy_argv(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    watchdog = threading.Timer(60, proc.kill)  # a proxy that never listens ends the loop below
    watchdog.start()
    try:
        for line in proc.stdout:
            seen.append(line)
            if "proxy listening" in line:
                break
    finally:
        watchdog.cancel()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = "".join(seen)
    assert "proxy listening" in output, output
    assert re.search(rf"credhop: loaded \d+ rule\(s\) from {re.escape(str(options.DEFAULT_RULES))}\n", output), output
    assert (tmp_path / "conf" / "credhop-fingerprint.key").exists()


def test_proxy_passes_mitmdump_errors_through(tmp_path):
    result = _run(_proxy_argv(tmp_path, "--no-such-flag"), tmp_path)
    assert result.returncode == 1
    assert "credhop proxy: error: unrecognized arguments: --no-such-flag" in result.stderr
    assert "listening" not in result.stdout + result.stderr


def test_credhop_runs_where_a_first_script_would():
    # before the dumper and flow saving, so they see the Location and body credhop scrubbed
    from mitmproxy import options
    from mitmproxy.addons.dumper import Dumper
    from mitmproxy.addons.save import Save
    from mitmproxy.addons.script import ScriptLoader

    from credhop.launcher import CredHopDumpMaster

    async def chain() -> list[object]:
        master = CredHopDumpMaster(options.Options(), with_termlog=False)
        master.addons.get("credhop").done()  # drops the log filter load() added
        return master.addons.chain

    kinds = [type(a) for a in asyncio.run(chain())]
    assert kinds.count(addon.CredHop) == 1
    at = kinds.index(addon.CredHop)
    assert at == kinds.index(ScriptLoader) - 1 and at < kinds.index(Save) and at < kinds.index(Dumper)


# -- without mitmproxy: the report still works, the proxy says what is missing ----------------------

BLOCK_MITMPROXY = "import sys; sys.modules['mitmproxy'] = None; from credhop.cli import main; sys.exit(main())"


def test_report_needs_no_mitmproxy(tmp_path):
    hoplog = tmp_path / "hops.jsonl"
    hoplog.write_text("")
    result = _run([sys.executable, "-c", BLOCK_MITMPROXY, "report", str(hoplog)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert _run([sys.executable, "-c", BLOCK_MITMPROXY, "findings"], tmp_path).stdout.startswith("CH")


def test_proxy_without_mitmproxy_says_how_to_install_it(tmp_path):
    result = _run([sys.executable, "-c", BLOCK_MITMPROXY, "proxy"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "mitmproxy" in result.stderr and "pip install" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr
