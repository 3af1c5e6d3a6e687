"""Where credhop's CPU goes inside a running mitmdump: load this script after credhop and it wraps
credhop's hooks, the decision functions and every sink, adding up the thread CPU time of each call;
at shutdown it prints one line per part. A profiling aid, not part of the proxy.

    mitmdump -s addons/credhop.py -s scripts/bench/hook_cpu.py ...   # then load, then stop it

Figures include this wrapper's own cost (two clock reads per call), and under load they are several
times what the same code costs alone: compare parts with each other, not with micro-benchmarks.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from mitmproxy import ctx

HOOKS = ("requestheaders", "responseheaders", "response")
DECISIONS = ("decide_redirect", "decide_follow_up", "redirect_record", "apply_redirect")


class HookCPU:
    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}  # part -> [calls, seconds]

    def _add(self, part: str, seconds: float) -> None:
        entry = self.spent.setdefault(part, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def _timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(part, time.thread_time() - start)
        return timed

    def _timed_async(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()  # the hooks never wait on I/O with the memory store
            try:
                return await fn(*args, **kwargs)
            finally:
                self._add(part, time.thread_time() - start)
        return timed

    def running(self) -> None:
        for addon in _walk(ctx.master.addons.chain):
            if type(addon).__name__ != "CredHop":
                continue
            for name in HOOKS:
                setattr(addon, name, self._timed_async(name, getattr(addon, name)))
            module = sys.modules[type(addon).__module__]
            for name in DECISIONS:
                setattr(module, name, self._timed(name, getattr(module, name)))
            for sink in addon.sinks.sinks:
                sink.emit = self._timed(f"sink {type(sink).__name__}", sink.emit)
            print("hook_cpu: timing credhop", flush=True)

    def done(self) -> None:
        for part, (calls, seconds) in sorted(self.spent.items(), key=lambda kv: -kv[1][1]):
            print(f"hook_cpu: {part}: {calls} calls, {seconds / calls * 1e6:.1f} µs thread CPU each, "
                  f"{seconds:.3f} s in all", flush=True)


def _walk(addons: list[Any], depth: int = 0) -> list[Any]:
    """Every addon, those of script loaders and scripts included."""
    found = []
    for addon in addons:
        found.append(addon)
        if depth < 4:
            found += _walk(list(getattr(addon, "addons", None) or []), depth + 1)
    return found


addons = [HookCPU()]
