"""PS3.15 Table E.1-1, read from the CSV shipped as package data.

The CSV (``data/ps3.15-table-e1-1.csv``, PS3.15 2026c) has one row per table row: the tag as
printed (including the wildcard rows ``(50xx,xxxx)``, ``(60xx,3000)``, ``(60xx,4000)`` and the
private-attribute row), the Basic Profile action code and one column per option.  Nothing here
interprets the codes; :mod:`dicomgate.deid._profile` does.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from dataclasses import dataclass
from importlib import resources

from dicomgate.config import DeidOption

__all__ = ["OPTION_COLUMNS", "TableRow", "load_table"]

#: CSV column of each option (PS3.15 Table E.1-1 column order).
OPTION_COLUMNS: dict[DeidOption, str] = {
    DeidOption.RETAIN_SAFE_PRIVATE: "rtn_safe_priv",
    DeidOption.RETAIN_UIDS: "rtn_uids",
    DeidOption.RETAIN_DEVICE_IDENTITY: "rtn_dev_id",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "rtn_inst_id",
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "rtn_pat_chars",
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: "rtn_long_full_dates",
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: "rtn_long_modif_dates",
    DeidOption.CLEAN_DESCRIPTORS: "clean_desc",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "clean_struct_cont",
    DeidOption.CLEAN_GRAPHICS: "clean_graph",
}

_EXACT = re.compile(r"^\(([0-9A-F]{4}),([0-9A-F]{4})\)$")
_VALID_CODES = {"X", "Z", "D", "U", "K", "C", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


@dataclass(frozen=True, slots=True)
class TableRow:
    """One row of Table E.1-1."""

    tag_text: str
    """The tag as printed, e.g. ``(0010,0010)`` or ``(60xx,3000)``."""
    name: str
    keyword: str
    retired: bool
    basic: str
    """Basic Profile action code (X, Z, D, U, K, C or a compound code such as X/Z/D)."""
    options: tuple[tuple[DeidOption, str], ...]
    """Non-empty option cells, in the table's column order."""

    @property
    def tag(self) -> int | None:
        """The tag as an int, or None for a wildcard or the private-attribute row."""
        m = _EXACT.match(self.tag_text)
        return int(m[1] + m[2], 16) if m else None


def _parse(text: str) -> tuple[TableRow, ...]:
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        cells = tuple(
            (opt, rec[col].strip()) for opt, col in OPTION_COLUMNS.items() if rec[col].strip()
        )
        row = TableRow(
            tag_text=rec["tag"].strip(),
            name=rec["name"].strip(),
            keyword=rec["keyword"].strip(),
            retired=rec["retired"].strip() == "Y",
            basic=rec["basic"].strip(),
            options=cells,
        )
        for code in (row.basic, *(c for _, c in cells)):
            if code not in _VALID_CODES:
                raise ValueError(f"Table E.1-1 row {row.tag_text}: unknown action code {code!r}")
        rows.append(row)
    return tuple(rows)


@functools.cache
def load_table() -> tuple[TableRow, ...]:
    """All 656 rows of the shipped Table E.1-1 (parsed once per process)."""
    text = (
        resources.files("dicomgate.deid")
        .joinpath("data/ps3.15-table-e1-1.csv")
        .read_text(encoding="utf-8")
    )
    return _parse(text)
