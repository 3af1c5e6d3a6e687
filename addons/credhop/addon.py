"""mitmproxy wiring: options, guarded hooks, commands. The decisions live in `decide.py`.

Path of a credential: `responseheaders` sees a 3xx, `decide.decide_redirect`
reads its Location and proposes a `Grant`, the `CredentialStore` takes it, the
Location is stripped; `requestheaders` asks `decide.decide_follow_up` about the
follow-up's real destination and adds the header. Every step becomes a record
for the sinks (hop log, event log, recent chains, counters).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, NoReturn, TypeVar

from mitmproxy import command, ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from . import exposure
from .backends import make_metrics, make_stores
from .bodies import Replacer, Scrubber
from .credentials import Fingerprinter, injected_forms
from .decide import (
    REDIRECTS,
    FollowUp,
    Redirect,
    decide_follow_up,
    decide_redirect,
    next_position,
    redirect_record,
)
from .destination import Resolver, request_origin, verified_origin
from .diagnosis import Chain, diagnose
from .flows import (
    add_header,
    address_of,
    apply_redirect,
    client_of,
    finish_body,
    header_names,
    is_transparent,
    is_upstream,
    mark,
    origin_of,
    remember_destination,
    url_of,
)
from .leaks import Injected, SentSecret, as_injected, secrets_sent
from .options import check_choices, declare, deferred_problem, fingerprint_key
from .output import redact_dumper, unredact_dumper, unredacted_warning
from .pending import ChainPosition, MemoryPending, PendingFollowUps, new_chain
from .records import (
    Action,
    ErrorRecord,
    InjectRecord,
    LeakRecord,
    Record,
    ResponseRecord,
    Why,
)
from .report import render_text, summary_line
from .rules import MAX_TTL, RulesError, RuleSet, load_rules
from .scrub import Redactor, SecretFilter, secret_header_names
from .sinks import Counters, EventLog, HopLogFile, NotForAddLog, RecentChains, Sinks, is_legacy_handler
from .store import CredentialStore, Grant, MemoryStore, Refusal, StoreUnavailable
from .urls import Origin, normalize_url, redact_url

log = logging.getLogger("credhop")

META = "credhop"  # flow.metadata key: {"chain", "hop"}, plain values so saved flows stay writable
RELOAD_INTERVAL = 1.0
MAX_LIVE_FLOWS = 10_000
MAX_INJECTED = 1_024  # held credentials whose injected form is remembered
STORE_DEADLINE = 0.5  # seconds: mitmproxy runs no timeout while a hook awaits
INTERNAL_ERROR = b"credhop: this request was stopped because credhop failed to decide about it; see the proxy log\n"
T = TypeVar("T")


@dataclass(slots=True)
class FlowState:
    """What credhop knows about one live flow; dropped when the flow ends."""

    position: ChainPosition | None = None
    reuse: bool = False  # not a follow-up: a later request that got a held credential (a download)
    sent: list[SentSecret] | None = None  # secrets the request carries
    stripped: frozenset[str] = frozenset()  # fingerprints of leaked secrets credhop removed
    injected: Injected | None = None  # the header credhop added
    body: Scrubber | Replacer | None = None  # rewrites the 3xx body (see bodies.py)
    redirect_seen: bool = False  # the 3xx went through responseheaders


class CredHop:
    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.rules = RuleSet(())
        self.store: CredentialStore = MemoryStore(clock=clock)
        self.pending: PendingFollowUps = MemoryPending(clock=clock)
        self.counters = Counters()
        self.recent = RecentChains(self._chain_failed)
        self.redactor = Redactor()
        self.filter = SecretFilter(self.redactor)
        self.not_for_add_log = NotForAddLog()
        self.event_log = EventLog(self.redactor)
        self.hoplog: HopLogFile | None = None
        self.sinks = Sinks(self.counters, self.recent, self.event_log)
        self.fingerprint: Fingerprinter | None = None
        self.observe = False
        self.ttl = 600
        self.secret_headers = secret_header_names()
        self.resolver = Resolver()  # transparent mode: names the client gave, checked on the proxy
        self._flows: OrderedDict[str, FlowState] = OrderedDict()
        # how each held credential reads once injected, so a download does not fingerprint it again
        self._injected: dict[tuple[str, str], Injected] = {}
        self._rules_stamp: tuple[float, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._running = False
        self._store_failing = False
        self.client_id = "address"  # credhop_client_id
        self.instance: str | None = None  # credhop_instance, in every record
        self.metrics: Any = None  # metrics.Metrics while credhop_metrics is set
        self._link: Any = None  # redis_store.RedisLink while credhop_store is a Redis URL

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
            self._injected.clear()
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
        client = client_of(flow, self.client_id)
        awaited = self.pending.awaits(client)
        if not awaited and not self.store.may_hold(client):
            return  # nothing pending, nothing held: the common case costs two lookups
        try:
            await self._follow_up(flow, client, awaited)
        except Exception as e:
            self._internal_error(flow, "requestheaders", e)

    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS or flow.error or not flow.live \
                or flow.is_replay == "request":
            return
        try:
            await self._redirect(flow, streamed=True)
        except Exception as e:
            self._internal_error(flow, "responseheaders", e)

    async def response(self, flow: http.HTTPFlow) -> None:
        if not flow.live or flow.response is None:
            self._flows.pop(flow.id, None)
            return
        state = self._flows.get(flow.id)
        if flow.response.status_code in REDIRECTS and flow.is_replay != "request" \
                and not (state and state.redirect_seen):
            # a 3xx another addon made (server replay, map_local) never passes responseheaders
            try:
                await self._redirect(flow, streamed=False)
            except Exception as e:
                self._internal_error(flow, "response", e)
        state = self._flows.pop(flow.id, None)
        if state is None:
            return
        try:
            await self._close_hop(flow, state)
        except Exception as e:  # only bookkeeping failed: the answer itself is fine to deliver
            self._internal_error(flow, "response", e, stop=False)

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if state and state.position and flow.error and flow.live:
            self._emit(ErrorRecord(**self._base(flow, state.position), reason=flow.error.msg))

    # -- applying decisions ------------------------------------------------------------

    async def _follow_up(self, flow: http.HTTPFlow, client: str, awaited: bool) -> None:
        request = flow.request
        origin = await self._destination(flow)
        position = watch = None
        if awaited:
            position = await self._ask(self.pending.follow(client, normalize_url(url_of(flow))), None, "follow")
            if position is None:
                watch = await self._ask(self.pending.watching(client, origin), None, "watching")
        held = await self._ask(self.store.get(client, origin), None, "get") if self.store.may_hold(client) else None
        if position is None and held is None and watch is None:
            return
        state = self._state(flow)
        if position:
            self._place(flow, position)
        # what the client sent is read only where it could be a leak: a download needs the names alone
        sent = self._sent(flow, state) if position or watch else []
        decision = decide_follow_up(FollowUp(origin, sent, header_names(request), position, held, watch))
        if decision.leaks:
            assert decision.leak_at is not None
            if position is None:  # not the follow-up: another request to the origin the client was sent to
                position = self._place(flow, decision.leak_at)
                state.reuse = True
            action = Action.LOG if self.observe else decision.leak_action
            for leak in decision.leaks:
                if action is Action.STRIP:
                    request.headers.pop(leak.header, None)  # every field of that name; a repeat finds none
                    state.stripped |= {leak.fingerprint}
                self._emit(LeakRecord(**self._base(flow, position), header=leak.header, fingerprint=leak.fingerprint,
                                      kind=leak.kind, came_from=str(position.came_from), target=str(origin),
                                      action=action))
                mark(flow, f"credhop: client re-sent {leak.header} to {origin} ({leak.kind}); {action}")
            state.sent = None  # recomputed without what was stripped
        grant = decision.inject or decision.skipped
        if grant is None:
            return
        if position is None:
            position = self._place(flow, ChainPosition(grant.chain, grant.hop))
            state.reuse = True
        fields = dict(rule=grant.rule, header=grant.header, user=grant.user, fingerprint=grant.fingerprint)
        if decision.skipped:
            self._emit(InjectRecord(**self._base(flow, position), **fields, action=Action.SKIP, why=decision.why,
                                    reason=decision.reason))
            return
        self._inject(flow, state, grant)
        self._emit(InjectRecord(**self._base(flow, position), **fields, action=Action.INJECT))
        mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    async def _destination(self, flow: http.HTTPFlow) -> Origin:
        """The one place a request's destination origin is decided (see destination.py): mitmproxy's
        request scheme, host and port, as always; in transparent mode `request.host` is the original
        destination address, and a name the client gave (Host or `:authority`, TLS SNI) replaces it
        only when the proxy resolves that name to that address."""
        request, client = flow.request, flow.client_conn
        if not is_transparent(flow):  # verified_origin's answer there, without a coroutine or the names
            return request_origin(request.scheme, request.host, request.port)
        verdict = await verified_origin(True, request.scheme, request.host, request.port,
                                        (request.host_header, client.sni), self.resolver, original=client.sockname)
        if verdict.how != "request":
            remember_destination(flow, verdict.origin.host, verdict.how)
        return verdict.origin

    def _inject(self, flow: http.HTTPFlow, state: FlowState, grant: Grant) -> None:
        assert self.fingerprint is not None
        add_header(flow.request, grant)
        key = (grant.header, grant.value)
        injected = self._injected.get(key)
        if injected is None:
            if len(self._injected) >= MAX_INJECTED:
                self._injected.clear()
            injected = self._injected[key] = as_injected(grant.header, grant.value, self.fingerprint)
            # a grant another instance took in was never read here: mask it as injected, once per grant
            self.redactor.remember(injected_forms(grant.value))
        state.injected = injected
        state.sent = None

    async def _redirect(self, flow: http.HTTPFlow, streamed: bool) -> None:
        assert self.fingerprint is not None and flow.response is not None
        response = flow.response
        client = client_of(flow, self.client_id)
        state = self._state(flow)
        state.redirect_seen = True
        position = state.position or self._place(flow, new_chain())
        issuer = await self._destination(flow)  # first: url_of reads the name it verified
        redirect = Redirect(client, url_of(flow), issuer, response.status_code,
                            tuple(response.headers.get_all("location")), address=address_of(flow))
        decision = decide_redirect(redirect, self.rules, self.fingerprint, self.ttl, self.clock(),
                                   ChainPosition(position.chain, position.hop + 1))
        if decision.grant and not self.observe:
            refusal = await self._ask(self.store.grant(decision.grant),
                                      Refusal(Why.STORE_UNAVAILABLE, "the credential store did not answer"), "grant")
            if refusal:
                decision = decision.refused(refusal)
        if decision.location and decision.location.credential:
            self.redactor.remember(decision.location.credential.secret_forms())
        sent = self._sent(flow, state)
        self._emit(redirect_record(self._base(flow, position), redirect, decision, sent, self.observe))
        if decision.fingerprint:
            would = " (observe)" if self.observe else ""
            mark(flow, f"credhop{would}: {decision.action} credential in Location -> "
                        f"{decision.location.origin if decision.location else '?'} ({decision.fingerprint})")
        if not self.observe:
            state.body = apply_redirect(flow, decision, streamed, self.redactor)
        if decision.location:
            await self._ask(self.pending.expect(client, decision.location.normalized, decision.location.origin,
                                                next_position(redirect, position, decision, sent, state.stripped)),
                            None, "expect")

    async def _close_hop(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """The final answer to a follow-up, so a report can tell what the client got."""
        response = flow.response
        assert response is not None
        if state.body is not None and finish_body(response, state.body):
            self.counters.add("body_scrubbed")
        position = state.position
        if not position or position.hop == 0 or response.status_code in REDIRECTS:
            return
        self._emit(ResponseRecord(**self._base(flow, position, reuse=state.reuse), status=response.status_code,
                                  sent=[s.as_record() for s in self._sent(flow, state)] or None))
        if response.status_code == 401 and not state.reuse and not position.retry:
            # clients such as pip ask again, with credentials: that request continues this hop
            await self._ask(self.pending.expect(client_of(flow, self.client_id), normalize_url(url_of(flow)),
                                                origin_of(flow), replace(position, retry=True)), None, "expect")

    async def _ask(self, call: Awaitable[T], fallback: T, op: str = "other") -> T:
        """A store call with its own deadline: a slow or broken store never stalls the flow, and
        its answer is then `fallback` (which never injects). Stores that declare themselves
        `in_process` (their calls never wait on I/O) are awaited without one, when both are; a Redis
        store bounds its own calls (credhop_store_timeout) and answers locally, so this deadline is
        its last resort."""
        start = time.monotonic()
        try:
            if getattr(self.store, "in_process", False) and getattr(self.pending, "in_process", False):
                result = await call
            else:
                deadline = max(STORE_DEADLINE, 3 * self._link.timeout) if self._link else STORE_DEADLINE
                result = await asyncio.wait_for(call, deadline)
        except (asyncio.TimeoutError, StoreUnavailable, OSError) as e:
            self.counters.add("store_errors")
            if self.metrics:
                self.metrics.store_call(op, time.monotonic() - start, "failed")
                self.metrics.store_error(op, "timeout" if isinstance(e, asyncio.TimeoutError) else "error")
            if not self._store_failing:  # once per outage
                log.warning("credhop: credential store unavailable (%s); not injecting until it answers",
                            type(e).__name__)
            self._store_failing = True
            return fallback
        if self.metrics:
            self.metrics.store_call(op, time.monotonic() - start, "ok")
        self._store_failing = False
        return result

    # -- fleet: shared store, metrics --------------------------------------------------

    def _use_stores(self, store: Any, pending: Any, link: Any) -> None:
        old = self._link
        self.store, self.pending, self._link = store, pending, link
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
                                 not (self._link and self._link.down) and not self._store_failing)

    def _internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception, stop: bool = True) -> None:
        """Fail closed: a request credhop could not judge might carry a leak or need a strip, and a 3xx
        it could not judge may carry a credential, so neither goes on; the client gets a 502 naming
        credhop. The message names no value."""
        self.counters.add("internal_errors")
        # file and line only: an exception's text or locals may hold a secret
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__))
        log.error("credhop: internal error in %s for flow %s: %s at %s", hook, flow.id, type(error).__name__, where)
        self._flows.pop(flow.id, None)
        if stop:
            flow.response = http.Response.make(502, INTERNAL_ERROR, {"content-type": "text/plain; charset=utf-8"})

    # -- records ---------------------------------------------------------------------

    def _base(self, flow: http.HTTPFlow, position: ChainPosition, reuse: bool = False) -> dict[str, Any]:
        return dict(ts=round(self.clock(), 6), client=client_of(flow, self.client_id), chain=position.chain, hop=position.hop,
                    flow=flow.id, method=flow.request.method, url=redact_url(url_of(flow)),
                    retry=position.retry, reuse=reuse, instance=self.instance)

    def _emit(self, record: Record) -> None:
        self.sinks.emit(record)

    def _chain_failed(self, chain: Chain) -> None:
        self.counters.add("chains_failed")
        log.warning("%s", summary_line(chain))

    # -- per-flow state ----------------------------------------------------------------

    def _state(self, flow: http.HTTPFlow) -> FlowState:
        state = self._flows.get(flow.id)
        if state is None:
            state = self._flows[flow.id] = FlowState()
            while len(self._flows) > MAX_LIVE_FLOWS:  # flows that never ended
                self._flows.popitem(last=False)
        return state

    def _place(self, flow: http.HTTPFlow, position: ChainPosition) -> ChainPosition:
        self._state(flow).position = position
        flow.metadata[META] = {"chain": position.chain, "hop": position.hop}
        return position

    def _sent(self, flow: http.HTTPFlow, state: FlowState) -> list[SentSecret]:
        if state.sent is None:
            assert self.fingerprint is not None
            names = self.secret_headers
            if is_upstream(flow) and flow.request.scheme == "http":
                # the parent proxy's credential (upstream_auth, or the client's own): the parent takes
                # it off, no origin server gets it, and it goes with every request: never a leak.
                # (Inside an https tunnel it would reach the server: watched there as ever.)
                names = names - {"proxy-authorization"}
            state.sent = secrets_sent(flow.request.headers.items(multi=True), names, self.fingerprint, state.injected)
        return state.sent

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
