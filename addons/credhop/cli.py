"""`credhop report FILE…`: explain every redirect chain in hop logs and captures; `credhop proxy`: run the
proxy; `credhop check RULES…`: validate rules files; `credhop watch [HOPLOG]`: follow a hop log live.

Exit status: 0 when no shown chain has an error-level finding, 1 when one has
(so CI jobs can gate on it), 2 for usage errors and unreadable inputs; for
`check`, 1 when a file is invalid. Imports nothing from mitmproxy for hop logs,
HAR files and rules files, so the report and the check run wherever they were
copied to; only mitmproxy flow files (see captures.py) and `credhop proxy` need it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence, TextIO

from . import __version__
from .diagnosis import CATALOGUE, SEVERITIES, diagnose, kind_of
from .html_report import render_html
from .replay import MAX_INPUT_MB, InputError, collect
from .report import Selection, render_json, render_markdown, render_text
from .rules import RulesError, load_rules
from .scrub import printable, scrub
from .watch import DEFAULT_HOPLOG, IDLE_END, Follower, Printer, Watch, run

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep its usage line, drop nothing else
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="credhop",
                     description="Run the credhop proxy; explain credhop hop logs and captures of failed installs.")
    parser.add_argument("--version", action="version", version=f"credhop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # listed for --help only: main() hands `proxy` and everything after it to mitmdump's own parser
    commands.add_parser(
        "proxy", help="start mitmdump with credhop loaded; takes mitmdump's options (`credhop proxy --help`)",
        add_help=False)
    report = commands.add_parser(
        "report", help="explain every redirect chain of hop logs, flow files and HAR files",
        description="Explain every redirect chain of credhop hop logs (JSON Lines), mitmproxy flow files "
                    "(mitmdump -w) and HAR files, told apart by content; captures are replayed through credhop's "
                    "decisions in observe mode. Exit status 1 when a shown chain has an error-level finding, 2 on "
                    "usage errors or an unreadable input.")
    report.add_argument("files", nargs="+", metavar="FILE",
                        help="a hop log (credhop_log), a flow file or a HAR file; '-' for stdin")
    report.add_argument("--rules", metavar="FILE", type=Path,
                        help="rules to replay captures with (default: the shipped rules.yaml)")
    report.add_argument("--fingerprint-key", metavar="FILE", type=Path,
                        help="HMAC key file for the fingerprints of captured secrets, e.g. the proxy's "
                             "credhop_fingerprint_key (default: a fresh key per run)")
    report.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    _chain_filters(report)
    report.add_argument("--severity", choices=SEVERITIES,
                        help="only findings at or above this level, and chains that have one")
    report.add_argument("--html", metavar="OUT.html", type=Path, help="also write a self-contained HTML page")
    report.add_argument("--max-input-mb", type=_positive, default=MAX_INPUT_MB, metavar="MB",
                        help=f"refuse a file larger than this, unread (default {MAX_INPUT_MB}; a HAR takes "
                             "about 8 times its size in memory)")
    _watch_parser(commands)
    commands.add_parser("findings", help="list every finding code")
    commands.add_parser(
        "script", help="print the path of the mitmproxy entry script: mitmdump|mitmweb -s \"$(credhop script)\"",
        description="Print the path of the installed mitmproxy entry script, for mitmproxy's own tools: "
                    "mitmdump -s \"$(credhop script)\", mitmweb -s …, mitmproxy -s … (the console). "
                    "`credhop proxy` is mitmdump with credhop built in and needs no script.")
    check = commands.add_parser(
        "check", help="validate rules files (for CI, before deploying them), and a fleet's shared store",
        description="Validate credhop rules files exactly as the proxy loads them. Each invalid file gets "
                    "one line, FILE:LINE:COLUMN: KEY: problem, on stderr. With --store, connect to a fleet's "
                    "Redis with its key and options and say what answers (kind, version, round trip, whether "
                    "the key opens what the fleet wrote). Exit status 1 when any file is invalid (or, with "
                    "--strict, has a warning) or the store cannot be used, 0 otherwise.")
    check.add_argument("rules", nargs="*", metavar="RULES.yaml", help="rules file(s) to check")
    check.add_argument("--strict", action="store_true",
                       help="fail on warnings too (such as a rule injecting over plaintext http into any host)")
    check.add_argument("--store", metavar="URL", help="a credhop_store URL to check (redis://, rediss://, "
                       "unix://, redis+sentinel://, redis+cluster://)")
    check.add_argument("--store-key", metavar="FILE", type=Path, help="the fleet's credhop_store_key file")
    check.add_argument("--store-timeout", metavar="MS", type=_positive, default=200,
                       help="each call's deadline, as credhop_store_timeout (default 200)")
    return parser


def _chain_filters(parser: argparse.ArgumentParser) -> None:
    """The filters `report` and `watch` share (report.Selection)."""
    parser.add_argument("--client", action="append", default=[], metavar="IP",
                        help="only this client (repeatable)")
    parser.add_argument("--host", action="append", default=[], metavar="GLOB",
                        help="only chains touching a host matching GLOB, e.g. '*.example.com' (repeatable)")
    parser.add_argument("--finding", action="append", default=[], metavar="CODE",
                        help="only chains with this finding, by code (CH101) or name (repeatable)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be 0..86400 seconds, not {text}")
    return value


def _watch_parser(commands: Any) -> None:
    watch = commands.add_parser(
        "watch", help="follow a hop log live and print one line per finished chain",
        description="Follow a credhop hop log while the proxy writes it, like `tail -F` (it waits for a file "
                    "that does not exist yet, and follows one that is truncated or replaced), and print one "
                    "line per finished chain: when it started, its verdict, the client, its first request, "
                    "its top finding and that finding's fix. A chain is finished when its follow-up got its "
                    "final answer (a 401 once the client did not ask again within a second), when a later "
                    "download fails, when it had no record for --idle-end seconds, or when the watch stops. "
                    "A chain is printed once; a record that comes later and ends it again (a download that "
                    "fails) prints it again, marked (updated), only if its verdict or top finding changed. "
                    "Stops on Ctrl-C, SIGTERM or after --until-idle, then prints the totals. Exit status 1 "
                    "when a printed chain (as last printed) has an error-level finding, 0 otherwise, 2 on "
                    "usage errors. `credhop report HOPLOG` explains a chain hop by hop.")
    watch.add_argument("hoplog", nargs="?", default=Path(DEFAULT_HOPLOG), type=Path, metavar="HOPLOG",
                       help=f"the proxy's credhop_log file (default: {DEFAULT_HOPLOG}, what `make run` "
                            "writes)")
    watch.add_argument("--from-start", action="store_true",
                       help="read what the file already holds first (default: start at its end)")
    watch.add_argument("--failed", action="store_true", help="only failed chains")
    _chain_filters(watch)
    watch.add_argument("--idle-end", type=_seconds, default=IDLE_END, metavar="SECONDS",
                       help=f"judge a chain that had no record for this long: a client that gave up "
                            f"(default {IDLE_END:g})")
    watch.add_argument("--until-idle", type=_seconds, metavar="SECONDS",
                       help="stop once no line came for this long (default: run until Ctrl-C or SIGTERM)")


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.rules and not args.store:
        err.write("credhop check: give rules files, --store URL, or both\n")
        return EXIT_USAGE
    failed = _check_rules(args, out, err)
    if args.store:
        status = _check_store(args, out, err)
        if status == EXIT_USAGE:
            return status
        failed = failed or status != EXIT_OK
    return EXIT_FINDINGS if failed else EXIT_OK


def _check_store(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One line of facts on stdout; a problem as one line on stderr, exit 1."""
    if not args.store_key:
        err.write("credhop check: --store needs --store-key FILE, the fleet's credhop_store_key\n")
        return EXIT_USAGE
    try:
        import redis.asyncio  # noqa: F401

        from .redis_store import RedisLink, StoreConfigError, describe
        from .sealing import KeyFileError, Sealer
    except ImportError as e:
        err.write(f"credhop check: a Redis store needs the redis package ({e.name}): pip install 'credhop[fleet]'\n")
        return EXIT_FINDINGS
    where = describe(args.store)
    try:
        link = RedisLink(args.store, Sealer.from_file(args.store_key), args.store_timeout / 1000)
    except (KeyFileError, StoreConfigError, ValueError, OSError) as e:
        err.write(f"credhop check: {_line(e)}\n")
        return EXIT_FINDINGS

    async def look() -> Any:
        try:
            return await link.look(write=False)  # as the proxy looks at start, but only reading
        finally:
            await link.close()

    report: Any = asyncio.run(look())
    if report.answers:
        out.write(f"{_line(report.summary())}\n")
    for warning in report.warnings:
        err.write(f"credhop check: {_line(where)}: {_line(warning)} (warning)\n")
    if report.problem:
        err.write(f"credhop check: {_line(where)} {_line(report.problem)}\n")
        return EXIT_FINDINGS
    return EXIT_OK


