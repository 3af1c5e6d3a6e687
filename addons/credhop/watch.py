"""`credhop watch [HOPLOG]`: follow a hop log while the proxy writes it, one line per finished chain.

Three parts, each testable without sleeping:
- `Follower` reads the complete lines a growing file gains, like `tail -F`: it waits for a file that
  does not exist yet, and starts again from the top of one that was truncated or replaced;
- `Watch` groups records by chain and says when a chain has ended, by the live proxy's rule
  (`sinks.RecentChains`, here on the JSON dicts), on a clock it is given, and judges it with the
  report's own diagnosis;
- `Printer` shows each judged chain as one line and keeps what the totals and the exit status need.
`run` ties them together. No mitmproxy here: the watch runs wherever the hop log is.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, TextIO
from urllib.parse import urlsplit

from .chains import origin_of, parse_records
from .diagnosis import Chain, diagnose
from .report import VERDICT_MARK, Selection, Paint, hint_label, totals_line
from .scrub import printable, scrub
from .sinks import RETRY_GRACE

DEFAULT_HOPLOG = "credhop-hops.jsonl"  # what `make run` writes
IDLE_END = 30.0  # seconds without a record after which an open chain is judged anyway: the client gave up
POLL = 0.2  # seconds between looks at the file
BACKLOG_BYTES = 4 << 20  # read before the starting point, so chains already under way have their first hops
READ_BYTES = 1 << 20  # most read per look: a large file is read in pieces, the clock checked between them
MAX_LINE = 1 << 20  # a line that grows beyond this without a newline is dropped (counted malformed)
MAX_CHAINS = 10_000  # chains remembered; beyond, the oldest is judged (if open) and forgotten
MAX_RECORDS = 500  # records kept per chain (downloads are counted together: chains stay small)


def _quiet(_: str) -> None:
    pass


def _text(value: object) -> str:
    """A value from the log, fit for one line of a terminal: no secret, no control, no line break."""
    return printable(scrub(str(value)), one_line=True)


# -- following a file ------------------------------------------------------------------------------


class Follower:
    """The complete lines a file gains, read as they come. A line counts once it ends with a newline,
    so a record half written is read when its end arrives. The file is followed by name: when the name
    points to another file (replaced, rotated), what the old one still had is read, then the new one
    from its start; a file shorter than what was read (truncated) is read again from its start."""

    def __init__(self, path: Path, from_start: bool = False, notice: Callable[[str], None] = _quiet) -> None:
        self.path = path
        self.from_start = from_start
        self.notice = notice  # one line for a person: the file appeared, was truncated, was replaced
        self.dropped = 0  # lines that never ended: cut off by a truncation or a replacement, or too long
        self.more = False  # the last look stopped at READ_BYTES: look again at once
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._skipping = False  # inside a line longer than MAX_LINE: dropped up to its newline
        self._absent_said = False
        self._unreadable_said = False

    def start(self) -> list[str]:
        """Open the file and go to the starting point. Returns the complete lines just before it (at
        most BACKLOG_BYTES; none with `from_start`): context for chains already under way, not news.
        Raises OSError for a path that cannot be followed (a directory, no permission)."""
        if self.path.is_dir():
            raise IsADirectoryError(21, "is a directory", str(self.path))
        try:
            self._attach(open(self.path, "rb", buffering=0))
        except FileNotFoundError:
            self._say_absent()
            return []
        context = [] if self.from_start else self._to_end()
        self.notice(f"following {_text(self.path)} from its {'start' if self.from_start else 'end'}")
        return context

    def poll(self) -> list[str]:
        """The lines completed since the last look, in order."""
        self.more = False
        if self._file is None:
            opened = self._open()
            if opened is None:
                return []
            self._attach(opened)
            if self._absent_said:
                self.notice(f"{_text(self.path)} appeared; reading it from its start")
                self._absent_said = False
        lines = self._read()
        now = self._identity_of_path()
        if now is not None and now != self._identity and not self.more:  # replaced: the old one is read out
            self._cut("was replaced; following the new file from its start")
            self.close()
            return lines + self.poll()
        return lines

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._identity = None, None

    def _open(self) -> BinaryIO | None:
        try:
            opened = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            self._say_absent()
            return None
        except OSError as e:  # became a directory, lost its permission: wait, it may be put right
            if not self._unreadable_said:
                self.notice(f"cannot read {_text(self.path)}: {_text(e.strerror or e)}; waiting")
                self._unreadable_said = True
            return None
        self._unreadable_said = False
        return opened  # type: ignore[return-value]

    def _attach(self, opened: BinaryIO) -> None:
        stat = os.fstat(opened.fileno())
        self._file, self._identity = opened, (stat.st_dev, stat.st_ino)
        self._offset, self._partial, self._skipping = 0, b"", False

    def _say_absent(self) -> None:
        if not self._absent_said:
            self.notice(f"waiting for {_text(self.path)} to appear")
            self._absent_said = True

    def _identity_of_path(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:  # gone (renamed, deleted): whoever still writes it writes the file we hold
            return None
        return stat.st_dev, stat.st_ino

    def _to_end(self) -> list[str]:
        assert self._file is not None
        size = os.fstat(self._file.fileno()).st_size
        start = max(0, size - BACKLOG_BYTES)
        self._file.seek(start)
        tail = self._file.read(size - start) or b""
        cut = tail.rfind(b"\n")
        if cut < 0:  # no line ends in the tail: the file is one line being written, or a line too long
            self._offset, self._skipping = (size, True) if start else (0, False)
            self._file.seek(self._offset)
            return []
        self._offset = start + cut + 1
        self._file.seek(self._offset)  # the last line, if it has not ended, is read when it does
        lines = tail[:cut].split(b"\n")
        return [line.decode("utf-8", "replace") for line in (lines[1:] if start else lines)]

    def _read(self) -> list[str]:
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self._offset:
            self._cut("was truncated; reading it from its start")
            self._file.seek(0)
            self._offset = 0
        lines: list[bytes] = []
        budget = READ_BYTES
        while budget > 0:
            chunk = self._file.read(min(budget, 1 << 16))
            if not chunk:
                break
            budget -= len(chunk)
            self._offset += len(chunk)
            lines += self._split(chunk)
        self.more = budget <= 0
        return [line.decode("utf-8", "replace") for line in lines]

    def _split(self, chunk: bytes) -> list[bytes]:
        if self._skipping:
            end = chunk.find(b"\n")
            if end < 0:
                return []
            chunk, self._skipping = chunk[end + 1:], False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > MAX_LINE:
            self._partial, self._skipping = b"", True
            self.dropped += 1
        return lines

    def _cut(self, what: str) -> None:
        """The file we read is gone or shorter: a line it had begun will never end."""
        if self._partial or self._skipping:
            self.dropped += 1
        self._partial, self._skipping = b"", False
        self.notice(f"{_text(self.path)} {what}")


# -- when a chain has ended ------------------------------------------------------------------------


def ends(record: dict[str, Any]) -> bool:
    """`RecentChains._ends` on a hop-log dict: a follow-up's final answer ends its chain; a later
    download only when it fails; a 401 only when no retry comes (`may_end`); an error after hop 0."""
    event, status = record.get("event"), record.get("status")
    if event == "error":
        return type(record.get("hop")) is int and record["hop"] > 0
    if event != "response" or type(status) is not int:
        return False
    if record.get("reuse") is True:
        return status >= 400
    return status != 401 or record.get("retry") is True


def may_end(record: dict[str, Any]) -> bool:
    """`RecentChains._may_end`: a follow-up's 401 ends its chain if the client does not ask again within
    RETRY_GRACE (pip does, with credentials, at once; curl and uv never do)."""
    return (record.get("event") == "response" and record.get("reuse") is not True
            and record.get("status") == 401 and type(record.get("status")) is int
            and record.get("retry") is not True)


@dataclass(slots=True)
class _Open:
    records: list[dict[str, Any]]
    seen: float  # when its last record came, on the watch's clock
    live: bool = False  # a record came after the start: the watch judges it (else it is context only)
    ended: bool = False  # it ended (or was judged when idle): not judged again unless it ends again
    awaiting: float | None = None  # when its follow-up got a 401 without a retry
    said: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # chain -> (verdict, top code)


class Watch:
    """Records in, judged chains out. A chain is judged when it ends by the proxy's rule, when it had
    no record for `idle_end` seconds, and at `finish`. Judged again only when it ends again (a later
    download that fails), and handed out again only if its verdict or top finding changed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_end: float = IDLE_END,
                 max_chains: int = MAX_CHAINS, max_records: int = MAX_RECORDS) -> None:
        self.clock = clock
        self.idle_end = idle_end
        self.max_chains, self.max_records = max_chains, max_records
        self._chains: OrderedDict[str, _Open] = OrderedDict()  # least recently active first

    def context(self, records: Iterable[dict[str, Any]]) -> None:
        """Records written before the watch started: kept for the chains they belong to, judged only if
        one of those chains gets a record from now on."""
        for record in records:
            chain = self._take(record)
            chain.ended = chain.ended or ends(record) or may_end(record)  # a 401's grace: long past

    def add(self, records: Iterable[dict[str, Any]]) -> list[Chain]:
        """New records (checked by `parse_records`); returns the chains judged now."""
        judged: list[Chain] = []
        now = self.clock()
        for record in records:
            chain = self._take(record, judged)
            chain.live, chain.seen = True, now
            if ends(record):
                judged += self._judge(chain)
            elif may_end(record):
                chain.awaiting = now
        return judged + self.due()

    def due(self) -> list[Chain]:
        """Chains whose 401 had no retry within the grace, and open chains idle for `idle_end`."""
        now = self.clock()
        judged: list[Chain] = []
        for chain in list(self._chains.values()):
            if chain.awaiting is not None and now - chain.awaiting >= RETRY_GRACE:
                judged += self._judge(chain)
            elif chain.live and not chain.ended and now - chain.seen >= self.idle_end:
                judged += self._judge(chain)
        return judged

    def finish(self) -> list[Chain]:
        """Every chain still open, judged as it stands (the watch is stopping)."""
        judged: list[Chain] = []
        for chain in list(self._chains.values()):
            if chain.live and (not chain.ended or chain.awaiting is not None):
                judged += self._judge(chain)
        return judged

    @property
    def open(self) -> int:
        return sum(1 for c in self._chains.values() if c.live and not c.ended)

    def _take(self, record: dict[str, Any], judged: list[Chain] | None = None) -> _Open:
        key = record["chain"]
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = _Open([], self.clock())
            while len(self._chains) > self.max_chains:
                _, oldest = self._chains.popitem(last=False)
                if judged is not None and oldest.live and not oldest.ended:
                    judged += self._judge(oldest)  # forgotten: said first
        else:
            self._chains.move_to_end(key)
        if len(chain.records) < self.max_records:
            chain.records.append(record)
        return chain

    def _judge(self, chain: _Open) -> list[Chain]:
        chain.ended, chain.awaiting = True, None
        news = []
        for judged in diagnose(chain.records):
            if not judged.main:
                continue  # only downloads of a chain that started before what was read: nothing to judge
            said = (judged.verdict, judged.findings[0].code if judged.findings else None)
            if chain.said.get(judged.id) != said:
                chain.said[judged.id] = said
                news.append(judged)
        return news


