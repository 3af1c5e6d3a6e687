"""Deadlines on store calls that a busy event loop does not miss on the store's behalf.

`asyncio.wait_for` measures wall time, loop lag included: when the proxy itself is busy (a burst of
flows, a garbage collection) past a call's deadline, the reply may already sit in the socket while the
timer fires first and cancels the call. A healthy Redis would then be taken for down, and a client
denied its credential. Here a deadline that fires late, because the loop was busy, gives the call one
grace period more, counted from when the loop is free again; a deadline that fires on time cancels
it as wait_for would. So a call waits at most `(1 + GRACES) × timeout` plus the loop's own lag.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")

LATE = 0.02  # seconds: a timer this late means the loop, not the awaited call, was busy
GRACES = 2  # deadlines missed by a busy loop that each give the call one timeout more


def longest(timeout: float) -> float:
    """The most a call given `timeout` can wait, the loop's lag aside."""
    return (1 + GRACES) * timeout


async def within(call: Awaitable[T], timeout: float) -> T:
    """`await call`, raising TimeoutError once it had `timeout` seconds of a loop free to read its answer."""
    loop = asyncio.get_running_loop()
    graces = GRACES
    async with asyncio.timeout_at(None) as scope:

        def on_deadline(deadline: float) -> None:
            nonlocal check, graces
            now = loop.time()
            if now - deadline <= LATE or not graces:
                scope.reschedule(now)  # the call had its chance: cancel it now
            else:  # the loop was busy until now: the answer may be waiting unread
                graces -= 1
                check = loop.call_at(now + timeout, on_deadline, now + timeout)

        check = loop.call_at(loop.time() + timeout, on_deadline, loop.time() + timeout)
        try:
            return await call
        finally:
            check.cancel()
