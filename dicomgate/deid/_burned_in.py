"""Burned-in text: find it and black it out (PS3.15 E.3.1, Clean Pixel Data Option).

An instance *may* show identifying text in its pixels when Burned In Annotation (0028,0301) is
YES, or when it is not NO on a kind of image that usually has text without saying so (a suspect
modality or SOP class: ultrasound, secondary and screen captures, visible light).  What happens
then is the site's ``burned_in_policy``:

* ``clean`` (default): decode every frame, black out the per-device fixed regions
  (:class:`~dicomgate.deid.pixels.RegionTable`), find text with OCR and black out every box found
  (with a margin) on every frame, write the pixels back (:mod:`dicomgate.deid.pixels._codec`),
  then — only then — set Burned In Annotation to NO and record CID 7050 113101 Clean Pixel Data
  Option.  Pixels in which nothing was found or masked are left exactly as they were (not
  re-encoded).  Only pixels that cannot be decoded or analysed are quarantined.
* ``quarantine``: hold every such instance back, with the reason.
* ``allow``: deliver it unchanged (the site takes responsibility).

Quarantine reasons start with ``burned-in:`` (:class:`dicomgate.quarantine.Rule`), name the
rule and, for pixels, the frame — never a value.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from dicomgate.deid._method import record_clean_pixel_data
from dicomgate.deid._profile import BurnedInPolicy
from dicomgate.deid.pixels._codec import (
    PixelError,
    black_value,
    decode,
    encode_into,
    gray_frames,
    put,
)
from dicomgate.deid.pixels._ocr import OcrError, scan_frames
from dicomgate.deid.pixels._regions import Rect, RegionTable

__all__ = [
    "BURNED_IN_POLICIES",
    "SUSPECT_SOP_CLASSES",
    "BurnedInPolicy",
    "CleanReport",
    "burned_in_suspicion",
    "clean_burned_in",
    "clean_pixels",
]

BURNED_IN_POLICIES: tuple[BurnedInPolicy, ...] = ("clean", "quarantine", "allow")

#: SOP classes that often carry burned-in text (PS3.4 Annex B storage SOP classes): secondary
#: capture, ultrasound, and visible-light video/photography.
SUSPECT_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
}

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
#: Around each word box: a fixed part (anti-aliasing, accents), plus a quarter of its height
#: above and below (tesseract's boxes hug the ink) and two heights left and right (the last
#: glyphs of a word that runs onto the image, which tesseract reads as part of the speckle).
_MARGIN_PIXELS = 2


def _around(box: Rect) -> Rect:
    dy, dx = _MARGIN_PIXELS + box.height // 4, _MARGIN_PIXELS + 2 * box.height
    return Rect(box.x - dx, box.y - dy, box.width + 2 * dx, box.height + 2 * dy)


def burned_in_suspicion(ds: Dataset, suspect_modalities: frozenset[str]) -> str | None:
    """Why the pixels of ``ds`` may show burned-in text (a value-free phrase), or None."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    said = "missing" if not flag else "not YES or NO"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in suspect_modalities:
        return f"modality {modality}, BurnedInAnnotation {said}"
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if sop_class in SUSPECT_SOP_CLASSES:
        return f"{SUSPECT_SOP_CLASSES[sop_class]}, BurnedInAnnotation {said}"
    return None


@dataclass
class CleanReport:
    """What :func:`clean_pixels` did to one instance, and what it cost (seconds)."""

    frames: int = 0
    frames_read: int = 0
    """Frames OCR read, whole or where they differ from the frame before."""
    pixels_read: int = 0
    fixed_regions: int = 0
    text_regions: int = 0
    text_frames: tuple[int, ...] = ()
    changed: bool = False
    """The pixels were modified and written back (False: left exactly as received)."""
    transfer_syntax: str | None = None
    """The output's transfer syntax when ``changed``."""
    decode_seconds: float = 0.0
    ocr_seconds: float = 0.0
    encode_seconds: float = 0.0


