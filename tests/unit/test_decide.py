"""The decision core on its own: no mitmproxy, no store, no I/O."""

from __future__ import annotations

import pytest

from credhop.credentials import Fingerprinter
from credhop.decide import FollowUp, Redirect, decide_follow_up, decide_redirect, next_position
from credhop.leaks import SentSecret
from credhop.pending import ChainPosition
from credhop.records import Action, LeakKind, Why
from credhop.rules import parse_rules
from credhop.store import Grant, Refusal
from credhop.urls import Origin

FP = Fingerprinter(b"k" * 32)
RULES = parse_rules("""\
rules:
  - name: block-guests
    match: {client: 192.168.100.0/24}
    action: block
  - name: cdn
    match: {host: "*.cdn.example"}
    action: strip
    on_leak: strip
  - name: default
    action: inject
""")
ISSUER = Origin("https", "redirector.example", 443)
REGISTRY = Origin("https", "registry.example", 443)
HOP1 = ChainPosition("c", 1)


def redirect(*locations: str, client: str = "10.0.0.5", status: int = 302) -> Redirect:
    return Redirect(client, "https://redirector.example/simple/pkg/", ISSUER, status, locations)


def decide(r: Redirect):
    return decide_redirect(r, RULES, FP, 600, 1000.0, HOP1)


def test_inject_proposes_a_grant_bound_to_client_origin_and_ttl():
    d = decide(redirect("https://aws:tok@registry.example/simple/pkg/"))
    assert (d.action, d.rule.name, d.why, d.ttl) == (Action.INJECT, "default", None, 600)
    g = d.grant
    assert (g.client, g.origin, g.issuer, g.expires, g.chain, g.hop) == ("10.0.0.5", REGISTRY, ISSUER, 1600.0, "c", 1)
    assert g.header == "Authorization" and g.value.startswith("Basic ") and g.fingerprint == d.fingerprint
    assert d.rewrites_location and d.location.stripped == "https://registry.example/simple/pkg/"


@pytest.mark.parametrize(("locations", "why"), [
    ((), Why.LOCATION_MISSING), (("https://a/", "https://b/"), Why.LOCATION_SEVERAL),
    (("ftp://aws:x@registry.example/",), Why.LOCATION_UNPARSEABLE),
])
def test_locations_credhop_cannot_use_are_left_alone_with_a_reason(locations, why):
    d = decide(redirect(*locations))
    assert (d.action, d.why, d.grant) == (Action.NONE, why, None) and d.reason


@pytest.mark.parametrize(("location", "why"), [
    ("http://aws:tok@registry.example/", Why.PLAINTEXT_REFUSED),
    ("https://aws:t%0d%0aok@registry.example/", Why.CREDENTIAL_UNUSABLE),
    ("https://aws:t%E2%80%A8ok@registry.example/", Why.CREDENTIAL_UNUSABLE),
    ("https://aws:tok@registry.example\\@evil.example/", Why.PARSERS_DISAGREE),
    # an unusable credential is named before the other doubts
    ("http://aws:t%0d%0aok@registry.example/", Why.CREDENTIAL_UNUSABLE),
    ("https://aws:t%0d%0aok@registry.example\\@evil.example/", Why.CREDENTIAL_UNUSABLE),
])
def test_inject_is_refused_when_in_doubt(location, why):
    d = decide(redirect(location))
    assert (d.action, d.why, d.grant) == (Action.KEEP, why, None) and d.rule.name == "default"


def test_rules_see_the_client_and_the_host_and_cover_redirects_without_credentials():
    assert decide(redirect("https://aws:tok@registry.example/", client="192.168.100.7")).action is Action.BLOCK
    plain = decide(redirect("https://x.cdn.example/file"))
    assert plain.action is Action.NONE and plain.on_leak is Action.STRIP  # on_leak covers every match


def test_a_store_refusal_keeps_the_location():
    d = decide(redirect("https://aws:tok@registry.example/")).refused(Refusal(Why.SWAP_REFUSED, "held"))
    assert (d.action, d.why, d.grant, d.ttl, d.rewrites_location) == (Action.KEEP, Why.SWAP_REFUSED, None, None, False)


def grant(**kw) -> Grant:
    base = dict(client="10.0.0.5", origin=REGISTRY, issuer=ISSUER, header="Authorization", value="Basic x",
                rule="default", user="aws", fingerprint="hm:1", expires=2000.0, override=False, chain="c", hop=1)
    return Grant(**{**base, **kw})


def sent(fp: str, header: str = "authorization") -> SentSecret:
    return SentSecret(header, "Bearer", fp, False)


def test_a_follow_up_gets_the_held_grant_and_a_later_request_reuses_it():
    d = decide_follow_up(FollowUp(REGISTRY, [], frozenset(), HOP1, grant()))
    assert d.inject == grant() and not d.reuse and not d.leaks
    later = decide_follow_up(FollowUp(REGISTRY, [], frozenset(), None, grant()))
    assert later.inject == grant() and later.reuse


def test_skips_say_why():
    own = decide_follow_up(FollowUp(REGISTRY, [], frozenset({"authorization"}), HOP1, grant()))
    assert (own.inject, own.skipped, own.why) == (None, grant(), Why.CLIENT_HEADER)
    assert decide_follow_up(FollowUp(REGISTRY, [], frozenset({"authorization"}), HOP1,
                                     grant(override=True))).inject == grant(override=True)
    other = decide_follow_up(FollowUp(REGISTRY, [], frozenset(), ChainPosition("c", 1, location_fp="hm:2"), grant()))
    assert (other.inject, other.why) == (None, Why.OTHER_CREDENTIAL)


def test_leaks_are_found_at_the_follow_up_or_at_a_watched_origin():
    after = next_position(redirect("https://registry.example/"), ChainPosition("c", 0),
                          decide(redirect("https://x.cdn.example/")), [sent("hm:own")], frozenset())
    assert after.came_from == ISSUER and after.sent == {"hm:own"} and after.on_leak is Action.STRIP
    cdn = Origin("https", "x.cdn.example", 443)
    at_follow_up = decide_follow_up(FollowUp(cdn, [sent("hm:own")], frozenset({"authorization"}), after, None))
    assert [(x.header, x.kind) for x in at_follow_up.leaks] == [("authorization", LeakKind.OTHER_HOST)]
    assert at_follow_up.leak_action is Action.STRIP and at_follow_up.leak_at == after
    elsewhere = decide_follow_up(FollowUp(cdn, [sent("hm:own")], frozenset(), None, None, watch=after))
    assert elsewhere.leaks and elsewhere.leak_at == after
    assert not decide_follow_up(FollowUp(cdn, [sent("hm:other")], frozenset(), None, None, watch=after)).leaks


def test_a_stripped_leak_makes_room_for_the_granted_header():
    after = ChainPosition("c", 1, came_from=ISSUER, sent=frozenset({"hm:own"}), on_leak=Action.STRIP)
    d = decide_follow_up(FollowUp(REGISTRY, [sent("hm:own")], frozenset({"authorization"}), after, grant()))
    assert d.leaks and d.inject == grant()
