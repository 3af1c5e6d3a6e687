"""The decision core: what to do with a 3xx's Location, and with a request that may follow one.

Pure functions, no mitmproxy and no I/O. The live addon applies the decisions,
observe mode only records them, and offline analysis of captures replays them.
Follow a Location here: `decide_redirect` reads it (`urls.parse_location`),
picks the first matching rule and, for inject, proposes a `Grant`; the store
accepts or refuses it atomically (`refused`); `decide_follow_up` later finds
that grant for the follow-up's real destination and says which header to add.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from .credentials import CredentialError, Fingerprinter
from .leaks import Leak, SentSecret, find_leaks
from .pending import ChainPosition
from .records import Action, RedirectRecord, Why
from .rules import Hop, Rule, RuleSet
from .store import Grant, Refusal
from .urls import Location, LocationError, Origin, parse_location, parsers_disagree, redact_loose

# Every 3xx can carry a Location that clients follow (curl -L follows a 300); 304 Not Modified is a
# cache answer, not a redirect.
REDIRECTS = frozenset(s for s in range(300, 400) if s != 304)


@dataclass(frozen=True, slots=True)
class Redirect:
    """A 3xx as the core needs it."""

    client: str  # the client's identity: its address, or its proxy user (credhop_client_id)
    url: str  # of the request that got the 3xx, as URL parsers read it
    issuer: Origin  # where that request really went
    status: int
    locations: tuple[str, ...]  # every Location header value
    address: str | None = None  # the client's address, for rules' `client` CIDRs; None: `client` is it


@dataclass(frozen=True, slots=True)
class RedirectDecision:
    action: Action
    why: Why | None = None
    reason: str | None = None
    location: Location | None = None
    rule: Rule | None = None
    fingerprint: str | None = None
    grant: Grant | None = None  # for inject: what the store must accept before the Location changes
    ttl: int | None = None

    @property
    def rewrites_location(self) -> bool:
        return self.action in (Action.INJECT, Action.STRIP)

    @property
    def on_leak(self) -> Action:
        return self.rule.on_leak if self.rule else Action.LOG

    def refused(self, refusal: Refusal) -> RedirectDecision:
        """The inject the store would not take: the Location stays as it is."""
        return replace(self, action=Action.KEEP, why=refusal.why, reason=refusal.reason, grant=None, ttl=None)


def decide_redirect(redirect: Redirect, rules: RuleSet, fingerprint: Fingerprinter, default_ttl: int,
                    now: float, next_hop: ChainPosition) -> RedirectDecision:
    """What to do with `redirect`'s Location. `next_hop` is where its follow-up will sit in the chain."""
    if len(redirect.locations) != 1:
        if not redirect.locations:
            return RedirectDecision(Action.NONE, Why.LOCATION_MISSING, "no Location header")
        n = len(redirect.locations)
        return RedirectDecision(Action.NONE, Why.LOCATION_SEVERAL, f"{n} Location headers")
    try:
        location = parse_location(redirect.locations[0], redirect.url)
    except LocationError as e:
        return RedirectDecision(Action.NONE, Why.LOCATION_UNPARSEABLE, str(e))
    # matched with or without a credential: a rule's on_leak covers every redirect it matches
    address = redirect.address or redirect.client
    rule = rules.first_match(Hop(location, redirect.issuer.host, redirect.status, _ip(address)))
    credential = location.credential
    if credential is None:
        return RedirectDecision(Action.NONE, location=location, rule=rule)
    fp = fingerprint(credential)
    if rule is None:
        return RedirectDecision(Action.KEEP, Why.NO_RULE, "no rule matched", location, None, fp)
    if rule.action is not Action.INJECT:
        return RedirectDecision(rule.action, location=location, rule=rule, fingerprint=fp)
    value = _inject_value(rule, location)
    if isinstance(value, Refusal):
        return RedirectDecision(rule.action, location=location, rule=rule, fingerprint=fp).refused(value)
    ttl = rule.ttl or default_ttl
    grant = Grant(
        client=redirect.client, origin=location.origin, issuer=redirect.issuer, header=rule.header.name,
        value=value, rule=rule.name, user=credential.display_user,
        fingerprint=fp, expires=now + ttl, override=rule.override_client_header,
        chain=next_hop.chain, hop=next_hop.hop,
    )
    return RedirectDecision(rule.action, location=location, rule=rule, fingerprint=fp, grant=grant, ttl=ttl)


