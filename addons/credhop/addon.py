"""mitmproxy wiring: options, hooks and commands. The decisions live in the modules it imports.

Path of a credential: `responseheaders` sees a 3xx, `urls.parse_location`
decodes its userinfo, `rules.RuleSet.first_match` picks the action, a `Grant`
goes into the `CredentialStore`, the Location is stripped; `requestheaders`
finds the grant for the follow-up's real destination and adds the header.
"""

from __future__ import annotations

import asyncio
import difflib
import ipaddress
import logging
import os
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mitmproxy import command, ctx, exceptions, http

from .bodies import Replacer, Scrubber, userinfo_replacements
from .chains import ChainPosition, ChainTracker
from .credentials import Credential, CredentialError, Fingerprinter, credential_from_header
from .diagnosis import diagnose
from .report import render_text, summary_line
from .hoplog import HopLog, SecretFilter, event_line
from .leaks import ALWAYS_SECRET, SentSecret, find_leaks, secrets_sent
from .rules import MAX_TTL, Hop, Rule, RuleSet, RulesError, load_rules
from .store import CredentialStore, Grant, MemoryStore
from .urls import (
    Location,
    LocationError,
    Origin,
    normalize_url,
    parse_location,
    parsers_disagree,
    redact_loose,
    redact_url,
    request_url,
)

log = logging.getLogger("credhop")

REDIRECTS = frozenset((301, 302, 303, 307, 308))
DEFAULT_RULES = Path(__file__).with_name("rules.yaml")  # package data: shipped in the wheel
META = "credhop"  # flow.metadata key: {"chain", "hop"}, plain values so saved flows stay writable
MARKER = ":key:"
RELOAD_INTERVAL = 1.0
MAX_LIVE_FLOWS = 10_000
MAX_RECENT_CHAINS = 1_000  # kept in memory for credhop.report and the chain-end warning
MAX_RECORDS_PER_CHAIN = 200
DEFAULT_SECRET_HEADERS = "X-API-Key,PRIVATE-TOKEN,X-Auth-Token"


@dataclass(slots=True)
class FlowState:
    """What credhop knows about one live flow; dropped when the flow ends."""

    position: ChainPosition | None = None
    reuse: bool = False  # not a follow-up: a later request that got a held credential (a download)
    sent: list[SentSecret] | None = None  # secrets the request carries
    stripped: frozenset[str] = frozenset()  # fingerprints of leaked secrets credhop removed
    injected: tuple[str, str] | None = None  # (header, fingerprint of its value) credhop added
    body: Scrubber | Replacer | None = None  # rewrites the 3xx body (see bodies.py)


