"""Presigned URLs: object-store download links whose query carries their own authorization.

Registries (CodeArtifact, Artifactory, GitHub Packages, GitLab) answer artifact downloads with a 3xx
to a presigned S3, GCS or Azure URL. Such a URL needs no client credential, and its signing values are
bearer secrets until they expire: `urls.redact_params` redacts them in everything `scrub` passes,
live logs and reports alike. No mitmproxy here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

# (what it is, query parameter names that must all be present), names compared case-insensitively
SIGNED_KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("S3 SigV4 (X-Amz-Signature)", frozenset({"x-amz-signature"})),
    ("GCS (X-Goog-Signature)", frozenset({"x-goog-signature"})),
    ("Azure SAS (sig, se)", frozenset({"sig", "se"})),
    ("S3 SigV2 (Signature, AWSAccessKeyId, Expires)", frozenset({"signature", "awsaccesskeyid", "expires"})),
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
