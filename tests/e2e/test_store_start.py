"""A shared store is looked at when the proxy starts, under `mitmdump -s` and `credhop proxy` alike: one
line says whether it answers and takes the fleet key, naming the instance the proxy really is, and
credhop_store_up says 0 for a store that does not answer before any request has tried it.
(Before: `shared through redis://127.0.0.1:1 …` for an unreachable store, twice under `credhop proxy`,
the first time as instance HOST:8080, and credhop_store_up 1 until a request failed.)"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import ENTRY_SCRIPT, Mitmdump, free_port
from tests.e2e.test_fleet import need
from tests.e2e.test_proxy import wait_for
from tests.fixtures.fleet import RedisServer

pytestmark = pytest.mark.e2e

LAUNCHERS = {
    "mitmdump -s": lambda: [str(Path(sys.executable).parent / "mitmdump"), "-s", str(ENTRY_SCRIPT)],
    "credhop proxy": lambda: [str(Path(sys.executable).parent / "credhop"), "proxy"],
}


def _key(path: Path) -> Path:
    path.write_text("cd" * 32 + "\n")
    path.chmod(0o600)
    return path


def _store_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "shared store" in line or "shared through" in line]


def _gauge(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("credhop_store_up "))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_store_that_does_not_answer_is_said_at_start_once_and_reads_down(tmp_path, pki, launcher):
    metrics = free_port()
    options = {"credhop_store": "redis://127.0.0.1:1/0", "credhop_store_key": str(_key(tmp_path / "k")),
               "credhop_metrics": f"127.0.0.1:{metrics}"}
    with Mitmdump(tmp_path / "proxy", pki.ca_cert, options=options, command=LAUNCHERS[launcher]()) as proxy:
        assert wait_for(lambda: _store_lines(proxy.output)), proxy.output
        assert wait_for(lambda: _gauge(metrics) == 0.0, 3), "credhop_store_up read 1 for a store that never answered"
        time.sleep(0.5)  # a second line, if any, would come now
        lines = _store_lines(proxy.output)
    assert len(lines) == 1, proxy.output
    assert "shared store redis://127.0.0.1:1 does not answer (" in lines[0]
    assert "asked again" in lines[0] and "shared through" not in lines[0]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_store_that_answers_is_said_once_with_the_instance_and_the_key_check(tmp_path, pki, launcher):
    need("redis-server", "CREDHOP_REDIS_SERVER")
    with RedisServer(tmp_path / "redis") as redis:
        options = {"credhop_store": redis.url, "credhop_store_key": str(_key(tmp_path / "k"))}
        with Mitmdump(tmp_path / "a", pki.ca_cert, options=options, command=LAUNCHERS[launcher]()) as first:
            assert wait_for(lambda: _store_lines(first.output)), first.output
            time.sleep(0.5)
        lines = _store_lines(first.output)
        assert len(lines) == 1, first.output
        assert f"as instance {socket.gethostname()}:{first.port}" in lines[0]
        assert "single primary; Redis 7." in lines[0] and "key check written" in lines[0]
        assert redis.command("EXISTS", "credhop:v1:keycheck") == 1

        # a second instance with another key: told at start that it would share nothing
        other = {**options, "credhop_store_key": str(tmp_path / "k2")}
        (tmp_path / "k2").write_text("ef" * 32 + "\n")
        (tmp_path / "k2").chmod(0o600)
        with Mitmdump(tmp_path / "b", pki.ca_cert, options=other, command=LAUNCHERS[launcher]()) as second:
            assert wait_for(lambda: "sealed with a key this store key file does not have" in second.output), \
                second.output
        with Mitmdump(tmp_path / "c", pki.ca_cert, options=options, command=LAUNCHERS[launcher]()) as third:
            assert wait_for(lambda: "the store key opens the fleet's key check" in third.output), third.output
