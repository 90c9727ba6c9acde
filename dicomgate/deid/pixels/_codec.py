"""Pixel data in and out: decode every frame to numpy, write the cleaned frames back.

Decoding uses pydicom 3's decoders with the pylibjpeg plugins (libjpeg: JPEG baseline, extended,
lossless and JPEG-LS; openjpeg: JPEG 2000 and HTJ2K; rle), so every transfer syntax the node
accepts (``dicomgate.scp.TRANSFER_SYNTAXES``) decodes.  Colour comes out as RGB: YBR_FULL(_422)
is converted (``as_rgb``) and the JPEG 2000 decoder undoes the RCT/ICT itself, so the output says
RGB (PS3.3 C.7.6.3.1.2) — never YBR over RGB samples.

Writing back (PS3.5 8 and A.4): the original transfer syntax when it is lossless and an encoder
exists (native little endian, RLE Lossless, JPEG 2000 Lossless), otherwise Explicit VR Little
Endian.  Big endian (retired) becomes little endian, and then every other value whose byte
order is the transfer syntax's (OW, OL, OF, OD, OV: palette colour LUT data, segmented LUTs,
LUT Data, overlays, at any depth) has its words swapped too — pydicom's writer converts numbers
(US, FL, ...) but writes these bytes as they are.  When the source was lossy, Lossy Image
Compression becomes ``01`` with its method (PS3.3 C.7.6.1.1.5): the pixels were lossy once and
stay so whatever the output's transfer syntax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import compress, pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = [
    "Decoded",
    "PixelError",
    "black_value",
    "decode",
    "encode_into",
    "gray_frames",
    "put",
]

#: Native transfer syntaxes written back as they were (little endian, so nothing to convert).
_KEPT_NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian,
                          DeflatedExplicitVRLittleEndian})  # fmt: skip
#: Lossless compressed syntaxes pydicom 3 (+ pylibjpeg) can also encode.
_REENCODED = frozenset({RLELossless, JPEG2000Lossless})
#: Lossy syntaxes and their Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1 defined terms).
_LOSSY_METHOD = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    HTJ2K: "ISO_15444_15",
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 (PS3.3 C.7.6.3.1.2)
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXELS = (0x7FE00008, 0x7FE00009)  # Float / Double Float Pixel Data
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)


class PixelError(Exception):
    """The pixels cannot be decoded or written back; ``str()`` is a value-free reason."""


@dataclass
class Decoded:
    """Every frame of one instance, decoded."""

    frames: np.ndarray
    """(frames, rows, columns) or (frames, rows, columns, samples), pixel-interleaved."""
    photometric: str
    """Photometric Interpretation of ``frames`` (RGB for decoded YBR)."""
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    source_syntax: UID
    lossy: bool
    """The source pixels went through lossy compression (transfer syntax or the header says so)."""

    @property
    def samples(self) -> int:
        return 1 if self.frames.ndim == 3 else int(self.frames.shape[3])


def transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax ``ds`` was read in (File Meta, else how it was encoded)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else UID("1.2.840.10008.1.2.2")


def _j2k_reversible(ds: Dataset) -> bool | None:
    """Whether the first JPEG 2000 codestream uses the reversible 5/3 wavelet (COD, T.800 A.6.1).

    None when it cannot be told.  Transfer syntax 1.2.840.10008.1.2.4.91 allows both.
    """
    try:
        value = ds.PixelData
        first = next(generate_fragments(value))[:4096]
    except Exception:
        return None
    at = first.find(b"\xff\x52")  # COD marker
    # Lcod(2) Scod(1) SGcod: progression(1) layers(2) MCT(1); SPcod: levels(1) xcb(1) ycb(1)
    # style(1) transform(1): 1 = 5/3 reversible, 0 = 9/7 irreversible
    transform_at = at + 2 + 2 + 1 + 4 + 4
    if at < 0 or transform_at >= len(first):
        return None
    return first[transform_at] == 1


def _was_lossy(ds: Dataset, ts: UID) -> bool:
    if str(ds.get("LossyImageCompression", "") or "").strip() == "01":
        return True
    if ts in (JPEG2000, HTJ2K):
        return _j2k_reversible(ds) is not True
    return ts in _LOSSY_METHOD


def decode(ds: Dataset) -> Decoded:
    """Decode every frame of ``ds`` (not modified).  Raises :class:`PixelError`."""
    if any(tag in ds for tag in _FLOAT_PIXELS):
        raise PixelError("float pixel data cannot be analysed")
    ts = transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        name = ts.name if ts.is_transfer_syntax else "unknown"
        raise PixelError(f"pixel data cannot be decoded (transfer syntax {name})") from None
    if not decoder.is_available:
        raise PixelError(f"pixel data cannot be decoded (transfer syntax {ts.name}: no decoder)")
    try:
        options: dict[str, Any] = {"as_rgb": True}
        arr, meta = decoder.as_array(ds, **options)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # BaseException: a Rust decoder (pylibjpeg-rle) panics on a corrupt RLE segment, and
        # pyo3's PanicException is not an Exception (found by fuzzing; it ended the worker)
        raise PixelError(
            f"pixel data cannot be decoded (transfer syntax {ts.name}: {type(exc).__name__})"
        ) from None
    count = int(meta.get("number_of_frames", 1) or 1)
    samples = int(meta.get("samples_per_pixel", 1) or 1)
    if count == 1 and arr.ndim == (3 if samples > 1 else 2):
        arr = arr[np.newaxis]
    if arr.ndim != (4 if samples > 1 else 3):
        raise PixelError(f"pixel data cannot be analysed (unexpected shape, {arr.ndim} axes)")
    return Decoded(
        frames=arr,
        photometric=str(meta.get("photometric_interpretation", ds.PhotometricInterpretation)),
        bits_allocated=int(meta.get("bits_allocated", ds.BitsAllocated)),
        bits_stored=int(meta.get("bits_stored", ds.get("BitsStored", ds.BitsAllocated))),
        pixel_representation=int(meta.get("pixel_representation", 0) or 0),
        source_syntax=ts,
        lossy=_was_lossy(ds, ts),
    )


def _palette_luminance(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Luminance of palette indices through the instance's colour LUTs (PS3.3 C.7.9), in the
    LUTs' own units (some files' 16-bit LUTs hold 8-bit values: only the order matters)."""
    rgb = apply_color_lut(values, ds)[..., :3].astype(np.float32)
    out: np.ndarray = rgb @ _LUMA
    return out


