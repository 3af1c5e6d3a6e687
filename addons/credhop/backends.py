"""The store and the metrics the options ask for: in memory or shared through Redis (a fleet of
proxies, docs/fleet.md), and a Prometheus endpoint. Each raises OptionsError before anything changes."""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

from mitmproxy import exceptions

from .exposure import is_loopback
from .operator_listener import OperatorListener, TokenError, parse_listen, read_token
from .options import ui_peers_of
from .pending import MemoryPending
from .scrub import printable
from .scrub import Redactor
from .sinks import HopLogFile
from .store import Clock, MemoryStore

log = logging.getLogger("credhop")

STORE_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
                 "rediss+cluster")  # redis_store.connect's


def make_stores(opts: Any, clock: Clock, observer: Callable[[str, float, str | None], None]) -> tuple[Any, Any, Any]:
    """(store, pending, link) for the options; `link` is None for the memory store."""
    url = opts.credhop_store.strip()
    if url == "memory":
        return MemoryStore(opts.credhop_max_credentials, clock=clock), MemoryPending(clock=clock), None
    scheme, has_scheme, _ = url.partition("://")
    if not has_scheme or scheme.lower() not in STORE_SCHEMES:
        # before the key and the redis package are asked for: 'memroy' is a typo, not a Redis URL
        shown = f"{scheme}://…" if has_scheme else printable(url[:40], one_line=True)
        raise exceptions.OptionsError(f"credhop_store={shown!r}: not 'memory' or a URL of "
                                      f"{', '.join(s + '://' for s in STORE_SCHEMES)}")
    try:
        import redis.asyncio  # noqa: F401  (redis_store imports it only when it connects)

        from .redis_store import RedisLink, RedisPending, RedisStore, StoreConfigError, connect, describe
        from .sealing import KeyFileError, Sealer
    except ImportError as e:
        raise exceptions.OptionsError(f"credhop_store: a Redis store needs the redis package ({e.name}): "
                                      f"pip install 'credhop[fleet]'") from None
    if not opts.credhop_store_key:
        raise exceptions.OptionsError(
            "credhop_store: a Redis store needs credhop_store_key, a file with a key shared by the fleet "
            "(openssl rand -hex 32 > store.key; chmod 600 store.key): credhop never stores credentials unsealed")
    try:
        sealer = Sealer.from_file(opts.credhop_store_key)
    except KeyFileError as e:
        raise exceptions.OptionsError(f"credhop_store_key: {e}") from None
    timeout = opts.credhop_store_timeout / 1000
    try:
        client = connect(url, timeout)
    except (StoreConfigError, ValueError) as e:
        raise exceptions.OptionsError(f"credhop_store: {e}" if isinstance(e, StoreConfigError) else
                                      f"credhop_store: cannot use {describe(url)!r}: {e}") from None
    link = RedisLink(url, sealer, timeout, observer=observer, client=client, clock=clock)
    max_entries = opts.credhop_max_credentials
    return (RedisStore(link, max_entries, clock=clock),
            RedisPending(link, max_per_client=min(max_entries, 1_000), clock=clock), link)


def make_hoplog(path: str, redactor: Redactor) -> HopLogFile | None:
    """The hop-log file `credhop_log` names, or None when it is empty."""
    if not path:
        return None
    try:
        return HopLogFile(path, redactor)
    except OSError as e:
        raise exceptions.OptionsError(f"credhop_log: cannot open {path}: {e.strerror}") from None


class Operator:
    """The operator listener with what it serves: `/metrics` and the live chains page."""

    def __init__(self, metrics: Any, listener: Any) -> None:
        self.metrics, self.listener = metrics, listener
        self.names = _names_of_this_machine(listener.host)

    def reached_by(self, host: str) -> bool:
        """Whether a request to `host` at the listener's port would reach the listener itself."""
        host = host.strip("[]").lower()
        return host in self.names or is_loopback(host)

    def serve(self, page: Any) -> None:
        self.listener.mount("/metrics", self.metrics.wsgi_app())
        self.listener.mount("/", page)
        self.listener.start()
        announce_operator(self.listener)

    def close(self) -> None:
        self.listener.close()


def _names_of_this_machine(bound: str) -> frozenset[str]:
    names = {bound.lower(), "localhost"}
    if bound in ("", "0.0.0.0", "::"):  # every address of this machine reaches it
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            try:
                names.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    return frozenset(names)


