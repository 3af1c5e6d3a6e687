"""The client matrix: one session-wide run of every selected client, direct and through credhop.

The tests in test_matrix.py only read its result. Only the clients whose tests were collected run
(`-k uv` runs uv's eight cases). CREDHOP_MATRIX_RESULTS=path writes the result as JSON, from which
scripts/matrix.py renders docs/clients.md. A client that is not installed makes its tests skip, which
CREDHOP_STRICT=1 (make test, CI) turns into failures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from .clients import CLIENTS
from .engine import Matrix, MatrixResult

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "matrix: the client matrix (tests/matrix); minutes, needs scripts/clients/install.sh"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.matrix)


@dataclass
class MatrixRun:
    result: MatrixResult
    engine: Matrix


@pytest.fixture(scope="session")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    wanted = {
        item.callspec.params["client"]
        for item in request.session.items
        if HERE in Path(str(item.fspath)).resolve().parents
        and hasattr(item, "callspec")
        and "client" in item.callspec.params
    }
    clients = [c for c in CLIENTS if c.name in wanted] or list(CLIENTS)
    engine = Matrix(tmp_path_factory.mktemp("matrix"), clients)
    result = engine.run()
    out = os.environ.get("CREDHOP_MATRIX_RESULTS")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(result.to_json())
    return MatrixRun(result, engine)
