"""The addon's options and rules file: checked before use, refused values change nothing."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from mitmproxy import exceptions

from tests.unit.addon_helpers import (
    ENCODED,
    redirect,
    run_redirect,
    send,
)


def test_broken_rules_are_rejected_and_the_old_ones_kept(hop, caplog):
    hop.rules.write_text("rules:\n  - name: x\n    action: inject\n    match: {hots: a}\n")
    with pytest.raises(exceptions.OptionsError, match=r"rules.yaml:4:13: rules\[0\].match.hots"):
        hop.tctx.configure(hop.addon, credhop_rules=str(hop.rules) + "")  # same path, re-set
        hop.addon.configure({"credhop_rules"})
    with caplog.at_level(logging.ERROR, logger="credhop"):
        hop.addon.reload()
    assert "keeping the previous 8 rule(s)" in caplog.text and "rules.yaml:4:13" in caplog.text
    assert len(hop.addon.rules.rules) == 8
    assert hop.addon.counters["rules_reload_failed"] == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("credhop_ttl", 0, "must be 1..604800"), ("credhop_ttl", 10**9, "must be 1..604800"), ("credhop_max_credentials", 0, "at least 1"),
     ("credhop_log", "/proc/nonexistent/x.jsonl", "cannot open"), ("credhop_rules", "/nonexistent.yaml", "cannot read")],
)
def test_bad_option_values_raise_options_error(hop, option, value, message):
    with pytest.raises(exceptions.OptionsError, match=message):
        hop.tctx.configure(hop.addon, **{option: value})


def test_fingerprint_key_file_is_created_private_and_short_keys_refused(hop, tmp_path):
    key = tmp_path / ".mitmproxy" / "credhop-fingerprint.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(exceptions.OptionsError, match="fewer than 16"):
        hop.tctx.configure(hop.addon, credhop_fingerprint_key=str(short))


def test_max_credentials_bounds_the_store(hop):
    hop.tctx.configure(hop.addon, credhop_max_credentials=2)
    for i in range(3):
        run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/", client=(f"10.0.1.{i}", 1))
    assert len(hop.addon.store) == 2
    assert "authorization" not in send(hop, "https://registry.example/s/", client=("10.0.1.0", 1)).request.headers
    assert "authorization" in send(hop, "https://registry.example/s/", client=("10.0.1.2", 1)).request.headers


def test_bad_secret_header_names_are_refused(hop):
    with pytest.raises(exceptions.OptionsError, match="invalid header name"):
        hop.tctx.configure(hop.addon, credhop_secret_headers="X-Ok, bad header")


def test_a_refused_update_changes_nothing_not_even_the_valid_part(hop, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - name: x\n    action: teleport\n")
    with pytest.raises(exceptions.OptionsError, match="unknown action"):
        hop.tctx.configure(hop.addon, credhop_ttl=5, credhop_observe=True, credhop_rules=str(broken))
    assert hop.addon.ttl == 600 and hop.addon.observe is False and len(hop.addon.rules.rules) == 8


def test_empty_rules_load_with_a_warning(hop, caplog):
    hop.rules.write_text("rules: []\n")
    with caplog.at_level(logging.WARNING, logger="credhop"):
        hop.addon.reload()
    assert hop.addon.rules.rules == ()
    assert "'rules' is empty: no credential will be injected" in caplog.text


def test_secret_headers_from_the_option_are_scrubbed_everywhere(hop, caplog):
    # issue 12, defect 4: the option's headers were watched for leaks but not scrubbed from log lines
    from credhop.scrub import SecretFilter

    hop.tctx.configure(hop.addon, credhop_secret_headers="X-JFrog-Art-Api")
    record = logging.LogRecord("mitmproxy.proxy", logging.WARNING, __file__, 1,
                               "headers: X-JFrog-Art-Api: AKCp8jfrogsecretvalue", None, None)
    assert isinstance(hop.addon.filter, SecretFilter)
    hop.addon.filter.filter(record)
    assert "AKCp8jfrog" not in record.getMessage() and "X-JFrog-Art-Api: ***" in record.getMessage()
    first = redirect("https://cdn.example/x", url="https://origin.example/x")
    first.request.headers["X-JFrog-Art-Api"] = "AKCp8jfrogsecretvalue"
    hop.requestheaders(first)
    hop.responseheaders(first)
    send(hop, "https://cdn.example/x", headers=[("X-JFrog-Art-Api", "AKCp8jfrogsecretvalue")])
    assert [r["header"] for r in hop.records() if r["event"] == "leak"] == ["x-jfrog-art-api"]
    assert "AKCp8jfrog" not in hop.log.read_text() + caplog.text


def test_the_watcher_reads_a_changed_rules_file_off_the_event_loop(hop, monkeypatch):
    # a file of 10,000 rules takes a second or more to read; the event loop carries every flow meanwhile
    import asyncio
    import time

    from credhop import addon as addon_module
    from credhop import rules_file

    read = rules_file.load_rules

    def slow_read(path):
        time.sleep(0.5)
        return read(path)

    monkeypatch.setattr(rules_file, "load_rules", slow_read)
    monkeypatch.setattr(addon_module, "RELOAD_INTERVAL", 0.01)
    hop.rules.write_text("rules:\n  - name: only\n    action: strip\n")
    os.utime(hop.rules, ns=(0, 10**9))  # a stamp of its own, whatever the file system's resolution

    async def main():
        watcher = asyncio.ensure_future(hop.addon._watch_rules())
        ticks, start = 0, time.monotonic()
        while len(hop.addon.rules.rules) != 1 and time.monotonic() - start < 5:
            await asyncio.sleep(0.01)
            ticks += 1
        watcher.cancel()
        return ticks

    ticks = asyncio.run(main())
    assert len(hop.addon.rules.rules) == 1 and hop.addon.rules.rules[0].name == "only"
    assert ticks >= 20  # the loop went on while the file was read (about 50 ticks of 10 ms)
