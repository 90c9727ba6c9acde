"""Pseudonyms are a pure function of (value, key): across processes, references and dates."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomgate.config import DeidOption
from dicomgate.deid import DeidConfig, FileResult, deidentify, deidentify_file
from dicomgate.testing import make_ct_instance
from tests.deid.helpers import KEY, OTHER_KEY, profile, pseudonymizer

MODIFIED = [DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES]


def _write(tmp_path: Path) -> Path:
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_same_key_two_processes_identical_output(tmp_path: Path) -> None:
    """Two fresh interpreter processes produce byte-identical files with the same key."""
    source = _write(tmp_path)
    config = DeidConfig(key=KEY, options=tuple(MODIFIED))
    ctx = multiprocessing.get_context("spawn")
    results: list[FileResult] = []
    for name in ("a.dcm", "b.dcm"):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            results.append(pool.submit(deidentify_file, source, tmp_path / name, config).result())
    assert all(r.ok for r in results), results
    assert results[0].sha256 == results[1].sha256
    assert results[0].sop_instance_uid == results[1].sop_instance_uid
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    local = deidentify_file(source, tmp_path / "c.dcm", config)
    assert local.sha256 == results[0].sha256


def test_other_key_gives_unrelated_pseudonyms(tmp_path: Path) -> None:
    """Another key maps UIDs, patient ID/name and the date offset differently."""
    source = _write(tmp_path)
    one = deidentify_file(source, tmp_path / "1.dcm", DeidConfig(key=KEY, options=tuple(MODIFIED)))
    two = deidentify_file(
        source, tmp_path / "2.dcm", DeidConfig(key=OTHER_KEY, options=tuple(MODIFIED))
    )
    a, b = dcmread(tmp_path / "1.dcm"), dcmread(tmp_path / "2.dcm")
    assert one.sop_instance_uid != two.sop_instance_uid
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.PatientID != b.PatientID
    assert a.PatientName != b.PatientName
    assert a.StudyDate != b.StudyDate


def test_references_map_to_the_instances_they_point_to() -> None:
    """A UID referenced inside a sequence maps to the referenced instance's new UID."""
    study, series = generate_uid(), generate_uid()
    first = make_ct_instance(study, series, 1, rows=8, columns=8)
    second = make_ct_instance(study, series, 2, rows=8, columns=8)
    item = Dataset()
    item.ReferencedSOPClassUID = first.SOPClassUID
    item.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = Sequence([item])
    prof, pz = profile(), pseudonymizer()
    a, b = deidentify(first, prof, pz).dataset, deidentify(second, prof, pz).dataset
    assert a is not None and b is not None
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPClassUID == first.SOPClassUID
    assert a.StudyInstanceUID == b.StudyInstanceUID != first.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.PatientID == b.PatientID


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value[:8], "%Y%m%d").date()


def test_date_shift_preserves_intervals_within_a_patient() -> None:
    """Every date of one patient moves by the same offset; another patient moves differently."""
    prof, pz = profile(MODIFIED), pseudonymizer()
    visit1 = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    visit2 = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    visit2.StudyDate = visit2.SeriesDate = "20250301"
    visit2.AcquisitionDateTime = "20250301083000"
    out1, out2 = deidentify(visit1, prof, pz).dataset, deidentify(visit2, prof, pz).dataset
    assert out1 is not None and out2 is not None
    original_gap = _day(visit2.StudyDate) - _day(visit1.StudyDate)
    assert _day(out2.StudyDate) - _day(out1.StudyDate) == original_gap
    offset = _day(out1.StudyDate) - _day(visit1.StudyDate)
    assert offset.days <= -365
    for kw in ("SeriesDate", "ContentDate", "AcquisitionDateTime"):
        assert _day(out1[kw].value) - _day(visit1[kw].value) == offset, kw
    assert out1.AcquisitionDateTime[8:] == visit1.AcquisitionDateTime[8:]  # time of day kept
    other = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    other.PatientID = "MRN-00000001"
    out3 = deidentify(other, prof, pz).dataset
    assert out3 is not None
    assert _day(out3.StudyDate) - _day(other.StudyDate) != offset
