"""Cleaning free text (the "C" action on text, PS3.15 Table E.1-1a).

"Clean" means a value of similar meaning known not to contain identifying information.  We keep
the text and cut out every identifying value the instance itself carries (names and their parts,
IDs, dates in the usual spellings, UIDs, addresses, institution and device names): what a human
would redact from a description knowing the header.  The PHI verifier independently checks the
result.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["Scrubber", "date_spellings"]

_MIN_PART = 2  # name components of 2+ letters are cut (with word boundaries)
_MIN_WHOLE = 3  # whole values of 3+ characters are cut wherever they occur


def date_spellings(yyyymmdd: str) -> list[str]:
    """A DA value and the ways people write it in free text."""
    y, m, d = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:8]
    return [
        yyyymmdd,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}.{m}.{y}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{d}-{m}-{y}",
        f"{m}-{d}-{y}",
    ]


class Scrubber:
    """Removes a fixed set of identifying values from text, case-insensitively."""

    def __init__(self, whole: Iterable[str], parts: Iterable[str]) -> None:
        wholes = sorted({w for w in whole if len(w) >= _MIN_WHOLE}, key=len, reverse=True)
        pieces = sorted({p for p in parts if len(p) >= _MIN_PART}, key=len, reverse=True)
        alternatives = [re.escape(w) for w in wholes]
        alternatives += [rf"(?<!\w){re.escape(p)}(?!\w)" for p in pieces]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        cleaned = self._pattern.sub("", text)
        if cleaned == text:
            return text
        return re.sub(r"[ \t]{2,}", " ", cleaned).strip(" \t^,;:-")
