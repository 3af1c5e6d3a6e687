"""Sealing for the shared store: authenticated, bound to its key name, rotatable, and key names that
reveal nothing."""

from __future__ import annotations

import os

import pytest

from credhop.sealing import KeyFileError, Sealer, Unsealable, read_key_file

K1, K2 = bytes(range(32)), bytes(range(1, 33))


def key_file(tmp_path, *lines: str, mode: int = 0o600):
    path = tmp_path / "store.key"
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, mode)
    return path


def test_seal_opens_only_under_its_own_key_name():
    sealer = Sealer([K1])
    sealed = sealer.seal(b"Basic c2VjcmV0", "credhop:v1:g:aa")
    assert b"c2VjcmV0" not in sealed and b"Basic" not in sealed
    assert sealer.open(sealed, "credhop:v1:g:aa") == b"Basic c2VjcmV0"
    with pytest.raises(Unsealable):
        sealer.open(sealed, "credhop:v1:g:bb")  # copied to another key: does not open
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(Unsealable):
        sealer.open(bytes(tampered), "credhop:v1:g:aa")
    with pytest.raises(Unsealable):
        sealer.open(b"plain text", "credhop:v1:g:aa")


def test_two_seals_of_one_value_differ():
    sealer = Sealer([K1])
    assert sealer.seal(b"x", "k") != sealer.seal(b"x", "k")


def test_rotation_new_key_first_old_key_still_opens():
    old, rotated = Sealer([K1]), Sealer([K2, K1])
    sealed_old = old.seal(b"v", "k")
    assert rotated.open(sealed_old, "k") == b"v"  # old values still open after rotation
    sealed_new = rotated.seal(b"v", "k")
    with pytest.raises(Unsealable):
        old.open(sealed_new, "k")  # an instance that lacks the new key cannot: add it everywhere first
    assert Sealer([K1, K2]).open(sealed_new, "k") == b"v"  # step 1 of a rotation: new key second
    with pytest.raises(Unsealable):
        Sealer([K2]).open(sealed_old, "k")  # old key dropped: its values are gone


def test_names_are_keyed_and_per_generation():
    sealer = Sealer([K1, K2])
    name = sealer.name("client", "10.0.0.1")
    assert len(name) == 32 and "10.0.0.1" not in name
    assert name == Sealer([K1]).name("client", "10.0.0.1")
    assert name != Sealer([K2]).name("client", "10.0.0.1")
    assert sealer.name("client", "10.0.0.1", generation=1) == Sealer([K2]).name("client", "10.0.0.1")
    assert sealer.name("a", "bc") != sealer.name("ab", "c")


def test_key_file(tmp_path):
    keys = read_key_file(key_file(tmp_path, "# fleet key", K2.hex(), "", K1.hex().upper()))
    assert keys == [K2, K1]
    for bad in ("abc", K1.hex() + "0", "zz" * 32):
        with pytest.raises(KeyFileError) as e:
            read_key_file(key_file(tmp_path, bad))
        assert bad not in str(e.value)
    with pytest.raises(KeyFileError, match="no key"):
        read_key_file(key_file(tmp_path, "# nothing"))
    with pytest.raises(KeyFileError, match="twice"):
        read_key_file(key_file(tmp_path, K1.hex(), K1.hex()))
    with pytest.raises(KeyFileError, match="chmod"):
        read_key_file(key_file(tmp_path, K1.hex(), mode=0o644))
    with pytest.raises(KeyFileError):
        read_key_file(tmp_path / "missing.key")
