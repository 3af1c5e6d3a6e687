#!/usr/bin/env python3
"""Run the client matrix (tests/matrix) and write docs/clients.md from what happened.

    .venv/bin/python scripts/matrix.py [--results FILE] [--doc FILE] [--render-only] [-- PYTEST_ARGS...]

Runs pytest on tests/matrix with CREDHOP_MATRIX_RESULTS set, then renders the table from the result
file, also when some test failed (the table shows what happened), but only when every client ran
(a `-k` selection writes no doc). Exits with pytest's status. Clients come from
scripts/clients/install.sh; CREDHOP_STRICT=1 turns a missing client into a failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.matrix.clients import CLIENTS  # noqa: E402
from tests.matrix.engine import MatrixResult  # noqa: E402
from tests.matrix.report import render, summary_line  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "artifacts" / "matrix" / "results.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "clients.md")
    parser.add_argument("--render-only", action="store_true", help="only render the doc from --results")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    status = 0
    if not args.render_only:
        args.results.unlink(missing_ok=True)
        env = {**os.environ, "CREDHOP_MATRIX_RESULTS": str(args.results)}
        started = time.monotonic()
        status = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/matrix",
                *args.pytest_args,
            ],
            cwd=REPO,
            env=env,
        )
        print(f"credhop matrix: pytest exited {status} after {time.monotonic() - started:.0f} s")
    if not args.results.exists():
        print(f"credhop matrix: no result in {args.results}; {args.doc} not written", file=sys.stderr)
        return status or 1
    result = MatrixResult.from_json(args.results.read_text())
    ran = {r.client for r in result.runs} | {n for n, i in result.clients.items() if i.get("missing")}
    if ran != {c.name for c in CLIENTS}:
        print(f"credhop matrix: only {len(ran)} of {len(CLIENTS)} clients ran; {args.doc} not written")
        return status
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(result))
    line, *_ = summary_line(result)
    print(f"credhop matrix: {line}; wrote {args.doc}")
    return status


if __name__ == "__main__":
    sys.exit(main())
