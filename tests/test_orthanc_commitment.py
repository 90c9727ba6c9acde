"""Orthanc as the sending PACS (issue 10): ``POST /modalities/gate/store`` with storage
commitment; its report says every instance is committed, a refused one failed; with
``stable_after = 60`` a study with a commitment (or a COMPLETED MPPS) is delivered at once,
one whose sender said nothing still waits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.delivery import Manifest
from dicomgate.state import CommitmentState
from dicomgate.testing import write_tiny_study
from tests.helpers import NodeHandle, start_node, wait_for
from tests.orthanc import Orthanc, free_port, have_orthanc
from tests.test_mpps import complete_step

pytestmark = pytest.mark.skipif(not have_orthanc(), reason="orthanc missing")


@pytest.fixture
def gate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[NodeHandle, Orthanc]]:
    """A node (pipeline, stable_after 60; more settings by indirect parametrization) and an
    Orthanc that knows it as modality "gate"; the node's peer table points back at Orthanc."""
    overrides = getattr(request, "param", {})
    port = free_port()  # the node's, known before Orthanc's config is written
    orthanc = Orthanc(tmp_path / "orthanc", {"gate": ("DICOMGATE", "127.0.0.1", port)})
    orthanc.work.mkdir(parents=True)
    with start_node(
        tmp_path / "node",
        pipeline=True,
        port=port,
        stable_after=60,
        commitment_peers={"ORTHANC": f"127.0.0.1:{orthanc.dicom_port}"},
        **overrides,
    ) as handle:
        orthanc.start()
        try:
            yield handle, orthanc
        finally:
            orthanc.stop()


def _uids(paths: list[Path]) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def _delivered(handle: NodeHandle, study: str) -> Manifest | None:
    """Manifest v1 of the study once it is published and announced, else None."""
    state = handle.node.state
    assert state is not None
    rec = state.study(study)
    if rec is None or rec.notified_version < 1 or rec.deid_study_uid is None:
        return None
    path = handle.data_dir / "delivered" / rec.deid_study_uid / "manifest-v1.json"
    return Manifest.from_json(path.read_bytes())


def _study_of(paths: list[Path]) -> str:
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def test_commitment_reports_every_instance_and_delivers_at_once(
    gate: tuple[NodeHandle, Orthanc], tmp_path: Path
) -> None:
    handle, orthanc = gate
    quiet = write_tiny_study(tmp_path / "quiet", 2)  # its sender says nothing
    committed = write_tiny_study(tmp_path / "committed", 4)
    out = orthanc.store("gate", orthanc.upload(quiet), commitment=False)
    assert out["FailedInstancesCount"] == 0
    out = orthanc.store("gate", orthanc.upload(committed), commitment=True)
    assert out["FailedInstancesCount"] == 0 and out["InstancesCount"] == 4
    report = orthanc.commitment_report(out["StorageCommitmentTransactionUID"])
    assert report["Status"] == "Success", report
    assert {i["SOPInstanceUID"] for i in report["Success"]} == _uids(committed)
    assert report["Failures"] == []
    # delivered without waiting stable_after (60 s: longer than this wait)
    assert wait_for(lambda: _delivered(handle, _study_of(committed)) is not None, timeout=30)
    manifest = _delivered(handle, _study_of(committed))
    assert manifest is not None
    assert manifest.completion == "commitment" and manifest.counts.instances == 4
    assert manifest.missing == []
    # the study sent first, by a sender that said nothing, still waits for stable_after
    assert _delivered(handle, _study_of(quiet)) is None
    assert handle.node.state is not None
    [status] = handle.node.state.status_report(_study_of(quiet))["studies"]
    assert status["state"] == "completing" and status["expected"] == 0
    [status] = handle.node.state.status_report(_study_of(committed))["studies"]
    assert (status["expected"], status["expected_received"]) == (4, 4)
    # Orthanc has the report; the node records it as reported once Orthanc has answered
    state = handle.node.state
    assert wait_for(
        lambda: state.status_report(_study_of(committed))["studies"][0]["pending_commitments"] == []
    )


@pytest.mark.parametrize(
    "gate", [{"commitment_after": "delivered", "accept_modalities": ["CT"]}], indirect=True
)
def test_refused_instance_is_reported_failed(
    gate: tuple[NodeHandle, Orthanc], tmp_path: Path
) -> None:
    """With ``commitment_after = delivered``, an instance the node refuses to deliver (its
    modality is not accepted: quarantined) is in Orthanc's report as failed with 0x0110
    (processing failure); the others are committed once uploaded.

    (A C-STORE refused at the door never reaches a commitment with Orthanc: its store job
    fails, or, permissive, sends no N-ACTION. The pynetdicom tests cover 0x0112 and 0x0119.)
    """
    handle, orthanc = gate
    paths = write_tiny_study(tmp_path / "in", 3)
    other = dcmread(paths[2])
    other.Modality = "OT"
    other.save_as(paths[2], enforce_file_format=True)
    out = orthanc.store("gate", orthanc.upload(paths), commitment=True)
    assert out["FailedInstancesCount"] == 0
    report = orthanc.commitment_report(out["StorageCommitmentTransactionUID"])
    assert report["Status"] == "Failure", report
    assert {i["SOPInstanceUID"] for i in report["Success"]} == _uids(paths[:2])
    [failure] = report["Failures"]
    assert failure["SOPInstanceUID"] == str(other.SOPInstanceUID)
    assert failure["FailureReason"] == 0x0110
    # every named instance is finished (one quarantined): delivered at once all the same
    assert wait_for(lambda: _delivered(handle, _study_of(paths)) is not None, timeout=30)
    manifest = _delivered(handle, _study_of(paths))
    assert manifest is not None and manifest.completion == "commitment"
    assert (manifest.counts.instances, manifest.counts.quarantined) == (2, 1)
    state = handle.node.state
    assert state is not None
    txn = out["StorageCommitmentTransactionUID"]
    assert wait_for(lambda: state.commitment(txn).state == CommitmentState.REPORTED)  # type: ignore[union-attr]


def test_mpps_completed_delivers_at_once(gate: tuple[NodeHandle, Orthanc], tmp_path: Path) -> None:
    """Orthanc sends the images (no commitment); the modality's MPPS COMPLETED names them:
    delivered without waiting stable_after, completion "mpps"."""
    handle, orthanc = gate
    paths = write_tiny_study(tmp_path / "in", 3)
    out = orthanc.store("gate", orthanc.upload(paths), commitment=False)
    assert out["FailedInstancesCount"] == 0
    complete_step(handle, paths)
    assert wait_for(lambda: _delivered(handle, _study_of(paths)) is not None, timeout=30)
    manifest = _delivered(handle, _study_of(paths))
    assert manifest is not None and manifest.completion == "mpps"
    assert [s.status for s in manifest.procedure_steps] == ["COMPLETED"]
