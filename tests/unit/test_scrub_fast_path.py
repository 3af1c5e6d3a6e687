"""The Redactor's shortcut for ASCII text without a header name or scheme word scrubs exactly what
the patterns alone scrub."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from credhop.scrub import _AUTH_VALUE, Redactor, secret_header_names
from credhop.urls import redact_url

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
