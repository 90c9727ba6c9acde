"""Valid output: what the instance's IOD requires is replaced, not removed (PS3.15 E.1.1).

Synthetic enhanced MR, enhanced CT and veterinary instances (pydicom) for the failures seen on
real data: Device Serial Number (Type 1, Enhanced General Equipment C.7.5.2), Acquisition
DateTime (Type 1C, Enhanced MR/CT Image C.8.13.1/C.8.15.2) and the veterinary Patient and
Patient Study attributes (Type 2C, C.7.1.1/C.7.2.2).  Each is checked by value (the original
never survives) and by dciodvfy (no new error; and the same output with the attribute removed
does get one, so the check can see the failure).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, EnhancedMRImageStorage, generate_uid

from dicomgate.deid import _iod, deidentify
from dicomgate.deid._values import dummy_value
from dicomgate.testing import CT_PHI, make_ct_instance
from tests.deid.helpers import profile, pseudonymizer

FRAME_TIME = "20240917101531.000000"


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def ct() -> Dataset:
    return make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)


def enhanced(sop_class: str) -> Dataset:
    """A one-frame enhanced (functional-group) image, built on the synthetic CT's header."""
    ds = ct()
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = "MR" if sop_class == EnhancedMRImageStorage else "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.NumberOfFrames = 1
    ds.ContentQualification = "PRODUCT"
    ds.SoftwareVersions = "1.0"
    ds.SharedFunctionalGroupsSequence = Sequence(
        [_item(PixelMeasuresSequence=Sequence([_item(PixelSpacing=[0.7, 0.7])]))]
    )
    frame = _item(
        FrameAcquisitionDateTime=FRAME_TIME,
        FrameReferenceDateTime=FRAME_TIME,
        FrameAcquisitionDuration=10.0,
        FrameAcquisitionNumber=1,
    )
    ds.PerFrameFunctionalGroupsSequence = Sequence([_item(FrameContentSequence=Sequence([frame]))])
    return ds


def veterinary() -> Dataset:
    """A CT of an animal patient: the Patient Module's veterinary attributes (C.7.1.1)."""
    ds = ct()
    ds.PatientSpeciesDescription = "Canis lupus familiaris"
    ds.PatientBreedDescription = "Beagle"
    ds.PatientBreedCodeSequence = Sequence()
    ds.BreedRegistrationSequence = Sequence()
    ds.PatientSexNeutered = "ALTERED"
    ds.ResponsiblePerson = "DOE^JOHN"
    ds.ResponsiblePersonRole = "OWNER"
    ds.ResponsibleOrganization = "Springfield Kennel Club"
    return ds


def deid(ds: Dataset) -> Dataset:
    result = deidentify(ds, profile(), pseudonymizer())
    assert result.dataset is not None
    return result.dataset


@pytest.mark.parametrize("sop_class", [EnhancedMRImageStorage, EnhancedCTImageStorage])
def test_enhanced_image_keeps_device_serial_number_and_acquisition_datetime(
    sop_class: str,
) -> None:
    """Type 1 / 1C in this IOD: a dummy, not removal; what is Type 3 here still goes."""
    out = deid(enhanced(sop_class))
    assert out.DeviceSerialNumber == dummy_value("LO")
    assert out.AcquisitionDateTime == dummy_value("DT")
    frame = out.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime == dummy_value("DT")
    assert frame.FrameReferenceDateTime == dummy_value("DT")
    assert "StationName" not in out  # X/Z/D, Type 3 in General Equipment
    assert "OperatorsName" not in out  # X/Z/D, Type 3 in General Series


def test_plain_ct_removes_what_its_iod_does_not_require() -> None:
    """CT Image: Device Serial Number and Acquisition DateTime are Type 3 there: X."""
    out = deid(ct())
    assert "DeviceSerialNumber" not in out
    assert "AcquisitionDateTime" not in out


def test_veterinary_attributes_are_emptied_not_removed() -> None:
    """Type 2C for an animal: present and empty (X/Z → Z; X alone → Z, see _iod); the
    identifying values are gone."""
    ds = veterinary()
    del ds.ResponsiblePersonRole
    out = deid(ds)
    for keyword in ("PatientSexNeutered", "ResponsiblePerson", "ResponsibleOrganization"):
        assert keyword in out, keyword
        assert not out[keyword].value, keyword
    text = str(out)
    assert "DOE^JOHN" not in text and "Kennel" not in text


def test_responsible_person_with_a_role_gets_a_dummy() -> None:
    """Responsible Person Role is 1C on Responsible Person having a value (C.7.1.1): with a
    role present the person is a dummy, so the role stays valid; the name is gone."""
    out = deid(veterinary())
    assert out.ResponsiblePerson == dummy_value("PN")
    assert out.ResponsiblePersonRole == "OWNER"
    assert not out.ResponsibleOrganization


