"""Grants and pending follow-ups shared by a fleet of proxies through Redis (`credhop_store=redis://…`).

`RedisStore` is a `CredentialStore`, `RedisPending` a `PendingFollowUps`; both talk through one
`RedisLink`, which bounds every call by `credhop_store_timeout`, never retries, and counts and logs
failures once per outage. While Redis is down or slow nothing waits on it: each instance keeps a
local copy of the grants it made itself (so they keep working here) and holds the follow-ups it
expects locally; when Redis answers again, sharing resumes.

What Redis holds: key names are HMACs (`sealing.Sealer.name`) of the client and the origin or URL,
values are sealed with the fleet key and their key name as associated data. The swap check needs no
plaintext: a grant's hash stores HMACs of its issuer and fingerprint beside the sealed value, and a
Lua script compares them and stores in one step, so two instances racing for the same client and
origin cannot both win. The same script keeps the per-client and global bounds: a client holding
more than `max_per_client` grants loses the one that expires first, and when the fleet holds more
than `max_entries` the client holding the most loses its. Redis 7.0 commands only.

Redis Cluster (`redis+cluster://host:port,…`): a script runs on one slot, so every key a client's
decision touches carries the hash tag of its bucket, one of `BUCKETS` by its sealed name, and what was
global is per bucket: the count and the "client holding the most" of the bound (each bucket holds at
most its share of `max_entries`, with some slack), and the presence set. Swap and bounds stay atomic.
With one primary the tag is empty and the key names are what they always were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from . import presence, store_check
from .deadlines import longest, within
from .pending import ChainPosition, MemoryPending
from .records import Action, Why
from .sealing import Sealer, Unsealable
from .store import Clock, Grant, MemoryStore, Refusal
from .store_check import StoreReport
from .urls import DEFAULT_PORTS, Origin

log = logging.getLogger("credhop")
T = TypeVar("T")

PREFIX = "credhop:v1:"
PROBE_INTERVAL = 0.5  # seconds between pings while Redis is down
FIRST_PROBE = 0.05
TOPOLOGY_DEADLINE = 2.0  # seconds for a cluster client's first contact (RedisLink.read_topology)
PREFETCH_FRESH = 0.2  # seconds a prefetched answer may be used by the same request's next call
VIEW_FOR = 30.0  # seconds a client's view of one origin (RedisLink.views) is used at most
MAX_VIEWS = 100_000
MAX_OPENED = 4_096  # sealed values kept opened
QUIET_AFTER = 2.0  # an outage starting this soon after the last one ended is logged at debug level
MAX_QUEUE = 16  # follow-ups one client may await for one URL
MAX_WATCH = 8  # redirects of one client to one origin remembered for leak checks
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
BUCKETS = 256  # Redis Cluster: a client's keys share the hash tag of one of these (its sealed name's first 2 hex)
BUCKET_SLACK = 1.25  # a bucket may hold this much more than its even share of max_entries

# Observer(op, seconds, cause): cause None for an answer, else "timeout" | "connection" | "error" |
# "unsealable", or "down" for a call answered locally at once because Redis is known to be down.
Observer = Callable[[str, float, "str | None"], None]


class StoreConfigError(ValueError):
    pass


def describe(url: str) -> str:
    """The store URL without user, password or query: safe for logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path if 'sentinel' in parts.scheme else ''}"


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        host, colon, port = item.rpartition(":")
        if not colon or item.endswith("]") or host.count(":") and not host.endswith("]"):
            host, port = item, ""  # no port given (a bare IPv6 address has colons of its own)
        if port and not port.isdigit():
            raise StoreConfigError(f"credhop_store: {item!r} is not HOST[:PORT]")
        hosts.append((host.strip("[]") or "localhost", int(port or default_port)))
    return hosts


def connect(url: str, timeout: float) -> Any:
    """A redis asyncio client for `url` with short timeouts and no retries (redis-py's defaults wait
    seconds on a hung server). `redis+sentinel://[user:pass@]host:port[,host:port]/service` asks
    Sentinel for the primary of `service`."""
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise StoreConfigError(f"credhop_store must be 'memory' or a redis://, rediss://, unix:// or "
                               f"redis+sentinel:// URL, not {describe(url)!r}")
    # redis-py's own read deadline is wall time too: only a backstop behind `within`, which allows for
    # the proxy's own lag (deadlines.py)
    common: dict[str, Any] = dict(socket_timeout=longest(timeout) + 0.5, socket_connect_timeout=timeout,
                                  retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
                                  max_connections=256)
    auth = dict(username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None)
    if parts.scheme.endswith("+cluster"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        del common["retry_on_timeout"], common["health_check_interval"]
        nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)]
        # no retries of its own on a moved slot or a failed node: our deadline bounds every call, and the
        # topology is read again at the next call after an error
        return RedisCluster(startup_nodes=nodes, ssl=parts.scheme.startswith("rediss"),
                            cluster_error_retry_attempts=0, require_full_coverage=False, **auth, **common)
    if "sentinel" not in parts.scheme:
        return redis.from_url(url, **common)
    from redis.asyncio.sentinel import Sentinel

    hosts = _hosts(parts.netloc, 26379)
    service = parts.path.strip("/")
    if not service:
        raise StoreConfigError("credhop_store: a redis+sentinel:// URL names the service: …/mymaster")
    query = parse_qs(parts.query)
    sentinel = Sentinel(hosts, sentinel_kwargs=dict(socket_timeout=timeout, socket_connect_timeout=timeout),
                        ssl=parts.scheme.startswith("rediss"), **common)
    return sentinel.master_for(service, db=int(query.get("db", ["0"])[0]), **auth)


