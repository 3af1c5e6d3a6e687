from __future__ import annotations

import ada_url
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credhop.urls import (
    LocationError,
    Origin,
    parse_location,
    parsers_disagree,
    redact_url,
)

BASE = "http://redirector.example:8080/simple/pkg/"


def test_absolute_location_with_encoded_userinfo_is_decoded():
    loc = parse_location("https://aws:t%3Ak%40%2F%25n@Registry.Example/pypi/simple/pkg/?a=1#frag", BASE)
    assert loc.credential is not None
    assert (loc.credential.user, loc.credential.password) == ("aws", "t:k@/%n")
    assert loc.origin == Origin("https", "registry.example", 443)
    assert loc.url == "https://registry.example/pypi/simple/pkg/?a=1"
    assert loc.path == "/pypi/simple/pkg/?a=1"
    assert not loc.relative
    # only the userinfo goes; case, query and fragment are the server's
    assert loc.stripped == "https://Registry.Example/pypi/simple/pkg/?a=1#frag"


@pytest.mark.parametrize(
    ("raw", "user", "password"),
    [
        ("https://TOKEN@h.example/", "TOKEN", ""),
        ("https://:pw@h.example/", "", "pw"),
        ("https://u:@h.example/", "u", ""),
        ("https://a@b:c@h.example/", "a@b", "c"),  # the last "@" ends the userinfo
    ],
)
def test_userinfo_parts(raw, user, password):
    loc = parse_location(raw, BASE)
    assert loc.credential is not None
    assert (loc.credential.user, loc.credential.password) == (user, password)
    assert loc.stripped == "https://h.example/"


def test_empty_userinfo_is_no_credential():
    loc = parse_location("https://@h.example/x", BASE)
    assert loc.credential is None
    assert loc.stripped == "https://@h.example/x"  # nothing to move, left as sent


def test_user_only_token_is_the_display_secret():
    loc = parse_location("https://TOKEN@h.example/", BASE)
    assert loc.credential.display_user is None
    assert loc.credential.token == "TOKEN"


@pytest.mark.parametrize(
    ("raw", "url", "relative"),
    [
        ("/pypi/simple/pkg/", "http://redirector.example:8080/pypi/simple/pkg/", True),
        ("../other/", "http://redirector.example:8080/simple/other/", True),
        ("?page=2", "http://redirector.example:8080/simple/pkg/?page=2", True),
        ("//u:p@idx.example:8443/s/", "http://idx.example:8443/s/", True),
        ("HTTPS://idx.example:443/s/", "https://idx.example/s/", False),
    ],
)
def test_relative_locations_resolve_against_the_request(raw, url, relative):
    loc = parse_location(raw, BASE)
    assert loc.url == url
    assert loc.relative is relative


def test_scheme_relative_userinfo_is_stripped_in_place():
    loc = parse_location("//u:p@idx.example:8443/s/", BASE)
    assert loc.stripped == "//idx.example:8443/s/"
    assert loc.origin == Origin("http", "idx.example", 8443)


def test_default_port_spelled_out_is_the_same_origin():
    assert parse_location("https://u:p@h.example:443/", BASE).origin == Origin("https", "h.example", 443)
    assert parse_location("http://u:p@h.example:80/", BASE).origin == Origin("http", "h.example", 80)


@pytest.mark.parametrize("raw", ["https://u:p@h.example:65536/", "ftp://u:p@h.example/", "javascript:alert(1)", "http://u:p@/x"])
def test_unusable_locations_raise_without_secret(raw):
    with pytest.raises(LocationError) as e:
        parse_location(raw, BASE)
    assert ":p@" not in str(e.value)


def test_invalid_utf8_userinfo_is_an_error():
    with pytest.raises(LocationError, match="UTF-8"):
        parse_location("https://u:%ff%fe@h.example/", BASE)


def test_backslash_authority_is_read_the_whatwg_way():
    loc = parse_location("http://good.example\\@evil.example/", BASE)
    assert loc.origin.host == "good.example"
    assert loc.credential is None


def test_strip_falls_back_to_serialisation_when_text_cut_is_ambiguous():
    # tab inside the authority: WHATWG removes it; the cut must not change the target
    raw = "https://u:p@h.exa\tmple/x"
    out = parse_location(raw, BASE).stripped
    assert "u:p" not in out
    assert parse_location(out, BASE).origin == parse_location(raw, BASE).origin


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://aws:s3cret@h/x", "https://aws:***@h/x"),
        ("https://TOKEN@h/x", "https://***@h/x"),
        ("https://TOKEN:@h/x", "https://***@h/x"),
        ("see //u:p@h and http://a:b@c@d/", "see //u:***@h and http://a:***@d/"),
        ("https://h/no-userinfo?x=@y", "https://h/no-userinfo?x=@y"),
    ],
)
def test_redact_url(text, expected):
    assert redact_url(text) == expected


