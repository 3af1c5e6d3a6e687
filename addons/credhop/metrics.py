"""Prometheus metrics (`/metrics` on the operator listener, `credhop_metrics=HOST:PORT`): one more sink for hop records,
plus the store's calls and the chains' verdicts.

Labels take bounded values only: actions, `why` codes, rule names (from the rules file), finding
codes, leak kinds, store operations and causes. Never a client, user, URL or host. The names are the
same with the memory store and with Redis. No mitmproxy here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from .diagnosis import Chain
from .findings import CATALOGUE
from .records import LEAK_ACTIONS, Action, Event, InjectRecord, LeakKind, LeakRecord, Record, RedirectRecord

HOOKS = ("requestheaders", "responseheaders", "response", "error")  # the hooks an internal error names
VERDICTS = ("ok", "failed", "unknown")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

class Metrics:
    """The counters, gauges and histogram, in their own registry (not the process-global one)."""

    counting = True  # a sink that counts: Sinks.emit_uncounted passes it by

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.redirects = Counter("credhop_redirects", "3xx responses seen, by what credhop did and why",
                                 ["action", "why"], registry=r)
        self.actions = Counter("credhop_actions", "Redirects whose Location carried a credential, by action and rule",
                               ["action", "rule"], registry=r)
        self.refusals = Counter("credhop_refusals", "Credentials in a Location a rule matched but credhop "
                                "did not act on as the rule says, by why", ["why", "rule"], registry=r)
        self.injections = Counter("credhop_injections", "Headers added to requests", ["rule"], registry=r)
        self.skips = Counter("credhop_skips", "Held credentials not added, by why", ["why", "rule"], registry=r)
        self.leaks = Counter("credhop_leaks", "Secrets a client re-sent to another origin", ["kind", "action"],
                             registry=r)
        self.chains = Counter("credhop_chains", "Redirect chains judged when they ended, by verdict", ["verdict"],
                              registry=r)
        self.findings = Counter("credhop_findings", "Findings of ended chains, by code", ["code"], registry=r)
        self.store_calls = Counter("credhop_store_operations", "Store calls a request waited for, by outcome",
                                   ["op", "outcome"], registry=r)
        self.store_errors = Counter("credhop_store_errors", "Store calls that failed or were answered locally "
                                    "because the shared store was down, by cause", ["op", "cause"], registry=r)
        self.store_latency = Histogram("credhop_store_latency_seconds", "How long a request waited on a store call",
                                       ["op"], buckets=LATENCY_BUCKETS, registry=r)
        self.held = Gauge("credhop_credentials_held", "Credentials held (with Redis: fleet-wide, as of this "
                          "instance's last grant)", registry=r)
        self.pending = Gauge("credhop_pending_follow_ups", "Follow-ups expected and held by this instance",
                             registry=r)
        self.store_up = Gauge("credhop_store_up", "1 while the store answers", registry=r)
        self.store_up.set(1)
        self.max_held = Gauge("credhop_credentials_max", "The bound on credentials held (credhop_max_credentials)",
                              registry=r)
        self.internal_errors = Counter("credhop_internal_errors", "Flows credhop could not judge and answered "
                                       "with a 502 (fail closed), by hook", ["hook"], registry=r)
        self.reload_failures = Counter("credhop_rules_reload_failures", "Rules files refused on reload (the "
                                       "previous rules stay)", registry=r)
        self._judged: OrderedDict[str, None] = OrderedDict()
        # the series alerts and the dashboard watch exist at 0 from the start: a counter born at 1 has no increase()
        for kind in LeakKind:
            for action in LEAK_ACTIONS:
                self.leaks.labels(str(kind), str(action))
        for hook in HOOKS:
            self.internal_errors.labels(hook)
        for verdict in VERDICTS:
            self.chains.labels(verdict)
        for kind in CATALOGUE:
            self.findings.labels(kind.code)

    # -- sink ---------------------------------------------------------------------------------

    def emit(self, record: Record) -> None:
        if isinstance(record, RedirectRecord):
            self.redirects.labels(str(record.action), str(record.why or "")).inc()
            if record.fingerprint:
                self.actions.labels(str(record.action), record.rule or "").inc()
                if record.why and record.rule:
                    self.refusals.labels(str(record.why), record.rule).inc()
        elif isinstance(record, InjectRecord):
            if record.action is Action.INJECT:
                self.injections.labels(record.rule).inc()
            else:
                self.skips.labels(str(record.why or ""), record.rule).inc()
        elif isinstance(record, LeakRecord):
            self.leaks.labels(str(record.kind), str(record.action)).inc()
        elif record.event is Event.ERROR:
            pass

    def chain_judged(self, chain: Chain) -> None:
        """Once per chain: its verdict and the codes of its findings."""
        if chain.id in self._judged:
            return
        self._judged[chain.id] = None
        while len(self._judged) > 10_000:
            self._judged.popitem(last=False)
        self.chains.labels(chain.verdict).inc()
        for finding in chain.findings:
            self.findings.labels(finding.code).inc()

    # -- store ----------------------------------------------------------------------------------

    def injected(self, rule: str) -> None:
        """A download counted together (downloads.py): its inject record comes later, in aggregate."""
        self.injections.labels(rule).inc()

    def bare_redirect(self) -> None:
        """A 3xx that starts no credential hop (hop.Hops.bare_location): counted when it comes."""
        self.redirects.labels("none", "").inc()

    def store_call(self, op: str, seconds: float, outcome: str) -> None:
        self.store_calls.labels(op, outcome).inc()
        self.store_latency.labels(op).observe(seconds)

    def store_error(self, op: str, cause: str) -> None:
        self.store_errors.labels(op, cause).inc()

    def internal_error(self, hook: str) -> None:
        self.internal_errors.labels(hook).inc()

    def reload_failed(self) -> None:
        self.reload_failures.inc()

    def bound(self, max_held: int) -> None:
        self.max_held.set(max_held)

    def refresh(self, held: int, pending: int) -> None:
        self.held.set(held)
        self.pending.set(pending)

    def store_up_from(self, up: Callable[[], bool]) -> None:
        """credhop_store_up is `up()` at each scrape."""
        self.store_up.set_function(lambda: 1.0 if up() else 0.0)

    def wsgi_app(self) -> Any:
        """`/metrics` for the operator listener (operator_listener.py)."""
        from prometheus_client import make_wsgi_app

        return make_wsgi_app(self.registry)