class Down(Exception):
    """Redis did not answer this call (or is known to be down): answer locally."""


class RedisLink:
    """One Redis connection pool shared by the store and the pending follow-ups, with the outage
    state: every call has a deadline; after a failure, calls go local at once while a probe pings
    Redis in the background until it answers."""

    def __init__(self, url: str, sealer: Sealer, timeout: float, observer: Observer | None = None,
                 client: Any = None, clock: Clock = time.time) -> None:
        self.url, self.where = url, describe(url)
        self.sealer, self.timeout, self.clock = sealer, timeout, clock
        self.redis = client if client is not None else connect(url, timeout)
        self.cluster = is_cluster(url)
        self.observer = observer or (lambda op, seconds, cause: None)
        self.down_since: float | None = None
        self.outages = 0
        self.errors = 0
        self._probe: asyncio.Task[None] | None = None
        # Redis Cluster: primaries that failed a call (name -> since); their buckets' calls answer
        # locally while every other shard keeps sharing, until the node answers or its slots moved
        self.nodes_down: dict[str, float] = {}
        self._node_probes: dict[str, asyncio.Task[None]] = {}
        self._last_up: float | None = None  # when the last outage ended
        # a request's first call fetches what its next calls will ask in the same round trip:
        # (client, origin, what) -> (when, raw value), each taken once
        self._prefetched: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._scripts: dict[str, Any] = {}
        self._unsealable_logged: float | None = None
        self._bad_key_logged: float | None = None
        self.presence = presence.Presence(self, clock)  # lets requests of clients without state skip Redis
        # (client, origin) -> (epoch, watch list, grant value, when): what Redis held for a client with no
        # follow-up queued anywhere, used again while presence's epoch for the client stays the same
        self.views: dict[tuple[str, str], tuple[Any, Any, Any, float]] = {}
        self._names: dict[tuple[str, ...], str] = {}

    @property
    def down(self) -> bool:
        """Not every call may ask Redis: all of it is down, or (Redis Cluster) one of its primaries."""
        return self.down_since is not None or bool(self.nodes_down)

    # key names: HMACs of what they are for, per key generation; with Redis Cluster, each behind the
    # hash tag of its client's bucket, so one script's keys are on one slot
    def who(self, client: str, generation: int = 0) -> str:
        """The client's sealed name (presence keeps the current key's, remembered)."""
        return self.presence.name(client) if generation == 0 else self.sealer.name("client", client,
                                                                                    generation=generation)

    def tag(self, client: str, generation: int = 0) -> str:
        """PREFIX, and for Redis Cluster the client's bucket as a hash tag: where its keys' names start."""
        if not self.cluster:
            return PREFIX
        return PREFIX + "{" + self.who(client, generation)[:2] + "}"

    def grant_key(self, client: str, origin: Origin, generation: int = 0) -> str:
        return self.tag(client, generation) + "g:" + self._name("grant", client, str(origin), generation)

    def watch_key(self, client: str, origin: Origin, generation: int = 0) -> str:
        return self.tag(client, generation) + "w:" + self._name("origin", client, str(origin), generation)

    def _name(self, kind: str, client: str, what: str, generation: int) -> str:
        """sealer.name, remembered: a download asks for the same client's and origin's keys again and again."""
        key = (kind, client, what, str(generation))
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= MAX_VIEWS:
                self._names.clear()
            name = self._names[key] = self.sealer.name(kind, client, what, generation=generation)
        return name

    def view(self, client: str, origin: Origin) -> tuple[Any, Any] | None:
        """(watch list, grant value) as Redis last held them for `client` and `origin`, while nothing was
        written for the client since (presence epoch) and no follow-up of it was queued anywhere."""
        key = (client, str(origin))
        found = self.views.get(key)
        if found is None:
            return None
        epoch, watched, granted, when = found
        if epoch is None or epoch != self.presence.epoch(client) or time.monotonic() - when > VIEW_FOR:
            del self.views[key]
            return None
        return watched, granted

    def keep_view(self, client: str, origin: Origin, epoch: Any, watched: Any, granted: Any) -> None:
        if epoch is None or epoch != self.presence.epoch(client):  # written meanwhile: not sure
            return
        if len(self.views) >= MAX_VIEWS:
            self.views.clear()
        self.views[(client, str(origin))] = (epoch, watched, granted, time.monotonic())

    def queue_key(self, client: str, url: str, generation: int = 0) -> str:
        return self.tag(client, generation) + "p:" + self.sealer.name("url", client, url, generation=generation)

    def presence_keys(self) -> list[str]:
        """Redis Cluster: every bucket's presence set."""
        return [f"{PREFIX}{{{bucket:02x}}}{presence.SET}" for bucket in range(BUCKETS)]

    def max_in_bucket(self, max_entries: int) -> int:
        """What the bound allows one GRANT to count against: the fleet's, or a bucket's share of it."""
        if not self.cluster:
            return max_entries
        return max(1, -(-int(max_entries * BUCKET_SLACK) // BUCKETS))

    def prefetched(self, client: str, origin: Origin, what: str) -> tuple[bool, Any]:
        """(True, raw value) when this request's previous call already fetched it."""
        entry = self._prefetched.pop((client, str(origin), what), None)
        if entry is None or time.monotonic() - entry[0] > PREFETCH_FRESH:
            return False, None
        return True, entry[1]

    def prefetch(self, client: str, origin: Origin, **values: Any) -> None:
        now = time.monotonic()
        if len(self._prefetched) > 1_000:  # left by requests that never asked: drop the stale
            self._prefetched = {k: v for k, v in self._prefetched.items() if now - v[0] <= PREFETCH_FRESH}
        for what, value in values.items():
            self._prefetched[(client, str(origin), what)] = (now, value)

    def script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(source)
        return self._scripts[name]

    async def call(self, op: str, make: Callable[[], Awaitable[T]], client: str | None = None) -> T:
        """`make()`'s answer within the deadline, or Down. `client`: whose keys it touches (with Redis
        Cluster, one primary serves them all, and only that primary's failure stops its calls)."""
        node = self.node_of(client) if client is not None and self.cluster else None
        if self.down_since is not None or (node is not None and node in self.nodes_down):
            self.observer(op, 0.0, "down")  # answered locally without asking
            raise Down
        start = time.monotonic()
        try:
            result = await within(make(), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # redis errors, OSError, TimeoutError: the store did not answer
            if _wrong_type(e):  # it did answer: one client's key is bad, not the store
                self.bad_key(op)
                raise Down from None
            if node is not None and _one_node(e):
                self._node_failed(op, e, time.monotonic() - start, node)
            else:
                self._failed(op, e, time.monotonic() - start)
            raise Down from None
        self.observer(op, time.monotonic() - start, None)
        return result

    def node_of(self, client: str) -> str | None:
        """Redis Cluster: the primary serving the client's bucket, as this instance last read the
        topology (None before it was read: a failure then marks all of Redis down)."""
        try:
            node = self.redis.get_node_from_key(self.tag(client))
        except Exception:  # no topology yet, or the slot is not covered
            return None
        return node.name if node is not None else None

    def unsealable(self, op: str) -> None:
        """A value that does not open: another fleet's key, or tampering. Treated as absent."""
        self.errors += 1
        self.observer(op, 0.0, "unsealable")
        now = time.monotonic()
        if self._unsealable_logged is None or now - self._unsealable_logged > 60:  # once a minute at most
            self._unsealable_logged = now
            log.warning("credhop: a value in the shared store %s does not open with credhop_store_key (another "
                        "key, or tampered); ignored", self.where)

    def bad_key(self, op: str) -> None:
        """A key of the wrong type (WRONGTYPE: another program wrote it, or tampering). That call is
        answered locally, as for an unreadable value; the store stays up for every other client. The
        key is left for the operator to look at (credhop cannot tell who wrote it)."""
        self.errors += 1
        self.observer(op, 0.0, "wrongtype")
        now = time.monotonic()
        if self._bad_key_logged is None or now - self._bad_key_logged > 60:  # once a minute at most
            self._bad_key_logged = now
            log.warning("credhop: a key in the shared store %s has the wrong type (not written by credhop); that "
                        "client's shared state is ignored until the key is removed: redis-cli --scan --pattern "
                        "'%s*' and TYPE show it", self.where, PREFIX)

    def _failed(self, op: str, error: BaseException, seconds: float) -> None:
        self.errors += 1
        cause = _cause(error)
        self.observer(op, seconds, cause)
        if self.down_since is None:
            detail = " ".join(str(error).split())[:200] or type(error).__name__
            flapping = self._last_up is not None and time.monotonic() - self._last_up < QUIET_AFTER
            log.log(logging.DEBUG if flapping else logging.WARNING,
                    "credhop: shared store %s unavailable (%s: %s, during %s); grants made here keep working "
                    "here, nothing waits on it until it answers", self.where, cause, detail, op)
            self._mark_down()

    def _node_failed(self, op: str, error: BaseException, seconds: float, node: str) -> None:
        self.errors += 1
        cause = _cause(error)
        self.observer(op, seconds, cause)
        if node in self.nodes_down or self.down_since is not None:
            return
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        log.warning("credhop: shared store %s: primary %s unavailable (%s: %s, during %s); its clients are "
                    "answered from what this instance holds, the other shards keep sharing", self.where, node,
                    cause, detail, op)
        self.nodes_down[node] = time.monotonic()
        self.outages += 1
        try:
            self._node_probes[node] = asyncio.get_running_loop().create_task(self._wait_for_node(node))
        except RuntimeError:
            del self.nodes_down[node]  # no loop to probe from: the next call tries again

    async def _wait_for_node(self, node: str) -> None:
        """Until the primary answers again, or its slots are served by another (a replica promoted)."""
        pause = FIRST_PROBE
        try:
            while True:
                await asyncio.sleep(pause)
                pause = PROBE_INTERVAL
                try:
                    await self.read_topology()  # a refresh, when the failure asked for one
                    target = self.redis.get_node(node_name=node)
                    if target is not None and self._serves(node):
                        await within(self.redis.ping(target_nodes=target), self.timeout)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    continue
                break
        finally:
            self._node_probes.pop(node, None)
        since = self.nodes_down.pop(node, time.monotonic())
        log.warning("credhop: shared store %s: the slots of %s are served again after %.1f s; its clients "
                    "share again", self.where, node, time.monotonic() - since)

    def _serves(self, node: str) -> bool:
        return any(nodes and nodes[0].name == node for nodes in self.redis.nodes_manager.slots_cache.values())

    def _mark_down(self) -> None:
        """Calls answer locally from now on, while a probe waits for Redis to answer again."""
        self.down_since = time.monotonic()
        self.outages += 1
        try:
            self._probe = asyncio.get_running_loop().create_task(self._wait_until_back())
        except RuntimeError:
            self.down_since = None  # no loop to probe from: the next call tries again

    async def look(self, write: bool = True) -> StoreReport:
        """What the store is and whether the fleet key opens its key check (store_check.py). At start a
        store that does not answer is marked down at once, as after a failed call: nothing waits on it,
        and credhop_store_up says so before the first request does."""
        parts = urlsplit(self.url)
        kind = f"primary of Sentinel service {parts.path.strip('/')}" if "sentinel" in parts.scheme else \
            "Redis Cluster" if self.cluster else ""
        try:
            await self.read_topology()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            report = StoreReport(self.where, f"does not answer ({store_check.cause_of(e)})", kind)
        else:
            report = await store_check.check(self.redis, self.sealer, self.where, self.timeout, kind, write)
        if not report.answers and self.down_since is None:
            self._mark_down()
        return report

    async def read_topology(self) -> None:
        """A cluster client's first contact reads the slot map and redis-py's command table (COMMAND:
        ~100 ms of parsing on an idle machine), more than a flow's deadline allows. The look at start and
        the probe give it a deadline of its own; later calls find it read (a refresh skips COMMAND)."""
        if self.cluster:
            await within(self.redis.initialize(), max(self.timeout, TOPOLOGY_DEADLINE))

    async def _wait_until_back(self) -> None:
        await self._drop_connections()  # idle ones may point at a server that died: start afresh
        pause = FIRST_PROBE  # a busy event loop can miss a deadline with Redis fine: look again soon
        while True:
            await asyncio.sleep(pause)
            pause = PROBE_INTERVAL
            try:
                await self.read_topology()
                await within(self.redis.ping(), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            down = time.monotonic() - (self.down_since or time.monotonic())
            flapping = self._last_up is not None and (self.down_since or 0) - self._last_up < QUIET_AFTER
            self.down_since, self._last_up = None, time.monotonic()
            log.log(logging.DEBUG if flapping else logging.WARNING,
                    "credhop: shared store %s answers again after %.1f s; sharing resumes", self.where, down)
            return

    async def _drop_connections(self) -> None:
        try:
            await asyncio.wait_for(self.redis.connection_pool.disconnect(), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass

    async def close(self) -> None:
        await self.presence.close()
        if self._probe:
            self._probe.cancel()
        for probe in list(self._node_probes.values()):
            probe.cancel()
        try:
            await self.redis.aclose()
        except AttributeError:  # redis < 5.0.1
            await self.redis.close()
        except Exception:
            pass


def _wrong_type(error: BaseException) -> bool:
    # a plain reply error naming WRONGTYPE, from a command or inside a script; READONLY, OOM, LOADING and
    # the like are the store's own state and count as it failing
    return type(error).__name__ == "ResponseError" and "WRONGTYPE" in str(error)


def _cause(error: BaseException) -> str:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)) or type(error).__name__ == "TimeoutError":
        return "timeout"
    if isinstance(error, OSError) or type(error).__name__ in ("ConnectionError", "BusyLoadingError"):
        return "connection"
    return "error"


def _one_node(error: BaseException) -> bool:
    """A failure of the node that was asked, not one the whole cluster reports (CLUSTERDOWN)."""
    return type(error).__name__ not in ("ClusterDownError", "MasterDownError")


def origin_of_url(url: str) -> Origin | None:
    """The origin of a normalised http(s) URL, as the addon builds it from a request; None otherwise."""
    import ada_url

    try:
        parsed = ada_url.URL(url)
    except ValueError:
        return None
    scheme = parsed.protocol.rstrip(":")
    if scheme not in ("http", "https"):
        return None
    return Origin(scheme, parsed.hostname.strip("[]"), int(parsed.port) if parsed.port else DEFAULT_PORTS[scheme])


# -- what a value holds ------------------------------------------------------------------------

def _list(origin: Origin) -> list[Any]:
    return [origin.scheme, origin.host, origin.port]


def _origin(value: list[Any]) -> Origin:
    return Origin(str(value[0]), str(value[1]), int(value[2]))


def _grant_bytes(grant: Grant) -> bytes:
    return json.dumps([grant.client, _list(grant.origin), _list(grant.issuer), grant.header, grant.value, grant.rule,
                       grant.user, grant.fingerprint, grant.expires, grant.override, grant.chain, grant.hop],
                      separators=(",", ":")).encode()


def _grant_from(data: bytes) -> Grant:
    c, o, i, header, value, rule, user, fp, expires, override, chain, hop = json.loads(data)
    return Grant(client=c, origin=_origin(o), issuer=_origin(i), header=header, value=value, rule=rule, user=user,
                 fingerprint=fp, expires=float(expires), override=bool(override), chain=chain, hop=int(hop))


def _position_bytes(client: str, position: ChainPosition, expires: float) -> bytes:
    p = position
    return json.dumps([client, p.chain, p.hop, _list(p.came_from) if p.came_from else None, sorted(p.sent),
                       p.location_fp, str(p.on_leak), p.retry, expires], separators=(",", ":")).encode()


def _position_from(data: bytes) -> tuple[str, ChainPosition, float]:
    client, chain, hop, came_from, sent, location_fp, on_leak, retry, expires = json.loads(data)
    return client, ChainPosition(chain, int(hop), _origin(came_from) if came_from else None, frozenset(sent),
                                 location_fp, Action(on_leak), bool(retry)), float(expires)


# -- grants --------------------------------------------------------------------------------------

# KEYS: grant hash, the client's index (zset: grant key -> expiry ms), clients (zset: client -> count),
# total (count of grants), presence (zset: client -> until ms; presence.py). ARGV: issuer mac, fingerprint
# mac, sealed value, expiry ms, ttl ms, now ms, max per client, max entries, client member, index key
# prefix, presence channel, presence entries older than this (ms) go.
# Returns {0, sealed value held} for a refused swap, else {1, evicted, total}.
GRANT = """
local held = redis.call('HMGET', KEYS[1], 'i', 'f', 'v')
if held[1] and held[1] ~= ARGV[1] and held[2] ~= ARGV[2] then
  return {0, held[3]}
end
local now, per_client, max_entries = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'f', ARGV[2], 'v', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local total = tonumber(redis.call('GET', KEYS[4]) or '0')
local function prune(index, member)
  total = total - redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  local n = redis.call('ZCARD', index)
  if n == 0 then redis.call('ZREM', KEYS[3], member) else redis.call('ZADD', KEYS[3], n, member) end
  return n
end
total = total + redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
local n = prune(KEYS[2], ARGV[9])
local evicted = 0
while n > per_client do
  local victim = redis.call('ZPOPMIN', KEYS[2])
  redis.call('DEL', victim[1])
  total, n, evicted = total - 1, n - 1, evicted + 1
end
redis.call('ZADD', KEYS[3], n, ARGV[9])
local rounds = 0
while total > max_entries and rounds < 64 do
  rounds = rounds + 1
  local fullest = redis.call('ZREVRANGE', KEYS[3], 0, 0)
  if #fullest == 0 then total = 0 break end
  local index = ARGV[10] .. fullest[1]
  local m = prune(index, fullest[1])
  if m > 0 and total > max_entries then
    local victim = redis.call('ZPOPMIN', index)
    redis.call('DEL', victim[1])
    total, evicted = total - 1, evicted + 1
    prune(index, fullest[1])
  end
end
if total < 0 then total = 0 end
redis.call('SET', KEYS[4], total)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[12])
redis.call('ZADD', KEYS[5], 'GT', ARGV[4], ARGV[9])
redis.call('PUBLISH', ARGV[11], ARGV[9] .. ' ' .. ARGV[4])
return {1, evicted, total}
"""


class RedisStore:
    """A `CredentialStore` in Redis, with a local copy of the grants this instance made."""

    def __init__(self, link: RedisLink, max_entries: int = 10_000, max_per_client: int | None = None,
                 clock: Clock = time.time) -> None:
        self.link, self.clock = link, clock
        self.local = MemoryStore(max_entries, max_per_client, clock=clock)
        self.max_entries, self.max_per_client = max_entries, self.local.max_per_client
        self.shared = 0  # grants the fleet held at this instance's last grant (into each bucket)
        self._held_in: dict[str, int] = {}  # key tag (a Redis Cluster bucket; one for a primary) -> grants held
        self.evicted = 0
        self._opened: dict[tuple[bytes, str], Grant] = {}  # (sealed value, key) -> what it holds

    def _keys(self, client: str, origin: Origin, generation: int = 0) -> tuple[str, str, str]:
        who = self.link.who(client, generation)
        return self.link.grant_key(client, origin, generation), self.link.tag(client, generation) + "c:" + who, who

    async def grant(self, grant: Grant) -> Refusal | None:
        refusal = self.local.refusal(grant)  # what this instance granted itself stands, Redis or not
        if refusal:
            return refusal
        if self.link.sealer.generations > 1:  # mid-rotation: a grant under the old key's name stands too
            held = await self._held_under_old_names(grant.client, grant.origin)
            if held and _conflict(held, grant):
                return Refusal(Why.SWAP_REFUSED,
                               f"{grant.origin} already holds a live credential handed out by {held.issuer}")
        keys, args = self._grant_call(grant)
        script = self.link.script("grant", GRANT)
        try:
            answer = await self.link.call("grant", lambda: script(keys=keys, args=args), grant.client)
        except Down:
            answer = None
        return await self._granted(grant, keys[0], answer)

    async def grant_and_expect(self, grant: Grant, pending: RedisPending,
                               expected: tuple[str, str, Origin, ChainPosition]) -> Refusal | None:
        """`grant`, then `pending.expect(*expected)`, in one round trip (a credential redirect). The
        follow-up is expected whatever the store answers: a refused grant keeps the Location, and the
        client follows it all the same."""
        refusal = self.local.refusal(grant)
        if refusal or self.link.sealer.generations > 1 or pending.link is not self.link:
            refusal = refusal or await self.grant(grant)
            await pending.expect(*expected)
            return refusal
        gkeys, gargs = self._grant_call(grant)
        ekeys, eargs, expires = pending._expect_call(*expected)

        async def both() -> Any:
            if self.link.cluster:  # a cluster pipeline cannot load a script a node lacks: side by side
                return await asyncio.gather(self.link.script("grant", GRANT)(keys=gkeys, args=gargs),
                                            self.link.script("expect", EXPECT)(keys=ekeys, args=eargs))
            pipe = self.link.redis.pipeline(transaction=False)
            await self.link.script("grant", GRANT)(keys=gkeys, args=gargs, client=pipe)
            await self.link.script("expect", EXPECT)(keys=ekeys, args=eargs, client=pipe)
            return await pipe.execute()
        try:
            answers = await self.link.call("grant", both, grant.client)
        except Down:
            await pending.local.expect(*expected)
            return await self._granted(grant, gkeys[0], None)
        pending._expected(expected[0], answers[1], expires)
        return await self._granted(grant, gkeys[0], answers[0])

    def _grant_call(self, grant: Grant) -> tuple[list[str], list[Any]]:
        key, index, who = self._keys(grant.client, grant.origin)
        sealer, now = self.link.sealer, self.clock()
        ttl_ms = max(1, int((grant.expires - now) * 1000))
        tag = self.link.tag(grant.client)
        keys = [key, index, tag + "clients", tag + "total", tag + presence.SET]
        args = [sealer.name("issuer", str(grant.issuer)), sealer.name("fp", grant.fingerprint),
                sealer.seal(_grant_bytes(grant), key), int(grant.expires * 1000), ttl_ms, int(now * 1000),
                self.max_per_client, self.link.max_in_bucket(self.max_entries), who, tag + "c:", presence.CHANNEL,
                int((now - presence.SKEW) * 1000)]
        return keys, args

    async def _granted(self, grant: Grant, key: str, answer: Any) -> Refusal | None:
        """What GRANT answered (None: Redis did not), and the local copy."""
        if answer is not None and int(answer[0]) == 0:
            held = self._open(answer[1], key, "grant")
            issuer = held.issuer if held else "another redirect"
            return Refusal(Why.SWAP_REFUSED, f"{grant.origin} already holds a live credential handed out by {issuer}")
        if answer is not None:
            self.evicted += int(answer[1])
            self._held_in[self.link.tag(grant.client)] = int(answer[2])
            self.shared = sum(self._held_in.values())
            self.link.presence.wrote(grant.client, grant.expires)
        return await self.local.grant(grant)

    async def get(self, client: str, origin: Origin) -> Grant | None:
        local = await self.local.get(client, origin)
        keys = [self._keys(client, origin, g)[0] for g in range(self.link.sealer.generations)]
        fetched, value = self.link.prefetched(client, origin, "grant") if len(keys) == 1 else (False, None)
        try:
            if fetched:
                values = [value]
            elif len(keys) == 1:
                values = [await self.link.call("get", lambda: self.link.redis.hget(keys[0], "v"), client)]
            else:
                async def several() -> list[Any]:
                    pipe = self.link.redis.pipeline(transaction=False)
                    for k in keys:
                        pipe.hget(k, "v")
                    return await pipe.execute()
                values = await self.link.call("get", several, client)
        except Down:
            return local
        now = self.clock()
        found = []
        for key, value in zip(keys, values):
            grant = self._open(value, key, "get") if value else None
            if grant and grant.client == client and grant.origin == origin and grant.expires > now:
                found.append(grant)
        if not found:
            return local
        if any(_conflict(found[0], other) for other in found[1:]):
            return local  # mid-rotation, two keys' names hold different credentials: neither is sure
        if local and _conflict(local, found[0]):
            return local  # granted here first, while Redis had lost it: no swap through a restart
        return found[0]

    async def _held_under_old_names(self, client: str, origin: Origin) -> Grant | None:
        keys = [self._keys(client, origin, g)[0] for g in range(1, self.link.sealer.generations)]

        async def several() -> list[Any]:
            pipe = self.link.redis.pipeline(transaction=False)
            for k in keys:
                pipe.hget(k, "v")
            return await pipe.execute()
        try:
            values = await self.link.call("grant", several, client)
        except Down:
            return None
        for key, value in zip(keys, values):
            held = self._open(value, key, "grant") if value else None
            if held and held.client == client and held.origin == origin and held.expires > self.clock():
                return held
        return None

    def _open(self, value: bytes, key: str, op: str) -> Grant | None:
        opened = self._opened.get((value, key))
        if opened is not None:  # the same sealed value again (a download): opened once, not per request
            return opened
        try:
            grant = _grant_from(self.link.sealer.open(value, key))
        except (Unsealable, ValueError, TypeError):
            self.link.unsealable(op)
            return None
        if len(self._opened) >= MAX_OPENED:
            self._opened.clear()
        self._opened[(value, key)] = grant
        return grant

    def may_hold(self, client: str) -> bool:
        # another instance may have granted it: Redis knows, and tells every instance (presence.py)
        return self.local.may_hold(client) or self.link.presence.may_have(client)

    def __len__(self) -> int:
        return len(self.local) if self.link.down else max(self.shared, len(self.local))


def _conflict(held: Grant, other: Grant) -> bool:
    """Two grants for one client and origin that the swap rule would not let replace each other."""
    return held.issuer != other.issuer and held.fingerprint != other.fingerprint


# -- pending follow-ups ---------------------------------------------------------------------------

# KEYS: the URL's queue, the origin's watch list, the client's index of queues (zset: key -> expiry ms),
# presence (as for GRANT). ARGV: sealed position, sealed watch, expiry ms, ttl ms, now ms, max queues per
# client, max queue, max watch, client member, presence channel.
EXPECT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[7]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[8]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[2])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
local dropped = 0
while redis.call('ZCARD', KEYS[3]) > tonumber(ARGV[6]) do
  local victim = redis.call('ZPOPMIN', KEYS[3])
  redis.call('DEL', victim[1])
  dropped = dropped + 1
end
redis.call('ZADD', KEYS[4], 'GT', ARGV[3], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[9] .. ' ' .. ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[3], KEYS[1])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
return dropped
"""


# KEYS: the URL's queue, the origin's watch list, the grant, the client's queued URLs (zset: queue -> expiry
# ms, EXPECT adds). ARGV: now ms. One round trip for a request: its follow-up, what watching() and get()
# ask next, and how many queues of the client are left (0: a view of this origin may be kept).
FOLLOW = """
local popped = redis.call('LPOP', KEYS[1])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[4], KEYS[1]) end
local queued = redis.call('ZCOUNT', KEYS[4], ARGV[1], '+inf')
return {popped, redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HGET', KEYS[3], 'v'), queued}
"""


class RedisPending:
    """`PendingFollowUps` in Redis: a follow-up may arrive at any instance. While Redis is down,
    follow-ups expected here are held here."""

    def __init__(self, link: RedisLink, max_per_client: int = 1_000, ttl: float = 120.0,
                 clock: Clock = time.time) -> None:
        self.link, self.ttl, self.clock = link, ttl, clock
        self.max_per_client = max_per_client
        self.local = MemoryPending(ttl=ttl, clock=clock)
        self.expected = 0  # follow-ups this instance put in Redis, for the gauge
        self.dropped = 0

    def awaits(self, client: str) -> bool:
        # a 3xx on another instance may have sent the client here: Redis tells (presence.py)
        return self.local.awaits(client) or self.link.presence.may_have(client)

    async def expect(self, client: str, url: str, origin: Origin, position: ChainPosition) -> None:
        keys, args, expires = self._expect_call(client, url, origin, position)
        script = self.link.script("expect", EXPECT)
        try:
            dropped = await self.link.call("expect", lambda: script(keys=keys, args=args), client)
        except Down:
            await self.local.expect(client, url, origin, position)
            return
        self._expected(client, dropped, expires)

    def _expect_call(self, client: str, url: str, origin: Origin,
                     position: ChainPosition) -> tuple[list[str], list[Any], float]:
        sealer, now = self.link.sealer, self.clock()
        expires = now + self.ttl
        queue = self.link.queue_key(client, url)
        watch = self.link.watch_key(client, origin)
        who, tag = self.link.who(client), self.link.tag(client)
        body = _position_bytes(client, position, expires)
        keys = [queue, watch, tag + "pc:" + who, tag + presence.SET, tag + "pq:" + who]
        args = [sealer.seal(body, queue), sealer.seal(body, watch), int(expires * 1000), int(self.ttl * 1000),
                int(now * 1000), 2 * self.max_per_client, MAX_QUEUE, MAX_WATCH, who, presence.CHANNEL]
        return keys, args, expires

    def _expected(self, client: str, dropped: Any, expires: float) -> None:
        self.expected += 1
        self.dropped += int(dropped)
        self.link.presence.wrote(client, expires)

    async def follow(self, client: str, url: str) -> ChainPosition | None:
        now = self.clock()
        origin = origin_of_url(url)
        view = self.link.view(client, origin) if origin is not None else None
        if view is not None:  # nothing queued for this client anywhere, nothing written since: no round trip
            self.link.prefetch(client, origin, watch=view[0], grant=view[1])  # type: ignore[arg-type]
            return await self.local.follow(client, url)
        for generation in range(self.link.sealer.generations):
            queue = self.link.queue_key(client, url, generation)
            first = generation == 0 and origin is not None and self.link.sealer.generations == 1
            while True:
                try:
                    if first:  # one round trip for the request: what watching() and get() ask next
                        value = await self.link.call("follow", lambda: self._lookup(client, queue, origin), client)
                        first = False
                    else:
                        value = await self.link.call("follow", lambda: self.link.redis.lpop(queue), client)
                except Down:
                    return await self.local.follow(client, url)
                if value is None:
                    break
                entry = self._open(value, queue, "follow")
                if entry and entry[0] == client and entry[2] > now:
                    return entry[1]
        return await self.local.follow(client, url)

    async def _lookup(self, client: str, queue: str, origin: Origin) -> Any:
        epoch = self.link.presence.epoch(client)  # before asking: a write after it changes it
        keys = [queue, self.link.watch_key(client, origin), self.link.grant_key(client, origin),
                self.link.tag(client) + "pq:" + self.link.who(client)]
        popped, watched, granted, queued = await self.link.script("follow", FOLLOW)(
            keys=keys, args=[int(self.clock() * 1000)])
        watched = watched or []
        self.link.prefetch(client, origin, watch=watched, grant=granted)
        if popped is None and not int(queued):
            self.link.keep_view(client, origin, epoch, watched, granted)
        return popped

    async def watching(self, client: str, origin: Origin) -> ChainPosition | None:
        now = self.clock()
        merged: ChainPosition | None = None
        for generation in range(self.link.sealer.generations):
            watch = self.link.watch_key(client, origin, generation)
            fetched, prefetched = self.link.prefetched(client, origin, "watch") if generation == 0 else (False, None)
            try:
                values = prefetched if fetched else \
                    await self.link.call("watching", lambda: self.link.redis.lrange(watch, 0, -1), client)
            except Down:
                return await self.local.watching(client, origin)
            for value in values:
                entry = self._open(value, watch, "watching")
                if entry and entry[0] == client and entry[2] > now:
                    merged = _merge_watch(merged, entry[1])
        local = await self.local.watching(client, origin)
        return _merge_watch(merged, local) if local else merged

    def _open(self, value: bytes, key: str, op: str) -> tuple[str, ChainPosition, float] | None:
        try:
            return _position_from(self.link.sealer.open(value, key))
        except (Unsealable, ValueError, TypeError):
            self.link.unsealable(op)
            return None

    def __len__(self) -> int:
        return len(self.local)


def _merge_watch(old: ChainPosition | None, new: ChainPosition) -> ChainPosition:
    """Several redirects of one client to one origin: the latest, watching for every secret, strip if any says so."""
    if old is None:
        return new
    on_leak = Action.STRIP if Action.STRIP in (old.on_leak, new.on_leak) else new.on_leak
    return replace(new, sent=new.sent | old.sent, on_leak=on_leak)
