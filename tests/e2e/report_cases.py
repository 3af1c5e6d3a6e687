"""Real runs that produce hop logs for `credhop report`: mitmdump with credhop, real clients (uv 0.5.25,
curl), the registry fixture, and small loopback servers for the redirect shapes the fixture lacks
(loops, POST->GET, `//` paths, downgrades, many hops).

Each `Case` runs clients through a fresh mitmdump and returns its hop log; the test module checks the
finding codes it must and must not produce.
"""

from __future__ import annotations

import secrets
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.e2e.harness import Mitmdump, Result, clean_env, free_port, run, tool
from tests.e2e.test_clients import CLIENTS, PACKAGE
from tests.fixtures.server import Request, Response, Server, not_found, redirect, userinfo_url
from tests.secrets_check import Secret, secret_forms

INJECT_TTL_2 = "rules:\n  - name: short\n    action: inject\n    ttl: 2\n"
ONLY_OTHER_HOST = "rules:\n  - name: elsewhere\n    match: {host: other.example}\n    action: inject\n"
BLOCK = "rules:\n  - name: no-tokens-in-redirects\n    action: block\n"


# -- a loopback server answering from a table ------------------------------------------------------


class Routes(Server):
    """`routes[target]` is what any method on that path (and query) gets, else 404."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        super().__init__(host=host, tls=tls)
        self.routes: dict[str, Response] = {}

    def respond(self, request: Request) -> Response:
        return self.routes.get(request.target) or not_found()


def ok() -> Response:
    return Response(200, body=b"ok\n")


# -- what a case gets to work with -----------------------------------------------------------------


@dataclass
class Env:
    tmp: Path
    pki: Any
    registry_factory: Callable[..., Any]
    token: str
    forms: set[str] = field(default_factory=set)  # every secret this case used, in every spelling
    _servers: list[Routes] = field(default_factory=list)
    _runs: int = 0

    def secret(self) -> str:
        value = Secret(f"sk{secrets.token_urlsafe(12)}")
        self.forms |= secret_forms(value)
        return value

    def routes(self, host: str = "127.0.0.1", tls: bool = False) -> Routes:
        server = Routes(host, self.pki.server_context() if tls else None).start()
        self._servers.append(server)
        return server

    def registry(self, scheme: str = "https", unauth: int = 401) -> Any:
        return self.registry_factory(scheme, unauth)

    def workdir(self, name: str) -> Path:
        self._runs += 1
        path = self.tmp / f"{self._runs}-{name}"
        path.mkdir(parents=True)
        return path

    @contextmanager
    def proxy(self, observe: bool = False, rules: str | None = None, plain: str | None = None) -> Iterator[Mitmdump]:
        """`plain`: credhop_plain_redirects (the default, 'failed', records a plain chain only when it
        fails; findings on plain chains that ended well need 'record')."""
        rules_file = None
        if rules is not None:
            rules_file = self.tmp / "rules.yaml"
            rules_file.write_text(rules)
        options = {"credhop_observe": "true"} if observe else {}
        if plain:
            options["credhop_plain_redirects"] = plain
        with Mitmdump(self.tmp / "proxy", self.pki.ca_cert, options=options, rules=rules_file) as proxy:
            yield proxy

    def curl(self, proxy: Mitmdump, url: str, *flags: str) -> Result:
        wd = self.workdir("curl")
        argv = [tool("CREDHOP_CURL", "curl"), "-sS", "-v", "--max-time", "20", *flags, "-o", str(wd / "out"),
                "--proxy", proxy.url, "--cacert", str(proxy.ca_cert), url]
        return run(argv, clean_env(wd / "home"), wd, timeout=60)

    def client(self, name: str, registry: Any, proxy: Mitmdump) -> Result:
        return CLIENTS[name](registry, self.workdir(name), proxy)

    def close(self) -> None:
        for server in self._servers:
            server.stop()


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Env], Path]  # returns the hop log
    present: frozenset[str]
    absent: frozenset[str]


CASES: list[Case] = []


def case(present: str = "", absent: str = "") -> Callable[[Callable[[Env], Path]], Callable[[Env], Path]]:
    def register(fn: Callable[[Env], Path]) -> Callable[[Env], Path]:
        CASES.append(Case(fn.__name__.removeprefix("case_").replace("_", "-"), fn,
                          frozenset(present.split()), frozenset(absent.split())))
        return fn
    return register


ALL_BUT_CH110 = ("CH101 CH102 CH103 CH104 CH201 CH202 CH203 CH204 CH205 CH301 CH302 CH303 CH304 CH305 CH306 CH307 "
                 "CH308 CH401 CH402 CH403 CH404 CH405 CH406 CH407 CH408 CH501 CH502 CH503")


# -- the registry fixture with real package clients ------------------------------------------------


@case(present="CH101 CH110", absent="CH102 CH103 CH502 CH503 CH401 CH402 CH405")
def case_uv_0_5_25_observe_loses_the_credential(env: Env) -> Path:
    registry = env.registry("https", 404)
    with env.proxy(observe=True) as proxy:
        assert env.client("uv-0.5.25", registry, proxy).returncode != 0
    return proxy.hoplog


@case(present="CH110", absent=ALL_BUT_CH110)
def case_uv_0_5_25_inject_installs(env: Env) -> Path:
    registry = env.registry("https", 404)
    with env.proxy() as proxy:
        assert env.client("uv-0.5.25", registry, proxy).returncode == 0
    return proxy.hoplog


@case(present="CH503 CH110", absent="CH502 CH101 CH103 CH403")
def case_uv_0_5_25_http_observe_follow_up_never_arrives(env: Env) -> Path:
    # through an http:// proxy uv 0.5.25 puts the kept userinfo into its request line; mitmproxy refuses it
    registry = env.registry("http", 404)
    with env.proxy(observe=True) as proxy:
        assert env.client("uv-0.5.25", registry, proxy).returncode != 0
    return proxy.hoplog


@case(present="CH502 CH110", absent="CH503 CH101 CH103")
def case_curl_does_not_follow_the_redirect(env: Env) -> Path:
    registry = env.registry("https", 401)
    with env.proxy() as proxy:
        env.curl(proxy, f"{registry.simple_url}{PACKAGE}/")  # no -L: curl stops at the 302
    return proxy.hoplog


@case(present="CH102 CH110", absent="CH101 CH103")
def case_curl_wrong_credential_is_rejected(env: Env) -> Path:
    registry = env.registry("https", 401)
    index = registry.index
    registry.redirector.target = userinfo_url("https", index.host, index.port, "aws", env.secret(),
                                              "/pypi/python/simple/")
    with env.proxy() as proxy:
        env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L")
    return proxy.hoplog


@case(present="CH103", absent="CH101 CH102 CH110")
def case_curl_redirect_without_any_credential(env: Env) -> Path:
    registry = env.registry("https", 401)
    registry.redirector.target = registry.index.simple_url
    with env.proxy() as proxy:
        env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L")
    return proxy.hoplog


@case(present="CH402 CH101", absent="CH408")
def case_ttl_runs_out_between_two_fetches(env: Env) -> Path:
    return _two_fetches(env, pause=3.5)


@case(present="", absent="CH402 CH101 CH102")
def case_second_fetch_within_the_ttl(env: Env) -> Path:
    return _two_fetches(env, pause=0)


def _two_fetches(env: Env, pause: float) -> Path:
    """A redirect that hands out the credential (ttl 2 s), then one to the same index that does not."""
    registry = env.registry("https", 401)
    bare = env.routes(tls=True)
    bare.routes[f"/simple/{PACKAGE}/"] = redirect(f"{registry.index.simple_url}{PACKAGE}/")
    with env.proxy(rules=INJECT_TTL_2) as proxy:
        assert env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L", "--fail").returncode == 0
        time.sleep(pause)
        env.curl(proxy, f"{bare.url}/simple/{PACKAGE}/", "-L")
    return proxy.hoplog


@case(present="CH408 CH110", absent="CH406 CH405")
def case_second_redirector_cannot_swap_the_credential(env: Env) -> Path:
    registry = env.registry("https", 401)
    index = registry.index
    other = env.routes(tls=True)
    other.routes[f"/simple/{PACKAGE}/"] = redirect(
        userinfo_url("https", index.host, index.port, "aws", env.secret(), f"/pypi/python/simple/{PACKAGE}/"))
    with env.proxy() as proxy:
        assert env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L", "--fail").returncode == 0
        env.curl(proxy, f"{other.url}/simple/{PACKAGE}/", "-L")
    return proxy.hoplog


@case(present="CH405 CH101 CH110", absent="CH403 CH406")
def case_no_rule_matches_the_registry(env: Env) -> Path:
    registry = env.registry("https", 401)
    with env.proxy(rules=ONLY_OTHER_HOST) as proxy:
        env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L")
    return proxy.hoplog


@case(present="CH407 CH110", absent="CH502 CH101")
def case_block_rule(env: Env) -> Path:
    registry = env.registry("https", 401)
    with env.proxy(rules=BLOCK) as proxy:
        assert "403" in env.curl(proxy, f"{registry.simple_url}{PACKAGE}/", "-L").output
    return proxy.hoplog


@case(present="CH110", absent="CH407")
def case_block_rule_in_observe_mode(env: Env) -> Path:
    registry = env.registry("https", 401)
    with env.proxy(observe=True, rules=BLOCK) as proxy:
        env.curl(proxy, f"{registry.simple_url}{PACKAGE}/")
    return proxy.hoplog


# -- leaks: curl re-sending its own Authorization (-u) across origins ------------------------------


def _leak(env: Env, target: Routes, observe: bool, trusted: bool = True) -> Path:
    start = env.routes(tls=True)
    start.routes["/start"] = redirect(f"{target.url}/landing")
    target.routes["/landing"] = ok()
    flags = ["-L", "-u", f"aws:{env.secret()}"] + (["--location-trusted"] if trusted else [])
    with env.proxy(observe=observe) as proxy:
        env.curl(proxy, f"{start.url}/start", *flags)
    return proxy.hoplog


@case(present="CH201", absent="CH202 CH203 CH204 CH205 CH301")
def case_leak_to_another_host(env: Env) -> Path:
    return _leak(env, env.routes("127.0.0.3", tls=True), observe=True)


@case(present="CH202", absent="CH201 CH203 CH204")
def case_leak_to_another_port(env: Env) -> Path:
    return _leak(env, env.routes(tls=True), observe=True)


@case(present="CH203 CH301", absent="CH201 CH202 CH204")
def case_leak_over_plaintext(env: Env) -> Path:
    return _leak(env, env.routes(tls=False), observe=True)


@case(present="CH204", absent="CH201 CH202 CH203 CH205")
def case_leak_stripped_by_the_shipped_rules(env: Env) -> Path:
    return _leak(env, env.routes("127.0.0.3", tls=True), observe=False)


@case(present="", absent="CH201 CH202 CH203 CH204 CH101")
def case_no_leak_without_location_trusted(env: Env) -> Path:
    return _leak(env, env.routes("127.0.0.3", tls=True), observe=True, trusted=False)


# -- redirect shapes -------------------------------------------------------------------------------


def _curl_start(env: Env, server: Routes, *flags: str, path: str = "/start", **proxy: Any) -> Path:
    with env.proxy(**proxy) as mitm:
        env.curl(mitm, f"{server.url}{path}", *flags)
    return mitm.hoplog


@case(present="CH301", absent="CH201 CH203 CH110")
def case_downgrade_to_plaintext(env: Env) -> Path:
    plain, start = env.routes(), env.routes(tls=True)
    plain.routes["/landing"] = ok()
    start.routes["/start"] = redirect(f"{plain.url}/landing")
    return _curl_start(env, start, "-L", plain="record")


@case(present="CH302", absent="CH303 CH502")
def case_redirect_loop(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = redirect(f"{server.url}/start")
    return _curl_start(env, server, "-L", "--max-redirs", "4")


@case(present="CH303", absent="CH302 CH502")
def case_too_many_hops(env: Env) -> Path:
    server = env.routes()
    for n in range(1, 13):
        server.routes[f"/hop/{n}"] = redirect(f"{server.url}/hop/{n - 1}")
    server.routes["/hop/0"] = ok()
    return _curl_start(env, server, "-L", "--max-redirs", "20", path="/hop/12")


@case(present="CH304", absent="CH305 CH502")
def case_location_missing(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = Response(302)
    return _curl_start(env, server, "-L")


@case(present="CH305", absent="CH304 CH502")
def case_location_unparseable(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = redirect("http://[oops/")
    return _curl_start(env, server, "-L")


@case(present="CH306", absent="CH308 CH302")
def case_relative_location(env: Env) -> Path:
    server = env.routes()
    server.routes["/rel/a/"] = redirect("../b/")
    server.routes["/rel/b/"] = ok()
    return _curl_start(env, server, "-L", path="/rel/a/")


@case(present="CH307", absent="CH306")
def case_post_becomes_get_after_302(env: Env) -> Path:
    server = env.routes()
    server.routes["/form"] = redirect(f"{server.url}/done")
    server.routes["/done"] = ok()
    return _curl_start(env, server, "-L", "-d", "x=1", path="/form", plain="record")


@case(present="", absent="CH307")
def case_post_stays_post_after_307(env: Env) -> Path:
    server = env.routes()
    server.routes["/form"] = redirect(f"{server.url}/done", status=307)
    server.routes["/done"] = ok()
    return _curl_start(env, server, "-L", "-d", "x=1", path="/form", plain="record")


@case(present="CH308", absent="CH306")
def case_double_slash_in_the_location_path(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = redirect(f"{server.url}/pypi//simple/")
    server.routes["/pypi//simple/"] = ok()
    return _curl_start(env, server, "-L", plain="record")


# -- injection refused or skipped ------------------------------------------------------------------


@case(present="CH401 CH110", absent="CH201 CH204 CH102")
def case_client_sends_its_own_authorization(env: Env) -> Path:
    server = env.routes(tls=True)
    port = server.url.rsplit(":", 1)[1]
    server.routes["/start"] = redirect(f"https://aws:{env.secret()}@127.0.0.1:{port}/private")
    server.routes["/private"] = ok()
    return _curl_start(env, server, "-L", "-H", f"Authorization: Bearer {env.secret()}")


@case(present="CH403 CH110", absent="CH404 CH406")
def case_plaintext_destination_refused(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = redirect(f"http://aws:{env.secret()}@registry.invalid/simple/")
    return _curl_start(env, server)  # not followed: nothing listens there


@case(present="CH404 CH110", absent="CH403")
def case_parsers_disagree(env: Env) -> Path:
    server = env.routes()
    port = server.url.rsplit(":", 1)[1]
    server.routes["/start"] = redirect(f"http://aws:{env.secret()}@127.0.0.2:{free_port('127.0.0.2')}\\@127.0.0.1:{port}/x")
    return _curl_start(env, server)


@case(present="CH406 CH110", absent="CH405 CH403")
def case_control_character_in_the_credential(env: Env) -> Path:
    server = env.routes()
    server.routes["/start"] = redirect(f"http://aws:bad%0A{env.secret()}@127.0.0.2:{free_port('127.0.0.2')}/x")
    return _curl_start(env, server)


@case(present="CH501 CH110", absent="CH502 CH101")
def case_follow_up_cannot_connect(env: Env) -> Path:
    server = env.routes()
    closed = free_port("127.0.0.2")
    server.routes["/start"] = redirect(f"http://aws:{env.secret()}@127.0.0.2:{closed}/simple/")
    return _curl_start(env, server, "-L")


@case(present="CH104", absent="CH101 CH102 CH103")
def case_server_error_after_the_redirect(env: Env) -> Path:
    target, start = env.routes("127.0.0.3"), env.routes()
    target.routes["/boom"] = Response(500, body=b"boom\n")
    start.routes["/start"] = redirect(f"{target.url}/boom")
    return _curl_start(env, start, "-L")


# -- presigned downloads -----------------------------------------------------------------------------


@case(present="CH205 CH201", absent="CH101 CH102 CH103 CH104 CH204")
def case_authorization_sent_to_a_presigned_url(env: Env) -> Path:
    """curl --location-trusted re-sends its -u credential after the index redirects the download to a
    presigned S3-like URL; the store answers 400 "Only one auth mechanism allowed"."""
    from tests.fixtures.presigned import start_presigned
    from tests.fixtures.wheel import build_wheel

    # not env.secret(): the hop log the live addon writes still holds signed-URL query values (the security
    # round's work); test_captures checks that no report ever shows them
    index, store = start_presigned("aws", env.token, build_wheel(env.workdir("wheel")), secrets.token_hex(32),
                                   f"AKIA{secrets.token_hex(8)}/20261202/us-east-1/s3/aws4_request",
                                   tls=env.pki.server_context())
    try:
        with env.proxy(observe=True) as proxy:
            env.curl(proxy, index.file_url, "-L", "--location-trusted", "-u", f"aws:{env.token}")
    finally:
        index.stop()
        store.stop()
    return proxy.hoplog