def black_value(decoded: Decoded, ds: Dataset) -> Any:
    """The sample value(s) that display as black for this image (what a mask is filled with)."""
    frames, photometric = decoded.frames, decoded.photometric
    signed = decoded.pixel_representation == 1
    if photometric == "MONOCHROME1":  # unsigned: the top of Bits Stored; signed: the data's top
        return frames.max() if signed else np.array((1 << decoded.bits_stored) - 1, frames.dtype)
    if photometric == "MONOCHROME2":
        return frames.min() if signed else np.zeros((), dtype=frames.dtype)
    if photometric == "PALETTE COLOR":
        values = np.unique(frames)
        return values[int(np.argmin(_palette_luminance(values, ds)))]
    if photometric.startswith("YBR"):  # only when a decoder left YBR (Y = 0, no chroma)
        mid = 1 << (decoded.bits_stored - 1)
        return np.array([0, mid, mid], dtype=frames.dtype)
    return np.zeros(decoded.samples, dtype=frames.dtype)  # RGB and anything else


def gray_frames(decoded: Decoded, ds: Dataset) -> Callable[[int], np.ndarray]:
    """``f(i)``: frame ``i`` as 8-bit grey as displayed (bright = white), for OCR.

    Monochrome is stretched over the instance's own range (not each frame's: unchanged pixels
    must stay equal from frame to frame), MONOCHROME1 inverted; palette colour goes through its
    LUTs; colour uses the BT.601 luminance.
    """
    frames, photometric = decoded.frames, decoded.photometric
    if photometric == "PALETTE COLOR":
        values = np.unique(frames)
        luminance = _palette_luminance(values, ds)
        luminance *= 255.0 / (float(luminance.max()) or 1.0)
        table = np.zeros(int(values.max()) + 1, dtype=np.uint8)
        table[values] = luminance.clip(0, 255).astype(np.uint8)
        return lambda i: table[frames[i]]
    if decoded.samples >= 3:
        factor = 1.0 if frames.dtype == np.uint8 else 255.0 / ((1 << decoded.bits_stored) - 1)
        weights = _LUMA * np.float32(factor)
        return lambda i: (
            (frames[i][..., :3].astype(np.float32) @ weights).clip(0, 255).astype(np.uint8)
        )
    lo, hi = float(frames.min()), float(frames.max())
    span = (hi - lo) or 1.0
    invert = photometric == "MONOCHROME1"

    def mono(i: int) -> np.ndarray:
        gray = (frames[i].astype(np.float32) - lo) * (255.0 / span)
        out: np.ndarray = (255.0 - gray if invert else gray).clip(0, 255).astype(np.uint8)
        return out

    return mono


def _native_bytes(decoded: Decoded) -> bytes:
    """The frames as native little-endian Pixel Data (PS3.5 8.1.1), padded to even length."""
    frames = decoded.frames
    if decoded.bits_allocated == 1:
        data = pack_bits(frames.astype(np.uint8).ravel())
    else:
        kind = "i" if decoded.pixel_representation else "u"
        dtype = np.dtype(f"<{kind}{decoded.bits_allocated // 8}")
        data = np.ascontiguousarray(frames.astype(dtype, copy=False)).tobytes()
    return data + b"\x00" if len(data) % 2 else data


