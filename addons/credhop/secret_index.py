"""Finding remembered secrets inside any text, at a cost that does not grow with how many there are.

A secret of length L >= 2g - 1 at any position of a text fully covers at least one of the text's
g-character blocks text[0:g], text[g:2g] …, and the last block it covers is one of its own g pieces
starting at L-2g+1 … L-g. So each secret is indexed by those g pieces (its tail, where tokens differ:
JWTs and `user:` Basic values share long heads), and a text is looked up block by block: len(text) / g
dictionary lookups, however many secrets are remembered. Adding or forgetting one changes only its
own pieces; nothing is recompiled.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

# (piece length g, shortest secret it covers = 2g - 1), longest pieces first: they are the rarest
TIERS = ((4, 7), (2, 3))
SHORTEST = TIERS[-1][1]


def _tier(length: int) -> int:
    for gram, shortest in TIERS:
        if length >= shortest:
            return gram
    return 0


def _pieces(form: str, gram: int) -> set[str]:
    n = len(form)
    return {form[k:k + gram] for k in range(n - 2 * gram + 1, n - gram + 1)}


class SecretIndex:
    """A bounded set of secret spellings, forgetting the least recently remembered first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._forms: OrderedDict[str, None] = OrderedDict()
        # per piece length: piece -> the one form holding it, or a set when several share it
        self._by_piece: dict[int, dict[str, str | set[str]]] = {gram: {} for gram, _ in TIERS}

    def __len__(self) -> int:
        return len(self._forms)

    def __contains__(self, form: object) -> bool:
        return form in self._forms

    def forms(self) -> list[str]:
        """Oldest first."""
        return list(self._forms)

    def add(self, forms: Iterable[str]) -> bool:
        """Remember these spellings (or refresh them). True when one was new."""
        added = False
        for form in forms:
            if form in self._forms:
                self._forms.move_to_end(form)
                continue
            gram = _tier(len(form))
            if not gram:
                continue
            self._forms[form] = None
            index = self._by_piece[gram]
            for piece in _pieces(form, gram):
                held = index.get(piece)
                if held is None:
                    index[piece] = form
                elif type(held) is str:
                    index[piece] = {held, form}
                else:
                    held.add(form)  # type: ignore[union-attr]
            added = True
        while len(self._forms) > self.capacity:
            self._forget(self._forms.popitem(last=False)[0])
        return added

    def _forget(self, form: str) -> None:
        gram = _tier(len(form))
        index = self._by_piece[gram]
        for piece in _pieces(form, gram):
            held = index.get(piece)
            if held == form:  # this form alone
                del index[piece]
            elif type(held) is set:
                held.discard(form)
                if len(held) == 1:
                    index[piece] = next(iter(held))

    def _candidates(self, text: str) -> set[str]:
        found: set[str] = set()
        for gram, _ in TIERS:
            index = self._by_piece[gram]
            if not index:
                continue
            get = index.get
            for q in range(0, len(text) - gram + 1, gram):
                held = get(text[q:q + gram])
                if held is not None:
                    if type(held) is str:
                        found.add(held)  # type: ignore[arg-type]
                    else:
                        found |= held  # type: ignore[operator]
        return found

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where remembered secrets are in `text`: overlapping occurrences merged, in order."""
        if len(text) < SHORTEST or not self._forms:
            return []
        found = []
        for form in self._candidates(text):
            at = text.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = text.find(form, at + 1)
        if not found:
            return []
        found.sort()
        merged = [found[0]]
        for start, end in found[1:]:
            last_start, last_end = merged[-1]
            if start < last_end:
                merged[-1] = (last_start, max(last_end, end))
            else:
                merged.append((start, end))
        return merged

    def mask(self, text: str, mask: str = "***") -> str:
        """`text` with every remembered secret in it replaced by `mask`."""
        spans = self.spans(text)
        if not spans:
            return text
        out, at = [], 0
        for start, end in spans:
            out += (text[at:start], mask)
            at = end
        out.append(text[at:])
        return "".join(out)
