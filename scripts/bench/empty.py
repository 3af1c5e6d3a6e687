"""For `make bench-instructions`, not a product: a script whose addon has no hooks. What it costs is what
mitmproxy charges for any `-s` script: every event of every flow walks down to its addon.

    mitmdump -s scripts/bench/empty.py
"""


class Empty:
    pass


addons = [Empty()]
