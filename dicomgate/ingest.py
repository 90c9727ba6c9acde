"""Ingest: turn a received file into a durable, recorded instance — or a refusal.

This is the domain side of C-STORE. The SCP handler (``dicomgate.scp``) builds a
:class:`StoreRequest` from the pynetdicom event and sends back whatever status
:meth:`Ingest.store` decides; it knows nothing of spools, databases or S3.

Order of work for one instance (promise 1 — no acknowledged instance is lost):

1. room check (spool limit, free space) → 0xA700 when full;
2. header checks (parse, SOP Class/Instance match the request, UIDs valid) → 0xA900 / 0xC0xx;
3. fsync + rename + directory fsync into the spool, then the state-store row: one atomic
   admission (version allocation by compare-and-set, safe between nodes);
4. a SOP Instance UID the store already has: same bytes → success, the spooled copy removed
   (nothing stored twice); different bytes → stored as a new version and logged;
5. only then 0x0000.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.checks import HeaderUIDs, Refusal, check_header
from dicomgate.pseudonym import Pseudonymizer
from dicomgate.spool import Spool, SpoolFullError, sha256_file
from dicomgate.state import AdmitOutcome, InstanceRecord, StateError, StateStore
from dicomgate.status import Status

__all__ = ["Ingest", "StoreOutcome", "StoreRequest"]

log = get_logger(__name__)

_STRIPES = 64


def _os_error(exc: BaseException) -> str:
    """An exception named without its message (messages quote paths, paths quote UIDs)."""
    errno_name = errno.errorcode.get(getattr(exc, "errno", None) or -1)
    return f"{type(exc).__name__} {errno_name}" if errno_name else type(exc).__name__


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One C-STORE request whose dataset pynetdicom has written to ``path``."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae: str
    peer_address: str
    association_id: str


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    status: Status
    reason: str | None = None
    record: InstanceRecord | None = None
    duplicate: bool = False
    #: the patient (``HeaderUIDs.patient_key``) for the audit trail; never logged
    patient_key: str | None = field(default=None, repr=False)


class Ingest:
    """Receives files into the spool and the state store; thread-safe."""

    def __init__(
        self,
        spool: Spool,
        state: StateStore,
        pseudonymizer: Pseudonymizer,
        on_stored: Callable[[InstanceRecord], None] | None = None,
        *,
        node_id: str = "",
    ) -> None:
        self.spool = spool
        self.state = state
        self.node_id = node_id  # recorded on every row: whose spool holds the raw copy
        self._pseudo = pseudonymizer
        self._on_stored = on_stored
        # Two associations storing the same SOP Instance UID at once must not pick the same
        # version; instances with different UIDs never wait for each other.
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    def hold(self, study_instance_uid: str, association_id: str) -> None:
        """An open association of this node carries the study: no node may publish it until
        :meth:`release` (or until this node's heartbeat expires).

        A failure is logged, not the sender's problem: the instance is already durable and
        recorded, and without the hold the study still waits ``stable_after`` after its last
        instance; at worst it is published in two manifest versions, nothing is lost.
        """
        self._best_effort(
            "could not hold the study for this association",
            self.state.hold_study,
            study_instance_uid,
            self.node_id,
            association_id,
        )

    def release(self, association_id: str) -> None:
        """The association ended: its study holds go (failures logged; the node's holds all
        go when it stops or its heartbeat expires)."""
        self._best_effort(
            "could not release the association's study holds",
            self.state.release_holds,
            self.node_id,
            association_id,
        )

    @staticmethod
    def _best_effort(what: str, call: Callable[..., None], *args: str) -> None:
        try:
            call(*args)
        except Exception as exc:
            log.warning(what, error=type(exc).__name__, traceback=safe_traceback(exc))

    def _stripe(self, sop_instance_uid: str) -> threading.Lock:
        return self._stripes[zlib.crc32(sop_instance_uid.encode()) % _STRIPES]

    def store(self, req: StoreRequest) -> StoreOutcome:
        try:
            size = req.path.stat().st_size
        except OSError as exc:
            gone = Refusal(Status.PROCESSING_FAILURE, f"received file gone ({_os_error(exc)})")
            return self._refuse(req, gone)
        if (why := self.spool.check_room(size)) is not None:
            return self._refuse(req, Refusal(Status.OUT_OF_RESOURCES, why))

        checked = check_header(
            req.path,
            request_sop_class_uid=req.sop_class_uid,
            request_sop_instance_uid=req.sop_instance_uid,
            file_size=size,
        )
        if isinstance(checked, Refusal):
            return self._refuse(req, checked)

        with self._stripe(checked.sop_instance_uid):
            try:
                outcome = self._store_checked(req, checked, size)
                outcome = dataclasses.replace(outcome, patient_key=checked.patient_key)
            except SpoolFullError:
                return self._refuse(
                    req, Refusal(Status.OUT_OF_RESOURCES, "no space left on the spool filesystem")
                )
            except Exception as exc:
                # No message and no plain traceback: both can quote the spool path, which is
                # named after the original SOP Instance UID (promise 2 covers the logs).
                log.error("store failed", traceback=safe_traceback(exc))
                return self._refuse(
                    req, Refusal(Status.PROCESSING_FAILURE, f"store failed ({_os_error(exc)})")
                )
        if self._on_stored is not None and outcome.record is not None and not outcome.duplicate:
            # The instance is durable and recorded: a failing listener must not turn that
            # into a failure status, and other senders of this UID need not wait for it.
            try:
                self._on_stored(outcome.record)
            except Exception as exc:
                log.error(
                    "stored-instance listener failed",
                    error=type(exc).__name__,
                    traceback=safe_traceback(exc),
                )
        return outcome

    def _store_checked(self, req: StoreRequest, uids: HeaderUIDs, size: int) -> StoreOutcome:
        # Compared with the newest version only: the sender's latest content is what gets
        # delivered, so A, then B, then A again makes A the newest (version 3).
        # Optimistic: almost every instance is new, so version 1 is proposed without reading
        # the store first — one state round trip per C-STORE (two DynamoDB calls, not three).
        # A UID the store already has comes back as CONFLICT with its newest version, and the
        # loop then compares contents: a re-sent duplicate costs a spool write it removes again.
        # The spool never renames over a file: if this node still holds version 1 (not yet
        # delivered), the store is asked then.
        newest: InstanceRecord | None = None
        new_sha: str | None = None
        source, relative = req.path, None
        while True:
            if newest is not None and newest.size == size:
                old_sha = newest.sha256 or self._backfill_sha(newest)
                if old_sha is not None and new_sha is None:
                    new_sha = sha256_file(source)[0]
                if old_sha is not None and new_sha == old_sha:
                    if relative is not None:  # spooled before another node admitted it
                        self.spool.remove(relative)
                    return self._duplicate(uids, newest)
            version = newest.version + 1 if newest is not None else 1
            try:
                spooled, size = self.spool.admit(source, uids.sop_instance_uid, version)
            except FileExistsError:
                if newest is None and relative is None:  # version 1, still in this spool
                    newest = self.state.latest_version(uids.sop_instance_uid)
                    if newest is not None:
                        continue
                if relative is not None:
                    self.spool.remove(relative)
                raise StateError("a spool file of this instance is unknown to the store") from None
            if relative is not None:
                self.spool.release(size)  # the same file, counted again under its new version
            relative = spooled
            source = self.spool.path_of(relative)
            record = InstanceRecord(
                sop_instance_uid=uids.sop_instance_uid,
                version=version,
                study_instance_uid=uids.study_instance_uid,
                series_instance_uid=uids.series_instance_uid,
                sop_class_uid=uids.sop_class_uid,
                transfer_syntax_uid=uids.transfer_syntax_uid,
                size=size,
                sha256=new_sha,
                spool_path=relative,
                calling_ae=req.calling_ae,
                peer_address=req.peer_address,
                association_id=req.association_id,
                node_id=self.node_id,
            )
            try:
                # one atomic step: duplicate check and version allocation (compare-and-set)
                admission = self.state.admit(record)
            except BaseException:
                # Durable but unrecorded and about to be refused: take it out of the spool, or a
                # restart would adopt (and deliver) an instance the sender was told failed.
                self.spool.remove(relative)
                raise
            if admission.outcome == AdmitOutcome.ADMITTED:
                break
            if admission.outcome == AdmitOutcome.DUPLICATE:
                self.spool.remove(relative)
                return self._duplicate(uids, admission.record)
            newest = admission.record  # CONFLICT: another node admitted a version meanwhile
            if newest.version + 1 <= version:  # the store would answer the same again
                self.spool.remove(relative)
                raise StateError("the store's versions of this instance are inconsistent")
        if version > 1:
            log.warning(
                "instance re-sent with different content, kept as a new version",
                instance=self._pseudo.log_id(uids.sop_instance_uid),
                version=version,
            )
        return StoreOutcome(Status.SUCCESS, record=admission.record)

    def _duplicate(self, uids: HeaderUIDs, newest: InstanceRecord) -> StoreOutcome:
        log.info(
            "duplicate instance, already stored",
            instance=self._pseudo.log_id(uids.sop_instance_uid),
            version=newest.version,
        )
        return StoreOutcome(Status.SUCCESS, record=newest, duplicate=True)

    def _backfill_sha(self, old: InstanceRecord) -> str | None:
        if old.spool_path is None:
            return None
        path = self.spool.path_of(old.spool_path)
        if not path.exists():
            return None
        sha, _ = sha256_file(path)
        self.state.set_sha256(old.key, sha)
        return sha

    def _refuse(self, req: StoreRequest, refusal: Refusal) -> StoreOutcome:
        log.warning(
            "instance refused",
            status=f"0x{refusal.status:04X}",
            reason=refusal.reason,
            instance=self._pseudo.log_id(req.sop_instance_uid),
        )
        # Nothing half-written stays behind: pynetdicom deletes its temporary file after the
        # handler returns, but a refused dataset goes now.
        req.path.unlink(missing_ok=True)
        return StoreOutcome(refusal.status, refusal.reason)