def redirect_record(base: dict[str, Any], redirect: Redirect, decision: RedirectDecision, sent: list[SentSecret],
                    observe: bool) -> RedirectRecord:
    """The hop-log record of a decided redirect; `base` holds the fields every record has."""
    location, rule = decision.location, decision.rule
    credential = location.credential if location else None
    shown = location.redacted if location else None
    if decision.why is Why.LOCATION_UNPARSEABLE:
        shown = redact_loose(redirect.locations[0])
    return RedirectRecord(
        **base, status=redirect.status, action=decision.action, location=shown,
        target=str(location.origin) if location else None, relative=location.relative if location else None,
        rule=rule.name if rule and decision.fingerprint else None, why=decision.why, reason=decision.reason,
        user=credential.display_user if credential else None, fingerprint=decision.fingerprint,
        ttl=None if observe else decision.ttl, observe=observe and credential is not None,
        sent=[s.as_record() for s in sent] or None,
    )


def _inject_value(rule: Rule, location: Location) -> str | Refusal:
    """The header value an inject rule would add here, or why it must not inject (the store adds
    the swap rule)."""
    assert location.credential is not None
    # rendered once, first: render raises for exactly the credential's `problem()`, which is checked first
    try:
        value = rule.header.render(location.credential)
    except CredentialError as e:
        return Refusal(Why.CREDENTIAL_UNUSABLE, str(e))
    origin = location.origin
    if origin.is_plaintext and not origin.is_loopback and not rule.allow_plaintext:
        return Refusal(Why.PLAINTEXT_REFUSED, "plaintext http destination; set allow_plaintext on the rule to permit")
    if parsers_disagree(location.raw, location):
        return Refusal(Why.PARSERS_DISAGREE, "WHATWG and urllib parsers disagree on where this Location goes")
    return value


def next_position(redirect: Redirect, at: ChainPosition, decision: RedirectDecision,
                  sent: list[SentSecret], stripped: frozenset[str]) -> ChainPosition:
    """The hop the follow-up of `redirect` will be, with what leak detection needs to know there."""
    return ChainPosition(
        at.chain, at.hop + 1, came_from=redirect.issuer,
        # what the client sent, stripped leaks included: it will try them again on the next hop
        sent=frozenset(s.fingerprint for s in sent if not s.injected) | stripped,
        location_fp=decision.fingerprint, on_leak=decision.on_leak,
    )


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A request that may follow a redirect, or reuse a credential held for its origin."""

    origin: Origin  # where it really goes: never the Host header
    sent: list[SentSecret]
    header_names: frozenset[str]  # lower case
    position: ChainPosition | None  # the hop it continues, if a 3xx sent the client here
    held: Grant | None  # what the store holds for this client and origin
    watch: ChainPosition | None = None  # a redirect of this client to this origin, whatever the URL


@dataclass(frozen=True, slots=True)
class FollowUpDecision:
    leaks: tuple[Leak, ...] = ()
    leak_action: Action = Action.LOG
    leak_at: ChainPosition | None = None  # the hop the leaks belong to
    inject: Grant | None = None
    skipped: Grant | None = None  # held, but not added, for `why`
    why: Why | None = None
    reason: str | None = None
    reuse: bool = False  # no follow-up: a later request that gets a held credential (a download)


def decide_follow_up(request: FollowUp) -> FollowUpDecision:
    position, held = request.position, request.held
    # a leak is a leak whether or not this request is the follow-up credhop expected: a client may
    # re-quote the Location, or ask for another path on the origin it was sent to
    leak_at = position or request.watch
    leaks = tuple(find_leaks(request.sent, leak_at, request.origin)) if leak_at else ()
    leak_action = leak_at.on_leak if leak_at else Action.LOG
    if held is None:
        return FollowUpDecision(leaks, leak_action, leak_at)
    if position and position.location_fp not in (None, held.fingerprint):
        # the client follows a Location that carried another credential (one credhop refused
        # to adopt): the one held for this origin would be the wrong one
        return FollowUpDecision(leaks, leak_action, leak_at, skipped=held, why=Why.OTHER_CREDENTIAL,
                                reason="the Location this request follows carried another credential")
    reuse = position is None
    present = request.header_names
    if leak_action is Action.STRIP:  # stripped before the held credential would go in
        present = present - {leak.header for leak in leaks}
    if held.header.lower() in present and not held.override:
        return FollowUpDecision(leaks, leak_action, leak_at, skipped=held, why=Why.CLIENT_HEADER,
                                reason=f"client sent its own {held.header}", reuse=reuse)
    return FollowUpDecision(leaks, leak_action, leak_at, inject=held, reuse=reuse)


@lru_cache(maxsize=4096)  # a proxy sees the same client addresses again and again
def _ip(client: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(client.removeprefix("::ffff:"))
    except ValueError:
        return None
