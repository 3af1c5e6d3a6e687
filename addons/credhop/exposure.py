"""Is the proxy reachable beyond this machine without proxy authentication? (No mitmproxy here.)

credhop holds credentials per client address. A proxy anyone can reach hands the redirect
credentials it learns to whoever sends the follow-ups from that address (a NAT, a shared host), and
lets anyone reach whatever the proxy can. So listening beyond loopback needs `--proxyauth`, or, for
transparent mode (where mitmproxy cannot ask clients to authenticate), a firewall that lets only the
redirected clients in; credhop says so once at start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# modes whose listeners take proxy traffic from whoever connects (wireguard has its own keys; local
# and tun take this machine's own traffic; dns carries no HTTP)
PROXYING = frozenset({"regular", "upstream", "socks5", "reverse", "transparent"})
AUTHENTICATING = frozenset({"regular", "upstream", "socks5", "reverse"})  # where mitmproxy's proxyauth applies


@dataclass(frozen=True, slots=True)
class Listener:
    mode: str  # mitmproxy's mode type name: regular, transparent, upstream …
    host: str  # "" listens on every address
    port: int | None


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every address) or a name: assume reachable


def warnings(listeners: Iterable[Listener], proxyauth: bool) -> list[str]:
    """One line per listener open beyond loopback without proxy authentication."""
    out = []
    for listener in listeners:
        if listener.mode not in PROXYING or is_loopback(listener.host):
            continue
        if proxyauth and listener.mode in AUTHENTICATING:
            continue
        where = f"{listener.host or '*'}:{listener.port if listener.port is not None else 'default'}"
        fix = ("a firewall must let only the redirected clients reach it" if listener.mode == "transparent"
               else "use --proxyauth, or a firewall that lets only your clients reach it")
        out.append(f"credhop: {listener.mode} proxy listening on {where}, beyond loopback, without proxy "
                   f"authentication: whoever can reach it can use the proxy and the redirect credentials it "
                   f"injects for their address; {fix} (docs/transparent.md)")
    return out


def listeners_of(options: Any) -> list[Listener]:
    """Where the proxy listens, per `--mode` (and `--listen-host`/`--listen-port` as defaults)."""
    from mitmproxy.proxy import mode_specs  # here: the rest of this module runs without mitmproxy

    found = []
    for spec in getattr(options, "mode", ()):
        try:
            mode = mode_specs.ProxyMode.parse(spec)
        except ValueError:
            continue  # mitmproxy reports it
        found.append(Listener(mode.type_name, mode.listen_host(options.listen_host),
                              mode.listen_port(options.listen_port)))
    return found
