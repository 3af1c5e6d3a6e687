"""What proxy users cost mitmproxy 12 (`--proxyauth @FILE`, mitmproxy.utils.htpasswd): reading the file at
start, and checking a password, which it does on *every* request of a plain-HTTP proxy client (absolute-form
requests each carry Proxy-Authorization; a CONNECT tunnel is checked once). In-process, this machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from scripts.bench.micro import per_call
from tests.fixtures.nginx import htpasswd_line

BCRYPT_COSTS = (5, 12)  # htpasswd -B's default; the bcrypt library's


def htpasswd_cost(users: int) -> dict:
    import bcrypt
    from mitmproxy.utils.htpasswd import HtpasswdFile

    out: dict = {"users": users}
    with tempfile.TemporaryDirectory(prefix="credhop-htpasswd-") as tmp:
        path = Path(tmp) / "htpasswd"
        path.write_text("".join(htpasswd_line(f"u{n}", f"pw{n}") for n in range(users)))
        start = time.perf_counter()
        table = HtpasswdFile.from_file(path)
        out["load_ms"] = (time.perf_counter() - start) * 1e3
    someone = users // 2
    out["sha1_check_us"] = per_call(lambda: table.check_password(f"u{someone}", f"pw{someone}"), 0.2) * 1e6
    for cost in BCRYPT_COSTS:
        hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(cost))
        bcrypt_table = HtpasswdFile(f"u:{hashed.decode()}\n")
        check = bcrypt_table.check_password
        out[f"bcrypt{cost}_check_ms"] = per_call(lambda: check("u", "pw"), 0.5, floor=1) * 1e3
    out["bcrypt5_write_s"] = per_call(lambda: bcrypt.hashpw(b"pw", bcrypt.gensalt(5)), 0.2, floor=1) * users
    return out
