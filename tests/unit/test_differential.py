"""credhop's Location parser (WHATWG, via ada-url) against Python's urllib.parse, on the security corpus.

For every Location of tests/e2e/security_cases.py (fixed ports, fixed stand-in secrets) both parsers
read scheme, host, port and credentials, the way clients built on them follow a redirect (urllib:
`urlsplit(urljoin(request_url, location))`, as requests does). Where they differ, credhop must not
inject; docs/parser-differential.md lists every such case with credhop's decision, and this test
fails when that table and reality drift apart. `python -m tests.unit.test_differential` prints the
table.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from credhop.urls import Location, LocationError, parse_location, parsers_disagree
from tests.e2e.security_cases import CASES, POOL, UNIT_PORTS, Case, expand

DOC = Path(__file__).resolve().parents[2] / "docs" / "parser-differential.md"
TOKENS = {"tok": "TOKEN", "tok2": "TOKEN2"}
BEGIN, END = "<!-- differential table: begin -->", "<!-- differential table: end -->"


@dataclass(frozen=True)
class Reading:
    scheme: str
    host: str
    port: int
    credential: tuple[str, str] | None

    def show(self) -> str:
        cred = "" if self.credential is None else f" + {':'.join(self.credential)}"
        return f"{self.scheme}://{_name(self.host, self.port)}{cred}"


def _name(host: str, port: int) -> str:
    """`host:port` in the corpus' own terms (`b` for 127.0.0.2:8082 ...), so the table is readable."""
    for key, origin in POOL.items():
        if (origin.host, UNIT_PORTS[origin.port]) == (host, port) and origin.scheme == "http":
            return "{" + key + "}"
    shown = f"[{host}]" if ":" in host else host or "(none)"
    return f"{shown}:{port}"


def whatwg(raw: str, base: str) -> Reading | str:
    try:
        loc = parse_location(raw, base)
    except LocationError as e:
        return "error: " + (
            "scheme" if "scheme" in str(e) else "UTF-8" if "UTF-8" in str(e) else "unparseable"
        )
    cred = (loc.credential.user, loc.credential.password) if loc.credential else None
    return Reading(loc.origin.scheme, loc.origin.host, loc.origin.port, cred)


def urllib_reading(raw: str, base: str) -> Reading | str:
    try:
        parts = urllib.parse.urlsplit(urllib.parse.urljoin(base, raw))
        port = parts.port
    except ValueError:
        return "error: ValueError"
    scheme = parts.scheme.lower()
    cred = None
    if parts.username is not None:
        cred = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    default = {"http": 80, "https": 443}.get(scheme, 0)
    return Reading(scheme, (parts.hostname or "").strip("[]"), port or default, cred)


SPELLING = "host spelling"  # the same destination written differently: not a disagreement


def same_destination(a: str, b: str) -> bool:
    """Hosts a resolver treats alike, checked independently of credhop: one IP address however
    written, or one name after IDNA 2003 mapping (Python's codec) and without a trailing dot."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        pass
    try:
        return a.rstrip(".").encode("idna").lower() == b.rstrip(".").encode("idna").lower()
    except UnicodeError:
        return False


def differences(ours: Reading | str, theirs: Reading | str) -> list[str]:
    if isinstance(ours, str) or isinstance(theirs, str):
        return [] if isinstance(ours, str) and isinstance(theirs, str) else ["error"]
    fields = ["scheme"] if ours.scheme != theirs.scheme else []
    if ours.host != theirs.host:
        fields.append(SPELLING if same_destination(ours.host, theirs.host) else "host")
    if ours.port != theirs.port:
        fields.append("port")
    if (ours.credential or ("", "")) != (theirs.credential or ("", "")):
        fields.append("credentials")
    return fields


def decision(raw: str, base: str) -> str:
    """What credhop's URL layer makes of the Location (the rules may still say strip, keep or block)."""
    try:
        loc: Location = parse_location(raw, base)
    except LocationError:
        return "nothing to move (unparseable for credhop)"
    if loc.credential is None:
        return "nothing to move (no credential for WHATWG)"
    if parsers_disagree(raw, loc):
        return "refuse: parsers disagree"
    problem = loc.credential.problem()
    if problem:
        return f"refuse: {problem}"
    return "move to " + str(loc.origin).replace("http://", "").replace("https://", "https ")


@dataclass(frozen=True)
class Row:
    case: Case
    raw: str
    base: str
    ours: Reading | str
    theirs: Reading | str

    @property
    def differs(self) -> list[str]:
        return differences(self.ours, self.theirs)

    def markdown(self) -> str:
        cells = [
            self.case.id,
            f"`{self.case.locations[0]}`",
            _cell(self.ours),
            _cell(self.theirs),
            ", ".join(self.differs),
            decision(self.raw, self.base),
        ]
        return "| " + " | ".join(_visible(c) for c in cells) + " |"


def _cell(reading: Reading | str) -> str:
    return reading if isinstance(reading, str) else reading.show()


def _visible(text: str) -> str:
    """Table-safe: controls, surrogates (raw bytes) and U+FFFD escaped, pipes quoted."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code & 0xFF:02x}")
        elif code == 0xFFFD:
            out.append("\\ufffd")
        else:
            out.append(ch)
    return "".join(out).replace("|", "\\|")


def rows() -> list[Row]:
    out = []
    for case in CASES:
        start = POOL[case.start]
        host = f"[{start.host}]" if ":" in start.host else start.host
        base = f"{start.scheme}://{host}:{UNIT_PORTS[start.port]}/c/{case.id}/start"
        raw = expand(case.locations[0], case, UNIT_PORTS, TOKENS).replace("x" * 65536, "x" * 16)
        out.append(Row(case, raw, base, whatwg(raw, base), urllib_reading(raw, base)))
    return out


def table() -> str:
    header = (
        "| case | Location | WHATWG (credhop) | urllib | differs in | credhop's decision |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    return "\n".join([header, *(row.markdown() for row in rows() if row.differs)])


ROWS = rows()


@pytest.mark.parametrize("row", ROWS, ids=[r.case.id for r in ROWS])
def test_no_credential_moves_where_the_parsers_disagree(row: Row) -> None:
    made = decision(row.raw, row.base)
    if [d for d in row.differs if d != SPELLING]:
        assert not made.startswith("move"), (
            f"{row.case.id}: parsers differ on {row.differs} but credhop moves it"
        )
    elif isinstance(row.ours, Reading) and row.ours.credential:
        # agreement must not be refused for parser reasons (no false alarms on ordinary Locations)
        assert made != "refuse: parsers disagree", row.case.id


def test_the_documented_table_is_what_the_parsers_do() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert documented == table(), (
        "docs/parser-differential.md is stale: regenerate with python -m tests.unit.test_differential"
    )


def test_every_disagreement_has_a_written_explanation() -> None:
    text = DOC.read_text(encoding="utf-8")
    heads = re.findall(r"^- ((?:\*\*[a-z0-9-]+\*\*(?:, )?)+)", text, re.MULTILINE)
    explained = {name for head in heads for name in re.findall(r"\*\*([a-z0-9-]+)\*\*", head)}
    assert {r.case.id for r in ROWS if r.differs} <= explained


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
