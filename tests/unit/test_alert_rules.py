"""The Prometheus alerting rules (deploy/prometheus/credhop-rules.yml): promtool accepts them and their unit
tests pass, every metric they read is one credhop's registry exports (the event counters at 0 from the
start, which the rules' plain increase() needs), every alert is tested both ways and has its runbook
section in docs/alerts.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from credhop.findings import CATALOGUE
from credhop.metrics import HOOKS, VERDICTS, Metrics
from credhop.records import LEAK_ACTIONS, LeakKind

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "credhop-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "credhop-rules.test.yml"
RUNBOOK = REPO / "docs" / "alerts.md"
RUNBOOK_URL = "https://github.com/credhop/credhop/blob/main/docs/alerts.md#"

# What prometheus_client exposes for a family of each type (a family's name has no _total)
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}
# Labels an alert may group by or show: Prometheus's target labels and credhop's bounded ones
BOUNDED_LABELS = {"job", "instance", "le", "code", "kind", "action", "hook", "op", "cause", "verdict"}
SEVERITIES = {"page", "ticket"}
# The labelled counters credhop exports at 0 from its start: increase() sees their first event
AT_ZERO = ("credhop_leaks_total", "credhop_internal_errors_total", "credhop_chains_total")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: it is in the Debian package `prometheus` "
                    "(`make system-deps` installs it)")
    return path


def run_promtool(*args: str) -> None:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    shown = f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    assert done.returncode == 0, shown


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def exported_names() -> set[str]:
    """Every sample name a real credhop registry can expose, labelled families included (some have no
    samples until first used)."""
    families = Metrics().registry.collect()
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def scraped_at_start() -> dict[str, list[dict[str, str]]]:
    """The label sets of each AT_ZERO counter's series in a fresh registry's /metrics text, each checked
    to be at 0."""
    text = generate_latest(Metrics().registry).decode()
    series: dict[str, list[dict[str, str]]] = {name: [] for name in AT_ZERO}
    for sample in (s for family in text_string_to_metric_families(text) for s in family.samples):
        if sample.name in series:
            assert sample.value == 0, f"{sample.name}{sample.labels} starts at {sample.value}"
            series[sample.name].append(sample.labels)
    return series


def matchers(expr: str, metric: str) -> list[tuple[str, str]]:
    """The `label="value"` matchers an expression puts on `metric` (no matcher at all: [])."""
    return [m for braces in re.findall(rf"\b{metric}\{{([^}}]*)\}}", expr)
            for m in re.findall(r'(\w+)\s*=\s*"([^"]*)"', braces)]


def hooks_named_in_hop() -> set[str]:
    """The hook names hop.py passes towards Metrics.internal_error (read from its source: it imports
    mitmproxy)."""
    source = (REPO / "addons" / "credhop" / "hop.py").read_text()
    return set(re.findall(r'\b(?:internal_error|_guarded|set_aside)\(.*"(\w+)"', source))


def selectors(expr: str) -> set[str]:
    """The names in a PromQL expression that look like metrics: credhop_* and recorded (with a colon)."""
    expr = re.sub(r"#.*", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, e.g. job=~"credhop.*"
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n.startswith("credhop_") or ":" in n}


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_checks_the_rules():
    run_promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_pass():
    run_promtool("test", "rules", str(RULE_TESTS))


def test_every_metric_the_rules_read_is_exported_by_credhop():
    exported = exported_names()
    assert "credhop_leaks_total" in exported and "credhop_store_latency_seconds_bucket" in exported
    # no recording rules: every alert reads credhop's own series, exported from the first scrape
    assert [rule["record"] for rule in rules() if "record" in rule] == []
    for rule in alerts():
        for name in selectors(rule["expr"]):
            assert ":" not in name, f"{rule['alert']}: reads {name}, which no rule records"
            assert name in exported, f"{rule['alert']}: {name} is not a credhop metric"


def test_a_fresh_registry_exports_at_0_every_series_the_event_alerts_select():
    series = scraped_at_start()
    read = {name for alert in alerts() for name in selectors(alert["expr"])}
    assert {"credhop_leaks_total", "credhop_internal_errors_total"} <= read
    for alert in alerts():
        for name in set(AT_ZERO) & selectors(alert["expr"]):
            assert series[name], f"{alert['alert']}: {name} has no series before its first event"
            for label, value in matchers(alert["expr"], name):
                assert any(s.get(label) == value for s in series[name]), \
                    f"{alert['alert']}: no {name}{{{label}=\"{value}\"}} at 0 before its first event"
    # every kind with every action an alert selects, every hook, every verdict: each one's first counts
    actions = {value for alert in alerts() for _, value in matchers(alert["expr"], "credhop_leaks_total")}
    assert actions == {str(a) for a in LEAK_ACTIONS}, f"a leak action without its alert: {sorted(actions)}"
    leaks = {(s["kind"], s["action"]) for s in series["credhop_leaks_total"]}
    late_leaks = {(str(kind), action) for kind in LeakKind for action in actions} - leaks
    assert not late_leaks, f"leak series not at 0 from the start: {sorted(late_leaks)}"
    hooks = set(HOOKS) | hooks_named_in_hop()
    assert hooks >= {"requestheaders", "responseheaders", "response"}, hooks
    late_hooks = hooks - {s["hook"] for s in series["credhop_internal_errors_total"]}
    assert not late_hooks, f"internal-error hooks not at 0 from the start: {sorted(late_hooks)}"
    late_verdicts = set(VERDICTS) - {s["verdict"] for s in series["credhop_chains_total"]}
    assert VERDICTS and not late_verdicts, f"chain verdicts not at 0 from the start: {sorted(late_verdicts)}"


def test_the_unit_tests_feed_real_metric_names():
    exported = exported_names()
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for series in (s["series"] for test in tests for s in test["input_series"]):
        name = series.split("{", 1)[0]
        assert name == "up" or name in exported, f"the promtool tests feed {name}, which credhop lacks"


def test_the_unit_tests_start_the_event_counters_at_0_as_credhop_exports_them():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fed = [s for test in tests for s in test["input_series"] if s["series"].split("{", 1)[0] in AT_ZERO]
    assert len(fed) >= 5
    for series in fed:
        first = next(v for v in str(series["values"]).split() if not v.startswith("_"))
        assert re.fullmatch(r"0(?:[+x].*)?", first), f"{series['series']} starts at {first}, not 0"


def test_the_failing_chains_alert_counts_the_error_codes_the_leak_alerts_do_not_own():
    # a chain with an error-severity finding is judged failed (checks.py); the leak codes page on their own
    leaks = {k.code for k in CATALOGUE if k.name.startswith("credential-leaked")}
    expected = {k.code for k in CATALOGUE if k.severity == "error"} - leaks
    (rule,) = [a for a in alerts() if a["alert"] == "CredhopChainsFailing"]
    (codes,) = re.findall(r'code=~"([^"]+)"', rule["expr"])
    assert set(codes.split("|")) == expected, "a finding code was added or changed severity: update the alert"


def test_every_alert_has_for_severity_and_annotations_with_bounded_labels_only():
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)) and len(names) >= 10
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), f"{name}: no `for:`"
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        shown = set(re.findall(r"\$labels\.(\w+)", " ".join(annotations.values())))
        assert shown <= BOUNDED_LABELS, f"{name} shows {sorted(shown - BOUNDED_LABELS)}"
    for rule in rules():
        clauses = re.findall(r"\b(?:by|on|without|group_left|group_right)\s*\(([^)]*)\)", rule["expr"])
        grouped = {label.strip() for labels in clauses for label in labels.split(",")}
        assert grouped <= BOUNDED_LABELS, f"{rule.get('alert') or rule.get('record')} groups by {grouped}"


def test_every_alert_is_tested_firing_and_quiet():
    cases: dict[str, list[list[dict[str, Any]]]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for name in (a["alert"] for a in alerts()):
        assert any(cases.get(name, [])), f"{name}: no promtool case where it fires"
        assert any(not exp for exp in cases.get(name, [])), f"{name}: no promtool case where it stays quiet"
        for exp in (e for expected in cases[name] for e in expected):
            assert exp.get("exp_labels", {}).get("severity"), name
            assert exp.get("exp_annotations", {}).keys() == {"summary", "description", "runbook_url"}, name


def test_every_runbook_url_has_its_section_in_docs_alerts():
    headings = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(), re.MULTILINE)}
    for alert in alerts():
        anchor = alert["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in headings, f"{alert['alert']}: docs/alerts.md has no heading for #{anchor}"
