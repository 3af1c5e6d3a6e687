"""mitmproxy wiring: options, guarded hooks, commands. The decisions live in `decide.py`.

Path of a credential: `responseheaders` sees a 3xx, `decide.decide_redirect`
reads its Location and proposes a `Grant`, the `CredentialStore` takes it, the
Location is stripped; `requestheaders` asks `decide.decide_follow_up` about the
follow-up's real destination and adds the header. Every step becomes a record
for the sinks (hop log, event log, recent chains, counters).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import secrets
import socket
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, NoReturn, TypeVar

from mitmproxy import command, ctx, exceptions, http

from .bodies import Decoded, Replacer, Scrubber, decoder, readable, userinfo_replacements
from .credentials import Fingerprinter, credential_from_header
from .decide import REDIRECTS, FollowUp, Redirect, RedirectDecision, decide_follow_up, decide_redirect, next_position
from .diagnosis import Chain, diagnose
from .leaks import SentSecret, secrets_sent
from .metrics import parse_listen
from .pending import ChainPosition, MemoryPending, PendingFollowUps, new_chain
from .records import Action, ErrorRecord, InjectRecord, LeakRecord, Record, RedirectRecord, ResponseRecord, Why
from .report import render_text, summary_line
from .rules import MAX_TTL, RuleSet, RulesError, load_rules
from .scrub import DEFAULT_SECRET_HEADERS, Redactor, SecretFilter, printable, secret_header_names
from .sinks import Counters, EventLog, HopLogFile, RecentChains, Sinks
from .store import CredentialStore, Grant, MemoryStore, Refusal, StoreUnavailable
from .urls import Origin, normalize_url, redact_loose, redact_url, request_url

log = logging.getLogger("credhop")

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")  # package data: shipped in the wheel
META = "credhop"  # flow.metadata key: {"chain", "hop"}, plain values so saved flows stay writable
MARKER = ":key:"
RELOAD_INTERVAL = 1.0
MAX_LIVE_FLOWS = 10_000
STORE_DEADLINE = 0.5  # seconds: mitmproxy runs no timeout while a hook awaits
CLIENT_IDS = ("address", "proxyauth")
INTERNAL_ERROR = b"credhop: this request was stopped because credhop failed to decide about it; see the proxy log\n"
T = TypeVar("T")


@dataclass(slots=True)
class FlowState:
    """What credhop knows about one live flow; dropped when the flow ends."""

    position: ChainPosition | None = None
    reuse: bool = False  # not a follow-up: a later request that got a held credential (a download)
    sent: list[SentSecret] | None = None  # secrets the request carries
    stripped: frozenset[str] = frozenset()  # fingerprints of leaked secrets credhop removed
    injected: tuple[str, str] | None = None  # (header, fingerprint of its value) credhop added
    body: Scrubber | Replacer | None = None  # rewrites the 3xx body (see bodies.py)
    redirect_seen: bool = False  # the 3xx went through responseheaders


class CredHop:
    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.rules = RuleSet(())
        self.store: CredentialStore = MemoryStore(clock=clock)
        self.pending: PendingFollowUps = MemoryPending(clock=clock)
        self.counters = Counters()
        self.recent = RecentChains(self._chain_failed, on_judged=self._chain_judged)
        self.redactor = Redactor()
        self.filter = SecretFilter(self.redactor)
        self.event_log = EventLog(self.redactor)
        self.hoplog: HopLogFile | None = None
        self.sinks = Sinks(self.counters, self.recent, self.event_log)
        self.fingerprint: Fingerprinter | None = None
        self.observe = False
        self.ttl = 600
        self.secret_headers = secret_header_names()
        self._flows: OrderedDict[str, FlowState] = OrderedDict()
        self._rules_stamp: tuple[float, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._running = False
        self._store_failing = False
        self.client_id = "address"  # credhop_client_id
        self.instance: str | None = None  # credhop_instance, in every record
        self.metrics: Any = None  # metrics.Metrics while credhop_metrics is set
        self._link: Any = None  # redis_store.RedisLink while credhop_store is a Redis URL
        self._deadline = STORE_DEADLINE

    # -- lifecycle -----------------------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option(
            "credhop_rules", str, str(DEFAULT_RULES) if DEFAULT_RULES.exists() else "",
            "Path of the credhop rules file (YAML). Edits are picked up while running.",
        )
        loader.add_option(
            "credhop_log", str, "",
            "Append one JSON object per credential hop to this file (created 0600). Empty: no file.",
        )
        loader.add_option(
            "credhop_observe", bool, False,
            "Observe only: decide and log what the rules would do, change no request or response.",
        )
        loader.add_option(
            "credhop_ttl", int, 600,
            f"Seconds (1..{MAX_TTL}) an injected credential stays valid for follow-ups, unless its rule sets ttl.",
        )
        loader.add_option(
            "credhop_max_credentials", int, 10_000,
            "Most credentials held at once; when full, the client holding the most loses its least recently used.",
        )
        loader.add_option(
            "credhop_secret_headers", str, ",".join(DEFAULT_SECRET_HEADERS),
            "Comma-separated request headers that carry secrets, besides Authorization, "
            "Proxy-Authorization and Cookie: watched for leaks across redirects and scrubbed from logs.",
        )
        loader.add_option(
            "credhop_fingerprint_key", str, "",
            "File holding the HMAC key for credential fingerprints. Empty: "
            "credhop-fingerprint.key in mitmproxy's confdir, created on first use. "
            "Share it between proxies to get comparable fingerprints.",
        )
        loader.add_option(
            "credhop_store", str, "memory",
            "Where grants and pending follow-ups live: 'memory' (this process) or a Redis URL shared by a "
            "fleet of proxies (redis://, rediss://, unix://, redis+sentinel://host:port,…/service).",
        )
        loader.add_option(
            "credhop_store_key", str, "",
            "With a Redis store: file of 64-hex-digit keys (openssl rand -hex 32), one per line, shared by the "
            "fleet. The first seals what Redis holds; the others are still accepted for reading (rotation).",
        )
        loader.add_option(
            "credhop_store_timeout", int, 200,
            "Milliseconds (1..10000) a Redis store call may take; a slower or failed call is answered "
            "locally and never retried.",
        )
        loader.add_option(
            "credhop_client_id", str, "address",
            "Whose grant a request may use: 'address' (the client's IP) or 'proxyauth' (the user "
            "--proxyauth authenticated; use it behind a TCP load balancer).",
            choices=list(CLIENT_IDS),
        )
        loader.add_option(
            "credhop_instance", str, "",
            "This proxy's name in hop-log records and reports. Empty: HOST:PORT.",
        )
        loader.add_option(
            "credhop_metrics", str, "",
            "Serve Prometheus metrics at http://HOST:PORT/metrics. Empty: off.",
        )
        self._check_deferred(loader.master)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self.filter)

    def _check_deferred(self, master: Any) -> None:
        """`--set credhop_…` values mitmproxy holds until a script declares the option: a name or a
        value it cannot use would otherwise make the script fail to load without a word."""
        options = master.options
        deferred = getattr(options, "deferred", {})
        known = sorted(o for o in options.keys() if o.startswith("credhop_"))
        for name in [n for n in deferred if n.startswith("credhop")]:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                self._fail(master, f"unknown option {name!r}"
                           f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; credhop options: {', '.join(known)}")
            raw = deferred[name]
            values = getattr(raw, "val", None)
            if values is None or not hasattr(options, "_parse_setval"):
                continue  # a value set programmatically, already typed
            try:
                options._parse_setval(options._options[name], values)
            except exceptions.OptionsError as e:
                shown = self.redactor(" ".join(values))
                why = str(e).removeprefix(f"Failed to parse option {name}: ")
                self._fail(master, f"{name}={shown!r}: {why}")

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as e:
            self._fail(ctx.master, str(e), e)

    def _configure(self, updated: set[str]) -> None:
        """Check every changed option before changing anything: a refused value leaves all as it was."""
        opts = ctx.options
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
            fingerprint = Fingerprinter(self._fingerprint_key(opts.credhop_fingerprint_key))
        if "credhop_store_timeout" in updated and not 0 < opts.credhop_store_timeout <= 10_000:
            raise exceptions.OptionsError(
                f"credhop_store_timeout must be 1..10000 milliseconds, not {opts.credhop_store_timeout}")
        if opts.credhop_client_id == "proxyauth" and not getattr(opts, "proxyauth", None):
            raise exceptions.OptionsError("credhop_client_id=proxyauth needs mitmproxy's --proxyauth: "
                                          "without it no request names a user")
        stores = None
        if updated & {"credhop_store", "credhop_store_key", "credhop_store_timeout", "credhop_max_credentials"}:
            stores = self._make_stores(opts)
        redactor = Redactor(headers) if headers != self.secret_headers else self.redactor
        hoplog = self._open_hoplog(opts.credhop_log, redactor) if "credhop_log" in updated else self.hoplog
        metrics = self.metrics
        if "credhop_metrics" in updated:  # last: it starts a server, and nothing after it can fail
            try:
                metrics = self._make_metrics(opts.credhop_metrics)
            except exceptions.OptionsError:
                if hoplog and hoplog is not self.hoplog:
                    hoplog.close()
                raise

        self.ttl, self.observe, self.secret_headers, self.fingerprint = ttl, observe, headers, fingerprint
        self.client_id = opts.credhop_client_id
        self.instance = opts.credhop_instance or f"{socket.gethostname()}:{getattr(opts, 'listen_port', None) or 8080}"
        if stores is not None:
            self._use_stores(*stores)
        if metrics is not self.metrics:
            if self.metrics:
                self.metrics.close()
            self.metrics = metrics
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
        client = self._client(flow)
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
        except Exception as e:
            self._internal_error(flow, "response", e)

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if state and state.position and flow.error and flow.live:
            self._emit(ErrorRecord(**self._base(flow, state.position), reason=flow.error.msg))

    # -- applying decisions ------------------------------------------------------------

    async def _follow_up(self, flow: http.HTTPFlow, client: str, awaited: bool) -> None:
        request = flow.request
        origin = _origin(request)
        position = watch = None
        if awaited:
            position = await self._ask(self.pending.follow(client, normalize_url(_url(request))), None, "follow")
            if position is None:
                watch = await self._ask(self.pending.watching(client, origin), None, "watching")
        held = await self._ask(self.store.get(client, origin), None, "get") if self.store.may_hold(client) else None
        if position is None and held is None and watch is None:
            return
        state = self._state(flow)
        if position:
            self._place(flow, position)
        decision = decide_follow_up(FollowUp(origin, self._sent(flow, state),
                                             frozenset(k.lower() for k in request.headers), position, held, watch))
        if decision.leaks:
            assert decision.leak_at is not None
            position = position or self._place(flow, decision.leak_at)
            action = Action.LOG if self.observe else decision.leak_action
            for leak in decision.leaks:
                if action is Action.STRIP:
                    request.headers.pop(leak.header, None)  # every field of that name; a repeat finds none
                    state.stripped |= {leak.fingerprint}
                self._emit(LeakRecord(**self._base(flow, position), header=leak.header, fingerprint=leak.fingerprint,
                                      kind=leak.kind, came_from=str(position.came_from), target=str(origin),
                                      action=action))
                _mark(flow, f"credhop: client re-sent {leak.header} to {origin} ({leak.kind}); {action}")
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
        _mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    def _inject(self, flow: http.HTTPFlow, state: FlowState, grant: Grant) -> None:
        assert self.fingerprint is not None
        request = flow.request
        # HTTP/2 and 3 want lower-case names (mitmproxy would lower-case and warn on every request)
        name = grant.header if request.http_version.startswith("HTTP/1") else grant.header.lower()
        request.headers[name] = grant.value
        state.injected = (grant.header.lower(), self.fingerprint(credential_from_header(grant.header, grant.value)[1]))
        state.sent = None

    async def _redirect(self, flow: http.HTTPFlow, streamed: bool) -> None:
        assert self.fingerprint is not None and flow.response is not None
        request, response = flow.request, flow.response
        client = self._client(flow)
        state = self._state(flow)
        state.redirect_seen = True
        position = state.position or self._place(flow, new_chain())
        redirect = Redirect(client, _url(request), _origin(request), response.status_code,
                            tuple(response.headers.get_all("location")), address=_address(flow))
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
        self._emit(self._redirect_record(flow, position, decision, sent))
        if decision.fingerprint:
            would = " (observe)" if self.observe else ""
            _mark(flow, f"credhop{would}: {decision.action} credential in Location -> "
                        f"{decision.location.origin if decision.location else '?'} ({decision.fingerprint})")
        if not self.observe:
            self._apply(flow, state, decision, streamed)
        if decision.location:
            await self._ask(self.pending.expect(client, normalize_url(decision.location.url), decision.location.origin,
                                                next_position(redirect, position, decision, sent, state.stripped)),
                            None, "expect")

    def _apply(self, flow: http.HTTPFlow, state: FlowState, decision: RedirectDecision, streamed: bool) -> None:
        response = flow.response
        location = decision.location
        assert response is not None
        if decision.rewrites_location and location:
            response.headers["location"] = location.stripped
            userinfo = _userinfo_text(location.raw)
            if userinfo:
                state.body = Scrubber(userinfo_replacements(userinfo))
                if streamed:
                    _rewrite_body(flow, state.body)
                else:
                    self._finish_body(flow, state)
        elif decision.action is Action.BLOCK and location and decision.rule:
            assert location.credential is not None
            message = self.redactor(printable(one_line=True, text=
                f"credhop: rule {decision.rule.name!r} blocked a {response.status_code} redirect from "
                f"{redact_url(_url(flow.request))} to {location.redacted} "
                f"(credential user={location.credential.display_user or '(token)'} {decision.fingerprint}).")
            ).encode() + b"\n"
            response.status_code, response.reason = 403, "Forbidden"
            response.headers = http.Headers(content_type="text/plain; charset=utf-8",
                                            content_length=str(len(message)))
            state.body = Replacer(message)
            if streamed:
                response.stream = state.body
            else:
                self._finish_body(flow, state)

    def _finish_body(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Rewrite a body mitmproxy buffered (not streamed through `state.body`)."""
        response, body = flow.response, state.body
        assert response is not None
        if isinstance(body, Replacer) and not body.done:
            response.content = body.body
            body.done = True
        elif isinstance(body, Scrubber) and response.raw_content:
            try:
                if not readable(response.headers.get("content-encoding", "")):
                    raise ValueError("unknown content-encoding")  # mitmproxy would pass it as is
                response.content = body.scrub(response.get_content(strict=True) or b"")
            except ValueError:  # an encoding credhop cannot read: drop the body rather than pass it
                response.headers.pop("content-encoding", None)
                response.raw_content = b""
                if "content-length" in response.headers:
                    response.headers["content-length"] = "0"
        if body is not None and getattr(body, "removed", 0):
            self.counters.add("body_scrubbed")
            body.removed = 0  # type: ignore[union-attr]

    async def _close_hop(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """The final answer to a follow-up, so a report can tell what the client got."""
        response = flow.response
        assert response is not None
        self._finish_body(flow, state)
        position = state.position
        if not position or position.hop == 0 or response.status_code in REDIRECTS:
            return
        self._emit(ResponseRecord(**self._base(flow, position, reuse=state.reuse), status=response.status_code,
                                  sent=[s.as_record() for s in self._sent(flow, state)] or None))
        if response.status_code == 401 and not state.reuse and not position.retry:
            # clients such as pip ask again, with credentials: that request continues this hop
            await self._ask(self.pending.expect(self._client(flow), normalize_url(_url(flow.request)),
                                                _origin(flow.request), replace(position, retry=True)), None, "expect")

    async def _ask(self, call: Awaitable[T], fallback: T, op: str = "other") -> T:
        """A store call with its own deadline: a slow or broken store never stalls the flow, and
        its answer is then `fallback` (which never injects). A Redis store bounds its own calls
        (credhop_store_timeout) and answers locally; this deadline is the last resort."""
        start = time.monotonic()
        try:
            result = await asyncio.wait_for(call, self._deadline)
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

    # -- fleet: client identity, shared store, metrics ------------------------------------------

    def _client(self, flow: http.HTTPFlow) -> str:
        """Who a grant is bound to: the client's address, or with credhop_client_id=proxyauth the
        user mitmproxy's proxyauth authenticated for the connection (flow.metadata["proxyauth"] is
        (user, password) on mitmproxy 10.4 to 12; only the user is read). A request without one
        gets an identity of its own connection, which no other connection shares."""
        if self.client_id == "proxyauth":
            auth = flow.metadata.get("proxyauth")
            user = auth[0] if isinstance(auth, (tuple, list)) and auth and isinstance(auth[0], str) else None
            return f"user:{user}" if user else f"connection:{flow.client_conn.id}"
        return _address(flow)

    def _make_stores(self, opts: Any) -> tuple[Any, Any, Any]:
        """(store, pending, link) for the options; raises OptionsError before anything changes."""
        url = opts.credhop_store.strip()
        if url == "memory":
            return MemoryStore(opts.credhop_max_credentials, clock=self.clock), MemoryPending(clock=self.clock), None
        try:
            from .redis_store import RedisLink, RedisPending, RedisStore, StoreConfigError, connect, describe
            from .sealing import KeyFileError, Sealer
        except ImportError as e:
            raise exceptions.OptionsError(f"credhop_store: a Redis store needs the redis package ({e.name}): "
                                          f"pip install 'credhop[fleet]'") from None
        if not opts.credhop_store_key:
            raise exceptions.OptionsError(
                "credhop_store: a Redis store needs credhop_store_key, a file with a key shared by the fleet "
                "(openssl rand -hex 32 > store.key; chmod 600 store.key): credhop never stores credentials unsealed")
        try:
            sealer = Sealer.from_file(opts.credhop_store_key)
        except KeyFileError as e:
            raise exceptions.OptionsError(f"credhop_store_key: {e}") from None
        timeout = opts.credhop_store_timeout / 1000
        try:
            client = connect(url, timeout)
        except (StoreConfigError, ValueError) as e:
            raise exceptions.OptionsError(f"credhop_store: {e}" if isinstance(e, StoreConfigError) else
                                          f"credhop_store: cannot use {describe(url)!r}: {e}") from None
        link = RedisLink(url, sealer, timeout, observer=self._store_event, client=client, clock=self.clock)
        max_entries = opts.credhop_max_credentials
        return (RedisStore(link, max_entries, clock=self.clock),
                RedisPending(link, max_per_client=min(max_entries, 1_000), clock=self.clock), link)

    def _use_stores(self, store: Any, pending: Any, link: Any) -> None:
        old = self._link
        self.store, self.pending, self._link = store, pending, link
        self._deadline = max(STORE_DEADLINE, 3 * link.timeout) if link else STORE_DEADLINE
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

    def _make_metrics(self, listen: str) -> Any:
        if not listen:
            return None
        try:
            host, port = parse_listen(listen)
        except ValueError as e:
            raise exceptions.OptionsError(str(e)) from None
        try:
            from .metrics import Metrics

            metrics = Metrics()
        except ImportError as e:
            raise exceptions.OptionsError(f"credhop_metrics needs prometheus_client ({e.name}): "
                                          f"pip install 'credhop[fleet]'") from None
        try:
            metrics.serve(host, port)
        except OSError as e:
            raise exceptions.OptionsError(f"credhop_metrics: cannot listen on {listen}: {e.strerror or e}") from None
        return metrics

    def _chain_judged(self, chain: Chain) -> None:
        if self.metrics:
            self.metrics.chain_judged(chain)

    def _refresh_metrics(self) -> None:
        if self.metrics:
            self.metrics.refresh(len(self.store), len(self.pending),  # type: ignore[arg-type]
                                 not (self._link and self._link.down) and not self._store_failing)

    def _internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception) -> None:
        """Fail closed: a request credhop could not judge might carry a leak or need a strip, so it
        does not go on; its client gets a 502 naming credhop. The message names no value."""
        self.counters.add("internal_errors")
        # file and line only: an exception's text or locals may hold a secret
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__))
        log.error("credhop: internal error in %s for flow %s: %s at %s", hook, flow.id, type(error).__name__, where)
        flow.response = http.Response.make(502, INTERNAL_ERROR, {"content-type": "text/plain; charset=utf-8"})
        self._flows.pop(flow.id, None)

    # -- records ---------------------------------------------------------------------

    def _base(self, flow: http.HTTPFlow, position: ChainPosition, reuse: bool = False) -> dict[str, Any]:
        return dict(ts=round(self.clock(), 6), client=self._client(flow), chain=position.chain, hop=position.hop,
                    flow=flow.id, method=flow.request.method, url=redact_url(_url(flow.request)),
                    retry=position.retry, reuse=reuse, instance=self.instance)

    def _redirect_record(self, flow: http.HTTPFlow, position: ChainPosition, decision: RedirectDecision,
                         sent: list[SentSecret]) -> RedirectRecord:
        location, rule = decision.location, decision.rule
        shown = location.redacted if location else None
        if decision.why is Why.LOCATION_UNPARSEABLE and flow.response:
            shown = redact_loose(flow.response.headers.get("location", ""))
        credential = location.credential if location else None
        return RedirectRecord(
            **self._base(flow, position), status=flow.response.status_code,  # type: ignore[union-attr]
            action=decision.action, location=shown,
            target=str(location.origin) if location else None, relative=location.relative if location else None,
            rule=rule.name if rule and decision.fingerprint else None, why=decision.why, reason=decision.reason,
            user=credential.display_user if credential else None, fingerprint=decision.fingerprint,
            ttl=decision.ttl if not self.observe else None, observe=self.observe and credential is not None,
            sent=[s.as_record() for s in sent] or None,
        )

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
            state.sent = secrets_sent(flow.request.headers.items(multi=True), self.secret_headers,
                                      self.fingerprint, state.injected)
        return state.sent

    # -- commands --------------------------------------------------------------------

    @command.command("credhop.reload")
    def reload(self) -> None:
        """Reload the rules file now; on error keep the current rules."""
        try:
            self._use_rules(*self._read_rules(ctx.options.credhop_rules))
        except RulesError as e:
            self.counters.add("rules_reload_failed")
            log.error("credhop: rules not reloaded, keeping the previous %d rule(s): %s", len(self.rules.rules), e)

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
            if path and _stamp(path) != self._rules_stamp:
                try:
                    self.reload()
                except Exception:  # never let the watcher die: reloads would stop silently
                    log.error("credhop: unexpected error reloading %s; keeping the previous rules", path)
                self._rules_stamp = _stamp(path)  # a broken file is reported once per edit

    def _fingerprint_key(self, path: str) -> bytes:
        key_path = Path(path or Path(ctx.options.confdir).expanduser() / "credhop-fingerprint.key").expanduser()
        try:
            if not key_path.exists():
                key_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
            key = key_path.read_bytes().strip()
        except OSError as e:
            raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path}: {e.strerror or e}") from None
        if len(key) < 16:
            raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path} holds fewer than 16 bytes")
        return key

    @staticmethod
    def _open_hoplog(path: str, redactor: Redactor) -> HopLogFile | None:
        if not path:
            return None
        try:
            return HopLogFile(path, redactor)
        except OSError as e:
            raise exceptions.OptionsError(f"credhop_log: cannot open {path}: {e.strerror}") from None


