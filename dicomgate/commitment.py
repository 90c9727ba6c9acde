"""Storage Commitment Push Model SCP (PS3.4 Annex J): "do you now hold these safely?"

The N-ACTION handler (:meth:`CommitmentService.request`, run in the association's thread) only
checks the request and records it in the state store — durable, so a restart answers it too —
and answers at once. The report is the :class:`CommitmentReporter`'s work, a thread of the
node: it finds pending commitments, claims one (a lease in the store: any node can answer, one
does), decides each reference, and sends the N-EVENT-REPORT when every reference is decided:

* **committed**: the newest row of the SOP Instance UID exists with the referenced SOP Class —
  received and recorded is durable (``commitment_after = received``, the promise the C-STORE
  response already made), or uploaded/delivered (``commitment_after = delivered``). A
  quarantined instance is durably held: committed under ``received``; under ``delivered`` it
  never will be, so it fails with 0x0110 (processing failure).
* **failed 0x0119** (class/instance conflict): the row has another SOP Class.
* **failed 0x0112** (no such object instance): no row ``commitment_timeout`` seconds after
  the request (until then the reference waits).

The report goes back on the requesting association while it is open (the requester may keep
it open for exactly that); else on another open association of the same calling AE title with
the Storage Commitment context; else on a new association to the address the peer table
(``commitment_peers``) gives for the calling AE title, proposing the SCP role for Storage
Commitment (SCP/SCU role selection). Failures are retried with backoff for
``commitment_retry_for`` seconds; the outcome is recorded on the commitment either way.

The first time a commitment is evaluated, its references that resolve to rows become an
*expectation* of their study (``source = commitment``): the study is complete as soon as all of
them arrived and finished (see :func:`dicomgate.state.completion_rule`). References without a
row yet are expected in the same study when every resolved reference is of one study.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role

from dicomgate._logging import get_logger
from dicomgate._tracebacks import safe_traceback
from dicomgate.audit import NULL_TRAIL, AuditTrail
from dicomgate.config import Settings, parse_peer
from dicomgate.ops.metrics import Metrics
from dicomgate.state import (
    DEFAULT_LEASE_SECONDS,
    Commitment,
    CommitmentLease,
    CommitmentRef,
    CommitmentState,
    InstanceRecord,
    InstanceState,
    LeaseLost,
    StateStore,
)

__all__ = [
    "STORAGE_COMMITMENT",
    "STORAGE_COMMITMENT_INSTANCE",
    "CommitmentReporter",
    "CommitmentService",
    "check_call_back_tls",
    "check_request",
    "decide",
]

log = get_logger(__name__)

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3)
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"

#: DIMSE statuses (PS3.7 C) and Failure Reasons (PS3.4 J.3.3 / C.14.1.1)
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
INVALID_ATTRIBUTE_VALUE = 0x0106
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123

#: how often the reporter looks for work when nothing wakes it (s)
_POLL = 0.25
#: a reference without a row is looked at again this soon (s)
_WAITING_RETRY = 0.25
#: a report is sent no sooner than this after its N-ACTION: a requester that does not wait for
#: the report on its association releases it at once, and an N-EVENT-REPORT crossing its
#: A-RELEASE-RQ is never answered (pynetdicom then aborts an association already closing);
#: one that waits is still there, and is answered on it
_SETTLE = 0.5


def _valid_uid(value: object) -> bool:
    return isinstance(value, str) and bool(value) and UID(value).is_valid


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def check_request(
    action_type: int | None, requested_instance: str | None, ds: Dataset | None
) -> tuple[Dataset | int, str, tuple[CommitmentRef, ...]]:
    """The N-ACTION's checks (PS3.4 J.3.2): a status (0 or a failure with its comment), the
    Transaction UID and the references."""
    if action_type != 1:
        return _status(NO_SUCH_ACTION, "Action Type ID must be 1"), "", ()
    if requested_instance and str(requested_instance) != STORAGE_COMMITMENT_INSTANCE:
        return _status(INVALID_OBJECT_INSTANCE, "not the well-known SOP Instance"), "", ()
    if ds is None or "TransactionUID" not in ds:
        return _status(MISSING_ATTRIBUTE, "Transaction UID (0008,1195) missing"), "", ()
    txn = str(ds.TransactionUID or "")
    if not txn:
        return _status(MISSING_ATTRIBUTE_VALUE, "Transaction UID (0008,1195) empty"), "", ()
    if not _valid_uid(txn):
        return _status(INVALID_ATTRIBUTE_VALUE, "Transaction UID (0008,1195) invalid"), "", ()
    if "ReferencedSOPSequence" not in ds:
        return _status(MISSING_ATTRIBUTE, "Referenced SOP Sequence (0008,1199) missing"), "", ()
    if not ds.ReferencedSOPSequence:
        return _status(MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence empty"), "", ()
    refs = []
    for item in ds.ReferencedSOPSequence:
        if "ReferencedSOPClassUID" not in item or "ReferencedSOPInstanceUID" not in item:
            return _status(MISSING_ATTRIBUTE, "a Referenced SOP item lacks its UIDs"), "", ()
        cls, inst = str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)
        if not _valid_uid(cls) or not _valid_uid(inst):
            return _status(INVALID_ATTRIBUTE_VALUE, "a Referenced SOP UID is invalid"), "", ()
        refs.append(CommitmentRef(cls, inst))
    return SUCCESS, txn, tuple(refs)


def decide(
    ref: CommitmentRef,
    rec: InstanceRecord | None,
    *,
    after: str,
    timed_out: bool,
) -> int | None:
    """One reference's result: SUCCESS, a Failure Reason, or None (not decided yet)."""
    if rec is None:
        return NO_SUCH_OBJECT_INSTANCE if timed_out else None
    if rec.sop_class_uid != ref.sop_class_uid:
        return CLASS_INSTANCE_CONFLICT
    if rec.state == InstanceState.QUARANTINED:
        return SUCCESS if after == "received" else PROCESSING_FAILURE
    if rec.state in (InstanceState.RECEIVED, InstanceState.PROCESSED) and after == "delivered":
        return PROCESSING_FAILURE if timed_out else None
    return SUCCESS


