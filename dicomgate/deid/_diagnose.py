"""Why a dataset broke the node's code: an input problem (named), or ``None`` (a bug).

Run only *after* something failed (:func:`dicomgate.pipeline._work.process_instance`,
:func:`dicomgate.deid.deidentify_file`): the happy path never pays for it, since the engine
copies kept elements as read, undecoded. Found by fuzzing (``tests/fuzz``): a sender can put
an element on the wire whose value its VR cannot hold (an odd number of bytes for US, a UI
with an OB VR), a value pydicom decodes but cannot encode again (an IS that is not a number),
a standard attribute under a VR the standard does not give it, Pixel Data
not encapsulated under a compressed transfer syntax, or a transfer syntax pydicom cannot
write. pydicom raises on each (``BytesLengthException``, ``NotImplementedError``,
``ValueError``, ``TypeError``...) only when the value is first touched — anywhere in the
engine, the verifier or the writer.

Reasons name tags and VRs, never a value (promise 2 covers logs and quarantine reasons).
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import UID

__all__ = ["diagnose"]

#: VRs pydicom reads as raw bytes: any length is acceptable, nothing to decode
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
_MAX_DEPTH = 64


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _vr_mismatch(tag: int, vr: str) -> str | None:
    """A public attribute the standard gives other VRs (UN and private tags are fine)."""
    if vr == "UN" or (tag >> 16) % 2 or tag & 0xFFFF == 0:
        return None
    try:
        allowed = dictionary_VR(tag)
    except KeyError:
        return None
    if vr in allowed.split(" or ") or allowed == "NONE":
        return None
    return f"{_tag(tag)} has VR {vr}, the standard gives it {allowed}"


def _writable(elem: DataElement, encodings: str | list[str]) -> bool:
    """Whether pydicom can write the decoded value again (an IS or DS that is not a number,
    text its character set cannot encode: the writer raises on those)."""
    if elem.VR in _BYTES_VRS or elem.VR == "SQ":
        return True
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    try:
        write_data_element(fp, elem, encodings)
    except Exception:
        return False
    return True


def _walk(ds: Dataset, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        return "sequences nested too deeply"
    mismatch: str | None = None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = str(raw.VR) if raw.VR is not None else "UN"
        try:
            elem = ds[tag]  # decodes a raw element: pydicom raises here on a bad value
        except Exception as exc:
            return f"{_tag(int(tag))} ({vr}) cannot be decoded ({type(exc).__name__})"
        if not _writable(elem, ds._character_set):
            return f"{_tag(int(tag))} ({elem.VR}) cannot be encoded again"
        # as decoded: pydicom reads a UN element of a known attribute as its VR
        mismatch = mismatch or _vr_mismatch(int(tag), str(elem.VR))
        if elem.VR == "SQ":
            for item in elem.value or ():
                if not isinstance(item, Dataset):
                    return f"{_tag(int(tag))} holds something other than items"
                if (found := _walk(item, depth + 1)) is not None:
                    return found
    return mismatch


def _transfer_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        return None
    ts = UID(str(ts))
    if not ts.is_transfer_syntax or ts.is_private:
        return "the transfer syntax is not one this node can write"
    pixels = ds.get_item(0x7FE00010)
    if ts.is_compressed and pixels is not None:
        if isinstance(pixels, RawDataElement):
            encapsulated = pixels.length == 0xFFFFFFFF
        else:  # by its value: the writer may have flagged the (shared) element undefined
            value = pixels.value
            encapsulated = isinstance(value, bytes) and value[:4] == b"\xfe\xff\x00\xe0"
        if not encapsulated:
            return "Pixel Data is not encapsulated, as its compressed transfer syntax requires"
    return None


def diagnose(ds: Dataset | None) -> str | None:
    """The input problem that explains a failure on ``ds``, or ``None`` if there is none (then
    the failure is the node's bug). Never raises."""
    if ds is None:
        return None
    try:
        return _transfer_syntax(ds) or _walk(ds, 0)
    except Exception as exc:  # a dataset too broken even to walk
        return f"dataset cannot be walked ({type(exc).__name__})"
