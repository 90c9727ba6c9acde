"""Modality Performed Procedure Step SCP (PS3.4 F.7): what the scanner says it did.

N-CREATE (status must be ``IN PROGRESS``) and N-SET (until the step is ``COMPLETED`` or
``DISCONTINUED``) are kept in the state store — the status, the calling AE, the studies (Study
Instance UIDs of the Scheduled Step Attributes Sequence), and for a discontinued step its
reason code; not the dataset (no patient data is kept).

On ``COMPLETED`` the Performed Series Sequence's Referenced Image Sequence (and Referenced
Non-Image Composite SOP Instance Sequence) names the instances of the study: they become its
expectation (``source = mpps``), so the study is published as soon as they all arrived
(:func:`dicomgate.state.completion_rule`). On ``DISCONTINUED`` nothing changes for delivery —
what was sent is delivered when the study completes by the other rules — and the reason is put
in the manifest (``procedure_steps``).
"""

from __future__ import annotations

import time

from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from dicomgate._logging import get_logger
from dicomgate.ops.metrics import Metrics
from dicomgate.state import MppsRecord, MppsUpdate, StateStore

__all__ = ["MPPS", "MppsService"]

log = get_logger(__name__)

#: Modality Performed Procedure Step SOP Class
MPPS = "1.2.840.10008.3.1.2.3.3"

_STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")
#: PS3.4 F.7.2.2.4: N-SET of a step that is COMPLETED or DISCONTINUED
_FINAL_COMMENT = "Performed Procedure Step Object may no longer be updated"
_FINAL_ERROR_ID = 0xA710


def _status(code: int, comment: str, error_id: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds


def _studies(ds: Dataset) -> list[str]:
    out: list[str] = []
    for item in ds.get("ScheduledStepAttributesSequence", []) or []:
        uid = str(item.get("StudyInstanceUID", "") or "")
        if uid and UID(uid).is_valid and uid not in out:
            out.append(uid)
    return out


def performed_instances(ds: Dataset) -> list[str]:
    """SOP Instance UIDs the Performed Series Sequence names."""
    out: list[str] = []
    for series in ds.get("PerformedSeriesSequence", []) or []:
        for name in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            for item in series.get(name, []) or []:
                uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
                if uid:
                    out.append(uid)
    return out


def _reason(ds: Dataset) -> tuple[str, str, str] | None:
    seq = ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence")
    if not seq:
        return None
    item = seq[0]
    return (
        str(item.get("CodeValue", "") or ""),
        str(item.get("CodingSchemeDesignator", "") or ""),
        str(item.get("CodeMeaning", "") or ""),
    )


class MppsService:
    """What the N-CREATE and N-SET handlers call (in the association's thread)."""

    def __init__(self, state: StateStore, metrics: Metrics | None = None) -> None:
        self.state = state
        self.metrics = metrics

    def _count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.mpps.labels(event=event).inc()

    def create(
        self, *, instance_uid: str | None, ds: Dataset | None, calling_ae: str
    ) -> tuple[Dataset | int, Dataset | None]:
        if ds is None:
            return _status(0x0120, "no attribute list"), None
        if "PerformedProcedureStepStatus" not in ds:
            self._count("refused")
            return _status(0x0120, "Performed Procedure Step Status missing"), None
        if str(ds.PerformedProcedureStepStatus or "") != "IN PROGRESS":
            self._count("refused")
            return _status(0x0106, "Performed Procedure Step Status must be IN PROGRESS"), None
        if "ScheduledStepAttributesSequence" not in ds or not ds.ScheduledStepAttributesSequence:
            self._count("refused")
            return _status(0x0120, "Scheduled Step Attributes Sequence missing"), None
        reply = None
        if not instance_uid:  # the SCP assigns it (PS3.7 10.1.5.1.4) and says which
            instance_uid = generate_uid()
            reply = Dataset()
            reply.AffectedSOPInstanceUID = instance_uid
        elif not UID(instance_uid).is_valid:
            return _status(0x0117, "invalid SOP Instance UID"), None
        now = time.time()
        created = self.state.create_mpps(
            MppsRecord(
                sop_instance_uid=instance_uid,
                status="IN PROGRESS",
                calling_ae=calling_ae,
                study_instance_uids=tuple(_studies(ds)),
                created_at=now,
                updated_at=now,
            )
        )
        if not created:
            self._count("refused")
            return _status(0x0111, "duplicate SOP Instance"), None
        self._count("created")
        log.info("procedure step in progress")
        return 0x0000, reply

    def set(self, *, instance_uid: str | None, ds: Dataset | None) -> Dataset | int:
        if not instance_uid:
            return _status(0x0120, "Requested SOP Instance UID missing")
        if ds is None:
            ds = Dataset()
        status = str(ds.get("PerformedProcedureStepStatus", "") or "") or None
        if status is not None and status not in _STATUSES:
            self._count("refused")
            return _status(0x0106, "invalid Performed Procedure Step Status")
        found = self.state.mpps(sop_instance_uid=instance_uid)
        if not found:
            self._count("refused")
            return _status(0x0112, "no such Performed Procedure Step")
        step = found[0]
        named = performed_instances(ds) if status == "COMPLETED" else []
        reason = _reason(ds) if status == "DISCONTINUED" else None
        outcome = self.state.update_mpps(
            instance_uid, status=status, reason=reason, instances=len(named) if named else None
        )
        if outcome == MppsUpdate.NO_SUCH_INSTANCE:
            return _status(0x0112, "no such Performed Procedure Step")
        if outcome == MppsUpdate.FINAL:
            self._count("refused")
            return _status(0x0110, _FINAL_COMMENT, _FINAL_ERROR_ID)
        if status == "COMPLETED":
            self._expect(step, named, instance_uid)
        self._count((status or "in progress").lower().replace(" ", "_"))
        log.info(
            "procedure step updated",
            status=status or step.status,
            instances=len(named),
            reason=reason[2] if reason else None,
        )
        return 0x0000

    def _expect(self, step: MppsRecord, named: list[str], source_id: str) -> None:
        """The named instances become their study's expectation (one study: all of them;
        several: each where its row is; unknown ones then to the first study)."""
        studies = list(step.study_instance_uids)
        if not named or not studies:
            return
        by_study: dict[str, set[str]] = {}
        for uid in named:
            rec = self.state.latest_version(uid) if len(studies) > 1 else None
            study = rec.study_instance_uid if rec is not None else studies[0]
            by_study.setdefault(study, set()).add(uid)
        for study, uids in by_study.items():
            self.state.expect_instances(
                study, source="mpps", source_id=source_id, sop_instance_uids=uids
            )
