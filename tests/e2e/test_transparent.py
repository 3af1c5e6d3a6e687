"""credhop as a transparent gateway, in network namespaces the tests make (tests/fixtures/netns.py).

Clients in their own namespaces have no proxy settings; the gateway namespace forwards and
REDIRECTs their TCP 80/443 to `mitmdump --mode transparent` with credhop; the redirector, the
auth-only index and an "evil" server sit in a server namespace on their own addresses and names.
Real uv 0.5.25, uv, pip and curl; a real squid as the parent proxy. Needs Linux and root (CI);
elsewhere the tests skip, and CREDHOP_STRICT=1 makes that a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Mitmdump, Result, all_text_under, clean_env, run, tool
from tests.fixtures.netns import ADDR, GATEWAY_PORT, NAMES, Network, Unavailable, firewall_tool, why_unavailable
from tests.fixtures.pki import make_pki
from tests.fixtures.registry import AuthIndex, Redirector
from tests.fixtures.server import Server, text, userinfo_url
from tests.secrets_check import Secret, assert_no_leak, secret_forms

PACKAGE = "credhop-demo-pkg"
MODULE = "credhop_demo_pkg"
USER = "aws"
PREFIX = "/pypi/python"
PORTS = {"http": 80, "https": 443}
PARENT_USER = "parent"
PARENT_PORT = 3128
RULES = """\
rules:
  - name: corp
    match: {host: "*.corp.test"}
    action: inject
    allow_plaintext: true   # the test network's http index is not loopback
    on_leak: strip