# -- showing chains --------------------------------------------------------------------------------


def chain_line(chain: Chain, color: bool = False, again: bool = False) -> str:
    """One line: when the chain started, its verdict, client, first request, top finding and its hint."""
    paint = Paint(color)
    try:
        when = time.strftime("%H:%M:%S", time.localtime(chain.start))
    except (OverflowError, OSError, ValueError):  # a `ts` no clock can show
        when = "--:--:--"
    verdict = paint(VERDICT_MARK[chain.verdict].upper(), chain.verdict)
    first = chain.main[0] if chain.main else chain.hops[0]
    parts = [f"{when} {verdict}{' (updated)' if again else ''}", f"client {_text(chain.client)}",
             f"{_text(first.method)} {_text(_origin_path(first.url))}"]
    top = chain.findings[0] if chain.findings else None
    if top is not None:
        parts += [f"{paint(top.code, top.severity)} {top.name}", f"{paint(hint_label(top) + ':', 'dim')} "
                  f"{_text(top.hint)}"]
    elif chain.main:
        last = chain.main[-1]
        parts.append(f"{len(chain.main)} hop(s), ends {last.status if last.status is not None else '—'}")
    parts.append(f"chain {_text(chain.id)}")
    return " · ".join(parts)


def _origin_path(url: str) -> str:
    """Where the chain began, without the query (signed values, tokens) or a fragment."""
    origin = origin_of(url)
    try:
        path = urlsplit(url).path
    except ValueError:
        path = ""
    return f"{origin}{path}" if origin else url.split("?", 1)[0]


