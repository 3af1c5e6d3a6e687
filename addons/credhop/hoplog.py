"""The hop log (JSON Lines), the readable event-log line, and scrubbing of secrets from text.

Records are built from redacted values only; every string is scrubbed once
more on the way out, so a mistake upstream still cannot write a secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, TextIO

from .urls import redact_url

SCHEMA = 1
# `Authorization: <anything>` and friends, as header lines or (name, value) reprs; not URL
# query parameters such as `?set-cookie=1`, which are no header
_SECRET_HEADER = re.compile(
    r"(?i)(?<![\w?&=/.-])((?:proxy-)?authorization|cookie|private-token|x-api-key|x-auth-token)"
    r"(['\"]?\s*[:,]\s*b?['\"]?)([^'\"\r\n]+)"
)
# terminal control sequences and lone surrogates (undecodable bytes) a hostile server can plant
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# a scheme word followed by its credential, anywhere
_AUTH_VALUE = re.compile(r"(?i)\b(basic|bearer|digest|negotiate|ntlm)\s+[^\s'\",;)]{8,}")


def scrub(text: str) -> str:
    """Remove URL userinfo and header-style credentials from free text."""
    text = redact_url(text)
    text = _SECRET_HEADER.sub(lambda m: f"{m[1]}{m[2]}***", text)
    return _AUTH_VALUE.sub(lambda m: f"{m[1]} ***", text)


def printable(text: str) -> str:
    """`text` safe for a terminal or a UTF-8 file: controls and lone surrogates escaped."""
    return _UNPRINTABLE.sub(lambda m: ascii(m[0])[1:-1], text)


def _scrub_record(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_record(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_record(v) for v in value]
    return value


class HopLog:
    """Append-only JSON Lines file, created owner-read/write only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file: TextIO = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"v": SCHEMA, **_scrub_record(record)}, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def event_line(record: dict[str, Any]) -> str:
    """One readable line for mitmproxy's event log."""
    chain = f"[{record.get('chain', '-')}#{record.get('hop', 0)}]"
    event = record["event"]
    if event == "inject":
        what = f"{record['header']} added to {record['method']} {record['url']}"
    elif event == "leak":
        what = (f"client re-sent {record['header']} from {record['came_from']} to {record['target']}"
                f" ({record['kind']})")
    elif event == "redirect":
        what = f"{record.get('status')} {record.get('url')} -> {record.get('location')}"
    else:  # response, error
        what = f"{record['method']} {record['url']} -> {record.get('status', 'no response')}"
    cred = ""
    if record.get("fingerprint"):
        cred = f" credential user={record.get('user') or '(token)'} fp={record['fingerprint']}"
    how = f" rule={record['rule']}" if record.get("rule") else ""
    action = f" action={record['action']}" if record.get("action") else ""
    reason = f" ({record['reason']})" if record.get("reason") else ""
    return scrub(f"credhop {chain} {record.get('client', '?')} {event}: {what}{how}{action}{reason}{cred}")


class SecretFilter(logging.Filter):
    """Scrubs every log record that passes a handler, mitmproxy's own lines included.

    A client can put userinfo into its request line (uv 0.5.25 does through an
    HTTP proxy), and mitmproxy logs such lines when it rejects them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
