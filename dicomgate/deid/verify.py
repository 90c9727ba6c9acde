"""The PHI verifier: no identifying value of the original survives anywhere in the output.

Deliberately independent of the engine (:mod:`dicomgate.deid._engine`): it reads Table E.1-1
itself, decides by its own rules which original values are identifying, and searches the whole
output for them — every element at every depth, every VR, private elements, the bytes of OB/UN
values and the File Meta Information — whole, or inside a longer string.  A bug in the engine
therefore shows up here instead of being repeated here.

Identifying values (PS3.15 E.1.1; "needles"), taken from the original at any depth:

* names (PN): the whole name, and each component of 3+ letters as a word;
* dates and date-times (DA, DT) unless Full Dates is retained: the date in the usual spellings
  (a shifted or removed date must not leave its original behind);
* UIDs unless Retain UIDs: every UID that is not a well-known one (SOP classes, transfer
  syntaxes..., or a ``...ClassUID`` attribute);
* text of every attribute whose Table E.1-1 action under the options removes or replaces it:
  IDs, addresses, telephone numbers, comments, institution and device identifiers (4+
  characters; descriptors — rows Clean Descriptors could keep — 16+ characters, since short
  descriptors such as "CHEST" are words, not identifiers).

Besides the search, each top-level attribute whose action removes or replaces it must not keep
its original value in place, however short (Patient's Sex "F" cannot be searched for).

What this node writes by construction is not searched: a value that is the same whatever the
input cannot carry the input's PHI.  Those are the dummies, the File Meta's implementation
identifiers (PS3.10 7.1) and the de-identification record (PS3.15 E.1.1, CID 7050); and the
pseudonym forms (``ANONYMOUS^<token>``, ``PAT-<token>``, ``AE<token>``), whose hex token can
contain a short original value by chance only — though a pseudonym form that *equals* an
original value (an earlier pseudonym copied through) is still found.  The verifier keeps its own
copy of these forms; tests/deid checks the engine's output against it.

Findings name where a value came from and where it was found, never the value (they are logged).
Pixel data and overlay bitmaps are not searched for text: text there is pixels, not characters,
and is the burned-in annotation rule's business.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from pydicom import config
from pydicom._uid_dict import UID_dictionary  # PS3.6 Annex A registry (behind UID.name)
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from dicomgate.config import DeidOption
from dicomgate.deid._profile import Profile

__all__ = ["Finding", "verify_no_phi"]

_MIN_WHOLE = 4
_MIN_PART = 3
_MIN_DESCRIPTOR = 16
# Placeholders that de-identifiers (this one included) put in place of values: not identifying,
# and found in already de-identified input.
_PLACEHOLDERS = frozenset(
    {"anonymous", "anonymized", "anonymised", "deidentified", "de-identified", "removed", "none",
     "unknown", "redacted"}
)  # fmt: skip
# UIDs of kinds of things (coding schemes, context groups), not of instances or people.
_KIND_UIDS = frozenset(
    {"CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID"}
)
# Raw elements of these VRs are searched as the bytes read (numbers and bulk data).
_RAW_OK = frozenset(
    {"FD", "FL", "SL", "SS", "SV", "UL", "US", "UV", "AT", "OB", "OD", "OF", "OL", "OV", "OW"}
)  # fmt: skip
# VRs that yield needles whatever the row says (names, dates, UIDs).
_ALWAYS_NEEDLE_VRS = frozenset({"PN", "DA", "DT", "UI"})
_BULK_PIXELS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
_TEXT_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "DA", "DT", "TM"}
_BYTES_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}

# What the node writes whatever the input (own copies, not the engine's constants; tests/deid
# compares them with the engine's output).  Dummies (PS3.15 Table E.1-1a "D") of the text VRs:
_DUMMIES = frozenset(
    {"DEIDENTIFIED", "19000101", "19000101000000", "000000", "000D", "urn:x-deidentified"}
)
# Pseudonyms of patient identity and AE titles: a fixed prefix and an upper-case hex token.
_PSEUDONYM_FORM = re.compile(r"(?:ANONYMOUS\^|PAT-)[0-9A-F]{16}|AE[0-9A-F]{14}")
_PSEUDONYM_PREFIXES = ("ANONYMOUS^", "PAT-", "AE")
# Implementation identifiers (File Meta, PS3.10 7.1) and the de-identification record (PS3.15
# E.1.1 items 6-7): (where, tag) -> "is this the node's value?".  Where: "file_meta", "" (the
# top level) or _METHOD_CODES (an item of De-identification Method Code Sequence).
_METHOD_CODES = "DeidentificationMethodCodeSequence["
_CID_7050 = [getattr(codes.cid7050, keyword) for keyword in codes.cid7050.dir()]
_CID_7050_VALUES = frozenset(
    str(v) for code in _CID_7050 for v in (code.value, code.scheme_designator, code.meaning)
)
_OWN_AT: dict[tuple[str, int], Callable[[str], object]] = {
    ("file_meta", 0x00020012): PYDICOM_IMPLEMENTATION_UID.__eq__,  # Implementation Class UID
    ("file_meta", 0x00020013): re.compile(r"DICOMGATE(?:_[0-9]+)+").fullmatch,  # ...Version Name
    ("", 0x00120063): re.compile(  # De-identification Method
        r"dicomgate: PS3\.15 [0-9]{4}[a-z] Annex E Table E\.1-1"
    ).fullmatch,
    ("", 0x00280303): frozenset({"MODIFIED", "UNMODIFIED", "REMOVED"}).__contains__,
    (_METHOD_CODES, 0x00080100): _CID_7050_VALUES.__contains__,  # Code Value
    (_METHOD_CODES, 0x00080102): _CID_7050_VALUES.__contains__,  # Coding Scheme Designator
    (_METHOD_CODES, 0x00080104): _CID_7050_VALUES.__contains__,  # Code Meaning
}
_OWN_TAGS = frozenset(tag for _, tag in _OWN_AT)


def _own(path: _Path, value: str) -> bool:
    """True when ``value`` at ``path`` is an implementation identifier or part of the
    de-identification record, in the form the node writes whatever the input."""
    if path.tag not in _OWN_TAGS:
        return False
    where = _METHOD_CODES if path.parent.startswith(_METHOD_CODES) else path.parent
    check = _OWN_AT.get((where, path.tag))
    return bool(check is not None and check(value))


# The verifier's own copy of the option -> CSV column map (and its own date spellings below),
# deliberately not imported from the engine (``_table.OPTION_COLUMNS``, ``_scrub.date_spellings``):
# a mistake there must not be repeated here.  tests/deid checks both copies against the tests' own.
_OPTION_COLUMN = {
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


@dataclass(frozen=True, slots=True)
class Finding:
    """An identifying value of the original found in the output (the value itself is omitted)."""

    kind: str
    """name, date, uid, id, address, phone, text, institution, device, descriptor, unchanged."""
    source: str
    """Where the value was in the original (keyword path)."""
    location: str
    """Where it was found in the output (keyword path; ``file_meta`` for File Meta)."""

    def __str__(self) -> str:
        return f"{self.kind} from {self.source} found in {self.location}"


@functools.cache
def _rows() -> dict[int, dict[str, str]]:
    """Table E.1-1 rows by tag, read independently of the engine's table code."""
    text = (
        resources.files("dicomgate.deid")
        .joinpath("data/ps3.15-table-e1-1.csv")
        .read_text(encoding="utf-8")
    )
    rows: dict[int, dict[str, str]] = {}
    for rec in csv.DictReader(io.StringIO(text)):
        m = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", rec["tag"])
        if m:
            rows[int(m[1] + m[2], 16)] = rec
    return rows


