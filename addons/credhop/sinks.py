"""Where hop records go: the hop-log file, the event log, the recent chains, the counters.

The addon hands every record to each sink in turn (`Sinks.emit`); a new
destination, such as metrics, is one more sink. No mitmproxy here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Protocol, TextIO

from .diagnosis import Chain, cannot_fail, diagnose
from .records import (
    SCHEMA,
    Action,
    DownloadsRecord,
    Event,
    InjectRecord,
    LeakRecord,
    Record,
    RedirectRecord,
    ResponseRecord,
)
from .scrub import SCRUBBED_BY, Redactor, printable

log = logging.getLogger("credhop")
# made once: json.dumps with any option builds a new encoder per call; the defaults otherwise (ASCII out)
_encode = json.JSONEncoder(separators=(",", ":")).encode


class Sink(Protocol):
    def emit(self, record: Record) -> None: ...

    def close(self) -> None: ...


class Sinks:
    def __init__(self, *sinks: Sink) -> None:
        self.sinks = list(sinks)

    def emit(self, record: Record) -> None:
        for sink in self.sinks:
            sink.emit(record)

    def emit_uncounted(self, record: Record) -> None:
        """To every sink but those that count (`counting = True`): for a record whose event was
        already counted when it happened (a plain 3xx set aside, recorded later)."""
        for sink in self.sinks:
            if not getattr(sink, "counting", False):
                sink.emit(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class HopLogFile:
    """Append-only JSON Lines file, created owner-read/write only."""

    def __init__(self, path: str | Path, redactor: Redactor) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: TextIO = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.redactor = redactor

    def emit(self, record: Record) -> None:
        line = _encode({"v": SCHEMA, **self.redactor.record(record.as_dict())})  # type: ignore[dict-item]
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def level_of(record: Record) -> int:
    """How loud a record is in the event log: problems warn, decisions on a credential hop inform,
    carrying them out is debug. An injection follows from its redirect's line (one per hop, not
    one per download); the hop log, counters and flow marks still have every one, and a chain that
    fails gets its own warning."""
    if isinstance(record, LeakRecord) or record.event is Event.ERROR:
        return logging.WARNING
    if isinstance(record, RedirectRecord):
        if record.action is Action.NONE:
            return logging.WARNING if record.why else logging.DEBUG
        return logging.INFO
    if isinstance(record, (ResponseRecord, DownloadsRecord)):
        return logging.DEBUG
    if isinstance(record, InjectRecord) and record.action is Action.INJECT:
        return logging.DEBUG
    return logging.INFO  # an injection skipped, and why


def event_line(record: dict[str, Any]) -> str:
    """One readable line for mitmproxy's event log (unscrubbed: the caller scrubs)."""
    chain = f"[{record.get('chain', '-')}#{record.get('hop', 0)}]"
    event = record["event"]
    if event == Event.INJECT:
        what = f"{record['header']} added to {record['method']} {record['url']}"
    elif event == Event.LEAK:
        what = (f"client re-sent {record['header']} from {record['came_from']} to {record['target']}"
                f" ({record['kind']})")
    elif event == Event.REDIRECT:
        what = f"{record.get('status')} {record.get('url')} -> {record.get('location')}"
    elif event == Event.DOWNLOADS:
        statuses = " ".join(f"{k}x{v}" for k, v in record.get("statuses", {}).items())
        what = (f"{record.get('count')} {record['method']} download(s) from {record['url']} with {record['header']}, "
                f"{record.get('bytes')} bytes, status {statuses}")
    else:  # response, error
        what = f"{record['method']} {record['url']} -> {record.get('status', 'no response')}"
    cred = ""
    if record.get("fingerprint"):
        cred = f" credential user={record.get('user') or '(token)'} fp={record['fingerprint']}"
    how = f" rule={record['rule']}" if record.get("rule") else ""
    action = f" action={record['action']}" if record.get("action") else ""
    reason = f" ({record['reason']})" if record.get("reason") else ""
    return printable(f"credhop {chain} {record.get('client', '?')} {event}: {what}{how}{action}{reason}{cred}",
                     one_line=True)


# mitmproxy's deprecated `add_log` event: a handler at every level, which only feeds old addons' add_log
# hooks, one event-loop wake-up per line. It alone does not make a debug line worth formatting.
_LEGACY_HANDLERS = frozenset({"LegacyLogEvents"})
HOP_LINE = "credhop_hop_line"  # LogRecord attribute: a line EventLog wrote for one hop


