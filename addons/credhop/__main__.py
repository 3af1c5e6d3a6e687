"""`python -m credhop report HOPLOG`: the same as the `credhop` console script."""

import sys

from .cli import main

sys.exit(main())
