"""Store deadlines: a call whose answer came in time is not failed because the proxy's own event
loop was busy past its deadline; a call that gets no answer still fails, within (1 + GRACES) timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest

from credhop.deadlines import GRACES, within
from credhop.redis_store import RedisLink, RedisStore
from credhop.sealing import Sealer
from tests.unit.test_redis_store import B, K1, grant, redis, redis_server  # noqa: F401  (fixtures)

TIMEOUT = 0.2


def block_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a burst of flows or a long garbage collection does to the loop


def test_an_answer_that_came_while_the_loop_was_busy_is_taken():
    async def go():
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        loop.call_later(TIMEOUT / 2, answer.set_result, "answered")
        loop.call_later(TIMEOUT / 4, block_loop, TIMEOUT * 3)  # busy from before the answer to past the deadline
        return await within(answer, TIMEOUT)

    assert asyncio.run(go()) == "answered"


@pytest.mark.parametrize("busy", [0.0, TIMEOUT * 3])
def test_a_call_never_answered_fails_within_its_graces_plus_the_lag(busy):
    async def go():
        loop = asyncio.get_running_loop()
        if busy:
            loop.call_later(TIMEOUT / 4, block_loop, busy)
        start = loop.time()
        with pytest.raises(TimeoutError):
            await within(loop.create_future(), TIMEOUT)
        return loop.time() - start

    waited = asyncio.run(go())
    assert TIMEOUT * 0.9 <= waited <= (1 + GRACES) * TIMEOUT + busy + 0.1
    if not busy:
        assert waited < TIMEOUT * 1.5  # on an idle loop, no grace: a dead store costs one timeout


def test_the_call_is_cancelled_when_its_deadline_passes():
    cancelled = []

    async def never() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def go():
        with pytest.raises(TimeoutError):
            await within(never(), 0.05)
        # a cancellation from outside still reaches the caller as a cancellation
        task = asyncio.ensure_future(within(never(), 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert cancelled == [True, True]


def test_a_busy_proxy_does_not_take_a_healthy_redis_for_down(redis):  # noqa: F811
    """Real redis-server: it answers a GET while the loop is blocked, past the store's timeout."""

    async def go():
        link = RedisLink(redis.url, Sealer([K1]), TIMEOUT)
        store = RedisStore(link)
        await store.grant(grant())
        await store.get("10.0.0.1", B)  # connected; a client with state: each get asks Redis
        seen = link.observer
        asked = []
        link.observer = lambda op, seconds, cause: (asked.append(cause), seen(op, seconds, cause))
        loop = asyncio.get_running_loop()

        def answer_while_busy() -> None:  # Redis answers at once, while the proxy's loop is busy
            redis.thaw()
            block_loop(TIMEOUT * 3)

        redis.freeze()  # the request is sent; its answer waits until the loop is busy
        loop.call_later(TIMEOUT / 4, answer_while_busy)
        got = await store.get("10.0.0.1", grant().origin)
        down = link.down
        assert asked == [None]  # Redis was asked, and answered
        await link.close()
        return got, down

    got, down = asyncio.run(go())
    assert not down
    assert got is not None and got.value == "Basic xyz"
