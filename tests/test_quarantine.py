"""Quarantine reasons group by rule, whatever the wording after the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomgate.deid._worker import door_check
from dicomgate.pipeline.validate import AcceptRules, InstanceMetadata
from dicomgate.quarantine import Rule, rule_of
from dicomgate.testing import make_ct_instance


@pytest.mark.parametrize(
    ("stage", "reason", "rule"),
    [
        ("deidentify", "burned-in annotation: BurnedInAnnotation is YES", Rule.BURNED_IN),
        ("deidentify", "burned-in: frame 3: 2 text regions could not be masked", Rule.BURNED_IN),
        ("verify", "PHI check failed: 2 finding(s): name found in X", Rule.PHI_CHECK),
        ("validate", "invalid StudyDate", Rule.INVALID),
        ("validate", "dataset cannot be read: InvalidDicomError", Rule.INVALID),
        ("deidentify", "dataset ends inside an element header", Rule.INVALID),
        ("spool", "raw copy missing", Rule.SPOOL),
        ("received", "spool file missing at start-up", Rule.SPOOL),
        ("process", "worker process died 3 times", Rule.WORKER_CRASH),
        ("upload", "destination unavailable for 600 s", Rule.DESTINATION),
        ("upload", "AccessDenied: refused", Rule.DESTINATION),  # the wording before rules
        ("upload", "destination refused it: AccessDenied", Rule.DESTINATION),
        ("process", "processing failed: KeyError", Rule.OTHER),
        ("validate", "SOP class CT Image Storage is not accepted", Rule.INVALID),
        ("validate", "modality CT is not accepted", Rule.INVALID),
        ("deidentify", "invalid dataset: StudyInstanceUID is missing", Rule.INVALID),
        ("validate", "required attribute StudyDescription is missing or empty", Rule.INVALID),
        (
            "deidentify",
            "burned-in: pixel data cannot be written back "
            "(2 text regions on frames 1, 3 of 4: ValueError)",
            Rule.BURNED_IN,
        ),
        (
            "deidentify",
            "burned-in: pixel data cannot be analysed (frame 2 of 9: OCR failed)",
            Rule.BURNED_IN,
        ),
        ("deidentify", "burned-in: float pixel data cannot be analysed", Rule.BURNED_IN),
        ("process", "something new", Rule.OTHER),
        (None, None, Rule.OTHER),
    ],
)
def test_rule_of(stage: str | None, reason: str | None, rule: Rule) -> None:
    assert rule_of(stage, reason) is rule


def test_accept_rule_reasons_name_no_uid() -> None:
    """A refused SOP class is named by its standard name, or not at all — never by its UID."""
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=4, columns=4)
    ds.SOPClassUID = "1.2.826.0.1.3680043.99.1"  # a private SOP class (an org root)
    meta = InstanceMetadata.from_dataset(ds)
    ct_only = AcceptRules.build(sop_classes=["1.2.840.10008.5.1.4.1.1.2"])
    assert ct_only.violations(meta, ds) == ["a non-standard SOP class is not accepted"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta = InstanceMetadata.from_dataset(ds)
    [reason] = ct_only.violations(meta, ds)
    assert reason == "SOP class MR Image Storage is not accepted"
    assert rule_of("validate", reason) is Rule.INVALID


def test_offline_door_check_reasons_are_invalid(tmp_path: Path) -> None:
    """``dicomgate deidentify`` holds back what the node's door check would refuse, under the
    invalid rule (a missing UID, Pixel Data cut short), naming no value."""
    ds = make_ct_instance(generate_uid(), generate_uid(), 1, rows=8, columns=8)
    study_uid = str(ds.StudyInstanceUID)
    del ds.StudyInstanceUID
    lacking = tmp_path / "lacking.dcm"
    ds.save_as(lacking, enforce_file_format=True)
    ds.StudyInstanceUID = study_uid
    cut = tmp_path / "cut.dcm"
    ds.save_as(cut, enforce_file_format=True)
    cut.write_bytes(cut.read_bytes()[:-20])
    for path in (lacking, cut):
        result = door_check(path)
        assert result is not None and result.quarantine_reason is not None
        assert result.quarantine_reason.startswith("invalid dataset: ")
        assert rule_of("deidentify", result.quarantine_reason) is Rule.INVALID
        assert study_uid not in result.quarantine_reason