def report_dataset(
    transaction_uid: str, results: Iterable[tuple[CommitmentRef, int]]
) -> tuple[int, Dataset, int]:
    """The N-EVENT-REPORT's Event Type ID, Event Information and failed count (PS3.4 J.3.3)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ok, failed = [], []
    for ref, code in results:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if code == SUCCESS:
            ok.append(item)
        else:
            item.FailureReason = code
            failed.append(item)
    if ok:
        ds.ReferencedSOPSequence = ok
    if failed:
        ds.FailedSOPSequence = failed
    return (2 if failed else 1), ds, len(failed)


class CommitmentService:
    """What the N-ACTION handler calls (in the association's thread)."""

    def __init__(self, state: StateStore, node_id: str, wake: Callable[[], None]) -> None:
        self.state = state
        self.node_id = node_id
        self.wake = wake

    def request(
        self,
        *,
        action_type: int | None,
        requested_instance: str | None,
        dataset: Dataset | None,
        calling_ae: str,
        association_id: str,
    ) -> Dataset | int:
        status, txn, refs = check_request(action_type, requested_instance, dataset)
        if status != SUCCESS:
            log.warning("storage commitment request refused", reason=status.ErrorComment)  # type: ignore[union-attr]
            return status
        new = self.state.add_commitment(
            Commitment(
                transaction_uid=txn,
                calling_ae=calling_ae,
                refs=refs,
                requested_at=time.time(),
                node_id=self.node_id,
                association_id=association_id,
            )
        )
        log.info("storage commitment requested", references=len(refs), repeat=not new)
        self.wake()
        return SUCCESS


@dataclass
class _Peer:
    host: str
    port: int
    tls: bool = False


def _call_back_context(settings: Settings, *, with_certificate: bool = True) -> ssl.SSLContext:
    """The client context of a call-back over DICOM TLS: BCP 195 suites as the listener's; the
    peer's certificate must chain to commitment_tls_ca_file (else the system's CAs) and name the
    host; the node's own certificate goes along if the peer asks for one."""
    # here, not at the top: dicomgate.scp imports this module (the N-ACTION handler)
    from dicomgate.scp._tls import client_context

    if not with_certificate:
        return client_context(ca_file=settings.commitment_tls_ca_file)
    return client_context(
        ca_file=settings.commitment_tls_ca_file,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
    )


def check_call_back_tls(settings: Settings) -> None:
    """At start-up, before anything else starts: when a commitment peer is ``tls://``, its
    client context can be built (the CA file and the node's certificate load), so a bad
    ``commitment_tls_ca_file`` stops the node, named, instead of failing every call-back later.
    Raises ``TlsConfigError`` (a ``ValueError``) naming the setting."""
    peers = [parse_peer(address) for address in settings.commitment_peers.values()]
    if not any(_Peer(*p).tls for p in peers if p is not None):
        return
    from dicomgate.scp._tls import TlsConfigError, why

    ca = settings.commitment_tls_ca_file
    where = f"the CA file {ca}" if ca is not None else "the system's CAs"
    try:  # the CA alone first, so that the message names the file at fault
        _call_back_context(settings, with_certificate=False)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load {where} for storage commitment "
            f"call-backs over TLS (DICOMGATE_COMMITMENT_TLS_CA_FILE): {why(exc)}"
        ) from None
    try:
        _call_back_context(settings)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the certificate {settings.tls_cert_file} and key "
            f"{settings.tls_key_file} presented on storage commitment call-backs "
            f"(DICOMGATE_TLS_CERT_FILE, DICOMGATE_TLS_KEY_FILE): {why(exc)}"
        ) from None


