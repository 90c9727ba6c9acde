"""The engine beyond single rows: wildcards, private tags, overrides, burned-in text, records."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicomgate.config import DeidOption
from dicomgate.deid import compile_profile, deidentify, no_row_code
from dicomgate.deid._method import option_codes
from dicomgate.testing import CT_PHI, make_ct_instance
from tests.deid.helpers import profile, pseudonymizer


def ct() -> Dataset:
    return make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)


def test_overlay_and_curve_groups_follow_their_wildcard_rows() -> None:
    """(60xx,3000)/(60xx,4000)/(50xx,xxxx) are removed under Basic, kept under Clean Graphics."""
    ds = ct()
    ds.add_new(0x60000010, "US", 8)  # Overlay Rows
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 4)  # Overlay Data
    ds.add_new(0x60024000, "LT", "DOE^JANE^Q drew this")  # Overlay Comments, group 6002
    ds.add_new(0x50000005, "US", 2)  # Curve Dimensions
    basic = deidentify(ds, profile(), pseudonymizer()).dataset
    assert basic is not None
    assert not [e for e in basic if e.tag.group & 0xFF00 in (0x5000, 0x6000)]
    graphics = deidentify(ds, profile([DeidOption.CLEAN_GRAPHICS]), pseudonymizer()).dataset
    assert graphics is not None
    assert graphics[0x60003000].value == ds[0x60003000].value
    assert graphics[0x60000010].value == 8
    assert "DOE" not in graphics[0x60024000].value
    assert "drew this" in graphics[0x60024000].value
    assert 0x50000005 in graphics


def test_private_tags_removed_unless_safe_and_option() -> None:
    """Private elements go; Retain Safe Private keeps only listed ones (and their creator)."""
    ds = ct()
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x09, "FL", 12.5)  # safe: MR Image Prepulse Delay
    block.add_new(0x99, "LO", "DOE^JANE^Q")  # not on the list
    other = ds.private_block(0x0009, "ACME 1.0", create=True)
    other.add_new(0x01, "LO", "MRN-48213977")
    basic = deidentify(ds, profile(), pseudonymizer()).dataset
    assert basic is not None
    assert not [e for e in basic if e.tag.is_private]
    safe = deidentify(ds, profile([DeidOption.RETAIN_SAFE_PRIVATE]), pseudonymizer()).dataset
    assert safe is not None
    kept = {int(e.tag) for e in safe if e.tag.is_private}
    creator = int(block.get_tag(0x09)) & 0xFFFF0000 | 0x0010
    assert kept == {int(block.get_tag(0x09)), creator}


def test_site_overrides_win_over_the_profile() -> None:
    """deid_keep / deid_remove / deid_replace apply after the profile, by keyword or tag."""
    prof = profile(
        keep=["StationName"], remove=["00080070"], replace={"(0008,0080)": "RESEARCH SITE"}
    )
    out = deidentify(ct(), prof, pseudonymizer()).dataset
    assert out is not None
    assert out.StationName == CT_PHI["StationName"]
    assert "Manufacturer" not in out
    assert out.InstitutionName == "RESEARCH SITE"
    with pytest.raises(ValueError, match="NotAKeyword"):
        compile_profile([], keep=["NotAKeyword"])


def test_contradictory_longitudinal_options_are_refused() -> None:
    """Full Dates and Modified Dates together make no sense and stop start-up."""
    with pytest.raises(ValueError, match="exclude each other"):
        compile_profile(
            [
                DeidOption.RETAIN_LONGITUDINAL_FULL_DATES,
                DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            ]
        )


@pytest.mark.parametrize(
    ("modality", "flag", "sop_class", "quarantined"),
    [
        ("CT", "YES", None, True),
        ("CT", "NO", None, False),
        ("CT", None, None, False),
        ("US", None, None, True),
        ("US", "NO", None, False),
        ("OT", "", "1.2.840.10008.5.1.4.1.1.7", True),
        ("CT", None, "1.2.840.10008.5.1.4.1.1.7", True),
    ],
)
def test_burned_in_annotation_rule(
    modality: str, flag: str | None, sop_class: str | None, quarantined: bool
) -> None:
    """YES, or a suspect modality/SOP class without an explicit NO, is quarantined."""
    ds = ct()
    ds.Modality = modality
    if flag is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = flag
    if sop_class:
        ds.SOPClassUID = sop_class
    result = deidentify(ds, compile_profile([], burned_in_policy="quarantine"), pseudonymizer())
    assert (result.quarantine_reason is not None) is quarantined
    assert result.ok is not quarantined
    allowed = deidentify(ds, compile_profile([], burned_in_policy="allow"), pseudonymizer())
    assert allowed.ok


def test_method_is_recorded() -> None:
    """Patient Identity Removed, the method, its CID 7050 codes and the temporal flag are set."""
    options = [DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES, DeidOption.CLEAN_DESCRIPTORS]
    out = deidentify(ct(), profile(options), pseudonymizer()).dataset
    assert out is not None
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod
    items = out.DeidentificationMethodCodeSequence
    codes = {(i.CodeValue, i.CodingSchemeDesignator) for i in items}
    assert codes == {("113100", "DCM"), ("113105", "DCM"), ("113107", "DCM")}
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    basic = deidentify(ct(), profile(), pseudonymizer()).dataset
    assert basic is not None and basic.LongitudinalTemporalInformationModified == "REMOVED"


def test_every_option_has_its_cid_7050_code() -> None:
    """All ten options and the profile map to distinct DCM codes 113100-113112."""
    codes = option_codes(compile_profile(list(DeidOption)[:6] + list(DeidOption)[7:]))
    values = {c[0] for c in codes}
    assert len(values) == 10
    assert all(113100 <= int(v) <= 113112 for v in values)


def test_file_meta_matches_the_new_sop_instance_uid() -> None:
    """File Meta carries the new SOP Instance UID and nothing from the sender."""
    ds = ct()
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    out = deidentify(ds, profile(), pseudonymizer()).dataset
    assert out is not None
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID != ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_pixel_data_is_not_copied() -> None:
    """The output reuses the input's Pixel Data bytes object (no copy of bulk data)."""
    ds = ct()
    out = deidentify(ds, profile(), pseudonymizer()).dataset
    assert out is not None
    assert out["PixelData"].value is ds["PixelData"].value


