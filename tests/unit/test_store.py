"""The in-memory credential store: exact binding, real expiry, atomic swap refusal, fair bounds."""

from __future__ import annotations

import asyncio

from credhop.records import Why
from credhop.store import Grant, MemoryStore
from credhop.urls import Origin
from tests.unit.addon_helpers import Clock

A = Origin("https", "a.example", 443)
REDIRECTOR = Origin("https", "redirector.example", 443)


def grant(client="10.0.0.1", origin=A, expires=100.0, issuer=REDIRECTOR, fingerprint="hm:1") -> Grant:
    return Grant(client, origin, issuer, "Authorization", "Basic xyz", "r", "u", fingerprint, expires, False, "c", 1)


def run(coro):
    return asyncio.run(coro)


def test_grant_repr_hides_the_value():
    assert "Basic xyz" not in repr(grant())


def test_store_binds_to_client_and_exact_origin_until_expiry():
    clock = Clock(50)
    store = MemoryStore(clock=clock)
    assert run(store.grant(grant())) is None
    assert run(store.get("10.0.0.1", A)) is not None
    assert run(store.get("10.0.0.2", A)) is None
    assert run(store.get("10.0.0.1", Origin("http", "a.example", 443))) is None
    assert run(store.get("10.0.0.1", Origin("https", "a.example", 8443))) is None
    assert run(store.get("10.0.0.1", Origin("https", "b.a.example", 443))) is None
    clock.now = 100
    assert run(store.get("10.0.0.1", A)) is None  # expired, and dropped
    assert len(store) == 0


def test_expired_grants_leave_the_count_without_being_looked_up():
    # issue 12, defect 5: the count (and with it the hot path's "anything held?") never went down
    clock = Clock(0)
    store = MemoryStore(clock=clock)
    for i in range(50):
        run(store.grant(grant(client=f"10.0.0.{i}", expires=10 + i)))
    assert len(store) == 50 and store.may_hold("10.0.0.49")
    clock.now = 30
    assert len(store) == 29 and not store.may_hold("10.0.0.0") and store.may_hold("10.0.0.49")
    clock.now = 60
    assert len(store) == 0 and not store.may_hold("10.0.0.49") and store.expired == 50


def test_a_replaced_grant_expires_on_its_own_time():
    clock = Clock(0)
    store = MemoryStore(clock=clock)
    run(store.grant(grant(expires=10)))
    run(store.grant(grant(expires=100)))  # the same redirector hands out a fresh one
    clock.now = 50
    assert run(store.get("10.0.0.1", A)).expires == 100 and len(store) == 1


def test_another_issuer_cannot_swap_a_live_credential_but_the_same_one_can_renew():
    store = MemoryStore(clock=Clock(0))
    run(store.grant(grant()))
    refusal = run(store.grant(grant(issuer=Origin("https", "evil.example", 443), fingerprint="hm:evil")))
    assert refusal and refusal.why is Why.SWAP_REFUSED and "redirector.example" in refusal.reason
    assert run(store.get("10.0.0.1", A)).fingerprint == "hm:1"
    assert run(store.grant(grant(fingerprint="hm:2"))) is None  # same issuer: a fresh token
    assert run(store.grant(grant(issuer=Origin("https", "mirror.example", 443), fingerprint="hm:2"))) is None


def test_store_is_bounded_and_the_fullest_client_pays():
    store = MemoryStore(max_entries=4, max_per_client=3, clock=Clock(0))
    run(store.grant(grant(client="victim")))
    for i in range(100):  # a client flooding the proxy with userinfo redirects
        run(store.grant(grant(client="attacker", origin=Origin("https", f"h{i}.example", 443))))
    assert len(store) == 4 and store.evicted == 97
    assert run(store.get("victim", A)) is not None
    # the victim's grant still refuses the attacker's credential for the victim's registry
    refusal = run(store.grant(grant(client="victim", issuer=Origin("https", "x.example", 443), fingerprint="hm:x")))
    assert refusal is not None


def test_a_grant_comes_back_exactly_as_it_went_in():
    # grants are held packed (one bytes object each): every field must survive, odd text included
    store = MemoryStore(clock=Clock(0))
    g = Grant("10.0.0.1", Origin("https", "[::1]", 8443), REDIRECTOR, "X-Token", "tök\udcff€ value", "rule ü",
              None, "hm:ü", 1234.5678, True, "chain-ü", 70000)
    run(store.grant(g))
    assert run(store.get("10.0.0.1", Origin("https", "[::1]", 8443))) == g


def test_shared_parts_go_when_their_last_grant_goes():
    clock = Clock(0)
    store = MemoryStore(max_entries=10, max_per_client=2, clock=clock)
    for i in range(200):  # each with its own issuer and origin, as a hostile redirector could make
        run(store.grant(grant(client=f"10.0.{i % 7}.1", origin=Origin("https", f"h{i}.example", 443),
                              issuer=Origin("https", f"i{i}.example", 443), expires=10)))
    assert len(store) == 10 and len(store._terms) == 10
    clock.now = 11
    assert len(store) == 0 and len(store._terms) == 0 and not store._clients and not store._read