class CommitmentReporter:
    """The node's thread that answers pending commitments (see the module's notes)."""

    #: the node's audit trail: each delivered report is recorded (the node sets it)
    audit: AuditTrail = NULL_TRAIL

    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        *,
        open_association: Callable[[str, str], Any] | None = None,
        metrics: Metrics | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.settings = settings
        self.state = state
        self.node_id = settings.node_id
        #: (association id, calling AE) → an open pynetdicom association to report on, or None
        self.open_association = open_association
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._expected: set[str] = set()
        self._delivery_failures: dict[str, int] = {}
        #: Transaction UID → rows of its references already decided committed: a pass re-reads
        #: only the others (a 3,000-reference commitment waiting for its last instance would
        #: otherwise read 3,000 rows every _WAITING_RETRY)
        self._committed: dict[str, dict[str, InstanceRecord]] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commitments", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(_POLL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception as exc:  # the store is down for a moment: next poll
                log.error(
                    "storage commitment pass failed",
                    error=type(exc).__name__,
                    traceback=safe_traceback(exc),
                )

    # -- one pass -------------------------------------------------------------------------------
    def tick(self) -> int:
        """Answer what can be answered now; how many commitments were looked at."""
        due = self.state.due_commitments()
        if not due:
            return 0
        others_alive = {n.node_id for n in self.state.nodes() if n.alive} - {self.node_id}
        n = 0
        for header in due:
            if self._stop.is_set():
                break
            # a live node answers its own (it may still hold the requesting association)
            if header.node_id in others_alive:
                continue
            claimed = self.state.claim_commitment(
                header.transaction_uid, self.node_id, lease_seconds=self.lease_seconds
            )
            if claimed is None:
                continue
            n += 1
            try:
                self._work(*claimed)
            except LeaseLost:
                self._forget(header.transaction_uid)
                log.warning("storage commitment taken over by another node")
            except Exception:
                # give it back for the next pass (or another node)
                self.state.finish_commitment(
                    claimed[1],
                    state=CommitmentState.PENDING,
                    outcome="evaluation failed",
                    retry_at=time.time() + 1.0,
                )
                raise
        return n

    def _expect(self, commitment: Commitment, rows: dict[str, InstanceRecord]) -> None:
        """Record the commitment's references as expectations of their studies (once)."""
        txn = commitment.transaction_uid
        if txn in self._expected or not rows:
            return
        by_study: dict[str, set[str]] = {}
        for uid, rec in rows.items():
            by_study.setdefault(rec.study_instance_uid, set()).add(uid)
        unresolved = {r.sop_instance_uid for r in commitment.refs} - rows.keys()
        if len(by_study) == 1 and unresolved:
            next(iter(by_study.values())).update(unresolved)
        for study, uids in by_study.items():
            self.state.expect_instances(
                study, source="commitment", source_id=txn, sop_instance_uids=uids
            )
        self._expected.add(txn)

    def _work(self, commitment: Commitment, lease: CommitmentLease) -> None:
        now = time.time()
        s = self.settings
        txn = commitment.transaction_uid
        committed = self._committed.setdefault(txn, {})
        rows: dict[str, InstanceRecord] = dict(committed)
        for ref in commitment.refs:
            if ref.sop_instance_uid not in rows:
                rec = self.state.latest_version(ref.sop_instance_uid)
                if rec is not None:
                    rows[ref.sop_instance_uid] = rec
        self._expect(commitment, rows)
        timed_out = now - commitment.requested_at >= s.commitment_timeout
        results: list[tuple[CommitmentRef, int]] = []
        waiting = 0
        for ref in commitment.refs:
            rec = rows.get(ref.sop_instance_uid)
            code = decide(ref, rec, after=s.commitment_after, timed_out=timed_out)
            if code is None:
                waiting += 1
            else:
                results.append((ref, code))
                if code == SUCCESS and rec is not None:
                    committed[ref.sop_instance_uid] = rec
        if waiting:
            self.state.finish_commitment(
                lease,
                state=CommitmentState.PENDING,
                outcome=f"waiting for {waiting} of {len(commitment.refs)} instances",
                retry_at=now + _WAITING_RETRY,
            )
            return
        settle = commitment.requested_at + _SETTLE - now
        if settle > 0:
            self.state.finish_commitment(
                lease, state=CommitmentState.PENDING, outcome="decided", retry_at=now + settle
            )
            return
        event_type, ds, failed = report_dataset(txn, results)
        error = self._deliver(commitment, event_type, ds)
        if error is None:
            self.state.finish_commitment(
                lease,
                state=CommitmentState.REPORTED,
                outcome="all committed" if not failed else f"{failed} failed",
                failed=failed,
            )
            self._forget(txn)
            self._count("committed" if not failed else "failed")
            self._audit(commitment, rows, results, failed)
            log.info(
                "storage commitment reported",
                references=len(results),
                failed=failed,
                event_type=event_type,
            )
            return
        tries = self._delivery_failures.get(txn, 0) + 1
        self._delivery_failures[txn] = tries
        if now - commitment.requested_at >= s.commitment_timeout + s.commitment_retry_for:
            self.state.finish_commitment(
                lease, state=CommitmentState.UNREPORTED, outcome=error, failed=failed
            )
            self._forget(txn)
            self._count("unreported")
            log.error("storage commitment report given up", error=error, attempts=tries)
            return
        delay = min(60.0, 0.5 * 2 ** min(tries, 8))
        self.state.finish_commitment(
            lease, state=CommitmentState.PENDING, outcome=error, retry_at=now + delay
        )
        log.warning("storage commitment report not delivered, will retry", error=error, in_s=delay)

    def _forget(self, txn: str) -> None:
        """Drop what this node kept of a commitment that is no longer pending."""
        self._delivery_failures.pop(txn, None)
        self._committed.pop(txn, None)
        self._expected.discard(txn)

    def _audit(
        self,
        commitment: Commitment,
        rows: Mapping[str, InstanceRecord],
        results: list[tuple[CommitmentRef, int]],
        failed: int,
    ) -> None:
        """DICOM Instances Transferred (action R) to the requester: committed per study."""
        studies: dict[str, int] = {}
        for ref, code in results:
            rec = rows.get(ref.sop_instance_uid)
            if code == SUCCESS and rec is not None:
                studies[rec.study_instance_uid] = studies.get(rec.study_instance_uid, 0) + 1
        self.audit.commitment(
            calling_ae=commitment.calling_ae, peer=None, studies=studies, failed=failed
        )

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.commitments.labels(result=result).inc()

    # -- delivery -------------------------------------------------------------------------------
    def _deliver(self, commitment: Commitment, event_type: int, ds: Dataset) -> str | None:
        """Send the report; None when the requester took it, else why not."""
        assoc = None
        if self.open_association is not None:
            mine = commitment.node_id == self.node_id
            assoc = self.open_association(
                commitment.association_id if mine else "", commitment.calling_ae
            )
        if assoc is not None and not _idle(assoc):
            # the requester is releasing it (an N-EVENT-REPORT crossing its A-RELEASE-RQ is
            # never answered): call back instead
            assoc = None
        if assoc is not None:
            try:
                error = _send(assoc, event_type, ds)
            except Exception as exc:  # the association went away meanwhile: a new one
                error = f"open association: {type(exc).__name__}"
            if error is None:
                return None
            log.info("report on the open association failed, calling back", error=error)
        peer = self._peer(commitment.calling_ae)
        if peer is None:
            return f"no open association and no commitment_peers entry for {commitment.calling_ae}"
        return self._call_back(peer, commitment.calling_ae, event_type, ds)

    def _peer(self, calling_ae: str) -> _Peer | None:
        address = self.settings.commitment_peers.get(calling_ae)
        parsed = parse_peer(address) if address is not None else None  # checked by Settings
        return _Peer(*parsed) if parsed is not None else None

    def _tls_args(self, peer: _Peer) -> tuple[ssl.SSLContext, str] | None:
        """(client context, server name) for a tls:// peer (built per call-back: a renewed
        certificate or CA file is picked up without a reload)."""
        return (_call_back_context(self.settings), peer.host) if peer.tls else None

    def _call_back(self, peer: _Peer, calling_ae: str, event_type: int, ds: Dataset) -> str | None:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        # bounds the TCP connect and, for a tls:// peer, the handshake inside it (a port that
        # never answers the ClientHello would otherwise hold this thread, and every report)
        ae.connection_timeout = s.acse_timeout
        ae.add_requested_context(
            STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        # we send N-EVENT-REPORTs: the SCP role of Storage Commitment, as the requester
        role = build_role(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
        try:
            assoc = ae.associate(
                peer.host,
                peer.port,
                ae_title=calling_ae,
                ext_neg=[role],
                tls_args=self._tls_args(peer),
            )
        except Exception as exc:
            return f"association to the peer failed: {type(exc).__name__}"
        if not assoc.is_established:
            if peer.tls and not assoc.is_rejected:
                return "no association with the peer over TLS (handshake or connection failed)"
            return "the peer refused the association"
        try:
            return _send(assoc, event_type, ds)
        finally:
            if assoc.is_established:
                assoc.release()


def _idle(assoc: Any) -> bool:
    """Established and in PS3.8's Sta6 (data transfer): no release under way."""
    machine = getattr(getattr(assoc, "dul", None), "state_machine", None)
    return bool(assoc.is_established) and getattr(machine, "current_state", None) == "Sta6"


def _send(assoc: Any, event_type: int, ds: Dataset) -> str | None:
    status, _ = assoc.send_n_event_report(
        ds, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
    )
    if status is None or "Status" not in status:
        return "no answer to the N-EVENT-REPORT"
    if int(status.Status) != SUCCESS:
        return f"the peer answered the N-EVENT-REPORT with 0x{int(status.Status):04X}"
    return None
