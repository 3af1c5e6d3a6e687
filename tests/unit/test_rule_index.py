"""The rule index (exact hosts, `*.suffix` globs, the rest scanned) picks the same first rule as
trying every rule in turn: a property test on random rule sets and hosts."""

from __future__ import annotations

import ipaddress

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from credhop.rules import Hop, RuleIndex, parse_rules
from credhop.urls import Location, Origin

LABELS = ["a", "b", "ab", "example", "com", "xn--bcher-kva", "d", "codeartifact", "10", "0", "1", "k"]
# globs of every shape: exact, *.suffix, *, irregular (a*b, ?, [..], inner *), IPs, non-ASCII
SPECIAL_GLOBS = ["*", "*.", "a*b", "a*b.example", "?.example", "[ab].example", "*.d.*.com", "*example",
                 "*.*.example", "127.0.0.2", "10.*", "::1", "bücher.example", "\u212a.example", "ſ.example",
                 "EXAMPLE.com.", "*.Example.COM", "*..example", "."]
SPECIAL_HOSTS = ["", ".", "127.0.0.2", "10.0.0.1", "::1", "bücher.example", "k.example", "s.example",
                 "ab.example", "aXb.example", "a.d.x.com", "..example", "xn--bcher-kva.example",
                 "EXAMPLE.COM", "example.com.", "example.com..", "a.example.com."]


def name(draw_labels: list[str]) -> str:
    return ".".join(draw_labels)


labels = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4)


@st.composite
def globs(draw) -> str:
    kind = draw(st.sampled_from(["exact", "suffix", "special"]))
    if kind == "special":
        return draw(st.sampled_from(SPECIAL_GLOBS))
    text = name(draw(labels))
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text) if draw(st.booleans()) else text
    if kind == "suffix":
        text = "*." + text
    return text + ("." if draw(st.integers(0, 5)) == 0 else "")


@st.composite
def hosts(draw) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(SPECIAL_HOSTS))
    text = name(draw(labels))
    if draw(st.booleans()):
        text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    return text + "." * draw(st.integers(0, 2)) * (draw(st.integers(0, 3)) == 0)


def one_or_many(strategy):
    return st.one_of(strategy, st.lists(strategy, min_size=1, max_size=3))


@st.composite
def matches(draw) -> dict:
    out = {}
    if draw(st.integers(0, 4)) > 0:
        out["host"] = draw(one_or_many(globs()))
    if draw(st.integers(0, 5)) == 0:
        out["from_host"] = draw(one_or_many(globs()))
    if draw(st.integers(0, 4)) == 0:
        out["path_prefix"] = draw(one_or_many(st.sampled_from(["/", "/a", "/a/", "/pypi/", "/b"])))
    if draw(st.integers(0, 4)) == 0:
        out["scheme"] = draw(one_or_many(st.sampled_from(["http", "https"])))
    if draw(st.integers(0, 4)) == 0:
        out["port"] = draw(one_or_many(st.sampled_from([80, 443, 8080])))
    if draw(st.integers(0, 4)) == 0:
        out["status"] = draw(one_or_many(st.sampled_from([301, 302, 307])))
    if draw(st.integers(0, 4)) == 0:
        out["client"] = draw(one_or_many(st.sampled_from(["10.0.0.0/8", "127.0.0.1/32", "::1/128"])))
    return out


@st.composite
def rule_sets(draw):
    rules = [{"name": f"r{i}", "action": "strip", **({"match": m} if (m := draw(matches())) else {})}
             for i in range(draw(st.integers(0, 25)))]
    return parse_rules(yaml.safe_dump({"rules": rules}, allow_unicode=True))


@st.composite
def hops(draw) -> Hop:
    scheme = draw(st.sampled_from(["http", "https"]))
    origin = Origin(scheme, draw(hosts()), draw(st.sampled_from([80, 443, 8080])))
    path = draw(st.sampled_from(["/", "/a/b", "/pypi/x", "/b", ""]))
    location = Location(raw="", url="", origin=origin, path=path, relative=False, credential=None, stripped="")
    client = draw(st.sampled_from([None, "10.1.2.3", "127.0.0.1", "192.168.0.1", "::1"]))
    return Hop(location, draw(hosts()), draw(st.sampled_from([301, 302, 307, 308])),
               ipaddress.ip_address(client) if client else None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_sets(), st.lists(hops(), min_size=1, max_size=8))
@example(parse_rules("rules:\n- {name: k, action: strip, match: {host: 'ſ.example'}}\n"
                     "- {name: e, action: strip, match: {host: '*.example'}}\n"), [])
def test_index_picks_the_linear_scans_rule(rules, hop_list):
    for hop in hop_list:
        assert rules.first_match(hop) is rules.first_match_linear(hop)
        assert RuleIndex(rules.rules).first_match(hop) is rules.first_match_linear(hop)


def _hop(host: str, client: str | None = "10.1.2.3", from_host: str = "r.example") -> Hop:
    location = Location(raw="", url="", origin=Origin("https", host, 443), path="/x", relative=False,
                        credential=None, stripped="")
    return Hop(location, from_host, 302, ipaddress.ip_address(client) if client else None)


def test_exact_and_suffix_rules_are_looked_up_not_scanned():
    text = "rules:\n" + "".join(f"- {{name: e{i}, action: strip, match: {{host: h{i}.example}}}}\n"
                                for i in range(500))
    text += "".join(f"- {{name: s{i}, action: strip, match: {{host: '*.s{i}.example'}}}}\n" for i in range(500))
    text += "- {name: odd, action: strip, match: {host: 'a*b.example'}}\n- {name: last, action: keep}\n"
    rules = parse_rules(text)
    index = rules.index
    assert len(index.always) == 2  # only the irregular glob and the rule without a host are scanned
    assert index.candidates("h7.example") == [7, 1000, 1001]
    assert index.candidates("x.y.S9.example") == [509, 1000, 1001]
    assert rules.first_match(_hop("H7.example.")).name == "e7"
    assert rules.first_match(_hop("x.s499.example")).name == "s499"
    assert rules.first_match(_hop("aXYb.example")).name == "odd"
    assert rules.first_match(_hop("other.example")).name == "last"


def test_non_ascii_hosts_and_globs_keep_re_ignorecase_semantics():
    # re.IGNORECASE folds the Kelvin sign onto "k" and the long s onto "s": those globs are scanned
    rules = parse_rules("rules:\n- {name: kelvin, action: strip, match: {host: '\u212a.example'}}\n"
                        "- {name: long-s, action: strip, match: {host: 'ſ.example'}}\n"
                        "- {name: exact, action: strip, match: {host: 'k.example'}}\n")
    assert rules.first_match(_hop("k.example")) is rules.first_match_linear(_hop("k.example"))
    assert rules.first_match(_hop("S.example")) is rules.first_match_linear(_hop("S.example"))
    assert rules.first_match(_hop("bücher.example")) is rules.first_match_linear(_hop("bücher.example"))