"""


# -- the network ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net():
    reason = why_unavailable()
    if reason:
        pytest.skip(f"transparent-mode tests need network namespaces: {reason}")
    tool_name = firewall_tool()
    if tool_name is None:
        pytest.skip("transparent-mode tests need nft or iptables (`make tools` installs nftables as root)")
    network = Network()
    try:
        try:
            network.up()
        except Unavailable as e:
            pytest.skip(f"transparent-mode tests need network namespaces: {e}")
        network.redirect(tool_name)
        yield network
    finally:
        left = network.down()
        assert not left and not network.leftovers(), f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def ns_pki(tmp_path_factory):
    hosts = (*NAMES.values(), *(ADDR[k] for k in NAMES))
    return make_pki(tmp_path_factory.mktemp("ns-pki"), hosts)


@pytest.fixture(scope="module")
def ns_wheel(tmp_path_factory):
    from tests.fixtures.wheel import build_wheel

    return build_wheel(tmp_path_factory.mktemp("ns-wheel"))


@dataclass
class Servers:
    index: AuthIndex
    redirector: Redirector
    evil: Server
    scheme: str

    @property
    def simple_url(self) -> str:
        return f"{self.scheme}://{NAMES['redirector']}/simple/"

    @property
    def index_origin(self) -> str:
        return f"{self.scheme}://{NAMES['index']}"

    @property
    def page_url(self) -> str:  # the index page, straight (no redirect)
        return f"{self.index_origin}{PREFIX}/simple/{PACKAGE}/"


@pytest.fixture
def servers(net, ns_pki, ns_wheel, token):
    """start(scheme, unauth) -> Servers in the server namespace, on ports 80/443 of their own addresses."""
    started: list[Server] = []

    def start(scheme: str, unauth: int = 404) -> Servers:
        port = PORTS[scheme]
        tls = (lambda: ns_pki.server_context()) if scheme == "https" else (lambda: None)
        index = AuthIndex(USER, token, ns_wheel, unauth_status=unauth, host=ADDR["index"], port=port, tls=tls(),
                          prefix=PREFIX)
        redirector = Redirector(userinfo_url(scheme, NAMES["index"], port, USER, token, f"{PREFIX}/simple/"),
                                host=ADDR["redirector"], port=port, tls=tls())
        evil = Server(lambda r: text(200, "evil\n"), host=ADDR["evil"], port=port, tls=tls())
        for server in (index, redirector, evil):
            net.call_in("srv", server.start)
            started.append(server)
        return Servers(index, redirector, evil, scheme)

    yield start
    for server in started:
        server.stop()


class Gateway(Mitmdump):
    """mitmdump with credhop in the gateway namespace, listening per `modes` (not on loopback)."""

    def __init__(self, net: Network, workdir: Path, upstream_ca: Path, rules: Path,
                 modes: tuple[str, ...] = (f"transparent@{GATEWAY_PORT}",), credhop: bool = True,
                 options: dict[str, str] | None = None) -> None:
        super().__init__(workdir, upstream_ca, credhop=credhop, rules=rules, options=options)
        at = self.argv.index("--listen-host")
        del self.argv[at:at + 4]
        self.argv[1:1] = [f"--mode={mode}" for mode in modes]
        self.argv[:0] = net.exec_prefix("gw")
        self.modes = modes

    def __enter__(self) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=self.output_file.open("wb"), stderr=subprocess.STDOUT,
                                     cwd=self.cwd, env={**clean_env(self.workdir / "mitm-home"), "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every listener up ("Transparent Proxy listening at *:8080.")
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited {self.proc.returncode}:\n{self.output}")
            if self.output.lower().count("listening at") >= len(self.modes) and self.ca_cert.exists():
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"mitmdump did not start:\n{self.output}")


@pytest.fixture
def rules_file(tmp_path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


# -- clients, run inside a client namespace with no proxy settings -----------------------------


def in_ns(net: Network, role: str, argv: list[str], workdir: Path, extra: dict[str, str] | None = None,
          timeout: float = 120) -> Result:
    env = clean_env(workdir / "home", **(extra or {}))
    return run([*net.exec_prefix(role), *argv], env, workdir, timeout=timeout)


def uv_install(uv: str, net: Network, role: str, servers: Servers, workdir: Path, ca: Path,
               extra: dict[str, str] | None = None) -> Result:
    return in_ns(net, role, [uv, "pip", "install", "-v", "--no-config", "--cache-dir", str(workdir / "uv-cache"),
                             "--target", str(workdir / "target"), "--python", sys.executable,
                             "--index-url", servers.simple_url, PACKAGE],
                 workdir, {"SSL_CERT_FILE": str(ca), **(extra or {})})


def pip_install(net: Network, role: str, servers: Servers, workdir: Path, ca: Path,
                proxy: str | None = None) -> Result:
    argv = [sys.executable, "-m", "pip", "install", "-v", "--isolated", "--no-cache-dir", "--no-input",
            "--disable-pip-version-check", "--target", str(workdir / "target"), "--index-url", servers.simple_url,
            "--cert", str(ca)]
    if servers.scheme == "http":
        argv += ["--trusted-host", NAMES["redirector"], "--trusted-host", NAMES["index"]]
    if proxy:
        argv += ["--proxy", proxy]
    return in_ns(net, role, argv + [PACKAGE], workdir)


def curl(net: Network, role: str, workdir: Path, ca: Path, url: str, *flags: str, out: str = "page") -> Result:
    (workdir / "target").mkdir(parents=True, exist_ok=True)
    return in_ns(net, role, [tool("CREDHOP_CURL", "curl"), "-sS", "-v", "--max-time", "20", "--cacert", str(ca),
                             *flags, "-o", str(workdir / "target" / out), url], workdir)


def curl_fetch(net: Network, role: str, servers: Servers, workdir: Path, ca: Path, *flags: str) -> Result:
    """The project page and the wheel, each through the redirector (`curl -L`)."""
    page = curl(net, role, workdir, ca, f"{servers.simple_url}{PACKAGE}/", "--fail", "-L", *flags)
    if page.returncode:
        return page
    wheel_name = servers.index.wheel.name
    got = curl(net, role, workdir, ca, f"{servers.scheme}://{NAMES['redirector']}/files/{wheel_name}",
               "--fail", "-L", *flags, out=wheel_name)
    got.stdout, got.stderr = page.stdout + got.stdout, page.stderr + got.stderr
    return got


def installed(workdir: Path, servers: Servers) -> bool:
    fetched = workdir / "target" / servers.index.wheel.name
    if fetched.exists():
        return fetched.read_bytes() == servers.index.wheel_bytes
    init = workdir / "target" / MODULE / "__init__.py"
    return init.exists() and "installed-through-credhop" in init.read_text()


def authorization(token: str) -> str:
    return "Basic " + base64.b64encode(f"{USER}:{token}".encode()).decode()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def assert_injected_only_at_the_index(servers: Servers, token: str) -> None:
    """The index got the credential on every request, exactly once; nobody else ever did."""
    requests = servers.index.requests
    assert any(r.path.endswith(f"/simple/{PACKAGE}/") for r in requests)
    assert any(r.path.endswith(servers.index.wheel.name) and r.method == "GET" for r in requests)
    for request in requests:
        assert request.header("authorization") == [authorization(token)], request.path
        assert not request.header("proxy-authorization"), request.path
    assert servers.redirector.requests
    for other in (servers.redirector, servers.evil):
        assert all(not r.header("authorization") and not r.header("proxy-authorization") for r in other.requests)


def assert_hop_log_names_the_index(proxy: Mitmdump, servers: Servers, client: str) -> None:
    records = proxy.records()
    redirects = [r for r in records if r["event"] == "redirect" and r.get("fingerprint")]
    injects = [r for r in records if r["event"] == "inject"]
    assert redirects and all(r["action"] == "inject" and r["rule"] == "corp" for r in redirects), redirects
    assert {r["target"] for r in redirects} == {servers.index_origin}
    # the redirect came from the redirector's name, not its address (rules on from_host see names)
    assert all(r["url"].startswith(f"{servers.scheme}://{NAMES['redirector']}/") for r in redirects), redirects
    assert injects and all(r["url"].startswith(servers.index_origin + "/") and r["action"] == "inject"
                           for r in injects), injects
    assert {r["chain"] for r in injects} <= {r["chain"] for r in redirects}
    assert {r["client"] for r in records} == {client}


CLIENTS = {
    "uv-0.5.25": lambda net, s, wd, ca: uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), net, "a", s, wd, ca),
    "uv": lambda net, s, wd, ca: uv_install(tool("CREDHOP_UV", "uv"), net, "a", s, wd, ca),
    "pip": lambda net, s, wd, ca: pip_install(net, "a", s, wd, ca),
    "curl": lambda net, s, wd, ca: curl_fetch(net, "a", s, wd, ca),
}


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "scheme", "unauth"),
    [("uv-0.5.25", "https", 404), ("uv-0.5.25", "http", 401), ("uv-0.5.25", "https", 401),
     ("uv", "https", 404), ("pip", "https", 404), ("pip", "http", 401),
     ("curl", "https", 401), ("curl", "http", 404)],
)
def test_client_installs_through_the_transparent_gateway(client, scheme, unauth, net, servers, ns_pki, rules_file,
                                                         tmp_path, token, forms):
    srv = servers(scheme, unauth)
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file) as gw:
        result = CLIENTS[client](net, srv, tmp_path / "client", gw.ca_cert)
    assert result.returncode == 0, _tail(result.output)
    assert installed(tmp_path / "client", srv)
    assert_injected_only_at_the_index(srv, token)
    assert_hop_log_names_the_index(gw, srv, ADDR["a"])
    assert_no_leak(result.output, forms, f"{client} output")
    assert_no_leak(gw.output, forms, "mitmdump output")
    assert_no_leak(all_text_under(tmp_path), forms, "files the run wrote")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_uv_0_5_25_fails_through_the_gateway_without_credhop(scheme, net, servers, ns_pki, rules_file, tmp_path):
    """The network is real: the same gateway without credhop reproduces the bug credhop fixes."""
    srv = servers(scheme, 404)
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file, credhop=False) as gw:
        result = CLIENTS["uv-0.5.25"](net, srv, tmp_path / "client", gw.ca_cert)
    assert result.returncode != 0 and "not found" in result.output
    assert srv.index.requests and all(not r.header("authorization") for r in srv.index.requests)


def test_a_credential_of_client_a_never_reaches_client_b(net, servers, ns_pki, rules_file, tmp_path, token, forms):
    srv = servers("https", 401)
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file) as gw:
        a = CLIENTS["uv-0.5.25"](net, srv, tmp_path / "a", gw.ca_cert)
        assert a.returncode == 0, _tail(a.output)
        srv.index.clear_requests()
        # client B asks the same origin within the TTL: straight, and following the redirect
        b_page = curl(net, "b", tmp_path / "b", gw.ca_cert, srv.page_url)
        b_uv = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), net, "b", srv, tmp_path / "b2", gw.ca_cert)
        b_requests = list(srv.index.requests)
        # and A still has it
        srv.index.clear_requests()
        a_again = curl(net, "a", tmp_path / "a2", gw.ca_cert, srv.page_url, "--fail")
    assert b_page.returncode == 0 and "401" in b_page.output
    assert b_uv.returncode == 0, _tail(b_uv.output)  # B's own redirect gives B its own grant
    straight = [r for r in b_requests if r.path.endswith(f"/simple/{PACKAGE}/")][0]
    assert not straight.header("authorization"), "client B got client A's credential"
    assert a_again.returncode == 0, _tail(a_again.output)
    assert srv.index.requests[-1].header("authorization") == [authorization(token)]
    records = gw.records()
    b_injects = [r for r in records if r["event"] == "inject" and r["client"] == ADDR["b"]]
    b_chains = {r["chain"] for r in records if r["event"] == "redirect" and r["client"] == ADDR["b"]}
    a_chains = {r["chain"] for r in records if r["event"] == "redirect" and r["client"] == ADDR["a"]}
    assert b_injects and {r["chain"] for r in b_injects} <= b_chains and not b_chains & a_chains
    assert_no_leak(gw.output, forms, "mitmdump output")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_forged_host_or_sni_steers_no_credential(scheme, net, servers, ns_pki, rules_file, tmp_path, token, forms):
    srv = servers(scheme, 401)
    port = PORTS[scheme]
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file) as gw:
        first = curl_fetch(net, "a", srv, tmp_path / "a", gw.ca_cert)  # client A now holds a grant for the index
        assert first.returncode == 0, _tail(first.output)
        forged = {
            # Host and SNI both say index.corp.test; the connection goes to evil's address
            "host+sni": (srv.page_url, "--resolve", f"{NAMES['index']}:{port}:{ADDR['evil']}"),
            # SNI evil.corp.test (https), Host index.corp.test
            "host": (f"{scheme}://{NAMES['evil']}{PREFIX}/simple/{PACKAGE}/", "-H", f"Host: {NAMES['index']}"),
            # evil's address by number (no SNI), Host index.corp.test
            "address": (f"{scheme}://{ADDR['evil']}{PREFIX}/simple/{PACKAGE}/", "-k", "-H", f"Host: {NAMES['index']}"),
        }
        answers = {}
        for n, (name, (url, *flags)) in enumerate(forged.items()):
            result = curl(net, "a", tmp_path / f"forged{n}", gw.ca_cert, url, "--fail", *flags)
            assert result.returncode == 0, (name, _tail(result.output))
            answers[name] = (tmp_path / f"forged{n}" / "target" / "page").read_text()
        # the same towards the redirector's address, where the grant's issuer lives
        issuer = curl(net, "a", tmp_path / "issuer", gw.ca_cert, srv.page_url,
                      "--resolve", f"{NAMES['index']}:{port}:{ADDR['redirector']}")
        srv.index.clear_requests()
        genuine = curl(net, "a", tmp_path / "g", gw.ca_cert, srv.page_url, "--fail")
    assert answers == {name: "evil\n" for name in forged}, answers  # each reached the evil server
    assert "404" in issuer.output
    assert len(srv.evil.requests) == 3
    assert all(not r.header("authorization") for r in srv.evil.requests), "a forged name steered the credential"
    assert all(not r.header("authorization") for r in srv.redirector.requests)
    # the grant was live all along: the genuine request got it
    assert genuine.returncode == 0, _tail(genuine.output)
    assert srv.index.requests[-1].header("authorization") == [authorization(token)]
    injects = [r for r in gw.records() if r["event"] == "inject"]
    assert injects and all(r["url"].startswith(srv.index_origin + "/") for r in injects)
    assert_no_leak(gw.output, forms, "mitmdump output")
    assert_no_leak(all_text_under(tmp_path), forms, "files the run wrote")


def test_iptables_rules_work_as_well(net, servers, ns_pki, rules_file, tmp_path, token):
    if not (shutil.which("iptables") or Path("/usr/sbin/iptables").exists()):
        pytest.skip("iptables not found (`make tools` installs it as root)")
    srv = servers("https", 404)
    before = net.firewall
    net.redirect("iptables")
    try:
        with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file) as gw:
            result = curl_fetch(net, "a", srv, tmp_path / "client", gw.ca_cert)
    finally:
        net.redirect(before or "nft")
    assert result.returncode == 0, _tail(result.output)
    assert_injected_only_at_the_index(srv, token)


# -- a parent proxy behind credhop ----------------------------------------------------------------


@pytest.fixture
def squid(net, tmp_path_factory):
    """A real squid in the server namespace, on its own address, demanding its own Basic proxy auth."""
    binary = shutil.which("squid") or ("/usr/sbin/squid" if Path("/usr/sbin/squid").exists() else None)
    helper = Path("/usr/lib/squid/basic_ncsa_auth")
    if binary is None or not helper.exists():
        pytest.skip("squid not found (`make tools` installs Debian's squid as root)")
    password = Secret("pp-" + base64.b32encode(os.urandom(10)).decode().lower())
    # squid drops to its own user: its directory must be reachable for it (pytest's tmp is 0700)
    work = Path(f"/tmp/{net.prefix}-squid")
    work.mkdir(mode=0o755)
    hashed = subprocess.run(["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True,
                            text=True, check=True).stdout.strip()
    (work / "passwd").write_text(f"{PARENT_USER}:{hashed}\n")
    conf = work / "squid.conf"
    conf.write_text(f"""\
