from __future__ import annotations

import base64

import pytest

from credhop.credentials import BASIC, Credential, CredentialError, Fingerprinter, HeaderTemplate
from credhop.store import Grant, MemoryStore
from credhop.urls import Origin

KEY = b"k" * 32


def test_basic_header_is_base64_of_decoded_user_and_password():
    value = BASIC.render(Credential("aws", "t:k@/%n"))
    assert value == "Basic " + base64.b64encode(b"aws:t:k@/%n").decode()


@pytest.mark.parametrize(
    ("template", "expected"),
    [("Bearer {token}", "Bearer TOK"), ("{password}", "TOK"), ("{user}/{token}", "me/TOK")],
)
def test_templates(template, expected):
    assert HeaderTemplate.compile("X-Token", template).render(Credential("me", "TOK")) == expected


def test_token_is_the_user_when_there_is_no_password():
    assert HeaderTemplate.compile("Authorization", "Bearer {token}").render(Credential("TOK", "")) == "Bearer TOK"


@pytest.mark.parametrize("user,password", [("a\r\nX-Evil: 1", "p"), ("u", "p\n"), ("u", "p\x00"), ("", "")])
def test_unsafe_credentials_never_render(user, password):
    cred = Credential(user, password)
    assert cred.problem()
    with pytest.raises(CredentialError) as e:
        BASIC.render(cred)
    assert "Evil" not in str(e.value)


@pytest.mark.parametrize("template", ["{password!r}", "{password:>20}", "{user.__class__}", "{0}"])
def test_templates_refuse_format_tricks(template):
    with pytest.raises(ValueError):
        HeaderTemplate.compile("X", template)


def test_repr_and_fingerprint_hold_no_secret():
    cred = Credential("aws", "hunter2-secret")
    assert "hunter2" not in repr(cred)
    fp = Fingerprinter(KEY)(cred)
    assert fp.startswith("hm:") and "hunter2" not in fp
    assert fp == Fingerprinter(KEY)(Credential("aws", "hunter2-secret"))
    assert fp != Fingerprinter(b"other-key-0123456789")(cred)
    assert fp != Fingerprinter(KEY)(Credential("aws", "hunter3-secret"))
    with pytest.raises(ValueError):
        Fingerprinter(b"short")


def grant(client="10.0.0.1", origin=Origin("https", "a.example", 443), expires=100.0) -> Grant:
    return Grant(client, origin, Origin("https", "redirector.example", 443), "Authorization", "Basic xyz", "r", "u",
                 "hm:1", expires, False, "c", 1)


def test_grant_repr_hides_the_value():
    assert "Basic xyz" not in repr(grant())


def test_store_binds_to_client_and_exact_origin_until_expiry():
    store = MemoryStore()
    store.put(grant())
    assert store.get("10.0.0.1", Origin("https", "a.example", 443), 50) is not None
    assert store.get("10.0.0.2", Origin("https", "a.example", 443), 50) is None
    assert store.get("10.0.0.1", Origin("http", "a.example", 443), 50) is None
    assert store.get("10.0.0.1", Origin("https", "a.example", 8443), 50) is None
    assert store.get("10.0.0.1", Origin("https", "b.a.example", 443), 50) is None
    assert store.get("10.0.0.1", Origin("https", "a.example", 443), 100) is None  # expired, and dropped
    assert len(store) == 0


def test_store_is_bounded_lru():
    store = MemoryStore(max_entries=2)
    for i in range(3):
        store.put(grant(client=f"10.0.0.{i}"))
    assert len(store) == 2 and store.evicted == 1
    assert store.get("10.0.0.0", Origin("https", "a.example", 443), 0) is None
    assert store.expire(now=1000) == 2


def test_chain_tracker_queues_two_chains_waiting_for_the_same_url():
    from credhop.chains import ChainPosition, ChainTracker

    tracker = ChainTracker(ttl=10)
    first, second = ChainPosition("c1", 1), ChainPosition("c2", 1)
    tracker.expect("10.0.0.1", "https://b.example/", first, now=0)
    tracker.expect("10.0.0.2", "https://other.example/", ChainPosition("c3", 1), now=5)
    tracker.expect("10.0.0.1", "https://b.example/", second, now=6)
    assert tracker.follow("10.0.0.1", "https://b.example/", now=7) == first
    assert tracker.follow("10.0.0.1", "https://b.example/", now=7) == second
    assert tracker.follow("10.0.0.1", "https://b.example/", now=7) is None
    tracker.expect("10.0.0.1", "https://b.example/", first, now=0)
    tracker.expect("10.0.0.1", "https://b.example/", second, now=9)
    assert tracker.follow("10.0.0.1", "https://b.example/", now=12) == second  # the first expired at 10
    assert not tracker.follow("10.0.0.2", "https://other.example/", now=16)  # expired at 15


def test_chain_tracker_knows_which_clients_await_anything():
    from credhop.chains import ChainPosition, ChainTracker

    tracker = ChainTracker(ttl=10, max_pending=2)
    tracker.expect("10.0.0.1", "https://b.example/", ChainPosition("c1", 1), now=0)
    assert tracker.awaits("10.0.0.1") and not tracker.awaits("10.0.0.2")
    tracker.expect("10.0.0.2", "https://b.example/", ChainPosition("c2", 1), now=1)
    tracker.expect("10.0.0.3", "https://b.example/", ChainPosition("c3", 1), now=2)  # bound: drops c1
    assert not tracker.awaits("10.0.0.1") and tracker.awaits("10.0.0.3")
    tracker.follow("10.0.0.2", "https://b.example/", now=3)
    assert not tracker.awaits("10.0.0.2")
    tracker.follow("10.0.0.3", "https://nothing.example/", now=20)  # purges the expired c3
    assert not tracker.awaits("10.0.0.3") and not tracker
