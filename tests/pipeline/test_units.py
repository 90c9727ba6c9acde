"""Small parts of the pipeline: accept rules, metadata, completion rule, backoff."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomgate.pipeline import AcceptRules, InstanceMetadata, is_complete
from dicomgate.pipeline._retry import backoff
from dicomgate.state import StudyProgress
from dicomgate.testing import make_ct_instance


def _ct() -> Dataset:
    return make_ct_instance("1.2.3.4", "1.2.3.4.5", 7, rows=8, columns=8)


def test_metadata_tolerates_odd_integer_strings() -> None:
    """An unparseable Series Number becomes None instead of failing the instance."""
    ds = _ct()
    ds.SeriesNumber = None
    meta = InstanceMetadata.from_dataset(ds)
    assert meta.modality == "CT" and meta.instance_number == 7 and meta.series_number is None


def test_metadata_rejects_invalid_uid() -> None:
    """A malformed UID is a validation error (the pipeline quarantines it)."""
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = "1.2.x"
    with pytest.raises(ValueError, match="transfer_syntax_uid"):
        InstanceMetadata.from_dataset(ds)


def test_accept_rules() -> None:
    """Modalities, SOP classes and required attributes each give a reason when violated."""
    ds = _ct()
    meta = InstanceMetadata.from_dataset(ds)
    assert AcceptRules.build().violations(meta, ds) == []
    assert AcceptRules.build(modalities=["mr"]).violations(meta, ds) == [
        "modality CT is not accepted"
    ]
    assert AcceptRules.build(sop_classes=["1.2.840.10008.5.1.4.1.1.4"]).violations(meta, ds)
    ds.BodyPartExamined = ""
    assert AcceptRules.build(required=["BodyPartExamined"]).violations(meta, ds) == [
        "required attribute BodyPartExamined is missing or empty"
    ]
    with pytest.raises(ValueError, match="NotAKeyword"):
        AcceptRules.build(required=["NotAKeyword"])


def _progress(**kw: object) -> StudyProgress:
    base = dict(
        study_instance_uid="1.2.3",
        first_received_at=0.0,
        last_received_at=100.0,
        manifest_version=0,
        deid_study_uid=None,
        pending=0,
        unreported=5,
    )
    base.update(kw)
    return StudyProgress(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "now", "in_flight", "complete"),
    [
        ({}, 161.0, set(), True),
        ({}, 159.0, set(), False),  # not quiet for stable_after yet
        ({"pending": 1}, 500.0, set(), False),  # an instance still on its way
        ({"unreported": 0}, 500.0, set(), False),  # nothing new to report
        ({}, 500.0, {"1.2.3"}, False),  # an open association is sending it
    ],
)
def test_completion_rule(
    change: dict[str, int], now: float, in_flight: set[str], complete: bool
) -> None:
    """A study completes only when quiet, idle, fully carried and with news to report."""
    assert (
        is_complete(_progress(**change), now=now, stable_after=60, in_flight=in_flight) is complete
    )


def test_backoff_is_bounded_and_grows() -> None:
    """Full jitter: never negative, never above the cap, ceiling doubling per attempt."""
    for attempt in range(1, 20):
        delay = backoff(attempt, base=0.5, cap=30)
        assert 0 <= delay <= min(30, 0.5 * 2 ** (attempt - 1))
