"""The Grafana dashboard (deploy/grafana/credhop.json) against a real Prometheus that scraped a real
credhop run.

Two credhop mitmdumps in front of the redirector fixture, each serving /metrics; a real Prometheus
2.x scrapes both every second. Real clients go through them: uv 0.5.25 installs through instance
"works" (a credential injected, the wheel downloaded with it), curl asks instance "fails" for a
package the index does not have (404 after the injection: a failed chain with findings) and re-sends
its own credential across the redirect (a leak). Then:

- what Prometheus holds for each instance equals what that instance's hop log says (counted from the
  file, not from what the test sent);
- every expression of the dashboard, with its template variables filled in as Grafana would, parses
  and returns data, and names only metrics the instances export; the `instance` variable's
  label_values(...) lists both instances.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Mitmdump, clean_env, free_port, proxy_env, run, tool
from tests.e2e.test_clients import PACKAGE, uv_install
from tests.fixtures.prometheus import Prometheus, PrometheusError
from tests.fixtures.registry import AuthIndex, Redirector
from tests.secrets_check import Secret, assert_no_leak, secret_forms

DASHBOARD = REPO / "deploy" / "grafana" / "credhop.json"
ALERT_RULES = REPO / "deploy" / "prometheus" / "credhop-rules.yml"
JOB = "credhop"
MISSING_PACKAGE = "no-such-pkg"
LEAKED = Secret("leak-Qv7nW2xR9kT4")  # the client's own password, which curl re-sends after the redirect
# Grafana's built-in interval variables; wide, so that what the traffic did still shows however long the
# tests before took (a rate over 1m of traffic 2 minutes old is 0)
BUILT_INS = {"__rate_interval": "5m", "__interval": "1m", "__range": "10m", "__range_s": "600",
             "__interval_ms": "60000"}


@dataclass
class Instance:
    name: str  # "works" or "fails": which part of the traffic went through it
    proxy: Mitmdump
    metrics_port: int

    @property
    def label(self) -> str:
        """Its `instance` label in Prometheus: the scrape target."""
        return f"127.0.0.1:{self.metrics_port}"


@dataclass
class Run:
    prometheus: Prometheus
    instances: dict[str, Instance]
    outputs: list[str]  # what the clients printed


@pytest.fixture(scope="module")
def scraped(tmp_path_factory, pki, wheel, token) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("prometheus")
    with ExitStack() as stack:
        index = AuthIndex("aws", token, wheel, unauth_status=401, host="127.0.0.2", prefix="/pypi/python")
        index.start()
        stack.callback(index.stop)
        redirector = Redirector(target=index.credentials_url("/simple/")).start()
        stack.callback(redirector.stop)
        instances = {}
        for name in ("works", "fails"):
            instances[name] = start_instance(stack, name, work, pki.ca_cert)
        targets = [i.label for i in instances.values()]
        binary = tool("CREDHOP_PROMETHEUS", "prometheus")  # absent: a skip (under CREDHOP_STRICT, a failure)
        prometheus = stack.enter_context(Prometheus(work / "prometheus", {JOB: targets}, binary=binary,
                                                    rule_files=(ALERT_RULES,)))
        prometheus.wait_for(lambda: prometheus.targets_up(JOB) == 2, what="two targets up")

        # twice: Prometheus takes a series' first value as where it starts, so only what the second round
        # adds shows in rate() and increase()
        outputs = []
        for turn in (1, 2):
            outputs += drive_traffic(instances, redirector, work / f"round{turn}")
            wait_for_two_scrapes(prometheus)
        yield Run(prometheus, instances, outputs)


def start_instance(stack: ExitStack, name: str, work: Path, upstream_ca: Path) -> Instance:
    for attempt in range(3):
        port = free_port()
        # every plain 3xx recorded too, so each redirect the counters saw has its record
        proxy = Mitmdump(work / f"{name}-{attempt}", upstream_ca, options={
            "credhop_metrics": f"127.0.0.1:{port}", "credhop_plain_redirects": "record"})
        try:
            return Instance(name, stack.enter_context(proxy), port)
        except RuntimeError:
            if "address already in use" not in proxy.output:
                raise
            # a free port is free until someone takes it: another test run on this machine did
    raise RuntimeError(f"no free ports for {name}")


def wait_for_two_scrapes(prometheus: Prometheus) -> None:
    """Until each target has been scraped twice more: rate() and increase() need two samples."""
    for _ in range(2):
        before = prometheus.scrapes(JOB)
        prometheus.wait_for(lambda: all(prometheus.scrapes(JOB)[i] != t for i, t in before.items()),
                            what="scrape of both targets after the traffic")


def drive_traffic(instances: dict[str, Instance], redirector: Redirector, work: Path) -> list[str]:
    works, fails = instances["works"].proxy, instances["fails"].proxy
    work.mkdir(parents=True)
    uv = tool("CREDHOP_UV_OLD", "uv-0.5.25")
    installed = uv_install(uv, redirector, work / "uv", proxy_env(works.url, works.ca_cert))
    assert installed.returncode == 0, installed.output[-3000:]

    curl = tool("CREDHOP_CURL", "curl")
    home = clean_env(work / "curl-home")
    missing = run([curl, "-sS", "-L", "--proxy", fails.url, f"{redirector.simple_url}{MISSING_PACKAGE}/"],
                  home, work)
    # -u with --location-trusted: curl sends its own Authorization to the index the 3xx points to
    leaking = run([curl, "-sS", "-L", "--location-trusted", "-u", f"me:{LEAKED}", "--proxy", fails.url, "-o",
                   str(work / "page.html"), f"{redirector.simple_url}{PACKAGE}/"], home, work)
    return [installed.output, missing.output, leaking.output]


# -- what Prometheus holds against what the hop logs say ---------------------------------------------

def hop_log_counts(records: list[dict]) -> dict[str, float]:
    """The counters' values as the hop log tells them: redirects by action, headers injected (a
    downloads record counts many), leaks by kind."""
    counts: Counter[str] = Counter()
    for record in records:
        event = record["event"]
        if event == "redirect":
            counts[f"redirects{{action={record['action']}}}"] += 1
        elif event == "inject" and record["action"] == "inject":
            counts["injections"] += 1
        elif event == "downloads":
            counts["injections"] += record["count"]
        elif event == "leak":
            counts[f"leaks{{kind={record['kind']}}}"] += 1
    return dict(counts)


def prometheus_counts(prometheus: Prometheus, label: str) -> dict[str, float]:
    selector = f'{{job="{JOB}", instance="{label}"}}'
    counts = {f"redirects{{action={action}}}": value for action, value in
              prometheus.vector(f"sum by (action) (credhop_redirects_total{selector})", "action").items()}
    counts |= {f"leaks{{kind={kind}}}": value for kind, value in
               prometheus.vector(f"sum by (kind) (credhop_leaks_total{selector})", "kind").items()}
    injections = prometheus.vector(f"sum(credhop_injections_total{selector})", "")
    if injections:
        counts["injections"] = injections[""]
    return {name: value for name, value in counts.items() if value}


@pytest.mark.parametrize("name", ["works", "fails"])
def test_each_instances_counters_in_prometheus_equal_its_hop_log(scraped, name):
    instance = scraped.instances[name]
    prometheus = scraped.prometheus
    last: list[tuple[dict, dict]] = []

    def agree() -> bool:
        # a downloads record is written once the downloads have been quiet for 5 s: until then the
        # counter is ahead of the file
        last[:] = [(hop_log_counts(instance.proxy.records()),
                    prometheus_counts(prometheus, instance.label))]
        return last[0][0] == last[0][1]

    try:
        prometheus.wait_for(agree, timeout=30, what="agreement")
    except TimeoutError as e:
        expected, seen = last[0]
        raise AssertionError(f"{name} ({instance.label}): hop log {expected} != Prometheus {seen}\n{e}") \
            from None
    expected = last[0][0]

    selector = f'{{instance="{instance.label}"}}'
    verdicts = prometheus.vector(f"sum by (verdict) (credhop_chains_total{selector})", "verdict")
    findings = prometheus.vector(f"sum by (code) (credhop_findings_total{selector})", "code")
    if name == "works":  # the install: a credential injected, its chain ended well
        assert expected["injections"] >= 2 and expected["redirects{action=inject}"] >= 1, expected
        assert verdicts.get("ok", 0) >= 1 and not verdicts.get("failed"), verdicts
    else:  # the package the index does not have, and curl's own credential re-sent to the index
        assert verdicts.get("failed", 0) >= 1, verdicts
        assert findings, prometheus.log[-3000:]
        assert any(key.startswith("leaks{") for key in expected), expected


def test_no_secret_reaches_prometheus_or_any_output(scraped, token):
    forms = secret_forms(token) | secret_forms(LEAKED, user="me")
    stored = scraped.prometheus.api("series", **{"match[]": '{__name__=~"credhop_.+"}'})
    assert stored, scraped.prometheus.log[-3000:]
    assert_no_leak(json.dumps(stored), forms, "Prometheus series")
    assert_no_leak(scraped.prometheus.log, forms, "Prometheus log")
    for instance in scraped.instances.values():
        proxy = instance.proxy
        assert_no_leak(proxy.output + proxy.hoplog.read_text(), forms, f"{instance.name}: output, hop log")
    assert_no_leak("\n".join(scraped.outputs), forms, "client output")


# -- the dashboard -----------------------------------------------------------------------------------

def dashboard_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def fill_in(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable syntaxes ($name, ${name}, ${name:fmt}, [[name]]) replaced; an unknown one fails."""
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        assert name in variables, f"unknown variable ${name} in {expr}"
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def instance_regex(labels: list[str]) -> str:
    """What Grafana puts for a multi-value variable on All in a Prometheus query: an escaped
    alternation, its backslashes doubled for the PromQL string."""
    return "(" + "|".join(re.escape(label).replace("\\", "\\\\") for label in labels) + ")"


