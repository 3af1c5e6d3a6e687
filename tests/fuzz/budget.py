"""Run a hypothesis test over and over until a time budget is spent, counting the inputs it saw."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    inputs: int = 0
    runs: int = 0  # hypothesis runs (each a fresh random seed)
    seconds: float = 0.0
    notes: dict[str, int] = field(default_factory=dict)  # counted known conditions

    def __str__(self) -> str:
        notes = "".join(f", {k}: {v}" for k, v in self.notes.items())
        rate = self.inputs / self.seconds if self.seconds else 0
        return (
            f"{self.inputs} inputs in {self.seconds:.1f} s ({rate:.0f}/s, {self.runs} hypothesis runs{notes})"
        )


RESULTS: dict[str, Result] = {}


def fuzz_for(name: str, seconds: float, run: Callable[[], None], result: Result) -> Result:
    """Call `run` (a @given test that counts into `result.inputs`) until `seconds` have passed."""
    RESULTS[name] = result
    began = time.monotonic()
    while True:
        run()
        result.runs += 1
        result.seconds = time.monotonic() - began
        if result.seconds >= seconds:
            break
    print(f"\nfuzz {name}: {result}")
    return result
