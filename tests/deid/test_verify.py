"""The PHI verifier: clean output passes, every planted leak is caught."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, generate_uid

from dicomgate.config import DeidOption
from dicomgate.deid import Profile, deidentify, verify_no_phi
from dicomgate.deid._values import dummy_value
from dicomgate.testing import CT_PHI, make_ct_instance
from tests.deid.helpers import OPTION_COLUMN, profile, pseudonymizer, table_rows


def _pair(prof: Profile) -> tuple[Dataset, Dataset]:
    original = make_ct_instance(generate_uid(), generate_uid(), 3, rows=8, columns=8)
    result = deidentify(original, prof, pseudonymizer())
    assert result.dataset is not None
    return original, result.dataset


@pytest.mark.parametrize("option", [None, *DeidOption], ids=lambda o: str(o or "basic"))
def test_engine_output_passes(option: DeidOption | None) -> None:
    """The engine's output carries no finding under the Basic Profile and each option."""
    prof = profile([] if option is None else [option])
    original, out = _pair(prof)
    assert verify_no_phi(original, out, prof) == []


def _private_name(ds: Dataset) -> None:
    ds.private_block(0x0011, "ACME LEAKS", create=True).add_new(0x01, "LO", CT_PHI["PatientName"])


def _comment_name(ds: Dataset) -> None:
    ds.ImageComments = "reviewed with Jane Doe"


def _nested_id(ds: Dataset) -> None:
    inner = Dataset()
    inner.CodeMeaning = f"chart {CT_PHI['PatientID']}"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    ds.DerivationCodeSequence = Sequence([middle])


def _birth_date_in_text(ds: Dataset) -> None:
    ds.ImageComments = "patient born 1971-03-04, follow-up"


def _bytes_name(ds: Dataset) -> None:
    ds.add_new(0x00420011, "OB", b"%PDF-1.4 DOE^JANE^Q report")  # Encapsulated Document


def _original_uid(ds: Dataset, original: Dataset) -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = original.SOPClassUID
    item.ReferencedSOPInstanceUID = original.SOPInstanceUID
    ds.SourceImageSequence = Sequence([item])


def _sex_in_place(ds: Dataset) -> None:
    ds.PatientSex = CT_PHI["PatientSex"]


def _institution_in_description(ds: Dataset) -> None:
    ds.SeriesDescription = f"CT at {CT_PHI['InstitutionName']}"


def _address_in_meta(ds: Dataset) -> None:
    ds.file_meta.SourceApplicationEntityTitle = "SN-77A9321"


LEAKS: dict[str, tuple[Callable[..., None], str]] = {
    "name in a private tag": (_private_name, "name"),
    "name in Image Comments": (_comment_name, "name"),
    "patient ID in a nested sequence": (_nested_id, "id"),
    "birth date inside free text": (_birth_date_in_text, "date"),
    "name inside OB bytes": (_bytes_name, "name"),
    "original UID in a reference": (_original_uid, "uid"),
    "short value left in place": (_sex_in_place, "unchanged"),
    "institution inside a description": (_institution_in_description, "institution"),
    "device serial in File Meta": (_address_in_meta, "device"),
}


@pytest.mark.parametrize("plant", LEAKS.values(), ids=LEAKS.keys())
def test_planted_leak_is_caught(plant: tuple[Callable[..., None], str]) -> None:
    """Each planted leak yields a finding of the right kind; findings never carry the value."""
    action, kind = plant
    prof = profile()
    original, out = _pair(prof)
    if action is _original_uid:
        action(out, original)
    else:
        action(out)
    findings = verify_no_phi(original, out, prof)
    assert kind in {f.kind for f in findings}, findings
    for f in findings:
        for value in CT_PHI.values():
            if len(value) > 3:
                assert value not in str(f)


def test_retained_values_are_not_findings() -> None:
    """What an option retains (institution name) is not reported as a leak."""
    prof = profile([DeidOption.RETAIN_INSTITUTION_IDENTITY])
    original, out = _pair(prof)
    assert out.InstitutionName == CT_PHI["InstitutionName"]
    assert verify_no_phi(original, out, prof) == []


