"""The PHI verifier: no identifying value of the original survives anywhere in the output.

Deliberately independent of the engine (:mod:`dicomgate.deid._engine`): it reads Table E.1-1
itself, decides by its own rules which original values are identifying, and searches the whole
output for them — every element at every depth, every VR, private elements, the bytes of OB/UN
values and the File Meta Information — whole, or inside a longer string.  A bug in the engine
therefore shows up here instead of being repeated here.

Identifying values (PS3.15 E.1.1; "needles"), taken from the original at any depth:

* names (PN): the whole name, and each component of 3+ characters;
* dates and date-times (DA, DT) unless Full Dates is retained: the date (a shifted or removed
  date must not leave its original behind);
* times (TM) of the rows that remove them: the time to the second;
* UIDs unless Retain UIDs: every UID that is not a well-known one (SOP classes, transfer
  syntaxes..., or a ``...ClassUID`` attribute);
* text of every attribute whose Table E.1-1 action under the options removes or replaces it:
  IDs, addresses, telephone numbers, comments, institution and device identifiers (4+
  characters; descriptors — rows Clean Descriptors could keep — 16+ characters, since short
  descriptors such as "CHEST" are words, not identifiers).

Like is compared with like (each rule is one function or constant below, and the README lists
them with why none can hide a real leak):

* names, IDs and text are found as tokens: not continued by a letter or digit on either side,
  and a number never as digits inside a longer decimal number (``000000`` is not in
  ``500.000000``); :func:`_token_pattern`;
* dates are compared with DA/DT values as dates and found in text in every spelling the
  engine's scrubber cuts, a compact date also as the start of a date-time; times are compared
  with TM/DT values as times and found in text as a time token; neither is looked for in
  numbers (DS, IS); :func:`_date_patterns`, :func:`_time_pattern`;
* UIDs are compared with UIDs whole or as a root, and found in text and bytes between
  non-digits; other numbers (dates, times, IDs of digits) are found in a UID only as whole
  components: inside the long integer of a 2.25 pseudonym they are chance.

Degenerate originals are not needles (:func:`_degenerate`): all zeros, one character, a
placeholder word, or a dummy the engine writes.  Two kinds of original values are not findings
where the profile keeps the attribute that shows them (:func:`_exempt`): an institution or
device value that is the output's own Manufacturer value (or a word of it) — never a person's
name or an ID —, and words of the standard's own vocabulary inside a coded value (a CS value,
a Code Value, Coding Scheme Designator or Code Meaning).

Besides the search, each attribute whose action removes or replaces it must not keep its
original value in place (same attribute, same item, at any depth), however short: Patient's
Sex "F" cannot be searched for.

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
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, cast

from pydicom import config
from pydicom._dicom_dict import DicomDictionary  # PS3.6, behind pydicom.datadict
from pydicom._uid_dict import UID_dictionary  # PS3.6 Annex A registry (behind UID.name)
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sr._concepts_dict import concepts  # PS3.16, behind pydicom.sr.codedict.codes
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from dicomgate.config import DeidOption
from dicomgate.deid._profile import Profile

__all__ = ["Finding", "verify_no_phi"]

_MIN_WHOLE = 4
_MIN_PART = 3
_MIN_DESCRIPTOR = 16
# Placeholders that de-identifiers (this one included) and templates put in place of values:
# not identifying, and found in already de-identified input.
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
_TEXT_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_BYTES_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}
_NUMBER_VRS = frozenset({"DS", "IS"})
# Attributes in no row of Table E.1-1 that the profile keeps (README, "Attributes in no row"):
# codes and labels.
_NO_ROW_KEPT_VRS = frozenset({"CS", "SH", "LO", "UC"})
# Coded values (PS3.3 8.8 Code Sequence Macro): their text is a coding scheme's, not narrative.
_CODED_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120})
_MANUFACTURER = 0x00080070

# What the node writes whatever the input (own copies, not the engine's constants; tests/deid
# compares them with the engine's output).  Dummies (PS3.15 Table E.1-1a "D") of the string VRs
# and of the numbers as text (DS/IS "0"):
_DUMMIES = frozenset(
    {"DEIDENTIFIED", "19000101", "19000101000000", "000000", "000D", "urn:x-deidentified", "0"}
)
_DUMMIES_LOWER = frozenset(d.lower() for d in _DUMMIES)
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

# Well-formed date and time values (PS3.5 Table 6.2-1), compared as dates and times.
_DA_VALUE = re.compile(r"(\d{8})")
_DT_VALUE = re.compile(r"(\d{8})(\d{0,6})(?:\.\d{1,6})?(?:[+-]\d{4})?")
_TM_VALUE = re.compile(r"(\d{2,6})(?:\.\d{1,6})?")
_TIME_DIGITS = 6  # a time is searched to the second: HHMMSS


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
    """name, date, time, uid, id, address, phone, text, institution, device, descriptor,
    unchanged."""
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


class _PerProfile:
    """Answers that depend on the profile and the tag (and VR) only, computed once each."""

    __slots__ = ("kept", "profile", "survive")

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.survive: dict[int, bool] = {}
        self.kept: dict[tuple[int, str], bool] = {}


_PROFILE_CACHE: dict[int, _PerProfile] = {}


def _per_profile(profile: Profile) -> _PerProfile:
    entry = _PROFILE_CACHE.get(id(profile))
    if entry is None or entry.profile is not profile:
        if len(_PROFILE_CACHE) > 64:
            _PROFILE_CACHE.clear()
        entry = _PROFILE_CACHE[id(profile)] = _PerProfile(profile)
    return entry


def _may_survive(tag: int, profile: Profile) -> bool:
    """True when the profile lets this attribute's value (or a cleaned form of it) remain."""
    cache = _per_profile(profile).survive
    known = cache.get(tag)
    if known is None:
        known = cache[tag] = _may_survive_uncached(tag, profile)
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


