"""Micro-benchmarks in this process: rule matching, the addon's hooks (taddons/tflow, called as mitmproxy
calls them: awaited when they answer with an awaitable), the stores. Memory of held credentials and pending follow-ups runs in a fresh process
(`python -m scripts.bench.micro memory ...`) so its RSS is its own."""

from __future__ import annotations

import asyncio
import base64
import gc
import inspect
import ipaddress
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from credhop.pending import ChainPosition, MemoryPending
from credhop.rules import Hop
from credhop.store import Grant, MemoryStore
from credhop.urls import Origin, parse_location

from . import rulegen

REPO = Path(__file__).resolve().parents[2]


def per_call(fn: Callable[[], Any], budget: float = 0.2, floor: int = 3) -> float:
    """Seconds per call of `fn`: best of 3 batches sized to take about budget/3 each."""
    n, t = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - start
        if t > budget / 10 or n >= 1 << 20:
            break
        n *= 4
    best = t / n
    for _ in range(floor - 1):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def rule_matching(counts: list[int], budget: float) -> list[dict]:
    rows = []
    client = ipaddress.ip_address("127.0.1.2")
    target = Hop(parse_location("http://aws:x@127.0.0.2:8082/f/1", "http://127.0.0.1:8081/r/1"), "127.0.0.1",
                 302, client)
    miss = Hop(parse_location("https://aws:x@files.elsewhere.example/f/1", "https://r.example/"), "r.example",
               302, client)
    suffix = Hop(parse_location("https://aws:x@a.b.svc5.corp.example/f/1", "https://r.example/"), "r.example",
                 302, client)
    for n in counts:
        rules = rulegen.to_ruleset(rulegen.specs(n))
        assert rules.first_match(target) is rules.rules[-1]
        row: dict[str, Any] = {"rules": n, "scanned": len(rules.index.always)}
        for name, hop in (("last", target), ("miss", miss), ("suffix", suffix)):
            assert rules.first_match(hop) is rules.first_match_linear(hop)
            row[f"index_{name}_us"] = per_call(lambda: rules.first_match(hop), budget) * 1e6
        row["linear_last_us"] = per_call(lambda: rules.first_match_linear(target), budget, floor=1) * 1e6
        rows.append(row)
    return rows


def stores(budget: float) -> list[dict]:
    loop = asyncio.new_event_loop()
    store = MemoryStore(max_entries=100_000)
    clock = time.time
    origin, issuer = Origin("https", "registry.example", 443), Origin("https", "redirector.example", 443)

    def grant(i: int) -> Grant:
        return Grant(client=f"10.0.{i % 250}.{i % 200}", origin=origin, issuer=issuer, header="Authorization",
                     value="Basic YXdzOnNlY3JldA==", rule="default", user="aws", fingerprint="hm:0",
                     expires=clock() + 600, override=False, chain="c", hop=1)

    for i in range(10_000):
        loop.run_until_complete(store.grant(grant(i)))
    g = grant(7)
    pending = MemoryPending(max_pending=100_000)
    position = ChainPosition("c", 1)
    counter = iter(range(10**9))

    async def expect_follow() -> None:
        url = f"https://registry.example/simple/{next(counter)}/"
        await pending.expect("10.0.0.1", url, origin, position)
        await pending.follow("10.0.0.1", url)

    rows = [
        ("MemoryStore.may_hold (client holds nothing)", lambda: store.may_hold("192.0.2.1")),
        ("MemoryStore.get (held)", lambda: loop.run_until_complete(store.get(g.client, origin))),
        ("MemoryStore.grant (replace)", lambda: loop.run_until_complete(store.grant(g))),
        ("MemoryPending.expect + follow", lambda: loop.run_until_complete(expect_follow())),
        ("(loop.run_until_complete of an empty coroutine, included above)",
         lambda: loop.run_until_complete(asyncio.sleep(0))),
    ]
    out = [{"op": name, "us": per_call(fn, budget) * 1e6} for name, fn in rows]
    loop.close()
    return out


