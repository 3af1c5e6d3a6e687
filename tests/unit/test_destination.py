"""destination.py: which name a transparent-mode request may be said to go to, and the resolver."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import pytest

from credhop.destination import Resolver, host_name, ip, verified_origin
from credhop.urls import Origin

INDEX, EVIL = "10.10.9.20", "10.10.9.66"
DNS = {"index.corp.test": {INDEX}, "shared.corp.test": {INDEX, "10.10.9.21"}, "evil.corp.test": {EVIL}}


async def table(name: str):
    """The resolver's answers for these tests: a fixed table (the real one is tested below)."""
    return frozenset(ipaddress.ip_address(a) for a in DNS.get(name, ()))


def verdict(names, host=INDEX, port=443, scheme="https", transparent=True, original=None):
    original = original if original is not None else (host, port)
    return asyncio.run(verified_origin(transparent, scheme, host, port, names, table, original=original))


def test_regular_and_upstream_modes_keep_mitmproxys_host_whatever_the_client_says():
    for host in ("registry.example", "10.0.0.1", "Registry.Example"):
        v = verdict(("evil.corp.test", "evil.corp.test"), host=host, transparent=False)
        assert v.origin == Origin("https", host.lower(), 443) and v.how == "request"


def test_a_name_counts_only_when_the_proxy_resolves_it_to_the_original_destination():
    assert verdict(("index.corp.test", "index.corp.test")).origin == Origin("https", "index.corp.test", 443)
    assert verdict(("index.corp.test:443", None)).how == "verified"  # Host with its port; no SNI (http)
    assert verdict((None, "INDEX.corp.test")).origin.host == "index.corp.test"  # SNI only
    assert verdict(("shared.corp.test", None)).origin.host == "shared.corp.test"  # one of several addresses


@pytest.mark.parametrize("names", [
    ("index.corp.test", None),  # connection to evil's address, Host forged
    (None, "index.corp.test"),  # SNI forged
    ("index.corp.test", "index.corp.test"),  # both forged
    ("unknown.corp.test", None),  # resolves to nothing
    ("index.corp.test", "evil.corp.test"),  # they disagree
])
def test_a_forged_host_or_sni_leaves_the_bare_address(names):
    v = verdict(names, host=EVIL)
    assert v.origin == Origin("https", EVIL, 443) and v.how in ("address", "conflict")


def test_names_that_disagree_give_no_name_even_when_each_resolves_there():
    assert verdict(("index.corp.test", "shared.corp.test")).how == "conflict"


def test_another_port_in_host_or_an_address_elsewhere_counts_for_nothing():
    assert verdict(("index.corp.test:8443", None)).how == "conflict"
    assert verdict(("index.corp.test:8443", "index.corp.test")).how == "conflict"
    assert verdict(("bad name", "index.corp.test")).how == "conflict"
    assert verdict((f"{INDEX}", None)).origin.host == INDEX
    assert verdict((EVIL, None)).origin.host == INDEX
    assert verdict((EVIL, "index.corp.test")).how == "conflict"
    assert verdict((None, None)).how == "address"


def test_a_request_sent_elsewhere_than_the_original_destination_gets_no_name():
    # another addon rewrote request.host: the name was checked against an address that is not used
    assert verdict(("index.corp.test", None), original=("10.10.9.99", 443)).how == "address"
    assert verdict(("index.corp.test", None), original=(INDEX, 80)).how == "address"
    assert verdict(("index.corp.test", None), original=(f"::ffff:{INDEX}", 443)).how == "verified"


def test_a_name_in_transparent_mode_is_the_destination_itself():
    # an addon set request.host to a name: that is where mitmproxy connects, as in regular mode
    assert verdict(("evil.corp.test", None), host="index.corp.test").origin.host == "index.corp.test"


@pytest.mark.parametrize("text", ["", "a..b", "-a.b", "a b", "ex ample.test", "x" * 64 + ".test", "é.test",
                                  "a.test:80:80", "[::1]:99", "a.test:"])
def test_unusable_names_are_ignored(text):
    assert host_name(text, 443) is None


def test_host_name_spellings():
    assert host_name("Index.Corp.Test.", 443) == "index.corp.test."
    assert host_name("[::1]:443", 443) == "::1"
    assert host_name("10.0.0.1:80", 80) == "10.0.0.1"
    assert ip("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")


def test_the_resolver_answers_from_getaddrinfo_and_caches():
    calls = []

    async def getaddrinfo(name, port, type=0):
        calls.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (INDEX, 0))]

    now = [0.0]
    resolver = Resolver(ttl=30, clock=lambda: now[0], getaddrinfo=getaddrinfo)

    async def twice():
        return await asyncio.gather(resolver("Index.corp.test"), resolver("index.corp.test"))

    assert asyncio.run(twice()) == [frozenset({ipaddress.ip_address(INDEX)})] * 2
    assert calls == ["index.corp.test"]  # one query shared
    asyncio.run(resolver("index.corp.test"))
    assert len(calls) == 1
    now[0] = 31
    asyncio.run(resolver("index.corp.test"))
    assert len(calls) == 2


def test_a_lookup_that_misses_its_deadline_resolves_to_nothing_and_is_not_retried_at_once():
    calls = []

    async def stuck(name, port, type=0):
        calls.append(name)
        await asyncio.sleep(30)

    resolver = Resolver(deadline=0.1, negative_ttl=5, getaddrinfo=stuck)
    started = time.monotonic()
    assert asyncio.run(resolver("slow.corp.test")) == frozenset()
    assert time.monotonic() - started < 2
    assert asyncio.run(resolver("slow.corp.test")) == frozenset() and calls == ["slow.corp.test"]
    assert resolver.failures == 1


def test_failures_and_the_cache_bound():
    async def fails(name, port, type=0):
        raise socket.gaierror(socket.EAI_NONAME, "not known")

    resolver = Resolver(getaddrinfo=fails, max_cached=2)
    for n in range(5):
        assert asyncio.run(resolver(f"n{n}.test")) == frozenset()
    assert len(resolver._cache) == 2


def test_the_real_resolver_reads_localhost_without_the_network():
    assert ipaddress.ip_address("127.0.0.1") in asyncio.run(Resolver()("localhost")) or \
        ipaddress.ip_address("::1") in asyncio.run(Resolver()("localhost"))
