"""The de-identification engine: one walk over the dataset, applying the compiled profile.

PS3.15 E.1.1 in order: every attribute is looked up in the compiled Table E.1-1 (exact tag, then
the wildcard rows), attributes in no row follow :func:`no_row_code`, private attributes the
private row (and the safe-private list), site overrides win over all of them.  Sequences are
walked recursively at any depth.  Kept elements are reused as they are (Pixel Data is never
copied).  The result records what was done (:mod:`dicomgate.deid._method`) and carries a File
Meta Information that agrees with the new SOP Instance UID (PS3.10 7.1).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydicom._uid_dict import UID_dictionary  # PS3.6 Annex A registry (behind UID.name)
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomgate.deid import _iod
from dicomgate.deid._burned_in import burned_in_reason
from dicomgate.deid._method import record_method
from dicomgate.deid._patient import PatientPseudonyms, patient_key
from dicomgate.deid._profile import Profile
from dicomgate.deid._scrub import Scrubber, date_spellings
from dicomgate.deid._values import DUMMY_DATE, dummy_value, shift_date, shift_datetime
from dicomgate.pseudonym import Pseudonymizer

__all__ = ["DeidResult", "deidentify", "no_row_code"]

IMPLEMENTATION_VERSION_NAME = "DICOMGATE_0_1"

# VRs whose values are numbers, codes or bulk data: they cannot hold a name, an address or a
# sentence.  LO/SH/UC in no row are labels and coded values (Code Meaning, Manufacturer, Body
# Part...), kept because Table E.1-1 lists every standard attribute that may identify.
_KEPT_VRS = frozenset(
    {
        "AS", "AT", "CS", "DS", "FD", "FL", "IS", "SL", "SS", "SV", "UL", "US", "UV",
        "US or SS", "US or OW", "OB or OW", "OB", "OD", "OF", "OL", "OV", "OW",
        "LO", "SH", "UC",
    }
)  # fmt: skip
# VRs that name a person, a node or a place, or carry narrative: emptied or dummied.
_NARRATIVE_VRS = frozenset({"PN", "AE", "UR", "ST", "LT", "UT"})
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS"})
# UIDs that name a kind of thing, not an instance: coding schemes, context groups and mapping
# resources (PS3.3 8.8 Code Sequence Macro, C.12.1.1.5 Coding Scheme Identification).
_KIND_UIDS = frozenset(
    {"CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID"}
)
_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
# Raw elements of these VRs are decoded before deciding (unknown VR, items, UID values).
_NEEDS_VALUE = frozenset({None, "SQ", "UI", "UN"})
_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010


def no_row_code(tag: int, vr: str, value: Any, profile: Profile, clean: bool) -> str:
    """The action for a public attribute in no row of Table E.1-1 (one rule, documented here).

    * not in the data dictionary, or retired: X — no current IOD needs it;
    * sequences: K — the items are walked and every rule applies inside;
    * numbers, codes, bulk data and LO/SH/UC labels: K (see ``_KEPT_VRS``);
    * UIDs: K when well known (registered in PS3.6 Annex A) or when the attribute names a kind of
      thing (a SOP class, transfer syntax, coding scheme, context group), U otherwise — any
      other UID may identify an instance;
    * dates and date-times: as the date rows — dummy/empty, kept with Full Dates, shifted with
      Modified Dates; times: dummy/empty, kept with either longitudinal option;
    * names, AE titles, URLs and narrative text (PN, AE, UR, ST, LT, UT): Z/D (emptied or a
      dummy, so a Type 1/2 attribute stays present); inside a sequence being cleaned
      (Clean Structured Content / Clean Graphics) narrative text is cleaned (C) instead.
    """
    try:
        retired = get_entry(tag)[3]  # also finds repeating groups such as (60xx,0010)
    except KeyError:
        return "X"
    if retired:
        return "X"
    if vr == "SQ":
        return "K"
    if vr in _KEPT_VRS:
        return "K"
    if vr == "UI":
        keyword = get_entry(tag)[4]
        values = value if isinstance(value, list | tuple) else [value]
        if keyword.endswith(("ClassUID", "TransferSyntaxUID")) or keyword in _KIND_UIDS:
            return "K"
        if all(str(v) in UID_dictionary for v in values if v):
            return "K"
        return "U"
    if vr in ("DA", "DT"):
        return {"keep": "K", "shift": "C", "remove": "Z/D"}[profile.date_mode]
    if vr == "TM":
        return "Z/D" if profile.date_mode == "remove" else "K"
    if clean and vr in ("ST", "LT", "UT"):
        return "C"
    if vr in _NARRATIVE_VRS:
        return "Z/D"
    return "X"


@dataclass
class DeidResult:
    """What :func:`deidentify` produced: a new dataset, or a quarantine reason."""

    dataset: Dataset | None
    quarantine_reason: str | None = None
    actions: Counter[str] = field(default_factory=Counter)
    """How many attributes each action applied to (X, Z, D, U, K, C, R, and P for private)."""

    @property
    def ok(self) -> bool:
        return self.dataset is not None and self.quarantine_reason is None


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | bytes | list | tuple | Sequence):
        return len(value) == 0
    return False


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


class _Walker:
    """One de-identification of one dataset (holds the per-instance state)."""

    def __init__(self, profile: Profile, pz: Pseudonymizer, root: Dataset) -> None:
        self.profile = profile
        self.pz = pz
        self.root = root
        self.patient = PatientPseudonyms.derive(pz, patient_key(root))
        self.actions: Counter[str] = Counter()
        self._uids: dict[str, str] = {}
        self._scrubber: Scrubber | None = None

    # -- values ------------------------------------------------------------------------------
    def uid(self, value: str) -> str:
        value = str(value).strip().rstrip("\x00")
        if not value:
            return value
        new = self._uids.get(value)
        if new is None:
            new = self._uids[value] = self.pz.uid(value)
        return new

    @property
    def scrubber(self) -> Scrubber:
        if self._scrubber is None:
            self._scrubber = self._build_scrubber()
        return self._scrubber

    def _build_scrubber(self) -> Scrubber:
        """Identifying values of this instance: top-level attributes the profile removes."""
        whole: list[str] = []
        parts: list[str] = []
        for elem in self.root:
            tag = int(elem.tag)
            if tag >> 16 & 1 or elem.VR in ("SQ", "OB", "OW", "UN", "OF", "OD", "OL", "OV"):
                continue
            code = self.profile.rules.get(tag)
            if code is None and elem.VR not in ("PN", "DA", "DT", "UI", "AE"):
                continue
            if code in ("K", "C"):
                continue
            for v in _values(elem.value):
                text = str(v).strip()
                if not text:
                    continue
                whole.append(text)
                if elem.VR == "PN":
                    parts += [p for p in re.split(r"[\^=\s,]+", text) if p]
                elif elem.VR in ("DA", "DT") and re.match(r"^\d{8}", text):
                    whole += date_spellings(text[:8])
        return Scrubber(whole, parts)

    def shift(self, vr: str, value: Any) -> Any:
        days = self.patient.date_offset_days
        out = []
        for v in _values(value):
            text = str(v)
            if not text.strip():
                out.append(text)
                continue
            shifted = shift_date(text, days) if vr == "DA" else shift_datetime(text, days)
            out.append(shifted if shifted is not None else dummy_value(vr))
        return out[0] if len(out) == 1 else out

    # -- the walk ----------------------------------------------------------------------------
    def walk(self, src: Dataset, *, top: bool, clean: bool) -> Dataset:
        out = Dataset()
        creators: dict[tuple[int, int], DataElement] = {}
        kept_blocks: set[tuple[int, int]] = set()
        overrides = self.profile.overrides
        for src_tag in list(src.keys()):
            tag = int(src_tag)
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or group == 2:
                # Group lengths are retired (PS3.5 7.2) and recomputed by writers; File Meta
                # elements do not belong in the body and the File Meta is rebuilt anyway.
                continue
            raw = src.get_item(tag)
            if (
                isinstance(raw, RawDataElement)
                and raw.VR not in _NEEDS_VALUE
                and not group & 1
                and tag not in overrides
                and self._code(tag, raw.VR, None, clean) == "K"
            ):
                # Kept as read: no decoding here, and the writer copies the bytes (PS3.15
                # "K"); Pixel Data in particular is never decoded or copied.
                out[tag] = raw
                self.actions["K"] += 1
                continue
            elem = src[tag]
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators[(group, element)] = elem
                    continue
                new = self._private(elem, src, clean)
                if new is not None:
                    out[tag] = new
                    kept_blocks.add((group, element >> 8))
                continue
            new = self._public(elem, top=top, clean=clean)
            if new is not None:
                out[tag] = new
        for key in kept_blocks:
            if key in creators:
                out[creators[key].tag] = creators[key]
        return out

    def _private(self, elem: DataElement, src: Dataset, clean: bool) -> DataElement | None:
        """PS3.15 E.3.10: private attributes go unless Retain Safe Private keeps listed ones."""
        tag = int(elem.tag)
        override = self.profile.overrides.get(tag)
        if override is not None:
            return self._apply(override, elem, top=False, clean=clean)
        if self.profile.private_code == "C":
            group, element = tag >> 16, tag & 0xFFFF
            creator_tag = (group << 16) | (element >> 8)
            creator = src.get(creator_tag)
            if creator is not None:
                key = (str(creator.value).strip(), group, element & 0xFF)
                if key in self.profile.safe_private:
                    self.actions["K"] += 1
                    return elem
        self.actions["P"] += 1
        return None

    def _code(self, tag: int, vr: str, value: Any, clean: bool) -> str:
        code = self.profile.rules.get(tag)
        if code is not None:
            return code
        group = tag >> 16
        if group & 0xFF00 == 0x5000:  # (50xx,xxxx) curve data
            return self.profile.curve_code
        if group & 0xFF00 == 0x6000:  # overlay planes
            element = tag & 0xFFFF
            if element == 0x3000:
                return self.profile.overlay_data_code
            if element == 0x4000:
                return self.profile.overlay_comments_code
            # An Overlay Plane without its Overlay Data (Type 1, PS3.3 C.9.2) is not conformant:
            # the rest of the group goes with the data.
            if self.profile.overlay_data_code == "X":
                return "X"
        return no_row_code(tag, vr, value, self.profile, clean)

    def _public(self, elem: DataElement, *, top: bool, clean: bool) -> DataElement | None:
        override = self.profile.overrides.get(int(elem.tag))
        if override is not None:
            code = override
        else:
            code = self._code(int(elem.tag), elem.VR, elem.value, clean)
        return self._apply(code, elem, top=top, clean=clean)

    def _apply(self, code: str, elem: DataElement, *, top: bool, clean: bool) -> DataElement | None:
        if "/" in code:
            keyword = dictionary_keyword(int(elem.tag)) if dictionary_has_tag(elem.tag) else ""
            code = _iod.resolve(code, keyword, _is_empty(elem.value), self.root)
        self.actions[code] += 1
        tag, vr = int(elem.tag), elem.VR
        if code == "X":
            return None
        if vr == "SQ":
            if code == "Z":
                return DataElement(tag, "SQ", Sequence())
            items = [self.walk(item, top=False, clean=clean or code == "C") for item in elem.value]
            return DataElement(tag, "SQ", Sequence(items))
        if code == "K":
            return elem
        if code == "R":
            return DataElement(tag, vr, self.profile.replacements[tag])
        if tag in (_PATIENT_ID, _PATIENT_NAME) and code in ("Z", "D", "C"):
            # Z allows a dummy: the patient keeps a stable pseudonym (DESIGN promise 3).
            value = self.patient.patient_id if tag == _PATIENT_ID else self.patient.patient_name
            return DataElement(tag, vr, value)
        if code == "Z":
            return DataElement(tag, vr, None)
        if code == "U":
            return self._uid_element(elem)
        if code == "D":
            if vr == "UI":
                return self._uid_element(elem)
            return DataElement(tag, vr, dummy_value(vr.split(" or ")[0]))
        if code == "C":
            return self._clean(elem)
        raise ValueError(f"unknown action {code!r} for {elem.tag}")

    def _uid_element(self, elem: DataElement) -> DataElement:
        value = elem.value
        if isinstance(value, bytes):  # UN (implicit VR, unknown attribute): decode the UIDs
            value = value.decode("ascii", "replace").rstrip("\x00 ").split("\\")
        new = [self.uid(v) for v in _values(value)]
        if not new:
            return DataElement(elem.tag, "UI", None)
        return DataElement(elem.tag, "UI", new[0] if len(new) == 1 else new)

    def _clean(self, elem: DataElement) -> DataElement:
        tag, vr, value = int(elem.tag), elem.VR, elem.value
        if vr in ("DA", "DT"):
            mode = self.profile.date_mode
            if mode == "keep":
                return elem
            if mode == "shift":
                return DataElement(tag, vr, self.shift(vr, value))
            return DataElement(tag, vr, DUMMY_DATE if vr == "DA" else dummy_value(vr))
        if vr == "TM":  # dates shift by whole days: the time of day is kept
            return elem
        if vr == "AE":  # a stable stand-in keeps "same node" visible without naming it
            return DataElement(tag, vr, "AE" + self.pz.token("ae-title", str(value), 14))
        if vr in _TEXT_VRS and value is not None:
            cleaned = [self.scrubber(str(v)) for v in _values(value)]
            return DataElement(tag, vr, cleaned[0] if len(cleaned) == 1 else cleaned)
        if vr == "PN":
            return DataElement(tag, vr, dummy_value("PN"))
        if vr == "UI":
            return self._uid_element(elem)
        if vr == "UR":
            return DataElement(tag, vr, dummy_value("UR"))
        if vr in _BULK_VRS:
            if (tag >> 16) & 0xFF00 == 0x6000:
                # Overlay Data under Clean Graphics: kept, we cannot read text in a bitmap
                return elem
            # Binary values (timestamps, maker notes) have no readable form to clean: dummy.
            return DataElement(tag, vr, dummy_value(vr.split(" or ")[0]))
        return elem  # numbers


def _file_meta(src: Dataset, out: Dataset) -> FileMetaDataset:
    """File Meta Information for ``out`` (PS3.10 7.1): only what the output itself implies.

    Source Application Entity Title and private meta information are not carried over.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    old = getattr(src, "file_meta", None)
    ts = old.get("TransferSyntaxUID") if old is not None else None
    if ts is None:
        implicit = bool(src.original_encoding[0])
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def deidentify(ds: Dataset, profile: Profile, pseudonymizer: Pseudonymizer) -> DeidResult:
    """De-identify ``ds`` under ``profile`` (PS3.15 Annex E); ``ds`` is not modified.

    Returns a :class:`DeidResult` holding the new dataset, or a quarantine reason when the
    pixels may show burned-in text (:func:`dicomgate.deid._burned_in.burned_in_reason`).
    """
    reason = burned_in_reason(
        ds,
        allow=profile.allow_burned_in,
        suspect_modalities=profile.burned_in_suspect_modalities,
    )
    if reason is not None:
        return DeidResult(dataset=None, quarantine_reason=reason)
    walker = _Walker(profile, pseudonymizer, ds)
    out = walker.walk(ds, top=True, clean=False)
    record_method(out, profile)
    if "SOPClassUID" in out and "SOPInstanceUID" in out:
        out.file_meta = _file_meta(ds, out)
    return DeidResult(dataset=out, actions=walker.actions)
