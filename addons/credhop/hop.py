"""Applying decisions to live flows: the hot path, one hop at a time.

Follow a Location here: `Hops.redirect` reads a 3xx (`decide.decide_redirect`), the store takes the
proposed `Grant`, the Location is stripped (`flows.apply_redirect`) and the follow-up is expected;
`Hops.follow_up` finds that follow-up (or a later download) and adds the header; `Hops.close`
records what the client got. `addon.py` only guards mitmproxy's hooks and calls these.

Most requests need none of this: `has_state` and `bare_location` are the cheap tests that let
them through without a coroutine, a record or a parse. A plain 3xx (no credential possible) is set
aside (`set_aside`) and recorded only if its chain turns out to need explaining (`settle_plain`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from mitmproxy import http

from .bodies import Replacer, Scrubber
from .credentials import Fingerprinter, injected_forms
from .deadlines import longest, within
from .decide import REDIRECTS, FollowUp, Redirect, decide_follow_up, decide_redirect, next_position, redirect_record
from .destination import Resolver, request_origin, verified_origin
from .flows import (
    add_header,
    address_of,
    apply_redirect,
    carries_secret,
    client_of,
    finish_body,
    has_header,
    header_names,
    is_transparent,
    is_upstream,
    mark,
    origin_of,
    remember_destination,
    url_of,
)
from .downloads import DownloadTally
from .leaks import Injected, SentSecret, as_injected, secrets_sent
from .pending import ChainPosition, MemoryPending, PendingFollowUps, PlainRedirects, new_chain
from .records import Action, ErrorRecord, InjectRecord, LeakRecord, Record, ResponseRecord, Why
from .rules import RuleSet
from .scrub import Redactor, secret_header_names
from .sinks import Counters, Sinks
from .store import CredentialStore, Grant, MemoryStore, Refusal, StoreUnavailable
from .urls import (Origin, follow_key, may_carry_credential, normalize_url, plain_follow_key, redact_url,
                   request_url)

log = logging.getLogger("credhop")

META = "credhop"  # flow.metadata key: {"chain", "hop"}, plain values so saved flows stay writable
MAX_LIVE_FLOWS = 10_000
MAX_INJECTED = 1_024  # held credentials whose injected form is remembered
STORE_DEADLINE = 0.5  # seconds: mitmproxy runs no timeout while a hook awaits
INTERNAL_ERROR = b"credhop: this request was stopped because credhop failed to decide about it; see the proxy log\n"
T = TypeVar("T")
Expected = tuple[str, str, Origin, ChainPosition]  # a follow-up to expect: client, normalised URL, origin, hop


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
    download: Grant | None = None  # injected as a download, its records not yet written (downloads.py)
    client: str | None = None  # who it was injected for (set with `download`)
    plain: tuple[AsideRedirect, float] | None = None  # the plain 3xx set aside that this request follows, and when


@dataclass(frozen=True, slots=True)
class AsideRedirect:
    """What the records of a plain 3xx set aside need, copied when it came: the flow itself may be
    replayed or edited (mitmweb) before its chain is judged, and would keep its bodies alive."""

    flow: str  # the flow's id
    method: str
    scheme: str
    host: str
    port: int
    path: str
    status: int
    location: str
    address: str | None


class Hops:
    """The live flows credhop follows, and what applying a decision needs. The addon's `configure`
    sets the attributes; the hooks call the methods."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.rules = RuleSet(())
        self.store: CredentialStore = MemoryStore(clock=clock)
        self.pending: PendingFollowUps = MemoryPending(clock=clock)
        self.counters = Counters()
        self.redactor = Redactor()
        self.sinks = Sinks(self.counters)
        self.fingerprint: Fingerprinter | None = None
        self.observe = False
        self.ttl = 600
        self.secret_headers = secret_header_names()
        self.resolver = Resolver()  # transparent mode: names the client gave, checked on the proxy
        self.client_id = "address"  # credhop_client_id
        self.instance: str | None = None  # credhop_instance, in every record
        self.metrics: Any = None  # metrics.Metrics while credhop_metrics is set
        self.link: Any = None  # redis_store.RedisLink while credhop_store is a Redis URL
        self.store_failing = False
        self.plain_mode = "failed"  # credhop_plain_redirects: record, failed (set aside) or count
        self.plain = PlainRedirects(clock=clock)  # plain 3xx set aside, by the follow-up they expect
        self.bare_seen: dict[str, None] = {}  # flows whose bare 3xx responseheaders counted, oldest first
        self.flows: OrderedDict[str, FlowState] = OrderedDict()
        # how each held credential reads once injected, so a download does not fingerprint it again
        self.injected: dict[tuple[str, str], Injected] = {}
        self.downloads = DownloadTally()

    @property
    def local(self) -> bool:
        """Both stores declare `in_process` (one that does not say is remote): the hot path calls
        their `*_now` halves, no coroutine, and `ask` puts no deadline on them."""
        return getattr(self.store, "in_process", False) and getattr(self.pending, "in_process", False)

    # -- the hooks' entries: None when done (no coroutine), else a coroutine for mitmproxy to await --
    # An exception is caught here and fails closed (`internal_error`): mitmproxy would log it and let
    # the flow go on.

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        client = client_of(flow, self.client_id)
        try:
            expected = self.followed_plain(flow, client) if client in self.plain else None
        except Exception as e:
            self.internal_error(flow, "requestheaders", e)
            return None
        if not self.has_state(client):
            return None
        if self.local and not is_transparent(flow):  # nothing to wait for: no coroutine
            try:
                self.follow_up_now(flow, client, expected)
            except Exception as e:
                self.internal_error(flow, "requestheaders", e)
            return None
        return self._guarded(self.follow_up(flow, client, expected), flow, "requestheaders")

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        state = self.flows.get(flow.id)
        if state is not None and state.plain is not None:  # a plain 3xx's follow-up, redirected again
            try:
                self.settle_plain(flow, state)
            except Exception as e:
                self.internal_error(flow, "responseheaders", e)
                return None
        elif (location := self.bare_location(flow)) is not None and self.set_aside(flow, location, "responseheaders"):
            while len(self.bare_seen) >= MAX_LIVE_FLOWS:  # flows that never ended
                del self.bare_seen[next(iter(self.bare_seen))]
            self.bare_seen[flow.id] = None  # so `response` does not take it again
            return None
        return self._guarded(self.redirect(flow, streamed=True), flow, "responseheaders")

    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """The whole answer: a 3xx that never passed responseheaders, then the flow's close."""
        response = flow.response
        state = self.flows.get(flow.id)
        if state is not None and state.plain is not None and response is not None \
                and (response.status_code >= 400 or response.status_code in REDIRECTS):
            try:  # the chain of a plain 3xx set aside failed, or goes on: now it is recorded
                self.settle_plain(flow, state)
            except Exception as e:  # a 3xx not judged may carry a credential: it does not go on
                self.internal_error(flow, "response", e, stop=response.status_code in REDIRECTS)
                return None
        if response is not None and response.status_code in REDIRECTS and flow.is_replay != "request" \
                and not (state and state.redirect_seen):
            if flow.id in self.bare_seen:
                del self.bare_seen[flow.id]
            elif (location := self.bare_location(flow)) is None or not self.set_aside(flow, location, "response"):
                # a 3xx another addon made (server replay, map_local) never passes responseheaders
                return self._redirect_then_close(flow)
        return None if state is None else self._close_guarded(flow)

    async def _redirect_then_close(self, flow: http.HTTPFlow) -> None:
        await self._guarded(self.redirect(flow, streamed=False), flow, "response")
        after = self._close_guarded(flow)
        if after is not None:
            await after

    def _close_guarded(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        state = self.flows.pop(flow.id, None)
        if state is None:
            return None
        try:
            after = self.close(flow, state)
        except Exception as e:  # only bookkeeping failed: the answer itself is fine to deliver
            self.internal_error(flow, "response", e, stop=False)
            return None
        return self._guarded(after, flow, "response", stop=False) if after is not None else None

    async def _guarded(self, call: Awaitable[None], flow: http.HTTPFlow, hook: str, stop: bool = True) -> None:
        try:
            await call
        except Exception as e:
            self.internal_error(flow, hook, e, stop=stop)

    # -- the cheap tests -----------------------------------------------------------------

    def has_state(self, client: str) -> bool:
        """Whether something is pending or held for `client` (False is the common case: two lookups)."""
        return self.pending.awaits(client) or self.store.may_hold(client)

    def bare_location(self, flow: http.HTTPFlow) -> str | None:
        """The Location of a 3xx that starts no credential hop (a bare redirect), else None: one
        Location that cannot carry a credential (no `@`, so no userinfo by any parser, and no
        signed-URL parameter), outside a chain, answering a request that carried no secret (so
        nothing to leak on). Such a chain cannot fail for a credential: nothing about the 3xx needs a
        header, a strip or a leak check. It is counted (`set_aside`), and recorded only as
        credhop_plain_redirects says."""
        if self.plain_mode == "record":
            return None
        state = self.flows.get(flow.id)
        if state is not None and state.position is not None:
            return None
        assert flow.response is not None
        locations = flow.response.headers.get_all("location")
        if len(locations) != 1 or may_carry_credential(locations[0]) \
                or carries_secret(flow.request, self.secret_headers):
            return None
        return locations[0]

    def count_bare(self) -> None:
        self.counters.add("redirects")
        if self.metrics:
            self.metrics.bare_redirect()

    def set_aside(self, flow: http.HTTPFlow, location: str, hook: str) -> bool:
        """Count a bare redirect and, with credhop_plain_redirects=failed, keep it by the `follow_key`
        its follow-up will have; False when it must be recorded now: that key cannot be told without
        a URL parser (urls.plain_follow_key), or the proxy is transparent (the request's host is an
        address, the Location's a name). Bookkeeping only: if it fails, the 3xx (which carries no
        credential, `bare_location` saw to that) goes on, unrecorded."""
        try:
            if self.plain_mode == "failed":
                if is_transparent(flow):
                    return False
                request, response = flow.request, flow.response
                assert response is not None
                key = plain_follow_key(location, request.scheme, request.host, request.port)
                if key is None:
                    return False
                aside = AsideRedirect(flow.id, request.method, request.scheme, request.host, request.port,
                                      request.path, response.status_code, location, address_of(flow))
                self.plain.put(client_of(flow, self.client_id), key, aside)
            self.count_bare()
        except Exception as e:
            self.internal_error(flow, hook, e, stop=False)
        return True

    def followed_plain(self, flow: http.HTTPFlow, client: str) -> Expected | None:
        """For a request that follows a plain 3xx set aside. When the client has something pending
        or held, the 3xx is recorded now and its follow-up is returned, to be expected before this
        request is looked up, exactly as `record` would have had it (an older redirect to the same
        URL still comes first, with the secrets to watch for). Else the 3xx waits for this request's
        answer (`settle_plain`): a secret this request carries cannot be a leak then (the 3xx
        answered a request without one and handed out none), and its close records it."""
        if is_transparent(flow):
            return None
        request = flow.request
        found = self.plain.take(client, follow_key(request.scheme, request.host, request.port, request.path))
        if found is None:
            return None
        if self.has_state(client):
            return self.record_plain(found, client)[1]
        self.state(flow).plain = found
        return None

    def settle_plain(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """The follow-up of a plain 3xx set aside failed or was redirected: record the 3xx, as
        `redirect` would have, and make this request its next hop."""
        found, state.plain = state.plain, None
        assert found is not None
        state.position = position = self.record_plain(found, client_of(flow, self.client_id))[0]
        flow.metadata[META] = {"chain": position.chain, "hop": position.hop}  # as `place`: the state may be gone

    def record_plain(self, found: tuple[AsideRedirect, float], client: str) -> tuple[ChainPosition, Expected | None]:
        """The redirect record of a plain 3xx set aside (counted when it came: `count_bare`), dated
        when it came; returns the hop its follow-up is, and that follow-up as `redirect` expects it
        (None when the Location cannot be read)."""
        assert self.fingerprint is not None
        aside, at = found
        position = new_chain()
        url = request_url(aside.scheme, aside.host, aside.port, aside.path)
        redirect = Redirect(client, url, request_origin(aside.scheme, aside.host, aside.port), aside.status,
                            (aside.location,), address=aside.address)
        decision = decide_redirect(redirect, self.rules, self.fingerprint, self.ttl, at,
                                   ChainPosition(position.chain, 1))
        base = record_fields(at, client, position, aside.flow, aside.method, url, False, self.instance)
        self.sinks.emit_uncounted(redirect_record(base, redirect, decision, [], self.observe))
        following = next_position(redirect, position, decision, [], frozenset())
        location = decision.location
        return following, (client, location.normalized, location.origin, following) if location else None

    # -- applying decisions ------------------------------------------------------------

    async def follow_up(self, flow: http.HTTPFlow, client: str, expected: Expected | None = None) -> None:
        """What a request may need, asked of any store, each call with its deadline (`ask`).
        `expected`: a follow-up to expect first (of a plain 3xx set aside, recorded just now)."""
        origin = await self.destination(flow)
        if expected is not None:
            await self.ask(self.pending.expect(*expected), None, "expect")
        position = watch = None
        if self.pending.awaits(client):
            position = await self.ask(self.pending.follow(client, normalize_url(url_of(flow))), None, "follow")
            if position is None:
                watch = await self.ask(self.pending.watching(client, origin), None, "watching")
        held = await self.ask(self.store.get(client, origin), None, "get") if self.store.may_hold(client) else None
        self.apply_follow_up(flow, client, origin, position, watch, held)

    def follow_up_now(self, flow: http.HTTPFlow, client: str, expected: Expected | None = None) -> None:
        """`follow_up` for stores in this process and a destination that needs no lookup (not
        transparent: mitmproxy's own host and port): the same answers, no coroutine."""
        request = flow.request
        origin = request_origin(request.scheme, request.host, request.port)
        pending = self.pending
        if expected is not None:
            pending.expect_now(*expected)  # type: ignore[attr-defined]
        position = watch = None
        if pending.awaits(client):
            position = pending.follow_now(client, normalize_url(url_of(flow)))  # type: ignore[attr-defined]
            if position is None:
                watch = pending.watching_now(client, origin)  # type: ignore[attr-defined]
        store = self.store
        held = store.get_now(client, origin) if store.may_hold(client) else None  # type: ignore[attr-defined]
        self.apply_follow_up(flow, client, origin, position, watch, held)

    def apply_follow_up(self, flow: http.HTTPFlow, client: str, origin: Origin, position: ChainPosition | None,
                        watch: ChainPosition | None, held: Grant | None) -> None:
        request = flow.request
        if position is None and watch is None:
            if held is None:
                return
            if held.override or not has_header(request, held.header):
                self.download(flow, client, held)  # what decide_follow_up would say, without its records
                return
        state = self.state(flow)
        if position:
            self.place(flow, position)
        # what the client sent is read only where it could be a leak: a download needs the names alone
        sent = self.sent(flow, state) if position or watch else []
        decision = decide_follow_up(FollowUp(origin, sent, header_names(request), position, held, watch))
        if decision.leaks:
            assert decision.leak_at is not None
            if position is None:  # not the follow-up: another request to the origin the client was sent to
                position = self.place(flow, decision.leak_at)
                state.reuse = True
            action = Action.LOG if self.observe else decision.leak_action
            for leak in decision.leaks:
                if action is Action.STRIP:
                    request.headers.pop(leak.header, None)  # every field of that name; a repeat finds none
                    state.stripped |= {leak.fingerprint}
                self.emit(LeakRecord(**self.base(flow, position), header=leak.header, fingerprint=leak.fingerprint,
                                     kind=leak.kind, came_from=str(position.came_from), target=str(origin),
                                     action=action))
                mark(flow, f"credhop: client re-sent {leak.header} to {origin} ({leak.kind}); {action}")
            state.sent = None  # recomputed without what was stripped
        grant = decision.inject or decision.skipped
        if grant is None:
            return
        if position is None:
            position = self.place(flow, ChainPosition(grant.chain, grant.hop))
            state.reuse = True
        fields = dict(rule=grant.rule, header=grant.header, user=grant.user, fingerprint=grant.fingerprint)
        if decision.skipped:
            self.emit(InjectRecord(**self.base(flow, position), **fields, action=Action.SKIP, why=decision.why,
                                   reason=decision.reason))
            return
        self.inject(flow, state, grant)
        self.emit(InjectRecord(**self.base(flow, position), **fields, action=Action.INJECT))
        mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    def download(self, flow: http.HTTPFlow, client: str, grant: Grant) -> None:
        """A later request to an origin the client holds a credential for: inject; its records wait
        for the answer (`close`), and a good answer is only counted (`self.downloads`)."""
        state = self.state(flow)
        state.reuse = True
        self.place(flow, ChainPosition(grant.chain, grant.hop))
        self.inject(flow, state, grant, absent=not grant.override)  # else has_header said it is absent
        state.download, state.client = grant, client
        mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    def _record_download(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """The inject record a download put off, for a download that did not end well."""
        grant, position = state.download, state.position
        assert grant is not None and position is not None
        state.download = None
        self.emit(InjectRecord(**self.base(flow, position, reuse=True), rule=grant.rule, header=grant.header,
                               user=grant.user, fingerprint=grant.fingerprint, action=Action.INJECT))

    def flush_downloads(self, everything: bool = False) -> None:
        for record in self.downloads.take(self.clock(), everything):
            self.emit(record)

    async def redirect(self, flow: http.HTTPFlow, streamed: bool) -> None:
        assert self.fingerprint is not None and flow.response is not None
        response = flow.response
        client = client_of(flow, self.client_id)
        state = self.state(flow)
        state.redirect_seen = True
        if state.download is not None:  # a download answered with a 3xx: a hop of its own
            self._record_download(flow, state)
        position = state.position or self.place(flow, new_chain())
        issuer = await self.destination(flow)  # first: url_of reads the name it verified
        redirect = Redirect(client, url_of(flow), issuer, response.status_code,
                            tuple(response.headers.get_all("location")), address=address_of(flow))
        decision = decide_redirect(redirect, self.rules, self.fingerprint, self.ttl, self.clock(),
                                   ChainPosition(position.chain, position.hop + 1))
        sent = self.sent(flow, state)
        location = decision.location
        expected = (client, location.normalized, location.origin,
                    next_position(redirect, position, decision, sent, state.stripped)) if location else None
        if decision.grant and not self.observe:
            unanswered = Refusal(Why.STORE_UNAVAILABLE, "the credential store did not answer")
            together = getattr(self.store, "grant_and_expect", None)
            if together is not None and expected is not None:  # a shared store: one round trip for both
                refusal = await self.ask(together(decision.grant, self.pending, expected), unanswered, "grant")
                expected = None
            else:
                refusal = await self.ask(self.store.grant(decision.grant), unanswered, "grant")
            if refusal:
                decision = decision.refused(refusal)
        if location and location.credential:
            self.redactor.remember(location.credential.secret_forms())
        self.emit(redirect_record(self.base(flow, position), redirect, decision, sent, self.observe))
        if decision.fingerprint:
            would = " (observe)" if self.observe else ""
            mark(flow, f"credhop{would}: {decision.action} credential in Location -> "
                       f"{decision.location.origin if decision.location else '?'} ({decision.fingerprint})")
        if not self.observe:
            state.body = apply_redirect(flow, decision, streamed, self.redactor)
        if expected is not None:
            await self.ask(self.pending.expect(*expected), None, "expect")

    def close(self, flow: http.HTTPFlow, state: FlowState) -> Awaitable[None] | None:
        """The final answer to a follow-up, so a report can tell what the client got; a coroutine
        only when a shared store must be told to expect a retry."""
        response = flow.response
        assert response is not None
        if state.body is not None and finish_body(response, state.body):
            self.counters.add("body_scrubbed")
        position = state.position
        if not position or position.hop == 0 or response.status_code in REDIRECTS:
            return None
        status = response.status_code
        if state.download is not None:
            if status < 400:
                self._count_download(flow, state, position, status)
                return None
            self._record_download(flow, state)
        self.emit(ResponseRecord(**self.base(flow, position, reuse=state.reuse), status=response.status_code,
                                 sent=[s.as_record() for s in self.sent(flow, state)] or None))
        if response.status_code != 401 or state.reuse or position.retry:
            return None
        # clients such as pip ask again, with credentials: that request continues this hop
        retry = (client_of(flow, self.client_id), normalize_url(url_of(flow)), origin_of(flow),
                 replace(position, retry=True))
        if self.local:
            self.pending.expect_now(*retry)  # type: ignore[attr-defined]
            return None
        return self.ask(self.pending.expect(*retry), None, "expect")

    def _count_download(self, flow: http.HTTPFlow, state: FlowState, position: ChainPosition, status: int) -> None:
        response, grant = flow.response, state.download
        assert response is not None and grant is not None and state.client is not None
        raw = response.raw_content
        if raw is not None:
            size = len(raw)
        else:  # streamed: what the server said it sent
            length = response.headers.get("content-length", "")
            size = int(length) if length.isdigit() else 0
        self.counters.add("injected")
        if self.metrics:
            self.metrics.injected(grant.rule)
        for record in self.downloads.add(grant, state.client, flow.request.method, self.clock(), status, size,
                                         lambda: self.base(flow, position, reuse=True)):
            self.emit(record)

    def forget(self, flow: http.HTTPFlow) -> None:
        """A flow that ended without an answer credhop looks at (not live, or no response)."""
        self.flows.pop(flow.id, None)
        self.bare_seen.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self.bare_seen.pop(flow.id, None)
        state = self.flows.pop(flow.id, None)
        if state and state.plain and flow.error and flow.live:  # a plain 3xx's follow-up got no answer
            try:
                self.settle_plain(flow, state)
            except Exception as e:
                self.internal_error(flow, "error", e, stop=False)
                return
        if state and state.position and flow.error and flow.live:
            if state.download is not None:
                self._record_download(flow, state)
            self.emit(ErrorRecord(**self.base(flow, state.position), reason=flow.error.msg))

    async def destination(self, flow: http.HTTPFlow) -> Origin:
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

    def inject(self, flow: http.HTTPFlow, state: FlowState, grant: Grant, absent: bool = False) -> None:
        assert self.fingerprint is not None
        add_header(flow.request, grant, absent)
        key = (grant.header, grant.value)
        injected = self.injected.get(key)
        if injected is None:
            if len(self.injected) >= MAX_INJECTED:
                self.injected.clear()
            injected = self.injected[key] = as_injected(grant.header, grant.value, self.fingerprint)
            # a grant another instance took in was never read here: mask it as injected, once per grant
            self.redactor.remember(injected_forms(grant.value))
        state.injected = injected
        state.sent = None

    # -- the store, with deadlines ---------------------------------------------------------

    async def ask(self, call: Awaitable[T], fallback: T, op: str = "other") -> T:
        """A store call with its own deadline: a slow or broken store never stalls the flow, and
        its answer is then `fallback` (which never injects). Stores that declare themselves
        `in_process` (their calls never wait on I/O) are awaited without one, when both are; a Redis
        store bounds its own calls (credhop_store_timeout) and answers locally, so this deadline is
        its last resort."""
        start = time.monotonic()
        try:
            if self.local:
                result = await call
            else:
                deadline = max(STORE_DEADLINE, longest(self.link.timeout)) if self.link else STORE_DEADLINE
                result = await within(call, deadline)
        except (asyncio.TimeoutError, StoreUnavailable, OSError) as e:
            self.counters.add("store_errors")
            if self.metrics:
                self.metrics.store_call(op, time.monotonic() - start, "failed")
                self.metrics.store_error(op, "timeout" if isinstance(e, asyncio.TimeoutError) else "error")
            if not self.store_failing:  # once per outage
                log.warning("credhop: credential store unavailable (%s); not injecting until it answers",
                            type(e).__name__)
            self.store_failing = True
            return fallback
        if self.metrics:
            self.metrics.store_call(op, time.monotonic() - start, "ok")
        self.store_failing = False
        return result

    def internal_error(self, flow: http.HTTPFlow, hook: str, error: Exception, stop: bool = True) -> None:
        """Fail closed: a request credhop could not judge might carry a leak or need a strip, and a 3xx
        it could not judge may carry a credential, so neither goes on; the client gets a 502 naming
        credhop. The message names no value."""
        self.counters.add("internal_errors")
        if self.metrics:
            self.metrics.internal_error(hook)
        # file and line only: an exception's text or locals may hold a secret
        where = "; ".join(f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__))
        log.error("credhop: internal error in %s for flow %s: %s at %s", hook, flow.id, type(error).__name__, where)
        self.flows.pop(flow.id, None)
        if stop:
            flow.response = http.Response.make(502, INTERNAL_ERROR, {"content-type": "text/plain; charset=utf-8"})

    def use_stores(self, store: Any, pending: Any, link: Any) -> None:
        old = self.link
        self.store, self.pending, self.link = store, pending, link
        if old is not None:
            try:
                asyncio.get_running_loop().create_task(old.close())
            except RuntimeError:
                pass

    def store_event(self, op: str, seconds: float, cause: str | None) -> None:
        """What the shared store's link saw: failures are counted (and logged by the link once per outage)."""
        if cause is None:
            return
        self.counters.add("store_errors")
        if self.metrics:
            self.metrics.store_error(op, cause)

    @property
    def store_up(self) -> bool:
        """The store answers: read when /metrics is scraped (a gauge set once a second would read 1 for up
        to a second of an outage)."""
        return not (self.link and self.link.down) and not self.store_failing

    def refresh_metrics(self) -> None:
        if self.metrics:
            self.metrics.refresh(len(self.store), len(self.pending))  # type: ignore[arg-type]

    # -- records and per-flow state --------------------------------------------------------

    def base(self, flow: http.HTTPFlow, position: ChainPosition, reuse: bool = False) -> dict[str, Any]:
        return record_fields(self.clock(), client_of(flow, self.client_id), position, flow.id, flow.request.method,
                             url_of(flow), reuse, self.instance)

    def emit(self, record: Record) -> None:
        self.sinks.emit(record)

    def state(self, flow: http.HTTPFlow) -> FlowState:
        state = self.flows.get(flow.id)
        if state is None:
            state = self.flows[flow.id] = FlowState()
            while len(self.flows) > MAX_LIVE_FLOWS:  # flows that never ended
                self.flows.popitem(last=False)
        return state

    def place(self, flow: http.HTTPFlow, position: ChainPosition) -> ChainPosition:
        self.state(flow).position = position
        flow.metadata[META] = {"chain": position.chain, "hop": position.hop}
        return position

    def sent(self, flow: http.HTTPFlow, state: FlowState) -> list[SentSecret]:
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


def record_fields(ts: float, client: str, position: ChainPosition, flow: str, method: str, url: str, reuse: bool,
                  instance: str | None) -> dict[str, Any]:
    """The fields every record has (docs/hop-log.md)."""
    return dict(ts=round(ts, 6), client=client, chain=position.chain, hop=position.hop, flow=flow, method=method,
                url=redact_url(url), retry=position.retry, reuse=reuse, instance=instance)
