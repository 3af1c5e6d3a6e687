"""Every await on a store that can stall has a deadline; in-process stores are awaited directly."""

from __future__ import annotations

import asyncio

from credhop import hop as addon_module
from credhop.store import MemoryStore
from tests.unit.addon_helpers import ENCODED, follow, hop, run_redirect  # noqa: F401  (hop is a fixture)


class SlowStore:
    """A remote store that never answers in time; it does not say `in_process`, so it is remote."""

    async def get(self, client, origin):
        await asyncio.sleep(10)

    async def grant(self, grant):
        await asyncio.sleep(10)

    def may_hold(self, client):
        return True

    def __len__(self):
        return 0


class SlowDeclaredRemote(SlowStore):
    in_process = False


def test_in_process_stores_are_awaited_without_a_deadline(hop, monkeypatch):
    def no_wait_for(*a, **kw):
        raise AssertionError("wait_for used for an in-process store")

    monkeypatch.setattr(addon_module.asyncio, "wait_for", no_wait_for)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    f = follow("https://registry.example/s/")
    hop.requestheaders(f)
    assert "authorization" in f.request.headers


def test_a_store_that_does_not_declare_itself_in_process_gets_the_deadline(hop, monkeypatch):
    monkeypatch.setattr(addon_module, "STORE_DEADLINE", 0.05)
    for n, store in enumerate((SlowDeclaredRemote(), SlowStore()), 1):
        hop.addon.store = store
        f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
        assert "aws" in f.response.headers["location"]  # the store did not answer: nothing changed
        assert hop.addon.counters["store_errors"] == n
    hop.addon.store = MemoryStore()
