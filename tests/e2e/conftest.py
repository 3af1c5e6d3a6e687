from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.pki import make_pki
from tests.fixtures.registry import AuthIndex, Redirector
from tests.fixtures.wheel import build_wheel
from tests.secrets_check import Secret, secret_forms

USER = "aws"


@pytest.fixture(scope="session")
def token() -> str:
    # fresh per run, with every character that needs percent-encoding in userinfo
    return Secret(f"tk:{secrets.token_urlsafe(12)}@/%x")


@pytest.fixture(scope="session")
def forms(token: str) -> set[str]:
    return secret_forms(token, user=USER)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@dataclass
class Registry:
    index: AuthIndex
    redirector: Redirector
    scheme: str
    ca: Path | None  # what a client must trust to talk to it directly (https only)
    test_ca: Path  # the fixtures' CA, which mitmproxy trusts upstream

    @property
    def simple_url(self) -> str:
        return self.redirector.simple_url


@pytest.fixture
def registry_factory(pki, wheel, token):
    started: list = []

    def make(scheme: str = "https", unauth_status: int = 404, index_host: str = "127.0.0.2") -> Registry:
        tls = pki.server_context() if scheme == "https" else None
        index = AuthIndex(USER, token, wheel, unauth_status=unauth_status, host=index_host, tls=tls,
                          prefix="/pypi/python").start()
        redirector = Redirector(target="", tls=pki.server_context() if scheme == "https" else None).start()
        redirector.target = index.credentials_url("/simple/")
        started.extend([index, redirector])
        return Registry(index, redirector, scheme, pki.ca_cert if tls else None, pki.ca_cert)

    yield make
    for server in started:
        server.stop()
