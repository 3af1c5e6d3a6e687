"""The day-one commands: `credhop --version`, `credhop script` (the entry script of an installed credhop
for mitmdump/mitmweb -s) and `credhop proxy --help`, which lists credhop's options first and exits 0."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import credhop
from credhop.cli import main
from credhop.options import OPTIONS


def test_version_prints_the_package_version_and_exits_0(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out == f"credhop {credhop.__version__}\n"


def test_script_prints_a_file_mitmproxy_can_load_outside_the_package(tmp_path):
    out = io.StringIO()
    assert main(["script"], out=out) == 0
    script = Path(out.getvalue().strip())
    assert script.is_file() and script.parent == Path(credhop.__file__).parent
    # loaded as mitmproxy loads a script: by path, as a module of its own, from another directory
    probe = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('__mitmproxy_script__.s', "
             f"{str(script)!r}); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
             "print(type(m.addons[0]).__name__)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "CredHop", result.stderr


def test_proxy_help_lists_credhops_options_first_then_mitmdumps_and_exits_0():
    result = subprocess.run([str(Path(sys.executable).parent / "credhop"), "proxy", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: credhop proxy")
    for option in OPTIONS:
        assert f"  {option.name}=" in text
    assert text.index("credhop_store=") < text.index("--listen-port")  # mitmdump's own help follows
    assert "credhop_plain_redirects=failed|record|count (default: failed)" in text


def test_the_entry_script_names_a_missing_dependency_in_one_sentence(tmp_path):
    # as a standalone mitmproxy binary's bundled Python, which lacks credhop's dependencies
    out = io.StringIO()
    main(["script"], out=out)
    probe = ("import importlib.util, sys; sys.modules['ada_url'] = None; spec = importlib.util.spec_from_file_location("
             f"'__mitmproxy_script__.s', {out.getvalue().strip()!r}); m = importlib.util.module_from_spec(spec)\n"
             "try:\n    spec.loader.exec_module(m)\nexcept ImportError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("credhop needs ada_url, which the Python running mitmproxy"), result
    assert "pip install mitmproxy credhop" in result.stdout and "credhop proxy" in result.stdout
