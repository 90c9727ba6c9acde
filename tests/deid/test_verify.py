"""The PHI verifier: clean output passes, every planted leak is caught."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, generate_uid

from dicomgate.config import DeidOption
from dicomgate.deid import Profile, deidentify, verify_no_phi
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
