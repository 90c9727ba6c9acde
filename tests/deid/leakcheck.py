"""An independent, deliberately simple leak checker for the tests.

It shares no code and no rule with :mod:`dicomgate.deid.verify`: it asks only "is an exact
identifying value of the original still in the output?".  Identifying values are, at any depth:
every value of a public attribute whose Table E.1-1 Basic Profile action is not K (read from the
shipped CSV through tests/deid/helpers), every person name, date and date-time, and every UID
that is not a registered one (nor a SOP class / transfer syntax / coding scheme attribute).
Values shorter than 3 characters are left out: found as a token they mean nothing.

A value leaks when an output value (text, or bytes read as Latin-1; every element, any depth,
private elements and File Meta included; not pixel or overlay data) equals it or contains it as a
token: with no letter or digit touching it on either side, a decimal point between digits
counting as part of a number.  Case is ignored.

Leaks are ``(source, location)`` keyword paths, in the verifier's notation (``Seq[0].Keyword``,
``(GGGG,EEEE)`` for a tag without a keyword, ``file_meta.Keyword``), so tests can compare them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import dictionary_has_tag, dictionary_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from tests.deid.helpers import row_tag, table_rows

__all__ = ["Leak", "identifying_values", "leaks", "occurs", "where"]

Leak = tuple[str, str]  # (source path in the original, location path in the output)

_MIN_LENGTH = 3
_NOT_SEARCHED = {0x7FE00008, 0x7FE00009, 0x7FE00010}  # (Float/Double) Pixel Data
_KIND_UID_KEYWORDS = {
    "CodingSchemeUID", "ContextUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID"
}  # fmt: skip


def _removed_tags() -> frozenset[int]:
    return frozenset(
        tag for row in table_rows() if (tag := row_tag(row)) is not None and row["basic"] != "K"
    )


_REMOVED = _removed_tags()


def _name(tag: int) -> str:
    keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else ""
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _elements(ds: Dataset, parent: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element but pixel and overlay data, at any depth, with its path."""
    for tag in list(ds.keys()):
        t = int(tag)
        if t in _NOT_SEARCHED or (t >> 24 == 0x60 and t & 0xFFFF == 0x3000):
            continue
        elem = ds[tag]
        path = f"{parent}.{_name(t)}" if parent else _name(t)
        yield path, elem
        if elem.VR == "SQ" and elem.value is not None:
            for i, item in enumerate(elem.value):
                yield from _elements(item, f"{path}[{i}]")


def _texts(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    values = value if isinstance(value, list | tuple | MultiValue) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def _well_known(elem: DataElement, uid: str) -> bool:
    keyword = dictionary_keyword(elem.tag) if dictionary_has_tag(elem.tag) else ""
    return (
        uid in UID_dictionary
        or keyword.endswith(("ClassUID", "TransferSyntaxUID"))
        or keyword in _KIND_UID_KEYWORDS
    )


def identifying_values(original: Dataset) -> dict[str, str]:
    """Lower-cased identifying value -> the path of the first attribute that holds it."""
    found: dict[str, str] = {}
    for path, elem in _elements(original):
        if elem.VR == "SQ" or isinstance(elem.value, bytes) or elem.tag.is_private:
            continue
        vr = elem.VR
        if int(elem.tag) not in _REMOVED and vr not in ("PN", "DA", "DT", "UI"):
            continue
        for v in _texts(elem):
            if len(v) < _MIN_LENGTH or (vr == "UI" and _well_known(elem, v)):
                continue
            found.setdefault(v.lower(), path)
    return found


def _touches(text: str, start: int, end: int) -> bool:
    """True when the match text[start:end] is continued by a letter or digit, or by a decimal
    point and a digit when the match starts or ends with a digit."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before.isalnum() or after.isalnum():
        return True
    if text[start].isdigit() and before == "." and start >= 2 and text[start - 2].isdigit():
        return True
    return bool(text[end - 1].isdigit() and after == "." and text[end + 1 : end + 2].isdigit())


def occurs(value: str, text: str) -> bool:
    """``value`` equals ``text`` or is a token of it (both lower case)."""
    if value == text:
        return True
    start = text.find(value)
    while start != -1:
        if not _touches(text, start, start + len(value)):
            return True
        start = text.find(value, start + 1)
    return False


def _places(output: Dataset) -> Iterator[tuple[str, str]]:
    """(location, lower-case text) of every value of the output, File Meta included."""
    places = list(_elements(output))
    meta = getattr(output, "file_meta", None)
    if meta is not None:
        places += list(_elements(meta, "file_meta"))
    for location, elem in places:
        if elem.VR != "SQ":
            for text in _texts(elem):
                yield location, text.lower()


def where(values: Iterable[str], output: Dataset) -> set[str]:
    """Every location of ``output`` where one of ``values`` occurs."""
    wanted = {v.lower() for v in values if v}
    return {
        location
        for location, text in _places(output)
        if any(v in text and occurs(v, text) for v in wanted)
    }


def leaks(original: Dataset, output: Dataset) -> set[Leak]:
    """Every (source, location) where an identifying value of ``original`` is in ``output``."""
    values = identifying_values(original)
    found: set[Leak] = set()
    for location, text in _places(output):
        for value, source in values.items():
            if value in text and occurs(value, text):
                found.add((source, location))
    return found
