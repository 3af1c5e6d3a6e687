"""What presence costs each instance: CPU per message heard (redis-py's pub/sub reading plus
`Presence._heard`). Every write of the fleet (a grant, an expected follow-up) is one message to every
instance, so this is what the fleet's write rate costs each of them (docs/fleet.md, Sizing).

A real redis-server; the messages are published by redis-cli, another process, so this process's CPU
time is the subscriber's alone; the same wall time idle is measured and taken off (the heartbeat).

    .venv/bin/python -m scripts.fleet.presence_cost [MESSAGES]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "addons"))

from credhop import presence  # noqa: E402
from tests.fixtures.fleet import RedisServer, find  # noqa: E402


class _Sealer:
    generations = 1

    @staticmethod
    def name(kind: str, client: str) -> str:
        return client


class _Link:
    """What Presence reads of its link (redis_store.RedisLink)."""

    def __init__(self, client: object) -> None:
        self.redis, self.timeout, self.where, self.cluster, self.sealer = client, 0.2, "bench", False, _Sealer()


async def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def measure(port: int, messages: int) -> dict:
    import redis.asyncio as redis

    client = redis.Redis(port=port)
    heard = presence.Presence(_Link(client))
    heard._start()
    if not await _until(lambda: heard.live, 10):
        raise RuntimeError("presence never subscribed")
    until = int((time.time() + 600) * 1000)
    lines = "".join(f'PUBLISH {presence.CHANNEL} "{os.urandom(16).hex()} {until}"\n' for _ in range(messages))
    wall, cpu = time.monotonic(), time.process_time()
    cli = subprocess.Popen([find("redis-cli", "CREDHOP_REDIS_CLI") or "redis-cli", "-p", str(port)],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    await asyncio.get_running_loop().run_in_executor(None, cli.communicate, lines.encode())
    if not await _until(lambda: len(heard.until) >= messages, 120):
        raise RuntimeError(f"heard {len(heard.until)} of {messages} messages")
    busy, wall = time.process_time() - cpu, time.monotonic() - wall
    cpu = time.process_time()
    await asyncio.sleep(wall)  # the same time with nothing published: the heartbeat's share
    idle = time.process_time() - cpu
    await heard.close()
    await client.aclose()
    return {"messages": messages, "seconds": wall, "us_per_message": (busy - idle) / messages * 1e6}


def main(argv: list[str]) -> int:
    messages = int(argv[0]) if argv else 20_000
    with tempfile.TemporaryDirectory(prefix="credhop-presence-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            found = asyncio.run(measure(server.port, messages))
        finally:
            server._stop()
    print(f"{found['messages']:,} messages heard in {found['seconds']:.1f} s: "
          f"{found['us_per_message']:.1f} µs of CPU each, idle heartbeat taken off")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
