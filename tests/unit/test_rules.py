from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from credhop.rules import Hop, RulesError, load_rules, parse_rules
from credhop.urls import parse_location

REPO = Path(__file__).resolve().parents[2]


def hop(location: str, from_host="redirector.example", status=302, client="10.1.2.3") -> Hop:
    return Hop(parse_location(location, f"https://{from_host}/simple/"), from_host, status, ipaddress.ip_address(client))


def test_shipped_rules_load_and_cover_the_codeartifact_case():
    rules = load_rules(REPO / "addons" / "credhop" / "rules.yaml")
    assert rules.warnings == ()
    rule = rules.first_match(hop("https://aws:T@dom-123.d.codeartifact.eu-west-1.amazonaws.com/pypi/x/simple/p/"))
    assert (rule.name, rule.action) == ("codeartifact", "inject")
    assert rules.first_match(hop("https://u:p@elsewhere.example/")).name == "default"


RULES = """\
rules:
  - name: blocked-client
    match: {client: 192.168.0.0/16}
    action: block
  - name: gitlab
    match:
      host: ["gitlab.example", "*.gitlab.example"]
      path_prefix: /api/
    action: inject
    header: {name: PRIVATE-TOKEN, value: "{password}"}
    ttl: 30
  - name: bearer
    match: {host: "*.bearer.example", scheme: https, port: 8443, status: [307, 308]}
    action: inject
    header: {value: "Bearer {token}"}
  - name: from-legacy
    match: {from_host: "legacy-*.example"}
    action: strip
  - name: rest
    action: keep
"""


@pytest.mark.parametrize(
    ("location", "kwargs", "expected"),
    [
        ("https://u:p@gitlab.example/api/v4/x", {}, "gitlab"),
        ("https://u:p@a.b.GITLAB.example/api/", {}, "gitlab"),
        ("https://u:p@gitlab.example/other/", {}, "rest"),  # path prefix
        ("https://u:p@evilgitlab.example/api/", {}, "rest"),  # look-alike suffix
        ("https://u:p@gitlab.example.evil/api/", {}, "rest"),
        ("https://u:p@gitlab.example/api/", {"client": "192.168.4.5"}, "blocked-client"),
        ("https://t@x.bearer.example:8443/", {"status": 307}, "bearer"),
        ("https://t@x.bearer.example:8443/", {"status": 302}, "rest"),  # status
        ("https://t@x.bearer.example/", {"status": 307}, "rest"),  # port
        ("http://t@x.bearer.example:8443/", {"status": 307}, "rest"),  # scheme
        ("https://u:p@anything.example/", {"from_host": "legacy-eu.example"}, "from-legacy"),
    ],
)
def test_first_matching_rule_wins(location, kwargs, expected):
    rules = parse_rules(RULES)
    assert rules.first_match(hop(location, **kwargs)).name == expected


def test_rule_fields_are_compiled():
    gitlab = parse_rules(RULES).rules[1]
    assert gitlab.header.name == "PRIVATE-TOKEN" and gitlab.ttl == 30
    bearer = parse_rules(RULES).rules[2]
    assert bearer.header.name == "Authorization" and bearer.header.value == "Bearer {token}"
    assert bearer.ttl is None and bearer.allow_plaintext is False and bearer.override_client_header is False


def test_no_rule_matches_returns_none():
    rules = parse_rules("rules:\n  - name: only\n    match: {host: a.example}\n    action: strip\n")
    assert rules.first_match(hop("https://u:p@b.example/")) is None