def _kept(tag: int, vr: str, profile: Profile) -> bool:
    """True when the profile keeps this public attribute as it is (action K): what it shows
    was in the original, in the same attribute, and the profile decided it may stay."""
    cache = _per_profile(profile).kept
    known = cache.get((tag, vr))
    if known is None:
        known = cache[(tag, vr)] = _kept_uncached(tag, vr, profile)
    return known


def _kept_uncached(tag: int, vr: str, profile: Profile) -> bool:
    if tag >> 16 & 1:
        return False
    override = profile.overrides.get(tag)
    if override is not None:
        return override == "K"
    row = _rows().get(tag)
    if row is None:
        try:
            retired = get_entry(tag)[3]
        except KeyError:
            return False
        return not retired and vr in _NO_ROW_KEPT_VRS
    cells = {row[_OPTION_COLUMN[o]] for o in profile.options} - {""}
    code = ("C" if "C" in cells else "K") if cells else row["basic"]
    return code == "K"


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


def _comparable(elem: DataElement | _Text) -> bytes | list[str]:
    """An element's value in the form the in-place check compares: bytes as read, else the
    stripped text of each value."""
    value = elem.value
    if isinstance(value, bytes):
        return value
    return _strings(value)


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


def _degenerate(value: str) -> bool:
    """An original value that cannot single anyone out, so is no needle: one character, all
    zeros (``000000``, ``0000-00-00``), a placeholder word, or one of the node's dummies."""
    if len(value) < 2 or not re.search(r"[^\W0_]", value):
        return True
    lowered = value.lower()
    return lowered in _PLACEHOLDERS or lowered in _DUMMIES_LOWER


# -- patterns: like compared with like ------------------------------------------------------
_WORD = r"[^\W_]"  # a letter or digit of any script


@functools.lru_cache(maxsize=8192)
def _token_pattern(needle: str) -> re.Pattern[str]:
    """``needle`` (lower case) as a token in lower-case text: not continued by a letter or
    digit on either side, and, where it starts or ends with a digit, not the fraction or the
    integer part of a longer decimal number."""
    head = tail = ""
    if needle[:1].isalnum():
        head = rf"(?<!{_WORD})"
        if needle[0].isdigit():
            head += r"(?<![0-9]\.)"
    if needle[-1:].isalnum():
        tail = rf"(?!{_WORD})"
        if needle[-1].isdigit():
            tail += r"(?!\.[0-9])"
    return re.compile(head + re.escape(needle) + tail)


