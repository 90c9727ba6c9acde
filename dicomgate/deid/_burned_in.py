"""Burned-in text: instances whose pixels may show identifying text are quarantined.

PS3.15 E.3.1 (Clean Pixel Data Option) needs the pixels cleaned; we do not clean pixels, so an
instance that says it has burned-in annotation, or that belongs to a kind that often has it
without saying NO, is quarantined with a reason unless the site allows it explicitly.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["SUSPECT_SOP_CLASSES", "burned_in_reason"]

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


def burned_in_reason(ds: Dataset, *, allow: bool, suspect_modalities: frozenset[str]) -> str | None:
    """Why ``ds`` must be quarantined for burned-in text, or None if it may go on."""
    if allow:
        return None
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "burned-in annotation: BurnedInAnnotation is YES"
    if flag == "NO":
        return None
    said = "missing" if not flag else repr(flag)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in suspect_modalities:
        return f"burned-in annotation suspected: modality {modality}, BurnedInAnnotation {said}"
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if sop_class in SUSPECT_SOP_CLASSES:
        return (
            f"burned-in annotation suspected: {SUSPECT_SOP_CLASSES[sop_class]}, "
            f"BurnedInAnnotation {said}"
        )
    return None
