"""The rules file as the running proxy sees it: read it, tell when it changed, log what was loaded.

A broken file raises `RulesError` naming file, line, column and key; the caller keeps the rules it
has. Change is seen by modification time and size (the stamp is taken before the file is read, so
an edit made while it is read is seen next time). No mitmproxy here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .rules import RuleSet, load_rules

log = logging.getLogger("credhop")
Stamp = tuple[float, int]


@dataclass(frozen=True, slots=True)
class RulesRead:
    rules: RuleSet
    stamp: Stamp | None
    path: str


def read_rules(path: str) -> RulesRead:
    """The rules of `path` ('' for none); raises RulesError."""
    if not path:
        return RulesRead(RuleSet(()), None, path)
    stamp = stamp_of(path)
    return RulesRead(load_rules(path), stamp, path)


def announce(read: RulesRead) -> bool:
    """Log what was loaded; False when there is no rules file at all."""
    if not read.path:
        log.warning("credhop: no rules file (credhop_rules is empty): credentials pass untouched")
        return False
    log.info("credhop: loaded %d rule(s) from %s", len(read.rules.rules), read.path)
    for warning in read.rules.warnings:
        log.warning("credhop: %s", warning)
    return True


def stamp_of(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size
