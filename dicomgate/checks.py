"""Door checks run before an instance is acknowledged (cheap: header and positions only).

Each check either yields the UIDs the node files the instance under, or a
:class:`Refusal` carrying the DIMSE status and a reason safe to log (no patient values).

The file is what pynetdicom wrote for the C-STORE: preamble, File Meta (from the request and
the presentation context), then the dataset bytes exactly as received. The header is parsed
up to Pixel Data; Pixel Data and whatever follows it are checked by position only (element
lengths, encapsulated item headers), never read: instances can be gigabytes. A deflated
dataset (PS3.5 A.5) cannot be seeked in, but pydicom inflates it whole to parse the header
anyway, so the same positional checks run on the inflated copy it already holds.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from struct import Struct
from typing import Any, BinaryIO, cast

from pydicom import dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from dicomgate.status import Status
from dicomgate.uids import is_valid_uid, strip_padding

__all__ = ["HeaderUIDs", "Refusal", "check_header"]

_UNDEFINED_LENGTH = 0xFFFFFFFF
_UIDS = {  # keyword -> tag, read raw (no pydicom conversion, which warns quoting the value)
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_DEFER_SIZE = 1024  # larger values are only seeked over, never read
#: Files up to this size are parsed from memory: pydicom asks a file for its position at every
#: element, and a real file answers each ``tell()`` with an ``lseek`` system call (~100 for a
#: small CT header); one ``read`` into a ``BytesIO`` replaces them all.
IN_MEMORY_MAX = 1 << 20
_TOO_LONG = b"\xff"  # a deferred value where a short one belongs (see _raw)

# PS3.5 8.1 / 8.2, and Float / Double Float Pixel Data (PS3.3 C.7.6.24): what
# ``stop_before_pixels`` stops at, so what the positional check takes over.
_PIXEL_DATA = 0x7FE00010
_BITS_BY_PIXEL_TAG = {_PIXEL_DATA: None, 0x7FE00008: 32, 0x7FE00009: 64}
# PS3.5 7.5: item and sequence delimitation item tags.
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
# PS3.5 A.1-A.3, A.5: Pixel Data is native (its length follows from the image) only in these.
_NATIVE_SYNTAXES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
# Image Pixel module attributes the native Pixel Data length follows from (PS3.3 C.7.6.3).
_ROWS, _COLUMNS, _SAMPLES, _BITS_ALLOCATED = 0x00280010, 0x00280011, 0x00280002, 0x00280100
_FRAMES, _PHOTOMETRIC = 0x00280008, 0x00280004


@dataclass(frozen=True, slots=True)
class HeaderUIDs:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    #: what identifies the patient (``id:<Patient ID>``, else ``name:<Patient's Name>``), read
    #: raw: the audit trail names the patient by its pseudonym, never by this (nor a repr)
    patient_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    status: Status
    reason: str


def _raw(ds: Dataset, tag: int) -> bytes | str | None:
    """An element's value as received (bytes), or as pydicom already converted it; ``None``
    if absent. A deferred value (longer than ``_DEFER_SIZE``) is not read: no UI, US or IS
    value is that long, so it stands as :data:`_TOO_LONG`, which none of them accepts."""
    if tag not in ds:
        return None
    elem = ds.get_item(BaseTag(tag), keep_deferred=True)
    if isinstance(elem, RawDataElement):
        return _TOO_LONG if elem.value is None else elem.value
    value = elem.value if isinstance(elem, DataElement) else None
    return None if value is None else str(value)


def _text(ds: Dataset, tag: int) -> str | None:
    """A UI/CS/IS value as text, padding untouched (latin-1 never fails; the UID rule
    refuses anything that is not digits and dots)."""
    value = _raw(ds, tag)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _patient_key(ds: Dataset) -> str | None:
    """The patient as :func:`dicomgate.deid.patient_key` names it (Patient ID, else Patient's
    Name), from the raw values: no pydicom conversion, whose warnings could quote them. Equal to
    the engine's for ASCII values."""
    for tag, prefix in ((0x00100020, "id:"), (0x00100010, "name:")):
        value = _text(ds, tag)
        text = value.replace("\x00", " ").strip() if value is not None else ""
        if text or prefix == "name:":
            return prefix + text
    return None


