"""The rules file: what to do with a credential found in a Location. First match wins.

Validation walks the YAML node tree so every error names file, line, column
and key. Matchers are compiled once, at load time.
"""

from __future__ import annotations

import difflib
import fnmatch
import heapq
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .credentials import BASIC, HeaderTemplate
from .records import LEAK_ACTIONS as _LEAK
from .records import RULE_ACTIONS, Action
from .urls import Location

ACTIONS = tuple(a.value for a in RULE_ACTIONS)
REDIRECT_STATUSES = (300, 301, 302, 303, 305, 307, 308)
MAX_TTL = 7 * 24 * 3600
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null", "float")}
RULE_KEYS = ("name", "match", "action", "header", "ttl", "allow_plaintext", "override_client_header", "on_leak")
LEAK_ACTIONS = tuple(a.value for a in _LEAK)
MATCH_KEYS = ("host", "from_host", "scheme", "port", "path_prefix", "status", "client")
HEADER_KEYS = ("name", "value")
TOP_KEYS = ("rules",)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RulesError(ValueError):
    def __init__(self, source: str, line: int, column: int, key: str, message: str) -> None:
        self.source, self.line, self.column, self.key, self.message = source, line, column, key, message
        super().__init__(f"{source}:{line}:{column}: {key}: {message}")


@dataclass(frozen=True, slots=True)
class Hop:
    """One redirect, as the rules see it."""

    location: Location
    from_host: str  # host of the request that got the 3xx
    status: int
    client: IPAddress | None


@dataclass(frozen=True, slots=True)
class Match:
    hosts: tuple[re.Pattern[str], ...] = ()
    from_hosts: tuple[re.Pattern[str], ...] = ()
    schemes: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset()
    path_prefixes: tuple[str, ...] = ()
    statuses: frozenset[int] = frozenset()
    clients: tuple[IPNetwork, ...] = ()
    # the host globs as written (lower case, trailing dots gone), for the index; empty when a
    # Match is built from compiled patterns only, which the index then scans
    host_globs: tuple[str, ...] = ()

    def __call__(self, hop: Hop) -> bool:
        origin = hop.location.origin
        # "host." is the same host as "host" to DNS; patterns are stored without the dot too
        host, from_host = origin.host.rstrip("."), hop.from_host.rstrip(".")
        return (
            (not self.hosts or any(p.match(host) for p in self.hosts))
            and (not self.from_hosts or any(p.match(from_host) for p in self.from_hosts))
            and (not self.schemes or origin.scheme in self.schemes)
            and (not self.ports or origin.port in self.ports)
            and (not self.path_prefixes or hop.location.path.startswith(self.path_prefixes))
            and (not self.statuses or hop.status in self.statuses)
            and (
                not self.clients
                or (hop.client is not None and any(hop.client in net for net in self.clients))
            )
        )

    @property
    def matches_any_host(self) -> bool:
        return not self.hosts or any(p.pattern == _glob("*").pattern for p in self.hosts)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    action: Action
    match: Match
    header: HeaderTemplate = BASIC
    ttl: int | None = None  # None: the credhop_ttl option
    allow_plaintext: bool = False
    override_client_header: bool = False
    on_leak: Action = Action.LOG  # a client re-sending a secret to another origin after this redirect
    line: int = 0


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "<none>"
    warnings: tuple[str, ...] = field(default=())

    index: RuleIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", RuleIndex(self.rules))

    def first_match(self, hop: Hop) -> Rule | None:
        """The first rule, in file order, whose `match` fits `hop`."""
        return self.index.first_match(hop)

    def first_match_linear(self, hop: Hop) -> Rule | None:
        """The same as `first_match`, by trying every rule in turn (the index's reference)."""
        for rule in self.rules:
            if rule.match(hop):
                return rule
        return None


_GLOB_CHARS = frozenset("*?[")