class CredHop:
    def __init__(self) -> None:
        self.rules = RuleSet(())
        self.store: CredentialStore = MemoryStore()
        self.chains = ChainTracker()
        self.stats: Counter[str] = Counter()
        self.hoplog: HopLog | None = None
        self.fingerprint: Fingerprinter | None = None
        self.observe = False
        self.ttl = 600
        self.secret_headers = _secret_headers(DEFAULT_SECRET_HEADERS)
        self._flows: OrderedDict[str, FlowState] = OrderedDict()
        self._recent: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()  # chain -> its records
        self._warned: set[str] = set()  # chains whose bad end was already reported
        self._rules_stamp: tuple[float, int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._filter = SecretFilter()

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
            "Seconds an injected credential stays valid for follow-ups, unless its rule sets ttl.",
        )
        loader.add_option(
            "credhop_max_credentials", int, 10_000,
            "Most credentials held at once; the least recently used is dropped first.",
        )
        loader.add_option(
            "credhop_secret_headers", str, DEFAULT_SECRET_HEADERS,
            "Comma-separated request headers that carry secrets, besides Authorization, "
            "Proxy-Authorization and Cookie: watched for leaks across redirects.",
        )
        loader.add_option(
            "credhop_fingerprint_key", str, "",
            "File holding the HMAC key for credential fingerprints. Empty: "
            "credhop-fingerprint.key in mitmproxy's confdir, created on first use. "
            "Share it between proxies to get comparable fingerprints.",
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "credhop_ttl" in updated:
            if not 0 < opts.credhop_ttl <= MAX_TTL:
                raise exceptions.OptionsError(f"credhop_ttl must be 1..{MAX_TTL} seconds, not {opts.credhop_ttl}")
            self.ttl = opts.credhop_ttl
        if "credhop_max_credentials" in updated:
            if opts.credhop_max_credentials < 1:
                raise exceptions.OptionsError("credhop_max_credentials must be at least 1")
            self.store = MemoryStore(opts.credhop_max_credentials)
        if "credhop_observe" in updated:
            self.observe = opts.credhop_observe
        if "credhop_secret_headers" in updated:
            try:
                self.secret_headers = _secret_headers(opts.credhop_secret_headers)
            except ValueError as e:
                raise exceptions.OptionsError(f"credhop_secret_headers: {e}") from None
        if "credhop_fingerprint_key" in updated or self.fingerprint is None:
            self.fingerprint = Fingerprinter(self._fingerprint_key(opts.credhop_fingerprint_key))
        if "credhop_log" in updated:
            self._open_hoplog(opts.credhop_log)
        if "credhop_rules" in updated:
            try:
                self._load_rules()
            except RulesError as e:
                raise exceptions.OptionsError(f"credhop: {e}") from None

    def running(self) -> None:
        unknown = [k for k in getattr(ctx.options, "deferred", {}) if k.startswith("credhop")]
        for name in unknown:
            known = [o for o in ctx.options.keys() if o.startswith("credhop_")]
            hint = difflib.get_close_matches(name, known, n=1)
            log.error(
                "credhop: unknown option %r%s; credhop options: %s",
                name, f" (did you mean {hint[0]!r}?)" if hint else "", ", ".join(sorted(known)),
            )
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
            handler.removeFilter(self._filter)

    # -- hooks -----------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not self.chains and not len(self.store):
            return  # nothing pending, nothing granted: the common case costs two len() calls
        now = time.time()
        client = _client(flow)
        request = flow.request
        origin = _origin(request)
        awaited = self.chains.awaits(client)
        position = self.chains.follow(client, normalize_url(_url(request)), now) if awaited else None
        if position:
            self._place(flow, position)
            self._check_leaks(flow, position, origin)
        grant = self.store.get(client, origin, now) if len(self.store) else None
        if grant is None:
            return
        if position and position.location_fp not in (None, grant.fingerprint):
            # the client follows a Location that carried another credential (one credhop refused
            # to adopt): the one held for this origin would be the wrong one
            self.stats["inject_skipped_other_credential"] += 1
            self._emit(self._record("inject", flow, position, rule=grant.rule, header=grant.header,
                                    user=grant.user, fingerprint=grant.fingerprint, action="skip",
                                    why="other-credential",
                                    reason="the Location this request follows carried another credential"))
            return
        if position is None:
            position = self._place(flow, ChainPosition(grant.chain, grant.hop))
            self._state(flow).reuse = True
        self._inject(flow, grant, position)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS:
            return
        self.stats["redirects"] += 1
        now = time.time()
        client = _client(flow)
        state = self._state(flow)
        position = state.position or self._place(flow, self.chains.new_chain())
        sent = self._sent(flow)
        record = self._record("redirect", flow, position, status=response.status_code,
                              sent=[s.as_record() for s in sent] or None)
        values = response.headers.get_all("location")
        if len(values) != 1:
            reason = "no Location header" if not values else f"{len(values)} Location headers"
            self.stats["location_missing" if not values else "location_several"] += 1
            why = "location-missing" if not values else "location-several"
            self._emit({**record, "action": "none", "why": why, "reason": reason}, logging.WARNING)
            return
        try:
            location = parse_location(values[0], _url(flow.request))
        except LocationError as e:
            self.stats["location_unparseable"] += 1
            self._emit({**record, "location": redact_loose(values[0]), "action": "none",
                        "why": "location-unparseable", "reason": str(e)},
                       logging.WARNING)
            return
        record.update(location=location.redacted, target=str(location.origin), relative=location.relative)
        rule = self.rules.first_match(Hop(location, flow.request.host, response.status_code, _ip(client)))
        location_fp = None
        if location.credential is None:
            self._emit({**record, "action": "none"}, logging.DEBUG)
        else:
            location_fp = self._handle_credential(flow, state, record, location, location.credential, rule,
                                                  client, now)
        self.chains.expect(client, location.url, ChainPosition(
            position.chain, position.hop + 1,
            came_from=_origin(flow.request),
            # what the client sent, stripped leaks included: it will try them again on the next hop
            sent=frozenset(s.fingerprint for s in sent if not s.injected) | state.stripped,
            location_fp=location_fp, on_leak=rule.on_leak if rule else "log",
        ), now)

    def response(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if state is None or flow.response is None:
            return
        body = state.body
        if isinstance(body, Replacer) and not body.done:  # the body was buffered, not streamed
            flow.response.content = body.body
        elif isinstance(body, Scrubber) and flow.response.raw_content:
            flow.response.content = body.scrub(flow.response.get_content(strict=False) or b"")
        if body is not None and getattr(body, "removed", 0):
            self.stats["body_scrubbed"] += 1
        # close the hop of a follow-up, so a report can tell what the client got
        position = state.position
        status = flow.response.status_code
        if position and position.hop > 0 and status not in REDIRECTS:
            extra = {"reuse": True} if state.reuse else {}
            self._emit(self._record("response", flow, position, status=status, **extra,
                                    sent=[s.as_record() for s in self._sent(flow, state)] or None), logging.DEBUG)
            if status == 401 and not state.reuse:  # clients such as pip ask again, with credentials:
                self.chains.expect(_client(flow), normalize_url(_url(flow.request)), replace(position, retry=True),
                                   time.time())
                return  # no verdict yet (the report still shows a 401 that was never retried)
            self._warn_if_failed(position.chain)

    def error(self, flow: http.HTTPFlow) -> None:
        state = self._flows.pop(flow.id, None)
        if state and state.position and flow.error:
            self._emit(self._record("error", flow, state.position, reason=flow.error.msg), logging.WARNING)
            self._warn_if_failed(state.position.chain)

    # -- decisions -------------------------------------------------------------------

    def _check_leaks(self, flow: http.HTTPFlow, position: ChainPosition, origin: Origin) -> None:
        state = self._state(flow)
        leaks = find_leaks(self._sent(flow, state), position, origin)
        for leak in leaks:
            self.stats["leak_detected"] += 1
            action = "log" if self.observe else position.on_leak
            if action == "strip":
                flow.request.headers.pop(leak.header, None)  # every field of that name; a repeat finds none
                state.stripped |= {leak.fingerprint}
                self.stats["leak_stripped"] += 1
            self._emit(self._record("leak", flow, position, header=leak.header, fingerprint=leak.fingerprint,
                                    kind=leak.kind, came_from=str(position.came_from), target=str(origin),
                                    action=action), logging.WARNING)
            self._mark(flow, f"credhop: client re-sent {leak.header} to {origin} ({leak.kind}); {action}")
        if leaks:
            state.sent = None  # recomputed without what was stripped

    def _inject(self, flow: http.HTTPFlow, grant: Grant, position: ChainPosition) -> None:
        assert self.fingerprint is not None
        request = flow.request
        record = self._record("inject", flow, position, rule=grant.rule, header=grant.header,
                              user=grant.user, fingerprint=grant.fingerprint)
        if grant.header in request.headers and not grant.override:
            self.stats["inject_skipped_client_header"] += 1
            self._emit({**record, "action": "skip", "why": "client-header",
                        "reason": f"client sent its own {grant.header}"})
            return
        request.headers[grant.header] = grant.value
        state = self._state(flow)
        state.injected = (grant.header.lower(), self.fingerprint(credential_from_header(grant.header, grant.value)[1]))
        state.sent = None
        self.stats["injected"] += 1
        self._emit({**record, "action": "inject"})
        self._mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    def _handle_credential(self, flow: http.HTTPFlow, state: FlowState, record: dict[str, Any],
                           location: Location, credential: Credential, rule: Rule | None, client: str,
                           now: float) -> str:
        """Apply `rule` to a Location's credential; return the credential's fingerprint."""
        assert self.fingerprint is not None and flow.response is not None
        self.stats["location_userinfo"] += 1
        fingerprint = self.fingerprint(credential)
        record.update(user=credential.display_user, fingerprint=fingerprint)
        action = rule.action if rule else "keep"
        record.update(rule=rule.name if rule else None, action=action)
        if rule is None:
            record.update(why="no-rule", reason="no rule matched")
        elif action == "inject":
            refusal = self._refusal(rule, location, credential, fingerprint, _origin(flow.request), client, now)
            if refusal:
                self.stats["inject_refused"] += 1
                record.update(action="keep", why=refusal[0], reason=refusal[1])
                action = "keep"
        self.stats[f"action_{action}"] += 1
        if self.observe:
            self._emit({**record, "observe": True}, logging.INFO)
            self._mark(flow, f"credhop (observe): would {action} the credential in Location ({fingerprint})")
            return fingerprint
        response = flow.response
        if action == "inject":
            assert rule is not None
            ttl = rule.ttl or self.ttl
            self.store.put(Grant(
                client=client, origin=location.origin, issuer=_origin(flow.request), header=rule.header.name,
                value=rule.header.render(credential), rule=rule.name, user=credential.display_user,
                fingerprint=fingerprint, expires=now + ttl, override=rule.override_client_header,
                chain=record["chain"], hop=record["hop"] + 1,
            ))
            record["ttl"] = ttl
        if action in ("inject", "strip"):
            response.headers["location"] = location.stripped
            userinfo = _userinfo_text(location.raw)
            if userinfo:
                state.body = Scrubber(userinfo_replacements(userinfo))
                _rewrite_body(flow, state.body)
        elif action == "block":
            assert rule is not None
            message = (
                f"credhop: rule {rule.name!r} blocked a {response.status_code} redirect from "
                f"{redact_url(_url(flow.request))} to {location.redacted} "
                f"(credential user={credential.display_user or '(token)'} {fingerprint}).\n"
            ).encode()
            response.status_code, response.reason = 403, "Forbidden"
            response.headers = http.Headers(content_type="text/plain; charset=utf-8",
                                            content_length=str(len(message)))
            state.body = Replacer(message)
            response.stream = state.body
        self._emit(record, logging.INFO)
        self._mark(flow, f"credhop: {action} credential in Location -> {location.origin} ({fingerprint})")
        return fingerprint

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

    def _sent(self, flow: http.HTTPFlow, state: FlowState | None = None) -> list[SentSecret]:
        state = state or self._state(flow)
        if state.sent is None:
            assert self.fingerprint is not None
            state.sent = secrets_sent(flow.request.headers.items(multi=True), self.secret_headers,
                                      self.fingerprint, state.injected)
        return state.sent

    def _refusal(self, rule: Rule, location: Location, credential: Credential, fingerprint: str,
                 issuer: Origin, client: str, now: float) -> tuple[str, str] | None:
        """(code, words) of why an inject rule must not inject here, or None."""
        problem = credential.problem()
        if problem:
            return "credential-unusable", problem
        held = self.store.get(client, location.origin, now)
        if held and held.issuer != issuer and held.fingerprint != fingerprint:
            # another site must not swap the credential a client uses for a registry
            return "swap-refused", f"{location.origin} already holds a live credential handed out by {held.issuer}"
        origin = location.origin
        if origin.is_plaintext and not origin.is_loopback and not rule.allow_plaintext:
            return "plaintext-refused", "plaintext http destination; set allow_plaintext on the rule to permit"
        if parsers_disagree(location.raw, location):
            return "parsers-disagree", "WHATWG and urllib parsers disagree on where this Location goes"
        try:
            rule.header.render(credential)
        except CredentialError as e:
            return "credential-unusable", str(e)
        return None

    # -- commands --------------------------------------------------------------------

    @command.command("credhop.reload")
    def reload(self) -> None:
        """Reload the rules file now; on error keep the current rules."""
        try:
            self._load_rules()
        except RulesError as e:
            self.stats["rules_reload_failed"] += 1
            log.error("credhop: rules not reloaded, keeping the previous %d rule(s): %s", len(self.rules.rules), e)

    @command.command("credhop.report")
    def report(self) -> str:
        """Why recent redirect chains failed: each chain as a tree with its findings."""
        return render_text(diagnose(r for records in self._recent.values() for r in records))

    @command.command("credhop.stats")
    def stats_line(self) -> str:
        """Counters of every decision credhop made since start."""
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items())) or "nothing seen"
        return f"{counts}; credentials held={len(self.store)}"

    # -- helpers ---------------------------------------------------------------------

    def _load_rules(self) -> None:
        path = ctx.options.credhop_rules
        if not path:
            self.rules, self._rules_stamp = RuleSet(()), None
            log.warning("credhop: no rules file (credhop_rules is empty): credentials pass untouched")
            return
        stamp = _stamp(path)
        rules = load_rules(path)
        self.rules, self._rules_stamp = rules, stamp
        self.stats["rules_loaded"] += 1
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
                    log.exception("credhop: unexpected error reloading %s; keeping the previous rules", path)
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
            raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path}: {e}") from None
        if len(key) < 16:
            raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path} holds fewer than 16 bytes")
        return key

    def _open_hoplog(self, path: str) -> None:
        if self.hoplog:
            self.hoplog.close()
            self.hoplog = None
        if path:
            try:
                self.hoplog = HopLog(path)
            except OSError as e:
                raise exceptions.OptionsError(f"credhop_log: cannot open {path}: {e.strerror}") from None

    def _record(self, event: str, flow: http.HTTPFlow, position: ChainPosition, **fields: Any) -> dict[str, Any]:
        return {
            "ts": round(time.time(), 6), "event": event, "client": _client(flow),
            "chain": position.chain, "hop": position.hop, "flow": flow.id,
            "method": flow.request.method, "url": redact_url(_url(flow.request)),
            **({"retry": True} if position.retry else {}), **fields,
        }

    def _remember(self, record: dict[str, Any]) -> None:
        records = self._recent.get(record["chain"])
        if records is None:
            records = self._recent[record["chain"]] = []
            while len(self._recent) > MAX_RECENT_CHAINS:
                chain, _ = self._recent.popitem(last=False)
                self._warned.discard(chain)
        if len(records) < MAX_RECORDS_PER_CHAIN:
            records.append(record)

    def _warn_if_failed(self, chain_id: str) -> None:
        """One warning line when a chain ends badly: the user's first question answered in the event log."""
        if chain_id in self._warned or chain_id not in self._recent:
            return
        chains = diagnose(self._recent[chain_id])
        if chains and chains[0].verdict == "failed":
            self._warned.add(chain_id)
            self.stats["chains_failed"] += 1
            log.warning("%s", summary_line(chains[0]))

    def _emit(self, record: dict[str, Any], level: int = logging.INFO) -> None:
        if self.hoplog:
            self.hoplog.write(record)
        self._remember(record)
        if log.isEnabledFor(level):
            log.log(level, event_line(record))

    @staticmethod
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


def _ip(client: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(client.removeprefix("::ffff:"))
    except ValueError:
        return None


def _secret_headers(spec: str) -> frozenset[str]:
    extra = [h.strip().lower() for h in spec.split(",") if h.strip()]
    bad = [h for h in extra if not all(c.isalnum() or c in "-_" for c in h)]
    if bad:
        raise ValueError(f"invalid header name(s): {', '.join(bad)}")
    return frozenset(ALWAYS_SECRET) | frozenset(extra)


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
