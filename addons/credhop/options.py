"""credhop's mitmproxy options: declared once, with help text, and the checks mitmproxy cannot make.

mitmproxy parses `--set credhop_…` only once a script has declared the option;
a name or value it cannot use would make the script fail to load without a
word, so `deferred_problem` looks first.
"""

from __future__ import annotations

import difflib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import exceptions

from .rules import MAX_TTL
from .scrub import DEFAULT_SECRET_HEADERS, Redactor, printable, secret_header_names

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")  # package data: shipped in the wheel
PREFIX = "credhop_"
CLIENT_IDS = ("address", "proxyauth")
PLAIN_REDIRECTS = ("failed", "record", "count")


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


OPTIONS = (
    Option("credhop_rules", str, str(DEFAULT_RULES) if DEFAULT_RULES.exists() else "",
           "Path of the credhop rules file (YAML). Edits are picked up while running."),
    Option("credhop_log", str, "",
           "Append one JSON object per credential hop to this file (created 0600). Empty: no file."),
    Option("credhop_observe", bool, False,
           "Observe only: decide and log what the rules would do, change no request or response."),
    Option("credhop_ttl", int, 600,
           f"Seconds (1..{MAX_TTL}) an injected credential stays valid for follow-ups, unless its rule sets ttl."),
    Option("credhop_max_credentials", int, 10_000,
           "Most credentials held at once; when full, the client holding the most loses its least recently used."),
    Option("credhop_plain_redirects", str, "failed",
           "A 3xx that cannot start a credential hop (one Location without @ or a signed parameter, no secret "
           "sent, outside a chain): 'failed' counts it and records it only if its follow-up fails (400 or "
           "more, no answer) or is redirected again, so a report explains that chain; 'record' records every "
           "one (chains that ended well too); 'count' only counts. 'failed' and 'count' cost almost nothing.",
           choices=PLAIN_REDIRECTS),
    Option("credhop_secret_headers", str, ",".join(DEFAULT_SECRET_HEADERS),
           "Comma-separated request headers that carry secrets, besides Authorization, "
           "Proxy-Authorization and Cookie: watched for leaks across redirects and scrubbed from logs."),
    Option("credhop_fingerprint_key", str, "",
           "File holding the HMAC key for credential fingerprints. Empty: credhop-fingerprint.key in "
           "mitmproxy's confdir, created on first use. Share it between proxies to get comparable fingerprints."),
    # a fleet of proxies (docs/fleet.md)
    Option("credhop_store", str, "memory",
           "Where grants and pending follow-ups live: 'memory' (this process) or a Redis URL shared by a "
           "fleet of proxies (redis://, rediss://, unix://, redis+sentinel://host:port,…/service, "
           "redis+cluster://host:port,…)."),
    Option("credhop_store_key", str, "",
           "With a Redis store: file of 64-hex-digit keys (openssl rand -hex 32), one per line, shared by the "
           "fleet. The first seals what Redis holds; the others are still accepted for reading (rotation)."),
    Option("credhop_store_timeout", int, 200,
           "Milliseconds (1..10000) a Redis store call may take; a slower or failed call is answered "
           "locally and never retried."),
    Option("credhop_client_id", str, "address",
           "Whose grant a request may use: 'address' (the client's IP) or 'proxyauth' (the user "
           "--proxyauth authenticated; use it behind a TCP load balancer).", choices=CLIENT_IDS),
    Option("credhop_instance", str, "", "This proxy's name in hop-log records and reports. Empty: HOST:PORT."),
    Option("credhop_metrics", str, "",
           "The operator listener, HOST:PORT: Prometheus metrics at /metrics and the live chains page at /. "
           "Empty: off."),
    Option("credhop_operator_token", str, "",
           "File holding a token (16+ characters) the operator listener asks for on every path: "
           "'Authorization: Bearer TOKEN', or Basic with the token as password (browsers). Empty: none."),
    Option("credhop_ui_peers", str, "",
           "Comma-separated operator URLs of the fleet's other instances, linked from the live chains page "
           "(each instance shows its own chains)."),
)