def is_legacy_handler(handler: logging.Handler) -> bool:
    return type(handler).__name__ in _LEGACY_HANDLERS


class NotForAddLog(logging.Filter):
    """Keeps the per-hop lines out of mitmproxy's deprecated `add_log` event (it goes on its handler).

    That handler formats each line again and has the event loop offer it to every addon, even when
    none has an `add_log` hook (none of mitmproxy's own has since 9.0): about 720,000 instructions a
    line on mitmproxy 12.3, most of what one info line costs (`make bench-instructions`). The line
    still reaches every other handler: the terminal, the console's and mitmweb's event log, and any
    handler an addon installs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, HOP_LINE, False)


def _wanted(logger: logging.Logger, level: int) -> bool:
    """Whether a line at `level` reaches any handler. mitmproxy sets the root logger to DEBUG and lets
    each handler choose (the terminal shows INFO and up), so `isEnabledFor` alone says yes to every
    debug line."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    found = False
    while current is not None:
        for handler in current.handlers:
            found = True
            if level >= handler.level and not is_legacy_handler(handler):
                return True
        if not current.propagate:
            break
        current = current.parent
    # no handler at all: stdlib logging's last resort (stderr, WARNING and up)
    return not found and logging.lastResort is not None and level >= logging.lastResort.level


class EventLog:
    """mitmproxy's event log, through stdlib logging; a line is formatted only when a handler wants it."""

    def __init__(self, redactor: Redactor, logger: logging.Logger = log) -> None:
        self._redactor = redactor
        self._log = logger

    def emit(self, record: Record) -> None:
        level = level_of(record)
        if _wanted(self._log, level):
            self._log.log(level, "%s", self._redactor(event_line(record.as_dict())),
                          extra={SCRUBBED_BY: self._redactor, HOP_LINE: True})

    def close(self) -> None:
        pass


# seconds a follow-up's 401 waits for the client to ask again with credentials (pip does, at once)
# before its chain is judged: curl, uv and most clients never ask again, and their chain ends there
RETRY_GRACE = 1.0
# seconds a redirect whose Location carried a credential waits for its follow-up before its chain is
# judged: clients follow within milliseconds; one that never does stopped, or was refused before any
# flow existed (uv 0.5.25 in observe mode through an http:// proxy: CH503)
FOLLOW_GRACE = 10.0


