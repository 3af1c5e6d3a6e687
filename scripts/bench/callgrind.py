"""Instructions a mitmdump process executes, counted by valgrind's callgrind (`make bench-instructions`).

CPU seconds on this shared 2-core machine move by about 5 % between runs; the instructions a process
executes for the same requests move by about 0.1 %. They are not time (cache misses, system calls and
the kernel are left out), so they stand next to the CPU figures, not in their place: they show what
one commit changed against another, and how far credhop is above the floor, below the noise of CPU
time. The process runs about 50 times slower under callgrind, so few requests are enough.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def wrap(argv: list[str], out: Path) -> list[str]:
    """`argv` run under callgrind, its counts dumped to `out`.N. A console script (mitmdump) is run
    by its own interpreter: valgrind would otherwise count the `#!` line's loader."""
    program = Path(argv[0])
    python = program.parent / "python"
    if python.exists() and program.read_bytes()[:2] == b"#!":
        argv = [str(python), *argv]
    return ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}", "--dump-line=no",
            "--dump-instr=no", *argv]


def zero(pid: int) -> None:
    """Start counting afresh (the counts before are dropped)."""
    _control("-z", pid)


def dump(pid: int, out: Path) -> int:
    """The instructions counted since the last `zero`: callgrind writes them to a new `out`.N."""
    before = set(out.parent.glob(out.name + ".*"))
    _control("-d", pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in set(out.parent.glob(out.name + ".*")) - before:
            found = _TOTAL.search(path.read_bytes())
            if found:  # the header's `summary:` line has the total; a dump still being written has it too
                return int(found.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump for pid {pid} in {out.parent}")


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=120)