def hooks(budget: float) -> list[dict]:
    """Each hook awaited as mitmproxy does, with flows made by tflow; shipped rules, hop log on and off."""
    from mitmproxy.test import taddons, tflow

    from credhop.addon import CredHop

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HOME", tmp)
        for hoplog in (False, True):
            addon = CredHop()
            with taddons.context(addon) as tctx:
                tctx.configure(addon, credhop_rules=str(REPO / "addons" / "credhop" / "rules.yaml"), confdir=tmp,
                               credhop_log=str(Path(tmp) / "hops.jsonl") if hoplog else "")
                out += _hook_rows(addon, tflow, budget, "hop log on" if hoplog else "hop log off")
                addon.done()
    return out


def _hook_rows(addon: Any, tflow: Any, budget: float, label: str) -> list[dict]:
    loop = asyncio.new_event_loop()
    counter = iter(range(10**9))

    def flow(url: str, client: str, resp: bool = False) -> Any:
        f = tflow.tflow(resp=resp)
        f.request.url = url
        f.client_conn.peername = (client, 40000)
        return f

    def plain() -> Any:
        return flow("https://files.example/simple/pkg/", "10.9.9.9")

    async def plain_request(f: Any) -> None:
        await _invoke(addon.requestheaders, f)

    async def plain_response(f: Any) -> None:
        f.response = RESPONSE
        await _invoke(addon.responseheaders, f)
        await _invoke(addon.response, f)

    def redirect_pair() -> tuple[Any, Any]:
        i = next(counter)
        r = flow(f"https://redirector.example/simple/{i}/", "10.0.0.5", resp=True)
        r.response.status_code = 302
        r.response.headers["location"] = f"https://aws:secret@registry.example/pypi/simple/{i}/"
        return r, flow(f"https://registry.example/pypi/simple/{i}/", "10.0.0.5")

    async def redirect(pair: tuple[Any, Any]) -> None:
        r, _ = pair
        await _invoke(addon.requestheaders, r)
        await _invoke(addon.responseheaders, r)
        await _invoke(addon.response, r)

    async def follow_up(pair: tuple[Any, Any]) -> None:
        _, f = pair
        await _invoke(addon.requestheaders, f)
        f.response = RESPONSE
        await _invoke(addon.responseheaders, f)
        await _invoke(addon.response, f)

    def download() -> Any:
        return flow(f"https://registry.example/pypi/files/{next(counter)}.whl", "10.0.0.5")

    RESPONSE = tflow.tresp()
    rows = []
    pairs: list[Any] = []
    for name, make, hook in [
        ("plain request, nothing held for the client: requestheaders+responseheaders+response", plain,
         lambda f: _both(plain_request, plain_response, f)),
        ("302 with userinfo: requestheaders+responseheaders+response", redirect_pair, redirect),
        ("its follow-up with injection: requestheaders+responseheaders+response", None, follow_up),
        ("download with the held credential: requestheaders+responseheaders+response", download,
         lambda f: _both(plain_request, plain_response, f)),
    ]:
        if make is None:  # follow-ups of the redirects just measured, in order
            made = pairs
        else:
            made = [make() for _ in range(2000)]
            if make is redirect_pair:
                pairs = made
        gc.collect()
        start = time.perf_counter()
        loop.run_until_complete(_all(hook, made))
        rows.append({"hook": name, "config": label, "us": (time.perf_counter() - start) / len(made) * 1e6})
    start = time.perf_counter()
    loop.run_until_complete(_all(_nothing, made))
    rows.append({"hook": "(the same loop awaiting a no-op, included above)", "config": label,
                 "us": (time.perf_counter() - start) / len(made) * 1e6})
    loop.close()
    return rows


async def _invoke(hook: Any, f: Any) -> None:
    """As mitmproxy's `invoke_addon`: a hook's answer is awaited only when it is awaitable."""
    result = hook(f)
    if result is not None and inspect.isawaitable(result):
        await result


async def _nothing(_: Any) -> None:
    pass


async def _both(a: Any, b: Any, f: Any) -> None:
    await a(f)
    await b(f)


async def _all(hook: Any, items: list) -> None:
    for item in items:
        await hook(item)


# -- memory (own process) ---------------------------------------------------------------------------

