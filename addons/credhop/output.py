"""mitmproxy's own output: the lines credhop scrubs, and the outputs it cannot reach.

mitmdump's dumper prints flow lines straight to its stream (`Dumper.outfp`), not
through logging, and from `flow_detail` 2 on they hold request headers, the
header credhop injected among them. credhop puts a `RedactingStream` in front of
that stream: every line is scrubbed whole before it is written. mitmproxy's event
log (terminal, mitmweb, console) goes through logging, where `SecretFilter` sits.
"""

from __future__ import annotations

import re
from typing import IO, Any, Callable

from .scrub import Redactor

# SGR and other CSI sequences mitmproxy's styles put between a header's name and its value
_CSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RedactingStream:
    """A text stream that writes each line through the Redactor in use (`redactor()`, looked up
    per line: it is replaced when credhop_secret_headers changes). `print()` writes a line and its
    newline in two calls: text is held until its newline, so a secret split across writes is seen."""

    def __init__(self, stream: IO[str], redactor: Callable[[], Redactor]) -> None:
        self.stream = stream
        self._redactor = redactor
        self._held = ""

    def write(self, text: str) -> int:
        if "\n" not in text:
            self._held += text
            return len(text)
        lines, _, self._held = (self._held + text).rpartition("\n")
        self.stream.write(self._scrub(lines) + "\n")
        return len(text)

    def flush(self) -> None:
        if self._held:
            self.stream.write(self._scrub(self._held))
            self._held = ""
        self.stream.flush()

    def _scrub(self, text: str) -> str:
        redactor = self._redactor()
        clean = redactor.cached(text)  # flow lines repeat (header lines, a download's URL)
        if "\x1b" not in clean:
            return clean
        # colours split `Authorization` from its `: value`: read the line without them too, and
        # where that finds a secret, write it plain (only such lines lose their colours)
        plain = _CSI.sub("", clean)
        scrubbed = redactor(plain)
        return clean if scrubbed == plain else scrubbed

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding … of the real stream
        return getattr(self.stream, name)


def redact_dumper(master: Any, redactor: Callable[[], Redactor]) -> bool:
    """Put a RedactingStream in front of mitmdump's dumper; False when there is no dumper."""
    dumper = master.addons.get("dumper") if master is not None else None
    if dumper is None or not hasattr(dumper, "outfp"):
        return False
    if not isinstance(dumper.outfp, RedactingStream):
        dumper.outfp = RedactingStream(dumper.outfp, redactor)
    return True


def unredact_dumper(master: Any) -> None:
    dumper = master.addons.get("dumper") if master is not None else None
    if dumper is not None and isinstance(getattr(dumper, "outfp", None), RedactingStream):
        dumper.outfp.flush()
        dumper.outfp = dumper.outfp.stream


def unredacted_outputs(options: Any, master: Any) -> list[str]:
    """The outputs on now that show requests as sent, which credhop cannot scrub."""
    found = []
    if getattr(options, "save_stream_file", None):
        found.append("the flow file (-w)")
    kind = type(master).__name__
    if kind == "WebMaster":
        found.append("mitmweb's flow view")
    elif kind == "ConsoleMaster":
        found.append("the console's flow view")
    return found


def unredacted_warning(options: Any, master: Any) -> str | None:
    """One line for the start, when the user asks to see headers (flow_detail 2 and up, or a UI's
    flow view, which always shows them) and an output credhop cannot scrub holds them."""
    found = unredacted_outputs(options, master)
    if getattr(options, "flow_detail", 1) < 2:
        found = [f for f in found if "flow view" in f]
    if not found:
        return None
    return (f"{' and '.join(found)} show requests as sent, injected credentials included: credhop scrubs "
            "its own lines, mitmdump's flow lines and the event log, not these (see SECURITY.md)")
