"""Manifest model, JSON schema round-trip and the CSV index."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pydantic
import pytest

from dicomgate.delivery import (
    INDEX_COLUMNS,
    MANIFEST_SCHEMA_VERSION,
    DeidInfo,
    Manifest,
    index_csv,
    manifest_json_schema,
    read_index_csv,
)
from tests.delivery.helpers import CT, EXPLICIT_LE, SERIES, STUDY, make_instance, make_manifest


def _instances() -> list:  # type: ignore[type-arg]
    # Deliberately out of order: build() sorts by series number, then instance number.
    return [
        make_instance(1, 2, b"d"),
        make_instance(0, 2, b"bb"),
        make_instance(0, 1, b"a"),
        make_instance(1, 1, b"ccc"),
    ]


def test_build_sorts_and_counts() -> None:
    """build() orders instances, derives the series list and the counts."""
    manifest = make_manifest(_instances(), version=3, quarantined=2)
    assert manifest.schema_version == MANIFEST_SCHEMA_VERSION == 1
    assert [(i.series_number, i.instance_number) for i in manifest.instances] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert [(s.series_instance_uid, s.instances, s.bytes) for s in manifest.series] == [
        (SERIES[0], 2, 3),
        (SERIES[1], 2, 4),
    ]
    counts = manifest.counts
    assert (counts.series, counts.instances, counts.quarantined, counts.bytes) == (2, 4, 2, 7)
    assert manifest.index_key == f"{STUDY}/index-v3.csv"
    assert manifest.quarantined[0].reason == "PatientName survived de-identification"


def test_json_round_trip_is_exact() -> None:
    """to_json/from_json give back an equal manifest, and the JSON has the documented fields."""
    manifest = make_manifest(_instances(), quarantined=1)
    data = manifest.to_json()
    assert Manifest.from_json(data) == manifest
    doc = json.loads(data)
    assert doc["schema_version"] == 1 and doc["manifest_version"] == 1
    assert doc["deidentification"]["profile"] == "113100"
    assert doc["deidentification"]["options"] == ["retain_uids"]
    assert doc["created_at"] == "2026-01-02T03:04:06Z"
    assert set(doc["instances"][0]) == {
        "sop_instance_uid",
        "series_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "modality",
        "series_number",
        "instance_number",
        "size",
        "sha256",
        "key",
    }


def test_json_schema_describes_the_manifest() -> None:
    """The JSON Schema names every top-level field and requires the essential ones."""
    schema = manifest_json_schema()
    assert set(schema["properties"]) == set(Manifest.model_fields)
    for name in ("manifest_version", "study_instance_uid", "instances", "counts"):
        assert name in schema["required"]
    json.dumps(schema)  # serializable as is


def test_inconsistent_manifests_are_refused() -> None:
    """Counts that disagree, duplicates, or delivered+quarantined instances do not validate."""
    doc = json.loads(make_manifest(_instances(), quarantined=1).to_json())
    bad_counts = {**doc, "counts": {**doc["counts"], "instances": 5}}
    with pytest.raises(pydantic.ValidationError, match="counts"):
        Manifest.model_validate(bad_counts)
    twice = {**doc, "instances": [doc["instances"][0]] * 4}
    with pytest.raises(pydantic.ValidationError, match="twice"):
        Manifest.model_validate(twice)
    both = {
        **doc,
        "quarantined": [
            {**doc["quarantined"][0], "sop_instance_uid": doc["instances"][0]["sop_instance_uid"]}
        ],
    }
    with pytest.raises(pydantic.ValidationError, match="both"):
        Manifest.model_validate(both)
    with pytest.raises(pydantic.ValidationError, match="extra"):
        Manifest.model_validate({**doc, "patient_name": "DOE^JANE"})


def test_build_refuses_keys_off_the_layout() -> None:
    """An instance whose key is not <study>/<series>/<instance>.dcm is a bug, caught early."""
    inst = make_instance(0, 1, b"x").model_copy(update={"key": "elsewhere/x.dcm"})
    with pytest.raises(ValueError, match="layout"):
        make_manifest([inst])


def test_uids_and_hashes_are_validated() -> None:
    """Non-UID identifiers and non-hex digests are refused when writing."""
    good = make_instance(0, 1, b"x").model_dump()
    with pytest.raises(pydantic.ValidationError):
        type(make_instance(0, 1, b"x")).model_validate({**good, "sop_instance_uid": "MRN-1"})
    with pytest.raises(pydantic.ValidationError):
        type(make_instance(0, 1, b"x")).model_validate({**good, "sha256": "ABC"})


def test_index_csv_has_one_row_per_instance() -> None:
    """The CSV index has the documented header and one row per instance, in manifest order."""
    manifest = make_manifest(_instances(), quarantined=1)
    data = index_csv(manifest)
    assert data.startswith(b"study_instance_uid,series_instance_uid,sop_instance_uid,")
    assert data.count(b"\r\n") == 5
    rows = read_index_csv(data)
    assert tuple(rows[0]) == INDEX_COLUMNS
    first, inst = rows[0], manifest.instances[0]
    assert first == {
        "study_instance_uid": STUDY,
        "series_instance_uid": inst.series_instance_uid,
        "sop_instance_uid": inst.sop_instance_uid,
        "sop_class_uid": CT,
        "modality": "CT",
        "series_number": "1",
        "instance_number": "1",
        "transfer_syntax_uid": EXPLICIT_LE,
        "size": "1",
        "sha256": inst.sha256,
        "key": inst.key,
    }


def test_index_of_instance_without_optional_metadata() -> None:
    """Missing modality or numbers are empty cells, not 'None'."""
    inst = make_instance(0, 1, b"x").model_copy(
        update={"modality": None, "series_number": None, "instance_number": None}
    )
    manifest = Manifest.build(
        study_instance_uid=STUDY,
        manifest_version=1,
        instances=[inst],
        deidentification=DeidInfo(),
        created_at=datetime.now(UTC),
    )
    row = read_index_csv(index_csv(manifest))[0]
    assert (row["modality"], row["series_number"], row["instance_number"]) == ("", "", "")