_SURVIVE_CACHE: dict[int, tuple[Profile, dict[int, bool]]] = {}


def _may_survive(tag: int, profile: Profile) -> bool:
    """True when the profile lets this attribute's value (or a cleaned form of it) remain."""
    entry = _SURVIVE_CACHE.get(id(profile))
    if entry is None or entry[0] is not profile:
        if len(_SURVIVE_CACHE) > 64:
            _SURVIVE_CACHE.clear()
        entry = _SURVIVE_CACHE[id(profile)] = (profile, {})
    known = entry[1].get(tag)
    if known is None:
        known = entry[1][tag] = _may_survive_uncached(tag, profile)
    return known


def _may_survive_uncached(tag: int, profile: Profile) -> bool:
    if profile.overrides.get(tag) == "K":
        return True
    row = _rows().get(tag)
    if row is None:
        return False
    if any(row[_OPTION_COLUMN[o]] for o in profile.options):
        return True  # an enabled option's cell: K or C
    return row["basic"] == "K"


def _kind(tag: int, row: dict[str, str]) -> str:
    name = row["name"].lower()
    if row["rtn_inst_id"]:
        return "institution"
    if row["rtn_dev_id"]:
        return "device"
    if row["clean_desc"]:
        return "descriptor"
    if "address" in name:
        return "address"
    if "telephone" in name or "phone" in name:
        return "phone"
    if "comment" in name or "text" in name or "note" in name:
        return "text"
    return "id"


