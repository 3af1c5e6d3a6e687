"""`make demo`: uv 0.5.25 against a redirector whose Location carries the credential, through credhop.

Run 1 has credhop only observing: uv drops the credential and fails, and the
report says why. Run 2 lets credhop inject: uv installs. Both reports are
printed; their HTML pages go to artifacts/ (git-ignored).

    .venv/bin/python scripts/demo.py [--keep]    # from the repository root
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the harness finds its tools through these, as under `make test`
os.environ.setdefault("CREDHOP_MITMDUMP", str(Path(sys.executable).parent / "mitmdump"))
os.environ.setdefault("CREDHOP_UV_OLD", str(REPO / ".tools" / "uv-0.5.25" / "bin" / "uv"))

from tests.e2e.harness import Mitmdump, proxy_env  # noqa: E402
from tests.e2e.test_clients import uv_install  # noqa: E402
from tests.fixtures.pki import make_pki  # noqa: E402
from tests.fixtures.registry import AuthIndex, Redirector, generate_token  # noqa: E402
from tests.fixtures.wheel import build_wheel  # noqa: E402

from credhop.cli import main as report_main  # noqa: E402

USER = "aws"


class Registry:
    """What tests.e2e.test_clients.uv_install needs: the redirector's simple URL."""

    def __init__(self, redirector: Redirector) -> None:
        self.simple_url = redirector.simple_url


def run(title: str, workdir: Path, ca: Path, registry: Registry, observe: bool) -> int:
    """One uv 0.5.25 install through a fresh mitmdump; prints uv's verdict and `credhop report`."""
    print(f"\n=== {title} ===", flush=True)
    options = {"credhop_observe": "true"} if observe else {}
    with Mitmdump(workdir / "proxy", ca, options=options) as proxy:
        result = uv_install(os.environ["CREDHOP_UV_OLD"], registry, workdir / "client",
                            proxy_env(proxy.url, proxy.ca_cert))
    # uv runs with -v (the tests' settings); its own verdict is in the lines that are not debug output
    said = [line for line in result.output.splitlines()
            if line.strip() and not line.lstrip().startswith(("DEBUG", "TRACE", "INFO", "WARN"))]
    mode = ", observe only" if observe else ""
    print(f"$ uv pip install --index-url {registry.simple_url} credhop-demo-pkg   (through credhop{mode})")
    print("\n".join(f"  {line}" for line in said[-6:]))
    print(f"uv exit status: {result.returncode}\n")
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    page = artifacts / f"demo-{'observe' if observe else 'inject'}.html"
    print(f"$ credhop report {proxy.hoplog} --html {page}", flush=True)
    status = report_main(["report", str(proxy.hoplog), "--html", str(page)])
    print(f"credhop report exit status: {status}", flush=True)
    return result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (hop logs), say where")
    args = parser.parse_args(argv)
    uv = os.environ["CREDHOP_UV_OLD"]
    if not Path(uv).exists():
        print(f"demo: uv 0.5.25 not found at {uv} (run `make tools`)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="credhop-demo-"))
    try:
        pki = make_pki(workdir / "pki")
        wheel = build_wheel(workdir / "wheel")
        # https, as real registries: uv then follows through a CONNECT tunnel and drops the userinfo
        index = AuthIndex(USER, generate_token(), wheel, unauth_status=404, tls=pki.server_context(),
                          prefix="/pypi/python")
        with index, Redirector("", tls=pki.server_context()) as redirector:
            redirector.target = index.credentials_url("/simple/")
            registry = Registry(redirector)
            failed = run("1. credhop observes only: uv 0.5.25 drops the credential", workdir / "observe",
                         pki.ca_cert, registry, observe=True)
            fixed = run("2. credhop injects: uv 0.5.25 installs", workdir / "inject", pki.ca_cert, registry,
                        observe=False)
        print(f"\ndemo: uv exit {failed} when credhop only observes (expected non-zero), "
              f"{fixed} when it injects (expected 0)")
        return 0 if failed != 0 and fixed == 0 else 1
    finally:
        if args.keep:
            print(f"demo: work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
