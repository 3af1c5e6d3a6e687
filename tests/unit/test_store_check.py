"""store_check.py against a real redis-server: what a store is, the fleet's key check (written once,
sealed again after a rotation, refused with another key), stores that cannot be used (down, frozen,
a replica, a cluster node), and `credhop check --store`, which never prints the store's password."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time

import pytest

from credhop import cli, store_check
from credhop.redis_store import RedisLink
from credhop.sealing import Sealer
from tests.fixtures.fleet import find, free_port
from tests.unit.test_redis_store import K1, K2, redis, redis_server  # noqa: F401  (fixtures)


def look(url: str, keys=(K1,), write: bool = True, timeout: float = 0.2):
    async def go():
        link = RedisLink(url, Sealer(list(keys)), timeout)
        try:
            return await link.look(write=write), link.down
        finally:
            await link.close()
    return asyncio.run(go())


def test_a_fresh_store_is_described_and_the_first_instance_writes_the_key_check(redis):
    report, down = look(redis.url, write=False)
    assert report.answers and not down and report.problem is None
    assert report.kind == "single primary" and report.version.startswith("7.")
    assert report.key.startswith("no key check yet") and redis.command("DBSIZE") == 0  # the check only reads
    report, _ = look(redis.url)
    assert report.key.startswith("key check written") and redis.command("EXISTS", store_check.KEY_CHECK) == 1
    report, _ = look(redis.url)
    assert report.key == "the store key opens the fleet's key check" and report.problem is None


def test_another_key_is_a_problem_and_a_rotation_moves_the_key_check_to_the_newest_key(redis):
    look(redis.url, keys=(K1,))
    report, down = look(redis.url, keys=(K2,))
    assert not down and "sealed with a key this store key file does not have" in report.problem
    # rotation step 2: the new key first, the old one second: opens, and seals it again with the new one
    report, _ = look(redis.url, keys=(K2, K1))
    assert report.problem is None and "sealed again with the first key" in report.key
    report, _ = look(redis.url, keys=(K2,))  # step 3: the old key gone
    assert report.problem is None and report.key == "the store key opens the fleet's key check"


def test_a_store_that_does_not_answer_is_marked_down_at_once():
    report, down = look(f"redis://127.0.0.1:{free_port()}/0")
    assert not report.answers and down and report.problem.startswith("does not answer (")


def test_a_frozen_store_is_given_up_on_within_the_deadline(redis):
    redis.freeze()
    try:
        start = time.monotonic()
        report, down = look(redis.url, timeout=0.2)
        assert time.monotonic() - start < 1.5
    finally:
        redis.thaw()
    assert down and report.problem == "does not answer (no answer within the deadline)"


def test_a_garbage_or_wrong_type_key_check_is_a_problem_not_a_crash(redis):
    redis.command("SET", store_check.KEY_CHECK, "not sealed")
    assert "another instance seals with a different key" in look(redis.url)[0].problem
    redis.command("DEL", store_check.KEY_CHECK)
    redis.command("HSET", store_check.KEY_CHECK, "a", "b")
    report = look(redis.url)[0]
    assert report.answers and report.problem.startswith("answers PING but not credhop's commands (")


def test_a_replica_and_a_cluster_node_are_refused(redis, tmp_path):
    binary = find("redis-server", "CREDHOP_REDIS_SERVER")
    replica_port = free_port()
    cluster_port = next(p for p in iter(free_port, None) if p not in (replica_port, redis.port) and p < 55536)
    argvs = [["--port", str(replica_port), "--replicaof", "127.0.0.1", str(redis.port)],
             ["--port", str(cluster_port), "--cluster-enabled", "yes"]]
    procs = []
    for n, argv in enumerate(argvs):  # each in its own folder: a cluster node writes nodes.conf there
        (tmp_path / str(n)).mkdir()
        procs.append(subprocess.Popen([binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path / str(n)),
                                       *argv], stdout=(tmp_path / f"{n}.out").open("wb"), stderr=subprocess.STDOUT))
    try:
        for n, port in enumerate((replica_port, cluster_port)):
            deadline = time.monotonic() + 10
            while not look(f"redis://127.0.0.1:{port}/0", write=False)[0].answers:
                output = (tmp_path / f"{n}.out").read_text(errors="replace")
                assert procs[n].poll() is None and time.monotonic() < deadline, output[-2000:]
                time.sleep(0.05)
        replica = look(f"redis://127.0.0.1:{replica_port}/0", write=False)[0]
        assert replica.kind == "replica" and "refuses writes" in replica.problem, replica
        node = look(f"redis://127.0.0.1:{cluster_port}/0", write=False)[0]
        assert node.kind == "Redis Cluster node" and "redis+cluster://" in node.problem, node
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def _check(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = cli.main(["check", *argv], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def _key_file(tmp_path, key: bytes = K1):
    path = tmp_path / "store.key"
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return str(path)


def test_check_store_says_what_answers_and_exits_0(redis, tmp_path):
    status, out, err = _check("--store", redis.url, "--store-key", _key_file(tmp_path))
    assert status == 0 and err == ""
    assert out.startswith(f"redis://127.0.0.1:{redis.port}: answers; single primary; Redis 7.")
    assert "round trip" in out and "no key check yet" in out and out.count("\n") == 1


def test_check_store_exits_1_with_one_line_and_never_shows_the_password(tmp_path):
    password = "Pw-s3cr3t-for-the-check"
    port = free_port()
    status, out, err = _check("--store", f"redis://user:{password}@127.0.0.1:{port}/0",
                              "--store-key", _key_file(tmp_path))
    assert status == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"credhop check: redis://127.0.0.1:{port} does not answer (")
    assert password not in err


def test_check_store_with_the_wrong_key_exits_1(redis, tmp_path):
    look(redis.url, keys=(K2,))
    status, out, err = _check("--store", redis.url, "--store-key", _key_file(tmp_path))
    assert status == 1 and "does not open the fleet's key check" in out
    assert "sealed with a key this store key file does not have" in err


@pytest.mark.parametrize(("argv", "says"), [
    ((), "give rules files, --store URL, or both"),
    (("--store", "redis://127.0.0.1:1/0"), "--store needs --store-key FILE"),
])
def test_check_usage_errors_exit_2(argv, says):
    status, _, err = _check(*argv)
    assert status == 2 and says in err


def test_check_store_refuses_a_bad_scheme_and_a_bad_key_file_in_one_line(tmp_path):
    status, _, err = _check("--store", "memroy://x", "--store-key", _key_file(tmp_path))
    assert status == 1 and "not 'memroy://x'" in err and err.count("\n") == 1
    bad = tmp_path / "bad.key"
    bad.write_text("zz-secret-looking-line\n")
    bad.chmod(0o600)
    status, _, err = _check("--store", "redis://127.0.0.1:1/0", "--store-key", str(bad))
    assert status == 1 and str(bad) in err and "zz-secret" not in err and err.count("\n") == 1