def scrubbing(counts: list[int], budget: float) -> list[dict]:
    """`Redactor` on a credential redirect's event line and on a follow-up URL, with `n` credentials
    remembered (each a user and a 24-character token, as secret_forms spells them)."""
    from credhop.credentials import Credential
    from credhop.scrub import Redactor, remembered_for

    line = ("credhop [e7503a79805888df#0] 127.0.1.2 redirect: 302 http://127.0.0.1:36279/r/m-1-1497 -> "
            "http://aws:***@127.0.0.2:33141/f/m-1-1497 rule=default action=inject credential user=aws "
            "fp=hm:45284cbdac59f0b3")
    url = "https://registry.example/pypi/simple/some-package-name/?page=2&sort=name#downloads-and-files"
    rows = []
    for n in counts:
        redactor = Redactor(remembered=remembered_for(n))
        for i in range(n):
            redactor.remember(Credential("aws", f"tok{i:06d}" + "q" * 15).secret_forms())
        rows.append({"credentials": n, "forms": len(redactor.known()),
                     "line_us": per_call(lambda: redactor(line), budget) * 1e6,
                     "url_us": per_call(lambda: redactor(url), budget) * 1e6})
    return rows


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(credentials: int, pending_n: int, own_origins: bool = False) -> dict:
    """RSS growth of a full store and a full pending table. Each client holds grants for its own
    set of origins; the registries are shared between clients (1,000 of them), as in a fleet, unless
    `own_origins`: then every grant goes to an origin no other grant has (the store's worst case)."""
    loop = asyncio.new_event_loop()
    clients = max(1, credentials // 1000)
    now = time.time()
    issuer = Origin("https", "redirector.corp.example", 443)
    out: dict[str, Any] = {"credentials": credentials, "pending": pending_n}
    gc.collect()
    before = _rss()
    store = MemoryStore(max_entries=credentials, clock=lambda: now)
    client_names = [f"10.{c >> 16 & 255}.{c >> 8 & 255}.{c & 255}" for c in range(clients)]
    start = time.perf_counter()
    for i in range(credentials):
        c = client_names[i % clients]
        value = "Basic " + base64.b64encode(f"aws:{i:032x}".encode()).decode()  # unique per grant
        loop.run_until_complete(store.grant(Grant(
            client=c, origin=Origin("https", f"pkg{i if own_origins else i // clients}.registry.example", 443),
            issuer=issuer,
            header="Authorization", value=value, rule="default", user="aws", fingerprint=f"hm:{i:016x}",
            expires=now + 600 + i % 600, override=False, chain=f"{i:012x}", hop=1)))
    out["grant_fill_us"] = (time.perf_counter() - start) / credentials * 1e6
    gc.collect()
    out["credentials_rss_mb"] = (_rss() - before) / 2**20
    out["held"] = len(store)
    out["own_origins"] = own_origins
    if own_origins:
        return out
    extra = max(1, credentials // 100)
    start = time.perf_counter()
    for i in range(extra):
        c = client_names[i % clients]
        loop.run_until_complete(store.grant(Grant(
            client=c, origin=Origin("https", f"more{i}.registry.example", 443), issuer=issuer,
            header="Authorization", value="Basic eA==", rule="default", user="aws", fingerprint="hm:1",
            expires=now + 600, override=False, chain="c", hop=1)))
    out["evicting_grant_us"] = (time.perf_counter() - start) / extra * 1e6
    out["extra"] = extra
    out["held_after"] = len(store)
    out["evicted"] = store.evicted
    del store
    gc.collect()
    before = _rss()
    pending = MemoryPending(max_pending=pending_n, clock=lambda: now)
    position = ChainPosition("0123456789ab", 1, came_from=issuer, on_leak=rulegen.Action.STRIP)
    start = time.perf_counter()
    for i in range(pending_n):
        loop.run_until_complete(pending.expect(client_names[i % clients],
                                               f"https://pkg{i}.registry.example/simple/pkg{i}/",
                                               Origin("https", f"pkg{i}.registry.example", 443), position))
    out["expect_fill_us"] = (time.perf_counter() - start) / pending_n * 1e6
    gc.collect()
    out["pending_rss_mb"] = (_rss() - before) / 2**20
    for i in range(max(1, pending_n // 10)):
        loop.run_until_complete(pending.expect("10.0.0.1", f"https://x{i}.example/",
                                               Origin("https", f"x{i}.example", 443), position))
    out["pending_after"] = len(pending)
    out["pending_extra"] = max(1, pending_n // 10)
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["memory"]:
    print(json.dumps(memory(int(sys.argv[2]), int(sys.argv[3]), own_origins=sys.argv[4:5] == ["own-origins"])))
