"""The de-identification engine: one walk over the dataset, applying the compiled profile.

PS3.15 E.1.1 in order: every attribute is looked up in the compiled Table E.1-1 (exact tag, then
the wildcard rows), attributes in no row follow :func:`no_row_code`, private attributes the
private row (and the safe-private list), site overrides win over all of them.  Sequences are
walked recursively at any depth.  Kept elements are reused as they are (Pixel Data is never
copied).  The result records what was done (:mod:`dicomgate.deid._method`) and carries a File
Meta Information that agrees with the new SOP Instance UID (PS3.10 7.1).
"""

from __future__ import annotations

import functools
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom import config
from pydicom._uid_dict import UID_dictionary  # PS3.6 Annex A registry (behind UID.name)
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomgate.deid import _iod
from dicomgate.deid._burned_in import CleanReport, clean_burned_in
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
# Codes whose single action depends on what the IOD requires where the attribute stands.
_IOD_DEPENDENT = frozenset({"X", "Z", "X/Z", "X/D", "X/Z/D"})


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


# -- raw elements written as read ------------------------------------------------------------
# A kept element is left undecoded in the output only when pydicom's writer would write exactly
# the bytes read if it decoded and re-encoded it (checked per value below); anything else is
# decoded, as before.  The output then says it is encoded as the input was
# (``set_original_encoding``), so the writer copies those bytes instead of decoding them.
_INT_WIDTH = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "UV": 8, "SV": 8, "AT": 4}
_FLOAT_FORMAT = {"FL": "f", "FD": "d"}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# Default-repertoire strings: decoded as (value.rstrip(" \0")).split("\\") and written joined
# and padded with one space to even length.
_PLAIN_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM"})
_TEXT_MAX_LENGTH: dict[str, int | None] = {"LO": 64, "SH": 16, "UC": None}
_PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*\Z")
_DS_VALUE = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_IS_VALUE = re.compile(rb"[+-]?\d{1,10}\Z")


