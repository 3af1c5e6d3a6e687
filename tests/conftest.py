"""Suite-wide rules: e2e marking, and no silent skips when CREDHOP_STRICT=1 (CI, make test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

STRICT = os.environ.get("CREDHOP_STRICT") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CREDHOP_STRICT=1 (a missing tool is an error here): {reason}"