@functools.lru_cache(maxsize=8192)
def _token_bytes_pattern(needle: str) -> tuple[re.Pattern[bytes], tuple[bytes, ...]]:
    """:func:`_token_pattern` for bytes: the needle in UTF-8 or Latin-1, any case, between
    bytes that are not ASCII letters or digits; and its forms with ASCII in lower case (what
    must be in the lower-cased bytes for the pattern to match)."""
    forms = {needle, needle.upper(), needle.lower(), needle.title()}
    encoded = {f.encode("utf-8", "replace") for f in forms}
    encoded |= {f.encode("latin-1", "replace") for f in forms}
    head = rb"(?<![A-Za-z0-9])" if needle[:1].isalnum() else b""
    if needle[:1].isdigit():
        head += rb"(?<![0-9]\.)"
    tail = rb"(?![A-Za-z0-9])" if needle[-1:].isalnum() else b""
    if needle[-1:].isdigit():
        tail += rb"(?!\.[0-9])"
    alternatives = b"|".join(re.escape(e) for e in sorted(encoded, key=len, reverse=True))
    pattern = re.compile(head + b"(?:" + alternatives + b")" + tail, re.IGNORECASE)
    return pattern, tuple({e.lower() for e in encoded})


_NUMBER_START = r"(?<![0-9])(?<![0-9]\.)"
_NUMBER_END = r"(?![0-9])(?!\.[0-9])"


@functools.lru_cache(maxsize=4096)
def _date_patterns(yyyymmdd: str) -> tuple[re.Pattern[str], re.Pattern[bytes]]:
    """A date in text and bytes: each spelling as a number token; the compact spelling also
    as the start of a date-time (``YYYYMMDDHHMMSS.FFFFFF``)."""
    spellings = [re.escape(s) for s in _date_spellings(yyyymmdd)[1:]]
    compact = yyyymmdd + r"(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,6})?)?)?)?"
    body = "|".join([compact, *spellings])
    text = rf"{_NUMBER_START}(?:{body}){_NUMBER_END}"
    return re.compile(text), re.compile(text.encode())


@functools.lru_cache(maxsize=4096)
def _time_pattern(hhmmss: str) -> tuple[re.Pattern[str], re.Pattern[bytes]]:
    """A time in text and bytes as TM writes it: HHMMSS, with or without a fraction, as a
    number token."""
    text = rf"{_NUMBER_START}{hhmmss}(?:\.[0-9]{{1,6}})?{_NUMBER_END}"
    return re.compile(text), re.compile(text.encode())


@functools.lru_cache(maxsize=4096)
def _uid_pattern(uid: str) -> tuple[re.Pattern[str], re.Pattern[bytes]]:
    """A UID (or any number) in text, bytes or another UID: between non-digits, so as
    whole components."""
    text = rf"(?<![0-9]){re.escape(uid)}(?![0-9])"
    return re.compile(text), re.compile(text.encode())


@functools.cache
def _vocabulary() -> frozenset[str]:
    """The standard's own words: those of the PS3.6 attribute names and of the PS3.16 DICOM
    (DCM) code meanings, and those meanings whole; lower case.  (The other schemes' meanings,
    SNOMED's eponyms among them, are not the standard's words and are left out.)"""
    phrases = [entry[2] for entry in DicomDictionary.values()]
    dcm = cast(dict[str, dict[str, tuple[str, list[int]]]], concepts["DCM"])
    meanings = [m for by_code in dcm.values() for m, _ in by_code.values()]
    words = {w for text in phrases + meanings for w in re.split(r"[^a-z0-9]+", text.lower())}
    words |= {m.lower() for m in meanings}
    return frozenset(w for w in words if w)


# -- the original's identifying values ------------------------------------------------------
@dataclass
class _Needles:
    tokens: dict[str, tuple[str, _Path]] = field(default_factory=dict)  # lowered -> (kind, source)
    parts: dict[str, tuple[str, _Path]] = field(default_factory=dict)  # name components
    dates: dict[str, tuple[str, _Path]] = field(default_factory=dict)  # YYYYMMDD
    times: dict[str, tuple[str, _Path]] = field(default_factory=dict)  # HHMMSS
    uids: dict[str, tuple[str, _Path]] = field(default_factory=dict)
    # (parent path, tag) -> (original value, source): removed or replaced, any depth
    in_place: dict[tuple[str, int], tuple[bytes | list[str], _Path]] = field(default_factory=dict)