def _target(source: UID) -> UID:
    if source in _KEPT_NATIVE or source in _REENCODED:
        return source
    return ExplicitVRLittleEndian


#: VRs whose values are words in the transfer syntax's byte order, by word size (PS3.5 7.3);
#: OB and UN are byte streams (UN values are not swapped, PS3.5 6.2.2).
_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swapped(value: bytes, size: int) -> bytes:
    whole = len(value) - len(value) % size  # a malformed odd tail stays as it is
    words = np.frombuffer(value, dtype=f"u{size}", count=whole // size)
    return words.byteswap().tobytes() + value[whole:]


def _swap_words(ds: Dataset, *, own: bool) -> Dataset | None:
    """``ds`` with every word value (:data:`_WORD_SIZE`) byte-swapped, at any depth.

    Swapped elements are new elements, and a sequence holding one gets new items: elements
    and items may be shared with the source dataset, which must not change.  ``own``: ``ds``
    itself may be modified (returned); otherwise a changed ``ds`` is a shallow copy, and None
    means nothing in it needed swapping.
    """
    changes: list[DataElement] = []
    for tag, elem in list(ds._dict.items()):
        vr, value = elem.VR, elem.value
        if vr == "SQ":
            decoded = elem if isinstance(elem, DataElement) else ds[tag]  # raw: decoded
            items = cast(list[Dataset], decoded.value)
            new_items = [_swap_words(item, own=False) for item in items]
            if any(i is not None for i in new_items):
                seq = [i if n is None else n for n, i in zip(new_items, items, strict=True)]
                changes.append(DataElement(tag, "SQ", Sequence(seq)))
        elif vr in _WORD_SIZE and isinstance(value, bytes) and value:
            changes.append(DataElement(tag, vr, _swapped(value, _WORD_SIZE[vr])))
    if not changes:
        return ds if own else None
    out = ds
    if not own:
        out = Dataset(dict(ds._dict))  # a copy: Dataset(ds) would share ds's dict
        implicit, little = ds.original_encoding
        out.set_original_encoding(implicit, little, ds.original_character_set)
    for new in changes:
        out[new.tag] = new
    return out


def put(ds: Dataset, keyword: str, value: object) -> None:
    """``ds.<keyword> = value`` with a new element: the de-identified dataset shares the
    elements it kept with its source (never copied), and assigning to an existing element would
    change the source too."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    ds[tag] = DataElement(tag, dictionary_VR(tag), value)


def encode_into(out: Dataset, decoded: Decoded) -> UID:
    """Write ``decoded`` as the Pixel Data of ``out`` (in place); return the transfer syntax used.

    ``out``'s Image Pixel attributes must describe the source (they are kept by the profile);
    Photometric Interpretation and Planar Configuration are set to what ``decoded`` holds.
    """
    for tag in (*_EXTENDED_OFFSETS, _PIXEL_DATA):  # new elements, not the source's (put)
        if tag in out:
            del out[tag]
    if not decoded.source_syntax.is_little_endian:  # every target syntax is little endian
        _swap_words(out, own=True)
    put(out, "PhotometricInterpretation", decoded.photometric)
    if decoded.samples > 1:
        put(out, "PlanarConfiguration", 0)
    if not hasattr(out, "file_meta"):
        out.file_meta = FileMetaDataset()
    target = _target(decoded.source_syntax)
    if target in _REENCODED:
        try:
            arr = decoded.frames[0] if decoded.frames.shape[0] == 1 else decoded.frames
            colour = target == JPEG2000Lossless and decoded.samples == 3
            compress(out, target, arr, generate_instance_uid=False, use_mct=colour)
            if colour:
                # PS3.5 8.2.4: with the reversible colour transform the codestream holds
                # YBR_RCT, and IODs such as US Image require it for JPEG 2000 (PS3.3 C.8.5.6)
                put(out, "PhotometricInterpretation", "YBR_RCT")
        except Exception:
            target = ExplicitVRLittleEndian
    if target not in _REENCODED:
        vr = "OB" if decoded.bits_allocated <= 8 else "OW"
        out[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, _native_bytes(decoded))
        out.file_meta.TransferSyntaxUID = target
    if decoded.lossy:
        put(out, "LossyImageCompression", "01")
        method = _LOSSY_METHOD.get(decoded.source_syntax)
        if "LossyImageCompressionMethod" not in out and method is not None:
            put(out, "LossyImageCompressionMethod", method)
    if out.original_encoding != (target.is_implicit_VR, target.is_little_endian):
        out.set_original_encoding(None, None)  # the writer re-encodes every element
    return target
