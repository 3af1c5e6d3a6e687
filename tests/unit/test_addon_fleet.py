"""The fleet options: the store refuses to start without a key, client identity by proxy user,
records naming their instance, and Prometheus metrics that agree with the hop log."""

from __future__ import annotations

import sys
import urllib.request

import pytest
from mitmproxy import exceptions
from mitmproxy.addons import proxyauth
from mitmproxy.test import taddons

from credhop.addon import CredHop
from tests.fixtures.fleet import free_port
from tests.unit.addon_helpers import ENCODED, RULES, TOKEN, basic, hop, run_redirect, send, sync  # noqa: F401

LOCATION = f"https://aws:{ENCODED}@registry.example/simple/pkg/"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"credhop_store": "redis://127.0.0.1:1/0"}, "needs credhop_store_key"),
     ({"credhop_store": "http://127.0.0.1:1/"}, "not 'memory' or a URL of redis:"),
     ({"credhop_store_timeout": 0}, "1..10000 milliseconds"),
     ({"credhop_client_id": "proxyauth"}, "needs mitmproxy's --proxyauth"),
     ({"credhop_metrics": "nonsense"}, "HOST:PORT")],
)
def test_fleet_options_refused(hop, tmp_path, options, message):
    if "http://" in options.get("credhop_store", ""):
        key = tmp_path / "k"
        key.write_text("ab" * 32)
        key.chmod(0o600)
        options = {**options, "credhop_store_key": str(key)}
    with pytest.raises(exceptions.OptionsError, match=message):
        hop.tctx.configure(hop.addon, **options)
    assert type(hop.addon.store).__name__ == "MemoryStore"  # nothing changed


@pytest.mark.parametrize("missing", ["redis", "redis.asyncio"])
def test_a_redis_store_without_the_redis_package_names_the_fleet_extra(hop, tmp_path, monkeypatch, missing):
    key = tmp_path / "k"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    for name in [m for m in list(sys.modules) if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # what the import system does without it
    with pytest.raises(exceptions.OptionsError) as e:
        hop.tctx.configure(hop.addon, credhop_store="redis://127.0.0.1:1/0", credhop_store_key=str(key))
    message = str(e.value)
    assert message.startswith("credhop_store: a Redis store needs the redis package (redis")
    assert message.endswith("): pip install 'credhop[fleet]'") and "\n" not in message
    assert type(hop.addon.store).__name__ == "MemoryStore"


def test_store_key_file_checked_and_never_echoed(hop, tmp_path):
    key = tmp_path / "store.key"
    key.write_text("not-a-key-secret-looking\n")
    key.chmod(0o600)
    with pytest.raises(exceptions.OptionsError) as e:
        hop.tctx.configure(hop.addon, credhop_store="redis://127.0.0.1:1/0", credhop_store_key=str(key))
    assert "64 hex digits" in str(e.value) and "secret-looking" not in str(e.value)


def test_records_name_their_instance(hop):
    hop.tctx.configure(hop.addon, credhop_instance="proxy-a:8080")
    run_redirect(hop, LOCATION)
    assert {r["instance"] for r in hop.records()} == {"proxy-a:8080"}
    assert len(hop.records()[0]["chain"]) == 16


def test_proxy_users_behind_one_address_never_share_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    auth, addon = proxyauth.ProxyAuth(), CredHop()
    with taddons.context(auth, addon) as tctx:
        tctx.configure(auth, proxyauth="any")
        tctx.configure(addon, credhop_rules=str(rules), credhop_client_id="proxyauth")

        class H:
            requestheaders = staticmethod(lambda f: sync(addon.requestheaders(f)))
            responseheaders = staticmethod(lambda f: sync(addon.responseheaders(f)))
            response = staticmethod(lambda f: sync(addon.response(f)))

        def as_user(user, flow):
            flow.metadata["proxyauth"] = (user, "proxy-password")
            return flow

        from tests.unit.addon_helpers import follow, redirect

        f = as_user("alice", redirect(LOCATION))
        H.responseheaders(f), H.response(f)
        bob = as_user("bob", follow("https://registry.example/simple/pkg/"))
        H.requestheaders(bob)
        assert "authorization" not in bob.request.headers  # same address, another user
        anonymous = follow("https://registry.example/simple/pkg/")
        H.requestheaders(anonymous)
        assert "authorization" not in anonymous.request.headers
        alice = as_user("alice", follow("https://registry.example/simple/pkg/", client=("10.9.9.9", 1)))
        H.requestheaders(alice)
        assert alice.request.headers["authorization"] == basic("aws", TOKEN)  # another address, same user
        # bob gets his own credential for the same origin, from the same address; each keeps his own
        f = as_user("bob", redirect("https://bob:bobs-own-token@registry.example/simple/pkg/"))
        H.responseheaders(f), H.response(f)
        bob = as_user("bob", follow("https://registry.example/simple/pkg/"))
        alice = as_user("alice", follow("https://registry.example/simple/pkg/"))
        H.requestheaders(bob), H.requestheaders(alice)
        assert bob.request.headers["authorization"] == basic("bob", "bobs-own-token")
        assert alice.request.headers["authorization"] == basic("aws", TOKEN)
        addon.done()


def test_metrics_scrape_matches_the_hop_log(hop):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    hop.tctx.configure(hop.addon, credhop_metrics=f"127.0.0.1:{port}")
    run_redirect(hop, LOCATION)
    f = send(hop, "https://registry.example/simple/pkg/")
    assert f.request.headers["authorization"]
    run_redirect(hop, f"https://aws:{ENCODED}@evil.example/x", url="https://other.example/")
    hop.addon._refresh_metrics()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    records = hop.records()
    redirects = sum(v for (n, _), v in samples.items() if n == "credhop_redirects_total")
    assert redirects == sum(1 for r in records if r["event"] == "redirect") == 2
    assert samples[("credhop_injections_total", (("rule", "registry"),))] == 1
    assert samples[("credhop_actions_total", (("action", "inject"), ("rule", "registry")))] == 1
    assert samples[("credhop_credentials_held", ())] == 1
    assert samples[("credhop_store_up", ())] == 1
    assert samples[("credhop_store_latency_seconds_count", (("op", "grant"),))] >= 1
    assert all("10.0.0.5" not in line and "registry.example" not in line for line in text.splitlines())