def _collect(original: Dataset, profile: Profile) -> _Needles:
    rows = _rows()
    keep_dates = profile.date_mode == "keep"
    needles = _Needles()

    def cannot_matter(tag: int, vr: str) -> bool:
        # Mirrors the branches below: only names, dates, UIDs, and values of a removed public
        # attribute in the table give needles (and in-place checks).  Sequences are always
        # walked into, whatever their own row says.
        if vr == "SQ" or vr in _ALWAYS_NEEDLE_VRS:
            return False
        if tag in profile.overrides:
            return True
        return bool(tag >> 16 & 1) or tag not in rows or _may_survive(tag, profile)

    for path, elem in _walk(original, skip_raw=cannot_matter, text_vrs=_text_vrs()):
        tag, vr = int(elem.tag), elem.VR
        if vr == "SQ" or tag in profile.overrides:
            continue
        private = bool(elem.tag.group & 1)
        survives = (not private) and _may_survive(tag, profile)
        if not private and not survives and tag in rows:
            value = _comparable(elem)
            if value:
                needles.in_place.setdefault((path.parent, tag), (value, path))
        if vr in _BYTES_VRS:
            continue
        values = _strings(elem.value)
        if not values:
            continue
        if vr == "PN":
            if survives:
                continue
            for v in values:
                if len(v) >= _MIN_WHOLE and not _degenerate(v):
                    needles.tokens.setdefault(v.lower(), ("name", path))
                for part in re.split(r"[\^=\s,.]+", v):
                    if len(part) >= _MIN_PART and not _degenerate(part):
                        needles.parts.setdefault(part.lower(), ("name", path))
        elif vr in ("DA", "DT"):
            if keep_dates or (survives and tag in rows and not _is_date_row_shifted(tag, profile)):
                continue
            for v in values:
                m = re.match(r"\d{8}", v)
                if m and not _degenerate(m[0]):
                    needles.dates.setdefault(m[0], ("date", path))
        elif vr == "UI":
            if profile.retain_uids:
                continue
            for v in values:
                if not _degenerate(v) and not _well_known_uid(tag, v):
                    needles.uids.setdefault(v, ("uid", path))
        elif private or survives or tag not in rows:
            continue
        elif vr == "TM":
            for v in values:
                m = _TM_VALUE.fullmatch(v)
                if m and len(m[1]) == _TIME_DIGITS and not _degenerate(m[1]):
                    needles.times.setdefault(m[1], ("time", path))
        elif vr in _TEXT_VRS:
            kind = _kind(tag, rows[tag])
            minimum = _MIN_DESCRIPTOR if kind == "descriptor" else _MIN_WHOLE
            for v in values:
                if len(v) >= minimum and not _degenerate(v):
                    needles.tokens.setdefault(v.lower(), (kind, path))
    return needles


def _is_date_row_shifted(tag: int, profile: Profile) -> bool:
    """A date row that Modified Dates cleans must not keep its original value."""
    row = _rows().get(tag)
    return bool(
        row is not None
        and DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile.options
        and row["rtn_long_modif_dates"] == "C"
    )


# -- the output's values --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Hay:
    path: _Path
    text: str  # lowered
    vr: str
    kept: bool  # an attribute the profile keeps as it is


@dataclass
class _Haystacks:
    texts: list[_Hay] = field(default_factory=list)
    uids: list[tuple[_Path, str]] = field(default_factory=list)
    blobs: list[tuple[_Path, bytes]] = field(default_factory=list)
    pseudonyms: list[tuple[_Path, str]] = field(default_factory=list)  # lowered; whole only
    dates: list[tuple[_Path, str, str]] = field(default_factory=list)  # (YYYYMMDD, HHMMSS|"")
    times: list[tuple[_Path, str]] = field(default_factory=list)  # HHMM[SS]
    manufacturers: list[str] = field(default_factory=list)  # lowered
    # (parent path, tag) -> value, for the original's removed attributes only
    at: dict[tuple[str, int], bytes | list[str]] = field(default_factory=dict)


def _haystacks(ds: Dataset, profile: Profile, wanted: dict[tuple[str, int], Any]) -> _Haystacks:
    """The output's values to search, without what the node writes whatever the input, and
    the values at the places in ``wanted``."""
    hay = _Haystacks()
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
            if (path.parent, tag) in wanted:
                hay.at[(path.parent, tag)] = _comparable(elem)
            if vr in _BYTES_VRS or isinstance(value, bytes):
                group = tag >> 16
                if tag in _BULK_PIXELS or (group & 0xFF00 == 0x6000 and tag & 0xFFFF == 0x3000):
                    continue
                if isinstance(value, bytes):
                    hay.blobs.append((path, value))
                continue
            for v in _strings(value):
                _classify(hay, path, tag, str(vr), v, profile)
    return hay


