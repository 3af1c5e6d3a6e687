"""The addon's options and rules file: checked before use, refused values change nothing."""

from __future__ import annotations

import logging
import os
import stat

import pytest
from mitmproxy import exceptions
from mitmproxy.test import tflow

from tests.secrets_check import assert_no_leak
from tests.unit.addon_helpers import (  # noqa: F401  (hop is a fixture)
    CLIENT, ENCODED, FORMS, TOKEN, basic, follow, hop, redirect, run_redirect, send,
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