class RecentChains:
    """The last chains' records, for `credhop.report`; each chain is diagnosed once, when it ends,
    and a chain that ended badly gets one warning line."""

    def __init__(self, on_failed: Callable[[Chain], None], max_chains: int = 1_000,
                 max_records: int = 200, on_judged: Callable[[Chain], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_failed = on_failed
        self.on_judged = on_judged  # every judged chain (metrics count verdicts)
        self.max_chains, self.max_records = max_chains, max_records
        self.clock = clock
        self._chains: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._failed: set[str] = set()
        self._awaiting: OrderedDict[str, float] = OrderedDict()  # chain -> when its follow-up got a 401
        self._unfollowed: OrderedDict[str, float] = OrderedDict()  # chain -> when its credential redirect came
        self.diagnosed = 0  # how often a chain was diagnosed: the cost this class keeps low
        self.cleared = 0  # chains that ended well by a look at their records, without a diagnosis
        self.version = 0  # one more per record kept: the live chains page redraws when it moves
        self._lock = threading.Lock()  # the live chains page reads from the operator listener's threads

    def emit(self, record: Record) -> None:
        data = record.as_dict()
        with self._lock:
            records = self._chains.get(record.chain)
            if records is None:
                records = self._chains[record.chain] = []
                while len(self._chains) > self.max_chains:
                    chain, _ = self._chains.popitem(last=False)
                    self._failed.discard(chain)
                    self._awaiting.pop(chain, None)
                    self._unfollowed.pop(chain, None)
            if len(records) < self.max_records:
                records.append(data)
                self.version += 1
        if self._unfollowed:
            self._unfollowed.pop(record.chain, None)  # the chain went on
        if self._ends(record):
            self._judge(record.chain)
        elif self._may_end(record):
            self._awaiting[record.chain] = self.clock()
            self._awaiting.move_to_end(record.chain)
        elif type(record) is RedirectRecord and record.fingerprint and record.action is not Action.BLOCK:
            self._unfollowed[record.chain] = self.clock()
        if self._awaiting or self._unfollowed:
            self.judge_due()

    @staticmethod
    def _ends(record: Record) -> bool:
        """A follow-up's final answer ends its chain; a later download only when it fails.
        A 401 ends it only when no retry comes (`_may_end`): clients such as pip ask again, with credentials."""
        if record.event is Event.ERROR:
            return record.hop > 0
        if not isinstance(record, ResponseRecord):
            return False
        if record.reuse:
            return record.status >= 400
        return record.status != 401 or record.retry

    @staticmethod
    def _may_end(record: Record) -> bool:
        return isinstance(record, ResponseRecord) and not record.reuse and record.status == 401 and not record.retry

    def judge_due(self, everything: bool = False) -> None:
        """Judge the chains whose 401 had no retry within RETRY_GRACE, and those whose credential redirect had
        no follow-up within FOLLOW_GRACE (all of them at shutdown). Called with each record and once a
        second, so a 401 chain is judged within about two seconds."""
        now = self.clock()
        for waiting, grace in ((self._awaiting, RETRY_GRACE), (self._unfollowed, FOLLOW_GRACE)):
            while waiting:  # oldest first: each dict's graces are all the same
                chain, since = next(iter(waiting.items()))
                if not everything and now - since < grace:
                    break
                del waiting[chain]
                if chain in self._chains:
                    self._judge(chain)

    def _judge(self, chain_id: str) -> None:
        self._awaiting.pop(chain_id, None)  # a retry came: judged now
        self._unfollowed.pop(chain_id, None)
        if chain_id in self._failed:
            return
        records = self._chains[chain_id]
        if self.on_judged is None and cannot_fail(records):  # most chains: redirect, injected follow-up, 200
            self.cleared += 1  # (metrics want every verdict: with them on, every chain is diagnosed)
            return
        self.diagnosed += 1
        chains = diagnose(records)
        if chains and self.on_judged:
            self.on_judged(chains[0])
        if chains and chains[0].verdict == "failed":
            self._failed.add(chain_id)
            self.on_failed(chains[0])

    def records(self) -> list[dict[str, Any]]:
        return [r for records in self._chains.values() for r in records]

    def snapshot(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """Each chain's records, oldest chain first; safe from another thread (records are never changed)."""
        with self._lock:
            return [(chain, list(records)) for chain, records in self._chains.items()]

    def close(self) -> None:
        pass


# Every counter credhop keeps, declared, so a dashboard (and a typo) knows the full set.
COUNTERS = (
    "redirects", "location_userinfo", "location_missing", "location_several", "location_unparseable",
    "action_inject", "action_strip", "action_keep", "action_block", "inject_refused", "store_errors",
    "injected", "inject_skipped_client_header", "inject_skipped_other_credential",
    "leak_detected", "leak_stripped", "body_scrubbed", "chains_failed",
    "rules_loaded", "rules_reload_failed", "internal_errors",
)
_WHY_COUNTERS = {"location-missing": "location_missing", "location-several": "location_several",
                 "location-unparseable": "location_unparseable"}


class Counters:
    """Counts of every decision since start, derived from the records plus a few the addon adds."""

    counting = True  # Sinks.emit_uncounted passes it by (not `counts`: that is the instance's Counter)

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(f"undeclared counter {name!r}")
        self.counts[name] += n

    def emit(self, record: Record) -> None:
        if isinstance(record, RedirectRecord):
            self.add("redirects")
            if record.fingerprint:
                self.add("location_userinfo")
                self.add(f"action_{record.action}")
            if record.why in _WHY_COUNTERS:
                self.add(_WHY_COUNTERS[record.why])
            elif record.why and record.fingerprint and record.action is Action.KEEP and record.rule:
                self.add("inject_refused")
        elif record.event is Event.INJECT:
            if record.action is Action.INJECT:  # type: ignore[attr-defined]
                self.add("injected")
            else:
                self.add(f"inject_skipped_{str(record.why).replace('-', '_')}")  # type: ignore[attr-defined]
        elif isinstance(record, LeakRecord):
            self.add("leak_detected")
            if record.action is Action.STRIP:
                self.add("leak_stripped")

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    def line(self, held: int) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v) or "nothing seen"
        return f"{counts}; credentials held={held}"

    def close(self) -> None:
        pass
