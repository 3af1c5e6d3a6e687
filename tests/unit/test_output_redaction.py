"""mitmproxy's own output (issue 25): the dumper's flow lines pass the Redactor, a choice option
takes nothing but its choices, and a grant's header value is masked in every spelling.
The same through real mitmdump: tests/e2e/test_security_round3.py."""

from __future__ import annotations

import base64
import io
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import exceptions
from mitmproxy.addons.dumper import Dumper
from mitmproxy.test import taddons, tflow

from credhop.addon import CredHop
from credhop.credentials import base64_cores, injected_forms
from credhop.flows import client_of
from credhop.output import RedactingStream, redact_dumper, unredact_dumper, unredacted_warning
from credhop.scrub import Redactor, remembered_for
from tests.secrets_check import Secret, assert_no_leak, secret_forms
from tests.unit.addon_helpers import ENCODED, TOKEN, basic, run_redirect, send

FORMS = secret_forms(TOKEN)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("detail", [1, 2, 3, 4])
def test_the_dumper_prints_no_injected_credential_at_any_flow_detail(hop, detail):
    out = io.StringIO()
    dumper = Dumper(out)
    hop.tctx.master.addons.add(dumper)
    redact_dumper(hop.tctx.master, lambda: hop.addon.redactor)
    hop.tctx.configure(dumper, flow_detail=detail)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    f = send(hop, "https://registry.example/simple/pkg/")
    assert f.request.headers["authorization"] == basic("aws", TOKEN)  # injected: there is something to hide
    f.response = tflow.tresp()
    f.request.path = f"/simple/pkg/?copy={ENCODED}&raw={TOKEN}"
    dumper.response(f)
    assert_no_leak(out.getvalue(), FORMS, f"dumper output at flow_detail {detail}")
    assert "registry.example" in out.getvalue()
    unredact_dumper(hop.tctx.master)
    assert dumper.outfp is out


def test_a_line_split_across_writes_is_scrubbed_whole():
    redactor = Redactor()
    redactor.remember(["s3cr3t-value"])
    out = io.StringIO()
    stream = RedactingStream(out, lambda: redactor)
    for piece in ("    authorization: Basic ", "czNjcjN0", "-", "s3cr3t", "-value", "\n"):
        stream.write(piece)
    stream.write("no newline yet: s3cr3t-")
    assert "s3cr3t" not in out.getvalue()
    stream.write("value\nnext")
    stream.flush()
    assert "s3cr3t" not in out.getvalue() and out.getvalue().endswith("next")


def test_coloured_header_lines_are_read_without_their_colours():
    redactor = Redactor(["x-api-key"])
    out = TTY()
    stream = RedactingStream(out, lambda: redactor)
    stream.write("    \x1b[34mx-api-key\x1b[0m: plain-looking-secret\n")  # as the dumper styles it on a tty
    stream.write("    \x1b[34maccept\x1b[0m: */*\n")
    text = out.getvalue()
    assert "plain-looking-secret" not in text and "x-api-key: ***" in text
    assert "\x1b[34maccept" in text  # a line with nothing secret keeps its colours
    assert stream.isatty()  # the real stream's answers pass through


def test_the_redactor_in_use_is_asked_per_line(hop):
    """credhop_secret_headers replaces the Redactor: the dumper follows it."""
    out = io.StringIO()
    dumper = Dumper(out)
    hop.tctx.master.addons.add(dumper)
    redact_dumper(hop.tctx.master, lambda: hop.addon.redactor)
    hop.tctx.configure(hop.addon, credhop_secret_headers="X-Special")
    dumper.outfp.write("    x-special: value-of-a-new-secret-header\n")
    assert "value-of-a-new" not in out.getvalue()


def test_a_grant_is_masked_even_where_its_redirect_was_never_seen(hop):
    """A fleet: another instance read the Location; this one only injects. The header value it adds
    is masked in whatever spelling it reappears."""
    grant_value = basic("aws", TOKEN)
    hop.addon.redactor.remember(injected_forms(grant_value))
    for line in (f"authorization {grant_value}", f"path /x/{TOKEN}/y", "blob " + base64.b64encode(
            f'{{"user":"aws","token":"{TOKEN}"}}'.encode()).decode()):
        assert_no_leak(hop.addon.redactor(line), FORMS | base64_cores(TOKEN.encode()), "a scrubbed line")


@given(st.binary(min_size=4, max_size=60), st.binary(max_size=8), st.binary(max_size=8))
def test_base64_cores_are_in_every_base64_value_holding_the_secret(secret, before, after):
    encoded = base64.b64encode(before + secret + after).decode()
    assert any(core in encoded for core in base64_cores(secret))


def test_base64_cores_depend_on_the_secret_alone():
    secret = os.urandom(12)
    assert base64_cores(secret) == base64_cores(bytes(secret))
    # the cores are cut to what no neighbouring byte changes: every neighbour gives the same cores
    for offset in range(3):
        encoded = {base64.b64encode(bytes([b]) * offset + secret + bytes([b])).decode() for b in (0, 255)}
        assert all(any(core in e for core in base64_cores(secret)) for e in encoded)


def test_unredacted_outputs_warn_only_when_headers_are_asked_for():
    class Opts:
        save_stream_file = "flows.mitm"
        flow_detail = 1

    assert unredacted_warning(Opts, None) is None
    Opts.flow_detail = 2
    assert "the flow file (-w)" in unredacted_warning(Opts, None)

    class WebMaster:
        pass

    Opts.save_stream_file, Opts.flow_detail = None, 1
    assert "mitmweb's flow view" in unredacted_warning(Opts, WebMaster())


# -- a choice takes only its choices ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["proxy_auth", "Proxyauth", "ip", ""])
def test_a_misspelled_client_id_is_refused_and_nothing_changes(hop, value):
    with pytest.raises(exceptions.OptionsError, match="not one of 'address', 'proxyauth'"):
        hop.tctx.configure(hop.addon, credhop_client_id=value)
    assert hop.addon.client_id == "address"


def test_client_of_never_falls_back_to_the_address():
    f = tflow.tflow()
    f.metadata["proxyauth"] = ("alice", "pw")
    assert client_of(f, "proxyauth") == "user:alice"
    assert client_of(f, "address") == f.client_conn.peername[0]
    with pytest.raises(ValueError):
        client_of(f, "proxy_auth")


@pytest.mark.parametrize("value", ["memroy", "Memory", "redis:/127.0.0.1", "http://127.0.0.1:6379"])
def test_a_store_that_is_not_memory_or_a_redis_url_is_named_as_such(hop, value):
    with pytest.raises(exceptions.OptionsError, match="not 'memory' or a URL of redis://"):
        hop.tctx.configure(hop.addon, credhop_store=value)


def test_the_store_error_never_prints_a_password():
    addon = CredHop()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError) as e:
            tctx.configure(addon, credhop_store=f"http://u:{Secret('pw-in-url-1234')}@h:1")
        assert "pw-in-url" not in str(e.value)


def test_the_proxy_remembers_as_many_secrets_as_it_may_hold_credentials(hop):
    hop.addon.redactor.remember(["a-secret-remembered-before"])
    hop.tctx.configure(hop.addon, credhop_max_credentials=50_000)
    assert hop.addon.redactor.remembered == remembered_for(50_000) >= 500_000
    # a new bound makes a new Redactor; what the old one knew is carried over
    assert hop.addon.redactor("x a-secret-remembered-before y") == "x *** y"
    assert hop.addon.filter.redactor is hop.addon.redactor
