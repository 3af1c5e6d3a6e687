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
from collections import Counter
from pathlib import Path
from typing import Any

from mitmproxy import command, ctx, exceptions, http

from .chains import ChainPosition, ChainTracker
from .credentials import Credential, CredentialError, Fingerprinter
from .hoplog import HopLog, SecretFilter, event_line
from .rules import Hop, Rule, RuleSet, RulesError, load_rules
from .store import CredentialStore, Grant, MemoryStore
from .urls import Location, LocationError, Origin, normalize_url, parse_location, parsers_disagree, redact_url

log = logging.getLogger("credhop")

REDIRECTS = frozenset((301, 302, 303, 307, 308))
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
META_POSITION = "credhop.position"  # ChainPosition of a flow that is part of a chain
META_BLOCKED = "credhop.blocked"  # message for a redirect a rule blocked
META_INJECTED = "credhop.injected"
MARKER = ":key:"
RELOAD_INTERVAL = 1.0


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
            if opts.credhop_ttl <= 0:
                raise exceptions.OptionsError(f"credhop_ttl must be positive, not {opts.credhop_ttl}")
            self.ttl = opts.credhop_ttl
        if "credhop_max_credentials" in updated:
            if opts.credhop_max_credentials < 1:
                raise exceptions.OptionsError("credhop_max_credentials must be at least 1")
            self.store = MemoryStore(opts.credhop_max_credentials)
        if "credhop_observe" in updated:
            self.observe = opts.credhop_observe
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

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS:
            return
        self.stats["redirects"] += 1
        now = time.time()
        client = _client(flow)
        position = flow.metadata.get(META_POSITION) or self.chains.new_chain()
        flow.metadata[META_POSITION] = position
        record = self._record("redirect", flow, position, status=response.status_code)
        values = response.headers.get_all("location")
        if len(values) != 1:
            reason = "no Location header" if not values else f"{len(values)} Location headers"
            self.stats["location_missing" if not values else "location_several"] += 1
            self._emit({**record, "action": "none", "reason": reason}, logging.WARNING)
            return
        try:
            location = parse_location(values[0], flow.request.url)
        except LocationError as e:
            self.stats["location_unparseable"] += 1
            self._emit({**record, "location": redact_url(values[0]), "action": "none", "reason": str(e)}, logging.WARNING)
            return
        self.chains.expect(client, location.url, position, now)
        record.update(location=location.redacted, target=str(location.origin), relative=location.relative)
        if location.credential is None:
            self._emit({**record, "action": "none"}, logging.DEBUG)
            return
        self._handle_credential(flow, record, location, location.credential, client, now)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not self.chains and not len(self.store):
            return
        now = time.time()
        client = _client(flow)
        if self.chains:
            position = self.chains.follow(client, normalize_url(flow.request.url), now)
            if position:
                flow.metadata[META_POSITION] = position
        if not len(self.store):
            return
        request = flow.request
        # the follow-up's real destination, never the Host header
        grant = self.store.get(client, Origin(request.scheme, request.host.lower(), request.port), now)
        if grant is None:
            return
        position = flow.metadata.get(META_POSITION) or ChainPosition(grant.chain, grant.hop)
        record = self._record("inject", flow, position, rule=grant.rule, header=grant.header,
                              user=grant.user, fingerprint=grant.fingerprint)
        if grant.header in request.headers and not grant.override:
            self.stats["inject_skipped_client_header"] += 1
            self._emit({**record, "action": "skip", "reason": f"client sent its own {grant.header}"})
            return
        request.headers[grant.header] = grant.value
        flow.metadata[META_INJECTED] = grant.fingerprint
        self.stats["injected"] += 1
        self._emit({**record, "action": "inject"})
        self._mark(flow, f"credhop: {grant.header} injected (rule {grant.rule}, {grant.fingerprint})")

    def response(self, flow: http.HTTPFlow) -> None:
        blocked = flow.metadata.pop(META_BLOCKED, None)
        if blocked:
            flow.response = http.Response.make(403, blocked.encode(), {"content-type": "text/plain; charset=utf-8"})
            return
        # close the hop for follow-ups, so a report can tell what the client got
        if flow.response and flow.response.status_code not in REDIRECTS:
            position = flow.metadata.get(META_POSITION)
            if position and position.hop > 0:
                sent = flow.metadata.get(META_INJECTED) or _auth_scheme(flow.request.headers)
                self._emit(self._record("response", flow, position, status=flow.response.status_code,
                                        credential=sent), logging.DEBUG)

    # -- decisions -------------------------------------------------------------------

    def _handle_credential(self, flow: http.HTTPFlow, record: dict[str, Any], location: Location,
                           credential: Credential, client: str, now: float) -> None:
        assert self.fingerprint is not None
        self.stats["location_userinfo"] += 1
        fingerprint = self.fingerprint(credential)
        record.update(user=credential.display_user, fingerprint=fingerprint)
        rule = self.rules.first_match(Hop(location, flow.request.host, flow.response.status_code, _ip(client)))
        action = rule.action if rule else "keep"
        record.update(rule=rule.name if rule else None, action=action)
        if rule is None:
            record["reason"] = "no rule matched"
        elif action == "inject":
            refusal = self._refusal(rule, location, credential)
            if refusal:
                self.stats["inject_refused"] += 1
                record.update(action="keep", reason=refusal)
                action = "keep"
        self.stats[f"action_{action}"] += 1
        if self.observe:
            self._emit({**record, "observe": True}, logging.INFO)
            self._mark(flow, f"credhop (observe): would {action} the credential in Location ({fingerprint})")
            return
        response = flow.response
        if action == "inject":
            assert rule is not None
            ttl = rule.ttl or self.ttl
            self.store.put(Grant(
                client=client, origin=location.origin, header=rule.header.name,
                value=rule.header.render(credential), rule=rule.name, user=credential.display_user,
                fingerprint=fingerprint, expires=now + ttl, override=rule.override_client_header,
                chain=record["chain"], hop=record["hop"] + 1,
            ))
            record["ttl"] = ttl
            response.headers["location"] = location.stripped
        elif action == "strip":
            response.headers["location"] = location.stripped
        elif action == "block":
            assert rule is not None
            del response.headers["location"]
            response.stream = False  # the body is replaced in `response`
            flow.metadata[META_BLOCKED] = (
                f"credhop: rule {rule.name!r} blocked a {response.status_code} redirect from "
                f"{redact_url(flow.request.url)} to {location.redacted} "
                f"(credential user={credential.display_user or '(token)'} {fingerprint}).\n"
            )
        self._emit(record, logging.INFO)
        self._mark(flow, f"credhop: {action} credential in Location -> {location.origin} ({fingerprint})")

    def _refusal(self, rule: Rule, location: Location, credential: Credential) -> str | None:
        """Why an inject rule must not inject here, or None."""
        problem = credential.problem()
        if problem:
            return problem
        origin = location.origin
        if origin.is_plaintext and not origin.is_loopback and not rule.allow_plaintext:
            return "plaintext http destination; set allow_plaintext on the rule to permit"
        if parsers_disagree(location.raw, location):
            return "WHATWG and urllib parsers disagree on where this Location goes"
        try:
            rule.header.render(credential)
        except CredentialError as e:
            return str(e)
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
                self.reload()
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
            "method": flow.request.method, "url": redact_url(flow.request.url), **fields,
        }

    def _emit(self, record: dict[str, Any], level: int = logging.INFO) -> None:
        if self.hoplog:
            self.hoplog.write(record)
        if log.isEnabledFor(level):
            log.log(level, event_line(record))

    @staticmethod
    def _mark(flow: http.HTTPFlow, comment: str) -> None:
        flow.marked = MARKER
        flow.comment = f"{flow.comment}\n{comment}" if flow.comment else comment


def _client(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "unknown"


def _ip(client: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(client.removeprefix("::ffff:"))
    except ValueError:
        return None


def _auth_scheme(headers: http.Headers) -> str | None:
    value = headers.get("authorization")
    return value.split(" ", 1)[0] if value else None


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size