def _classify(hay: _Haystacks, path: _Path, tag: int, vr: str, v: str, profile: Profile) -> None:
    """File one output value with the values it is compared with (like with like)."""
    if v in _DUMMIES or (tag in _OWN_TAGS and _own(path, v)):
        return
    if vr == "UI":
        hay.uids.append((path, v))
        return
    if v.startswith(_PSEUDONYM_PREFIXES) and _PSEUDONYM_FORM.fullmatch(v):
        hay.pseudonyms.append((path, v.lower()))
        return
    if vr == "DA" and (m := _DA_VALUE.fullmatch(v)):
        hay.dates.append((path, m[1], ""))
        return
    if vr == "DT" and (m := _DT_VALUE.fullmatch(v)):
        hay.dates.append((path, m[1], m[2]))
        if len(m[2]) >= 4:
            hay.times.append((path, m[2]))
        return
    if vr == "TM" and (m := _TM_VALUE.fullmatch(v)):
        if len(m[1]) >= 4:  # an hour alone is no time of anything
            hay.times.append((path, m[1]))
        return
    if tag == _MANUFACTURER:
        hay.manufacturers.append(v.lower())
    hay.texts.append(_Hay(path, v.lower(), vr, _kept(tag, vr, profile)))


# Kinds of needles that name an organization or a device: the Manufacturer rule's.
_ORGANIZATION_KINDS = frozenset({"institution", "device"})


def _exempt(needle: str, kind: str, hay: _Hay, manufacturers: list[str]) -> bool:
    """An original value shown by an attribute the profile keeps, that is an institution or
    device value equal to the output's own Manufacturer (or a word of it), or, inside a coded
    value, a word of the standard.  A person's name or an ID is never the Manufacturer's."""
    if not hay.kept:
        return False
    if kind in _ORGANIZATION_KINDS:
        pattern = _token_pattern(needle)
        if any(needle == m or pattern.search(m) for m in manufacturers):
            return True
    coded = hay.vr == "CS" or hay.path.tag in _CODED_TAGS
    return coded and needle in _vocabulary()


