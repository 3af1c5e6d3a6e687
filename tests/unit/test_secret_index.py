"""SecretIndex: every remembered spelling is found wherever it is in a text, and nothing else."""

from __future__ import annotations

import secrets

from hypothesis import given, settings
from hypothesis import strategies as st

from credhop.credentials import Credential
from credhop.scrub import Redactor, remembered_for
from credhop.secret_index import SHORTEST, SecretIndex


def covered(text: str, forms: list[str]) -> list[tuple[int, int]]:
    """The slow answer: mark every character inside an occurrence of a form, then join overlaps."""
    marks = [False] * len(text)
    for form in forms:
        for at in range(len(text) - len(form) + 1):
            if text.startswith(form, at):
                for i in range(at, at + len(form)):
                    marks[i] = True
    spans, at = [], 0
    while at < len(text):
        if not marks[at]:
            at += 1
            continue
        end = at
        while end < len(text) and marks[end]:
            end += 1
        spans.append((at, end))
        at = end
    return spans


def chars(spans: list[tuple[int, int]]) -> set[int]:
    # touching occurrences stay two spans in the index and one in the slow answer: compare characters
    return {i for start, end in spans for i in range(start, end)}


@settings(max_examples=1500, deadline=None)
@given(forms=st.lists(st.text(alphabet="abc1%", min_size=SHORTEST, max_size=14), min_size=1, max_size=30),
       text=st.text(alphabet="abc1%x", max_size=60))
def test_every_occurrence_is_found_at_any_offset(forms, text):
    index = SecretIndex(capacity=1000)
    index.add(forms)
    text = text[: len(text) // 2] + forms[0] + text[len(text) // 2:] + forms[-1]
    assert chars(index.spans(text)) == chars(covered(text, forms))
    masked = index.mask(text)
    assert not any(form in masked for form in forms if "*" not in form)


def test_the_least_recently_remembered_are_forgotten_beyond_the_capacity():
    index = SecretIndex(capacity=3)
    index.add(["first-secret"])
    index.add(["second-secret", "third-secret"])
    index.add(["first-secret"])  # refreshed: now the newest
    index.add(["fourth-secret"])
    assert index.forms() == ["third-secret", "first-secret", "fourth-secret"]
    forgotten_and_kept = index.mask("second-secret first-secret") == "second-secret ***"
    assert forgotten_and_kept
    # a forgotten form leaves no piece behind that would still point at it
    assert all("second-secret" not in (held if isinstance(held, set) else {held})
               for pieces in index._by_piece.values() for held in pieces.values())


def test_tokens_with_one_long_head_are_told_apart_by_their_tails():
    # JWT-like tokens and Basic values of one user share dozens of leading characters
    index = SecretIndex(capacity=100_000)
    head = "eyJ2ZXIiOjEsImlzdSI6MTY"
    tokens = [head + secrets.token_urlsafe(24) for _ in range(2000)]
    for token in tokens:
        index.add(Credential("aws", token).secret_forms())
    text = f"/simple/pkg/?token={tokens[1234]}&next={head}zzzz"
    assert len(index._candidates(text)) < 20
    masked = index.mask(text) == f"/simple/pkg/?token=***&next={head}zzzz"  # a boolean: a failure prints no token
    assert masked


def test_a_proxy_remembers_the_secrets_of_every_credential_it_may_hold():
    # the old bound, 4,096 spellings, forgot secrets of credentials the store still held
    held = 3000
    redactor = Redactor(remembered=remembered_for(held))
    tokens = [f"tok-{i:05d}-" + secrets.token_urlsafe(18) for i in range(held)]
    for token in tokens:
        redactor.remember(Credential("aws", token).secret_forms())
    leaked = redactor(f"GET /pkg/?t={tokens[0]} HTTP/1.1")
    forgotten = tokens[0] in leaked  # a boolean: a failure prints no token
    assert not forgotten
    assert remembered_for(held) >= 10 * held


def test_short_secrets_are_found_too():
    index = SecretIndex(capacity=10)
    index.add(["pw1", "abcd", "hunter2"])
    masked = index.mask("x=pw1&y=abcd&z=hunter2!") == "x=***&y=***&z=***!"
    assert masked
    index.add(["ab"])  # too short to mask anywhere
    assert "ab" not in index