def declare(loader: Any) -> None:
    for option in OPTIONS:
        extra = {"choices": list(option.choices)} if option.choices else {}
        loader.add_option(option.name, option.type, option.default, option.help, **extra)


def check_choices(options: Any, updated: set[str]) -> None:
    """An option with a fixed set of values takes nothing else. Raises OptionsError naming them:
    mitmproxy checks `choices` only in its own UIs, and a typo must not fall back to a default."""
    for option in OPTIONS:
        if option.choices and option.name in updated:
            value = getattr(options, option.name)
            if value not in option.choices:
                allowed = ", ".join(repr(c) for c in option.choices)
                raise exceptions.OptionsError(f"{option.name}={printable(str(value)[:80], one_line=True)!r}: "
                                              f"not one of {allowed}")


def check_values(options: Any, updated: set[str]) -> None:
    """Every changed option's value in range, before anything changes. Raises OptionsError naming it."""
    check_choices(options, updated)
    if "credhop_ttl" in updated and not 0 < options.credhop_ttl <= MAX_TTL:
        raise exceptions.OptionsError(f"credhop_ttl must be 1..{MAX_TTL} seconds, not {options.credhop_ttl}")
    if "credhop_max_credentials" in updated and options.credhop_max_credentials < 1:
        raise exceptions.OptionsError(
            f"credhop_max_credentials must be at least 1, not {options.credhop_max_credentials}")
    if "credhop_store_timeout" in updated and not 0 < options.credhop_store_timeout <= 10_000:
        raise exceptions.OptionsError(
            f"credhop_store_timeout must be 1..10000 milliseconds, not {options.credhop_store_timeout}")
    if options.credhop_client_id == "proxyauth" and not getattr(options, "proxyauth", None):
        raise exceptions.OptionsError("credhop_client_id=proxyauth needs mitmproxy's --proxyauth: "
                                      "without it no request names a user")


def ui_peers_of(options: Any) -> tuple[str, ...]:
    peers = tuple(p.strip() for p in options.credhop_ui_peers.split(",") if p.strip())
    for peer in peers:
        if not peer.lower().startswith(("http://", "https://")) or any(c in peer for c in "\"'<> "):
            raise exceptions.OptionsError(f"credhop_ui_peers: {printable(peer[:80], one_line=True)!r} is not "
                                          "an http:// or https:// URL")
    return peers


def secret_headers_of(options: Any) -> frozenset[str]:
    try:
        return secret_header_names(options.credhop_secret_headers.split(","))
    except ValueError as e:
        raise exceptions.OptionsError(f"credhop_secret_headers: {e}") from None


def deferred_problem(options: Any, redactor: Redactor) -> str | None:
    """What is wrong with the `--set credhop_…` values mitmproxy still holds, in one line, or None."""
    deferred = getattr(options, "deferred", {})
    known = sorted(o for o in options.keys() if o.startswith(PREFIX))
    for name in [n for n in deferred if n.startswith("credhop")]:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            return (f"unknown option {name!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                    f"credhop options: {', '.join(known)}")
        values = getattr(deferred[name], "val", None)
        if values is None or not hasattr(options, "_parse_setval"):
            continue  # a value set programmatically, already typed
        try:
            options._parse_setval(options._options[name], values)
        except exceptions.OptionsError as e:
            why = str(e).removeprefix(f"Failed to parse option {name}: ")
            return f"{name}={redactor(' '.join(values))!r}: {why}"
    return None


def fingerprint_key(path: str, confdir: str) -> bytes:
    """The HMAC key for fingerprints; with no path, one created (0600) in mitmproxy's confdir."""
    key_path = Path(path or Path(confdir).expanduser() / "credhop-fingerprint.key").expanduser()
    try:
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        key = key_path.read_bytes().strip()
    except OSError as e:
        raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path}: {e.strerror or e}") from None
    if len(key) < 16:
        raise exceptions.OptionsError(f"credhop_fingerprint_key: {key_path} holds fewer than 16 bytes")
    return key
