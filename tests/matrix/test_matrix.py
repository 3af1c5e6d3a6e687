"""Every client works through credhop, and no credential goes anywhere but where the Location said.

Direct runs (no proxy) are measured, not asserted: docs/clients.md reports what they did. The
clients that work alone (``works_alone`` in clients.py) must keep working through credhop and get
exactly one correct Authorization header.
"""

from __future__ import annotations

import pytest

from tests.secrets_check import assert_no_leak

from .clients import CLIENTS
from .engine import SCHEMES, UNAUTH, Run

NAMES = [c.name for c in CLIENTS]
WORKS_ALONE = [c.name for c in CLIENTS if c.works_alone]
VARIANTS = [(s, u) for s in SCHEMES for u in UNAUTH]


def get_run(matrix, client: str, scheme: str, unauth: int, via: str) -> Run:
    info = matrix.result.clients[client]
    if info["missing"]:
        pytest.skip(info["missing"])
    run = matrix.result.run(client, scheme, unauth, via)
    assert run is not None, f"{client} {scheme} {unauth} {via} did not run"
    assert not run.error, f"the matrix could not run {client} ({scheme}, {unauth}, {via}): {run.error}"
    return run


def describe(seen) -> list[str]:
    return [
        f"{s.method} {s.path} auth={s.auth}"
        + (f" secret-in={s.secret_elsewhere}" if s.secret_elsewhere else "")
        for s in seen
    ]


@pytest.mark.parametrize(("scheme", "unauth"), VARIANTS)
@pytest.mark.parametrize("client", NAMES)
def test_works_through_credhop(matrix, client, scheme, unauth):
    run = get_run(matrix, client, scheme, unauth, "credhop")
    assert run.ok, f"{client} failed through credhop ({scheme}, {unauth}): {run.message}"

    # the auth-only origin got exactly one correct Authorization on every request, and nothing else secret
    assert run.index, "the origin received nothing"
    assert all(s.auth == "correct" and not s.secret_elsewhere for s in run.index), describe(run.index)
    # the redirector never saw a credential, in any header or in the path
    assert run.redirector, "the redirector received nothing"
    assert all(s.auth == "none" and not s.secret_elsewhere for s in run.redirector), describe(run.redirector)

    # credhop's hop log: every credential hop injected for exactly the origin the Location named
    redirects = [h for h in run.hops if h["event"] == "redirect" and h.get("user")]
    injects = [h for h in run.hops if h["event"] == "inject"]
    origin = f"{scheme}://<index>"
    assert redirects, run.hops
    assert all(
        h["action"] == "inject" and h["rule"] == "matrix-fixture" and h["target"] == origin for h in redirects
    ), redirects
    assert all(h["location"].startswith(f"{scheme}://aws:***@<index>/") for h in redirects), redirects
    assert injects and all(h["url"].startswith(origin + "/") and h["action"] == "inject" for h in injects), (
        injects
    )
    assert not [h for h in run.hops if h["event"] in ("leak", "error")], run.hops

    # the client itself never got to see the token: credhop took it out of the Location
    assert not run.token_in_output, f"{client} printed the token through credhop"
    assert not run.token_in_files, f"{client} wrote the token through credhop to {run.token_in_files}"


@pytest.mark.parametrize(("scheme", "unauth"), VARIANTS)
@pytest.mark.parametrize("client", WORKS_ALONE)
def test_clients_that_work_alone_keep_working_with_one_header(matrix, client, scheme, unauth):
    direct = get_run(matrix, client, scheme, unauth, "direct")
    through = get_run(matrix, client, scheme, unauth, "credhop")
    assert direct.ok, f"{client} is listed as working alone but failed without credhop: {direct.message}"
    assert through.ok, through.message
    # never two headers or a conflicting one: the origin checks for exactly one correct header
    assert all(s.auth == "correct" for s in through.index), describe(through.index)
    assert not [h for h in through.hops if h["event"] == "inject" and h.get("action") == "skip"]


@pytest.mark.parametrize("client", NAMES)
def test_direct_runs_were_measured(matrix, client):
    """Without credhop: every variant ran against the fixture; what happened is for docs/clients.md."""
    for scheme, unauth in VARIANTS:
        run = get_run(matrix, client, scheme, unauth, "direct")
        assert run.returncode is not None
        assert run.ok or run.message, f"{client} failed alone ({scheme}, {unauth}) with no message to show"
        # nobody gave the client a credential for the redirector
        assert all(s.auth == "none" for s in run.redirector), describe(run.redirector)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_secret_in_credhops_outputs(matrix, scheme):
    if scheme not in matrix.engine.proxy_texts:
        pytest.skip("no run of this scheme")
    assert "proxy listening" in matrix.engine.proxy_texts[scheme]
    assert_no_leak(
        matrix.engine.proxy_texts[scheme], matrix.engine.forms, f"mitmdump ({scheme}) output and hop log"
    )