http_port {ADDR['parent']}:{PARENT_PORT}
auth_param basic program {helper} {work / 'passwd'}
auth_param basic realm credhop-parent
acl authed proxy_auth REQUIRED
http_access allow authed
http_access deny all
cache deny all
logformat credhop %>a %un %>Hs %rm %ru
access_log stdio:{work / 'access.log'} credhop
cache_log {work / 'cache.log'}
pid_filename {work / 'squid.pid'}
coredump_dir {work}
hosts_file /etc/hosts
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
""")
    shutil.chown(work, "proxy") if _has_user("proxy") else None
    proc = subprocess.Popen([*net.exec_prefix("srv"), binary, "-N", "-f", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=(work / "stderr").open("wb"))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"squid exited {proc.returncode}: {(work / 'stderr').read_text()[-2000:]}")
            cache_log = work / "cache.log"
            if cache_log.exists() and "Accepting HTTP Socket connections" in cache_log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("squid did not start")
        yield password, work
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize(("scheme", "who"), [("http", "upstream_auth"), ("https", "upstream_auth"), ("http", "client")])
def test_upstream_mode_chains_to_a_parent_proxy_with_its_own_credential(scheme, who, net, servers, squid, ns_pki,
                                                                        rules_file, tmp_path, token, forms):
    """`who` holds the parent proxy's credential: mitmproxy's upstream_auth option, or the client
    itself (curl's proxy URL userinfo; mitmproxy passes that Proxy-Authorization on to the parent,
    for plaintext requests only, so not tried over https)."""
    parent_password, squid_dir = squid
    srv = servers(scheme, 401)
    listen = f"{ADDR['gw-a']}:{GATEWAY_PORT + 1}"
    upstream = f"upstream:http://{ADDR['parent']}:{PARENT_PORT}@{listen}"
    options = {"upstream_auth": f"{PARENT_USER}:{parent_password}"} if who == "upstream_auth" else {}
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file, modes=(upstream,), options=options) as gw:
        proxy = f"http://{listen}" if who == "upstream_auth" else \
            f"http://{PARENT_USER}:{parent_password}@{listen}"
        if who == "client":  # curl sends its proxy credential with every request (uv drops it after a redirect)
            result = curl_fetch(net, "a", srv, tmp_path / "client", gw.ca_cert, "--proxy", proxy)
        else:
            result = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), net, "a", srv, tmp_path / "client", gw.ca_cert,
                                {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy})
    log = (squid_dir / "access.log").read_text()
    assert result.returncode == 0, _tail(result.output) + "\n" + log
    assert installed(tmp_path / "client", srv)
    assert_injected_only_at_the_index(srv, token)  # and never the parent's Proxy-Authorization
    # every request went through squid, authenticated as the parent proxy's user, never refused
    entries = [line.split() for line in log.splitlines()]
    assert entries and all(e[1] == PARENT_USER and e[2] != "407" for e in entries), log
    assert any(NAMES["index"] in e[4] for e in entries) and any(NAMES["redirector"] in e[4] for e in entries)
    # credhop never took the parent's credential for one it injects or watches
    records = gw.records()
    assert not [r for r in records if r["event"] == "leak"], records
    for record in records:
        assert all(s["header"] != "proxy-authorization" for s in record.get("sent") or []), record
    assert_hop_log_names_the_index(gw, srv, ADDR["a"])
    parent_forms = secret_forms(parent_password, user=PARENT_USER)
    assert_no_leak(result.output, forms, "client output")  # curl -v shows its own proxy credential: not checked
    for text_, what in ((gw.output, "mitmdump output"), (all_text_under(tmp_path), "files the run wrote")):
        assert_no_leak(text_, forms, what)
        assert_no_leak(text_, parent_forms, what)


# -- one process, two modes ------------------------------------------------------------------------


def test_mixed_modes_keep_their_clients_apart(net, servers, ns_pki, rules_file, tmp_path, token, forms):
    srv = servers("https", 401)
    regular = f"{ADDR['gw-a']}:{GATEWAY_PORT + 2}"
    with Gateway(net, tmp_path / "gw", ns_pki.ca_cert, rules_file,
                 modes=(f"regular@{regular}", f"transparent@{GATEWAY_PORT}")) as gw:
        proxy = f"http://{regular}"
        env = {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy}
        # client A through the regular listener, client B transparently
        a = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), net, "a", srv, tmp_path / "a", gw.ca_cert, env)
        assert a.returncode == 0, _tail(a.output)
        srv.index.clear_requests()
        b_page = curl(net, "b", tmp_path / "b", gw.ca_cert, srv.page_url)
        b_requests = list(srv.index.requests)
        b = uv_install(tool("CREDHOP_UV_OLD", "uv-0.5.25"), net, "b", srv, tmp_path / "b2", gw.ca_cert)
        srv.index.clear_requests()
        a_page = curl(net, "a", tmp_path / "a2", gw.ca_cert, srv.page_url, "--fail", "--proxy", proxy)
        a_requests = list(srv.index.requests)
    assert b_page.returncode == 0 and "401" in b_page.output
    assert b_requests and not b_requests[0].header("authorization"), "client B got client A's credential"
    assert b.returncode == 0, _tail(b.output)
    assert a_page.returncode == 0 and a_requests[-1].header("authorization") == [authorization(token)]
    records = gw.records()
    by_client = {c: {r["chain"] for r in records if r["client"] == c} for c in (ADDR["a"], ADDR["b"])}
    assert by_client[ADDR["a"]] and by_client[ADDR["b"]] and not by_client[ADDR["a"]] & by_client[ADDR["b"]]
    for r in records:
        if r["event"] == "inject":
            assert r["url"].startswith(srv.index_origin + "/"), r
    # an open listener beyond loopback without proxy auth is called out
    assert "without proxy authentication" in gw.output
    assert_no_leak(gw.output, forms, "mitmdump output")
