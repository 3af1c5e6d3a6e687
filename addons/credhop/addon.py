"""mitmproxy wiring: options, guarded hooks, commands, as mitmproxy's own addons are built.

The decisions live in `decide.py`; `hop.py` applies them to live flows (the path of a
credential from the 3xx to the injected header is read there). Here: `configure` checks every
option and builds the rules, stores and sinks `hop.Hops` uses; each hook guards like a built-in
and hands the flow on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Awaitable
from typing import Any, NoReturn

from mitmproxy import command, ctx, exceptions, http

from . import exposure
from .backends import OperatorView, announce_store, make_hoplog, make_stores
from .chains_page import ChainsPage
from .credentials import Fingerprinter
from .decide import REDIRECTS
from .diagnosis import Chain, diagnose
from .hop import Hops
from .options import check_values, declare, deferred_problem, fingerprint_key, secret_headers_of
from .output import redact_dumper, unredact_dumper, unredacted_warning
from .pending import MemoryPending
from .report import render_text, summary_line
from .rules import RulesError
from .rules_file import RulesRead, announce, read_rules, stamp_of
from .scrub import Redactor, SecretFilter, remembered_for
from .sinks import EventLog, HopLogFile, NotForAddLog, RecentChains, Sinks, is_legacy_handler
from .store import MemoryStore

log = logging.getLogger("credhop")

RELOAD_INTERVAL = 1.0


class _OfHops:
    """An attribute of the flow-level `Hops`, read and set through the addon (configure sets it)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, addon: Any, owner: type | None = None) -> Any:
        return getattr(addon.hops, self.name)

    def __set__(self, addon: Any, value: Any) -> None:
        setattr(addon.hops, self.name, value)


