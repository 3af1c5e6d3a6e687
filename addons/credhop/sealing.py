"""Sealing what a shared store holds: authenticated encryption with the fleet's key, and key names
that say nothing about the client or the credential.

The key file (`credhop_store_key`) holds one key per line, 64 hex digits each (`openssl rand -hex 32`).
The first line seals; every line opens, so a key can be rotated without losing what the old one
sealed: add the new key as a second line everywhere, then move it first, then drop the old one.
Each value is sealed with AES-256-GCM and its store key as associated data, so a value copied to
another key does not open. Key names are HMACs under a secret derived from each key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
_NONCE = 12
_ID = 4
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class KeyFileError(ValueError):
    """A key file credhop cannot use; the message names the file, never a key."""


class Unsealable(ValueError):
    """A value that does not open under any accepted key (another key, another name, or tampered)."""


def read_key_file(path: str | Path) -> list[bytes]:
    """The keys of a key file, current first. Blank lines and `#` comments are ignored."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror or e}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _HEX_KEY.fullmatch(line):
            raise KeyFileError(f"{path}:{number}: not a key of 64 hex digits (make one with: openssl rand -hex 32)")
        keys.append(bytes.fromhex(line))
    if not keys:
        raise KeyFileError(f"{path}: holds no key (make one with: openssl rand -hex 32 > {path.name})")
    if len(set(keys)) != len(keys):
        raise KeyFileError(f"{path}: the same key twice")
    try:
        mode = path.stat().st_mode & 0o077
    except OSError:
        mode = 0
    if mode & 0o007:
        raise KeyFileError(f"{path}: readable by every user; chmod 600 it")
    return keys


def _derive(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, b"credhop/" + purpose, hashlib.sha256).digest()


class Sealer:
    """Seals with the first key, opens with any; names keys with each key's naming secret."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys or any(len(k) != 32 for k in keys):
            raise ValueError("keys must be 32 bytes each")
        self._aead = [(_derive(k, b"id")[:_ID], AESGCM(_derive(k, b"seal"))) for k in keys]
        self._naming = [_derive(k, b"names") for k in keys]

    @classmethod
    def from_file(cls, path: str | Path) -> Sealer:
        return cls(read_key_file(path))

    @property
    def generations(self) -> int:
        """How many keys open values: each has its own key names."""
        return len(self._naming)

    def name(self, *parts: str, generation: int = 0) -> str:
        """A key name for `parts` (client, origin, URL …): 32 hex digits of HMAC, nothing readable."""
        mac = hmac.new(self._naming[generation], "\x00".join(parts).encode("utf-8", "surrogatepass"),
                       hashlib.sha256)
        return mac.hexdigest()[:32]

    def seal(self, plaintext: bytes, aad: str | bytes) -> bytes:
        key_id, aead = self._aead[0]
        nonce = os.urandom(_NONCE)
        return VERSION + key_id + nonce + aead.encrypt(nonce, plaintext, _bytes(aad))

    def open(self, sealed: bytes, aad: str | bytes) -> bytes:
        if len(sealed) < 1 + _ID + _NONCE + 16 or sealed[:1] != VERSION:
            raise Unsealable("not a sealed value")
        key_id, nonce, body = sealed[1:1 + _ID], sealed[1 + _ID:1 + _ID + _NONCE], sealed[1 + _ID + _NONCE:]
        for candidate, aead in self._aead:
            if hmac.compare_digest(candidate, key_id):
                try:
                    return aead.decrypt(nonce, body, _bytes(aad))
                except InvalidTag:
                    raise Unsealable("does not open: another key name, or tampered") from None
        raise Unsealable("sealed with a key this proxy does not have")

    def generation_of(self, sealed: bytes) -> int | None:
        """Which of this sealer's keys `sealed` names (0: the first, which seals), or None."""
        key_id = sealed[1:1 + _ID]
        return next((n for n, (candidate, _) in enumerate(self._aead) if hmac.compare_digest(candidate, key_id)),
                    None)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def new_key_line() -> str:
    return secrets.token_hex(32)
