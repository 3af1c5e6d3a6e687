"""Presigned URLs: object-store download links whose query carries their own authorization.

Registries (CodeArtifact, Artifactory, GitHub Packages, GitLab) answer artifact downloads with a 3xx
to a presigned S3, GCS or Azure URL. Such a URL needs no client credential, and its signing values are
bearer secrets until they expire: the report redacts them wherever it writes text. No mitmproxy here.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from .scrub import scrub

# (what it is, query parameter names that must all be present), names compared case-insensitively
SIGNED_KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("S3 SigV4 (X-Amz-Signature)", frozenset({"x-amz-signature"})),
    ("GCS (X-Goog-Signature)", frozenset({"x-goog-signature"})),
    ("Azure SAS (sig, se)", frozenset({"sig", "se"})),
    ("S3 SigV2 (Signature, AWSAccessKeyId, Expires)", frozenset({"signature", "awsaccesskeyid", "expires"})),
)
# Query values that are secrets (signatures, session tokens, credential scopes); expiry and date stay
# readable because they explain a 403 at a presigned URL.
SECRET_PARAMS = ("x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
                 "x-goog-credential", "sig", "signature", "awsaccesskeyid", "policy", "key-pair-id")
# `name=value` after ?, & or ; (also percent-encoded, for a signed URL nested in another URL's query)
_SECRET_VALUE = re.compile(
    r"(?i)((?:[?&;]|%3F|%26)(?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")(?:=|%3D))"
    r"((?:(?!%26)[^&#\s\"'<>\\])*)"
)


def signed_url_kind(url: str | None) -> str | None:
    """What kind of presigned URL `url` is, or None. Reads parameter names only, so redacted URLs work."""
    if not url or "?" not in url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    names = {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}
    for kind, needed in SIGNED_KINDS:
        if needed <= names:
            return kind
    return None


def redact_signed_query(text: str) -> str:
    """Every signing value of a presigned URL in `text` replaced by `***` (names stay)."""
    return _SECRET_VALUE.sub(lambda m: f"{m[1]}***", text)


def scrub_report(text: str) -> str:
    """`scrub` (userinfo, secret headers, auth tokens) plus signed-URL query values: for report output."""
    return redact_signed_query(scrub(text))
