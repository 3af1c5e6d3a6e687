"""Fuzz target: credhop's Location parser (urls.py), for CREDHOP_FUZZ_SECONDS (default 12 s).

Inputs: the security corpus' Locations mutated around their parser corners, arbitrary text with
lone surrogates, and raw bytes as mitmproxy hands them over. For every input:
- parse_location raises nothing but LocationError, and its message holds no newline;
- a parsed Location is http(s), with a port in range and the origin ada gives;
- the stripped Location parses to the same URL without credentials;
- the redacted Location shows no secret that the stripped one does not also contain;
- parsers_disagree answers; redact_url never raises and is idempotent.
"""

from __future__ import annotations

import urllib.parse

import ada_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credhop.urls import LocationError, Origin, parse_location, parsers_disagree, redact_url
from tests.e2e.security_cases import CASES, UNIT_PORTS, expand
from tests.fuzz.budget import Result, fuzz_for
from tests.fuzz.mutate import mutations

BASES = (
    "http://127.0.0.1:8081/c/x/start",
    "https://redirector.example/a/b?c",
    "http://[::1]:8081/x",
    "https://h/",
)
SEEDS = sorted(
    {
        expand(t, c, UNIT_PORTS, {"tok": "tk:Secret1@/%x", "tok2": "tk:Secret2"}).replace(
            "x" * 65536, "x" * 8
        )
        for c in CASES
        for t in c.locations
    }
)
PIECES = [
    "@",
    ":",
    "/",
    "\\",
    "?",
    "#",
    "%",
    "%40",
    "%2e",
    "%2F",
    "%00",
    "%0d%0a",
    "%ff",
    "%25",
    "[",
    "]",
    ".",
    " ",
    "\t",
    "\n",
    "\x00",
    "\x01",
    "\x7f",
    "\uff20",
    "\uff0f",
    "\u3002",
    "\uff4c",
    "\u00ad",
    "\u200b",
    "\udcff",
    "xn--",
    "0x",
    "::",
    "//",
    "\\\\",
    "http:",
    "https:",
    "ftp:",
    "localhost",
    "127.0.0.1",
    "[::1]",
    ":0",
    ":65536",
]


inputs = (
    mutations(SEEDS, PIECES, rounds=6, span=12, limit=4000)
    | st.text(st.characters(blacklist_categories=()), max_size=120)
    | st.binary(max_size=120).map(lambda b: b.decode("utf-8", "surrogateescape"))
)


def check(raw: str, base: str) -> None:
    once = redact_url(raw)
    assert redact_url(once) == once
    try:
        loc = parse_location(raw, base)
    except LocationError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    url = ada_url.URL(raw, base)
    scheme = url.protocol[:-1]
    assert scheme in ("http", "https")
    assert loc.origin == Origin(
        scheme, url.hostname.strip("[]"), int(url.port or {"http": 80, "https": 443}[scheme])
    )
    assert 0 <= loc.origin.port <= 65535
    assert isinstance(parsers_disagree(raw, loc), bool)
    if loc.credential is None:
        assert loc.stripped == raw
        return
    again = parse_location(loc.stripped, base)
    assert again.credential is None and again.url == loc.url
    secret = loc.credential.password or loc.credential.user
    shown = loc.redacted.replace("***@", "***\0")  # "***@" + host must not spell a secret such as "@127"
    for form in {secret, urllib.parse.quote(secret, safe=""), url.password or url.username}:
        if len(form) >= 4 and form in shown:
            assert form in loc.stripped, "redacted Location shows the secret"


def test_fuzz_location_parser(budget: float) -> None:
    result = Result()

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=inputs, base=st.sampled_from(BASES))
    def run(raw: str, base: str) -> None:
        result.inputs += 1
        check(raw, base)

    fuzz_for("Location parser (urls.py)", budget, run, result)
    assert result.inputs > 0