def _uid(ds: Dataset, tag: int) -> str | None:
    text = _text(ds, tag)
    return None if text is None else strip_padding(text) or None


def _us(ds: Dataset, tag: int, little_endian: bool) -> int | None:
    """An Unsigned Short (raw: two bytes in the dataset's byte order), ``None`` if absent/odd."""
    value = _raw(ds, tag)
    if isinstance(value, bytes):
        if len(value) != 2:
            return None
        return int.from_bytes(value, "little" if little_endian else "big")
    return _is(ds, tag)


def _is(ds: Dataset, tag: int) -> int | None:
    """An Integer String as an int, ``None`` if absent or not an integer."""
    text = _text(ds, tag)
    try:
        return int(text.strip(" \x00")) if text is not None else None
    except ValueError:
        return None


def _truncated(elem: Any, data_end: int) -> bool:
    """True if a raw element's declared length runs past the data that arrived."""
    if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED_LENGTH:
        return False
    if elem.value is None:  # deferred: only its position and length were read
        return int(elem.value_tell) + int(elem.length) > data_end
    return len(elem.value) != elem.length


def _check_elements(
    ds: Dataset, data_end: int, *, deferred_readable: bool = True
) -> Refusal | None:
    """Every top-level element fits the data; sequences parse (a garbled nested structure
    fails here). Values stay raw: odd values are the pipeline's business.

    ``deferred_readable=False`` for a plain :class:`Dataset` read past Pixel Data, which
    cannot load a deferred value: a deferred sequence there is checked for fit only.
    """
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)  # raw: deferred values stay unread
        if _truncated(elem, data_end):
            return _runs_past(elem.tag)
        if elem.VR == "SQ" and (deferred_readable or elem.value is not None):
            _ = ds[elem.tag].value
    return None


def _cut_header_at_end(ds: Dataset, data_end: int) -> bool:
    """True if 1-7 bytes follow the last element: pydicom ends a dataset silently when fewer
    than 8 bytes are left, but every element (and delimiter) takes at least 8, so those bytes
    are the start of an element header that was cut off."""
    last_end = -1
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED_LENGTH:
            last_end = max(last_end, int(elem.value_tell) + int(elem.length))
    return last_end >= 0 and 0 < data_end - last_end < 8


def _runs_past(tag: int) -> Refusal:
    return Refusal(
        Status.CANNOT_UNDERSTAND,
        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end of the dataset",
    )


def _expected_native_length(ds: Dataset, tag: int, little_endian: bool) -> int | None:
    """Bytes native Pixel Data must have (PS3.5 8.1.1, PS3.3 C.7.6.3.1.2), or ``None`` if the
    Image Pixel attributes needed are missing or odd (not this check's business)."""
    rows = _us(ds, _ROWS, little_endian)
    columns = _us(ds, _COLUMNS, little_endian)
    samples = _us(ds, _SAMPLES, little_endian)
    bits = _us(ds, _BITS_ALLOCATED, little_endian) or _BITS_BY_PIXEL_TAG[tag]
    if not (rows and columns and samples and bits) or min(rows, columns, samples, bits) < 0:
        return None
    frames = _is(ds, _FRAMES)
    frames = frames if frames and frames > 0 else 1  # absent, 0 or unreadable: the least, 1
    length = (rows * columns * samples * frames * bits + 7) // 8  # 1-bit: packed, rounded up
    if samples == 3 and (_text(ds, _PHOTOMETRIC) or "").strip(" \x00") == "YBR_FULL_422":
        length = length // 3 * 2  # two chroma samples shared by each pair of pixels
    return length


_ReadAt = Callable[[int, int], bytes]  # (position, count) -> at most count bytes


def _reader(data: BinaryIO, fp: BinaryIO) -> _ReadAt:
    """Read a few bytes at a position: ``pread`` on the file itself (exactly those bytes, not
    a buffer-full of the fragment behind them), seek + read in an in-memory copy (a small file,
    or pydicom's inflated data set)."""
    if data is fp and not isinstance(fp, io.BytesIO):
        fd = fp.fileno()
        return lambda pos, count: os.pread(fd, count, pos)

    def read_at(pos: int, count: int) -> bytes:
        data.seek(pos)
        return data.read(count)

    return read_at


