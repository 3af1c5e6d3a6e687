"""The Redactor's shortcut for ASCII text without a header name or scheme word scrubs exactly what
the patterns alone scrub."""

from __future__ import annotations

import re
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credhop import scrub
from credhop.records import Action, Event, Why
from credhop.scrub import _AUTH_VALUE, _AUTHORITY_FORM, Redactor, secret_header_names
from credhop.urls import _SIGNED_PARAM, _USERINFO_HEAD, SIGNED_PARAMS, redact_url

PIECES = ["Authorization", "authorization", "COOKIE", "cookie", "X-Api-Key", "private-token", "Proxy-Authorization",
          ": ", ":", ",", "'", '"', "b'", " ", "\t", "\n", "Basic ", "BEARER ", "bearer", "ntlm ", "Negotiate ",
          "dXNlcjpwYXNzd29yZA==", "abcdefghij", "https://", "u:p@", "@", "/", "?x=1", "&", "=", "-", "é", "\u212a",
          "ſ", "Coo\u212aie: v", "x-auth-token"]


def slow(redactor: Redactor, text: str) -> str:
    text = redact_url(text)
    text = redactor._header.sub(lambda m: f"{m[1]}{m[2]}***", text)
    return _AUTH_VALUE.sub(lambda m: f"{m[1]} ***", text)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_the_shortcut_changes_nothing(text):
    for redactor in (Redactor(), Redactor(secret_header_names(["X-Custom-Secret", "Session"]))):
        assert redactor(text) == slow(redactor, text)


def test_a_remembered_answer_is_dropped_when_a_new_secret_is_remembered():
    # record fields are scrubbed once and remembered; a secret learnt later must still be masked
    redactor = Redactor()
    token = "tok_" + "q7" * 10
    # compared as booleans, so a failure prints no token
    unknown_yet = redactor.record({"user": token, "hop": 1}) == {"user": token, "hop": 1}
    assert unknown_yet
    redactor.remember([token])
    masked = redactor.record({"user": token, "hop": 1}) == {"user": "***", "hop": 1}
    assert masked
    masked_inside = redactor.record([f"see {token}", (token,)]) == ["see ***", ["***"]]
    assert masked_inside


class _Text(str):
    """A str subclass that is no code: scrubbed like any string."""


def walk(redactor: Redactor, value: object) -> object:
    """What `Redactor.record` must give, written the slow way: every string that is no code scrubbed."""
    if isinstance(value, Enum) or not isinstance(value, (str, dict, list, tuple)):
        return value
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {k: walk(redactor, v) for k, v in value.items()}
    return [walk(redactor, v) for v in value]


TEXT = st.lists(st.sampled_from(PIECES + ["tok_q7q7q7q7q7"]), max_size=6).map("".join)
LEAVES = (TEXT | TEXT.map(_Text) | st.sampled_from([Why.NO_RULE, Action.STRIP, Event.REDIRECT])
          | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none())
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
                      | st.dictionaries(st.sampled_from(["a", "b", "sent"]), inner, max_size=3), max_leaves=12)


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(st.sampled_from(["url", "user", "hop", "event", "sent", "reason"]), VALUES, max_size=6))
def test_the_record_walk_scrubs_every_string_however_deep(record):
    redactor = Redactor()
    redactor.remember(["tok_q7q7q7q7q7"])
    same = redactor.record(record) == walk(redactor, record)  # a boolean: a failure prints no output
    assert same


def test_a_secret_in_sent_or_in_a_str_subclass_is_scrubbed():
    redactor = Redactor()
    token = "tok_" + "z9" * 10
    redactor.remember([token])
    record = {"hop": 1, "event": Event.INJECT, "user": _Text(f"u {token}"),
              "sent": [{"header": "authorization", "value": _Text(token), "seen": (f"Bearer {token}",)}]}
    text = repr(redactor.record(record))
    # compared as booleans, so a failure prints no token
    leaked = token in text
    assert not leaked
    assert redactor.record(record)["event"] is Event.INJECT  # a code is written as it is


HEAD_PIECES = ["//", "\\\\", "/\\", "/", "\\", "http:", "HTTPS:", "Https:", "wss:", "WS:", "ftp:", "fTp:", "xhttp:",
               "\t", " ", "@", "u:p@", "h", "w", "f", "ttp", ":", "é", "\u212a", "ſ", "-", "_", "1"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(HEAD_PIECES), max_size=16).map("".join))
def test_the_userinfo_head_scan_finds_what_the_plain_pattern_finds(text):
    # urls._USERINFO_HEAD starts with a lookahead on each alternative's first character, for speed
    plain = re.compile(r"[\\/]{2}|(?i:\b(?:https?|wss?|ftp)):[\\/\t]*")
    assert [m.span() for m in _USERINFO_HEAD.finditer(text)] == [m.span() for m in plain.finditer(text)]


@settings(max_examples=600, deadline=None)
@given(forms=st.lists(st.text(alphabet="ab1%", min_size=4, max_size=12), min_size=1, max_size=40),
       pieces=st.lists(st.sampled_from(["a", "b", "1", "%", "x", " ", "ab1%", "aab", "%1b"]), max_size=30),
       cut=st.integers(0, 12))
def test_few_secrets_by_pattern_and_many_by_index_mask_the_same(forms, pieces, cut):
    # up to scrub.FEW spellings a pattern tells whether to look; beyond, the index alone
    text = "".join(pieces[: len(pieces) // 2]) + forms[0][cut:] + "".join(pieces[len(pieces) // 2:]) + forms[-1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scrub, "FEW", 0)
        by_index = Redactor()
        by_index.remember(forms)
    by_pattern = Redactor()
    by_pattern.remember(forms)
    assert by_index(text) == by_pattern(text)


PARAM_PIECES = ["?", "&", ";", "#", "%3F", "%3f", "%26", "%3D", "%3d", "=", "token", "TOKEN", "sig", "X-Amz-Signature",
                "api_key", "v", "1", " ", "'", "%", "\u212a", "ſ", "REDACTED"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PARAM_PIECES), max_size=16).map("".join))
def test_the_signed_parameter_scan_finds_what_the_plain_pattern_finds(text):
    # urls._SIGNED_PARAM starts with a lookahead on the first characters its alternatives can have
    plain = re.compile(r"(?i)((?:[?&;#]|%3F|%26)(?:" + "|".join(re.escape(p) for p in SIGNED_PARAMS) + r")(?:=|%3D))"
                       r"((?:(?!%26)[^&#\s\"'<>\\])+)")
    assert [m.span() for m in _SIGNED_PARAM.finditer(text)] == [m.span() for m in plain.finditer(text)]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["CONNECT ", "GET ", "u:p@", "h:443", " HTTP/1.1", "HTTP/", "http/", " ", "@", "/"]),
                max_size=10).map("".join))
def test_the_authority_form_needs_http_and_an_at_sign(text):
    # Redactor skips _AUTHORITY_FORM for text without both
    if _AUTHORITY_FORM.search(text):
        assert "@" in text and "HTTP/" in text
