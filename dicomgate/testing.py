"""Synthetic DICOM for tests and benchmarks (never real patient data).

Everything here is generated with pydicom: a CT study whose header is full of identifying values
(so de-identification and the PHI verifier have something to find), tiny instances, large
multi-frame instances streamed to disk without holding the pixel data in memory, and
ultrasound-like and screen-capture images with identifying text rendered into their pixels
(Pillow), for the Clean Pixel Data Option.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

__all__ = [
    "BURNED_IN_TEXT",
    "CT_PHI",
    "BurnedText",
    "make_burned_in_instance",
    "make_ct_instance",
    "write_burned_in_corpus",
    "write_ct_study",
    "write_large_instance",
    "write_tiny_study",
]

# Identifying values planted in every generated CT instance. Fictional.
CT_PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-48213977",
    "PatientBirthDate": "19710304",
    "PatientSex": "F",
    "PatientAge": "053Y",
    "PatientAddress": "12 Harbour Lane, Springfield",
    "PatientTelephoneNumbers": "+1-555-0142",
    "OtherPatientIDs": "ALT-99120",
    "AccessionNumber": "ACC20240917001",
    "InstitutionName": "Springfield General Hospital",
    "InstitutionAddress": "1 Hospital Road, Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "TECH^ALEX",
    "StationName": "CT-SCANNER-07",
    "DeviceSerialNumber": "SN-77A9321",
    "StudyID": "S-55102",
    "StudyDescription": "CT CHEST W CONTRAST for Jane Doe",
    "ImageComments": "patient DOE^JANE^Q MRN-48213977 tolerated well",
}


def _base_dataset(
    sop_class_uid: str,
    study_uid: str,
    series_uid: str,
    sop_instance_uid: str,
    number: int,
    modality: str,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    ds.Modality = modality
    ds.InstanceNumber = number
    ds.SeriesNumber = 1
    ds.StudyDate = "20240917"
    ds.SeriesDate = "20240917"
    ds.ContentDate = "20240917"
    ds.AcquisitionDateTime = "20240917101530.123456"
    ds.StudyTime = "101500"
    ds.SeriesTime = "101510"
    ds.ContentTime = "101530"
    ds.Manufacturer = "Synthetic Imaging Co"
    ds.ManufacturerModelName = "FakeScan 9000"
    for keyword, value in CT_PHI.items():
        setattr(ds, keyword, value)
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _image_pixel_module(ds: Dataset, rows: int, columns: int) -> None:
    """12-bit monochrome in 16-bit words (PS3.3 C.7.6.3), and no burned-in text."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"


