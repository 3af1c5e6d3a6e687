"""Fuzz target: the rules parser (credhop.rules.parse_rules), for CREDHOP_FUZZ_SECONDS (default 12 s).

Inputs: rules files built from random structures over the real keys and hostile values (globs,
CIDRs, templates, tags, huge numbers), the shipped and test rules files mutated with YAML syntax,
and arbitrary text. For every input parse_rules returns a RuleSet or raises RulesError naming
`<fuzz>:line:column`; a loaded rule set matches a long host quickly (no catastrophic regex).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credhop.rules import (
    HEADER_KEYS,
    MATCH_KEYS,
    RULE_KEYS,
    Hop,
    RulesError,
    parse_rules,
)
from credhop.urls import parse_location
from tests.fuzz.budget import Result, fuzz_for
from tests.fuzz.mutate import mutations

REPO = Path(__file__).resolve().parents[2]
SEEDS = [
    (REPO / "addons" / "credhop" / "rules.yaml").read_text(encoding="utf-8"),
    "rules:\n  - name: a\n    match: {host: '*.example', port: [443, 8443], client: 10.0.0.0/8}\n"
    "    action: inject\n    header: {name: PRIVATE-TOKEN, value: '{password}'}\n"
    "    ttl: 60\n    on_leak: strip\n",
    "rules:\n  - {name: b, match: {path_prefix: /x, status: [302, 307], scheme: https}, action: block}\n"
    "  - {name: c, action: strip}\n",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "*",
            "*.example",
            "[a-",
            "[]]",
            "[!a]",
            "**",
            "?",
            "a/b",
            "::1",
            "10.0.0.0/8",
            "::/0",
            "999.0.0.0/8",
            "/x",
            "x",
            "{basic}",
            "{password}",
            "{token!r}",
            "{0}",
            "{basic.x}",
            "{",
            "}",
            "Basic {basic}",
            "inject",
            "strip",
            "keep",
            "block",
            "log",
            "http",
            "https",
            "yes",
            "~",
            "a\x00b",
            "\t",
            "é",
            "0x1bb",
            "0o777",
            "1e3",
            "2001-02-03",
            "*" * 200 + "a",
        ]
    ),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def structured(draw: st.DrawFn) -> str:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        rule: dict[Any, Any] = {}
        for key in draw(st.lists(st.sampled_from([*RULE_KEYS, "bogus"]), max_size=6, unique=True)):
            if key == "match":
                rule[key] = {
                    k: draw(values)
                    for k in draw(st.lists(st.sampled_from([*MATCH_KEYS, "hots"]), max_size=4, unique=True))
                }
            elif key == "header":
                rule[key] = {
                    k: draw(values)
                    for k in draw(st.lists(st.sampled_from([*HEADER_KEYS, "x"]), max_size=2, unique=True))
                }
            else:
                rule[key] = draw(values)
        rules.append(rule)
    top: Any = draw(st.sampled_from([{"rules": rules}, rules, {"rules": rules, "extra": 1}, {"rules": None}]))
    return yaml.safe_dump(top, allow_unicode=draw(st.booleans()))


PIECES = [
    ":",
    "-",
    " ",
    "  ",
    "\n",
    "\t",
    "[",
    "]",
    "{",
    "}",
    "&a",
    "*a",
    "!!int",
    "!!python/object:os.system",
    "!!binary",
    "<<:",
    "? ",
    "|",
    ">",
    "'",
    '"',
    "#",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "\x00",
    "\ufeff",
    "\\",
]


EDITS = ("insert", "delete", "replace", "duplicate")
inputs = (
    structured()
    | mutations(SEEDS, PIECES, rounds=5, span=10, limit=3000, ops=EDITS)
    | st.text(max_size=200)
)
LONG_HOST = ("a" * 60 + ".") * 15 + "example"
HOP = Hop(parse_location(f"https://u:p@{LONG_HOST}/x/y", "https://r.example/"), LONG_HOST, 302, None)


def check(text: str, result: Result) -> None:
    try:
        rules = parse_rules(text, "<fuzz>")
    except RulesError as e:
        assert str(e).startswith("<fuzz>:") and e.line >= 1 and e.column >= 1
        return
    began = time.monotonic()
    rules.first_match(HOP)
    assert time.monotonic() - began < 0.5, "a rule's pattern backtracks"


def test_fuzz_rules_parser(budget: float) -> None:
    result = Result()

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=inputs)
    def run(text: str) -> None:
        result.inputs += 1
        check(text, result)

    fuzz_for("rules parser (rules.py)", budget, run, result)
    assert result.inputs > 0


def test_deeply_nested_yaml_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match="nested too deeply"):
        parse_rules("rules: " + "[" * 1000, "<fuzz>")