class _Path:
    """Where an element is: built lazily, since only findings need the text."""

    __slots__ = ("parent", "tag")

    def __init__(self, parent: str, tag: int) -> None:
        self.parent, self.tag = parent, tag

    def __str__(self) -> str:
        name = _keyword(self.tag) or f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        return f"{self.parent}.{name}" if self.parent else name


class _Text:
    """A raw element of a default-repertoire string VR, read as text without decoding it
    (what ``_strings`` gives for the decoded value: its values, stripped, non-empty)."""

    __slots__ = ("VR", "tag", "value")

    def __init__(self, raw: RawDataElement) -> None:
        self.tag, self.VR = raw.tag, raw.VR
        text = cast(bytes, raw.value).decode(default_encoding)
        if raw.VR in _CHARSET_TEXT_VRS:  # each value's trailing padding is stripped
            values = [v.rstrip("\x00 ").strip() for v in text.split("\\")]
        else:  # the whole value's trailing padding is stripped
            values = [v.strip() for v in text.rstrip(" \x00").split("\\")]
        self.value = [v for v in values if v]

    @staticmethod
    def reads(raw: RawDataElement, text_vrs: frozenset[str]) -> bool:
        """True when ``_Text`` reads ``raw`` as pydicom decodes it."""
        value = raw.value
        if raw.VR not in text_vrs or not isinstance(value, bytes):
            return False
        # Character-set text: ASCII without escapes decodes alike in every DICOM character set.
        return raw.VR not in _CHARSET_TEXT_VRS or (value.isascii() and b"\x1b" not in value)


# Multi-valued text VRs decoded with the Specific Character Set (PS3.5 6.1.2.3).
_CHARSET_TEXT_VRS = frozenset({"LO", "SH", "UC"})


def _text_vrs() -> frozenset[str]:
    """VRs whose raw values ``_Text`` reads exactly as pydicom decodes them (under the
    current pydicom configuration): split at backslashes, padding stripped."""
    vrs = {"AS", "CS", *_CHARSET_TEXT_VRS}
    if not config.datetime_conversion:
        vrs |= {"DA", "DT", "TM"}
    if not (config.use_DS_numpy or config.use_IS_numpy or config.use_DS_decimal):
        vrs |= {"DS", "IS"}  # str() of a decoded DS/IS is the string read, stripped
    return frozenset(vrs)


def _walk(
    ds: Dataset,
    path: str = "",
    skip_raw: Callable[[int, str], bool] | None = None,
    text_vrs: frozenset[str] = frozenset(),
) -> Iterator[tuple[_Path, DataElement | _Text]]:
    """Every element at every depth.  Raw numeric and binary elements are yielded undecoded
    (their value is the bytes as read, which is what gets searched); raw elements of
    ``text_vrs`` are read as text (:class:`_Text`); the rest are decoded.

    ``skip_raw(tag, VR)``, for undecoded elements whose VR is known (not UN, not implicit):
    True leaves the element out without decoding it (the caller knows it cannot matter)."""
    elem: DataElement | _Text
    for key, raw in list(ds._dict.items()):
        if isinstance(raw, RawDataElement):
            vr = raw.VR
            if vr in _RAW_OK:
                elem = DataElement(raw.tag, "OB", raw.value)
            elif _Text.reads(raw, text_vrs):
                elem = _Text(raw)
            # Implicit VR (None) and UN are decoded first: the decoded VR may differ.
            elif vr is not None and vr != "UN" and skip_raw is not None and skip_raw(int(key), vr):
                continue
            else:
                elem = ds[key]
        else:
            elem = raw  # already decoded: what ds[key] returns
        where = _Path(path, int(key))
        yield where, elem
        if elem.VR == "SQ" and elem.value is not None:
            here = str(where)
            for i, item in enumerate(elem.value):
                yield from _walk(item, f"{here}[{i}]", skip_raw, text_vrs)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    values = (
        value
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
        else [value]
    )
    return [str(v).strip() for v in values if str(v).strip()]


@functools.cache
def _keyword(tag: int) -> str:
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else ""


def _well_known_uid(tag: int, uid: str) -> bool:
    if uid in UID_dictionary:
        return True
    keyword = _keyword(tag)
    return keyword.endswith(("ClassUID", "TransferSyntaxUID")) or keyword in _KIND_UIDS


def _date_spellings(yyyymmdd: str) -> list[str]:
    """A date as people write it: at least every spelling the engine's scrubber cuts."""
    y, m, d = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:8]
    return [
        yyyymmdd,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}.{m}.{y}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{d}-{m}-{y}",
        f"{m}-{d}-{y}",
    ]


