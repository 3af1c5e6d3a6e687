"""Time-bounded fuzzing in the normal test run. CREDHOP_FUZZ_SECONDS sets each target's budget."""

from __future__ import annotations

import os

import pytest

from tests.fuzz.budget import RESULTS

BUDGET = float(os.environ.get("CREDHOP_FUZZ_SECONDS", "12"))


@pytest.fixture
def budget() -> float:
    return BUDGET


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, result in RESULTS.items():
        terminalreporter.write_line(f"fuzz {name}: {result}")
