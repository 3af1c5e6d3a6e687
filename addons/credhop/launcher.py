"""`credhop proxy [mitmdump options…]`: mitmdump with credhop built in, for an installed credhop.

credhop is added to the master before the command line is parsed (not as a
`-s` script, which loads only after parsing), so `--set credhop_*` values are
checked by mitmproxy's own option parser and `--options`/`--help` list them.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from mitmproxy import exceptions, hooks, options
from mitmproxy.addons.script import ScriptLoader
from mitmproxy.tools import cmdline, dump, main

from .addon import CredHop
from .options import OPTIONS, deferred_problem

PROG = "credhop proxy"


class CredHopDumpMaster(dump.DumpMaster):
    """mitmdump's master with credhop as a built-in addon."""

    def __init__(self, options: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(options, *args, **kwargs)
        self.credhop = credhop = CredHop()
        self.addons.add(credhop)  # its load() adds the options; the chain it configures lacks it yet
        self._configured: set[str] = set()
        self.options.changed.connect(self._note_configured)
        # add() appends, behind the dumper and `-w` saving; move credhop to where a first `-s`
        # script runs, so they see the Location and body it scrubbed, not the credential
        chain = self.addons.chain
        chain.remove(credhop)
        at = next((i for i, a in enumerate(chain) if isinstance(a, ScriptLoader)), len(chain))
        chain.insert(at, credhop)

    def _note_configured(self, updated: set[str]) -> None:
        self._configured |= set(updated)

    async def run(self) -> None:
        # mitmproxy configures a built-in addon only for options that change (a script gets every
        # option when it loads): hand credhop the defaults nobody set, such as the packaged rules,
        # now that the command line and config.yaml are in and before the proxy listens
        defaults = {name for name in self.options.keys() if name.startswith("credhop_")} - self._configured
        # a name no addon declared stays deferred (mitmproxy keeps it for a script that may declare it
        # later); `-s` scripts have loaded by now, so a credhop_* name left over is a typo, from
        # --set or config.yaml alike, and is refused as `mitmdump -s` refuses it
        problem = deferred_problem(self.options, self.credhop.redactor)
        if problem:
            print(f"credhop: {problem}", file=sys.stderr)
            sys.exit(1)
        try:
            self.addons.invoke_addon_sync(self.credhop, hooks.ConfigureHook(defaults))
        except exceptions.OptionsError as e:
            print(f"{sys.argv[0]}: {e}", file=sys.stderr)  # as mitmproxy.tools.main reports option errors
            sys.exit(1)
        await super().run()


def _parser(opts: Any) -> Any:
    parser = cmdline.mitmdump(opts)
    parser.prog = PROG  # usage and errors name the command the user typed, not bare `credhop`
    return parser


def _filter_options(args: Any) -> dict[str, str]:
    # what mitmproxy.tools.main.mitmdump does with a trailing filter expression (10.4 to 12.x)
    if args.filter_args:
        expression = " ".join(args.filter_args)
        return dict(save_stream_filter=expression, readfile_filter=expression, dumper_filter=expression)
    return {}


def credhop_help() -> str:
    """credhop's own options, for `credhop proxy --help`, before mitmdump's (which lists none of them)."""
    lines = [f"usage: {PROG} [mitmdump options] [--set credhop_OPTION=VALUE …]", "",
             "mitmdump with credhop built in. credhop's options (--set NAME=VALUE, or config.yaml):", ""]
    for option in OPTIONS:
        values = "|".join(option.choices) if option.choices else option.type.__name__
        default = f" (default: {option.default})" if option.default not in ("", None) else ""
        lines.append(f"  {option.name}={values}{default}")
        lines += [f"      {line}" for line in textwrap.wrap(option.help, 90)]
    lines += ["", "Reference: README.md (Options) and docs/fleet.md. mitmdump's own options follow.", ""]
    return "\n".join(lines) + "\n"


def run_proxy(argv: Sequence[str]) -> int:
    """Run until shut down; mitmproxy itself exits 1 (via SystemExit) on bad arguments or options."""
    if "-h" in argv or "--help" in argv:  # mitmproxy turns argparse's exit 0 after --help into 1
        sys.stdout.write(credhop_help())
        _parser(options.Options()).print_help()
        return 0
    main.run(CredHopDumpMaster, _parser, list(argv), _filter_options)
    return 0
