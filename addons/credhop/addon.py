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
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, NoReturn, TypeVar

from mitmproxy import command, ctx, exceptions, http

from .bodies import Replacer, Scrubber, userinfo_replacements
from .credentials import Fingerprinter, credential_from_header
from .decide import REDIRECTS, FollowUp, Redirect, RedirectDecision, decide_follow_up, decide_redirect, next_position
from .diagnosis import Chain, diagnose
from .leaks import SentSecret, secrets_sent
from .pending import ChainPosition, MemoryPending, PendingFollowUps, new_chain
from .records import Action, ErrorRecord, InjectRecord, LeakRecord, Record, RedirectRecord, ResponseRecord, Why
from .report import render_text, summary_line
from .rules import MAX_TTL, RuleSet, RulesError, load_rules
from .scrub import DEFAULT_SECRET_HEADERS, Redactor, SecretFilter, secret_header_names
from .sinks import Counters, EventLog, HopLogFile, RecentChains, Sinks
from .store import CredentialStore, Grant, MemoryStore, Refusal, StoreUnavailable
from .urls import Origin, normalize_url, redact_loose, redact_url, request_url

log = logging.getLogger("credhop")

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
META = "credhop"  # flow.metadata key: {"chain", "hop"}, plain values so saved flows stay writable
MARKER = ":key:"
RELOAD_INTERVAL = 1.0
MAX_LIVE_FLOWS = 10_000
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
        self.recent = RecentChains(self._chain_failed)
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
        redactor = Redactor(headers) if headers != self.secret_headers else self.redactor
        hoplog = self._open_hoplog(opts.credhop_log, redactor) if "credhop_log" in updated else self.hoplog

        self.ttl, self.observe, self.secret_headers, self.fingerprint = ttl, observe, headers, fingerprint
        if "credhop_max_credentials" in updated:
            self.store = MemoryStore(opts.credhop_max_credentials, clock=self.clock)
        if redactor is not self.redactor:
            self.redactor = self.filter.redactor = redactor
            self.event_log = EventLog(redactor)
        if hoplog is not self.hoplog and self.hoplog:
            self.hoplog.close()
        self.hoplog = hoplog
        if hoplog:
            hoplog.redactor = redactor
        self.sinks = Sinks(*(s for s in (self.counters, self.recent, self.event_log, hoplog) if s))
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
        client = _client(flow)
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
        position = None
        if awaited:
            position = await self._ask(self.pending.follow(client, normalize_url(_url(request))), None)
        held = await self._ask(self.store.get(client, origin), None) if self.store.may_hold(client) else None
        if position is None and held is None:
            return
        state = self._state(flow)
        if position:
            self._place(flow, position)
        decision = decide_follow_up(FollowUp(origin, self._sent(flow, state),
                                             frozenset(k.lower() for k in request.headers), position, held))
        if decision.leaks:
            assert position is not None
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
        client = _client(flow)
        state = self._state(flow)
        state.redirect_seen = True
        position = state.position or self._place(flow, new_chain())
        redirect = Redirect(client, _url(request), _origin(request), response.status_code,
                            tuple(response.headers.get_all("location")))
        decision = decide_redirect(redirect, self.rules, self.fingerprint, self.ttl, self.clock(),
                                   ChainPosition(position.chain, position.hop + 1))
        if decision.grant and not self.observe:
            refusal = await self._ask(self.store.grant(decision.grant),
                                      Refusal(Why.STORE_UNAVAILABLE, "the credential store did not answer"))
            if refusal:
                decision = decision.refused(refusal)
        sent = self._sent(flow, state)
        self._emit(self._redirect_record(flow, position, decision, sent))
        if decision.fingerprint:
            would = " (observe)" if self.observe else ""
            _mark(flow, f"credhop{would}: {decision.action} credential in Location -> "
                        f"{decision.location.origin if decision.location else '?'} ({decision.fingerprint})")
        if not self.observe:
            self._apply(flow, state, decision, streamed)
        if decision.location:
            await self._ask(self.pending.expect(client, decision.location.url,
                                                next_position(redirect, position, decision, sent, state.stripped)),
                            None)

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
            message = (
                f"credhop: rule {decision.rule.name!r} blocked a {response.status_code} redirect from "
                f"{redact_url(_url(flow.request))} to {location.redacted} "
                f"(credential user={location.credential.display_user or '(token)'} {decision.fingerprint}).\n"
            ).encode()
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
            response.content = body.scrub(response.get_content(strict=False) or b"")
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
            await self._ask(self.pending.expect(_client(flow), normalize_url(_url(flow.request)),
                                                replace(position, retry=True)), None)

    async def _ask(self, call: Awaitable[T], fallback: T) -> T:
        """A store call with its own deadline: a slow or broken store never stalls the flow, and
        its answer is then `fallback` (which never injects). Stores that declare themselves
        `in_process` (their calls never wait on I/O) are awaited without one, when both are."""
        try:
            if getattr(self.store, "in_process", False) and getattr(self.pending, "in_process", False):
                result = await call
            else:
                result = await asyncio.wait_for(call, STORE_DEADLINE)
        except (asyncio.TimeoutError, StoreUnavailable, OSError) as e:
            self.counters.add("store_errors")
            if not self._store_failing:  # once per outage
                log.warning("credhop: credential store unavailable (%s); not injecting until it answers",
                            type(e).__name__)
            self._store_failing = True
            return fallback
        self._store_failing = False
        return result

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
        return dict(ts=round(self.clock(), 6), client=_client(flow), chain=position.chain, hop=position.hop,
                    flow=flow.id, method=flow.request.method, url=redact_url(_url(flow.request)),
                    retry=position.retry, reuse=reuse)

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
    response.stream = rewriter


def _client(flow: http.HTTPFlow) -> str:
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
