"""What the addon writes: hop-log records, event-log lines, counters, reports; never a secret."""

from __future__ import annotations

import logging
import os
import stat

from mitmproxy.test import tflow

from credhop.scrub import SecretFilter
from tests.secrets_check import assert_no_leak
from tests.unit.addon_helpers import (
    ENCODED,
    FORMS,
    redirect,
    run_redirect,
    send,
)


def test_hop_log_links_the_follow_up_to_its_redirect(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    g = send(hop, "https://registry.example/simple/pkg/")
    g.response = tflow.tresp(status_code=200)
    hop.response(g)
    redirect_rec, inject_rec, response_rec = hop.records()
    assert redirect_rec["event"] == "redirect" and redirect_rec["hop"] == 0
    assert redirect_rec["location"] == "https://aws:***@registry.example/simple/pkg/"
    assert redirect_rec["target"] == "https://registry.example"
    assert (redirect_rec["rule"], redirect_rec["action"], redirect_rec["user"]) == ("registry", "inject", "aws")
    assert redirect_rec["fingerprint"].startswith("hm:")
    assert inject_rec["event"] == "inject" and inject_rec["chain"] == redirect_rec["chain"] and inject_rec["hop"] == 1
    assert inject_rec["fingerprint"] == redirect_rec["fingerprint"]
    assert response_rec == {**response_rec, "event": "response", "status": 200, "hop": 1, "chain": redirect_rec["chain"]}
    assert stat.S_IMODE(os.stat(hop.log).st_mode) == 0o600


def test_stats_count_every_decision(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    run_redirect(hop, f"https://aws:{ENCODED}@strip.example/s/")
    run_redirect(hop, "https://no-credential.example/")
    send(hop, "https://registry.example/s/")
    line = hop.addon.stats_line()
    for part in ("action_inject=1", "action_strip=1", "injected=1", "location_userinfo=2", "redirects=3", "credentials held=1"):
        assert part in line


def test_no_secret_in_any_output(hop, caplog):
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        flows = [run_redirect(hop, f"https://aws:{ENCODED}@{h}/s/") for h in
                 ("registry.example", "strip.example", "blocked.example", "gitlab.example", "plain.example")]
        flows.append(send(hop, "https://registry.example/s/"))
        hop.addon.done()
    text = hop.log.read_text() + caplog.text + "".join(f.comment for f in flows) + hop.addon.stats_line()
    assert "credhop" in caplog.text and hop.log.read_text()
    assert_no_leak(text, FORMS, "hop log, event log, comments, stats")


def test_secret_filter_scrubs_foreign_log_lines():
    record = logging.LogRecord("mitmproxy.proxy", logging.WARNING, __file__, 1,
                               "Invalid request: GET http://aws:%s@registry.example/ HTTP/1.1 (%s)",
                               (ENCODED, "Authorization: Basic YXdzOnNlY3JldA=="), None)
    SecretFilter().filter(record)
    message = record.getMessage()
    assert ENCODED not in message and "YXdzOnNlY3JldA" not in message
    assert "http://aws:***@registry.example/" in message


def test_hop_log_says_what_each_request_carried(hop):
    f = redirect("https://next.example/", url="https://origin.example/")
    f.request.headers["Authorization"] = "Bearer abcdefgh"
    hop.responseheaders(f)
    sent = hop.records()[0]["sent"]
    assert sent == [{"header": "authorization", "scheme": "Bearer", "fingerprint": sent[0]["fingerprint"], "injected": False}]
    assert sent[0]["fingerprint"].startswith("hm:")


def test_flows_stay_serialisable_for_mitmdump_w(hop):
    import io

    from mitmproxy import io as mio

    f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    g = send(hop, "https://registry.example/s/")
    buf = io.BytesIO()
    mio.FlowWriter(buf).add(f)
    mio.FlowWriter(buf).add(g)
    assert g.metadata["credhop"] == {"chain": f.metadata["credhop"]["chain"], "hop": 1}


def test_follow_up_errors_are_logged(hop):
    from mitmproxy import flow as mflow

    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    g = send(hop, "https://registry.example/s/")
    g.error = mflow.Error("connection refused")
    hop.error(g)
    assert hop.records()[-1] == {**hop.records()[-1], "event": "error", "reason": "connection refused", "hop": 1}


def test_event_log_lines_for_every_event(hop, caplog):
    from mitmproxy import flow as mflow

    with caplog.at_level(logging.DEBUG, logger="credhop"):
        first = redirect(f"https://aws:{ENCODED}@registry.example/s/", url="https://origin.example/")
        first.request.headers["Cookie"] = "session=abcdef"
        hop.responseheaders(first)
        g = send(hop, "https://registry.example/s/", headers=[("Cookie", "session=abcdef")])
        g.response = tflow.tresp(status_code=404)
        hop.response(g)
        run_redirect(hop, f"https://aws:{ENCODED}@registry.example/t/")
        e = send(hop, "https://registry.example/t/")
        e.error = mflow.Error("connection refused")
        hop.error(e)
    lines = [r.getMessage() for r in caplog.records if r.name == "credhop"]
    assert any(" redirect: 302 https://origin.example/ -> https://aws:***@registry.example/s/" in x for x in lines)
    assert any(" leak: client re-sent cookie from https://origin.example to https://registry.example (other-host)" in x for x in lines)
    assert any(" inject: Authorization added to GET https://registry.example/s/" in x for x in lines)
    assert any(" response: GET https://registry.example/s/ -> 404" in x for x in lines)
    assert any(" error: GET https://registry.example/t/ -> no response (connection refused)" in x for x in lines)


def test_bare_token_in_authorization_is_not_logged_as_a_scheme(hop):
    f = redirect("https://next.example/", url="https://origin.example/")
    f.request.headers["Authorization"] = "ghp_MyPersonalAccessToken123"
    hop.responseheaders(f)
    assert hop.records()[0]["sent"][0]["scheme"] is None
    assert "ghp_" not in hop.log.read_text()


def test_scrub_masks_header_values_in_foreign_log_lines():
    from credhop.scrub import scrub

    for line in ["Authorization: Bearer t:k@/%n-SECRET", "headers=[(b'authorization', b'ghp_MyToken12345')]",
                 "PRIVATE-TOKEN: glpat-abcdefghijkl", "Proxy-Authorization: Negotiate YIIabcdefgh=="]:
        cleaned = scrub(line)
        assert not any(s in cleaned for s in ("SECRET", "ghp_", "glpat", "YIIabc")), cleaned


def test_report_command_and_one_warning_when_a_chain_ends_badly(hop, caplog):
    hop.tctx.configure(hop.addon, credhop_observe=True)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    lost = send(hop, "https://registry.example/simple/pkg/")
    lost.response = tflow.tresp(status_code=404)
    with caplog.at_level(logging.WARNING, logger="credhop"):
        hop.response(lost)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CH101" in warnings[0]
    report = hop.addon.report()
    assert report.splitlines()[0].startswith("✗ FAILED chain") and "credential-lost-on-redirect" in report.splitlines()[0]
    assert_no_leak(report + "".join(warnings), FORMS, "credhop.report and the warning")
    assert hop.addon.counters["chains_failed"] == 1


def test_a_chain_is_diagnosed_once_not_on_every_download(hop):
    # issue 12, defect 6: every same-origin download re-ran the diagnosis over the whole chain
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    page = send(hop, "https://registry.example/simple/pkg/")
    page.response = tflow.tresp(status_code=200)
    hop.response(page)
    for i in range(19):
        wheel = send(hop, f"https://registry.example/files/pkg-{i}.whl")
        wheel.response = tflow.tresp(status_code=200)
        hop.response(wheel)
    # judged once, when the page answered: a look at its records clears it without a diagnosis
    assert (hop.addon.recent.diagnosed, hop.addon.recent.cleared) == (0, 1)
    failed = send(hop, "https://registry.example/files/broken.whl")
    failed.response = tflow.tresp(status_code=403)
    hop.response(failed)  # a failing download can still fail the chain
    assert hop.addon.recent.diagnosed == 1 and hop.addon.counters["chains_failed"] == 1


def test_debug_lines_are_formatted_only_when_a_handler_shows_them():
    """mitmproxy sets the root logger to DEBUG and lets handlers choose; a line no handler shows (its
    deprecated add_log feed aside) is not built."""
    import logging

    from credhop.sinks import _wanted

    class LegacyLogEvents(logging.Handler):  # stands in for mitmproxy's, matched by class name
        def emit(self, record):
            pass

    logger = logging.getLogger("credhop.test-wanted")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    terminal = logging.Handler(logging.INFO)
    logger.addHandler(terminal)
    logger.addHandler(LegacyLogEvents())
    try:
        assert _wanted(logger, logging.INFO) and not _wanted(logger, logging.DEBUG)
        terminal.setLevel(logging.DEBUG)  # termlog_verbosity=debug
        assert _wanted(logger, logging.DEBUG)
    finally:
        logger.handlers.clear()


def test_a_log_record_is_scrubbed_once_however_many_handlers_it_passes():
    import logging

    from credhop.scrub import Redactor, SecretFilter

    calls = []

    class Counting(Redactor):
        def __call__(self, text):
            calls.append(text)
            return super().__call__(text)

    secret_filter = SecretFilter(Counting())
    record = logging.LogRecord("mitmproxy", logging.INFO, __file__, 1, "Bad HTTP request line: %s", (
        "b'GET http://aws:hunter2-SECRET@h.example/ HTTP/1.1'",), None)
    assert secret_filter.filter(record) and secret_filter.filter(record)  # two handlers
    assert len(calls) == 1 and "hunter2-SECRET" not in record.getMessage()
    secret_filter.redactor = Counting()  # another redactor (the option changed): it scrubs again
    secret_filter.filter(record)
    assert len(calls) == 2


def test_hop_lines_skip_only_the_deprecated_add_log_event(hop, caplog):
    """mitmproxy's LegacyLogEvents handler would format each hop line again and offer it to every addon's
    add_log hook (deprecated since mitmproxy 9): the hop lines skip that one handler. Every other
    handler still gets them, and credhop's other lines still reach add_log."""
    legacy = [h for h in logging.getLogger().handlers if type(h).__name__ == "LegacyLogEvents"]
    assert legacy, "the taddons master installs mitmproxy's own LegacyLogEvents handler"

    def passes(handler, record):  # the filters on it (its own check ties it to the test's set-up phase)
        return logging.Filterer.filter(handler, record)

    caplog.set_level(logging.INFO, logger="credhop")
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    hop_lines = [r for r in caplog.records if r.name == "credhop" and "redirect:" in r.getMessage()]
    assert hop_lines, [r.getMessage() for r in caplog.records]
    assert caplog.handler.filter(hop_lines[0])  # any other handler: kept
    assert not any(passes(h, hop_lines[0]) for h in legacy)
    other = logging.LogRecord("credhop", logging.WARNING, __file__, 1, "credhop: rules file broken", None, None)
    assert all(passes(h, other) for h in legacy)
    hop.addon.done()  # unloaded: mitmproxy's handler as it was
    assert all(passes(h, hop_lines[0]) for h in legacy)
