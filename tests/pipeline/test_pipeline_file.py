"""The pipeline end to end on the embedded default destination (file://)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomgate.deid import compile_profile, verify_no_phi
from dicomgate.delivery import CONTENT_TYPE_DICOM
from dicomgate.delivery.file import FileDestination
from dicomgate.pipeline._work import RESULT_IN_MEMORY_MAX
from dicomgate.testing import write_ct_study
from tests.helpers import associate, send_files, start_node, wait_for


def _manifest_version(node: object, study_uid: str) -> int:
    study = node.node.state.study(study_uid)  # type: ignore[attr-defined]
    return study.manifest_version if study else 0


def test_study_delivered_to_file_destination(tmp_path: Path) -> None:
    """A study sent to a node is de-identified, written under delivered/, with a manifest."""
    paths = write_ct_study(tmp_path / "study", 6, rows=32, columns=32)
    study_uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.3, keep_raw_for=0) as n:
        assert send_files(n.host, n.port, paths) == [0] * 6
        assert wait_for(lambda: _manifest_version(n, study_uid) == 1, timeout=30)
        assert n.node.state is not None
        record = n.node.state.study(study_uid)
        assert record is not None and record.deid_study_uid
        # raw copies are purged after delivery (keep_raw_for = 0)
        assert wait_for(lambda: n.spool_files == [], timeout=10)

    out = tmp_path / "data" / "delivered" / record.deid_study_uid
    manifest = json.loads((out / "manifest-v1.json").read_bytes())
    assert manifest["counts"]["instances"] == 6
    assert manifest["study_instance_uid"] == record.deid_study_uid
    assert (out / "manifest.json").read_bytes() == (out / "manifest-v1.json").read_bytes()
    profile = compile_profile([])
    originals = {dcmread(p).InstanceNumber: dcmread(p) for p in paths}
    for inst in manifest["instances"]:
        data = (tmp_path / "data" / "delivered" / inst["key"]).read_bytes()
        assert len(data) == inst["size"]
        assert hashlib.sha256(data).hexdigest() == inst["sha256"]
        delivered = dcmread(out / inst["series_instance_uid"] / f"{inst['sop_instance_uid']}.dcm")
        assert delivered.PatientIdentityRemoved == "YES"
        original = originals[delivered.InstanceNumber]
        assert verify_no_phi(original, delivered, profile) == []


def test_quarantined_instances_listed_in_manifest_and_status(tmp_path: Path) -> None:
    """Burned-in text (burned_in_policy = quarantine) and a rejected modality are held back,
    with reasons, and reported."""
    import subprocess
    import sys

    paths = write_ct_study(tmp_path / "study", 3, rows=16, columns=16)
    burned = dcmread(paths[1])
    burned.BurnedInAnnotation = "YES"
    burned.save_as(paths[1], enforce_file_format=True)
    study_uid = str(burned.StudyInstanceUID)
    with start_node(
        tmp_path / "data", pipeline=True, stable_after=0.3, burned_in_policy="quarantine"
    ) as n:
        assert send_files(n.host, n.port, paths) == [0, 0, 0]
        assert wait_for(lambda: _manifest_version(n, study_uid) == 1, timeout=30)
        record = n.node.state.study(study_uid)  # type: ignore[union-attr]
    assert record is not None and record.deid_study_uid
    manifest = json.loads(
        (tmp_path / "data" / "delivered" / record.deid_study_uid / "manifest-v1.json").read_bytes()
    )
    assert manifest["counts"] == {
        "series": 1,
        "instances": 2,
        "quarantined": 1,
        "bytes": manifest["counts"]["bytes"],
    }
    [held] = manifest["quarantined"]
    assert held["stage"] == "deidentify" and "Burned" in held["reason"]
    assert held["sop_instance_uid"] != str(burned.SOPInstanceUID)  # pseudonymized

    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomgate",
            "status",
            study_uid,
            "--json",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [s] = json.loads(status.stdout)["studies"]
    assert s["state"] == "delivered" and s["manifest_version"] == 1
    assert s["instances_by_state"] == {"delivered": 2, "quarantined": 1}
    [q] = s["quarantined"]
    assert q["stage"] == "deidentify" and "Burned" in q["reason"]
    # the raw copy of a quarantined instance stays on disk for a human to look at
    assert len(list((tmp_path / "data" / "spool" / "instances").iterdir())) >= 1


def test_accept_rules_quarantine_at_validate(tmp_path: Path) -> None:
    """An instance outside the accepted modalities is quarantined at the validate stage."""
    [path] = write_ct_study(tmp_path / "study", 1, rows=16, columns=16)
    uid = str(dcmread(path).StudyInstanceUID)
    with start_node(
        tmp_path / "data", pipeline=True, stable_after=0.2, accept_modalities=["MR"]
    ) as n:
        assert send_files(n.host, n.port, [path]) == [0]
        assert wait_for(lambda: _manifest_version(n, uid) == 1, timeout=30)
        assert n.node.state is not None
        [rec] = n.node.state.instances()
    assert rec.state == "quarantined" and rec.stage == "validate"
    assert rec.reason == "modality CT is not accepted"


def test_raw_copies_kept_for_the_configured_retention(tmp_path: Path) -> None:
    """With keep_raw_for set, delivered instances keep their raw spool copy (and row path)."""
    paths = write_ct_study(tmp_path / "study", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.2, keep_raw_for=3600) as n:
        assert send_files(n.host, n.port, paths) == [0, 0]
        assert wait_for(lambda: _manifest_version(n, uid) == 1, timeout=30)
        time.sleep(0.6)  # a few tracker rounds, each of which purges what is due
        assert len(n.spool_files) == 2
        assert n.node.state is not None
        assert all(r.spool_path for r in n.node.state.instances())


@pytest.mark.parametrize(
    "pressed", [None, "spool_limit", "min_free_space"], ids=["room", "spool-half-full", "disk"]
)
def test_raw_copies_purged_once_associations_close(tmp_path: Path, pressed: str | None) -> None:
    """Removing delivered raw copies waits while an association is open (receiving comes
    first), and happens once it closes; with the spool past half its limit, or its disk within
    twice min_free_space of refusing, it does not wait."""
    paths = write_ct_study(tmp_path / "study", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    size = sum(p.stat().st_size for p in paths)
    free = shutil.disk_usage(tmp_path).free
    limit = {
        None: {},
        "spool_limit": {"spool_limit": size * 3 // 2},
        # refusing below 2/3 of what is free (so the study is taken), purging below 4/3: at once
        "min_free_space": {"min_free_space": free * 2 // 3},
    }[pressed]
    with start_node(
        tmp_path / "data", pipeline=True, stable_after=0.2, keep_raw_for=0, **limit
    ) as n:
        idle = associate(n.host, n.port)  # open, sending nothing: the node is receiving
        try:
            assert idle.is_established
            assert send_files(n.host, n.port, paths) == [0, 0]
            assert wait_for(lambda: _manifest_version(n, uid) == 1, timeout=30)
            if pressed:
                assert wait_for(lambda: n.spool_files == [], timeout=6)
                assert idle.is_established and n.node.scp.busy()  # purged while receiving
            else:
                time.sleep(3)  # past a purge interval (2 s)
                assert len(n.spool_files) == 2
        finally:
            idle.release()
        assert wait_for(lambda: n.spool_files == [], timeout=10)
        assert n.node.state is not None
        assert not any(r.spool_path for r in n.node.state.instances())


def test_small_instances_uploaded_from_memory_large_from_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small instance's de-identified bytes come back from the worker and are uploaded from
    memory (no staging file); one over RESULT_IN_MEMORY_MAX is staged on disk and uploaded
    from there. Both arrive whole, as the manifest says, and staging is left empty."""
    study_uid = generate_uid()
    small = write_ct_study(tmp_path / "small", 3, rows=32, columns=32, study_uid=study_uid)
    [large] = write_ct_study(tmp_path / "large", 1, rows=800, columns=800, study_uid=study_uid)
    assert large.stat().st_size > RESULT_IN_MEMORY_MAX
    uploads: list[tuple[str, str]] = []
    real_file, real_bytes = FileDestination.put_file, FileDestination.put_bytes

    async def put_file(self: FileDestination, key: str, path: Path, **kw: Any) -> Any:
        uploads.append(("file", key))
        assert path.parent.name == "staging" and path.is_file()
        return await real_file(self, key, path, **kw)

    async def put_bytes(self: FileDestination, key: str, data: bytes, **kw: Any) -> Any:
        if kw.get("content_type") == CONTENT_TYPE_DICOM:
            uploads.append(("bytes", key))
        return await real_bytes(self, key, data, **kw)

    monkeypatch.setattr(FileDestination, "put_file", put_file)
    monkeypatch.setattr(FileDestination, "put_bytes", put_bytes)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.3) as n:
        assert send_files(n.host, n.port, [*small, large]) == [0] * 4
        assert wait_for(lambda: _manifest_version(n, study_uid) == 1, timeout=60)
        record = n.node.state.study(study_uid)  # type: ignore[union-attr]
        assert record is not None
        staging = n.data_dir / "staging"
        assert wait_for(lambda: list(staging.iterdir()) == [], timeout=10)
    assert sorted(kind for kind, _ in uploads) == ["bytes", "bytes", "bytes", "file"]
    out = tmp_path / "data" / "delivered"
    manifest = json.loads((out / record.deid_study_uid / "manifest-v1.json").read_bytes())
    sizes = []
    for inst in manifest["instances"]:
        data = (out / inst["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == inst["sha256"]
        assert dcmread(out / inst["key"]).PatientIdentityRemoved == "YES"
        sizes.append(len(data))
    assert max(sizes) > RESULT_IN_MEMORY_MAX  # the staged one is the large one
    [large_key] = [key for kind, key in uploads if kind == "file"]
    assert (out / large_key).stat().st_size == max(sizes)