def make_operator(listen: str, token_file: str) -> Operator | None:
    """The operator listener for `credhop_metrics=HOST:PORT`, bound but not serving yet, or None when
    `listen` is empty. Raises OptionsError before anything listens when an option cannot be used."""
    if not listen:
        return None
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise exceptions.OptionsError(str(e)) from None
    token = read_operator_token(token_file)
    try:
        from .metrics import Metrics

        metrics = Metrics()
    except ImportError as e:
        raise exceptions.OptionsError(f"credhop_metrics needs prometheus_client ({e.name}): "
                                      f"pip install 'credhop[fleet]'") from None
    try:
        listener = OperatorListener(host, port, token)
    except OSError as e:
        raise exceptions.OptionsError(f"credhop_metrics: cannot listen on {listen}: {e.strerror or e}") from None
    return Operator(metrics, listener)


KEEP = object()  # OperatorView: the token stays as it is


class OperatorView:
    """The operator listener as the options say, kept across configure(): bound when credhop_metrics
    is set, replaced only when its value changes, re-keyed when the token file changes, closed at the end."""

    def __init__(self, page: Callable[[Any], Any]) -> None:
        self.page = page  # listener -> the live chains page (a WSGI app)
        self.operator: Operator | None = None
        self.listen = ""
        self.peers: tuple[str, ...] = ()
        self.port = -1  # checked first on every request through the proxy: cheaper than a host check

    @property
    def metrics(self) -> Any:
        return self.operator.metrics if self.operator else None

    def prepare(self, opts: Any, updated: set[str]) -> Callable[[], bool]:
        """Check the options, binding a new listener when one is asked for (so call it last: nothing after
        it may fail). Returns what applies them, which answers whether the metrics were replaced."""
        peers = ui_peers_of(opts) if "credhop_ui_peers" in updated else self.peers
        listen = opts.credhop_metrics
        if listen != self.listen:  # by value: `credhop proxy` hands over the defaults nobody set once more
            operator = make_operator(listen, opts.credhop_operator_token)
            return lambda: self._use(operator, listen, peers)
        token = KEEP
        if "credhop_operator_token" in updated and self.operator:
            token = read_operator_token(opts.credhop_operator_token)
        return lambda: self._keep(token, peers)

    def _use(self, operator: Operator | None, listen: str, peers: tuple[str, ...]) -> bool:
        self.close()
        self.operator, self.listen, self.peers = operator, listen, peers
        if operator:
            self.port = operator.listener.port
            operator.serve(self.page(operator.listener))
        return True

    def _keep(self, token: Any, peers: tuple[str, ...]) -> bool:
        self.peers = peers
        if token is not KEEP and self.operator:
            self.operator.listener.token = token
        return False

    def refuses(self, host: str, port: int) -> bool:
        """A request through the proxy to this listener: it is never served that way."""
        return port == self.port and self.operator is not None and self.operator.reached_by(host)

    def close(self) -> None:
        if self.operator:
            self.operator.close()
        self.operator, self.listen, self.port = None, "", -1


def read_operator_token(token_file: str) -> bytes | None:
    if not token_file:
        return None
    try:
        return read_token(token_file)
    except TokenError as e:
        raise exceptions.OptionsError(f"credhop_operator_token: {e}") from None


def announce_operator(listener: Any) -> None:
    where = f"http://{'[' + listener.host + ']' if ':' in listener.host else listener.host}:{listener.port}"
    log.info("credhop: live chains on %s/ and metrics on %s/metrics%s", where, where,
             " (token required)" if listener.token else "")
    if not is_loopback(listener.host):
        guard = ("only to holders of credhop_operator_token" if listener.token else
                 "to anyone who reaches it: set credhop_operator_token=FILE")
        log.warning("credhop: the operator listener %s is not loopback: it shows the recent chains (clients, "
                    "URLs, user names, fingerprints) and metrics %s", where, guard)


async def announce_store(link: Any, instance: str, fingerprint_key_set: bool) -> Any:
    """The start line of a shared store, once the store was looked at (store_check.py): what answers and
    whether the fleet key opens what the fleet wrote, or why it cannot be used; never only "shared" for a
    store that does not answer. Returns the StoreReport."""
    report = await link.look(write=True)
    if not report.answers:
        log.warning("credhop: shared store %s %s: this instance answers from its own grants and follow-ups, "
                    "and shares them once the store answers (asked again every 0.5 s)", link.where, report.problem)
    else:
        _announce_answering(link, report, instance)
    if not fingerprint_key_set:
        log.warning("credhop: credhop_fingerprint_key is not set: each instance makes its own key, so "
                    "fingerprints (swap and leak checks across instances) differ; give the fleet one file")
    return report


def _announce_answering(link: Any, report: Any, instance: str) -> None:
    log.info("credhop: grants and follow-ups shared through %s (sealed, %d key(s)), as instance %s",
             report.summary(), link.sealer.generations, instance)
    if report.problem:
        log.warning("credhop: shared store %s %s", link.where, report.problem)
    for warning in report.warnings:
        log.warning("credhop: shared store %s: %s", link.where, warning)
