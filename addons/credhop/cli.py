"""`credhop report HOPLOG`: explain every redirect chain in a hop log; `credhop proxy`: run the proxy.

Exit status: 0 when no shown chain has an error-level finding, 1 when one has
(so CI jobs can gate on it), 2 for usage errors and unreadable logs. Imports
mitmproxy only for `credhop proxy`, so the report runs wherever the log was
copied to.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from .diagnosis import CATALOGUE, SEVERITIES, HopLogRead, diagnose, kind_of, read_hoplog
from .scrub import scrub
from .html_report import render_html
from .report import Selection, render_json, render_markdown, render_text

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its usage line, drop nothing else
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="credhop", description="Run the credhop proxy, explain credhop hop logs.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # listed for --help only: main() hands `proxy` and everything after it to mitmdump's own parser
    commands.add_parser(
        "proxy", help="start mitmdump with credhop loaded; takes mitmdump's options (`credhop proxy --help`)",
        add_help=False)
    report = commands.add_parser(
        "report", help="explain every redirect chain of a hop log",
        description="Explain every redirect chain of a credhop hop log (JSON Lines). Exit status 1 when a "
                    "shown chain has an error-level finding, 2 on usage errors or an unreadable log.")
    report.add_argument("hoplogs", metavar="HOPLOG", nargs="+",
                        help="the hop log (credhop_log), '-' for stdin; several (one per proxy instance of a "
                             "fleet) are merged into the same chains")
    report.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    report.add_argument("--client", action="append", default=[], metavar="IP",
                        help="only this client (repeatable)")
    report.add_argument("--host", action="append", default=[], metavar="GLOB",
                        help="only chains touching a host matching GLOB, e.g. '*.example.com' (repeatable)")
    report.add_argument("--finding", action="append", default=[], metavar="CODE",
                        help="only chains with this finding, by code (CH101) or name (repeatable)")
    report.add_argument("--severity", choices=SEVERITIES,
                        help="only findings at or above this level, and chains that have one")
    report.add_argument("--html", metavar="OUT.html", type=Path, help="also write a self-contained HTML page")
    commands.add_parser("findings", help="list every finding code")
    return parser


def _use_color(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and stream.isatty()


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    codes = []
    for wanted in args.finding:
        kind = kind_of(wanted)
        if kind is None:
            err.write(f"credhop report: unknown finding {wanted!r}; see `credhop findings`\n")
            return EXIT_USAGE
        codes.append(kind.code)
    read = HopLogRead([], [])
    lines = 0  # several logs: malformed line numbers count on from the previous file's last line
    for hoplog in args.hoplogs:
        try:
            one = read_hoplog("/dev/stdin" if hoplog == "-" else hoplog)
        except OSError as e:
            err.write(f"credhop report: cannot read {scrub(hoplog)}: {e.strerror or e}\n")
            return EXIT_USAGE
        if one.malformed and not one.records:
            err.write(f"credhop report: {scrub(hoplog)} holds no hop-log records "
                      f"({len(one.malformed)} malformed line(s)); is it a credhop_log file?\n")
            return EXIT_USAGE
        read.records.extend(one.records)
        read.malformed.extend(lines + n for n in one.malformed)
        read.unknown_events += one.unknown_events
        lines += one.lines

    selection = Selection(tuple(args.client), tuple(args.host), tuple(codes), args.severity)
    chains = selection.apply(diagnose(read.records))
    if args.format == "json":
        out.write(render_json(chains, read.malformed))
    elif args.format == "markdown":
        out.write(render_markdown(chains, read.malformed))
    else:
        out.write(render_text(chains, color=_use_color(out), malformed=read.malformed))
    if args.html:
        try:
            args.html.write_text(render_html(chains, read.malformed, source=", ".join(Path(h).name for h in args.hoplogs)),
                                 encoding="utf-8", errors="backslashreplace")
        except OSError as e:
            err.write(f"credhop report: cannot write {args.html}: {e.strerror or e}\n")
            return EXIT_USAGE
        err.write(f"credhop report: wrote {args.html}\n")
    return EXIT_FINDINGS if any(c.has_error() for c in chains) else EXIT_OK


def _proxy(argv: Sequence[str], err: TextIO) -> int:
    try:
        from .launcher import run_proxy  # imports mitmproxy
    except ImportError as e:
        if not (e.name or "").startswith("mitmproxy"):
            raise
        err.write(f"credhop proxy: mitmproxy is not importable ({e.name}); "
                  f"install it with: pip install 'mitmproxy>=10.1,<13'\n")
        return EXIT_USAGE
    return run_proxy(argv)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["proxy"]:
        return _proxy(argv[1:], err or sys.stderr)
    for stream in (sys.stdout, sys.stderr):  # a hostile log must not crash the report on a strict stream
        if out is None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    out, err = out or sys.stdout, err or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        try:
            return _report(args, out, err)
        except BrokenPipeError:  # `credhop report … | head`
            return EXIT_OK
    if args.command == "findings":
        for kind in CATALOGUE:
            out.write(f"{kind.code}  {kind.severity:<7}  {kind.name:<34} {kind.title}\n")
        return EXIT_OK
    parser.print_usage(err)
    err.write("credhop: error: give a command, e.g. `credhop report credhop-hops.jsonl`\n")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
