"""MPPS SCP with a pynetdicom modality (issue 10, item 2): N-CREATE → N-SET COMPLETED names
the study's instances (delivered at once), the statuses of PS3.4 F.7, DISCONTINUED's reason in
the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomgate.delivery import Manifest
from dicomgate.mpps import MPPS
from dicomgate.testing import write_tiny_study
from tests.helpers import NodeHandle, send_files, start_node, wait_for


def _create_ds(study: str, status: str | None = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study
    item.AccessionNumber = "A1"
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = "Test^Patient"
    ds.Modality = "CT"
    ds.PerformedProcedureStepID = "PPS1"
    if status is not None:
        ds.PerformedProcedureStepStatus = status
    return ds


def _set_ds(status: str, paths: Sequence[Path] = (), reason: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    if paths:
        series = Dataset()
        series.SeriesInstanceUID = str(dcmread(paths[0]).SeriesInstanceUID)
        refs = []
        for p in paths:
            meta = dcmread(p, stop_before_pixels=True)
            ref = Dataset()
            ref.ReferencedSOPClassUID = meta.SOPClassUID
            ref.ReferencedSOPInstanceUID = meta.SOPInstanceUID
            refs.append(ref)
        series.ReferencedImageSequence = refs
        ds.PerformedSeriesSequence = [series]
    if reason is not None:
        code = Dataset()
        code.CodeValue = "110514"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = reason
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [code]
    return ds


class Modality:
    """A pynetdicom MPPS SCU on one association."""

    def __init__(self, handle: NodeHandle) -> None:
        ae = AE(ae_title="MODALITY")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(MPPS, ExplicitVRLittleEndian)
        self.assoc = ae.associate(handle.host, handle.port, ae_title="DICOMGATE")
        assert self.assoc.is_established

    def create(self, ds: Dataset, uid: str | None) -> tuple[int, Any]:
        status, _ = self.assoc.send_n_create(ds, MPPS, uid)
        return int(status.Status), status

    def set(self, ds: Dataset, uid: str) -> tuple[int, Any]:
        status, _ = self.assoc.send_n_set(ds, MPPS, uid)
        return int(status.Status), status

    def close(self) -> None:
        self.assoc.release()


def complete_step(handle: NodeHandle, paths: Sequence[Path], status: str = "COMPLETED") -> str:
    """N-CREATE (IN PROGRESS) then N-SET ``status`` naming ``paths``; the step's UID."""
    study = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    uid = generate_uid()
    modality = Modality(handle)
    try:
        assert modality.create(_create_ds(study), uid)[0] == 0
        assert modality.set(_set_ds(status, paths), uid)[0] == 0
    finally:
        modality.close()
    return uid


def test_create_then_completed_delivers_at_once(tmp_path: Path) -> None:
    paths = write_tiny_study(tmp_path / "in", 3)
    study = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "node", pipeline=True, stable_after=60) as h:
        assert send_files(h.host, h.port, paths, aet="MODALITY") == [0, 0, 0]
        uid = complete_step(h, paths)
        state = h.node.state
        assert state is not None
        [step] = state.mpps(sop_instance_uid=uid)
        assert (step.status, step.study_instance_uids, step.instances) == (
            "COMPLETED",
            (study,),
            3,
        )
        # stable_after is 60 s: only the MPPS can complete it within this wait
        assert wait_for(lambda: (s := state.study(study)) is not None and s.notified_version == 1)
        rec = state.study(study)
        assert rec is not None and rec.deid_study_uid is not None
        manifest = Manifest.from_json(
            (h.data_dir / "delivered" / rec.deid_study_uid / "manifest-v1.json").read_bytes()
        )
        assert manifest.completion == "mpps" and manifest.counts.instances == 3
        [pps] = manifest.procedure_steps
        assert pps.status == "COMPLETED" and pps.sop_instance_uid != uid  # pseudonymized
        assert (
            h.node.metrics.registry.get_sample_value("dicomgate_mpps_total", {"event": "completed"})
            == 1
        )


def test_statuses(tmp_path: Path) -> None:
    study = generate_uid()
    with start_node(tmp_path / "node") as h:
        m = Modality(h)
        try:
            uid = generate_uid()
            assert m.create(_create_ds(study, status=None), uid)[0] == 0x0120
            assert m.create(_create_ds(study, status="COMPLETED"), uid)[0] == 0x0106
            no_steps = _create_ds(study)
            del no_steps.ScheduledStepAttributesSequence
            assert m.create(no_steps, uid)[0] == 0x0120
            assert m.create(_create_ds(study), uid)[0] == 0
            assert m.create(_create_ds(study), uid)[0] == 0x0111  # duplicate
            assert m.set(_set_ds("COMPLETED"), generate_uid())[0] == 0x0112  # no such
            assert m.set(_set_ds("FINISHED"), uid)[0] == 0x0106
            assert m.set(_set_ds("IN PROGRESS"), uid)[0] == 0
            assert m.set(_set_ds("COMPLETED"), uid)[0] == 0
            status, ds = m.set(_set_ds("DISCONTINUED"), uid)
            assert status == 0x0110
            assert ds.ErrorComment == "Performed Procedure Step Object may no longer be updated"
            # N-CREATE without an instance UID: the SCP assigns one
            status, _ = m.create(_create_ds(study), None)
            assert status == 0
        finally:
            m.close()
        state = h.node.state
        assert state is not None
        assert len(state.mpps(study_instance_uid=study)) == 2


def test_discontinued_is_delivered_with_its_reason(tmp_path: Path) -> None:
    """What was sent is still delivered (idle rule), the reason is in the manifest."""
    paths = write_tiny_study(tmp_path / "in", 2)
    study = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "node", pipeline=True, stable_after=0.5) as h:
        m = Modality(h)
        try:
            uid = generate_uid()
            assert m.create(_create_ds(study), uid)[0] == 0
            assert send_files(h.host, h.port, paths, aet="MODALITY") == [0, 0]
            reason = "Equipment failure"
            assert m.set(_set_ds("DISCONTINUED", reason=reason), uid)[0] == 0
        finally:
            m.close()
        state = h.node.state
        assert state is not None
        assert wait_for(lambda: (s := state.study(study)) is not None and s.notified_version == 1)
        rec = state.study(study)
        assert rec is not None and rec.deid_study_uid is not None
        manifest = Manifest.from_json(
            (h.data_dir / "delivered" / rec.deid_study_uid / "manifest-v1.json").read_bytes()
        )
        assert manifest.completion == "idle" and manifest.counts.instances == 2
        [pps] = manifest.procedure_steps
        assert pps.status == "DISCONTINUED" and pps.discontinuation_reason == reason
        assert pps.discontinuation_code == "110514^DCM"


@pytest.mark.parametrize("n", [1])
def test_mpps_context_offered(tmp_path: Path, n: int) -> None:
    with start_node(tmp_path / "node") as h:
        m = Modality(h)
        assert any(cx.abstract_syntax == MPPS for cx in m.assoc.accepted_contexts)
        m.close()