@dataclass
class _Needles:
    whole: dict[str, tuple[str, _Path]]  # lowered value -> (kind, source)
    parts: dict[str, tuple[str, _Path]]  # name components, matched as words
    uids: dict[str, tuple[str, _Path]]
    in_place: list[tuple[int, list[str], _Path]]  # (tag, values, source) at the top level


def _collect(original: Dataset, profile: Profile) -> _Needles:
    needles = _collect_all(original, profile)
    for table in (needles.whole, needles.parts):
        for key in [k for k in table if k in _PLACEHOLDERS]:
            del table[key]
    return needles


def _collect_all(original: Dataset, profile: Profile) -> _Needles:
    rows = _rows()
    keep_dates = profile.date_mode == "keep"
    needles = _Needles({}, {}, {}, [])

    def cannot_matter(tag: int, vr: str) -> bool:
        # Mirrors the branches below: only names, dates, UIDs, and text of a removed public
        # attribute in the table give needles (and in-place checks); bulk data is skipped.
        # Sequences are always walked into, whatever their own row says.
        if vr == "SQ" or vr in _ALWAYS_NEEDLE_VRS:
            return False
        if vr in _BYTES_VRS or tag in profile.overrides:
            return True
        return bool(tag >> 16 & 1) or tag not in rows or _may_survive(tag, profile)

    for path, elem in _walk(original, skip_raw=cannot_matter, text_vrs=_text_vrs()):
        tag, vr = int(elem.tag), elem.VR
        if vr == "SQ" or vr in _BYTES_VRS or tag in profile.overrides:
            continue
        private = bool(elem.tag.group & 1)
        survives = (not private) and _may_survive(tag, profile)
        values = _strings(elem.value)
        if not values:
            continue
        if not private and not path.parent and not survives and tag in rows:
            needles.in_place.append((tag, values, path))
        if vr == "PN":
            if survives:
                continue
            for v in values:
                needles.whole.setdefault(v.lower(), ("name", path))
                for part in re.split(r"[\^=\s,.]+", v):
                    if len(part) >= _MIN_PART:
                        needles.parts.setdefault(part.lower(), ("name", path))
        elif vr in ("DA", "DT"):
            if keep_dates or (survives and tag in rows and not _is_date_row_shifted(tag, profile)):
                continue
            for v in values:
                if re.match(r"^\d{8}", v):
                    for s in _date_spellings(v[:8]):
                        needles.whole.setdefault(s, ("date", path))
                if len(v) > 8:
                    needles.whole.setdefault(v.lower(), ("date", path))
        elif vr == "UI":
            if profile.retain_uids:
                continue
            for v in values:
                if not _well_known_uid(tag, v):
                    needles.uids.setdefault(v, ("uid", path))
        elif vr in _TEXT_VRS and not private and not survives and tag in rows:
            kind = _kind(tag, rows[tag])
            minimum = _MIN_DESCRIPTOR if kind == "descriptor" else _MIN_WHOLE
            for v in values:
                if len(v) >= minimum:
                    needles.whole.setdefault(v.lower(), (kind, path))
    return needles


def _is_date_row_shifted(tag: int, profile: Profile) -> bool:
    """A date row that Modified Dates cleans must not keep its original value."""
    row = _rows().get(tag)
    return bool(
        row is not None
        and DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile.options
        and row["rtn_long_modif_dates"] == "C"
    )


@dataclass
class _Haystacks:
    texts: list[tuple[_Path, str]]  # lowered
    uids: list[tuple[_Path, str]]
    blobs: list[tuple[_Path, bytes]]
    pseudonyms: list[tuple[_Path, str]]  # lowered; matched whole only


def _haystacks(ds: Dataset) -> _Haystacks:
    """The output's values to search, without what the node writes whatever the input."""
    texts: list[tuple[_Path, str]] = []
    uids: list[tuple[_Path, str]] = []
    blobs: list[tuple[_Path, bytes]] = []
    pseudonyms: list[tuple[_Path, str]] = []
    sources: list[tuple[str, Dataset]] = [("", ds)]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sources.append(("file_meta", meta))
    text_vrs = _text_vrs()
    for prefix, source in sources:
        for path, elem in _walk(source, prefix, text_vrs=text_vrs):
            tag, vr, value = int(elem.tag), elem.VR, elem.value
            if vr == "SQ" or value is None:
                continue
            if vr in _BYTES_VRS or isinstance(value, bytes):
                group = tag >> 16
                if tag in _BULK_PIXELS or (group & 0xFF00 == 0x6000 and tag & 0xFFFF == 0x3000):
                    continue
                if isinstance(value, bytes):
                    blobs.append((path, value))
                continue
            for v in _strings(value):
                if v in _DUMMIES or (tag in _OWN_TAGS and _own(path, v)):
                    continue
                if vr == "UI":
                    uids.append((path, v))
                elif v.startswith(_PSEUDONYM_PREFIXES) and _PSEUDONYM_FORM.fullmatch(v):
                    pseudonyms.append((path, v.lower()))
                else:
                    texts.append((path, v.lower()))
    return _Haystacks(texts, uids, blobs, pseudonyms)


