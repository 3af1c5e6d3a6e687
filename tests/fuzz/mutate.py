"""Seed-and-mutate inputs for the fuzz targets: a valid text, a few small edits."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

OPS = ("insert", "delete", "replace", "duplicate", "upper")


def mutations(seeds: Sequence[str], pieces: Sequence[str], rounds: int, span: int, limit: int,
              ops: Sequence[str] = OPS) -> st.SearchStrategy[str]:
    """A seed with 1..`rounds` edits of at most `span` characters, cut to `limit`."""

    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(seeds))
        for _ in range(draw(st.integers(1, rounds))):
            i = draw(st.integers(0, len(text)))
            j = draw(st.integers(i, min(len(text), i + span)))
            piece = draw(st.sampled_from(pieces))
            text = {
                "insert": lambda: text[:i] + piece + text[i:],
                "delete": lambda: text[:i] + text[j:],
                "replace": lambda: text[:i] + piece + text[j:],
                "duplicate": lambda: text[:j] + text[i:j] + text[j:],
                "upper": lambda: text[:i] + text[i:j].upper() + text[j:],
            }[draw(st.sampled_from(ops))]()
        return text[:limit]

    return mutated()