class CredHop:
    rules = _OfHops()
    store = _OfHops()
    pending = _OfHops()
    counters = _OfHops()
    redactor = _OfHops()
    sinks = _OfHops()
    fingerprint = _OfHops()
    observe = _OfHops()
    ttl = _OfHops()
    secret_headers = _OfHops()
    resolver = _OfHops()
    client_id = _OfHops()
    instance = _OfHops()
    metrics = _OfHops()

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.hops = Hops(clock)
        self.recent = RecentChains(self._chain_failed)
        self.filter = SecretFilter(self.redactor)
        self.not_for_add_log = NotForAddLog()
        self.event_log = EventLog(self.redactor)
        self.hoplog: HopLogFile | None = None
        self.sinks = Sinks(self.counters, self.recent, self.event_log)
        self._rules_stamp: tuple[float, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[Any] | None = None
        self._store_options: tuple[Any, ...] | None = None
        self.operator = OperatorView(lambda listener: ChainsPage(
            self.recent.snapshot, lambda: self.recent.version, lambda: self.redactor, lambda: self.instance,
            lambda: self.operator.peers, listener.closing))
        self._running = False

    # -- lifecycle -----------------------------------------------------------------

    def load(self, loader: Any) -> None:
        declare(loader)
        problem = deferred_problem(loader.master.options, self.redactor)
        if problem:
            self._fail(loader.master, problem)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.filter)
            if is_legacy_handler(handler):
                handler.addFilter(self.not_for_add_log)
        redact_dumper(loader.master, lambda: self.redactor)  # flow lines bypass logging

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as e:
            self._fail(ctx.master, str(e), e)

    def _configure(self, updated: set[str]) -> None:
        """Check every changed option before changing anything: a refused value leaves all as it was."""
        opts = ctx.options
        check_values(opts, updated)
        ttl = opts.credhop_ttl if "credhop_ttl" in updated else self.ttl
        observe = opts.credhop_observe if "credhop_observe" in updated else self.observe
        headers = secret_headers_of(opts) if "credhop_secret_headers" in updated else self.secret_headers
        rules = None
        if "credhop_rules" in updated:
            try:
                rules = read_rules(opts.credhop_rules)
            except RulesError as e:
                raise exceptions.OptionsError(f"credhop_rules: {e}") from None
        fingerprint = self.fingerprint
        if "credhop_fingerprint_key" in updated or fingerprint is None:
            fingerprint = Fingerprinter(fingerprint_key(opts.credhop_fingerprint_key, opts.confdir))
        stores = None
        # by value: `credhop proxy` hands over the defaults nobody set once more before it listens
        store_options = (opts.credhop_store, opts.credhop_store_key, opts.credhop_store_timeout,
                         opts.credhop_max_credentials)
        if store_options != self._store_options:
            stores = make_stores(opts, self.clock, self.hops.store_event)
        remembered = remembered_for(opts.credhop_max_credentials)
        redactor = self.redactor
        if headers != self.secret_headers or remembered != redactor.remembered:
            redactor = Redactor(headers, remembered)
        hoplog = make_hoplog(opts.credhop_log, redactor) if "credhop_log" in updated else self.hoplog
        try:
            use_operator = self.operator.prepare(opts, updated)  # last: it may bind a port
        except exceptions.OptionsError:
            if hoplog and hoplog is not self.hoplog:
                hoplog.close()
            raise

        if fingerprint is not self.fingerprint:
            self.hops.injected.clear()
        self.ttl, self.observe, self.secret_headers, self.fingerprint = ttl, observe, headers, fingerprint
        self.client_id = opts.credhop_client_id
        self.hops.plain_mode = opts.credhop_plain_redirects
        self.instance = opts.credhop_instance or f"{socket.gethostname()}:{getattr(opts, 'listen_port', None) or 8080}"
        if stores is not None:
            self.hops.use_stores(*stores)
            self._store_options = store_options
            if self._running:
                self._announce_store()
        if use_operator():
            self.metrics = self.operator.metrics
            if self.metrics:
                self.metrics.store_up_from(lambda: self.hops.store_up)
        if self.metrics:
            self.metrics.bound(opts.credhop_max_credentials)
        # every verdict is counted only with metrics on; else a chain that cannot fail is not diagnosed
        self.recent.on_judged = self._chain_judged if self.metrics else None
        if redactor is not self.redactor:
            redactor.remember(self.redactor.known())
            self.redactor = self.filter.redactor = redactor
            self.event_log = EventLog(redactor)
        if hoplog is not self.hoplog and self.hoplog:
            self.hoplog.close()
        self.hoplog = hoplog
        if hoplog:
            hoplog.redactor = redactor
        self.sinks = Sinks(*(s for s in (self.counters, self.recent, self.event_log, hoplog, self.metrics) if s))
        if rules is not None:
            self._use_rules(rules)

    def running(self) -> None:
        self._running = True
        for line in exposure.warnings(exposure.listeners_of(ctx.options), bool(getattr(ctx.options, "proxyauth", None))):
            log.warning("%s", line)
        warning = unredacted_warning(ctx.options, ctx.master)
        if warning:
            log.warning("credhop: %s", warning)
        if ctx.options.credhop_observe:
            log.warning("credhop: %s", OBSERVE_WARNING)
        if not ctx.options.credhop_log:  # `credhop report` reads the hop log: say there is none
            log.info("credhop: no hop log (credhop_log is empty), so `credhop report` will have nothing to read; "
                     "--set credhop_log=credhop-hops.jsonl writes one")
        try:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_rules())
        except RuntimeError:  # no event loop (unit tests): reload by command only
            self._watcher = None
        self._announce_store()

    def _announce_store(self) -> None:
        """A shared store is looked at once it is in use (after every option is in, so the line names the
        right instance): one line says whether it answers and takes the fleet key."""
        if self._announcing:  # a look at the store replaced meanwhile would report on a closed link
            self._announcing.cancel()
        link = self.hops.link
        if link is None:
            return
        try:
            self._announcing = asyncio.get_running_loop().create_task(
                announce_store(link, self.instance, bool(ctx.options.credhop_fingerprint_key)))
        except RuntimeError:  # no event loop (unit tests)
            self._announcing = None

    def done(self) -> None:
        for task in (self._watcher, self._announcing):
            if task:
                task.cancel()
        self.hops.flush_downloads(everything=True)
        self.recent.judge_due(everything=True)
        log.info("credhop: %s", self.stats_line())
        if self.hoplog:
            self.hoplog.close()
            self.hoplog = None
        self.operator.close()
        self.metrics = None
        self.hops.use_stores(MemoryStore(clock=self.clock), MemoryPending(clock=self.clock), None)
        self._store_options = None
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.filter)
            handler.removeFilter(self.not_for_add_log)
        unredact_dumper(ctx.master)

    def _fail(self, master: Any, message: str, error: Exception | None = None) -> None:
        """A setting credhop cannot use. While starting mitmdump/mitmweb: one line and exit, before the
        proxy listens (mitmproxy would print a traceback, or for a value it cannot parse, nothing at
        all). While running: refuse it, and mitmproxy keeps the old value."""
        if not self._running and master is not None and master.addons.get("errorcheck") is not None:
            _exit_at_start(message)
        raise error or exceptions.OptionsError(message)

    # -- hooks -----------------------------------------------------------------------
    # Guards as in mitmproxy's own addons: flows loaded from a file (not live), replayed requests,
    # and requests another addon already answered or killed get nothing and use nothing up.

    # Each hook returns None when it is done, or a coroutine for mitmproxy to await: with stores in
    # this process, a request costs no coroutine (mitmproxy awaits whatever a hook returns).

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live or flow.is_replay == "request":
            return None
        operator = self.operator
        if flow.request.port == operator.port and operator.refuses(flow.request.host, operator.port):
            flow.response = http.Response.make(403, OPERATOR_REFUSED, {"content-type": "text/plain; charset=utf-8"})
            log.warning("credhop: refused a request through the proxy to the operator listener (from %s)",
                        flow.client_conn.peername[0] if flow.client_conn.peername else "?")
            return None
        return self.hops.requestheaders(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS or flow.error or not flow.live \
                or flow.is_replay == "request":
            return None
        return self.hops.responseheaders(flow)

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not flow.live or flow.response is None:
            self.hops.forget(flow)
            return None
        return self.hops.response(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.hops.error(flow)

    # -- metrics and chains ---------------------------------------------------------------

    def _chain_judged(self, chain: Chain) -> None:
        if self.metrics:
            self.metrics.chain_judged(chain)

    def _refresh_metrics(self) -> None:
        self.hops.refresh_metrics()

    def _chain_failed(self, chain: Chain) -> None:
        self.counters.add("chains_failed")
        log.warning("%s", summary_line(chain))

    # -- commands --------------------------------------------------------------------

    @command.command("credhop.reload")
    def reload(self) -> None:
        """Reload the rules file now; on error keep the current rules."""
        try:
            self._use_rules(read_rules(ctx.options.credhop_rules))
        except RulesError as e:
            self._reload_failed(e)

    def _reload_failed(self, error: RulesError) -> None:
        self.counters.add("rules_reload_failed")
        if self.metrics:
            self.metrics.reload_failed()
        log.error("credhop: rules not reloaded, keeping the previous %d rule(s): %s", len(self.rules.rules), error)

    @command.command("credhop.report")
    def report(self) -> str:
        """Why recent redirect chains failed: each chain as a tree with its findings."""
        self.hops.flush_downloads(everything=True)
        return render_text(diagnose(self.recent.records()))

    @command.command("credhop.stats")
    def stats_line(self) -> str:
        """Counters of every decision credhop made since start."""
        return self.counters.line(len(self.store))  # type: ignore[arg-type]

    # -- the rules file ----------------------------------------------------------------

    def _use_rules(self, read: RulesRead) -> None:
        self.rules, self._rules_stamp = read.rules, read.stamp
        if announce(read):
            self.counters.add("rules_loaded")

    async def _watch_rules(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            self._refresh_metrics()
            self.hops.flush_downloads()
            self.recent.judge_due()
            path = ctx.options.credhop_rules
            stamp = stamp_of(path) if path else None
            if path and stamp != self._rules_stamp:
                try:
                    # in a thread: 10,000 rules take a second or more to read, and the event loop
                    # carries every flow meanwhile
                    read = await asyncio.to_thread(read_rules, path)
                    if path == ctx.options.credhop_rules:  # not replaced by `--set` while it was read
                        self._use_rules(read)  # with the stamp read before the file: a later edit is seen
                    continue
                except RulesError as e:
                    self._reload_failed(e)
                except Exception:  # never let the watcher die: reloads would stop silently
                    log.error("credhop: unexpected error reloading %s; keeping the previous rules", path)
                self._rules_stamp = stamp  # a broken file is reported once per edit


OBSERVE_WARNING = ("observe mode (credhop_observe=true): credhop changes nothing, so a client that follows a "
                   "Location's userinfo sends or drops the credential itself, and its own errors may show it "
                   "(uv 0.5.25 through an http:// proxy puts it into its request line, gets 400 and prints it); "
                   "set credhop_observe=false to inject")
OPERATOR_REFUSED = b"credhop: the operator listener (metrics, live chains) is not served through the proxy\n"


def _exit_at_start(message: str) -> NoReturn:
    print(f"credhop: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)

