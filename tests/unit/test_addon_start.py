"""What the proxy says once it runs: observe mode leaves the credential to the client; no hop log
means nothing for `credhop report`. Each line once, at the level an operator reads."""

from __future__ import annotations

import pytest

from tests.unit.addon_helpers import hop  # noqa: F401  (a fixture)


def started(hop, caplog, **options):
    hop.tctx.configure(hop.addon, **options)
    caplog.clear()
    with caplog.at_level("INFO", logger="credhop"):
        hop.addon.running()
    return [(r.levelname, r.getMessage()) for r in caplog.records]


@pytest.mark.parametrize("observe", [True, False])
def test_observe_mode_is_warned_about_at_start(hop, caplog, observe):
    lines = started(hop, caplog, credhop_observe=observe)
    warned = [m for level, m in lines if level == "WARNING" and "observe mode" in m]
    if observe:
        assert len(warned) == 1 and "sends or drops the credential itself" in warned[0]
        assert "credhop_observe=false" in warned[0]
    else:
        assert warned == []


def test_no_hop_log_is_said_at_start(hop, caplog):
    assert not any("no hop log" in m for _, m in started(hop, caplog))  # the fixture writes one
    lines = started(hop, caplog, credhop_log="")
    assert [level for level, m in lines if "no hop log" in m] == ["INFO"]
