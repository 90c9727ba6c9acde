"""Replacement values: dummies valid for each VR (PS3.15 Table E.1-1a "D"), and date shifting.

Dummy values are fixed and obviously artificial, and each is valid for its VR (PS3.5 Table
6.2-1): code strings upper case, UIDs are not produced here (UIDs are pseudonymized), dates real
calendar dates.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["DUMMY_DATE", "dummy_value", "shift_date", "shift_datetime"]

DUMMY_TEXT = "DEIDENTIFIED"
DUMMY_DATE = "19000101"

_DUMMIES: dict[str, Any] = {
    "AE": "DEIDENTIFIED",
    "AS": "000D",
    "CS": "DEIDENTIFIED",
    "DA": DUMMY_DATE,
    "DT": DUMMY_DATE + "000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": "DEIDENTIFIED",
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:x-deidentified",
    "AT": 0,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    # binary VRs: one zero value of the VR's width (even length, PS3.5 7.1.1)
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}


def dummy_value(vr: str) -> Any:
    """A non-empty value valid for ``vr`` that carries no information."""
    try:
        return _DUMMIES[vr]
    except KeyError:
        raise ValueError(f"no dummy value for VR {vr!r}") from None


_DA = re.compile(r"^(\d{4})(\d{2})?(\d{2})?$")


def shift_date(value: str, days: int) -> str | None:
    """``value`` (DA: YYYYMMDD, or a partial YYYY / YYYYMM) moved by ``days``.

    A partial date shifts like its period's first day, and keeps its precision.  Returns None
    when the value is not a date (the caller then replaces it with a dummy).
    """
    m = _DA.match(value.strip())
    if not m:
        return None
    year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
    try:
        shifted = dt.date(year, month, day) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    text = f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"
    return text[: len(value.strip())]


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value with its date part moved by ``days``; time and UTC offset unchanged."""
    text = value.strip()
    m = re.match(r"^(\d{4}(?:\d{2}(?:\d{2})?)?)(.*)$", text)
    if not m:
        return None
    date_part = shift_date(m[1], days)
    return None if date_part is None else date_part + m[2]
