"""The pipeline end to end on the embedded default destination (file://)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydicom import dcmread

from dicomgate.deid import compile_profile, verify_no_phi
from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node, wait_for


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