def test_digits_inside_a_pseudonym_uid_are_chance_not_a_leak() -> None:
    """A time's digits inside a 2.25 integer are not a finding; as a UID component they are."""
    from pydicom.uid import generate_uid

    from dicomgate.deid import compile_profile, deidentify, verify_no_phi
    from dicomgate.pseudonym import Pseudonymizer
    from dicomgate.testing import make_ct_instance

    profile = compile_profile([])
    original = make_ct_instance(generate_uid(), generate_uid(), 1, rows=4, columns=4)
    out = deidentify(original, profile, Pseudonymizer(b"x" * 32)).dataset
    assert out is not None
    out.SOPInstanceUID = "2.25.1234" + original.StudyTime + "987654321"
    assert verify_no_phi(original, out, profile) == []
    out.SOPInstanceUID = "1.2.3." + original.StudyTime + ".4"
    assert [f.location for f in verify_no_phi(original, out, profile)] == ["SOPInstanceUID"]


def test_verifier_reads_the_table_columns_the_tests_read() -> None:
    """The verifier's and the engine's own option -> column maps (kept apart on purpose) both
    agree with the tests' map, and name real columns of the shipped CSV."""
    from dicomgate.deid._table import OPTION_COLUMNS
    from dicomgate.deid.verify import _OPTION_COLUMN

    assert set(OPTION_COLUMN) == set(DeidOption)
    assert set(OPTION_COLUMN.values()) <= set(table_rows()[0])
    assert _OPTION_COLUMN == OPTION_COLUMN
    assert OPTION_COLUMNS == OPTION_COLUMN


def test_verifier_searches_every_date_spelling_the_scrubber_cuts() -> None:
    """A date the engine cuts from text in some spelling is searched for in that spelling."""
    from dicomgate.deid._scrub import date_spellings
    from dicomgate.deid.verify import _date_spellings

    for day in ("19710304", "20011231"):
        assert set(date_spellings(day)) <= set(_date_spellings(day))


def _scheduled_step_anon(ds: Dataset) -> None:
    """A Scheduled Procedure Step ID that reads "ANON" (seen from a real RIS), top level and
    nested: it is inside the node's ``ANONYMOUS^<token>`` pseudonym."""
    ds.ScheduledProcedureStepID = "ANON"
    item = Dataset()
    item.ScheduledProcedureStepID = "ANON"
    ds.RequestAttributesSequence = Sequence([item])


def _creator_is_pydicom(ds: Dataset) -> None:
    """A file written by pydicom-based software: its Instance Creator UID is the Implementation
    Class UID that the node itself writes into File Meta."""
    ds.InstanceCreatorUID = PYDICOM_IMPLEMENTATION_UID


def _creator_is_pydicom_root(ds: Dataset) -> None:
    ds.InstanceCreatorUID = PYDICOM_ROOT_UID.rstrip(".")


def _names_of_the_node(ds: Dataset) -> None:
    """Values that occur in the node's own record (De-identification Method, its CID 7050
    codes, the Implementation Version Name) and dummies."""
    ds.StationName = "DICOMGATE"
    ds.ImageComments = "Confidentiality Profile"
    ds.OtherPatientIDs = "IDENTIFIED"
    ds.StudyTime = "000000"  # replaced by the TM dummy "000000"


OWN_OUTPUT: dict[str, Callable[[Dataset], None]] = {
    "ID inside the name pseudonym": _scheduled_step_anon,
    "UID equal to the Implementation Class UID": _creator_is_pydicom,
    "UID the Implementation Class UID extends": _creator_is_pydicom_root,
    "words of the de-identification record and dummies": _names_of_the_node,
}


@pytest.mark.parametrize("plant", OWN_OUTPUT.values(), ids=OWN_OUTPUT.keys())
def test_the_nodes_own_output_is_not_a_leak(plant: Callable[[Dataset], None]) -> None:
    """An original value found only in what the engine writes whatever the input (pseudonym
    forms, dummies, File Meta implementation identifiers, the method record) is no finding."""
    prof = profile()
    original = make_ct_instance(generate_uid(), generate_uid(), 3, rows=8, columns=8)
    plant(original)
    result = deidentify(original, prof, pseudonymizer())
    assert result.dataset is not None
    assert verify_no_phi(original, result.dataset, prof) == []