def _exit_at_start(message: str) -> NoReturn:
    print(f"credhop: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _mark(flow: http.HTTPFlow, comment: str) -> None:
    comment = printable(comment, one_line=True)  # user names and hosts come from the network
    flow.marked = MARKER
    flow.comment = f"{flow.comment}\n{comment}" if flow.comment else comment


def _origin(request: http.Request) -> Origin:
    """Where mitmproxy really sends the request: never the Host header."""
    return Origin(request.scheme, request.host.lower(), request.port)


def _url(request: http.Request) -> str:
    """The request's URL as URL parsers read it (mitmproxy's `Request.url` leaves IPv6 hosts bare)."""
    return request_url(request.scheme, request.host, request.port, request.path)


def _rewrite_body(flow: http.HTTPFlow, rewriter: Scrubber) -> None:
    """Route the 3xx body through `rewriter`, streamed or not; its length may change,
    so the framing towards the client changes with it."""
    response = flow.response
    assert response is not None
    if response.headers.get("content-length") == "0":
        return
    client_version = flow.request.http_version
    if client_version == "HTTP/1.0":  # no chunked framing: buffer, and scrub in `response`
        response.stream = False
        return
    response.headers.pop("content-length", None)
    if client_version == "HTTP/1.1":
        response.headers["transfer-encoding"] = "chunked"
    encoding = response.headers.pop("content-encoding", "").strip().lower()
    if readable(encoding) and decoder(encoding) is None:  # identity
        response.stream = rewriter
        return
    # compressed: the scrubber must see plain bytes; what credhop cannot decode is not passed on
    decompress = decoder(encoding)
    response.stream = Decoded(decompress, rewriter) if decompress else Replacer(b"")


def _address(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "unknown"


def _userinfo_text(raw: str) -> str | None:
    """The `user:password@` text of a Location, as it may also appear in the 3xx body."""
    head, sep, rest = raw.partition("//")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return authority[: authority.rindex("@") + 1] if sep and "@" in authority else None


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size