def _fill(frames: np.ndarray, rects: list[Rect], value: object) -> None:
    for r in rects:
        frames[:, r.y : r.y + r.height, r.x : r.x + r.width] = value


def clean_pixels(src: Dataset, out: Dataset, regions: RegionTable) -> CleanReport:
    """Black out fixed regions and OCR-found text on every frame of ``src`` into ``out``.

    ``out`` is modified in place (Pixel Data, Photometric Interpretation, Lossy Image
    Compression, File Meta transfer syntax) only when something was blacked out.  Raises
    :class:`PixelError` (value-free) when the pixels cannot be decoded or analysed.
    """
    report = CleanReport()
    start = time.perf_counter()
    decoded = decode(src)
    frames = decoded.frames
    if not frames.flags.writeable:
        frames = decoded.frames = frames.copy()
    count, rows, columns = frames.shape[:3]
    report.frames = count
    report.decode_seconds = time.perf_counter() - start
    fixed = [r.clip(rows, columns) for r in regions.regions_for(src)]
    fixed_rects = [r for r in fixed if r is not None]
    black = black_value(decoded, src)
    _fill(frames, fixed_rects, black)
    report.fixed_regions = len(fixed_rects)

    start = time.perf_counter()
    try:
        scan = scan_frames(count, gray_frames(decoded, src))
    except OcrError as exc:
        raise PixelError(f"pixel data cannot be analysed ({exc})") from None
    report.ocr_seconds = time.perf_counter() - start
    report.frames_read, report.pixels_read = scan.frames_read, scan.pixels_read
    report.text_frames = scan.text_frames
    masks = []
    for box in scan.boxes:
        grown = _around(box).clip(rows, columns)
        if grown is not None:
            masks.append(grown)
    _fill(frames, masks, black)
    report.text_regions = len(masks)
    if not masks and not fixed_rects:
        return report

    start = time.perf_counter()
    try:
        report.transfer_syntax = str(encode_into(out, decoded))
    except Exception as exc:
        where = f"{len(masks)} text regions on frames {_frames(scan.text_frames, count)}"
        raise PixelError(
            f"pixel data cannot be written back ({where}: {type(exc).__name__})"
        ) from None
    report.encode_seconds = time.perf_counter() - start
    report.changed = True
    return report


def _frames(numbers: tuple[int, ...], count: int) -> str:
    if not numbers:
        return f"none of {count}"
    shown = ", ".join(str(n) for n in numbers[:5]) + (", ..." if len(numbers) > 5 else "")
    return f"{shown} of {count}"


def clean_burned_in(
    src: Dataset,
    out: Dataset,
    *,
    policy: BurnedInPolicy,
    regions: RegionTable,
    suspect_modalities: frozenset[str],
    report: CleanReport | None = None,
) -> str | None:
    """Apply ``burned_in_policy`` to the de-identified ``out`` of ``src``: None, or a reason.

    Call it after the attribute walk, once ``out`` has its File Meta Information (its transfer
    syntax is updated when the pixels are re-encoded).  ``src`` is only read.  ``out`` is
    modified in place under ``clean``; the returned string is a quarantine reason (``burned-in:
    ...``, naming the rule, never a value).  ``report``, when given, is filled in (benchmarks).
    """
    if policy == "allow":
        return None
    why = burned_in_suspicion(src, suspect_modalities)
    if why is None:
        return None
    if policy == "quarantine":
        return f"burned-in: {why} (burned_in_policy is quarantine)"
    if policy != "clean":
        raise ValueError(f"unknown burned_in_policy {policy!r}")
    if not any(tag in src for tag in _PIXEL_TAGS):
        return None  # no pixels, no burned-in text
    try:
        done = clean_pixels(src, out, regions)
    except PixelError as exc:
        return f"burned-in: {exc}"
    if report is not None:
        report.__dict__.update(done.__dict__)
    put(out, "BurnedInAnnotation", "NO")  # a new element: ``src``'s may be shared with ``out``
    record_clean_pixel_data(out)
    return None