def test_the_same_values_elsewhere_are_still_leaks() -> None:
    """Exempt are only the node's own values, not the originals that resemble them: "ANON"
    inside a description, the Instance Creator UID in a reference, an earlier pseudonym copied
    through whole, a Code Meaning outside the method record."""
    prof = profile()
    original = make_ct_instance(generate_uid(), generate_uid(), 3, rows=8, columns=8)
    _scheduled_step_anon(original)
    _creator_is_pydicom(original)
    original.OtherPatientIDs = "PAT-0123456789ABCDEF"
    original.ImageComments = "Confidentiality Profile"
    result = deidentify(original, prof, pseudonymizer())
    out = result.dataset
    assert out is not None
    out.StudyDescription = "CT ANON CHEST"
    out.SourceImageSequence = Sequence([Dataset()])
    out.SourceImageSequence[0].ReferencedSOPInstanceUID = PYDICOM_IMPLEMENTATION_UID
    out.PatientID = "PAT-0123456789ABCDEF"
    out.ConceptNameCodeSequence = Sequence([Dataset()])
    out.ConceptNameCodeSequence[0].CodeMeaning = "Basic Application Confidentiality Profile"
    found = {(f.source, f.location) for f in verify_no_phi(original, out, prof)}
    assert found == {
        ("ScheduledProcedureStepID", "StudyDescription"),
        ("InstanceCreatorUID", "SourceImageSequence[0].ReferencedSOPInstanceUID"),
        ("OtherPatientIDs", "PatientID"),
        ("ImageComments", "ConceptNameCodeSequence[0].CodeMeaning"),
    }


def test_verifier_knows_the_forms_the_engine_writes() -> None:
    """The verifier's own copy of the engine's pseudonym forms, dummies and implementation
    identifiers (kept apart on purpose) covers what the engine writes."""
    from dicomgate.deid._engine import IMPLEMENTATION_VERSION_NAME
    from dicomgate.deid._method import METHOD_TEXT, option_codes
    from dicomgate.deid._patient import PatientPseudonyms
    from dicomgate.deid._values import dummy_value
    from dicomgate.deid.verify import _CID_7050_VALUES, _DUMMIES, _OWN_AT, _PSEUDONYM_FORM

    names = PatientPseudonyms.derive(pseudonymizer(), "id:12345")
    assert _PSEUDONYM_FORM.fullmatch(names.patient_name)
    assert _PSEUDONYM_FORM.fullmatch(names.patient_id)
    assert _PSEUDONYM_FORM.fullmatch("AE" + pseudonymizer().token("ae-title", "CT1", 14))
    text_vrs = ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR")
    assert {dummy_value(vr) for vr in (*text_vrs, "UT")} <= _DUMMIES
    assert _OWN_AT[("file_meta", 0x00020013)](IMPLEMENTATION_VERSION_NAME)
    assert _OWN_AT[("", 0x00120063)](METHOD_TEXT)
    everything = profile([o for o in DeidOption if o != DeidOption.RETAIN_LONGITUDINAL_FULL_DATES])
    assert {v for code in option_codes(everything) for v in code} <= _CID_7050_VALUES


# -- each rule: a true leak is still caught, the false positive is not raised ------------------
def _case(**original_values: Any) -> tuple[Dataset, Dataset, Profile]:
    """A CT with these original values, its de-identified output and the profile."""
    prof = profile()
    original = make_ct_instance(generate_uid(), generate_uid(), 3, rows=8, columns=8)
    for keyword, value in original_values.items():
        setattr(original, keyword, value)
    result = deidentify(original, prof, pseudonymizer())
    assert result.dataset is not None
    return original, result.dataset, prof


def _found(original: Dataset, out: Dataset, prof: Profile) -> set[tuple[str, str]]:
    return {(f.source, f.location) for f in verify_no_phi(original, out, prof)}


def test_a_zero_time_is_not_a_digit_run_of_a_decimal_number() -> None:
    """Study Time 000000 is no needle, and no time is looked for inside a decimal number; a
    real time is still found in text and in another TM."""
    original, out, prof = _case(StudyTime="000000")
    out.DataCollectionDiameter = "500.000000"
    assert verify_no_phi(original, out, prof) == []
    original, out, prof = _case(StudyTime="101530")
    out.DataCollectionDiameter = "500.101530"
    out.ReconstructionDiameter = "101530.5"
    assert verify_no_phi(original, out, prof) == []
    out.ImageComments = "acquired at 101530.25 today"
    out.SeriesTime = "101530"
    assert _found(original, out, prof) >= {
        ("StudyTime", "ImageComments"),
        ("StudyTime", "SeriesTime"),
    }


