"""Reads a credhop hop log and explains every redirect chain in it: its hops, what happened to the
credential on each hop, findings with stable codes, and a verdict.

Pure Python on purpose: `credhop report` must run wherever the log ends up, without mitmproxy.
The log is input from elsewhere, so every field is checked before use and odd lines are skipped.

This module is the entry point (`diagnose`, `diagnose_file`, `cannot_fail`); the parts live in:
- `findings`: the catalogue of finding kinds (`Kind`, `CATALOGUE`, `kind_of`, `severity_rank`, `Finding`);
- `chains`: reading hop-log records and building chains (`parse_records`, `read_hoplog`, `Sent`, `Hop`,
  `Chain`, `HopLogRead`, presigned side walks);
- `checks`: the checks that yield findings, and `_assess`, which gives each chain its verdict.
Their names are re-exported here, so `from credhop.diagnosis import ...` keeps working.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from .chains import (Chain, Hop, HopLogRead, Sent, _hops, _signed_side_walks, _str, _valid, origin_of,
                     parse_records, read_hoplog, why_of)
from .checks import CHECKS, DENIED, _assess, _Grants
from .findings import (CATALOGUE, KINDS, KINDS_BY_NAME, MAX_HOPS, SEVERITIES, Finding, Kind, kind_of,
                       severity_rank)
from .records import EVENTS

__all__ = [
    "CATALOGUE", "CHECKS", "DENIED", "KINDS", "KINDS_BY_NAME", "MAX_HOPS", "REUSE_SHOWN", "SEVERITIES",
    "Chain", "Finding", "Hop", "HopLogRead", "Kind", "Sent", "cannot_fail", "diagnose", "diagnose_file",
    "kind_of", "origin_of", "parse_records", "read_hoplog", "severity_rank", "why_of",
]

REUSE_SHOWN = 5


def cannot_fail(records: list[dict[str, Any]]) -> bool:
    """True when `diagnose(records)` cannot give the verdict "failed", judged from the records alone
    (the live proxy then skips the diagnosis of a chain that ended well). Conservative: False whenever
    any error-level finding or failure condition in `_assess` might apply: a leak or error record
    (CH2xx error kinds, CH501), a status of 400 or more (CH101, CH102, CH104, an error status at the
    end), a redirect with a `why`/`reason` (CH304, CH305) or a block, a URL or a flow at two hop indexes
    (CH302; hops merged), or a redirect or a later download at the last hop index (a chain that did not
    end with its own answer)."""
    urls: dict[str, int] = {}
    flows: dict[Any, int] = {}
    last = max((r["hop"] for r in records if type(r.get("hop")) is int), default=-1)
    answered = False
    for record in records:
        event, hop, status = record.get("event"), record.get("hop"), record.get("status")
        if event not in ("redirect", "inject", "response") or type(hop) is not int:
            return False
        if status is not None and (type(status) is not int or status >= 400):
            return False
        if event == "redirect" and (record.get("why") or record.get("reason") or record.get("action") == "block"
                                    or hop == last):
            return False
        if hop == last and record.get("reuse") is True:
            return False  # the last hop must be the walk's own answer, not a later download
        if event == "response" and hop == last and status is not None and status < 300:
            answered = True
        url = record.get("url")
        if not isinstance(url, str):
            return False
        url = url.split("#", 1)[0]
        if urls.setdefault(url, hop) != hop:
            return False
        flow = record.get("flow")
        if flow is not None and flows.setdefault(flow, hop) != hop:  # one request, two hops: merged
            return False
    return answered


def diagnose(records: Iterable[dict[str, Any]]) -> list[Chain]:
    """Chains of the given hop-log records, with findings and verdicts, worst first."""
    by_chain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if _valid(record) and record["event"] in EVENTS:
            by_chain[record["chain"]].append(record)
    chains = [side for cid, recs in by_chain.items()
              for side in _signed_side_walks(Chain(cid, _str(recs[0].get("client")) or "?", _hops(recs)))]
    grants = _Grants(chains)
    for chain in chains:
        _assess(chain, grants)
    order = {"failed": 0, "unknown": 1, "ok": 2}
    return sorted(chains, key=lambda c: (order[c.verdict], c.start))


def diagnose_file(path: str | Path) -> tuple[list[Chain], HopLogRead]:
    read = read_hoplog(path)
    return diagnose(read.records), read
