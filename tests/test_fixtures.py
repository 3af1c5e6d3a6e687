"""Self-tests for the test fixtures (loopback only)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import socket
import ssl
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from cryptography import x509

from tests.fixtures.pki import TestPKI, make_pki
from tests.fixtures.registry import AuthIndex, Redirector
from tests.fixtures.server import AuthOrigin, Request, Response, Server, userinfo_url
from tests.fixtures.wheel import build_wheel, record_hash, sha256_file

USER = "aws"
# Characters that break naive userinfo handling; never printed by the tests.
PASSWORD = "tk:s3cr3t@/%x"
PROJECT = "credhop-demo-pkg"
WHEEL_NAME = "credhop_demo_pkg-1.0.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def assert_secret_equal(actual: object, expected: object, what: str) -> None:
    """Compare values holding the test password without echoing them on failure."""
    if actual != expected:
        raise AssertionError(f"{what} differs (values withheld: they contain the test password)")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    ca: Path | None = None,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request with http.client, which never follows redirects."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        # Hostname (here an IP) is verified against the leaf's SAN.
        ctx = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=5)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp, body
    finally:
        conn.close()


# -- wheel ------------------------------------------------------------------


def test_wheel_is_valid(wheel: Path) -> None:
    assert wheel.name == WHEEL_NAME
    with zipfile.ZipFile(wheel) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        record = zf.read("credhop_demo_pkg-1.0.0.dist-info/RECORD").decode()
        rows = [line.split(",") for line in record.splitlines()]
        listed = {row[0] for row in rows}
        assert listed == names
        for path, digest, size in rows:
            if path.endswith("/RECORD"):
                assert (digest, size) == ("", "")
                continue
            data = zf.read(path)
            assert digest == record_hash(data)
            assert not digest.endswith("=")
            assert int(size) == len(data)
        metadata = zf.read("credhop_demo_pkg-1.0.0.dist-info/METADATA").decode()
        assert f"Name: {PROJECT}\n" in metadata and "Version: 1.0.0\n" in metadata
        wheel_meta = zf.read("credhop_demo_pkg-1.0.0.dist-info/WHEEL").decode()
        assert "Tag: py3-none-any\n" in wheel_meta and "Root-Is-Purelib: true\n" in wheel_meta
        module = zf.read("credhop_demo_pkg/__init__.py").decode()
        assert module == 'VALUE = "installed-through-credhop"\n'


def test_wheel_record_hash_matches_reference(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("credhop_demo_pkg/__init__.py")
    raw = hashlib.sha256(data).digest()
    expected = "sha256=" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert record_hash(data) == expected
    assert sha256_file(wheel) == hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_wheel_is_reproducible(wheel: Path, tmp_path: Path) -> None:
    assert build_wheel(tmp_path).read_bytes() == wheel.read_bytes()


# -- pki --------------------------------------------------------------------


def test_pki_files(pki: TestPKI) -> None:
    assert stat.S_IMODE(os.stat(pki.leaf_key).st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(pki.leaf_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.issuer == ca.subject != leaf.subject
    leaf.verify_directly_issued_by(ca)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.2", "::1"}


# -- index ------------------------------------------------------------------


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[401, 404])
def index(
    request: pytest.FixtureRequest, scheme: str, wheel: Path, pki: TestPKI
) -> Iterator[AuthIndex]:
    tls = pki.server_context() if scheme == "https" else None
    with AuthIndex(USER, PASSWORD, wheel, unauth_status=request.param, tls=tls) as server:
        yield server


def test_index_url(index: AuthIndex) -> None:
    assert index.url == f"{index.scheme}://127.0.0.2:{index.port}"
    assert index.origin == index.url
    assert index.simple_url == index.url + "/simple/"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "auth",
    [None, basic(USER, "wrong"), basic("other", PASSWORD), {"Authorization": "Bearer x"}],
    ids=["none", "bad-password", "bad-user", "bearer"],
)
def test_index_rejects_without_credentials(
    index: AuthIndex, pki: TestPKI, method: str, auth: dict[str, str] | None
) -> None:
    for url in (index.simple_url, index.project_url, index.file_url):
        status, resp, body = request(url, method, auth, ca=pki.ca_cert)
        assert status == index.unauth_status
        if status == 401:
            assert resp.getheader("WWW-Authenticate") == 'Basic realm="credhop-test"'
        if method == "HEAD":
            assert body == b""
        else:
            assert body in (b"unauthorized\n", b"not found\n")


def test_index_serves_with_credentials(index: AuthIndex, pki: TestPKI, wheel: Path) -> None:
    auth = basic(USER, PASSWORD)
    status, _, body = request(index.simple_url, headers=auth, ca=pki.ca_cert)
    assert status == 200 and f'href="{PROJECT}/"'.encode() in body

    status, resp, body = request(index.project_url, headers=auth, ca=pki.ca_cert)
    assert status == 200
    assert resp.getheader("Content-Type", "").startswith("text/html")
    link = f'href="../../files/{WHEEL_NAME}#sha256={sha256_file(wheel)}"'
    assert link.encode() in body

    status, resp, body = request(index.file_url, headers=auth, ca=pki.ca_cert)
    assert status == 200 and body == wheel.read_bytes()
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert resp.getheader("Content-Length") == str(len(body))

    # Non-normalized project names are served too.
    status, _, _ = request(index.simple_url + "Credhop_Demo.Pkg/", headers=auth, ca=pki.ca_cert)
    assert status == 200


def test_index_head(index: AuthIndex, pki: TestPKI, wheel: Path) -> None:
    status, resp, body = request(index.file_url, "HEAD", basic(USER, PASSWORD), ca=pki.ca_cert)
    assert status == 200 and body == b""
    assert resp.getheader("Content-Length") == str(wheel.stat().st_size)


@pytest.mark.parametrize("path", ["/simple/other/", "/files/other.whl", "/", "/simple"])
def test_index_unknown_paths(index: AuthIndex, pki: TestPKI, path: str) -> None:
    status, _, _ = request(index.url + path, headers=basic(USER, PASSWORD), ca=pki.ca_cert)
    assert status == 404


def test_index_records_requests(index: AuthIndex, pki: TestPKI) -> None:
    request(index.project_url + "?x=1", headers={"X-Probe": "one"}, ca=pki.ca_cert)
    request(index.project_url, "HEAD", {**basic(USER, PASSWORD), "X-Probe": "two"}, ca=pki.ca_cert)
    assert [(r.method, r.target) for r in index.requests] == [
        ("GET", "/simple/credhop-demo-pkg/?x=1"),
        ("HEAD", "/simple/credhop-demo-pkg/"),
    ]
    assert index.headers_seen("X-PROBE") == ["one", "two"]
    expected_auth = [basic(USER, PASSWORD)["Authorization"]]
    assert_secret_equal(index.headers_seen("authorization"), expected_auth, "recorded Authorization")
    assert "s3cr3t" not in repr(index.requests) and expected_auth[0] not in repr(index.requests)
    assert index.requests[1].header("x-probe") == ["two"]
    assert all(name == name.lower() for r in index.requests for name in r.headers)
    index.clear_requests()
    assert index.requests == []


def test_index_prefix(wheel: Path) -> None:
    auth = basic(USER, PASSWORD)
    with AuthIndex(USER, PASSWORD, wheel, prefix="/pypi/python/") as index:
        assert index.simple_url == index.url + "/pypi/python/simple/"
        assert index.file_url == index.url + f"/pypi/python/files/{WHEEL_NAME}"
        assert request(index.project_url, headers=auth)[0] == 200
        assert request(index.file_url, headers=auth)[0] == 200
        assert request(index.url + f"/simple/{PROJECT}/", headers=auth)[0] == 404
        assert request(index.url + f"/files/{WHEEL_NAME}", headers=auth)[0] == 404


def test_index_ipv6(wheel: Path) -> None:
    # A fixed port is known before start(), so the URL shape is always checked.
    assert AuthIndex(USER, PASSWORD, wheel, host="::1", port=8443).url == "http://[::1]:8443"
    try:
        index = AuthIndex(USER, PASSWORD, wheel, host="::1").start()
    except OSError:
        # No IPv6 loopback (some containers). Not a skip: CREDHOP_STRICT fails
        # skips, and a missing ::1 is no missing tool.
        return
    with index:
        assert index.url == f"http://[::1]:{index.port}"
        assert request(index.project_url, headers=basic(USER, PASSWORD))[0] == 200


def test_credentials_url(wheel: Path) -> None:
    url = userinfo_url("https", "127.0.0.2", 8443, USER, PASSWORD, "/simple/")
    expected = "https://aws:tk%3As3cr3t%40%2F%25x@127.0.0.2:8443/simple/"
    assert_secret_equal(url, expected, "userinfo URL")
    parts = urlsplit(url)
    assert_secret_equal(unquote(parts.password or ""), PASSWORD, "decoded password")
    assert parts.hostname == "127.0.0.2" and parts.username == USER
    assert userinfo_url("http", "::1", 1, "u", "p", "x") == "http://u:p@[::1]:1/x"
    with AuthIndex(USER, PASSWORD, wheel, prefix="/p") as index:
        expected = userinfo_url("http", "127.0.0.2", index.port, USER, PASSWORD, "/p/simple/")
        assert_secret_equal(index.credentials_url(), expected, "credentials_url()")


def test_stop_is_idempotent_and_port_stays_known(wheel: Path) -> None:
    index = AuthIndex(USER, PASSWORD, wheel)
    with pytest.raises(RuntimeError):
        index.port
    index.start()
    port = index.port
    # A kept-alive connection must not outlive stop().
    conn = http.client.HTTPConnection(index.host, port, timeout=5)
    conn.request("GET", "/simple/")
    conn.getresponse().read()
    index.stop()
    index.stop()
    assert index.port == port
    with pytest.raises(OSError):
        conn.request("GET", "/simple/")
        conn.getresponse()
    conn.close()
    with pytest.raises(OSError):
        request(index.simple_url)


# -- redirector -------------------------------------------------------------


def test_redirector(scheme: str, pki: TestPKI) -> None:
    tls = pki.server_context() if scheme == "https" else None
    target = userinfo_url(scheme, "127.0.0.2", 43123, USER, PASSWORD, "/simple/")
    # The target may be set after construction (the index port comes later).
    with Redirector("", tls=tls) as redirector:
        redirector.target = target
        assert redirector.url == f"{scheme}://127.0.0.1:{redirector.port}"
        files = target.removesuffix("simple/") + "files/"
        cases = {
            "/simple/": target,
            "/simple/x/": target + "x/",
            "/files/y": files + "y",
        }
        for method in ("GET", "HEAD"):
            for path, location in cases.items():
                status, resp, body = request(redirector.url + path, method, {"X-Probe": path}, pki.ca_cert)
                assert status == 302, path
                assert_secret_equal(resp.getheader("Location"), location, f"Location for {path}")
                assert resp.getheader("Content-Length") == "0" and body == b""
        assert request(redirector.url + "/other", ca=pki.ca_cert)[0] == 404
        assert [r.target for r in redirector.requests][:3] == list(cases)
        assert redirector.headers_seen("x-probe")[:3] == list(cases)


def test_redirector_status_and_prefix() -> None:
    with Redirector("http://h/pypi/simple/", status=307, prefix="/r") as redirector:
        status, resp, _ = request(redirector.url + "/r/files/a.whl")
        assert status == 307 and resp.getheader("Location") == "http://h/pypi/files/a.whl"
        assert request(redirector.url + "/simple/x/")[0] == 404
    # Without a trailing "simple/" there is no files mapping.
    with Redirector("http://h/other/") as redirector:
        assert request(redirector.url + "/files/a.whl")[0] == 404
        assert request(redirector.url + "/simple/x/")[1].getheader("Location") == "http://h/other/x/"


# -- the server core ----------------------------------------------------------


def exchange(server: Server, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_server_answers_every_method_from_its_app_and_records_it() -> None:
    def app(req: Request) -> Response:
        return Response(201, [("X-Seen", f"{req.method} {req.path} {req.query} {len(req.body)}")], b"made\n")

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    auth = basic(USER, PASSWORD)
    with Server(app) as server:
        assert server.url == f"http://127.0.0.1:{server.port}" == server.origin
        for method in methods:
            body = b"x=1" if method in ("POST", "PUT", "PATCH") else None
            conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
            conn.request(method, "/a/b?c=d", body=body, headers={**auth, "X-Probe": method})
            resp = conn.getresponse()
            assert resp.status == 201 and resp.read() == (b"" if method == "HEAD" else b"made\n")
            assert resp.getheader("X-Seen") == f"{method} /a/b c=d {len(body or b'')}"
            assert resp.getheader("Content-Length") == "5" and resp.getheader("Server") == "credhop-test"
            conn.close()
    recorded = [(r.method, r.target, r.status) for r in server.requests]
    assert recorded == [(m, "/a/b?c=d", 201) for m in methods]
    assert server.headers_seen("x-probe") == methods
    assert server.requests[2].body == b"x=1" and server.requests[2].first_header("X-PROBE") == "POST"
    assert server.requests[0].first_header("x-missing") is None
    shown = repr(server.requests)
    assert "Basic" not in shown and "s3cr3t" not in shown and "<redacted" in shown and "<3 bytes>" in shown


def test_server_chunked_request_body_and_keep_alive() -> None:
    with Server(lambda req: Response(200, body=req.body[::-1])) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("POST", "/", body=iter([b"ab", b"", b"cd"]), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.read() == b"dcba" and resp.getheader("Transfer-Encoding") is None
        sock = conn.sock
        conn.request("POST", "/", body=b"xyz")  # same connection, kept alive
        assert conn.getresponse().read() == b"zyx" and conn.sock is sock
        conn.close()
        assert [r.body for r in server.requests] == [b"abcd", b"xyz"]


def test_server_http10_pipelining_and_unknown_methods() -> None:
    with Server(lambda req: Response(200, body=req.target.encode())) as server:
        # Two HTTP/1.1 requests in one write: both answered, in order, on one connection.
        two = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        raw = exchange(server, two)
        assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2 and raw.endswith(b"/2")
        assert b"\r\n\r\n/1HTTP/1.1" in raw  # not chunked: the first body ends where the next answer starts
        # An HTTP/1.0 client gets its connection closed after the answer (exchange() reads to EOF).
        raw = exchange(server, b"GET /old HTTP/1.0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\nContent-Length: 4\r\n\r\n/old")
        assert exchange(server, b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n").startswith(b"HTTP/1.1 501 ")
    assert [r.target for r in server.requests] == ["/1", "/2", "/old"]


def test_server_app_error_is_a_500_and_no_app_is_404(pki: TestPKI) -> None:
    def broken(req: Request) -> Response:
        raise KeyError(req.target)

    with Server(broken, tls=pki.server_context(), host="127.0.0.2") as server:
        assert server.url.startswith("https://127.0.0.2:")
        status, _, body = request(server.url + "/x", ca=pki.ca_cert)
        assert (status, body) == (500, b"fixture error: KeyError\n")
        assert server.requests[0].status == 500
    with Server() as server:
        assert request(server.url + "/")[:3:2] == (404, b"not found\n")


def test_auth_origin_gates_its_app() -> None:
    with AuthOrigin(USER, PASSWORD, lambda req: Response(200, body=b"in\n")) as origin:
        assert origin.host == "127.0.0.2"
        status, resp, body = request(origin.url + "/p")
        assert (status, body) == (401, b"unauthorized\n")
        assert resp.getheader("WWW-Authenticate") == 'Basic realm="credhop-test"'
        assert request(origin.url + "/p", "POST", basic(USER, PASSWORD))[::2] == (200, b"in\n")
        assert_secret_equal(
            origin.credentials_url("/p?q=1"),
            userinfo_url("http", "127.0.0.2", origin.port, USER, PASSWORD, "/p?q=1"),
            "credentials_url",
        )
        assert [r.status for r in origin.requests] == [401, 200]
    with pytest.raises(ValueError):
        AuthOrigin(USER, PASSWORD, unauth_status=403)


def test_index_refuses_other_methods_before_the_credential_check(index: AuthIndex, pki: TestPKI) -> None:
    status, resp, body = request(index.simple_url, "POST", ca=pki.ca_cert)
    assert (status, body, resp.getheader("Allow")) == (405, b"method not allowed\n", "GET, HEAD")
    assert index.requests[0].status == 405


def test_catalog_dependencies_reach_every_package_and_pep658_metadata_matches(tmp_path: Path) -> None:
    """The install benchmark's catalog: package 0's Requires-Dist closure is the whole catalog, and
    each wheel's served metadata is the METADATA inside it, with the hash the page announces."""
    from tests.fixtures.catalog import CatalogApp, build_catalog, package_name

    packages = build_catalog(tmp_path, count=9, fanout=2)
    app = CatalogApp(packages)
    requires: dict[str, list[str]] = {}
    for p in packages:
        with zipfile.ZipFile(p.wheel) as z:
            metadata = z.read(f"{p.name.replace('-', '_')}-1.0.0.dist-info/METADATA")
            assert z.testzip() is None
        requires[p.name] = re.findall(r"^Requires-Dist: (\S+)$", metadata.decode(), re.M)
        page = app(Request("GET", f"/simple/{p.name}/", {}, b"")).body.decode()
        href, announced = re.search(r'href="\.\./\.\./files/([^"#]+)#sha256=[0-9a-f]+" data-core-metadata="sha256=([0-9a-f]+)"', page).groups()
        served = app(Request("GET", f"/files/{href}.metadata", {}, b"")).body
        assert served == metadata and hashlib.sha256(served).hexdigest() == announced
        assert app(Request("GET", f"/files/{href}", {}, b"")).body == p.wheel.read_bytes()
    seen, todo = set(), [package_name(0)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += requires[name]
    assert seen == {p.name for p in packages} and len({p.size for p in packages}) > 3
    assert app(Request("GET", "/simple/no-such-package/", {}, b"")).status == 404
