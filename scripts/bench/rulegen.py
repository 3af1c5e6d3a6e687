"""Realistic rule sets for the benchmark: exact hosts, `*.suffix` globs, client CIDRs with a host, path
prefixes with a host, a few irregular globs like the shipped CodeArtifact one; the rule that matches the
benchmark's index host (127.0.0.2) last."""

from __future__ import annotations

import yaml

from credhop.records import Action
from credhop.rules import Match, Rule, RuleSet, _glob, _normal_glob

TARGET = {"name": "bench-index", "match": {"host": "127.0.0.2"}, "action": "inject", "on_leak": "strip"}
IRREGULAR = ["*.d.codeartifact.*.amazonaws.com", "build-*.ci.example", "*-mirror.corp.example",
             "pkg?.cdn.example", "artifacts-*.eu.example"]


def specs(n: int) -> list[dict]:
    """`n` rules (n >= 1), the last one matching the benchmark's index."""
    out: list[dict] = [dict(name=f"irregular-{i}", match={"host": g}, action="inject")
                       for i, g in enumerate(IRREGULAR[: max(0, min(len(IRREGULAR), n - 1))])]
    i = 0
    while len(out) < n - 1:
        kind = i % 10
        if kind < 4:
            rule = {"name": f"exact-{i}", "match": {"host": f"registry{i}.team{i % 97}.corp.example"},
                    "action": "inject"}
        elif kind < 7:
            rule = {"name": f"suffix-{i}", "match": {"host": f"*.svc{i}.corp.example", "scheme": "https"},
                    "action": "inject", "on_leak": "strip"}
        elif kind < 8:
            rule = {"name": f"cidr-{i}", "match": {"host": f"*.net{i}.corp.example",
                                                    "client": f"10.{(i >> 8) % 256}.{i % 256}.0/24"},
                    "action": "block"}
        elif kind < 9:
            rule = {"name": f"path-{i}", "match": {"host": f"repo{i}.corp.example", "path_prefix": f"/team{i}/"},
                    "action": "inject", "header": {"name": "PRIVATE-TOKEN", "value": "{password}"}}
        else:
            rule = {"name": f"strip-{i}", "match": {"host": [f"legacy{i}.corp.example", f"*.legacy{i}.example"]},
                    "action": "strip"}
        out.append(rule)
        i += 1
    out.append(TARGET)
    return out


def to_yaml(rules: list[dict]) -> str:
    return yaml.safe_dump({"rules": rules}, sort_keys=False, width=200)


def to_ruleset(rules: list[dict]) -> RuleSet:
    """What `parse_rules(to_yaml(rules))` builds, without PyYAML's parser (100,000 rules take minutes)."""
    import ipaddress

    from credhop.credentials import BASIC, HeaderTemplate

    built = []
    for r in rules:
        m = r.get("match", {})
        hosts = m.get("host", ())
        hosts = (hosts,) if isinstance(hosts, str) else tuple(hosts)
        client = m.get("client")
        match = Match(hosts=tuple(_glob(h) for h in hosts), host_globs=tuple(_normal_glob(h) for h in hosts),
                      schemes=frozenset([m["scheme"]]) if "scheme" in m else frozenset(),
                      path_prefixes=(m["path_prefix"],) if "path_prefix" in m else (),
                      clients=(ipaddress.ip_network(client),) if client else ())
        header = HeaderTemplate.compile(**r["header"]) if "header" in r else BASIC
        built.append(Rule(r["name"], Action(r["action"]), match, header=header,
                          on_leak=Action(r.get("on_leak", "log"))))
    return RuleSet(tuple(built))
