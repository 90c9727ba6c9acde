"""Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS blog)."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int, *, base: float = 0.5, cap: float = 60.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))  # noqa: S311
