"""Hop records: every event credhop writes, its actions and `why` codes, and the fields each carries.

The addon builds these, the sinks write them, and the diagnosis reads them back from JSON: one
vocabulary for all three. Codes are plain strings on the wire (`Why.NO_RULE == "no-rule"`), so logs
written by version 1, which used the same words, read the same. No mitmproxy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

SCHEMA = 1  # additive changes only; readers ignore fields they do not know


class Code(str, Enum):
    """A stable code that is its own value in JSON and in f-strings."""

    def __str__(self) -> str:
        return self.value


class Event(Code):
    REDIRECT = "redirect"  # a 3xx
    INJECT = "inject"  # a header added to a request, or skipped
    RESPONSE = "response"  # the final response of a follow-up
    LEAK = "leak"  # a client re-sent a secret to another origin
    ERROR = "error"  # a follow-up failed without a response
    DOWNLOADS = "downloads"  # later requests that got a held credential and a good answer, in aggregate


class Action(Code):
    """What was done: to a Location's credential (redirect), a header (inject) or a leak."""

    INJECT = "inject"
    STRIP = "strip"
    KEEP = "keep"
    BLOCK = "block"
    NONE = "none"  # a redirect without a credential, or one credhop could not read
    SKIP = "skip"  # inject: the held credential was not added
    LOG = "log"  # leak: reported, not removed


RULE_ACTIONS = (Action.INJECT, Action.STRIP, Action.KEEP, Action.BLOCK)
LEAK_ACTIONS = (Action.LOG, Action.STRIP)


class Why(Code):
    """Why an action was changed or nothing was done."""

    LOCATION_MISSING = "location-missing"
    LOCATION_SEVERAL = "location-several"
    LOCATION_UNPARSEABLE = "location-unparseable"
    NO_RULE = "no-rule"
    PLAINTEXT_REFUSED = "plaintext-refused"
    PARSERS_DISAGREE = "parsers-disagree"
    CREDENTIAL_UNUSABLE = "credential-unusable"
    SWAP_REFUSED = "swap-refused"
    STORE_UNAVAILABLE = "store-unavailable"
    CLIENT_HEADER = "client-header"  # inject skipped: the client sent its own header
    OTHER_CREDENTIAL = "other-credential"  # inject skipped: the Location carried another credential


class LeakKind(Code):
    SCHEME_DOWNGRADE = "scheme-downgrade"
    OTHER_HOST = "other-host"
    OTHER_PORT = "other-port"
    OTHER_SCHEME = "other-scheme"


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Fields every record has. `url` is redacted before it gets here."""

    ts: float
    client: str
    chain: str
    hop: int
    flow: str
    method: str
    url: str
    retry: bool = False  # the client's retry of this hop after a 401 (pip)
    reuse: bool = False  # a later same-origin request that got a held credential (a download)
    instance: str | None = None  # the proxy instance that wrote it (credhop_instance), for fleet logs

    event: Event = Event.ERROR  # overridden by each kind; a field so `as_dict` writes it
    # as_dict's answer, made once: every sink reads the same record (read-only, like the record)
    _dict: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object: false flags and empty optional fields left out, `user` kept (null: a token).
        Sinks share it: never change it."""
        if self._dict is not None:
            return self._dict
        out: dict[str, Any] = {}
        names = _NAMES.get(type(self))
        if names is None:
            names = _NAMES[type(self)] = tuple(f.name for f in fields(self) if f.name != "_dict")
        for name in names:
            value = getattr(self, name)
            if value is None and name != "user" or value is False and name in _FLAGS:
                continue
            out[name] = value
        object.__setattr__(self, "_dict", out)
        return out


_FLAGS = frozenset(("retry", "reuse", "observe"))
_NAMES: dict[type, tuple[str, ...]] = {}  # each record class's field names, in order


@dataclass(frozen=True, slots=True, kw_only=True)
class RedirectRecord(Record):
    event: Event = Event.REDIRECT
    status: int
    action: Action
    location: str | None = None  # redacted
    target: str | None = None  # the origin it points to
    relative: bool | None = None
    rule: str | None = None
    why: Why | None = None
    reason: str | None = None  # `why` in words, for people
    user: str | None = None  # None when the user name is the secret
    fingerprint: str | None = None
    ttl: int | None = None
    observe: bool = False
    sent: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectRecord(Record):
    event: Event = Event.INJECT
    rule: str
    header: str
    user: str | None
    fingerprint: str
    action: Action  # INJECT or SKIP
    why: Why | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRecord(Record):
    event: Event = Event.RESPONSE
    status: int
    sent: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LeakRecord(Record):
    event: Event = Event.LEAK
    header: str
    fingerprint: str
    kind: LeakKind
    came_from: str
    target: str
    action: Action  # LOG or STRIP


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRecord(Record):
    event: Event = Event.ERROR
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadsRecord(Record):
    """Downloads of one chain from one origin that got the held credential and an answer below 400,
    counted together (downloads.py). A download that fails has its own inject and response records."""

    event: Event = Event.DOWNLOADS
    flow: str | None = None  # many flows
    reuse: bool = True
    rule: str
    header: str
    user: str | None
    fingerprint: str
    count: int
    bytes: int
    statuses: dict[str, int]  # status code -> downloads that got it
    first: float  # ts of the first download counted here; `ts` is the last


EVENTS = frozenset(e.value for e in Event)
