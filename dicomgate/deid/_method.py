"""Record what was done (PS3.15 E.1.1 items 6-7, PS3.3 C.7.1.1 and C.12.1).

Patient Identity Removed (0012,0062) = YES, De-identification Method (0012,0063), De-identification
Method Code Sequence (0012,0064) with one code from CID 7050 for the profile and one for each
option, and Longitudinal Temporal Information Modified (0028,0303).  The codes come from pydicom's
copy of PS3.16 (``pydicom.sr.codedict``), not from hand-typed values.
"""

from __future__ import annotations

import functools

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from dicomgate.config import DeidOption
from dicomgate.deid._profile import Profile

__all__ = ["METHOD_TEXT", "option_codes", "record_clean_pixel_data", "record_method"]

METHOD_TEXT = "dicomgate: PS3.15 2026c Annex E Table E.1-1"

# CID 7050 keyword (pydicom's code dictionary) for the profile and each option.
_KEYWORDS: dict[DeidOption | None, str] = {
    None: "BasicApplicationConfidentialityProfile",
    DeidOption.CLEAN_GRAPHICS: "CleanGraphicsOption",
    DeidOption.CLEAN_STRUCTURED_CONTENT: "CleanStructuredContentOption",
    DeidOption.CLEAN_DESCRIPTORS: "CleanDescriptorsOption",
    DeidOption.RETAIN_LONGITUDINAL_FULL_DATES: (
        "RetainLongitudinalTemporalInformationFullDatesOption"
    ),
    DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "RetainLongitudinalTemporalInformationModifiedDatesOption"
    ),
    DeidOption.RETAIN_PATIENT_CHARACTERISTICS: "RetainPatientCharacteristicsOption",
    DeidOption.RETAIN_DEVICE_IDENTITY: "RetainDeviceIdentityOption",
    DeidOption.RETAIN_UIDS: "RetainUidsOption",
    DeidOption.RETAIN_SAFE_PRIVATE: "RetainSafePrivateOption",
    DeidOption.RETAIN_INSTITUTION_IDENTITY: "RetainInstitutionIdentityOption",
}


def option_codes(profile: Profile) -> list[tuple[str, str, str]]:
    """``(code value, scheme, meaning)`` for the profile and each enabled option, by code."""
    return list(_option_codes(profile.options))


@functools.cache
def _option_codes(options: frozenset[DeidOption]) -> tuple[tuple[str, str, str], ...]:
    out = []
    for option, keyword in _KEYWORDS.items():
        if option is None or option in options:
            code = getattr(codes.DCM, keyword)
            out.append((str(code.value), str(code.scheme_designator), str(code.meaning)))
    return tuple(sorted(out))


_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEIDENTIFICATION_METHOD = 0x00120063
_LONGITUDINAL_MODIFIED = 0x00280303
_CODE_VALUE, _CODING_SCHEME_DESIGNATOR, _CODE_MEANING = 0x00080100, 0x00080102, 0x00080104


def _put(ds: Dataset, tag: int, value: str) -> None:
    """``ds.<keyword> = value`` without the keyword lookups, always as a new element: a kept
    element is shared with the source dataset, which must not change."""
    ds[tag] = DataElement(tag, dictionary_VR(tag), value)


def record_method(ds: Dataset, profile: Profile) -> None:
    """Add the de-identification record to the top level of ``ds``."""
    _put(ds, _PATIENT_IDENTITY_REMOVED, "YES")
    _put(ds, _DEIDENTIFICATION_METHOD, METHOD_TEXT)
    items = []
    for value, scheme, meaning in _option_codes(profile.options):
        item = Dataset()
        _put(item, _CODE_VALUE, value)
        _put(item, _CODING_SCHEME_DESIGNATOR, scheme)
        _put(item, _CODE_MEANING, meaning)
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    _put(
        ds,
        _LONGITUDINAL_MODIFIED,
        {"keep": "UNMODIFIED", "shift": "MODIFIED", "remove": "REMOVED"}[profile.date_mode],
    )


def record_clean_pixel_data(ds: Dataset) -> None:
    """Add CID 7050 113101 Clean Pixel Data Option to the record already in ``ds``.

    Called only once the pixels of ``ds`` were examined for burned-in text and every region
    found was blacked out (PS3.15 E.3.1): the code says that this was done, so it must not be
    there otherwise.  Items stay sorted by code value, as :func:`record_method` writes them.
    """
    code = codes.DCM.CleanPixelDataOption
    value = str(code.value)
    seq = ds.get("DeidentificationMethodCodeSequence")
    items = list(seq) if seq is not None else []
    if any(str(item.get("CodeValue", "")) == value for item in items):
        return
    item = Dataset()
    _put(item, _CODE_VALUE, value)
    _put(item, _CODING_SCHEME_DESIGNATOR, str(code.scheme_designator))
    _put(item, _CODE_MEANING, str(code.meaning))
    items.append(item)
    items.sort(key=lambda i: str(i.get("CodeValue", "")))
    ds.DeidentificationMethodCodeSequence = Sequence(items)
