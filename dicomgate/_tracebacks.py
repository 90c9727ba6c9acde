"""Tracebacks that are safe to log (promise 2 covers the logs).

A loop that catches everything must say *where* it failed, or a persistent bug shows as the same
one-word line forever. A normal traceback cannot be logged here: exception messages quote values
(pydicom's ``Invalid value for VR UI: '1.2…'``) and paths (spool files are named after original
SOP Instance UIDs), and ``rich``-style renderers add local variables. :func:`safe_traceback`
keeps only what code alone determines — exception types and the frames' module, function and line
— for the exception and every cause or context it was chained to.
"""

from __future__ import annotations

import traceback

__all__ = ["safe_traceback"]

_MAX_CHAIN = 5


def _module_of(filename: str) -> str:
    """``.../site-packages/pydicom/dataset.py`` → ``pydicom/dataset.py``: the path from the
    package root, never a directory of this machine (or of a spool)."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    if "dicomgate" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("dicomgate") :])
    return parts[-1]  # the standard library or a script: its file name only


def _one(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = " < ".join(f"{_module_of(f.filename)}:{f.name}:{f.lineno}" for f in reversed(frames))
    return f"{type(exc).__module__}.{type(exc).__qualname__} at {where or '?'}"


def safe_traceback(exc: BaseException) -> str:
    """The exception's type and frames (innermost first), then each cause, with no message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < _MAX_CHAIN:
        seen.add(id(current))
        parts.append(_one(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return " | caused by ".join(parts)
