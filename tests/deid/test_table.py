"""Generated from PS3.15 Table E.1-1: every row with a dictionary entry, Basic and each option.

The expected action comes from the CSV cells (the option's cell when it has one, else the Basic
code); the compound codes follow the documented rule in ``dicomgate.deid._iod``.  Each row is
checked at the top level and inside a sequence that has no row of its own.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.valuerep import validate_value

from dicomgate.config import DeidOption
from dicomgate.deid import PatientPseudonyms, deidentify, patient_key
from dicomgate.deid._iod import REQUIRED
from tests.deid.helpers import (
    OPTION_COLUMN,
    identifying_value,
    profile,
    pseudonymizer,
    row_tag,
    table_rows,
)

CONTAINER = "DerivationCodeSequence"  # a sequence with no row: its items are walked as-is
RAISE = 2  # pydicom.config.RAISE

ROWS = [r for r in table_rows() if row_tag(r) is not None and dictionary_has_tag(row_tag(r))]
PROFILES = [None, *DeidOption]


def test_rows_cover_the_table() -> None:
    """Almost every single-tag row has a dictionary entry, so the generated test is meaningful."""
    singles = [r for r in table_rows() if row_tag(r) is not None]
    assert len(singles) == 652
    assert len(ROWS) >= 600
    assert CONTAINER not in {r["keyword"] for r in table_rows()}


def expected_code(row: dict[str, str], option: DeidOption | None, root: Dataset) -> str:
    """The single action the engine must take for this row (compound codes resolved)."""
    code = row["basic"]
    if option is not None and row[OPTION_COLUMN[option]]:
        code = row[OPTION_COLUMN[option]]
    if code == "Z/D":
        return "D"  # the planted value is non-empty
    if code == "X/Z/U*":
        return "U"
    if code in ("X/Z", "X/D", "X/Z/D"):
        required = row["keyword"] in REQUIRED and REQUIRED[row["keyword"]](root)
        if not required:
            return "X"
        return "Z" if code == "X/Z" else "D"
    return code


def build(tag: int, nested: bool) -> tuple[Dataset, Any]:
    vr = dictionary_VR(tag)
    value = identifying_value(vr, tag)
    ds = Dataset()
    ds.PatientID = "MRN-TEST-1"
    ds.PatientName = "DOE^JANE"
    if tag >> 16 == 2:  # File Meta: it describes the instance it travels with
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = value
        ds.file_meta = FileMetaDataset()
        ds.file_meta.add(DataElement(tag, vr, value))
        return ds, value
    target = ds
    if nested:
        item = Dataset()
        ds.add_new(keyword_for_tag_or(CONTAINER), "SQ", Sequence([item]))
        target = item
    target.add(DataElement(tag, vr.split(" or ")[0], value))
    return ds, value


def keyword_for_tag_or(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return int(tag)


def check(row: dict[str, str], option: DeidOption | None, nested: bool) -> str | None:
    """None when the outcome matches the row's action, else a description of the mismatch."""
    tag = row_tag(row)
    assert tag is not None
    prof = profile([] if option is None else [option])
    pz = pseudonymizer()
    ds, original = build(tag, nested)
    result = deidentify(ds, prof, pz)
    assert result.dataset is not None
    out = result.dataset
    if tag >> 16 == 2:
        out = out.file_meta
    if nested:
        seq = out.get(keyword_for_tag_or(CONTAINER))
        if seq is None or len(seq.value) != 1:
            return "container sequence lost"
        out = seq.value[0]
    code = expected_code(row, option, ds)
    elem = out.get(tag)
    vr = dictionary_VR(tag).split(" or ")[0]
    pseudo = PatientPseudonyms.derive(pz, patient_key(ds))
    if code == "X":
        return None if elem is None else f"X: still present ({elem.value!r})"
    if elem is None:
        return f"{code}: removed"
    value = elem.value
    if isinstance(value, str) and value:
        try:
            validate_value(elem.VR, value, RAISE)
        except ValueError as exc:
            return f"{code}: invalid value for {elem.VR}: {exc}"
    if vr == "SQ":
        if code == "Z":
            return None if len(value) == 0 else "Z: sequence not emptied"
        if len(value) != 1 or value[0].get("CodeValue") != "X1":
            return f"{code}: sequence items not walked/kept"
        return None
    if tag in (0x00100010, 0x00100020) and code in ("Z", "D"):
        want = pseudo.patient_name if tag == 0x00100010 else pseudo.patient_id
        return None if str(value) == want else f"{code}: not the patient pseudonym"
    if code == "Z":
        return None if value in (None, "", b"") else f"Z: not empty ({value!r})"
    if code == "K":
        return None if value == original else f"K: changed to {value!r}"
    if code == "U":
        return None if value == pz.uid(original) else f"U: {value!r} is not the UID pseudonym"
    if code == "D":
        if value in (None, "", b""):
            return "D: empty"
        if value == original:
            return "D: unchanged"
        if vr == "UI" and not str(value).startswith("2.25."):
            return "D: UID not replaced by a pseudonym"
        return None
    if code == "C":
        return check_clean(vr, value, original, pseudo)
    return f"unexpected code {code}"


def check_clean(vr: str, value: Any, original: Any, pseudo: PatientPseudonyms) -> str | None:
    if vr in ("DA", "DT"):
        day = dt.date(1971, 3, 4) + dt.timedelta(days=pseudo.date_offset_days)
        want = day.strftime("%Y%m%d") + str(original)[8:]
        return None if value == want else f"C: date {value!r}, want {want!r}"
    if vr == "TM":
        return None if value == original else "C: time changed (dates shift by whole days)"
    if vr in ("LO", "LT", "ST", "UT", "UC", "SH", "CS"):
        text = str(value)
        if "DOE" in text.upper():
            return f"C: patient name left in {text!r}"
        if str(original).replace("DOE", "").strip() and text == "":
            return "C: cleaned to nothing although non-identifying text remained"
        return None
    return None if value != original else "C: unchanged"


@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested"])
@pytest.mark.parametrize("option", PROFILES, ids=lambda o: "basic" if o is None else str(o))
def test_every_row(option: DeidOption | None, nested: bool) -> None:
    """Each row's outcome matches its action code under this profile (all mismatches listed)."""
    failures = []
    for row in ROWS:
        if nested and row["tag"].startswith("(0002,"):
            continue  # File Meta elements exist only at the top of a file
        problem = check(row, option, nested)
        if problem is not None:
            failures.append(f"{row['tag']} {row['keyword']} [{row['basic']}]: {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("option", PROFILES, ids=lambda o: "basic" if o is None else str(o))
def test_output_is_writable(option: DeidOption | None) -> None:
    """All rows together de-identify into a dataset pydicom can encode (valid VRs, lengths)."""
    ds = Dataset()
    for row in ROWS:
        tag = row_tag(row)
        assert tag is not None
        if tag >> 16 in (0, 2):
            continue  # command and File Meta groups are not part of a stored dataset
        vr = dictionary_VR(tag)
        ds.add(DataElement(tag, vr.split(" or ")[0], identifying_value(vr, tag)))
    ds.PatientName = "DOE^JANE"
    result = deidentify(ds, profile([] if option is None else [option]), pseudonymizer())
    assert result.dataset is not None
    buf = io.BytesIO()
    result.dataset.save_as(buf, implicit_vr=False, little_endian=True)
    assert buf.tell() > 0
