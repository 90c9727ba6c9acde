"""Real-world files with distinctive fake PHI planted in every identifying attribute.

A planted copy is a file of :func:`tests.deid.realworld.real_world_files` read into memory (never
written back) in which every public attribute, at any depth, whose Table E.1-1 Basic Profile
action is not K gets a fake value valid for its VR and distinctive: each holds its own counter
(``ZQAAB^QXAAB``, ``ZQAAB PHI0001``, 1931-01-02, 13:00:01, ``1.999.<tag>.2``...), so no two
planted values are alike and none is a word, a dummy or all zeros.  Patient's Name and Patient
ID are added when the file lacks them, and a private block copies them (as text, and as bytes in
an UN element), the way vendors copy patient identity into their private headers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from tests.deid.helpers import row_tag, table_rows

__all__ = ["PLANT_CREATOR", "Planted", "plant", "planted_copy"]

PLANT_CREATOR = "ZQ PLANTED PHI"
_PRIVATE_GROUP = 0x7FD1
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_IDENTIFYING = frozenset(
    tag for row in table_rows() if (tag := row_tag(row)) is not None and row["basic"] != "K"
)
_BYTES = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_INTS = {"US", "SS", "UL", "SL", "UV", "SV"}


@dataclass
class Planted:
    """A planted copy and what was planted where."""

    dataset: Dataset
    values: dict[int, list[str]] = field(default_factory=dict)
    """Planted values by tag, as text (bytes as Latin-1): the public identifying attributes
    and the private copies."""

    @property
    def public_tags(self) -> list[int]:
        return sorted(t for t in self.values if not t >> 16 & 1)

    @property
    def private_tags(self) -> list[int]:
        return sorted(t for t in self.values if t >> 16 & 1)


def _letters(n: int) -> str:
    """AAA, AAB, ...: three or more capital letters unique to ``n``."""
    out = ""
    for _ in range(3):
        n, r = divmod(n, 26)
        out = chr(65 + r) + out
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


def fake_value(vr: str, tag: int, n: int) -> str | int | float | bytes:
    """The ``n``-th planted value, valid for ``vr``."""
    letters = _letters(n)
    day = dt.date(1931, 1, 1) + dt.timedelta(days=n)
    time = f"{13 + n // 3600 % 10:02d}{n // 60 % 60:02d}{n % 60:02d}"
    text: dict[str, str] = {
        "PN": f"ZQ{letters}^QX{letters}",
        "LO": f"ZQ{letters} PHI{n:04d}",
        "SH": f"ZQ{letters} PHI{n:04d}",
        "UC": f"ZQ{letters} PHI{n:04d}",
        "ST": f"ZQ{letters} PHI{n:04d} narrative",
        "LT": f"ZQ{letters} PHI{n:04d} narrative",
        "UT": f"ZQ{letters} PHI{n:04d} narrative",
        "CS": f"ZQ{letters}{n:04d}",
        "AE": f"ZQ{letters}{n:04d}",
        "AS": f"{n % 999 + 1:03d}W",
        "DA": day.strftime("%Y%m%d"),
        "DT": day.strftime("%Y%m%d") + time,
        "TM": time,
        "DS": f"{1000 + n}.25",
        "IS": str(70000 + n),
        "UI": f"1.999.{tag}.{n + 1}",
        "UR": f"http://zq.example/{letters}{n:04d}",
    }
    if vr in text:
        return text[vr]
    if vr in _INTS:
        return 4000 + n
    if vr in ("FL", "FD"):
        return 1000.5 + n
    if vr in _BYTES:
        data = f"ZQ{letters}BYTES{n:04d}".encode()
        return data + b"\x00" * (-len(data) % 8)
    raise ValueError(vr)


def _vr(tag: int, vr: str) -> str:
    if dictionary_has_tag(tag):
        vr = dictionary_VR(tag)
    return vr.split(" or ")[0]


def plant(ds: Dataset) -> Planted:
    """Plant fake PHI into ``ds`` (changed in place) and say what went where."""
    planted = Planted(ds)
    counter = [0]

    def put(target: Dataset, tag: int, vr: str) -> None:
        value = fake_value(vr, tag, counter[0])
        counter[0] += 1
        target[tag] = DataElement(tag, vr, value)
        shown = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        planted.values.setdefault(tag, []).append(shown)

    def walk(target: Dataset) -> None:
        for key in list(target.keys()):
            tag = int(key)
            if tag >> 16 & 1 or tag >> 16 == 0x0002:
                continue
            elem = target[key]
            if elem.VR == "SQ":
                for item in elem.value or []:
                    walk(item)
            elif tag in _IDENTIFYING:
                put(target, tag, _vr(tag, elem.VR))

    for tag in (_PATIENT_NAME, _PATIENT_ID):
        if tag not in ds:
            ds[tag] = DataElement(tag, dictionary_VR(tag), "")
    walk(ds)
    name = planted.values[_PATIENT_NAME][0]
    patient_id = planted.values[_PATIENT_ID][0]
    block = ds.private_block(_PRIVATE_GROUP, PLANT_CREATOR, create=True)
    block.add_new(0x01, "LO", f"{name} {patient_id}")
    block.add_new(0x02, "UN", f"\x01{patient_id}\x00".encode())
    planted.values[block.get_tag(0x01)] = [f"{name} {patient_id}"]
    planted.values[block.get_tag(0x02)] = [patient_id]
    return planted


def planted_copy(path: Path) -> Planted:
    """A planted copy of the file at ``path``, in memory."""
    return plant(dcmread(path))
