"""Shared helpers for the de-identification tests."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomgate.config import DeidOption
from dicomgate.deid import Profile, compile_profile
from dicomgate.pseudonym import Pseudonymizer

KEY = b"test-key-0123456789-0123456789-0123456789"
OTHER_KEY = b"another-key-9876543210-9876543210-98765432"

OPTION_COLUMN = {
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


def table_rows() -> list[dict[str, str]]:
    """The shipped Table E.1-1 CSV, as dicts (read here, not through the engine)."""
    text = (
        resources.files("dicomgate.deid")
        .joinpath("data/ps3.15-table-e1-1.csv")
        .read_text(encoding="utf-8")
    )
    return list(csv.DictReader(text.splitlines()))


def row_tag(row: dict[str, str]) -> int | None:
    m = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", row["tag"])
    return int(m[1] + m[2], 16) if m else None


def profile(options: Iterable[DeidOption | str] = (), **kwargs: Any) -> Profile:
    return compile_profile(
        options, burned_in_policy=kwargs.pop("burned_in_policy", "allow"), **kwargs
    )


def pseudonymizer(key: bytes = KEY) -> Pseudonymizer:
    return Pseudonymizer(key)


def identifying_value(vr: str, tag: int) -> Any:
    """A distinctive value of ``vr`` that stands for identifying data."""
    vr = vr.split(" or ")[0]
    text = {
        "PN": "DOE^JANE",
        "LO": f"DOE PHI {tag:08X}",
        "LT": f"DOE PHI {tag:08X}",
        "ST": f"DOE PHI {tag:08X}",
        "UT": f"DOE PHI {tag:08X}",
        "UC": f"DOE PHI {tag:08X}",
        "SH": f"DOE {tag:08X}",
        "CS": "PHIVALUE",
        "AE": "PHI_STATION",
        "AS": "053Y",
        "DA": "19710304",
        "DT": "19710304101530",
        "TM": "101530",
        "DS": "12.5",
        "IS": "42",
        "UI": f"1.2.999.{tag}",
        "UR": "http://phi.example/record",
    }
    if vr in text:
        return text[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 1.5
    if vr == "AT":
        return 0x00100010
    if vr in ("OB", "OW", "UN", "OF", "OL", "OD", "OV"):
        return b"PHI!PHI!"
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "X1"
        return Sequence([item])
    raise ValueError(vr)
