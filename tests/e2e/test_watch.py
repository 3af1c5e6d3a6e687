"""`credhop watch` on the hop log of a real mitmdump with credhop while real uv 0.5.25 installs run through
it: one install that fails (the Location's credential lost, 401) and one that works (injected)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.e2e.harness import REPO, Mitmdump, clean_env, proxy_env, tool
from tests.e2e.test_clients import uv_install
from tests.secrets_check import assert_no_leak

# inject only for the index on 127.0.0.2; the one on 127.0.0.3 matches no rule, so its Location keeps
# the credential and uv 0.5.25 drops it: a 401, after which uv never asks again (astral-sh/uv#11097)
RULES = "rules:\n  - name: good-index\n    match: {host: 127.0.0.2}\n    action: inject\n"
CREDHOP = Path(sys.executable).with_name("credhop")  # the console script, as a user runs it


class Watcher:
    """A real `credhop watch` process; its output lines collected as they come."""

    def __init__(self, workdir: Path, *argv: str) -> None:
        self.proc = subprocess.Popen([str(CREDHOP), "watch", *argv], cwd=workdir, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=clean_env(workdir / "watch-home"))
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def lines(self, *words: str) -> list[str]:
        return [line for line in self.out if all(w in line for w in words)]

    def wait_for(self, *words: str, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines(*words) or any(all(w in line for w in words) for line in self.err):
                return True
            time.sleep(0.05)
        return False

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()

    @property
    def output(self) -> str:
        return "".join(self.out + self.err)


def test_watch_prints_each_chain_as_it_ends_and_exits_like_the_report(registry_factory, tmp_path, forms):
    good = registry_factory("https", 401, index_host="127.0.0.2")
    bad = registry_factory("https", 401, index_host="127.0.0.3")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    uv = tool("CREDHOP_UV_OLD", "uv-0.5.25")
    watchers: list[Watcher] = []
    with Mitmdump(tmp_path / "proxy", good.test_ca, rules=rules) as proxy:
        try:
            every = Watcher(tmp_path, "--until-idle", "3", str(proxy.hoplog))
            failed = Watcher(tmp_path, "--failed", str(proxy.hoplog))  # until SIGINT
            # until SIGTERM, and no chain judged for being idle: what it prints, it printed as the chain ended
            live = Watcher(tmp_path, "--idle-end", "600", str(proxy.hoplog))
            watchers += [every, failed, live]
            assert all(w.wait_for("following") for w in watchers), "".join(w.output for w in watchers)
            env = proxy_env(proxy.url, proxy.ca_cert)

            lost = uv_install(uv, bad, tmp_path / "lost", env)
            assert lost.returncode != 0 and "401" in lost.output, lost.output[-2000:]
            results: list = []
            works = threading.Thread(
                target=lambda: results.append(uv_install(uv, good, tmp_path / "works", env)))
            works.start()  # at once, so that --until-idle 3 does not end the watch between the two
            # judged when uv did not ask again within the grace: printed while both watches run
            assert failed.wait_for("FAILED", " CH101 "), failed.output
            assert live.wait_for("FAILED", " CH101 "), live.output
            works.join(120)
            assert results and results[0].returncode == 0, results and results[0].output[-2000:]
            assert live.wait_for(" OK "), live.output  # at the follow-up's 200

            assert every.finish(timeout=60) == 1  # quiet for 3 s, and a chain failed
            assert failed.proc.poll() is None and live.proc.poll() is None
            failed.proc.send_signal(signal.SIGINT)
            live.proc.send_signal(signal.SIGTERM)
            assert failed.finish() == 1 and live.finish() == 1
        finally:
            for watcher in watchers:
                watcher.stop()
        hoplog = proxy.hoplog.read_text()

    # what each watch printed, against `credhop report` on the whole log afterwards
    report = subprocess.run([str(CREDHOP), "report", "--format", "json", str(proxy.hoplog)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    verdicts = {c["chain"]: (c["verdict"], c["findings"][0]["code"], c["findings"][0]["hint"])
                for c in json.loads(report.stdout)["chains"]}
    assert sorted(v[0] for v in verdicts.values()) == ["failed", "ok"], report.stdout
    printed = {line.rsplit(" · chain ", 1)[1].strip(): line for line in every.out[:-1]}
    assert set(printed) == set(verdicts), every.output
    for chain, (verdict, code, hint) in verdicts.items():
        line = printed[chain]
        mark = "✗ FAILED" if verdict == "failed" else "✓ OK"
        assert f" {mark} · client 127.0.0.1 · GET https://127.0.0.1:" in line
        assert f" · {code} " in line and hint in line
        assert (" · fix: " if verdict == "failed" else " · note: ") in line
    assert every.out[-1] == "2 chain(s): 1 failed, 0 unknown, 1 ok\n", every.output
    assert failed.lines("FAILED") == failed.out[:-1] and len(failed.out) == 2, failed.output
    assert failed.out[-1] == "1 chain(s): 1 failed, 0 unknown, 0 ok\n"
    assert sorted(live.out[:-1]) == sorted(every.out[:-1]) and live.out[-1] == every.out[-1], live.output
    assert failed.err == [f"credhop watch: following {proxy.hoplog} from its end\n"]  # no traceback either
    assert live.err == failed.err and "Traceback" not in every.output
    assert_no_leak("".join(w.output for w in watchers), forms, "credhop watch output")
    assert_no_leak(hoplog, forms, "hop log")
