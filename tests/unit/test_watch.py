"""`credhop watch`: the follower on a real file written while it reads, the chain-end tracker on a hop
log the addon wrote (a fake clock, no sleeping), the line it prints, and the command line."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from credhop import watch as watch_module
from credhop.cli import main
from credhop.diagnosis import diagnose, parse_records
from credhop.sinks import RETRY_GRACE
from credhop.watch import Follower, Printer, Watch, chain_line, ends, may_end, run
from tests.secrets_check import Secret, assert_no_leak, secret_forms
from tests.unit.addon_helpers import ENCODED, FORMS, TOKEN, Clock, basic, run_redirect, send

REPO = Path(__file__).resolve().parents[2]


def record_line(n: int) -> str:
    return json.dumps({"v": 1, "event": "response", "chain": f"c{n}", "hop": 1, "status": 200, "n": n})


class Notices(list):
    def __call__(self, text: str) -> None:
        self.append(text)


# -- the follower, on a real file ------------------------------------------------------------------


def following(tmp_path: Path, text: str) -> tuple[Path, Follower, Notices]:
    """A hop log holding `text`, followed from its start."""
    log = tmp_path / "hops.jsonl"
    log.write_text(text)
    notices = Notices()
    follower = Follower(log, from_start=True, notice=notices)
    assert follower.start() == []
    return log, follower, notices


def test_a_line_is_read_once_it_ends_and_never_split(tmp_path):
    log = tmp_path / "hops.jsonl"
    log.write_text("")
    follower = Follower(log)
    assert follower.start() == []
    with log.open("a") as f:
        f.write('{"event": "resp')
        f.flush()
        assert follower.poll() == []  # half written: not yet a line
        f.write('onse"}\n{"second"')
        f.flush()
        assert follower.poll() == ['{"event": "response"}']
        f.write(": 2}\n")
        f.flush()
        assert follower.poll() == ['{"second": 2}']
    assert follower.poll() == [] and follower.dropped == 0


def test_it_starts_at_the_end_with_the_lines_before_as_context_and_reads_the_line_being_written(tmp_path):
    log = tmp_path / "hops.jsonl"
    log.write_text(f"{record_line(1)}\n{record_line(2)}\n{record_line(3)[:10]}")
    notices = Notices()
    follower = Follower(log, notice=notices)
    assert follower.start() == [record_line(1), record_line(2)]  # context, not news
    assert follower.poll() == []
    with log.open("a") as f:
        f.write(record_line(3)[10:] + "\n")
    assert follower.poll() == [record_line(3)]  # begun before the start, ended after: read whole
    assert notices == [f"following {log} from its end"]
    from_start = Follower(log, from_start=True)
    assert from_start.start() == [] and from_start.poll() == [record_line(n) for n in (1, 2, 3)]


def test_it_waits_for_a_file_that_appears_late_and_reads_it_from_its_start(tmp_path):
    log = tmp_path / "later" / "hops.jsonl"
    notices = Notices()
    follower = Follower(log, notice=notices)
    assert follower.start() == [] and follower.poll() == [] and follower.poll() == []
    log.parent.mkdir()
    log.write_text(f"{record_line(1)}\n{record_line(2)}\n")
    assert follower.poll() == [record_line(1), record_line(2)]
    assert notices == [f"waiting for {log} to appear", f"{log} appeared; reading it from its start"]


def test_a_truncated_file_is_read_again_from_its_start(tmp_path):
    log, follower, notices = following(tmp_path, f"{record_line(1)}\n{record_line(2)}\n{record_line(3)[:5]}")
    assert follower.poll() == [record_line(1), record_line(2)]
    with log.open("r+") as f:  # copytruncate, or `: > hops.jsonl`: same file, shorter
        f.truncate(0)
    with log.open("a") as f:
        f.write(record_line(4) + "\n")
    assert follower.poll() == [record_line(4)]
    assert follower.dropped == 1  # the half line the truncation cut off
    assert notices[-1] == f"{log} was truncated; reading it from its start"


def test_a_replaced_file_is_read_out_then_the_new_one_from_its_start(tmp_path):
    log, follower, notices = following(tmp_path, f"{record_line(1)}\n")
    assert follower.poll() == [record_line(1)]
    with log.open("a") as f:
        f.write(record_line(2) + "\n")  # written just before the rotation: must not be lost
    log.rename(tmp_path / "hops.jsonl.1")
    assert follower.poll() == [record_line(2)] and not notices[1:]  # gone, not replaced: keep the one held
    with (tmp_path / "hops.jsonl.1").open("a") as f:
        f.write(record_line(3) + "\n")  # the proxy still writes the renamed file it holds
    log.write_text(f"{record_line(4)}\n")  # the new file
    assert follower.poll() == [record_line(3), record_line(4)]
    assert notices[-1] == f"{log} was replaced; following the new file from its start"
    with log.open("a") as f:
        f.write(record_line(5) + "\n")
    assert follower.poll() == [record_line(5)]


def test_lines_written_by_another_thread_in_pieces_arrive_whole_and_in_order(tmp_path):
    log = tmp_path / "hops.jsonl"
    expected = [record_line(n) for n in range(300)]
    text = "".join(line + "\n" for line in expected).encode()
    follower = Follower(log, notice=Notices())
    follower.start()  # before the file exists

    def write() -> None:
        with log.open("ab", buffering=0) as f:
            for at in range(0, len(text), 97):  # pieces that cut lines anywhere
                f.write(text[at:at + 97])
                time.sleep(0.0005)

    writer = threading.Thread(target=write)
    writer.start()
    got: list[str] = []
    deadline = time.monotonic() + 30
    while len(got) < len(expected) and time.monotonic() < deadline:
        got += follower.poll()
    writer.join()
    assert got == expected and follower.dropped == 0


def test_a_line_too_long_is_dropped_and_counted_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(watch_module, "MAX_LINE", 100)
    log = tmp_path / "hops.jsonl"
    log.write_text("")
    follower = Follower(log)
    follower.start()
    with log.open("a") as f:
        f.write("x" * 150)
        f.flush()
        assert follower.poll() == [] and follower.dropped == 1
        f.write("y" * 150 + "\n" + record_line(1) + "\n")
    assert follower.poll() == [record_line(1)] and follower.dropped == 1


def test_a_directory_cannot_be_followed(tmp_path):
    with pytest.raises(IsADirectoryError):
        Follower(tmp_path).start()


# -- when a chain ends: records the addon wrote ----------------------------------------------------


def client(n: int) -> tuple[str, int]:
    return (f"10.0.0.{n}", 40000)


def respond(hop, flow, status: int) -> None:
    flow.response = tflow.tresp(status_code=status)
    hop.response(flow)


def _page(hop, n: int, status: int, host: str = "nomatch.example", headers=()) -> None:
    respond(hop, send(hop, f"https://{host}/simple/pkg/", client=client(n), headers=headers), status)


@pytest.fixture
def hoplog(hop) -> list[dict]:
    """A hop log the addon wrote, one chain per client: what each kind of chain leaves in the file."""
    location = "https://aws:" + ENCODED + "@{}/simple/pkg/"
    for n, host in ((1, "registry.example"), (2, "nomatch.example"), (3, "nomatch.example"),
                    (4, "nomatch.example"), (5, "registry.example"), (6, "registry.example"),
                    (7, "registry.example")):
        run_redirect(hop, location.format(host), client=client(n))
    _page(hop, 1, 200, "registry.example")  # injected, 200: ok
    _page(hop, 2, 404)  # no rule, the credential lost: 404
    _page(hop, 3, 401)  # lost, 401, and the client never asks again (curl, uv)
    _page(hop, 4, 401)  # pip: 401, then again with the credential it took from the Location
    _page(hop, 4, 200, headers=[("Authorization", basic("aws", TOKEN))])
    # client 5 never makes its follow-up
    _page(hop, 6, 200, "registry.example")  # then downloads, counted together, then one that fails
    for i in range(3):
        respond(hop, send(hop, f"https://registry.example/files/p{i}.whl", client=client(6)), 200)
    hop.addon.hops.flush_downloads(everything=True)
    for name in ("missing", "gone"):
        respond(hop, send(hop, f"https://registry.example/files/{name}.whl", client=client(6)), 404)
    broken = send(hop, "https://registry.example/simple/pkg/", client=client(7))
    broken.error = tflow.terr()
    hop.error(broken)
    text = hop.log.read_text()
    assert_no_leak(text, FORMS, "hop log")
    read = parse_records(text.splitlines())
    assert not read.malformed and {r["event"] for r in read.records} >= {"redirect", "inject", "response",
                                                                          "downloads", "error"}
    return read.records


def of(records: list[dict], n: int) -> list[dict]:
    return [r for r in records if r["client"] == f"10.0.0.{n}"]


def feed(watch: Watch, records: list[dict]) -> list[tuple[int, str, str]]:
    """Each record in turn; (index of the record after which a chain was judged, verdict, top code)."""
    judged = []
    for i, record in enumerate(records):
        judged += [(i, c.verdict, c.findings[0].code) for c in watch.add([record])]
    return judged


def test_a_follow_ups_final_answer_ends_its_chain_at_once(hoplog):
    clock = Clock()
    for n, verdict, code in ((1, "ok", "CH110"), (2, "failed", "CH101")):
        records = of(hoplog, n)
        assert records[-1]["event"] == "response"
        assert feed(Watch(clock), records) == [(len(records) - 1, verdict, code)]


def test_a_401_ends_its_chain_once_no_retry_came_within_the_grace(hoplog):
    clock = Clock()
    watch = Watch(clock)
    records = of(hoplog, 3)
    assert feed(watch, records) == []  # the 401: a retry may come
    clock.now += RETRY_GRACE * 0.9
    assert watch.due() == []
    clock.now += RETRY_GRACE * 0.2
    (chain,) = watch.due()
    assert (chain.verdict, chain.findings[0].code, chain.client) == ("failed", "CH101", "10.0.0.3")
    clock.now += 100
    assert watch.due() == [] and watch.finish() == []  # judged once


def test_a_retry_after_a_401_ends_the_chain_as_it_went_and_once(hoplog):
    clock = Clock()
    watch = Watch(clock)
    records = of(hoplog, 4)
    assert [r.get("retry") for r in records if r["event"] == "response"] == [None, True]
    assert feed(watch, records) == [(len(records) - 1, "ok", "CH405")]  # pip got in with its own header
    clock.now += RETRY_GRACE * 2
    assert watch.due() == [] and watch.finish() == []


def test_a_chain_with_no_record_for_idle_end_is_judged_anyway(hoplog):
    clock = Clock()
    watch = Watch(clock, idle_end=30)
    assert feed(watch, of(hoplog, 5)) == []  # the redirect, then nothing
    clock.now += 29.9
    assert watch.due() == []
    clock.now += 0.2
    (chain,) = watch.due()
    assert (chain.verdict, chain.findings[0].code) == ("unknown", "CH502")
    assert watch.finish() == []


def test_every_open_chain_is_judged_at_the_finish(hoplog):
    watch = Watch(Clock())
    assert feed(watch, of(hoplog, 5) + of(hoplog, 3)) == []
    assert sorted(c.client for c in watch.finish()) == ["10.0.0.3", "10.0.0.5"]
    assert watch.finish() == []


def test_an_error_after_hop_0_ends_its_chain(hoplog):
    records = of(hoplog, 7)
    assert records[-1]["event"] == "error" and records[-1]["hop"] == 1
    assert feed(Watch(Clock()), records) == [(len(records) - 1, "failed", "CH501")]


def test_counted_downloads_change_nothing_and_a_failed_download_judges_again(hoplog):
    records = of(hoplog, 6)
    events = [r["event"] for r in records]
    answer = events.index("response")
    assert events[answer + 1] == "downloads" and records[-1]["reuse"] is True and records[-1]["status"] == 404
    # the follow-up's 200 ends the chain; the tally written later does not; the first failed download does,
    # and the verdict it gives is new, so the chain is handed out again; the second changes nothing
    first_failed = len(records) - 3
    assert (records[first_failed]["event"], records[first_failed]["status"]) == ("response", 404)
    assert feed(Watch(Clock()), records) == [(answer, "ok", "CH110"), (first_failed, "failed", "CH102")]


def test_the_tracker_ends_chains_where_the_live_proxy_does(hoplog):
    # the dict rules against RecentChains's own, on every record of the real log
    from credhop.records import ErrorRecord, ResponseRecord
    from credhop.sinks import RecentChains

    for record in hoplog:
        if record["event"] not in ("response", "error"):
            assert not ends(record) and not may_end(record)
            continue
        fields = {k: record[k] for k in ("ts", "client", "chain", "hop", "method", "url")}
        fields |= {"flow": record.get("flow", ""), "retry": record.get("retry", False),
                   "reuse": record.get("reuse", False)}
        typed = (ResponseRecord(**fields, status=record["status"]) if record["event"] == "response"
                 else ErrorRecord(**fields, reason=record["reason"]))
        assert (ends(record), may_end(record)) == (RecentChains._ends(typed), RecentChains._may_end(typed))


def test_the_verdicts_are_the_reports_own(hoplog):
    clock = Clock()
    watch = Watch(clock)
    judged = {}
    for record in hoplog:
        judged |= {c.id: c.verdict for c in watch.add([record])}
    clock.now += 60
    judged |= {c.id: c.verdict for c in watch.due() + watch.finish()}
    assert judged == {c.id: c.verdict for c in diagnose(hoplog)}  # `credhop report` on the whole file


def test_chains_begun_before_the_start_are_context_and_judged_only_if_they_go_on(hoplog):
    clock = Clock()
    watch = Watch(clock)
    lost, never = of(hoplog, 2), of(hoplog, 5)
    watch.context(lost[:-1] + never + of(hoplog, 1))  # written before the watch started
    clock.now += 1000
    assert watch.due() == [] and watch.finish() == []  # none of them got a record since: not ours to judge
    (chain,) = watch.add(lost[-1:])  # its answer came after the start: judged with its redirect
    assert (chain.verdict, chain.findings[0].code) == ("failed", "CH101")


# -- the line --------------------------------------------------------------------------------------


def test_the_line_has_time_verdict_client_origin_path_code_and_hint(hoplog):
    (lost,) = diagnose(of(hoplog, 2))
    line = chain_line(lost)
    assert re.fullmatch(r"\d\d:\d\d:\d\d ✗ FAILED · client 10\.0\.0\.2 · "
                        r"GET https://redirector\.example/simple/pkg/ · "
                        r"CH101 credential-lost-on-redirect · fix: .+ · chain [0-9a-f]{16}", line), line
    assert lost.findings[0].hint in line
    (ok,) = diagnose(of(hoplog, 1))
    assert " ✓ OK · " in chain_line(ok) and " · CH110 credential-in-location · note: " in chain_line(ok)
    painted = chain_line(lost, color=True, again=True)
    assert "\x1b[31;1m✗ FAILED\x1b[0m (updated)" in painted and "\x1b[2mfix:\x1b[0m" in painted


def test_a_hostile_log_shows_no_secret_and_no_terminal_control():
    secret = Secret("Sup3r-s3cret-Tok3n")
    forms = secret_forms(secret)
    records = [
        # a writer that did not redact (or a forged line): userinfo, a token in the query, a URL with userinfo
        # in the path, an Authorization value, and terminal controls, in the fields the line shows
        {"event": "redirect", "chain": "evil", "hop": 0, "method": "GET\x1b[2J", "status": 302,
         "client": f"10.0.0.9\x1b]8;;http://x\x07 Bearer {secret}", "action": "keep",
         "location": f"https://aws:{secret}@x.example/",
         "url": f"https://aws:{secret}@r.example/go/https://aws:{secret}@x.example/?token={secret}"},
        {"event": "response", "chain": "evil", "hop": 1, "client": "10.0.0.9", "method": "GET",
         "url": f"https://x.example/\u202e{secret}", "status": 404},
    ]
    out = io.StringIO()
    printer = Printer(out)
    printer.show(Watch(Clock()).add(records))
    text = out.getvalue()
    assert text.count("\n") == 1 and "FAILED" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert_no_leak(text, forms, "watch line")


# -- the whole watch, and the command line ---------------------------------------------------------


def write_log(path: Path, records: list[dict], *extra: str) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in extra))
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(["watch", *argv], out=out, err=err), out.getvalue(), err.getvalue()


def test_from_start_until_idle_prints_each_chain_once_and_the_totals(tmp_path, hoplog):
    log = write_log(tmp_path / "hops.jsonl", hoplog, "{not json", f'{{"event": "x", "secret": "{TOKEN}"}}')
    code, out, err = cli("--from-start", "--until-idle", "0", str(log))
    lines = out.splitlines()
    assert code == 1, err
    verdicts = sorted(re.search(r"(OK|FAILED|UNKNOWN)( \(updated\))?", line)[0] for line in lines[:-1])
    # 7 chains: the downloads chain twice (ok, then failed when its download failed)
    assert verdicts == ["FAILED", "FAILED", "FAILED", "FAILED (updated)", "OK", "OK", "OK", "UNKNOWN"], out
    assert lines[-1] == "7 chain(s): 4 failed, 1 unknown, 2 ok; skipped 2 malformed line(s)"
    assert err == f"credhop watch: following {log} from its start\n"
    assert_no_leak(out + err, FORMS, "watch output")


def test_filters_choose_what_is_printed_and_the_exit_status_follows_them(tmp_path, hoplog):
    log = write_log(tmp_path / "hops.jsonl", hoplog)
    code, out, _ = cli("--from-start", "--until-idle", "0", "--failed", str(log))
    assert code == 1 and out.count("FAILED") == 4 and " OK " not in out and "UNKNOWN" not in out
    code, out, _ = cli("--from-start", "--until-idle", "0", "--client", "10.0.0.1", "--client", "10.0.0.4",
                       str(log))
    assert code == 0 and out.count(" OK ") == 2
    assert out.splitlines()[-1] == "2 chain(s): 0 failed, 0 unknown, 2 ok"
    code, out, _ = cli("--from-start", "--until-idle", "0", "--finding", "follow-up-failed", str(log))
    assert code == 1 and out.count("\n") == 2 and "CH501" in out


def test_usage_errors_exit_2_without_traceback(tmp_path):
    for argv in ([str(tmp_path)], ["--finding", "CH999", "x.jsonl"], ["--until-idle", "soon"],
                 ["--idle-end", "0"], ["--idle-end", "nan"], ["--colour"]):
        try:
            code, out, err = cli(*argv)
        except SystemExit as e:  # argparse's own errors
            code, err = e.code, ""
        assert code == 2 and "Traceback" not in err, argv


def test_the_watch_follows_a_file_as_it_is_written(tmp_path, hoplog):
    log = tmp_path / "hops.jsonl"
    log.write_text("")
    out = io.StringIO()
    stop, started = threading.Event(), threading.Event()
    follower, watch = Follower(log, notice=lambda _: started.set()), Watch(idle_end=30)
    thread = threading.Thread(target=run, args=(follower, watch, Printer(out), stop.is_set),
                              kwargs={"poll": 0.01})
    thread.start()
    try:
        assert started.wait(10)  # at the end of the file: what comes now is news
        with log.open("a") as f:
            for record in of(hoplog, 2):
                f.write(json.dumps(record) + "\n")
                f.flush()
        deadline = time.monotonic() + 10
        while "FAILED" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert " CH101 " in out.getvalue() and thread.is_alive()  # said while it runs, not at the end
    finally:
        stop.set()
        thread.join(10)
    assert out.getvalue().splitlines()[-1] == "1 chain(s): 1 failed, 0 unknown, 0 ok"


NO_MITMPROXY = "import sys; sys.modules['mitmproxy'] = None; sys.argv[0] = 'credhop'; " \
               "from credhop.cli import main; sys.exit(main())"


def start_watch(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", NO_MITMPROXY, "watch", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})


def test_it_runs_without_mitmproxy(tmp_path, hoplog):
    log = write_log(tmp_path / "hops.jsonl", of(hoplog, 2))
    proc = start_watch("--from-start", "--until-idle", "0", str(log))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert " CH101 credential-lost-on-redirect " in out and "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_it_with_the_totals_and_the_reports_status(tmp_path, hoplog, signum):
    log = write_log(tmp_path / "hops.jsonl", of(hoplog, 3))  # a 401: open until the grace passed
    proc = start_watch("--from-start", "--idle-end", "600", str(log))
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        assert proc.stderr.readline() == f"credhop watch: following {log} from its start\n"
        line = lines.get(timeout=15)  # judged after the grace, while it runs
        assert " FAILED " in line and " CH101 " in line
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 1
        reader.join(10)
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert err == ""  # no traceback, nothing
    assert list(lines.queue) == ["1 chain(s): 1 failed, 0 unknown, 0 ok\n"]
