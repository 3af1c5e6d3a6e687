"""Every spelling of a test secret that must never show up in output."""

from __future__ import annotations

import base64
import urllib.parse


class Secret(str):
    """A test secret whose repr, as pytest prints it in failures, gives nothing away."""

    def __repr__(self) -> str:
        return f"<secret of {len(self)} chars>"


class SecretForms(frozenset):
    def __repr__(self) -> str:
        return f"<{len(self)} secret forms>"


def secret_forms(*secrets: str, user: str = "aws") -> SecretForms:
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
    return SecretForms(forms)


def leaks(text: str, forms: set[str]) -> list[str]:
    """The forms found in `text` (names them by length only, so a failure never prints them)."""
    return [f"<secret form of {len(f)} chars>" for f in forms if f and f in text]


def assert_no_leak(text: str, forms: set[str], where: str) -> None:
    """Fail without echoing `text`: pytest's assertion rewriting would print the secret it found."""
    found = leaks(text, forms)
    if found:
        raise AssertionError(f"{len(found)} secret form(s) found in {where}")
