"""Which clients have shared state somewhere in the fleet, known without asking Redis per request.

Most requests come from clients with nothing held or pending anywhere. With a shared store each
such request would still cost a round trip to Redis, only to hear "nothing". Instead every script
that writes state for a client (a grant, an expected follow-up) also adds the client's sealed name
to one sorted set with the time its state ends, and PUBLISHes the name on one channel, in the same
atomic step. Each instance keeps the names it heard; a request asks Redis only when its client's
name is there (or when this instance cannot be sure, below).

Why this cannot inject wrongly: the names only decide whether to ask. Every grant and follow-up
still comes from Redis (or this instance's own local copy), so a missed or late message can only
make this instance answer "nothing held": a missed injection, never a wrong one.

When it cannot be sure, it asks on every request, as without it:
- until it has subscribed and then read the sorted set (messages during the read are kept too);
- after the subscription fails, or its heartbeat (a PING on the subscribed connection) goes
  unanswered for `STALE_AFTER` seconds: then it resubscribes and reads the set again;
- while the fleet key is being rotated (names differ between key generations).
The gap this leaves: a message published while this instance's subscription is dead but not yet
noticed (at most `STALE_AFTER` seconds), and a follow-up that reaches this instance before the
message does (measured in tests/unit/test_presence.py). Both can only miss an injection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .deadlines import within

log = logging.getLogger("credhop")

CHANNEL = "credhop:v1:present"  # messages: "<sealed client name> <until, ms since the epoch>"
SET = "present"  # after a key tag (redis_store.RedisLink.tag): sorted set, sealed client name -> until (ms)
KEY = "credhop:v1:" + SET  # the one set with a single primary; Redis Cluster has one per bucket
HEARTBEAT = 0.5  # seconds between PINGs on the subscribed connection
STALE_AFTER = 2.0  # no answer to a PING for this long: the subscription is not trusted
RETRY_AFTER = 0.5  # seconds before subscribing again
SKEW = 5.0  # seconds an entry is kept past its end: instances' clocks differ a little
MAX_NAMES = 1_000_000  # beyond this many clients with state, ask on every request
MAX_CACHED = 100_000  # client -> sealed name


class Presence:
    def __init__(self, link: Any, clock: Any = time.time) -> None:
        self.link, self.clock = link, clock
        self.until: dict[str, float] = {}  # sealed name -> when its state ends (s since the epoch)
        self.epochs: dict[str, int] = {}  # sealed name -> writes heard for it (see `epoch`)
        self.generation = 0  # goes up whenever a message may have been missed
        self.live = False  # subscribed, heartbeat answered, and the set read since
        self.skipped = 0  # requests answered "nothing" without asking Redis
        self.resyncs = 0
        self._names: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def name(self, client: str) -> str:
        name = self._names.get(client)
        if name is None:
            if len(self._names) >= MAX_CACHED:
                self._names.clear()
            name = self._names[client] = self.link.sealer.name("client", client)
        return name

    def may_have(self, client: str) -> bool:
        """False only when no instance has written state for `client` that is still live."""
        if not self.live or self.link.sealer.generations > 1:
            self._start()
            return True
        until = self.until.get(self.name(client))
        if until is not None and until + SKEW > self.clock():
            return True
        self.skipped += 1
        return False

    def epoch(self, client: str) -> tuple[int, int] | None:
        """Changes with every write for `client` anywhere in the fleet, and with every gap in what this
        instance heard: an answer read from Redis stays true while this stays the same (up to the
        message's way here). None when it cannot tell."""
        if not self.live or self.link.sealer.generations > 1:
            return None
        return self.generation, self.epochs.get(self.name(client), 0)

    def wrote(self, client: str, until: float) -> None:
        """This instance wrote state for `client` (the script published it too)."""
        self._note(self.name(client), until)

    def _note(self, name: str, until: float) -> None:
        self.epochs[name] = self.epochs.get(name, 0) + 1
        if until > self.until.get(name, 0.0):
            self.until[name] = until
            if len(self.until) > MAX_NAMES:
                self._prune()
                if len(self.until) > MAX_NAMES:
                    self._distrust("more clients with state than it keeps names for")

    def _prune(self) -> None:
        now = self.clock() - SKEW
        self.until = {n: u for n, u in self.until.items() if u > now}
        self.epochs = {n: e for n, e in self.epochs.items() if n in self.until}
        self.generation += 1  # an epoch dropped here starts again from 0: no view may match it

    def _distrust(self, why: str) -> None:
        self.generation += 1
        if self.live:
            log.info("credhop: shared store %s: asking it on every request again (%s)", self.link.where, why)
        self.live = False

    # -- the subscription ---------------------------------------------------------------

    def _start(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            self._task = asyncio.get_running_loop().create_task(self._run())
        except RuntimeError:  # no event loop yet: the next request starts it
            pass

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the subscription failed: ask on every request until it is back
                self._distrust(f"subscription lost: {type(e).__name__}")
            await asyncio.sleep(RETRY_AFTER)

    async def _listen(self) -> None:
        timeout = max(self.link.timeout, 0.05)
        pubsub = self.link.redis.pubsub()
        try:
            await asyncio.wait_for(pubsub.subscribe(CHANNEL), STALE_AFTER)
            await self._resync(timeout)
            answered = last_ping = time.monotonic()
            while not self._closed:
                now = time.monotonic()
                if now - last_ping >= HEARTBEAT:
                    await within(pubsub.ping(), timeout)
                    last_ping = now
                if now - answered > STALE_AFTER:
                    raise TimeoutError("no answer to the heartbeat")
                message = await pubsub.get_message(timeout=HEARTBEAT / 2)
                if message is None:
                    continue
                answered = time.monotonic()
                if message.get("type") == "message":
                    self._heard(message.get("data"))
                if len(self.until) > MAX_NAMES // 2 and now - last_ping < 0.01:
                    self._prune()
        finally:
            self.live = False
            self.generation += 1
            try:
                await asyncio.wait_for(pubsub.aclose() if hasattr(pubsub, "aclose") else pubsub.reset(), timeout)
            except Exception:
                pass

    async def _resync(self, timeout: float) -> None:
        """Read every live name, after subscribing: what is published meanwhile is heard as well."""
        now_ms = int((self.clock() - SKEW) * 1000)
        if getattr(self.link, "cluster", False):  # a set per bucket; each GRANT and EXPECT prunes its own
            pipe = self.link.redis.pipeline(transaction=False)
            for key in self.link.presence_keys():
                pipe.zrangebyscore(key, now_ms, "+inf", withscores=True)
            entries = [e for found in await within(pipe.execute(), max(timeout, STALE_AFTER))
                       for e in found]
        else:
            await within(self.link.redis.zremrangebyscore(KEY, "-inf", now_ms), timeout)
            entries = await within(self.link.redis.zrangebyscore(KEY, now_ms, "+inf", withscores=True),
                                   max(timeout, STALE_AFTER))
        for name, until_ms in entries:
            self._note(name.decode() if isinstance(name, bytes) else str(name), float(until_ms) / 1000)
        self.resyncs += 1
        self.live = len(self.until) <= MAX_NAMES
        log.debug("credhop: shared store %s: %d client(s) with state known; plain requests of others skip it",
                  self.link.where, len(entries))

    def _heard(self, data: Any) -> None:
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        name, _, until_ms = text.partition(" ")
        try:
            self._note(name, int(until_ms) / 1000)
        except ValueError:  # not ours: ignore, but never trust the set less because of it
            pass

    async def close(self) -> None:
        self._closed = True
        self.live = False
        if self._task:
            self._task.cancel()
