"""Downloads counted together: one record per chain, origin and method, not one per request.

A client that got a credential for a registry then fetches tens of files from it, each injected
with the same held credential. Writing two records per file (inject, response) cost most of what
credhop adds to a download. A download that got an answer below 400 is counted here instead;
`take` hands the counts out as `DownloadsRecord`s once they have been quiet for `QUIET` seconds
(or open for `LONGEST`), and everything at shutdown or before a report. A failed download is never
counted here: it keeps its own records, so a report names it. No mitmproxy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .records import DownloadsRecord
from .store import Grant
from .urls import Origin

QUIET = 5.0  # seconds without a download before its tally is written
LONGEST = 60.0  # a tally is written at least this often while downloads go on
MAX_TALLIES = 10_000  # beyond this, the oldest are written at once


@dataclass(slots=True)
class _Tally:
    grant: Grant
    base: dict[str, Any]  # the fields every record has, of the first download
    first: float
    last: float
    count: int = 0
    bytes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class DownloadTally:
    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, int, Origin, str], _Tally] = {}

    def add(self, grant: Grant, client: str, method: str, now: float, status: int, size: int,
            base: Any) -> list[DownloadsRecord]:
        """Count one download; `base()` makes the record fields, called once per tally. Returns the
        tallies that must be written now (only when too many are open)."""
        key = (client, grant.chain, grant.hop, grant.origin, method)
        tally = self._tallies.get(key)
        if tally is None or tally.grant is not grant and tally.grant.fingerprint != grant.fingerprint:
            due = [self._record(self._tallies.pop(key))] if tally is not None else []
            tally = self._tallies[key] = _Tally(grant, base(), now, now)
            while len(self._tallies) > MAX_TALLIES:
                due.append(self._record(self._tallies.pop(next(iter(self._tallies)))))
        else:
            due = []
        tally.last = now
        tally.count += 1
        tally.bytes += size
        code = str(status)
        tally.statuses[code] = tally.statuses.get(code, 0) + 1
        return due

    def take(self, now: float, everything: bool = False) -> list[DownloadsRecord]:
        """The tallies to write: quiet ones, long-open ones, or with `everything` all of them."""
        if not self._tallies:
            return []
        keys = [k for k, t in self._tallies.items()
                if everything or now - t.last >= QUIET or now - t.first >= LONGEST]
        return [self._record(self._tallies.pop(k)) for k in keys]

    def __len__(self) -> int:
        return len(self._tallies)

    @staticmethod
    def _record(tally: _Tally) -> DownloadsRecord:
        grant, base = tally.grant, tally.base
        return DownloadsRecord(
            ts=round(tally.last, 6), client=base["client"], chain=grant.chain, hop=grant.hop,
            method=base["method"], url=str(grant.origin), instance=base.get("instance"),
            rule=grant.rule, header=grant.header, user=grant.user, fingerprint=grant.fingerprint,
            count=tally.count, bytes=tally.bytes, statuses=dict(sorted(tally.statuses.items())),
            first=round(tally.first, 6))
