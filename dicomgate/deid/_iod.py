"""Compound action codes (Z/D, X/Z, X/D, X/Z/D, X/Z/U*): which alternative the IOD needs.

PS3.15 Table E.1-1a: the first alternative applies unless a later one is needed to keep the
instance conformant to its IOD (Type 3 → X, Type 2 → Z, Type 1 → D).  The type depends on the
IOD, which we do not ship in full, so the rule is:

* **Z/D** (Type 2 vs 1) — D when the received value is non-empty, Z when it is empty.  A Type 1
  attribute is never empty in a conformant instance, so a non-empty value may be Type 1 and gets
  a dummy; an empty one is at most Type 2 and stays empty.  No IOD knowledge needed.
* **X/Z, X/D, X/Z/D** — X: every attribute with these codes is Type 3 in the common composite
  modules (General Study/Series/Equipment/Image/Acquisition, SOP Common, PS3.3 C.7).  The few that
  a specific IOD requires are listed in :data:`REQUIRED` with the module that requires them and a
  test on the instance that tells whether it is such an IOD; those take Z (X/Z) or the Z/D rule
  above (X/D, X/Z/D).  The list was checked with ``dciodvfy`` on pydicom's test files
  (``tests/deid/test_dciodvfy.py``); an attribute missing from it costs conformance, never
  privacy.
* **X/Z/U\\*** (Referenced Image Sequence, Source Image Sequence) — U: the sequence is kept and
  the table is applied to its items, which replaces every UID in them (their own rows say U).
  Both are required (Type 1/2/1C) in several IODs (e.g. derived and enhanced images, PS3.3
  C.7.6.1.1.4, C.7.6.16) and the referenced instances are delivered alongside under the same
  pseudonyms, so keeping the references keeps the set internally consistent at no cost: their
  only identifying content, the UIDs, is replaced.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

__all__ = ["REQUIRED", "resolve"]


def _modality(ds: Dataset) -> str:
    return str(ds.get("Modality", "") or "").strip().upper()


def _enhanced(ds: Dataset) -> bool:
    # The multi-frame functional-group IODs (Enhanced CT/MR/XA/PET/..., PS3.3 A.38 ff.) carry the
    # Shared Functional Groups Sequence (Type 1 in C.7.6.16); they also use the Enhanced General
    # Equipment Module.
    return "SharedFunctionalGroupsSequence" in ds


#: Attributes with an X/... code that an IOD requires, and how to tell from the instance.
REQUIRED: dict[str, Callable[[Dataset], bool]] = {
    # Acquisition Context Module (C.7.6.14): Type 2; it is present only where the IOD uses it.
    "AcquisitionContextSequence": lambda ds: True,
    # Enhanced General Equipment Module (C.7.5.2): Device Serial Number Type 1.
    "DeviceSerialNumber": _enhanced,
    # Enhanced MR/CT/XA Image Modules (C.8.13.1, C.8.15.2, C.8.19.2): Acquisition DateTime 1C;
    # Waveform Identification Module (C.10.8): Type 1.
    "AcquisitionDateTime": lambda ds: _enhanced(ds) or "WaveformSequence" in ds,
    # SR Document Series (C.17.1) and Key Object Document Series (C.17.6.1): Type 2.
    "ReferencedPerformedProcedureStepSequence": lambda ds: _modality(ds) in ("SR", "KO"),
    # RT Series Module (C.8.8.1): Operators' Name Type 2.
    "OperatorsName": lambda ds: _modality(ds).startswith("RT"),
    # RT General Plan Module (C.8.8.9): RT Plan Date and Time Type 2.
    "RTPlanDate": lambda ds: _modality(ds) == "RTPLAN",
    "RTPlanTime": lambda ds: _modality(ds) == "RTPLAN",
    # RT Beams Module (C.8.8.14), Beam Sequence items: Treatment Machine Name Type 2.
    "TreatmentMachineName": lambda ds: _modality(ds) == "RTPLAN",
}


def _z_or_d(empty: bool) -> str:
    return "Z" if empty else "D"


def resolve(code: str, keyword: str, empty: bool, root: Dataset) -> str:
    """The single action (X, Z, D or U) a compound ``code`` takes for this attribute.

    ``root`` is the instance's top-level dataset (which tells the IOD).
    """
    if code == "Z/D":
        return _z_or_d(empty)
    if code == "X/Z/U*":
        return "U"
    required = keyword in REQUIRED and REQUIRED[keyword](root)
    if not required:
        return "X"
    if code == "X/Z":
        return "Z"
    return _z_or_d(empty)