def test_required_sequence_the_table_removes_keeps_only_dummies() -> None:
    """A Type 1 sequence with an X code (Operator Identification Sequence inside a Contributing
    Sources item, C.8.21.2.1): items kept, every text value a dummy, UIDs pseudonymized."""
    ds = ct()
    operator = _item(
        InstitutionName="Springfield General Hospital",
        InstitutionCodeSequence=Sequence(
            [_item(CodeValue="SGH01", CodingSchemeDesignator="L", CodeMeaning="Springfield GH")]
        ),
        PersonIdentificationCodeSequence=Sequence(
            [_item(CodeValue="TECH-ALEX", CodingSchemeDesignator="L", CodeMeaning="Alex Tech")]
        ),
    )
    source = _item(
        OperatorIdentificationSequence=Sequence([operator]),
        DeviceSerialNumber="SN-77A9321",
        ReferencedSOPInstanceUID=ds.SOPInstanceUID,
    )
    ds.ContributingSourcesSequence = Sequence([source])
    out = deid(ds)
    new_source = out.ContributingSourcesSequence[0]
    assert new_source.DeviceSerialNumber == dummy_value("LO")  # Type 1C there
    new_operator = new_source.OperatorIdentificationSequence[0]
    code = new_operator.InstitutionCodeSequence[0]
    assert code.CodeMeaning == dummy_value("LO") and code.CodeValue == dummy_value("SH")
    text = str(new_source)
    for original in ("Springfield", "SGH01", "TECH-ALEX", "Alex", ds.SOPInstanceUID):
        assert original not in text, original
    assert new_source.ReferencedSOPInstanceUID != ds.SOPInstanceUID


def test_requirements_come_from_the_sop_class() -> None:
    """Enhanced MR (its IOD's modules), a SOP class with no listed IOD (only the Patient and
    Patient Study Modules, in every composite IOD), and no SOP class at all (nothing)."""
    mr = _iod.requirements(EnhancedMRImageStorage)
    assert mr["DeviceSerialNumber"] == "1" and mr["AcquisitionDateTime"] == "1"
    assert "DeviceSerialNumber" not in _iod.requirements(CTImageStorage)
    other = _iod.requirements("1.2.3.4.5")
    assert set(other) == {"PatientSexNeutered", "ResponsiblePerson", "ResponsibleOrganization"}
    assert not _iod.requirements("")
    assert _iod.NESTED[("ContributingSourcesSequence", "DeviceSerialNumber")] == "1"


@pytest.mark.parametrize(
    ("code", "required", "empty", "action"),
    [
        ("X/Z", None, False, "X"),
        ("X/Z", "2", False, "Z"),
        ("X/Z", "1", False, "D"),  # Z allows a dummy
        ("X/D", "2", False, "D"),  # no Z allowed
        ("X/Z/D", "2", False, "Z"),
        ("X/Z/D", "1", True, "D"),
        ("X", "2", False, "Z"),
        ("X", "1", False, "D"),
        ("Z", "1", False, "D"),
        ("Z", "2", False, "Z"),
        ("Z/D", None, False, "D"),
        ("Z/D", None, True, "Z"),
        ("X/Z/U*", None, False, "U"),
        ("K", "1", False, "K"),
    ],
)
def test_resolve(code: str, required: str | None, empty: bool, action: str) -> None:
    """PS3.15 Table E.1-1a: the first alternative unless the IOD needs a later one."""
    assert _iod.resolve(code, required, empty) == action


# -- dciodvfy ---------------------------------------------------------------------------------

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools missing")


def _errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return {
        " ".join(x.split()) for x in (run.stdout + run.stderr).splitlines() if x.startswith("Error")
    }


CASES: dict[str, tuple[Callable[[], Dataset], tuple[str, ...]]] = {
    "enhanced-mr": (
        lambda: enhanced(EnhancedMRImageStorage),
        ("DeviceSerialNumber", "AcquisitionDateTime"),
    ),
    "enhanced-ct": (
        lambda: enhanced(EnhancedCTImageStorage),
        ("DeviceSerialNumber", "AcquisitionDateTime"),
    ),
    "veterinary": (veterinary, ("ResponsiblePerson", "ResponsibleOrganization")),
}


@needs_dciodvfy
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_no_new_dciodvfy_errors(
    case: tuple[Callable[[], Dataset], tuple[str, ...]], tmp_path: Path
) -> None:
    """The output has no error the synthetic input lacked; removing the kept attributes from
    it (what the engine did before) gives dciodvfy's "Missing attribute" error for each."""
    build, kept = case
    ds = build()
    source, target, removed = tmp_path / "in.dcm", tmp_path / "out.dcm", tmp_path / "rm.dcm"
    ds.save_as(source, enforce_file_format=True)
    out = deid(ds)
    out.save_as(target, enforce_file_format=True)
    before = _errors(source)
    assert not _errors(target) - before
    for keyword in kept:
        del out[keyword]
    out.save_as(removed, enforce_file_format=True)
    missing = {e for e in _errors(removed) - before if "Missing attribute" in e}
    for keyword in kept:
        assert any(f"<{keyword}>" in e for e in missing), (keyword, missing)


def test_planted_phi_never_survives_a_kept_attribute() -> None:
    """Every planted CT value is gone from the enhanced output too (kept ≠ revealed)."""
    out = str(deid(enhanced(EnhancedMRImageStorage)))
    for keyword, value in CT_PHI.items():
        if keyword in ("PatientSex", "PatientAge"):
            continue  # short codes that occur anywhere in a dump
        assert value not in out, keyword
    assert FRAME_TIME not in out