class Printer:
    """Writes each judged chain the filters let through, one line, flushed at once (a pipe too)."""

    def __init__(self, out: TextIO, selection: Selection = Selection(), failed_only: bool = False,
                 color: bool = False) -> None:
        self.out = out
        self.selection, self.failed_only, self.color = selection, failed_only, color
        self.shown: dict[str, Chain] = {}  # chain id -> as last shown: the totals and the exit status

    def show(self, chains: list[Chain]) -> None:
        for chain in self.selection.apply(chains):
            if self.failed_only and chain.verdict != "failed":
                continue
            again = chain.id in self.shown
            self.shown[chain.id] = chain
            self.out.write(chain_line(chain, self.color, again) + "\n")
        if chains:
            self.out.flush()

    def totals(self, malformed: int) -> str:
        line = totals_line(list(self.shown.values()))
        return line + (f"; skipped {malformed} malformed line(s)" if malformed else "")

    def failed(self) -> bool:
        """A shown chain, as last shown, has an error-level finding (the report's exit status 1)."""
        return any(chain.has_error() for chain in self.shown.values())


def run(follower: Follower, watch: Watch, printer: Printer, stop: Callable[[], bool],
        until_idle: float | None = None, poll: float = POLL,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Follow until `stop()` says so or nothing came for `until_idle` seconds; judge what is open, write
    the totals. Returns the number of malformed lines."""
    watch.context(parse_records(follower.start()).records)
    malformed = 0
    quiet_since = watch.clock()
    while not stop():
        lines = follower.poll()
        if lines:
            read = parse_records(lines)
            malformed += len(read.malformed)
            quiet_since = watch.clock()
            printer.show(watch.add(read.records))
        printer.show(watch.due())
        if until_idle is not None and watch.clock() - quiet_since >= until_idle:
            break
        if not follower.more:
            sleep(poll)
    follower.close()
    printer.show(watch.finish())
    malformed += follower.dropped
    printer.out.write(printer.totals(malformed) + "\n")
    printer.out.flush()
    return malformed
