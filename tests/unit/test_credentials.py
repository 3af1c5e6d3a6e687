from __future__ import annotations

import base64

import pytest

from credhop.credentials import BASIC, Credential, CredentialError, Fingerprinter, HeaderTemplate, _secret_forms

KEY = b"k" * 32


def test_basic_header_is_base64_of_decoded_user_and_password():
    value = BASIC.render(Credential("aws", "t:k@/%n"))
    assert value == "Basic " + base64.b64encode(b"aws:t:k@/%n").decode()


@pytest.mark.parametrize(
    ("template", "expected"),
    [("Bearer {token}", "Bearer TOK"), ("{password}", "TOK"), ("{user}/{token}", "me/TOK")],
)
def test_templates(template, expected):
    assert HeaderTemplate.compile("X-Token", template).render(Credential("me", "TOK")) == expected


def test_token_is_the_user_when_there_is_no_password():
    assert HeaderTemplate.compile("Authorization", "Bearer {token}").render(Credential("TOK", "")) == "Bearer TOK"


@pytest.mark.parametrize("user,password", [("a\r\nX-Evil: 1", "p"), ("u", "p\n"), ("u", "p\x00"), ("", "")])
def test_unsafe_credentials_never_render(user, password):
    cred = Credential(user, password)
    assert cred.problem()
    with pytest.raises(CredentialError) as e:
        BASIC.render(cred)
    assert "Evil" not in str(e.value)


@pytest.mark.parametrize("template", ["{password!r}", "{password:>20}", "{user.__class__}", "{0}"])
def test_templates_refuse_format_tricks(template):
    with pytest.raises(ValueError):
        HeaderTemplate.compile("X", template)


def test_repr_and_fingerprint_hold_no_secret():
    cred = Credential("aws", "hunter2-secret")
    assert "hunter2" not in repr(cred)
    fp = Fingerprinter(KEY)(cred)
    assert fp.startswith("hm:") and "hunter2" not in fp
    assert fp == Fingerprinter(KEY)(Credential("aws", "hunter2-secret"))
    assert fp != Fingerprinter(b"other-key-0123456789")(cred)
    assert fp != Fingerprinter(KEY)(Credential("aws", "hunter3-secret"))
    with pytest.raises(ValueError):
        Fingerprinter(b"short")


def test_secret_forms_are_remembered_per_credential_and_handed_out_as_a_fresh_set():
    forms = Credential("aws", "p@ss:word/1").secret_forms()
    computed = _secret_forms.__wrapped__("aws", "p@ss:word/1")
    forms.add("a caller's own entry")
    again = Credential("aws", "p@ss:word/1").secret_forms()
    # compared as booleans: a failure prints no secret
    as_computed, untouched = again == computed, "a caller's own entry" not in again
    other_user = Credential("bob", "p@ss:word/1").secret_forms() != again  # the user is part of the key
    assert as_computed and untouched and other_user
    assert _secret_forms.cache_info().maxsize == 256  # bounded
