"""The simulated clients: who they are (a proxy user each), where they install from, how many files
their install downloads, and the registry token each one's redirect hands out.

Everything follows from the client's number and a seed, so the backend (another process) and the load
generator agree without sharing a table. The seed never leaves the bench's processes (environment
only), and neither does any token derived from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.nginx import htpasswd_line  # {SHA}: base64 of SHA-1, which mitmproxy 12 reads too

LARGE = 2000  # clients: a larger population runs fewer configurations and downloads (the time budget)
USER = "aws"  # the user name of every Location's userinfo, as CodeArtifact's
# where a client installs from: the registry it is redirected to
KINDS = ("ok", "denied", "missing")
KIND_MEANING = {
    "ok": "the registry accepts the client's credential and has the package: 200s",
    "denied": "the registry refuses the credential the redirect handed out (revoked): 401",
    "missing": "the registry accepts the credential but has no such package: 404",
}


@dataclass(frozen=True)
class Client:
    number: int
    kind: str  # one of KINDS
    downloads: int  # files its install downloads after the index page (ok clients only)

    @property
    def name(self) -> str:
        return f"c{self.number}"

    @property
    def proxy_user(self) -> str:
        return f"u{self.number}"

    @property
    def source(self) -> str:
        """A loopback address of its own, so that balancing by source address is sticky per client."""
        n = self.number
        return f"127.{10 + n // (254 * 256)}.{n // 254 % 256}.{n % 254 + 1}"


def population(count: int, mix: dict[str, int], downloads: tuple[int, int], seed: str, first: int = 0,
               downloading: float = 1.0) -> list[Client]:
    """`count` clients numbered from `first`, as many of each kind as `mix`'s weights say (largest
    remainder, so a small population has every kind), in a random order; an ok client's install
    downloads a number of files uniform in `downloads` (inclusive), except that only a `downloading`
    share of them downloads anything: the others find every file in their cache and fetch only the
    index page (its 302 and the follow-up)."""
    rng = random.Random(f"population:{seed}:{first}")
    total = sum(mix.values())
    shares = {k: count * mix.get(k, 0) / total for k in KINDS}
    counts = {k: int(v) for k, v in shares.items()}
    for k in sorted(KINDS, key=lambda k: counts[k] - shares[k])[:count - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k in KINDS for _ in range(counts[k])]
    rng.shuffle(kinds)
    return [Client(n, kind, rng.randint(*downloads) if kind == "ok" and rng.random() < downloading else 0)
            for n, kind in enumerate(kinds, first)]


def proxy_password(seed: str, client: Client) -> str:
    return _derive(seed, "proxy", client.name)[:20]


def token(seed: str, client_name: str) -> str:
    """The registry token the redirector hands `client_name`, with the characters that need
    percent-encoding in userinfo (as the tests' tokens), so decoding bugs show up as failed checks."""
    return f"tk:{_derive(seed, 'token', client_name)[:16]}@/%x"


def basic(seed: str, client_name: str) -> str:
    """The Authorization a registry must get from this client, and from no other."""
    return "Basic " + base64.b64encode(f"{USER}:{token(seed, client_name)}".encode()).decode()


def _derive(seed: str, purpose: str, what: str) -> str:
    digest = hmac.new(seed.encode(), f"{purpose}:{what}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def bcrypt_line(user: str, password: str, rounds: int) -> str:
    import bcrypt

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()}\n"


def write_htpasswd(path: Path, seed: str, clients: list[Client], scheme: str = "sha1",
                   rounds: int = 5) -> Path:
    """Every client's proxy user, one line each, mode 0600."""
    if scheme == "sha1":
        lines = [htpasswd_line(c.proxy_user, proxy_password(seed, c)) for c in clients]
    else:
        lines = [bcrypt_line(c.proxy_user, proxy_password(seed, c), rounds) for c in clients]
    path.write_text("".join(lines))
    path.chmod(0o600)
    return path
