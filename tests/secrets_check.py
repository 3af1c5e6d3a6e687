"""Every spelling of a test secret that must never show up in output."""

from __future__ import annotations

import base64
import urllib.parse


def secret_forms(*secrets: str, user: str = "aws") -> set[str]:
    forms: set[str] = set()
    for s in secrets:
        forms |= {
            s,
            urllib.parse.quote(s, safe=""),
            urllib.parse.quote(s),
            urllib.parse.quote_plus(s),
            base64.b64encode(s.encode()).decode(),
            base64.b64encode(f"{user}:{s}".encode()).decode(),
        }
    return forms


def leaks(text: str, forms: set[str]) -> list[str]:
    """The forms found in `text` (names them by length only, so a failure never prints them)."""
    return [f"<secret form of {len(f)} chars>" for f in forms if f and f in text]