def exported_metrics(prometheus: Prometheus) -> set[str]:
    """The names of the series every metric family the targets export has or will have: a labelled
    counter that has counted nothing yet has no series, but its HELP and TYPE lines reach Prometheus
    (as OpenMetrics families: a counter's name without `_total`)."""
    names = set()
    for entry in prometheus.api("targets/metadata", match_target=f'{{job="{JOB}"}}'):
        name, kind = entry["metric"], entry["type"]
        if kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "histogram":
            names |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(name)
    return names


def test_the_dashboard_is_one_an_operator_can_import():
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus", source
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    ids = [p["id"] for p in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids)), ids
    for panel in panels:
        assert panel.get("description", "").strip(), f"panel {panel['title']!r} has no description"
        assert panel["targets"], panel["title"]
        sources = [panel["datasource"], *(t["datasource"] for t in panel["targets"] if "datasource" in t)]
        for source in sources:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, (panel["title"], source)


def dashboard_queries(dashboard: dict, labels: list[str]) -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL) of every panel target, variables filled in for `instance` on All."""
    variables = {**BUILT_INS, "instance": instance_regex(labels), "datasource": "Prometheus"}
    return [(panel["title"], target["refId"], fill_in(target["expr"], variables))
            for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]


def test_every_dashboard_expression_parses_and_returns_data(scraped):
    prometheus = scraped.prometheus
    dashboard = json.loads(DASHBOARD.read_text())
    labels = sorted(i.label for i in scraped.instances.values())

    # the instance variable: label_values(metric, label) is Grafana's; Prometheus's label values API
    # answers the same question
    instance_query = next(v for v in dashboard["templating"]["list"] if v["name"] == "instance")["query"]
    instance_query = instance_query["query"] if isinstance(instance_query, dict) else instance_query
    match = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)", instance_query)
    assert match, instance_query
    values = prometheus.api(f"label/{match[2]}/values", **{"match[]": match[1]})
    assert sorted(values) == labels, (instance_query, values)

    exported = exported_metrics(prometheus)
    queries = dashboard_queries(dashboard, labels)
    assert len(queries) >= 15, queries
    problems = []
    for title, ref, query in queries:
        # a fallback branch (`or ... 0 * ...`) returns data whatever the rest names: every metric
        # named must be one the instances export
        unknown = sorted(set(re.findall(r"\bcredhop_\w+", query)) - exported)
        if unknown:
            problems.append(f"{title} ({ref}): {query}\n    names metrics no instance exports: {unknown}")
            continue
        try:
            data = prometheus.query(query)
        except PrometheusError as e:
            problems.append(f"{title} ({ref}): {query}\n    {e}")
            continue
        if not data["result"]:
            problems.append(f"{title} ({ref}): {query}\n    returned no data")
    assert not problems, "\n".join(problems) + "\n-- prometheus log --\n" + prometheus.log[-3000:]


def positive(values: list[float]) -> bool:
    return any(v > 0 for v in values)


def zero(values: list[float]) -> bool:
    return bool(values) and all(v == 0 for v in values)


# What the traffic must show on the panels that tell it, by panel title, on its first query: series
# with these labels ("works"/"fails" stand for that instance's label), and what their values must be.
SHOWN = {
    "Chains failed": [({"instance": "fails"}, positive), ({"instance": "works"}, zero)],
    "Chains by verdict": [({"instance": "works", "verdict": "ok"}, positive),
                          ({"instance": "fails", "verdict": "failed"}, positive)],
    "Failed share of chains": [({}, positive)],
    "Top finding codes": [({}, positive)],
    "Redirects by action": [({"instance": "works", "action": "inject"}, positive),
                            ({"instance": "fails", "action": "inject"}, positive)],
    "Injections by rule": [({"instance": "works", "rule": "default"}, positive)],
    "Leaks by kind": [({"instance": "fails", "kind": "other-host"}, positive),
                      ({"instance": "works"}, zero)],
    "Store up": [({"instance": "works"}, positive), ({"instance": "fails"}, positive)],
    "Internal errors": [({"instance": "works"}, zero), ({"instance": "fails"}, zero)],
}


def test_the_panels_show_the_traffic(scraped):
    """Not only data: the numbers the traffic made, on the instance it went through."""
    prometheus = scraped.prometheus
    labels = {name: i.label for name, i in scraped.instances.items()}
    queries = {title: query for title, ref, query in
               dashboard_queries(json.loads(DASHBOARD.read_text()), sorted(labels.values())) if ref == "A"}
    assert set(SHOWN) <= set(queries), set(SHOWN) - set(queries)
    wrong = []
    for title, expectations in SHOWN.items():
        result = prometheus.query(queries[title])["result"]
        for wanted, holds in expectations:
            wanted = {k: labels.get(v, v) if k == "instance" else v for k, v in wanted.items()}
            values = [float(s["value"][1]) for s in result if wanted.items() <= s["metric"].items()]
            if not holds(values):
                wrong.append(f"{title}: {queries[title]}\n    {wanted}: {values} is not {holds.__name__}; "
                             f"all: {result}")
    assert not wrong, "\n".join(wrong) + "\n-- prometheus log --\n" + prometheus.log[-3000:]


def test_the_alert_rules_load_and_evaluate_against_the_real_metrics(scraped):
    # promtool tests them on made-up series; here on what two real instances export
    prometheus = scraped.prometheus

    def evaluated():
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = prometheus.wait_for(evaluated, what="every alert rule evaluated")
    import yaml

    declared = {r["alert"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]}
    assert {r["name"] for r in rules} == declared
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    # curl re-sent its own credential across the redirect and the shipped rules stripped it: that alert is
    # on its way, and the one for a leak that went out is not
    leak = next(r for r in rules if r["name"] == "CredhopLeakStripped")
    assert leak["state"] in ("pending", "firing") and leak["alerts"], \
        (leak, prometheus.query("credhop_leaks_total > 0"))
    assert {a["labels"]["instance"] for a in leak["alerts"]} == {scraped.instances["fails"].label}
    quiet = {r["name"] for r in rules if r["state"] == "inactive"}
    assert {"CredhopLeakDetected", "CredhopStoreDown", "CredhopInstanceDown", "CredhopMetricsAbsent"} <= quiet
