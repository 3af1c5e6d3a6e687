"""mitmproxy entry script: `mitmdump -s addons/credhop.py`.

The implementation is the `credhop` package beside this file; mitmproxy puts
this directory first on sys.path while loading the script, and a package wins
over a module of the same name, so this works installed or not.
"""

from credhop.addon import CredHop

addons = [CredHop()]