def _walk_fragments(read_at: _ReadAt, pos: int, data_end: int, endian: str) -> int | Refusal:
    """Seek through encapsulated Pixel Data (PS3.5 A.4) by item headers only, to the end of
    its Sequence Delimitation Item; fragment bytes are never read."""
    header = Struct(f"{endian}HHL")
    while True:
        head = read_at(pos, 8)
        if len(head) < 8:
            return Refusal(
                Status.CANNOT_UNDERSTAND,
                "encapsulated Pixel Data ends without its sequence delimitation item",
            )
        group, element, length = header.unpack(head)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return pos + 8
        if tag != _ITEM or length == _UNDEFINED_LENGTH:
            return Refusal(
                Status.CANNOT_UNDERSTAND,
                f"encapsulated Pixel Data holds ({group:04X},{element:04X}) where an item "
                "or the sequence delimitation item belongs",
            )
        pos += 8 + length
        if pos > data_end:
            return Refusal(
                Status.CANNOT_UNDERSTAND,
                "an encapsulated Pixel Data fragment runs past the end of the dataset",
            )


def _check_pixels_and_after(
    ds: Dataset, fp: BinaryIO, read_at: _ReadAt, pos: int, data_end: int, *, native: bool
) -> Refusal | None:
    """From where the header parse stopped (Pixel Data, or the end), check by position that
    Pixel Data and every element after it fit the data, and that native Pixel Data is as
    long as the image it describes (an unknown transfer syntax: fit only)."""
    implicit = ds.original_encoding[0] is True  # set by the read, as the file is encoded
    little = ds.original_encoding[1] is not False
    endian = "<" if little else ">"
    short_header = Struct(f"{endian}HH2sH")
    long_length = Struct(f"{endian}L")
    implicit_header = Struct(f"{endian}HHL")
    while pos < data_end:
        head = read_at(pos, 8)
        if len(head) < 8:
            return Refusal(Status.CANNOT_UNDERSTAND, "dataset ends inside an element header")
        group, element, vr, length = short_header.unpack(head)
        value_at = pos + 8
        if implicit or not (b"AA" <= vr <= b"ZZ"):
            # Implicit VR; or no VR where one belongs, which pydicom reads as an implicit VR
            # element (some writers switch, e.g. pydicom's SC_rgb_jpeg.dcm): measured alike.
            group, element, length = implicit_header.unpack(head)
        elif vr in _LONG_VRS:
            extra = read_at(pos + 8, 4)
            if len(extra) < 4:
                return Refusal(Status.CANNOT_UNDERSTAND, "dataset ends inside an element header")
            (length,) = long_length.unpack(extra)
            value_at = pos + 12
        tag = group << 16 | element
        if tag not in _BITS_BY_PIXEL_TAG:
            # Elements after Pixel Data (e.g. Data Set Trailing Padding, Digital Signatures):
            # parsed as the header was, up to the next Pixel Data element if any.
            fp.seek(pos)
            rest = read_dataset(fp, implicit, little, stop_when=_at_pixels, defer_size=_DEFER_SIZE)
            if (refused := _check_elements(rest, data_end, deferred_readable=False)) is not None:
                return refused
            if fp.tell() >= data_end and _cut_header_at_end(rest, data_end):
                return Refusal(Status.CANNOT_UNDERSTAND, "dataset ends inside an element header")
            if fp.tell() <= pos:  # a stray delimiter: pydicom stops there, so do we
                return None
            pos = fp.tell()
            continue
        if length == _UNDEFINED_LENGTH:
            if tag != _PIXEL_DATA:
                return Refusal(
                    Status.CANNOT_UNDERSTAND,
                    f"({group:04X},{element:04X}) has an undefined length: Float and Double "
                    "Float Pixel Data are never encapsulated (PS3.5 A.4)",
                )
            walked = _walk_fragments(read_at, value_at, data_end, endian)
            if isinstance(walked, Refusal):
                return walked
            pos = walked
            continue
        pos = value_at + length
        if pos > data_end:
            return _runs_past(tag)
        if native:
            expected = _expected_native_length(ds, tag, little)
            if expected is not None and length < expected:
                return Refusal(
                    Status.CANNOT_UNDERSTAND,
                    f"({group:04X},{element:04X}) has {length} bytes of pixels, Rows x Columns "
                    f"x Samples per Pixel x Bits Allocated x Number of Frames needs {expected}",
                )
    return None


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in _BITS_BY_PIXEL_TAG