@pytest.mark.parametrize(
    ("text", "line", "column", "key", "message"),
    [
        ("rules:\n  - name: a\n    action: inject\n    match:\n      hots: x.example\n", 5, 7, "rules[0].match.hots", "did you mean 'host'"),
        ("rules:\n  - name: a\n    action: teleport\n", 3, 13, "rules[0].action", "unknown action 'teleport'"),
        ("rules:\n  - name: a\n    action: inject\n    match: {client: 10.0.0.0/33}\n", 4, 21, "rules[0].match.client", "bad CIDR"),
        ("rules:\n  - name: a\n    action: inject\n    match: {host: 'a/b'}\n", 4, 19, "rules[0].match.host", "bad host glob"),
        ("rules:\n  - name: a\n    action: inject\n    match: {host: 'a[b'}\n", 4, 19, "rules[0].match.host", "unbalanced"),
        ("rules:\n  - name: a\n    action: inject\n    match: {status: 200}\n", 4, 21, "rules[0].match.status", "not one of"),
        ("rules:\n  - name: a\n    action: inject\n    match: {port: 0}\n", 4, 19, "rules[0].match.port", "outside"),
        ("rules:\n  - name: a\n    action: inject\n    match: {port: yes}\n", 4, 19, "rules[0].match.port", "must be a whole number, not True"),
        ("rules:\n  - name: a\n    action: inject\n    match: {path_prefix: api}\n", 4, 26, "rules[0].match.path_prefix", "must start"),
        ("rules:\n  - name: a\n    action: strip\n    ttl: 5\n", 4, 5, "rules[0].ttl", "only applies to action inject"),
        ("rules:\n  - name: a\n    action: inject\n    ttl: -5\n", 4, 10, "rules[0].ttl", "must be 1..604800"),
        ("rules:\n  - name: a\n    action: inject\n    ttl: 1" + "0" * 400 + "\n", 4, 10, "rules[0].ttl", "a week at most"),
        ("rules:\n  - name: a\n    action: !!python/name:os.system inject\n", 3, 13, "rules[0].action", "tag"),
        ("rules:\n  - name: !foo a\n    action: inject\n", 2, 11, "rules[0].name", "tag"),
        ("rules:\n  - name: a\n    action: inject\n    ttl: !!int abc\n", 4, 10, "rules[0].ttl", "not a valid int"),
        ("rules:\n  - name: a\n    action: inject\n    allow_plaintext: !!bool maybe\n", 4, 22, "rules[0].allow_plaintext", "not a valid bool"),
        ("rules:\n  - name: a\n    action: inject\n    on_leak: shout\n", 4, 14, "rules[0].on_leak", "not one of"),
        ("rules:\n  - name: a\n    action: inject\n    header: {value: '{pasword}'}\n", 4, 13, "rules[0].header", "unknown placeholder"),
        ("rules:\n  - name: a\n    action: inject\n    header: {name: 'Bad Name', value: '{token}'}\n", 4, 13, "rules[0].header", "invalid header name"),
        ("rules:\n  - name: a\n    action: inject\n    header: {value: 'static'}\n", 4, 13, "rules[0].header", "no credential placeholder"),
        ("rules:\n  - name: a\n    action: inject\n  - name: a\n    action: strip\n", 4, 5, "rules[1].name", "duplicate rule name"),
        ("rules:\n  - action: inject\n", 2, 5, "rules[0].name", "missing"),
        ("rule:\n  - name: a\n", 1, 1, "rule", "did you mean 'rules'"),
        ("rules:\n  - name: a\n    action: [inject\n", 4, 1, "yaml", ""),
        ("rules: {}\n", 1, 8, "rules", "must be a list"),
        ("", 1, 1, "rules", "empty"),
    ],
)
def test_errors_name_line_column_and_key(text, line, column, key, message):
    with pytest.raises(RulesError) as e:
        parse_rules(text, "my-rules.yaml")
    err = e.value
    assert (err.source, err.line, err.column, err.key) == ("my-rules.yaml", line, column, key)
    assert message in err.message
    assert str(err).startswith(f"my-rules.yaml:{line}:{column}: {key}: ")


def test_unreadable_file_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_broad_plaintext_inject_is_warned_about():
    rules = parse_rules("rules:\n  - name: wide\n    match: {host: '*'}\n    action: inject\n    allow_plaintext: true\n")
    assert len(rules.warnings) == 1 and "plaintext" in rules.warnings[0]
    narrow = parse_rules("rules:\n  - name: n\n    match: {host: a.example}\n    action: inject\n    allow_plaintext: true\n")
    assert narrow.warnings == ()


def test_trailing_dot_hosts_match_like_their_dotless_form():
    rules = parse_rules("rules:\n  - name: block\n    match: {host: cdn.partner.example}\n    action: block\n"
                        "  - name: rest\n    action: inject\n")
    assert rules.first_match(hop("https://u:p@cdn.partner.example./x")).name == "block"
    assert rules.first_match(hop("https://u:p@cdn.partner.example/x", from_host="r.example.")).name == "block"