def test_origin_strings_and_loopback():
    assert str(Origin("https", "h.example", 443)) == "https://h.example"
    assert str(Origin("http", "::1", 8080)) == "http://[::1]:8080"
    assert Origin("http", "127.0.0.2", 80).is_loopback
    assert Origin("http", "localhost", 80).is_loopback
    assert not Origin("http", "10.0.0.1", 80).is_loopback


def test_parsers_disagree_on_backslash_but_not_on_plain_urls():
    ambiguous = "http://u:p@good.example\\@evil.example/"
    assert parsers_disagree(ambiguous, parse_location(ambiguous, BASE))
    plain = "https://u:p@registry.example:8443/simple/"
    assert not parsers_disagree(plain, parse_location(plain, BASE))


def test_a_user_name_that_spells_the_password_is_masked_too():
    loc = parse_location("http:k%3ASecret2:k%3ASecret2@127.0.0.3:8082/x", "https://redirector.example/a")
    assert "Secret2" not in loc.redacted and loc.credential.display_user is None
    assert redact_url("https://tok3n:tok3n@h/") == "https://***@h/"
    assert redact_url("https://aws:tok3n@h/") == "https://aws:***@h/"


_URL_PIECES = ["http", "https", "HTTPS", "ftp", ":", "//", "/", "\\", "@", "a", "b", "user", "p%40ss", "%3A", ":", "[::1]",
               "[::ffff:127.0.0.1]", "127.0.0.1", "0x7f.1", "xn--nxasmq6b", "例え", "host.example", ":443", ":8080",
               ":80", "?", "#", "q=1", "&", "..", ".", " ", "\t", "%2F", "~", "ß"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_URL_PIECES), min_size=1, max_size=12).map("".join),
       st.sampled_from(["https://base.example/dir/page", "http://10.0.0.1:8080/a/b?c#d"]))
def test_the_parts_read_from_an_href_are_adas_own(raw, base):
    # parse_location reads one href and splits it as text: each part must be what ada says it is
    from credhop.urls import _Href

    try:
        url = ada_url.URL(raw, base)
    except ValueError:
        return
    parts = _Href.split(url.href)
    assert parts.scheme == url.protocol[:-1]
    if parts.scheme not in ("http", "https"):
        return
    assert (parts.username, parts.password, parts.host) == (url.username, url.password, url.host)
    assert (parts.path, parts.fragment or "#") == (url.pathname + url.search, url.hash or "#")
    userinfo = f"{url.username}:{url.password}@" if url.password else f"{url.username}@" if url.username else ""
    assert f"{parts.scheme}://{userinfo}{parts.host}{parts.tail}{parts.fragment}" == url.href
    origin = parts.origin()
    assert origin.host == url.hostname.strip("[]")
    assert origin.port == (int(url.port) if url.port else {"http": 80, "https": 443}[parts.scheme])


@pytest.mark.parametrize("raw", ["httphttp:443://", "mailto:a@b.example", "javascript:alert(1)//https://x/"])
def test_a_location_of_another_scheme_is_refused_by_its_scheme(raw):
    with pytest.raises(LocationError, match=f"scheme '{raw.partition(':')[0]}' is not http or https"):
        parse_location(raw, "https://redirector.example/")


_USERINFO = st.lists(st.sampled_from(list("ab:@%/\\?#~ .é\t") + ["%40", "%3A", "%2F", "%25"]), max_size=8).map("".join)


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["https://", "http://", "HTTPS://", "https:", "//", "https:\\\\"]), _USERINFO, _USERINFO,
       st.sampled_from(["registry.example", "[::1]:8443", "127.0.0.1:80", "xn--nxasmq6b.example", "h"]),
       st.sampled_from(["", "/", "/a/b?c=1", "/x#frag", "?q", "#"]),
       st.sampled_from(["https://base.example/dir/page", "http://10.0.0.1:8080/a/b?c#d"]))
def test_the_userinfo_cut_of_a_location_in_canonical_form_is_the_verified_one(head, user, password, host, tail, base):
    # parse_location takes a Location the parser would write the same as it is without a second
    # parse; the cut must be the one the verifying parse finds
    from credhop.urls import _Href, _userinfo_cut

    raw = f"{head}{user}:{password}@{host}{tail}"
    try:
        href = ada_url.URL(raw, base).href
    except ValueError:
        return
    for text in (raw, href):
        try:
            location = parse_location(text, base)
        except LocationError:
            continue
        if location.credential is None:
            continue
        parts = _Href.split(href)
        assert location.cut == _userinfo_cut(text, base, parts.without_credentials + parts.fragment)