def test_a_serial_number_is_not_a_digit_run_of_a_decimal_number() -> None:
    """Device Serial Number 00000 is no needle (all zeros); a real serial of digits is not
    found inside 6.77321 or 77321.5, but is found as a token of text."""
    original, out, prof = _case(DeviceSerialNumber="00000")
    out.SliceThickness = "6.000000"
    assert verify_no_phi(original, out, prof) == []
    original, out, prof = _case(DeviceSerialNumber="77321")
    out.SliceThickness = "6.77321"
    out.SpacingBetweenSlices = "77321.5"
    out.SliceLocation = "177321"
    assert verify_no_phi(original, out, prof) == []
    out.ImageComments = "SN 77321."
    assert _found(original, out, prof) == {("DeviceSerialNumber", "ImageComments")}


def test_names_and_ids_are_tokens() -> None:
    """A value inside a longer word is another word; on a boundary (space, caret, underscore,
    punctuation) it is the value, at any depth and in bytes."""
    original, out, prof = _case(InstitutionName="Mercy", OtherPatientIDs="AB1234")
    out.ImageComments = "Mercyhurst road XAB12345"
    assert verify_no_phi(original, out, prof) == []
    out.ImageComments = "seen at MERCY_clinic"
    item = Dataset()
    item.CodeMeaning = "(AB1234)"
    out.DerivationCodeSequence = Sequence([item])
    out.add_new(0x00420011, "OB", b"\x00\x07AB1234\x00")
    assert _found(original, out, prof) == {
        ("InstitutionName", "ImageComments"),
        ("OtherPatientIDs", "DerivationCodeSequence[0].CodeMeaning"),
        ("OtherPatientIDs", "EncapsulatedDocument"),
    }


def test_dates_are_compared_as_dates() -> None:
    """A birth date is found in a DA, as the date of a DT, in text in a scrubber spelling and
    as the start of a date-time, and in bytes; never inside a number."""
    original, out, prof = _case(PatientBirthDate="19710304")
    out.SliceLocation = "19710304"
    out.DataCollectionDiameter = "0.19710304"
    out.ImageComments = "ref 119710304 and 19710304.5"
    assert verify_no_phi(original, out, prof) == []
    out.ContentDate = "19710304"
    out.AcquisitionDateTime = "19710304083000"
    out.ImageComments = "born 04/03/1971"
    out.StudyComments = "stamp 19710304120000.5"
    out.add_new(0x00420011, "OB", b"dob=1971-03-04;")
    found = {location for _, location in _found(original, out, prof)}
    assert found >= {
        "ContentDate", "AcquisitionDateTime", "ImageComments", "StudyComments",
        "EncapsulatedDocument",
    }  # fmt: skip


def test_degenerate_originals_are_no_needles() -> None:
    """One character, all zeros, a placeholder or a dummy of the node: not identifying; a UID
    "0" is not found in "ISO_IR 100" nor in a well-known "0"."""
    original, out, prof = _case(
        OtherPatientIDs="DEIDENTIFIED", AccessionNumber="0000-00", PatientName="X^Y"
    )
    out.ImageComments = "DEIDENTIFIED BY SITE 0000-00 x"
    assert verify_no_phi(original, out, prof) == []
    original, out, prof = _case()
    item = Dataset()
    item.ReferencedSOPClassUID = "0"
    item.ReferencedSOPInstanceUID = "0"
    original.ReferencedImageSequence = Sequence([item])
    result = deidentify(original, prof, pseudonymizer())
    assert result.dataset is not None
    result.dataset.SpecificCharacterSet = "ISO_IR 100"
    assert verify_no_phi(original, result.dataset, prof) == []
    original, out, prof = _case(AccessionNumber="0000-01")  # not all zeros: searched
    out.ImageComments = "acc 0000-01"
    assert _found(original, out, prof) == {("AccessionNumber", "ImageComments")}


def test_the_manufacturers_value_in_a_kept_attribute_is_no_leak() -> None:
    """Institution Name equal to, or a word of, the Manufacturer is not a finding in kept
    attributes (Manufacturer, Manufacturer's Model Name); elsewhere, or left in place, it is."""
    for institution, manufacturer, model in (
        ("OFFIS", "OFFIS", None),
        ("TOSHIBA", "TOSHIBA_MEC", None),
        ("Here", "Manufacturer name here", "Treatment Planning System name here"),
    ):
        original, out, prof = _case(InstitutionName=institution, Manufacturer=manufacturer)
        if model:
            original.ManufacturerModelName = out.ManufacturerModelName = model
        assert verify_no_phi(original, out, prof) == [], institution
        out.ImageComments = f"from {institution}"
        out.InstitutionName = institution
        assert _found(original, out, prof) == {
            ("InstitutionName", "ImageComments"),
            ("InstitutionName", "InstitutionName"),
        }