def _check_rules(args: argparse.Namespace, out: TextIO, err: TextIO) -> bool:
    failed = False
    for path in args.rules:
        try:
            rules = load_rules(path)
        except RulesError as e:
            err.write(f"{scrub(str(e))}\n")
            failed = True
            continue
        for warning in rules.warnings:
            err.write(f"{scrub(warning)} (warning)\n")
        failed = failed or (args.strict and bool(rules.warnings))
        out.write(f"{scrub(path)}: {len(rules.rules)} rule(s), valid"
                  f"{f', {len(rules.warnings)} warning(s)' if rules.warnings else ''}\n")
    return failed


def _line(text: object) -> str:
    """One line of stderr: a file name or a capture's text in it can hold controls or line breaks."""
    return printable(scrub(str(text)), one_line=True)


def _use_color(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and stream.isatty()


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    codes = _finding_codes(args.finding, "report", err)
    if codes is None:
        return EXIT_USAGE
    try:
        key = args.fingerprint_key.read_bytes().strip() if args.fingerprint_key else None
        if key is not None and len(key) < 16:
            raise InputError(f"{args.fingerprint_key} holds fewer than 16 bytes")
        read = collect(args.files, load_rules(args.rules) if args.rules else None, key, args.max_input_mb)
    except (InputError, RulesError) as e:
        err.write(f"credhop report: {_line(e)}\n")
        return EXIT_USAGE
    except OSError as e:
        err.write(f"credhop report: cannot read {_line(args.fingerprint_key)}: {_line(e.strerror or e)}\n")
        return EXIT_USAGE
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
            source = ", ".join(Path(f).name for f in args.files)
            args.html.write_text(render_html(chains, read.malformed, source=source),
                                 encoding="utf-8", errors="backslashreplace")
        except OSError as e:
            err.write(f"credhop report: cannot write {_line(args.html)}: {_line(e.strerror or e)}\n")
            return EXIT_USAGE
        err.write(f"credhop report: wrote {_line(args.html)}\n")
    return EXIT_FINDINGS if any(c.has_error() for c in chains) else EXIT_OK


def _watch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    codes = _finding_codes(args.finding, "watch", err)
    if codes is None:
        return EXIT_USAGE
    if args.idle_end <= 0:
        err.write("credhop watch: --idle-end must be more than 0 seconds\n")
        return EXIT_USAGE
    follower = Follower(args.hoplog, args.from_start, notice=lambda text: _notice(err, text))
    printer = Printer(out, Selection(tuple(args.client), tuple(args.host), tuple(codes)), args.failed,
                      _use_color(out))
    stopping: list[int] = []
    before: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # Ctrl-C and SIGTERM end it like --until-idle
        before = {s: signal.signal(s, lambda signum, _: stopping.append(signum))
                  for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run(follower, Watch(idle_end=args.idle_end), printer, lambda: bool(stopping), args.until_idle)
    except BrokenPipeError:
        raise
    except OSError as e:  # the path is a directory, or cannot be read
        err.write(f"credhop watch: cannot follow {_line(args.hoplog)}: {_line(e.strerror or e)}\n")
        return EXIT_USAGE
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    return EXIT_FINDINGS if printer.failed() else EXIT_OK


def _notice(err: TextIO, text: str) -> None:
    err.write(f"credhop watch: {text}\n")
    err.flush()


def _finding_codes(wanted: Sequence[str], command: str, err: TextIO) -> list[str] | None:
    """The codes of --finding values (code or name); None after saying which one is unknown."""
    codes = []
    for name in wanted:
        kind = kind_of(name)
        if kind is None:
            err.write(f"credhop {command}: unknown finding {_line(repr(name))}; see `credhop findings`\n")
            return None
        codes.append(kind.code)
    return codes


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
        except (MemoryError, RecursionError) as e:
            # inputs are bounded (--max-input-mb) and every parse catches these; this is the last guard
            # for one that still exhausts memory or the stack: one line, exit 2, never a traceback
            what = "out of memory" if isinstance(e, MemoryError) else "an input is nested too deeply"
            err.write(f"credhop report: {what}; give smaller inputs (--max-input-mb sets the most read)\n")
            return EXIT_USAGE
    if args.command == "watch":
        try:
            return _watch(args, out, err)
        except BrokenPipeError:  # `credhop watch … | head -1`
            return EXIT_OK
    if args.command == "check":
        return _check(args, out, err)
    if args.command == "script":
        out.write(f"{Path(__file__).with_name('script.py')}\n")
        return EXIT_OK
    if args.command == "findings":
        for kind in CATALOGUE:
            out.write(f"{kind.code}  {kind.severity:<7}  {kind.name:<34} {kind.title}\n")
        return EXIT_OK
    parser.print_usage(err)
    err.write("credhop: error: give a command, e.g. `credhop report credhop-hops.jsonl` (or a .har/.mitm file)\n")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