def test_no_row_rule() -> None:
    """Attributes in no row: labels and numbers kept, narrative and names emptied, UIDs mapped."""
    prof = compile_profile([])
    assert no_row_code(0x00280010, "US", 512, prof, False) == "K"  # Rows
    assert no_row_code(0x00080070, "LO", "ACME", prof, False) == "K"  # Manufacturer
    assert no_row_code(0x0040A160, "UT", "text", prof, False) == "Z/D"  # Text Value
    assert no_row_code(0x0040A160, "UT", "text", prof, True) == "C"
    assert no_row_code(0x00080016, "UI", "1.2.3.4", prof, False) == "K"  # SOP Class UID
    # Multi-frame Source SOP Instance UID has no row but references an instance: pseudonymized
    assert no_row_code(0x00081167, "UI", "1.2.3.4", prof, False) == "U"
    assert no_row_code(0x00080040, "US", 1, prof, False) == "X"  # Data Set Type, retired
    shifted = compile_profile([DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES])
    assert no_row_code(0x00189804, "DT", "2020", shifted, False) == "C"


def test_nested_sequences_are_walked_at_any_depth() -> None:
    """A name three sequences deep is replaced like at the top."""
    ds = ct()
    inner = Dataset()
    inner.PersonName = "DOE^JANE^Q"
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    outer = Dataset()
    outer.ContentSequence = Sequence([middle])
    ds.ContentSequence = Sequence([outer])
    out = deidentify(ds, profile(), pseudonymizer()).dataset
    assert out is not None
    deep = out.ContentSequence[0].ContentSequence[0].ContentSequence[0]
    assert "DOE" not in str(deep.get("PersonName", ""))
