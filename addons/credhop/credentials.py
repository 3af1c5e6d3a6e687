"""Credentials taken from a Location, their keyed fingerprints, and the headers they become.

Where a credential comes from (a Location's userinfo) is kept apart from where
it goes (a `HeaderTemplate`), so new sources and new header forms stay small.
"""

from __future__ import annotations

import base64
import hmac
import re
import string
import urllib.parse
from dataclasses import dataclass, field
from functools import lru_cache

# The auth schemes worth naming in a log; anything else is reported as no scheme,
# since a bare token in Authorization would otherwise be logged as its "scheme".
AUTH_SCHEMES = {s.lower(): s for s in ("Basic", "Bearer", "Digest", "Negotiate", "NTLM", "Token",
                                       "AWS4-HMAC-SHA256", "Hawk", "Mutual", "SCRAM-SHA-256", "HOBA")}
# Servers cap request headers at 8-16 KiB; a larger credential is an attack or a mistake.
MAX_CREDENTIAL = 4096
# After percent-decoding, these would let a credential forge header or log lines: C0 and C1
# controls, and the Unicode line separators some log viewers and parsers break lines at.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# User names that are the secret themselves: known token formats (GitHub, GitLab, npm, PyPI, Slack,
# Hugging Face, OpenAI-style keys, AWS access key ids, JWTs)...
_TOKEN_LIKE = re.compile(
    r"(?:gh[pousr]_|github_pat_|glpat-|gloas-|glrt-|glptt-|npm_|pypi-|xox[abposr]-|hf_|sk-|"
    r"(?:AKIA|ASIA)[A-Z0-9]{12}|eyJ[\w-]{6,}\.)"
)
# ...or that a placeholder password marks as the secret (`https://TOKEN:x-oauth-basic@github.com/`)
PLACEHOLDER_PASSWORDS = frozenset(("x-oauth-basic", "x"))
_LONG_RANDOM = re.compile(r"[A-Za-z0-9_\-+/=.]{24,}")


def secret_like_user(user: str, password: str = "") -> bool:
    """Whether a user name should be masked like a password: a token format, a placeholder password
    beside it, or a long random-looking string (letters and digits mixed, no room for a real name)."""
    if not user:
        return False
    if _TOKEN_LIKE.match(user) or password.lower() in PLACEHOLDER_PASSWORDS:
        return True
    if not password or password in user:  # no password: the user *is* the token
        return True
    return bool(_LONG_RANDOM.fullmatch(user)) and any(c.isdigit() for c in user) and any(c.isalpha() for c in user)
PLACEHOLDERS = {
    "user": "the decoded user name",
    "password": "the decoded password",
    "token": "the password, or the user name when there is no password",
    "basic": "base64(user:password), as in Authorization: Basic",
}


class CredentialError(ValueError):
    """A credential that must not be put into a header. Never holds the secret."""


@dataclass(frozen=True, slots=True)
class Credential:
    user: str = field(repr=False)
    password: str = field(repr=False)

    @property
    def token(self) -> str:
        return self.password or self.user

    @property
    def display_user(self) -> str | None:
        """The user name if it can be shown; None when it is, or holds, a secret (see
        `secret_like_user`). Shown names may still hold controls: writers escape them."""
        return None if secret_like_user(self.user, self.password) else self.user

    def problem(self) -> str | None:
        """Why this credential cannot be injected, or None."""
        if not self.user and not self.password:
            return "empty userinfo"
        if len(self.user) + len(self.password) > MAX_CREDENTIAL:
            return f"userinfo longer than {MAX_CREDENTIAL} characters"
        if _CONTROL.search(self.user) or _CONTROL.search(self.password):
            return "control character in decoded userinfo"
        return None

    def secret_forms(self) -> set[str]:
        """Every spelling of the secret worth scrubbing from text we write: as decoded, percent-encoded
        (either case of hex digits), and as the Basic value."""
        return set(_secret_forms(self.user, self.password))