def _quotable_sop_class(uid: str) -> str:
    """A SOP Class UID as it may appear in a log: registered ones only (a sender that put,
    say, its SOP Instance UID there must not get it logged)."""
    return uid if uid in UID_dictionary else "an unregistered UID"


def check_header(
    path: Path,
    *,
    request_sop_class_uid: str | None,
    request_sop_instance_uid: str | None,
    file_size: int | None = None,
) -> HeaderUIDs | Refusal:
    """Parse the header of a received file and check it against the C-STORE request.

    ``request_sop_class_uid=None`` skips the SOP Class match (used when re-reading our own
    spool files, which passed it on the way in); ``request_sop_instance_uid=None`` skips the
    SOP Instance match (a file with no request, e.g. ``dicomgate deidentify``'s input).
    ``file_size``, if the caller already has it, spares a stat of the file.
    """
    try:
        with path.open("rb") as raw:
            if file_size is None:
                file_size = os.fstat(raw.fileno()).st_size
            fp: BinaryIO = io.BytesIO(raw.read()) if file_size <= IN_MEMORY_MAX else raw
            # Pixel data (possibly gigabytes, possibly compressed) is neither read nor decoded.
            ds = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER_SIZE)
            # Deflated: the dataset pydicom inflated (positions are in it); else the file.
            data = cast(BinaryIO, ds.buffer) if ds.buffer is not None else fp
            stopped_at = data.tell()  # at the Pixel Data element's header, or the end
            data_end = file_size if data is fp else data.seek(0, os.SEEK_END)
            read_at = _reader(data, fp)
            if (refused := _check_elements(ds, data_end)) is not None:
                return refused
            if stopped_at >= data_end and _cut_header_at_end(ds, data_end):
                return Refusal(Status.CANNOT_UNDERSTAND, "dataset ends inside an element header")
            transfer_syntax = _uid(ds.file_meta, 0x00020010) or ""
            native = transfer_syntax in _NATIVE_SYNTAXES or not transfer_syntax
            refused = _check_pixels_and_after(
                ds, data, read_at, stopped_at, data_end, native=native
            )
            if refused is not None:
                return refused
            # (inside the ``with``: an oversized value was deferred and is read from ``fp``)
            uids = {kw: _uid(ds, tag) for kw, tag in _UIDS.items()}
            patient = _patient_key(ds)
    except Exception as exc:  # pydicom raises many kinds on garbage; none may escape
        return Refusal(Status.CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}")

    sop_class = uids["SOPClassUID"]
    if sop_class is None:
        return Refusal(Status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "dataset has no SOP Class UID")
    if request_sop_class_uid is not None and sop_class != strip_padding(request_sop_class_uid):
        return Refusal(
            Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
            f"dataset SOP Class UID ({_quotable_sop_class(sop_class)}) differs from the "
            f"request's ({_quotable_sop_class(strip_padding(request_sop_class_uid))})",
        )
    for keyword in _REQUIRED_UIDS:
        value = uids[keyword]
        if value is None:
            return Refusal(Status.INVALID_UID, f"{keyword} is missing")
        if not is_valid_uid(value):
            return Refusal(Status.INVALID_UID, f"{keyword} is not a valid UID")
    if request_sop_instance_uid is None:
        pass
    elif not is_valid_uid(strip_padding(request_sop_instance_uid)):
        return Refusal(Status.INVALID_UID, "the C-STORE request's SOP Instance UID is not valid")
    elif uids["SOPInstanceUID"] != strip_padding(request_sop_instance_uid):
        return Refusal(
            Status.INSTANCE_UID_MISMATCH,
            "dataset SOP Instance UID differs from the C-STORE request's",
        )
    return HeaderUIDs(
        sop_class_uid=sop_class,
        sop_instance_uid=uids["SOPInstanceUID"] or "",
        study_instance_uid=uids["StudyInstanceUID"] or "",
        series_instance_uid=uids["SeriesInstanceUID"] or "",
        transfer_syntax_uid=transfer_syntax,
        patient_key=patient,
    )