def _glob_kind(glob: str) -> tuple[str, str] | None:
    """("exact", host) or ("suffix", ".rest") for globs an index can look up, None for the rest.
    Only ASCII globs: re.IGNORECASE folds some non-ASCII letters onto ASCII ones (K, ſ)."""
    if not glob.isascii():
        return None
    if not _GLOB_CHARS.intersection(glob):
        return "exact", glob
    if glob.startswith("*.") and not _GLOB_CHARS.intersection(glob[2:]):
        return "suffix", glob[1:]
    return None


class RuleIndex:
    """`first_match` without trying every rule: exact host globs in a hash, `*.suffix` globs in a
    map by suffix, and only the rest (irregular globs, `*`, rules without a host) tried for every
    host. Candidates are tried in file order, so the first match is the linear scan's."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.exact: dict[str, list[int]] = {}
        self.suffix: dict[str, list[int]] = {}  # ".example.com" -> rules with "*.example.com"
        always: list[int] = []  # tried for every host
        for i, rule in enumerate(rules):
            match = rule.match
            if not match.hosts:
                always.append(i)
                continue
            kinds = [_glob_kind(g) for g in match.host_globs]
            if len(match.host_globs) != len(match.hosts) or None in kinds or any(
                    k == ("suffix", "") for k in kinds):
                always.append(i)  # an irregular glob, or "*" (any host): tried for every host
                continue
            for kind, key in kinds:  # type: ignore[misc]
                table = self.exact if kind == "exact" else self.suffix
                if not table.get(key) or table[key][-1] != i:
                    table.setdefault(key, []).append(i)
        self.always = tuple(always)
        self.linear = len(self.always) == len(rules)  # nothing indexed: the plain scan is the index

    def candidates(self, host: str) -> list[int] | None:
        """Indexes of the rules whose host globs may match `host` (trailing dots removed), in
        file order; None when only trying every rule is right (a non-ASCII host)."""
        if not host.isascii():
            return None
        host = host.lower()
        hits: list[int] = list(self.exact.get(host, ()))
        if self.suffix:
            dot = host.find(".")
            while dot >= 0:
                found = self.suffix.get(host[dot:])
                if found:
                    hits.extend(found)
                dot = host.find(".", dot + 1)
        if not hits:
            return list(self.always)
        hits.sort()
        return list(heapq.merge(self.always, hits))

    def first_match(self, hop: Hop) -> Rule | None:
        rules = self.rules
        if not self.linear:
            order = self.candidates(hop.location.origin.host.rstrip("."))
            if order is not None:
                for i in order:
                    if rules[i].match(hop):
                        return rules[i]
                return None
        for rule in rules:
            if rule.match(hop):
                return rule
        return None


def _normal_glob(pattern: str) -> str:
    return pattern.lower().rstrip(".")


def _glob(pattern: str) -> re.Pattern[str]:
    # fnmatch.translate yields backtracking-safe regexes (atomic groups since 3.9)
    return re.compile(fnmatch.translate(_normal_glob(pattern)), re.IGNORECASE)


# libyaml when PyYAML has it: ten times faster on big rule files, the same nodes and marks
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_rules(path: str | Path) -> RuleSet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(str(path), 1, 1, "file", f"cannot read: {e.__class__.__name__}: {e}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    return _Parser(source).document(text)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = yaml.constructor.SafeConstructor()
        self.warnings: list[str] = []

    def fail(self, node: yaml.Node | None, key: str, message: str) -> RulesError:
        mark = node.start_mark if node is not None else None
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return RulesError(self.source, line, column, key, message)

    def document(self, text: str) -> RuleSet:
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = str(e.problem)
            if "nesting depth" in problem:  # libyaml's limit; the pure-Python parser recurses instead
                problem = "nested too deeply"
            raise RulesError(self.source, line, column, "yaml", problem) from None
        except yaml.YAMLError as e:
            raise self.fail(None, "yaml", str(e)) from None
        except RecursionError:  # PyYAML's parser recurses once per nesting level
            raise self.fail(None, "yaml", "nested too deeply") from None
        if root is None:
            raise self.fail(None, "rules", "the file is empty; it needs a 'rules:' list")
        top = self.mapping(root, "(top level)", TOP_KEYS)
        if "rules" not in top:
            raise self.fail(root, "rules", "missing; the file needs a 'rules:' list")
        rules_node = top["rules"][1]
        if not isinstance(rules_node, yaml.SequenceNode):
            raise self.fail(rules_node, "rules", "must be a list of rules")
        rules: list[Rule] = []
        names: set[str] = set()
        for i, node in enumerate(rules_node.value):
            rule = self.rule(node, f"rules[{i}]")
            if rule.name in names:
                raise self.fail(node, f"rules[{i}].name", f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
            rules.append(rule)
        if not rules:
            self.warnings.append(f"{self.source}: 'rules' is empty: no credential will be injected, stripped or blocked")
        return RuleSet(tuple(rules), self.source, tuple(self.warnings))

    def mapping(
        self, node: yaml.Node, where: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, "must be a mapping of key: value")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            full = f"{where}.{key}" if where != "(top level)" else str(key)
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.fail(
                    key_node, full, f"unknown key{suggestion}; allowed: {', '.join(allowed)}"
                )
            if key in out:
                raise self.fail(key_node, full, "duplicate key")
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node, key: str, kind: type | tuple[type, ...]) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, key, f"must be a single {_kind_name(kind)}")
        if node.tag not in PLAIN_TAGS:
            raise self.fail(node, key, f"YAML tag {node.tag!r} is not allowed here")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except Exception:  # e.g. `!!int abc`: PyYAML raises ValueError, KeyError, ...
            raise self.fail(node, key, f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}") from None
        # bool is an int in Python; do not let `port: yes` through
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(node, key, f"must be a {_kind_name(kind)}, not {value!r}")
        return value

    def one_or_many(
        self, node: yaml.Node, key: str, kind: type, convert: Callable[[Any, yaml.Node], Any]
    ) -> tuple[Any, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.fail(node, key, "must not be an empty list")
        return tuple(convert(self.scalar(item, key, kind), item) for item in items)

    def rule(self, node: yaml.Node, where: str) -> Rule:
        fields = self.mapping(node, where, RULE_KEYS)
        for required in ("name", "action"):
            if required not in fields:
                raise self.fail(node, f"{where}.{required}", "missing")
        name = self.scalar(fields["name"][1], f"{where}.name", str)
        action_node = fields["action"][1]
        action = self.scalar(action_node, f"{where}.action", str)
        if action not in ACTIONS:
            raise self.fail(
                action_node, f"{where}.action", f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
            )
        match = self.match(fields["match"][1], f"{where}.match") if "match" in fields else Match()
        kwargs: dict[str, Any] = {}
        if "header" in fields:
            kwargs["header"] = self.header(fields["header"][1], f"{where}.header")
        if "ttl" in fields:
            ttl_node = fields["ttl"][1]
            kwargs["ttl"] = self.scalar(ttl_node, f"{where}.ttl", int)
            if not 0 < kwargs["ttl"] <= MAX_TTL:
                raise self.fail(ttl_node, f"{where}.ttl", f"must be 1..{MAX_TTL} seconds (a week at most)")
        if "on_leak" in fields:
            leak_node = fields["on_leak"][1]
            kwargs["on_leak"] = Action(self.choice(f"{where}.on_leak", LEAK_ACTIONS)(
                self.scalar(leak_node, f"{where}.on_leak", str), leak_node
            ))
        for flag in ("allow_plaintext", "override_client_header"):
            if flag in fields:
                kwargs[flag] = self.scalar(fields[flag][1], f"{where}.{flag}", bool)
        for only_inject in ("header", "ttl", "allow_plaintext", "override_client_header"):
            if only_inject in fields and action != "inject":
                raise self.fail(
                    fields[only_inject][0], f"{where}.{only_inject}", f"only applies to action inject, not {action}"
                )
        rule = Rule(name, Action(action), match, line=node.start_mark.line + 1, **kwargs)
        if action == "inject" and rule.allow_plaintext and match.matches_any_host:
            self.warnings.append(
                f"{self.source}:{rule.line}: rule {name!r} injects into plaintext http on any host;"
                " anyone on the network path can read those credentials"
            )
        return rule

    def match(self, node: yaml.Node, where: str) -> Match:
        fields = self.mapping(node, where, MATCH_KEYS)
        out: dict[str, Any] = {}
        for key, (_, value) in fields.items():
            full = f"{where}.{key}"
            if key in ("host", "from_host"):
                globs = self.one_or_many(value, full, str, self.glob(full))
                out[key + "s"] = tuple(_glob(g) for g in globs)
                if key == "host":
                    out["host_globs"] = tuple(_normal_glob(g) for g in globs)
            elif key == "scheme":
                out["schemes"] = frozenset(self.one_or_many(value, full, str, self.choice(full, ("http", "https"))))
            elif key == "port":
                out["ports"] = frozenset(self.one_or_many(value, full, int, self.in_range(full, 1, 65535)))
            elif key == "path_prefix":
                out["path_prefixes"] = self.one_or_many(value, full, str, self.path(full))
            elif key == "status":
                out["statuses"] = frozenset(
                    self.one_or_many(value, full, int, self.choice(full, REDIRECT_STATUSES))
                )
            elif key == "client":
                out["clients"] = self.one_or_many(value, full, str, self.network(full))
        return Match(**out)

    def header(self, node: yaml.Node, where: str) -> HeaderTemplate:
        fields = self.mapping(node, where, HEADER_KEYS)
        name = self.scalar(fields["name"][1], f"{where}.name", str) if "name" in fields else BASIC.name
        value = self.scalar(fields["value"][1], f"{where}.value", str) if "value" in fields else BASIC.value
        try:
            return HeaderTemplate.compile(name, value)
        except ValueError as e:
            raise self.fail(node, where, str(e)) from None

    # converters: (value, node) -> compiled value, raising RulesError at the node
    def glob(self, key: str) -> Callable[[str, yaml.Node], str]:
        def convert(value: str, node: yaml.Node) -> str:
            if not value or any(c in value for c in "/@\\ \t:") and not _is_ipv6_glob(value):
                raise self.fail(node, key, f"bad host glob {value!r}: use a host name pattern like '*.example.com'")
            if value.count("[") != value.count("]"):
                raise self.fail(node, key, f"bad host glob {value!r}: unbalanced [ ]")
            return value

        return convert

    def choice(self, key: str, allowed: tuple[Any, ...]) -> Callable[[Any, yaml.Node], Any]:
        def convert(value: Any, node: yaml.Node) -> Any:
            if value not in allowed:
                raise self.fail(node, key, f"{value!r} is not one of {', '.join(map(str, allowed))}")
            return value

        return convert

    def in_range(self, key: str, low: int, high: int) -> Callable[[int, yaml.Node], int]:
        def convert(value: int, node: yaml.Node) -> int:
            if not low <= value <= high:
                raise self.fail(node, key, f"{value} is outside {low}..{high}")
            return value

        return convert

    def path(self, key: str) -> Callable[[str, yaml.Node], str]:
        def convert(value: str, node: yaml.Node) -> str:
            if not value.startswith("/"):
                raise self.fail(node, key, f"path prefix {value!r} must start with '/'")
            return value

        return convert

    def network(self, key: str) -> Callable[[str, yaml.Node], IPNetwork]:
        def convert(value: str, node: yaml.Node) -> IPNetwork:
            try:
                return ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise self.fail(node, key, f"bad CIDR {value!r}: use e.g. 10.0.0.0/8 or ::1/128") from None

        return convert


def _is_ipv6_glob(value: str) -> bool:
    return ":" in value and all(c in "0123456789abcdefABCDEF:.*?" for c in value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "whole number", bool: "boolean (true/false)"}
    return names.get(kind, str(kind)) if isinstance(kind, type) else "value"