def test_origins_only_their_own_key_can_find():
    # grants are keyed by one string per origin: origins a careless encoding would spell alike
    # (separators inside the scheme or the host, IPv6 hosts, odd ports) must stay apart
    store = MemoryStore(clock=Clock(0))
    origins = [Origin("a://b", "c", 1), Origin("a", "b://c", 1), Origin("a:b", "c", 1), Origin("a", "b:c", 1),
               Origin("https", "::1", 443), Origin("https", "[::1]", 443), Origin("https", "::1:443", 443),
               Origin("https", "h", 0), Origin("https", "h", 65535), Origin("https", "5h", 44), Origin("https", "h", 445),
               Origin("1https", "h", 443), Origin("http", "sh", 443), Origin("", "https443:h", 1)]
    for i, origin in enumerate(origins):
        run(store.grant(grant(origin=origin, fingerprint=f"hm:{i}")))
    assert len(store) == len(origins)
    for i, origin in enumerate(origins):
        got = run(store.get("10.0.0.1", Origin(origin.scheme, origin.host, origin.port)))
        assert got is not None and got.fingerprint == f"hm:{i}" and got.origin == origin
    assert run(store.get("10.0.0.1", Origin("https", "h", 44))) is None


def test_clients_granted_one_origin_share_its_key_and_keep_their_own_grants():
    clock = Clock(0)
    store = MemoryStore(clock=clock)
    run(store.grant(grant(client="10.0.0.1", expires=10)))
    run(store.grant(grant(client="10.0.0.2", expires=20, fingerprint="hm:2")))
    run(store.grant(grant(client="10.0.0.2", expires=30, fingerprint="hm:3")))  # renewed
    (one,), (two,) = store._clients["10.0.0.1"], store._clients["10.0.0.2"]
    assert one is two  # one string for the registry, however many clients hold a grant for it
    clock.now = 15
    assert run(store.get("10.0.0.1", A)) is None
    assert run(store.get("10.0.0.2", A)).fingerprint == "hm:3" and len(store) == 1


def test_the_shared_keys_are_bounded_and_lookups_survive_their_clearing(monkeypatch):
    import credhop.store as store_module

    monkeypatch.setattr(store_module, "MAX_KEYS", 8)
    store = MemoryStore(max_entries=10, clock=Clock(0))
    for i in range(store_module.MAX_KEYS + 10):  # a flood of origins of their own
        run(store.grant(grant(client=f"10.0.{i % 5}.1", origin=Origin("https", f"h{i}.example", 443))))
    assert len(store._keys) <= store_module.MAX_KEYS and len(store) == 10
    last = Origin("https", f"h{store_module.MAX_KEYS + 9}.example", 443)
    assert run(store.get(f"10.0.{(store_module.MAX_KEYS + 9) % 5}.1", last)).origin == last


def test_a_client_loses_its_least_recently_used_grant_first():
    store = MemoryStore(max_per_client=3, clock=Clock(0))
    b, c, d = (Origin("https", f"{n}.example", 443) for n in "bcd")
    for origin in (A, b, c):
        run(store.grant(grant(origin=origin)))
    assert run(store.get("10.0.0.1", A)) is not None  # A is used again: b is now the oldest
    run(store.grant(grant(origin=d)))
    assert run(store.get("10.0.0.1", b)) is None and store.evicted == 1
    assert all(run(store.get("10.0.0.1", o)) is not None for o in (A, c, d))


def test_the_fullest_client_is_known_without_a_scan_and_always_right():
    # eviction picks the fullest client from counts kept as grants come and go; check those counts
    # against the grants themselves through a random mix of grants, replacements, expiry and eviction
    import random

    rng = random.Random(14)
    clock = Clock(0)
    store = MemoryStore(max_entries=40, max_per_client=12, clock=clock)
    for step in range(3000):
        client = f"10.0.0.{rng.randrange(9)}"
        origin = Origin("https", f"h{rng.randrange(30)}.example", 443)
        run(store.grant(grant(client=client, origin=origin, expires=clock.now + rng.randrange(1, 20))))
        if step % 50 == 0:
            clock.now += rng.randrange(5)
            len(store)  # expires what is due
        sizes = [len(g) for g in store._clients.values()]
        assert store._largest == max(sizes, default=0)
        assert sum(len(c) for c in store._by_size.values()) == len(sizes)
        assert all(len(store._clients[c]) == n for n, cs in store._by_size.items() for c in cs)
        assert len(store) <= 40 and max(sizes, default=0) <= 12


def test_a_grant_read_again_is_the_one_held_now():
    # `get` keeps what it last read back for a download's next request: a replaced, dropped or
    # evicted grant must never come back from there
    clock = Clock(0)
    store = MemoryStore(max_entries=2, clock=clock)
    run(store.grant(grant(expires=50)))
    assert run(store.get("10.0.0.1", A)).expires == 50
    run(store.grant(grant(expires=80)))  # the same redirector hands out a fresh one
    assert run(store.get("10.0.0.1", A)).expires == 80
    fresh = Grant("10.0.0.1", A, REDIRECTOR, "Authorization", "Basic new", "r", "u", "hm:1", 90.0, False, "d", 2)
    run(store.grant(fresh))
    assert run(store.get("10.0.0.1", A)).chain == "d"
    run(store.grant(grant(client="10.0.0.2")))
    run(store.grant(grant(client="10.0.0.3")))  # the store is full: 10.0.0.1's grant is evicted
    assert run(store.get("10.0.0.1", A)) is None
    assert all(key[0] != "10.0.0.1" for key in store._read)  # not kept, not even as read back
