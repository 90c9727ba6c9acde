"""Synthetic DICOM for tests and benchmarks (never real patient data).

Everything here is generated with pydicom: a CT study whose header is full of identifying values
(so de-identification and the PHI verifier have something to find), tiny instances, and large
multi-frame instances streamed to disk without holding the pixel data in memory.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "CT_PHI",
    "make_ct_instance",
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