def test_standard_words_in_coded_values_are_no_leak() -> None:
    """A name component that is a word of the standard is not a finding inside a kept coded
    value (Image Type, Frame Type, Value Type, Coding Scheme Designator, Code Meaning); the
    whole name, another component, or the word in narrative text still are."""
    original, out, prof = _case(
        PatientName="Perfusion^MCA Stroke", ReferringPhysicianName="Last Name^First Name"
    )
    out.ImageType = ["DERIVED", "PRIMARY", "PERFUSION", "RCBF"]
    coded = Dataset()
    coded.CodeValue = "IHE.04"
    coded.CodingSchemeDesignator = "TEST"
    coded.CodeMeaning = "Recording Observer's Name"
    content = Dataset()
    content.ValueType = "TEXT"
    content.ConceptNameCodeSequence = Sequence([coded])
    out.ContentSequence = Sequence([content])
    original.OperatorsName = "Test^S R"
    original.PersonName = "Enter text"
    assert verify_no_phi(original, out, prof) == []
    coded.CodeMeaning = "Reviewed by Stroke"
    content.TextValue = "Perfusion study, first pass"
    out.ImageComments = "for perfusion^mca stroke"
    assert _found(original, out, prof) == {
        ("PatientName", "ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning"),
        ("PatientName", "ContentSequence[0].TextValue"),
        ("ReferringPhysicianName", "ContentSequence[0].TextValue"),
        ("PatientName", "ImageComments"),
    }


def test_a_value_left_in_place_is_caught_at_any_depth() -> None:
    """A removed attribute that keeps its original value inside an item is caught, however
    short; a dummy, an empty value or zeros there are what the engine writes."""
    original, out, prof = _case()
    for ds in (original, out):
        item = Dataset()
        item.PersonName = "Q"
        ds.ContentSequence = Sequence([item])
    assert _found(original, out, prof) == {
        ("ContentSequence[0].PersonName", "ContentSequence[0].PersonName")
    }
    for value in (dummy_value("PN"), ""):
        out.ContentSequence[0].PersonName = value
        assert verify_no_phi(original, out, prof) == []


def test_dummies_and_empty_values_of_required_attributes_pass() -> None:
    """What the engine writes for attributes an IOD requires (a dummy valid for the VR, or an
    empty value; PS3.15 Table E.1-1a D/Z) is never a finding, whatever the original held."""
    original, out, prof = _case(
        DeviceSerialNumber="00000", AcquisitionDateTime="19000101000000", StudyTime="000000"
    )
    original.PatientSexNeutered = "ALTERED"
    original.ResponsiblePerson = "OWNER^ANNA"
    original.ResponsibleOrganization = "FARM ONE"
    original.PatientWeight = "0"
    for keyword in ("DeviceSerialNumber", "AcquisitionDateTime", "StudyTime",
                    "PatientSexNeutered", "ResponsiblePerson", "PatientWeight"):  # fmt: skip
        vr = original[keyword].VR
        setattr(out, keyword, dummy_value(vr))
    out.ResponsibleOrganization = ""
    assert verify_no_phi(original, out, prof) == []


def test_every_dummy_of_the_engine_is_accepted() -> None:
    """Every dummy ``dummy_value`` gives is, to the verifier, a dummy or all zeros."""
    from pydicom.valuerep import VR

    from dicomgate.deid.verify import _DUMMIES, _degenerate

    checked = 0
    for vr in VR:
        try:
            value = dummy_value(str(vr))
        except ValueError:
            continue
        checked += 1
        text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        assert text in _DUMMIES or _degenerate(text), vr
    assert checked >= 30


def test_a_patient_name_typed_into_manufacturer_is_still_a_leak() -> None:
    """The Manufacturer rule is for institution and device values only: a patient's name or
    ID in Manufacturer (kept by the profile) is found, whole or as a component."""
    original, out, prof = _case()
    out.Manufacturer = f"{CT_PHI['PatientName'].split('^')[0]} MEDICAL"
    out.ManufacturerModelName = CT_PHI["PatientID"]
    assert _found(original, out, prof) == {
        ("PatientName", "Manufacturer"),
        ("PatientID", "ManufacturerModelName"),
    }