# -- the search -----------------------------------------------------------------------------
class _Search:
    """One verification: the needles of the original looked for in the output's haystacks."""

    def __init__(self, needles: _Needles, hay: _Haystacks) -> None:
        self.needles, self.hay = needles, hay
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str, str]] = set()
        # Each search first looks in all haystacks of a kind joined (a superset of the
        # per-item matches), and only on a hit goes item by item.
        self.all_text = "\n".join(h.text for h in hay.texts)
        self.uids_lower = [(path, text.lower()) for path, text in hay.uids]
        self.all_uids = "\n".join(t for _, t in self.uids_lower)
        self.all_blobs = b"\n".join(b for _, b in hay.blobs).lower()  # ASCII lowered

    def add(self, kind: str, source: _Path | str, location: _Path | str) -> None:
        key = (kind, str(source), str(location))
        if key not in self._seen:
            self._seen.add(key)
            self.findings.append(Finding(*key))

    def run(self) -> list[Finding]:
        for table in (self.needles.tokens, self.needles.parts):
            for needle, (kind, source) in table.items():
                self.token(needle, kind, source, whole=table is self.needles.tokens)
        for day, (kind, source) in self.needles.dates.items():
            self.date(day, kind, source)
        for hhmmss, (kind, source) in self.needles.times.items():
            self.time(hhmmss, kind, source)
        for uid, (kind, source) in self.needles.uids.items():
            self.uid(uid, kind, source)
        self.in_place()
        return self.findings

    def token(self, needle: str, kind: str, source: _Path, *, whole: bool) -> None:
        """A name, a name component, an ID or other text: a token of text, an equal
        pseudonym, a whole number inside a UID, a token of bytes."""
        hay = self.hay
        if needle in self.all_text:
            pattern = _token_pattern(needle)
            for h in hay.texts:
                found = needle in h.text and pattern.search(h.text)
                if found and not _exempt(needle, kind, h, hay.manufacturers):
                    self.add(kind, source, h.path)
        if whole:
            for path, text in hay.pseudonyms:
                if needle == text:  # an original that is itself a pseudonym, copied through
                    self.add(kind, source, path)
        if needle in self.all_uids and re.fullmatch(r"[0-9.]+", needle):
            # A number (an ID of digits) is in a UID only as whole components: inside the
            # long integer of a 2.25 pseudonym it is chance.
            self.in_uids(_uid_pattern(needle)[0], needle, kind, source, prefix_ok=False)
        self.in_blobs(*_token_bytes_pattern(needle), kind, source)

    def date(self, day: str, kind: str, source: _Path) -> None:
        """A date: equal to a DA value or a DT's date, or in text and bytes in a spelling."""
        for path, other, _ in self.hay.dates:
            if other == day:
                self.add(kind, source, path)
        text, data = _date_patterns(day)
        self.in_texts(text, day[:4], kind, source)
        self.in_blobs(data, (day[:4].encode(),), kind, source)
        if day in self.all_uids:
            self.in_uids(_uid_pattern(day)[0], day, kind, source, prefix_ok=False)

    def time(self, hhmmss: str, kind: str, source: _Path) -> None:
        """A time: equal to a TM value or a DT's time (to the precision they give, HH:MM at
        least), or in text and bytes as a time token."""
        for path, other in self.hay.times:
            if hhmmss.startswith(other):
                self.add(kind, source, path)
        text, data = _time_pattern(hhmmss)
        self.in_texts(text, hhmmss, kind, source)
        self.in_blobs(data, (hhmmss.encode(),), kind, source)
        if hhmmss in self.all_uids:
            self.in_uids(_uid_pattern(hhmmss)[0], hhmmss, kind, source, prefix_ok=False)

    def uid(self, uid: str, kind: str, source: _Path) -> None:
        """A UID: equal to a UID or its root; in text and bytes between non-digits."""
        text, data = _uid_pattern(uid)
        if uid in self.all_uids:
            self.in_uids(None, uid, kind, source, prefix_ok=True)
        if uid in self.all_text:
            for h in self.hay.texts:
                if uid in h.text and text.search(h.text):
                    self.add(kind, source, h.path)
        self.in_blobs(data, (uid.encode("ascii", "replace"),), kind, source)

    def in_texts(self, pattern: re.Pattern[str], hint: str, kind: str, source: _Path) -> None:
        """Dates and times in text values, but never in numbers (DS, IS)."""
        if hint not in self.all_text:
            return
        for h in self.hay.texts:
            if h.vr not in _NUMBER_VRS and hint in h.text and pattern.search(h.text):
                self.add(kind, source, h.path)

    def in_uids(
        self, pattern: re.Pattern[str] | None, needle: str, kind: str, source: _Path, *,
        prefix_ok: bool,
    ) -> None:  # fmt: skip
        for path, text in self.uids_lower:
            if needle not in text:
                continue
            if (prefix_ok and (text == needle or text.startswith(needle + "."))) or (
                pattern is not None and pattern.search(text)
            ):
                self.add(kind, source, path)

    def in_blobs(
        self, pattern: re.Pattern[bytes], literals: tuple[bytes, ...], kind: str, source: _Path
    ) -> None:
        """``pattern`` in each blob, once one of ``literals`` (lower case) is in them all."""
        if not any(literal in self.all_blobs for literal in literals):
            return
        for path, blob in self.hay.blobs:
            if pattern.search(blob):
                self.add(kind, source, path)

    def in_place(self) -> None:
        """A removed or replaced attribute that still holds its original value where it was
        (a dummy, an empty value or all zeros there is what the engine writes, not a leak)."""
        for key, (value, source) in self.needles.in_place.items():
            now = self.hay.at.get(key)
            if not now or now != value:
                continue
            if isinstance(now, bytes):
                if not now.strip(b"\x00"):
                    continue
            elif all(v in _DUMMIES or not re.search(r"[^\W0_]", v) for v in now):
                continue
            self.add("unchanged", source, source)


def verify_no_phi(original: Dataset, deidentified: Dataset, profile: Profile) -> list[Finding]:
    """Every identifying value of ``original`` found in ``deidentified`` (empty list: clean)."""
    needles = _collect(original, profile)
    hay = _haystacks(deidentified, profile, needles.in_place)
    return _Search(needles, hay).run()
