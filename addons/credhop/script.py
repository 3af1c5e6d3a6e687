"""mitmproxy entry script of an installed credhop: `mitmdump -s "$(credhop script)"`, and the same
for mitmweb and mitmproxy's console, so their `:credhop.*` commands work without a checkout.

mitmproxy loads a script as a module of its own (`__mitmproxy_script__.NAME`), so the package's
modules, which import each other relatively, cannot be given to `-s` themselves; this file imports
the installed package absolutely. mitmproxy puts this directory first on sys.path while it loads the
script; the package is found through site-packages, or, when the interpreter running mitmproxy is not
the one credhop was installed into, through the directory that holds this package.
"""

import sys
from pathlib import Path

try:
    try:
        from credhop.addon import CredHop
    except ImportError as e:
        if e.name != "credhop":
            raise
        sys.path.append(str(Path(__file__).resolve().parents[1]))
        from credhop.addon import CredHop
except ImportError as e:  # such as a standalone mitmproxy binary, whose bundled Python lacks ada_url
    raise ImportError(f"credhop needs {e.name}, which the Python running mitmproxy ({sys.executable}) does not "
                      "have: run mitmproxy from the environment credhop is installed in (pip install mitmproxy "
                      "credhop), or use `credhop proxy`", name=e.name) from None

addons = [CredHop()]