def make_ct_instance(
    study_uid: str,
    series_uid: str,
    number: int,
    *,
    rows: int = 512,
    columns: int = 512,
    sop_instance_uid: str | None = None,
    pixels: bytes | None = None,
) -> Dataset:
    """One CT Image Storage instance, Explicit VR Little Endian, full of (fictional) PHI."""
    ds = _base_dataset(
        CTImageStorage,
        study_uid,
        series_uid,
        sop_instance_uid or generate_uid(),
        number,
        "CT",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    _image_pixel_module(ds, rows, columns)
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = generate_uid(
        entropy_srcs=[study_uid, "study-component"]
    )
    ds.PixelData = pixels if pixels is not None else _frame(rows, columns, offset=number)
    ds.file_meta = _file_meta(ds)
    return ds


def write_ct_study(
    directory: Path,
    count: int,
    *,
    rows: int = 512,
    columns: int = 512,
    study_uid: str | None = None,
) -> list[Path]:
    """Write a ``count``-instance CT study (one series) under ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    base = _frame(rows, columns)
    paths = []
    for i in range(1, count + 1):
        ds = make_ct_instance(study_uid, series_uid, i, rows=rows, columns=columns, pixels=base)
        path = directory / f"CT{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_tiny_study(directory: Path, count: int) -> list[Path]:
    """``count`` small (~15 kB) CT instances: 64×96 pixels plus the header."""
    return write_ct_study(directory, count, rows=64, columns=96)


def _frame(rows: int, columns: int, offset: int = 0) -> bytes:
    """A 12-bit ramp, little endian 16-bit words (no numpy: the package does not need it)."""
    words = array("H", ((i + offset) & 0x0FFF for i in range(rows * columns)))
    if sys.byteorder == "big":
        words.byteswap()
    return words.tobytes()


def _frames(rows: int, columns: int, frames: int) -> Iterator[bytes]:
    frame = _frame(rows, columns)
    for _ in range(frames):
        yield frame


def write_large_instance(path: Path, *, frames: int, rows: int = 512, columns: int = 512) -> Path:
    """A multi-frame Secondary Capture instance streamed to ``path`` frame by frame.

    The header is written by pydicom; the Pixel Data element is appended by hand so memory stays
    at one frame however large the file (1 GB = 2,000 frames of 512×512×16-bit).
    """
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _base_dataset(SecondaryCaptureImageStorage, study_uid, series_uid, generate_uid(), 1, "OT")
    ds.ConversionType = "WSD"
    ds.NumberOfFrames = frames
    _image_pixel_module(ds, rows, columns)
    ds.file_meta = _file_meta(ds)
    ds.save_as(path, enforce_file_format=True)
    length = rows * columns * 2 * frames
    with path.open("ab") as f:
        # (7FE0,0010) OW, explicit VR LE: tag, VR, 2 reserved bytes, 4-byte length
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for frame in _frames(rows, columns, frames):
            f.write(frame)
    return path


# -- burned-in text ---------------------------------------------------------------------------

#: Identifying text rendered into generated images, by where devices usually put it (fictional).
BURNED_IN_TEXT = {
    "name": "DOE, JANE Q",
    "id": "MRN-48213977",
    "birth": "DOB 03/04/1971",
    "institution": "SPRINGFIELD GENERAL",
    "date": "09/17/2024",
    "time": "10:15:30",
    "accession": "ACC20240917001",
}


@dataclass(frozen=True)
class BurnedText:
    """One piece of text rendered into a generated image, and where (for the tests to check)."""

    text: str
    x: int
    y: int
    width: int
    height: int
    frames: tuple[int, ...]
    """0-based frames that show it."""


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _us_background(rows: int, columns: int, frame: int, seed: int) -> np.ndarray:
    """A fan-shaped sector of speckle on black (what a B-mode ultrasound looks like)."""
    rng = np.random.default_rng(seed + frame)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    apex_x, apex_y = columns / 2, rows * 0.12
    radius = np.hypot(x - apex_x, y - apex_y)
    angle = np.abs(np.arctan2(x - apex_x, y - apex_y))
    inside = (angle < 0.6) & (radius > rows * 0.05) & (radius < rows * 0.82)
    speckle = rng.gamma(2.0, 30.0, size=(rows, columns)).astype(np.float32)
    # a moving structure, so frames differ where the anatomy is (as in a real cine)
    blob = np.hypot(x - apex_x - 20 * np.sin(frame / 2), y - rows * 0.5) < rows * 0.12
    image = np.where(inside, np.clip(speckle * np.where(blob, 0.3, 1.0), 0, 200), 0)
    out: np.ndarray = image.astype(np.uint8)
    return out


def make_burned_in_instance(
    kind: Literal["us", "sc"] = "us",
    *,
    frames: int = 1,
    rgb: bool = False,
    rows: int = 480,
    columns: int = 640,
    font_size: int = 18,
    text_frames: Seq[int] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    text: bool = True,
    seed: int = 0,
    manufacturer: str = "Synthetic Imaging Co",
    model: str = "FakeSono 3",
) -> tuple[Dataset, list[BurnedText]]:
    """An image with identifying text in its pixels, and where that text is.

    ``kind="us"``: an ultrasound (speckle sector on black, white text: institution and patient
    name top left, ID and birth date under them, date and time top right, accession bottom
    left).  ``kind="sc"``: a screen capture (a light window with a dark title bar, dark text in
    the window, white text in the bar).  ``text_frames`` limits the text to those 0-based
    frames (default: every frame); ``text=False`` renders none.  Burned In Annotation is left
    out, as most such files in the wild do.  ``transfer_syntax`` may be RLE Lossless.
    """
    font = _font(font_size)
    shown = tuple(range(frames)) if text_frames is None else tuple(text_frames)
    pad = max(4, font_size // 2)
    line = font_size + font_size // 3
    t = BURNED_IN_TEXT
    if kind == "us":
        places = [
            (t["institution"], pad, pad, 255),
            (t["name"], pad, pad + line, 255),
            (t["id"], pad, pad + 2 * line, 255),
            (t["birth"], pad, pad + 3 * line, 255),
            (t["date"], -pad, pad, 255),
            (t["time"], -pad, pad + line, 255),
            (t["accession"], pad, -pad, 255),
        ]
    else:
        places = [
            (f"{t['name']}  {t['id']}", pad, pad, 255),  # in the title bar
            (t["institution"], pad, 3 * line, 0),
            (t["birth"], pad, 4 * line, 0),
            (f"{t['date']} {t['time']}", -pad, 5 * line, 0),
            (t["accession"], pad, -pad, 0),
        ]
    burned: list[BurnedText] = []
    layers = []
    for f in range(frames):
        if kind == "us":
            base = _us_background(rows, columns, f, seed)
        else:
            base = np.full((rows, columns), 225, dtype=np.uint8)
            base[: 2 * line, :] = 40  # title bar
            gradient = np.linspace(60, 200, columns // 2, dtype=np.float32)[np.newaxis, :]
            y0, y1 = 6 * line + pad, rows - line - 2 * pad  # below the text, above the last line
            base[y0:y1, columns // 4 : columns // 4 + gradient.shape[1]] = gradient.astype(np.uint8)
        picture = Image.fromarray(base)
        if text and f in shown:
            draw = ImageDraw.Draw(picture)
            for words, x, y, ink in places:
                box = draw.textbbox((0, 0), words, font=font)
                left, top, right, bottom = (int(v) for v in box)
                width, height = right - left, bottom - top
                px = x if x >= 0 else columns + x - width
                py = y if y >= 0 else rows + y - height
                draw.text((px - left, py - top), words, fill=ink, font=font)
                if f == shown[0]:
                    burned.append(BurnedText(words, px, py, width, height, shown))
        layers.append(np.asarray(picture))
    gray = np.stack(layers)
    if rgb:
        tint = np.array([1.0, 0.95, 0.85], dtype=np.float32)
        pixels = (gray[..., np.newaxis].astype(np.float32) * tint).clip(0, 255).astype(np.uint8)
    else:
        pixels = gray

    sop_class = UltrasoundImageStorage if frames == 1 else UltrasoundMultiFrameImageStorage
    if kind == "sc":
        sop_class = SecondaryCaptureImageStorage
    modality = "US" if kind == "us" else "OT"
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _base_dataset(sop_class, study_uid, series_uid, generate_uid(), 1, modality)
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    if kind == "sc":
        ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = 0x00181063
    ds.PixelData = pixels.tobytes()
    ds.file_meta = _file_meta(ds)
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless, pixels if frames > 1 else pixels[0], generate_instance_uid=False)
    elif transfer_syntax != ExplicitVRLittleEndian:
        raise ValueError("transfer_syntax: Explicit VR Little Endian or RLE Lossless")
    return ds, burned


def write_burned_in_corpus(directory: Path, count: int, *, frames: int = 1) -> list[Path]:
    """``count`` generated ultrasound and screen-capture instances with burned-in text.

    Alternates grayscale ultrasound, RGB ultrasound and grayscale screen captures (640×480),
    each ``frames`` frames, Explicit VR Little Endian (the benchmark's burned-in corpus).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        kind: Literal["us", "sc"] = "sc" if i % 3 == 2 else "us"
        ds, _ = make_burned_in_instance(kind, frames=frames, rgb=i % 3 == 1, seed=i)
        path = directory / f"BI{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