@lru_cache(maxsize=256)  # asked for on every redirect, mostly for the same few credentials
def _secret_forms(user: str, password: str) -> frozenset[str]:
    secrets = {password} if password else set()
    if secret_like_user(user, password):
        secrets.add(user)
    forms = {base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogateescape")).decode()}
    for secret in secrets:
        encoded = urllib.parse.quote(secret, safe="", errors="surrogateescape")
        forms |= {secret, encoded, re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded),
                  urllib.parse.quote(secret, safe="!$&'()*+,;=-._~", errors="surrogateescape")}
        forms |= base64_cores(secret.encode("utf-8", "surrogateescape"))
    return frozenset(f for f in forms if len(f) >= 4)


def base64_cores(secret: bytes) -> set[str]:
    """The base64 characters that depend on `secret` alone, at each of the three byte offsets it can
    have inside a longer encoded value (`Basic base64(user:secret)`, a JWT, a JSON blob): whatever
    surrounds it, its encoding holds one of these."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        first = -(-8 * offset // 6)  # the first character with no bit of the bytes before it
        last = 8 * (offset + len(secret)) // 6  # the characters before it have no bit of the bytes after
        cores.add(encoded[first:last])
    return cores


class Fingerprinter:
    """Keyed (HMAC-SHA256) fingerprints: short tokens cannot be brute-forced from logs."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("fingerprint key must be at least 16 bytes")
        self._key = key

    def __call__(self, credential: Credential) -> str:
        # surrogateescape: mitmproxy hands non-UTF-8 header bytes over as lone surrogates
        digest = hmac.digest(
            self._key, f"{credential.user}\0{credential.password}".encode("utf-8", "surrogateescape"), "sha256"
        )
        return "hm:" + digest[:8].hex()


@dataclass(frozen=True, slots=True)
class HeaderTemplate:
    """`name: value` with `{user}`, `{password}`, `{token}`, `{basic}` placeholders."""

    name: str
    value: str

    @classmethod
    def compile(cls, name: str, value: str) -> HeaderTemplate:
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            raise ValueError(f"invalid header name {name!r}")
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)]
        except ValueError as e:
            raise ValueError(f"bad header template {value!r}: {e}") from None
        fields = [f for f, _, _ in parsed if f is not None]
        if any(spec or conv for f, spec, conv in parsed if f is not None):
            raise ValueError(f"no format specs or conversions allowed in {value!r}")
        for f in fields:
            if f not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{f}}} in {value!r}; use one of "
                    + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                )
        if not fields:
            raise ValueError(f"header template {value!r} uses no credential placeholder")
        if _CONTROL.search(value):
            raise ValueError("control character in header template")
        return cls(name, value)

    def render(self, credential: Credential) -> str:
        problem = credential.problem()
        if problem:
            raise CredentialError(problem)
        basic = base64.b64encode(f"{credential.user}:{credential.password}".encode()).decode()
        return self.value.format(
            user=credential.user, password=credential.password, token=credential.token, basic=basic
        )


BASIC = HeaderTemplate("Authorization", "Basic {basic}")


def credential_from_header(name: str, value: str) -> tuple[str | None, Credential]:
    """(auth scheme, credential) of a request header, so its fingerprint can be compared
    with the fingerprint of a Location's userinfo: Basic decodes to user and password,
    any other value counts as a bare token (like `https://TOKEN@host/`)."""
    if name.lower() not in ("authorization", "proxy-authorization"):
        return None, Credential(value, "")
    word, _, param = value.strip().partition(" ")
    scheme = AUTH_SCHEMES.get(word.lower()) if param.strip() else None
    if scheme == "Basic":
        try:
            user, _, password = base64.b64decode(param.strip(), validate=True).decode("utf-8").partition(":")
            return scheme, Credential(user, password)
        except (ValueError, UnicodeDecodeError):
            pass
    return scheme, Credential(param.strip() if scheme else value, "")


def injected_forms(value: str) -> frozenset[str]:
    """Every spelling of a header value credhop injects worth scrubbing: the value, its parameter
    after an auth scheme word, and for Basic the forms of the user and password it encodes."""
    forms = {value}
    word, _, param = value.strip().partition(" ")
    param = param.strip()
    if param and word.lower() in AUTH_SCHEMES:
        forms.add(param)
        scheme, credential = credential_from_header("authorization", value)
        if scheme == "Basic":
            forms |= _secret_forms(credential.user, credential.password)
    forms |= base64_cores((param or value).encode("utf-8", "surrogateescape"))
    return frozenset(f for f in forms if len(f) >= 4)

