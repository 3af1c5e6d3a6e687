"""mitmproxy wiring: options, guarded hooks, commands, as mitmproxy's own addons are built.

The decisions live in `decide.py`; `hop.py` applies them to live flows (the path of a
credential from the 3xx to the injected header is read there). Here: `configure` checks every
option and builds the rules, stores and sinks `hop.Hops` uses; each hook guards like a built-in
and hands the flow on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from typing import Any, NoReturn

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from . import exposure
from .backends import make_metrics, make_stores
from .credentials import Fingerprinter
from .decide import REDIRECTS
from .diagnosis import Chain, diagnose
from .hop import Hops
from .options import check_choices, declare, deferred_problem, fingerprint_key
from .output import redact_dumper, unredact_dumper, unredacted_warning
from .pending import MemoryPending
from .report import render_text, summary_line
from .rules import MAX_TTL, RulesError, RuleSet, load_rules
from .scrub import Redactor, SecretFilter, secret_header_names
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
        check_choices(opts, updated)
        ttl, observe, headers = self.ttl, self.observe, self.secret_headers
        if "credhop_ttl" in updated:
            if not 0 < opts.credhop_ttl <= MAX_TTL:
                raise exceptions.OptionsError(f"credhop_ttl must be 1..{MAX_TTL} seconds, not {opts.credhop_ttl}")
            ttl = opts.credhop_ttl
        if "credhop_max_credentials" in updated and opts.credhop_max_credentials < 1:
            raise exceptions.OptionsError(
                f"credhop_max_credentials must be at least 1, not {opts.credhop_max_credentials}")
        if "credhop_observe" in updated:
            observe = opts.credhop_observe
        if "credhop_secret_headers" in updated:
            try:
                headers = secret_header_names(opts.credhop_secret_headers.split(","))
            except ValueError as e:
                raise exceptions.OptionsError(f"credhop_secret_headers: {e}") from None
        rules = None
        if "credhop_rules" in updated:
            try:
                rules = self._read_rules(opts.credhop_rules)
            except RulesError as e:
                raise exceptions.OptionsError(f"credhop_rules: {e}") from None
        fingerprint = self.fingerprint
        if "credhop_fingerprint_key" in updated or fingerprint is None:
            fingerprint = Fingerprinter(fingerprint_key(opts.credhop_fingerprint_key, opts.confdir))
        if "credhop_store_timeout" in updated and not 0 < opts.credhop_store_timeout <= 10_000:
            raise exceptions.OptionsError(
                f"credhop_store_timeout must be 1..10000 milliseconds, not {opts.credhop_store_timeout}")
        if opts.credhop_client_id == "proxyauth" and not getattr(opts, "proxyauth", None):
            raise exceptions.OptionsError("credhop_client_id=proxyauth needs mitmproxy's --proxyauth: "
                                          "without it no request names a user")
        stores = None
        if updated & {"credhop_store", "credhop_store_key", "credhop_store_timeout", "credhop_max_credentials"}:
            stores = make_stores(opts, self.clock, self._store_event)
        redactor = Redactor(headers) if headers != self.secret_headers else self.redactor
        hoplog = self._open_hoplog(opts.credhop_log, redactor) if "credhop_log" in updated else self.hoplog
        metrics = self.metrics
        if "credhop_metrics" in updated:  # last: it starts a server, and nothing after it can fail
            try:
                metrics = make_metrics(opts.credhop_metrics)
            except exceptions.OptionsError:
                if hoplog and hoplog is not self.hoplog:
                    hoplog.close()
                raise

        if fingerprint is not self.fingerprint:
            self.hops.injected.clear()
        self.ttl, self.observe, self.secret_headers, self.fingerprint = ttl, observe, headers, fingerprint
        self.client_id = opts.credhop_client_id
        self.instance = opts.credhop_instance or f"{socket.gethostname()}:{getattr(opts, 'listen_port', None) or 8080}"
        if stores is not None:
            self._use_stores(*stores)
        if metrics is not self.metrics:
            if self.metrics:
                self.metrics.close()
            self.metrics = metrics
            # every verdict is counted only with metrics on; else a chain that cannot fail is not diagnosed
            self.recent.on_judged = self._chain_judged if metrics else None
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
            self._use_rules(*rules)

    def running(self) -> None:
        self._running = True
        for line in exposure.warnings(_listeners(), bool(getattr(ctx.options, "proxyauth", None))):
            log.warning("%s", line)
        warning = unredacted_warning(ctx.options, ctx.master)
        if warning:
            log.warning("credhop: %s", warning)
        try:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_rules())
        except RuntimeError:  # no event loop (unit tests): reload by command only
            self._watcher = None

    def done(self) -> None:
        if self._watcher:
            self._watcher.cancel()
        log.info("credhop: %s", self.stats_line())
        if self.hoplog:
            self.hoplog.close()
            self.hoplog = None
        if self.metrics:
            self.metrics.close()
            self.metrics = None
        self._use_stores(MemoryStore(clock=self.clock), MemoryPending(clock=self.clock), None)
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

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or flow.is_replay == "request":
            return
        client = self.hops.needs_follow_up(flow)
        if client is None:
            return
        try:
            await self.hops.follow_up(flow, client)
        except Exception as e:
            self.hops.internal_error(flow, "requestheaders", e)

    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS or flow.error or not flow.live \
                or flow.is_replay == "request" or self.hops.is_bare_redirect(flow):
            return
        try:
            await self.hops.redirect(flow, streamed=True)
        except Exception as e:
            self.hops.internal_error(flow, "responseheaders", e)

    async def response(self, flow: http.HTTPFlow) -> None:
        hops = self.hops
        if not flow.live or flow.response is None:
            hops.flows.pop(flow.id, None)
            return
        state = hops.flows.get(flow.id)
        if flow.response.status_code in REDIRECTS and flow.is_replay != "request" \
                and not (state and state.redirect_seen):
            if hops.is_bare_redirect(flow):
                hops.count_bare()
            else:  # a 3xx another addon made (server replay, map_local) never passes responseheaders
                try:
                    await hops.redirect(flow, streamed=False)
                except Exception as e:
                    hops.internal_error(flow, "response", e)
        state = hops.flows.pop(flow.id, None)
        if state is None:
            return
        try:
            await hops.close(flow, state)
        except Exception as e:  # only bookkeeping failed: the answer itself is fine to deliver
            hops.internal_error(flow, "response", e, stop=False)

    def error(self, flow: http.HTTPFlow) -> None:
        self.hops.error(flow)

    # -- fleet: shared store, metrics --------------------------------------------------

    def _use_stores(self, store: Any, pending: Any, link: Any) -> None:
        old = self.hops.link
        self.store, self.pending, self.hops.link = store, pending, link
        if link:
            log.info("credhop: grants and follow-ups shared through %s (sealed, %d key(s)), as instance %s",
                     link.where, link.sealer.generations, self.instance)
            if not ctx.options.credhop_fingerprint_key:
                log.warning("credhop: credhop_fingerprint_key is not set: each instance makes its own key, so "
                            "fingerprints (swap and leak checks across instances) differ; give the fleet one file")
        if old is not None:
            try:
                asyncio.get_running_loop().create_task(old.close())
            except RuntimeError:
                pass

    def _store_event(self, op: str, seconds: float, cause: str | None) -> None:
        """What the shared store's link saw: failures are counted (and logged by the link once per outage)."""
        if cause is None:
            return
        self.counters.add("store_errors")
        if self.metrics:
            self.metrics.store_error(op, cause)

    def _chain_judged(self, chain: Chain) -> None:
        if self.metrics:
            self.metrics.chain_judged(chain)

    def _refresh_metrics(self) -> None:
        if self.metrics:
            self.metrics.refresh(len(self.store), len(self.pending),  # type: ignore[arg-type]
                                 not (self.hops.link and self.hops.link.down) and not self.hops.store_failing)

    def _chain_failed(self, chain: Chain) -> None:
        self.counters.add("chains_failed")
        log.warning("%s", summary_line(chain))

    # -- commands --------------------------------------------------------------------

    @command.command("credhop.reload")
    def reload(self) -> None:
        """Reload the rules file now; on error keep the current rules."""
        try:
            self._use_rules(*self._read_rules(ctx.options.credhop_rules))
        except RulesError as e:
            self._reload_failed(e)

    def _reload_failed(self, error: RulesError) -> None:
        self.counters.add("rules_reload_failed")
        log.error("credhop: rules not reloaded, keeping the previous %d rule(s): %s", len(self.rules.rules), error)

    @command.command("credhop.report")
    def report(self) -> str:
        """Why recent redirect chains failed: each chain as a tree with its findings."""
        return render_text(diagnose(self.recent.records()))

    @command.command("credhop.stats")
    def stats_line(self) -> str:
        """Counters of every decision credhop made since start."""
        return self.counters.line(len(self.store))  # type: ignore[arg-type]

    # -- helpers ---------------------------------------------------------------------

    def _read_rules(self, path: str) -> tuple[RuleSet, tuple[float, int] | None, str]:
        if not path:
            return RuleSet(()), None, path
        stamp = _stamp(path)
        return load_rules(path), stamp, path

    def _use_rules(self, rules: RuleSet, stamp: tuple[float, int] | None, path: str) -> None:
        self.rules, self._rules_stamp = rules, stamp
        if not path:
            log.warning("credhop: no rules file (credhop_rules is empty): credentials pass untouched")
            return
        self.counters.add("rules_loaded")
        log.info("credhop: loaded %d rule(s) from %s", len(rules.rules), path)
        for warning in rules.warnings:
            log.warning("credhop: %s", warning)

    async def _watch_rules(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            self._refresh_metrics()
            path = ctx.options.credhop_rules
            stamp = _stamp(path) if path else None
            if path and stamp != self._rules_stamp:
                try:
                    # in a thread: 10,000 rules take a second or more to read, and the event loop
                    # carries every flow meanwhile
                    read = await asyncio.to_thread(self._read_rules, path)
                    if path == ctx.options.credhop_rules:  # not replaced by `--set` while it was read
                        self._use_rules(*read)  # with the stamp read before the file: a later edit is seen
                    continue
                except RulesError as e:
                    self._reload_failed(e)
                except Exception:  # never let the watcher die: reloads would stop silently
                    log.error("credhop: unexpected error reloading %s; keeping the previous rules", path)
                self._rules_stamp = stamp  # a broken file is reported once per edit

    @staticmethod
    def _open_hoplog(path: str, redactor: Redactor) -> HopLogFile | None:
        if not path:
            return None
        try:
            return HopLogFile(path, redactor)
        except OSError as e:
            raise exceptions.OptionsError(f"credhop_log: cannot open {path}: {e.strerror}") from None


def _listeners() -> list[exposure.Listener]:
    """Where the proxy listens, per `--mode` (and `--listen-host`/`--listen-port` as defaults)."""
    listeners = []
    for spec in getattr(ctx.options, "mode", ()):
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy reports it
        listeners.append(exposure.Listener(mode.type_name, mode.listen_host(ctx.options.listen_host),
                                           mode.listen_port(ctx.options.listen_port)))
    return listeners


def _exit_at_start(message: str) -> NoReturn:
    print(f"credhop: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size