@functools.lru_cache(maxsize=4096)
def _bytes_forms(needle: str) -> frozenset[bytes]:
    forms = {needle, needle.upper(), needle.lower(), needle.title()}
    encoded = {f.encode("utf-8", "replace") for f in forms}
    encoded |= {f.encode("latin-1", "replace") for f in forms}
    return frozenset(encoded)


def verify_no_phi(original: Dataset, deidentified: Dataset, profile: Profile) -> list[Finding]:
    """Every identifying value of ``original`` found in ``deidentified`` (empty list: clean)."""
    needles = _collect(original, profile)
    hay = _haystacks(deidentified)
    texts, uids, blobs = hay.texts, hay.uids, hay.blobs
    findings: list[Finding] = []
    seen: set[tuple[str, str, str]] = set()

    def add(kind: str, source: _Path | str, location: _Path | str) -> None:
        key = (kind, str(source), str(location))
        if key not in seen:
            seen.add(key)
            findings.append(Finding(*key))

    # Each search first looks in all haystacks of a kind joined (a superset of the per-item
    # matches), and only on a hit goes item by item, in the same order as before.
    all_text = "\n".join(t for _, t in texts)
    uids_lower = [(path, text.lower()) for path, text in uids]
    all_uids_lower = "\n".join(t for _, t in uids_lower)
    all_blobs = b"\n".join(b for _, b in blobs)
    for needle, (kind, source) in needles.whole.items():
        if len(needle) < _MIN_WHOLE and kind != "date":
            continue
        if needle in all_text:
            for path, text in texts:
                if needle in text:
                    add(kind, source, path)
        for path, text in hay.pseudonyms:
            if needle == text:  # an original that is itself a pseudonym, copied through
                add(kind, source, path)
        if kind != "date" and needle in all_uids_lower:
            # A number (a time, an ID of digits) leaks through a UID only as a whole
            # component: inside the long integer of a 2.25 pseudonym it is chance (a 6-digit
            # time turns up in about 1 of 3,000 new UIDs).
            digits = needle.replace(".", "").isdigit()
            component = re.compile(rf"(?<![0-9]){re.escape(needle)}(?![0-9])") if digits else None
            for path, text in uids_lower:
                if component.search(text) if component else needle in text:
                    add(kind, source, path)
        forms = _bytes_forms(needle)
        if any(f in all_blobs for f in forms):
            for path, blob in blobs:
                if any(f in blob for f in forms):
                    add(kind, source, path)
    if needles.parts:
        words = re.compile(
            "|".join(rf"(?<!\w){re.escape(p)}(?!\w)" for p in needles.parts), re.IGNORECASE
        )
        for path, text in texts:
            for m in words.finditer(text):
                add("name", needles.parts[m[0].lower()][1], path)
        words_b = re.compile(
            b"|".join(
                rb"(?<![A-Za-z0-9])" + re.escape(p.encode()) + rb"(?![A-Za-z0-9])"
                for p in needles.parts
            ),
            re.IGNORECASE,
        )
        for path, blob in blobs:
            for mb in words_b.finditer(blob):
                add("name", needles.parts[mb[0].decode("utf-8", "replace").lower()][1], path)
    all_uids = "\n".join(uid for _, uid in uids)
    for needle, (kind, source) in needles.uids.items():
        if needle in all_uids:
            for path, uid in uids:
                if uid == needle or uid.startswith(needle + "."):
                    add(kind, source, path)
        if needle.lower() in all_text:
            for path, text in texts:
                if needle.lower() in text:
                    add(kind, source, path)
        encoded = needle.encode("ascii", "replace")
        if encoded in all_blobs:
            for path, blob in blobs:
                if encoded in blob:
                    add(kind, source, path)
    for tag, values, source in needles.in_place:
        if tag in deidentified:
            now = _strings(deidentified[tag].value)
            if now and now == values and not _DUMMIES.issuperset(now):
                add("unchanged", source, source)
    return findings
