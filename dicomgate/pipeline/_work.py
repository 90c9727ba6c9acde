"""The CPU-heavy part of the pipeline, run in worker processes: validate → de-identify → verify.

Stages share one shape — they take the :class:`_Job` and return it, or raise
:class:`Quarantine` — and run as a list, the way structlog chains processors.  The result that
crosses back to the event loop is a small picklable :class:`WorkResult`.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomgate._logging import LogSetup, configure_worker_logging
from dicomgate._process import die_with_parent
from dicomgate.checks import IN_MEMORY_MAX
from dicomgate.deid import DeidConfig, deidentify, encode_dataset, verify_no_phi
from dicomgate.deid._diagnose import diagnose
from dicomgate.pipeline.validate import AcceptRules, InstanceMetadata
from dicomgate.spool import sha256_file

__all__ = ["Quarantine", "WorkOrder", "WorkResult", "process_instance", "worker_init"]

_IN_MEMORY_WRITE = 32 * 1024 * 1024
#: De-identified outputs up to this size go back to the node in the result and are uploaded
#: from memory: no staging file is created, read and deleted for each small instance (on a
#: busy spool filesystem, creating and deleting inodes is a large part of the work). Larger
#: ones are staged on disk, where they also survive a restart.
RESULT_IN_MEMORY_MAX = IN_MEMORY_MAX


def worker_init(log_setup: LogSetup | None = None, parent_pid: int | None = None) -> None:
    """Set up a worker process: lower priority, dies with the node, leaves signals to it.

    A SIGKILLed node must not leave workers behind holding memory (and the node's stderr):
    on Linux, prctl(PR_SET_PDEATHSIG) has the kernel kill the worker when its parent dies.
    """
    # pydicom's warnings quote values: they go through the node's redacting log pipeline
    configure_worker_logging(log_setup)
    # SIGINT/SIGTERM reach the whole process group (Ctrl-C, systemd, docker stop): they are
    # the node's to handle, in order; it shuts the pool down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Receiving comes first: a sender waits on every C-STORE response, while de-identification
    # is background work that can lag a little behind (promise 5 covers the spool).
    os.nice(10)
    die_with_parent(os.getppid() if parent_pid is None else parent_pid)


class Quarantine(Exception):  # noqa: N818 - it is an outcome, not an error
    """An instance that must not be delivered, and why (no patient values in ``reason``)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class WorkOrder:
    raw_path: str
    staging_path: str
    deid: DeidConfig
    rules: AcceptRules


@dataclass(frozen=True)
class WorkResult:
    raw_sha256: str | None = None
    stage: str | None = None
    reason: str | None = None
    deid_study_uid: str | None = None
    deid_series_uid: str | None = None
    deid_sop_uid: str | None = None
    deid_size: int | None = None
    deid_sha256: str | None = None
    modality: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    #: the de-identified file itself when it is small (else it is at the order's staging path)
    data: bytes | None = field(default=None, repr=False)

    @property
    def quarantined(self) -> bool:
        return self.reason is not None


@dataclass
class _Job:
    order: WorkOrder
    raw: bytes = b""
    ds: Dataset | None = None
    meta: InstanceMetadata | None = None
    out: Dataset | None = None
    raw_sha256: str | None = None
    raw_size: int = 0
    out_sha256: str | None = None
    out_size: int = 0
    out_data: bytes | None = None


def _read(job: _Job) -> _Job:
    path = Path(job.order.raw_path)
    source: Path | io.BytesIO = path
    if path.stat().st_size <= IN_MEMORY_MAX:
        # small: read once, hash and parse from memory (no lseek per element, see checks)
        data = path.read_bytes()
        job.raw_sha256, job.raw_size = hashlib.sha256(data).hexdigest(), len(data)
        source = io.BytesIO(data)
    else:
        # large: hash by streaming and parse from the file, never holding the bytes twice
        job.raw_sha256, job.raw_size = sha256_file(path)
    try:
        job.ds = dcmread(source)
    except Exception as exc:
        raise Quarantine("validate", f"dataset cannot be read: {type(exc).__name__}") from None
    return job


def _validate(job: _Job) -> _Job:
    assert job.ds is not None
    try:
        job.meta = InstanceMetadata.from_dataset(job.ds)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
        raise Quarantine("validate", f"invalid {', '.join(fields)}") from None
    problems = job.order.rules.violations(job.meta, job.ds)
    if problems:
        raise Quarantine("validate", "; ".join(problems))
    return job


def _deidentify(job: _Job) -> _Job:
    assert job.ds is not None
    config = job.order.deid
    result = deidentify(job.ds, config.profile(), config.pseudonymizer())
    if result.dataset is None:
        raise Quarantine("deidentify", result.quarantine_reason or "not de-identifiable")
    job.out = result.dataset
    return job


#: findings quoted in a quarantine reason (status, manifest); the offline command lists all
_FINDINGS_IN_REASON = 3


def _verify(job: _Job) -> _Job:
    assert job.ds is not None and job.out is not None
    findings = verify_no_phi(job.ds, job.out, job.order.deid.profile())
    if findings:
        # a finding says what kind of value, from where, found where — never the value
        where = "; ".join(str(f) for f in findings[:_FINDINGS_IN_REASON])
        more = len(findings) - _FINDINGS_IN_REASON
        raise Quarantine(
            "verify",
            f"PHI check failed: {len(findings)} finding(s): {where}"
            + (f"; and {more} more" if more > 0 else ""),
        )
    return job


def _write(job: _Job) -> _Job:
    assert job.out is not None
    target = Path(job.order.staging_path)
    tmp = target.with_suffix(".tmp")
    try:
        if job.raw_size <= _IN_MEMORY_WRITE:
            data = encode_dataset(job.out)  # the fast path, for the usual few-MB instance
            job.out_sha256, job.out_size = hashlib.sha256(data).hexdigest(), len(data)
            if len(data) <= RESULT_IN_MEMORY_MAX:
                job.out_data = data
                return job
            tmp.write_bytes(data)
        else:
            # Large (multi-frame) instances are written straight to the file: the worker holds
            # the pixel data once, not three times.
            job.out.save_as(tmp, enforce_file_format=True)
            job.out_sha256, job.out_size = sha256_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # an output that could not be encoded leaves nothing
        raise
    # Staging is a cache: lost or torn files are detected by size and redone from the spool.
    tmp.replace(target)
    return job


STAGES: list[Callable[[_Job], _Job]] = [_read, _validate, _deidentify, _verify, _write]


def process_instance(order: WorkOrder) -> WorkResult:
    """Run every stage on one spooled instance; never raises for a bad instance."""
    job = _Job(order)
    try:
        for stage in STAGES:
            try:
                job = stage(job)
            except Quarantine:
                raise
            except Exception:
                # pydicom raises on a malformed value only when it is first touched, in any
                # stage: an input problem is a quarantine with its reason; anything else is
                # a bug and goes up ("processing failed").
                problem = diagnose(job.ds)
                if problem is None:
                    raise
                raise Quarantine(stage.__name__.strip("_"), f"invalid dataset: {problem}") from None
    except Quarantine as q:
        return WorkResult(
            raw_sha256=job.raw_sha256,
            stage=q.stage,
            reason=q.reason,
            modality=job.meta.modality if job.meta else None,
        )
    assert job.out is not None and job.meta is not None
    out = job.out
    return WorkResult(
        raw_sha256=job.raw_sha256,
        deid_study_uid=str(out.StudyInstanceUID),
        deid_series_uid=str(out.SeriesInstanceUID),
        deid_sop_uid=str(out.SOPInstanceUID),
        deid_size=job.out_size,
        deid_sha256=job.out_sha256,
        data=job.out_data,
        modality=job.meta.modality,
        series_number=job.meta.series_number,
        instance_number=job.meta.instance_number,
    )