def _writes_as_read(raw: RawDataElement, little_endian: bool) -> bool:
    """True when decoding ``raw`` and writing it again gives back exactly its bytes."""
    value = raw.value
    if not isinstance(value, bytes) or raw.length == 0xFFFFFFFF:
        return False
    vr = raw.VR or ""
    if vr in _BINARY_VRS:
        return not len(value) % 2
    width = _INT_WIDTH.get(vr)
    if width is not None:
        return not len(value) % width
    fmt = _FLOAT_FORMAT.get(vr)
    if fmt is not None:  # a signalling NaN would come back quiet: compare
        if len(value) % struct.calcsize(fmt):
            return False
        fmt = ("<" if little_endian else ">") + str(len(value) // struct.calcsize(fmt)) + fmt
        return struct.pack(fmt, *struct.unpack(fmt, value)) == value
    if vr in _PLAIN_STRING_VRS:
        if config.datetime_conversion and vr in ("DA", "DT", "TM"):
            return False
        stripped = value.rstrip(b" \x00")
        return value == (stripped + b" " if len(stripped) % 2 else stripped)
    if vr in _TEXT_MAX_LENGTH:
        # Decoded with the character set, each value's trailing padding stripped; written
        # joined, padded to even length.  Printable ASCII reads the same in every character
        # set DICOM allows, and within the length limit no validation mode objects to it.
        if not _PRINTABLE_ASCII.match(value):
            return False
        values = value.split(b"\\")
        written = b"\\".join(v.rstrip(b" ") for v in values)
        if value != (written + b" " if len(written) % 2 else written):
            return False
        limit = _TEXT_MAX_LENGTH[vr]
        return limit is None or all(len(v) <= limit for v in values)
    if vr in ("DS", "IS"):
        if config.use_DS_numpy or config.use_IS_numpy or config.use_DS_decimal:
            return False
        stripped = value.rstrip(b" ")
        if value != (stripped + b" " if len(stripped) % 2 else stripped):
            return False
        if vr == "DS":  # valid as the standard says, so no validation mode rejects it
            return all(len(v) <= 16 and _DS_VALUE.match(v) for v in stripped.split(b"\\"))
        return all(_IS_VALUE.match(v) and -(2**31) <= int(v) < 2**31 for v in stripped.split(b"\\"))
    return False


@functools.cache
def _keyword(tag: int) -> str:
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else ""


# Per compiled profile: (tag, VR, clean) -> value-free action of a raw element (see
# _Walker._value_free_code).  Keyed by id(); the profile is kept alive beside its cache.
_RAW_CODES: dict[int, tuple[Profile, dict[tuple[int, str, bool], str]]] = {}


def _raw_codes_for(profile: Profile) -> dict[tuple[int, str, bool], str]:
    entry = _RAW_CODES.get(id(profile))
    if entry is None or entry[0] is not profile:
        if len(_RAW_CODES) > 64:
            _RAW_CODES.clear()
        entry = _RAW_CODES[id(profile)] = (profile, {})
    return entry[1]


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
        self._raw_codes = _raw_codes_for(profile)
        # What the instance's IOD requires at the top level (PS3.15 E.1.1: IOD integrity).
        self._top_required = _iod.requirements(str(root.get("SOPClassUID", "") or ""))

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
    def walk(self, src: Dataset, *, top: bool, clean: bool, parent: str = "") -> Dataset:
        """De-identify one dataset: the instance (``top``) or an item of the sequence whose
        keyword is ``parent``."""
        out = Dataset()
        out_dict = out._dict
        creators: dict[tuple[int, int], DataElement] = {}
        kept_blocks: set[tuple[int, int]] = set()
        overrides = self.profile.overrides
        raw_codes = self._raw_codes
        actions = self.actions
        # Raw elements are kept undecoded only in a dataset read with explicit VR (the VR read
        # is the VR written) and holding no element whose VR is still ambiguous.
        implicit, little = src.original_encoding
        raw_ok = implicit is False and little is not None
        # ``_dict`` in the dataset's order, as ``keys()`` gives it; the keys are the same
        # BaseTag objects ``Dataset.__setitem__`` would store.
        for src_tag, raw in list(src._dict.items()):
            tag = int(src_tag)
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or group == 2:
                # Group lengths are retired (PS3.5 7.2) and recomputed by writers; File Meta
                # elements do not belong in the body and the File Meta is rebuilt anyway.
                continue
            if (
                isinstance(raw, RawDataElement)
                and raw.VR not in _NEEDS_VALUE
                and not group & 1
                and tag not in overrides
            ):
                # The action depends on (tag, VR, clean) only here (no UI, no override), so it
                # is decided once per profile and the value is not decoded to decide it.
                vr = cast(str, raw.VR)  # not None: None is in _NEEDS_VALUE
                code = raw_codes.get((tag, vr, clean))
                if code is None:
                    code = raw_codes[(tag, vr, clean)] = self._value_free_code(tag, vr, clean)
                if code == "?":  # depends on the IOD: known from where it stands, no value
                    code = self._not_required_code(tag, parent)
                if code == "K":
                    # Kept as read: no decoding here, and the writer copies the bytes (PS3.15
                    # "K"); Pixel Data in particular is never decoded or copied.  A public,
                    # non-sequence raw element: what ``out[tag] = raw`` stores.
                    if raw_ok and not _writes_as_read(raw, bool(little)):
                        raw_ok = False  # the writer must decode this dataset, as it did
                    out_dict[src_tag] = raw
                    actions["K"] += 1
                    continue
                if code == "X":
                    actions["X"] += 1  # removed: its value is never needed
                    continue
                if code == "Z" or code == "D":  # emptied or dummied: nor is it here
                    out[tag] = self._replaced(code, tag, vr)
                    continue
            elem = src[tag] if isinstance(raw, RawDataElement) else raw  # decoded once
            if group & 1:
                if 0x10 <= element <= 0xFF:
                    creators[(group, element)] = elem
                    continue
                new = self._private(elem, src, clean)
                if new is not None:
                    out[tag] = new
                    kept_blocks.add((group, element >> 8))
                continue
            new = self._public(elem, top=top, clean=clean, parent=parent)
            if new is not None:
                out[tag] = new
        for key in kept_blocks:
            if key in creators:
                out[creators[key].tag] = creators[key]
        if raw_ok and not any(" or " in (e.VR or " or ") for e in out_dict.values()):
            # Every raw element left in ``out`` is written back byte for byte (see
            # _writes_as_read), so the writer may copy them instead of decoding them; it still
            # decodes everything when the transfer syntax or character set differ.
            out.set_original_encoding(implicit, little, src.original_character_set)
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

    def _value_free_code(self, tag: int, vr: str, clean: bool) -> str:
        """The action for a public, non-overridden, non-UI element, resolved as far as it
        can be without the value: K, X, Z, D, "?" (depends on the IOD, not on the value) or ""
        (decide on the decoded element)."""
        code = self._code(tag, vr, None, clean)
        if code in ("K", "D") or (code in ("X", "Z") and tag not in self.profile.rules):
            return code  # (no UI here: D would need the UIDs)
        if code in _IOD_DEPENDENT:
            if _keyword(tag) in _iod.MAYBE_REQUIRED and tag in self.profile.rules:
                return "?"  # required by some IOD somewhere: see _not_required_code
            return _iod.resolve(code, None, False)  # X (Z for Z), empty or not
        return ""

    def _not_required_code(self, tag: int, parent: str) -> str:
        """For a "?" element: X (Z for Z) when this instance's IOD does not require it where
        it stands; "" (decide on the decoded element, :meth:`_public`) when it may."""
        keyword = _keyword(tag)
        if parent:
            if (parent, keyword) in _iod.NESTED:
                return ""
        elif keyword in self._top_required:
            return ""
        return _iod.resolve(self.profile.rules[tag], None, False)

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

    def _public(
        self, elem: DataElement, *, top: bool, clean: bool, parent: str = ""
    ) -> DataElement | None:
        tag = int(elem.tag)
        override = self.profile.overrides.get(tag)
        if override is not None:  # the site's explicit choice (K, X, R): as configured
            return self._apply(override, elem, top=top, clean=clean)
        code = self._code(tag, elem.VR, elem.value, clean)
        if "/" in code or (code in _IOD_DEPENDENT and tag in self.profile.rules):
            keyword = _keyword(tag)
            if parent:
                required = _iod.NESTED.get((parent, keyword))
            elif keyword in self._top_required:
                required = _iod.required_at_top(keyword, self.root)
            else:
                required = None
            resolved = _iod.resolve(code, required, _is_empty(elem.value))
            if resolved == "D" and elem.VR == "SQ" and code.startswith("X"):
                # A sequence the table removes but the IOD requires (Type 1): its items keep
                # their structure, every text value a dummy; nothing of the original survives.
                self.actions["D"] += 1
                return DataElement(tag, "SQ", self._dummy_sequence(elem, keyword))
            code = resolved
        return self._apply(code, elem, top=top, clean=clean)

    def _dummy_sequence(self, elem: DataElement, keyword: str) -> Sequence:
        """``elem``'s items walked under the profile (removals done, UIDs replaced), then every
        text, name, date and time value left in them replaced by a dummy: the table wanted the
        whole sequence gone, so not even a label it would keep elsewhere (a Code Meaning
        naming an institution) may survive.  Codes (CS) and numbers stay: they keep the items
        valid and cannot carry identity (PS3.15 E.1.1)."""
        items = [self.walk(item, top=False, clean=False, parent=keyword) for item in elem.value]
        for item in items:
            _dummy_text(item)
        return Sequence(items)

    def _apply(self, code: str, elem: DataElement, *, top: bool, clean: bool) -> DataElement | None:
        self.actions[code] += 1
        tag, vr = int(elem.tag), elem.VR
        if code == "X":
            return None
        if vr == "SQ":
            if code == "Z":
                return DataElement(tag, "SQ", Sequence())
            keyword = _keyword(tag)
            items = [
                self.walk(item, top=False, clean=clean or code == "C", parent=keyword)
                for item in elem.value
            ]
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

    def _replaced(self, code: str, tag: int, vr: str) -> DataElement:
        """What :meth:`_apply` gives for Z or D on a public non-UI, non-SQ element, from
        its tag and VR alone."""
        self.actions[code] += 1
        if tag in (_PATIENT_ID, _PATIENT_NAME):
            value = self.patient.patient_id if tag == _PATIENT_ID else self.patient.patient_name
            return DataElement(tag, vr, value)
        if code == "Z":
            return DataElement(tag, vr, None)
        return DataElement(tag, vr, dummy_value(vr.split(" or ")[0]))

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


_DUMMY_TEXT_VRS = frozenset(
    {"AE", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)


def _dummy_text(ds: Dataset) -> None:
    """Replace every non-empty text value in ``ds`` (at any depth) with its VR's dummy."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _dummy_text(item)
        elif elem.VR in _DUMMY_TEXT_VRS and not _is_empty(elem.value):
            ds[elem.tag] = DataElement(elem.tag, elem.VR, dummy_value(elem.VR))


def _file_meta(src: Dataset, out: Dataset) -> FileMetaDataset:
    """File Meta Information for ``out`` (PS3.10 7.1): only what the output itself implies.

    Source Application Entity Title and private meta information are not carried over.
    """
    old = getattr(src, "file_meta", None)
    ts = old.get("TransferSyntaxUID") if old is not None else None
    if ts is None:
        implicit = bool(src.original_encoding[0])
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta = FileMetaDataset()
    # What ``meta.<keyword> = value`` does on a new dataset, without the keyword lookups.
    for tag, value in (
        (0x00020002, out.SOPClassUID),  # Media Storage SOP Class UID
        (0x00020003, out.SOPInstanceUID),  # Media Storage SOP Instance UID
        (0x00020010, ts),  # Transfer Syntax UID
        (0x00020012, PYDICOM_IMPLEMENTATION_UID),  # Implementation Class UID
        (0x00020013, IMPLEMENTATION_VERSION_NAME),  # Implementation Version Name
    ):
        meta[tag] = DataElement(tag, dictionary_VR(tag), value)
    return meta


def _ts_encoding(ds: Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) the writer will use for ``ds``: its Transfer Syntax's."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return (bool(ts.is_implicit_VR), bool(ts.is_little_endian)) if ts is not None else None
    except (AttributeError, ValueError):  # not a transfer syntax pydicom knows
        return None


def deidentify(
    ds: Dataset,
    profile: Profile,
    pseudonymizer: Pseudonymizer,
    *,
    report: CleanReport | None = None,
) -> DeidResult:
    """De-identify ``ds`` under ``profile`` (PS3.15 Annex E); ``ds`` is not modified.

    Returns a :class:`DeidResult` holding the new dataset, or a quarantine reason when the
    pixels may show burned-in text that could not be found and masked, or the site chose
    ``burned_in_policy = quarantine`` (:func:`dicomgate.deid._burned_in.clean_burned_in`,
    which fills ``report`` with what the pixel cleaning did and cost).
    """
    walker = _Walker(profile, pseudonymizer, ds)
    out = walker.walk(ds, top=True, clean=False)
    record_method(out, profile)
    if "SOPClassUID" in out and "SOPInstanceUID" in out:
        out.file_meta = _file_meta(ds, out)
    # pixels last: cleaning re-encodes them and updates the File Meta's transfer syntax
    reason = clean_burned_in(
        ds,
        out,
        policy=profile.burned_in_policy,
        regions=profile.burned_in_regions,
        suspect_modalities=profile.burned_in_suspect_modalities,
        report=report,
    )
    if reason is not None:
        return DeidResult(dataset=None, quarantine_reason=reason)
    if out.original_encoding != _ts_encoding(out):
        # Written in another encoding than read: the writer decodes and re-encodes every
        # element, as for any new dataset.
        out.set_original_encoding(None, None)
    return DeidResult(dataset=out, actions=walker.actions)
