"""The state store's interface: what every backend (SQLite, DynamoDB) offers, and its records.

Every caller — ingest, reconciliation, the pipeline and its publisher, the CLI, ops, benches and
tests — talks to the store through :class:`StateStore` only. No SQL, connection or integer row id
crosses this line: an instance is identified by its :class:`InstanceKey` (SOP Instance UID,
version), a study by its original Study Instance UID.

Several nodes (processes on one host, containers behind a load balancer) may share one store.
Every state change that two of them could race on is **one atomic conditional operation** of a
backend, so the outcome never depends on timing:

======================================  ===================================================
race                                    operation
======================================  ===================================================
two senders of one SOP Instance UID     :meth:`StateStore.admit` (duplicate check by size +
                                        sha256, version allocated by compare-and-set)
two nodes wanting the same instance     :meth:`StateStore.claim_work` /
                                        :meth:`StateStore.claim_instance` (a :class:`Lease`);
                                        every later transition checks the lease and raises
                                        :class:`LeaseLost` if it was taken over
an old version finishing after a new    the transitions themselves: a row that is stale by
one arrived                             then ends ``superseded`` in the same operation
two nodes finding a study complete      :meth:`StateStore.begin_publication` (completeness
                                        decided and manifest version allocated at once)
two nodes announcing one version        :meth:`StateStore.claim_announcement`
two nodes answering one commitment      :meth:`StateStore.claim_commitment` (a
                                        :class:`CommitmentLease`, checked by
                                        :meth:`StateStore.finish_commitment`)
two N-CREATEs / N-SETs of one MPPS      :meth:`StateStore.create_mpps` (exists → False),
                                        :meth:`StateStore.update_mpps` (only while
                                        ``IN PROGRESS``)
======================================  ===================================================

Leases are *fencing tokens*: a claim writes a fresh random token; a transition succeeds only
while the row still carries that token. Expiry decides only who may claim next — an expired
lease that nobody took over is still honoured for its holder (nothing happened in between, so
that is the same as having acted just before expiry). A node whose heartbeat expired is dead:
any node may call :meth:`StateStore.release_node` for it, which drops its leases, publication
leases and study holds, so the others adopt its work, each instance exactly once.

Limits a backend is designed to (DynamoDB: one ``TransactWriteItems`` of at most 100 items per
call, items small): no call writes more than ~100 items atomically. Calls that touch a whole
study are therefore split by the *caller* into idempotent chunks (:meth:`StateStore.mark_reported`
takes at most :data:`MAX_BATCH` keys per call and may be repeated); queries over a
3,000-instance study page inside the backend and return complete lists.

Clocks: times are ``time.time()`` seconds (UTC epoch). Lease and heartbeat expiry compare the
caller's clock with the stored expiry, so nodes' clocks must agree to well within a lease
(NTP; :data:`DEFAULT_LEASE_SECONDS` is far above any skew NTP allows).

Backends: ``dicomgate.state.sqlite`` (the embedded default) and ``dicomgate.state.dynamodb``,
chosen by ``dicomgate.state.open_state(settings)`` from ``DICOMGATE_STATE`` (``sqlite`` |
``dynamodb://TABLE``). The DynamoDB module provides
``open_dynamodb(table: str, *, readonly: bool = False, create: bool = True) -> StateStore``
(``create``: make the table when missing; False, in production, forbids that); region and
credentials come from boto3's chain, the endpoint from ``AWS_ENDPOINT_URL_DYNAMODB``.

This module imports nothing else from dicomgate: it is the contract, and nothing more.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple, Protocol, Self

__all__ = [
    "DEFAULT_HEARTBEAT_TTL",
    "DEFAULT_LEASE_SECONDS",
    "MAX_BATCH",
    "PROCESSED_FIELDS",
    "WORK_STATES",
    "Admission",
    "AdmitOutcome",
    "Claim",
    "Commitment",
    "CommitmentLease",
    "CommitmentRef",
    "CommitmentState",
    "Expectation",
    "InstanceKey",
    "InstanceRecord",
    "InstanceState",
    "Lease",
    "LeaseLost",
    "MppsRecord",
    "MppsUpdate",
    "NodeRecord",
    "Publication",
    "StateError",
    "StateStore",
    "StudyProgress",
    "StudyRecord",
    "completion_rule",
    "describe_expectations",
    "missing_instances",
    "study_state",
    "with_expectations",
]

#: how long a claim lasts unless renewed; the pipeline renews every third of it
DEFAULT_LEASE_SECONDS = 60.0
#: a node that has not sent a heartbeat for this long is dead
DEFAULT_HEARTBEAT_TTL = 30.0
#: most keys one call takes (DynamoDB: one transaction of <= 100 items, one for the study)
MAX_BATCH = 99


class StateError(Exception):
    """A state-store operation failed for a reason of the store's own (not I/O of the caller)."""


class LeaseLost(StateError):  # noqa: N818 - named for what happened, as the issue names it
    """The lease a transition relied on was taken over (expired and claimed by another node,
    or released by :meth:`StateStore.release_node`): this node must drop the work, untouched.

    The message names the instance by nothing but its version: UIDs are not logged.
    """


class InstanceState(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    UPLOADED = "uploaded"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    #: an older version, replaced by a newer one with the same SOP Instance UID before any
    #: manifest listed it (in flight, uploaded or quarantined); never listed in a manifest
    #: (reported_version 0), its raw copy purged like a delivered one
    SUPERSEDED = "superseded"


#: states a node claims work in: ``received`` (to process) and ``processed`` (to upload)
WORK_STATES = frozenset({InstanceState.RECEIVED, InstanceState.PROCESSED})


class InstanceKey(NamedTuple):
    """The identity of one stored instance: a SOP Instance UID has one row per version."""

    sop_instance_uid: str
    version: int


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One version of one received instance, as the state store keeps it.

    Original UIDs live here (the store is as private as the spool); pseudonymized values are
    filled by the pipeline. ``spool_path`` is relative to the spool root; ``node_id`` is the
    node that received it (whose spool sub-directory holds the raw copy; "" for rows of a
    store migrated from before nodes had ids).
    """

    sop_instance_uid: str
    version: int
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    size: int
    spool_path: str | None
    calling_ae: str
    peer_address: str
    association_id: str
    state: InstanceState = InstanceState.RECEIVED
    sha256: str | None = None
    reason: str | None = None
    received_at: float = 0.0
    node_id: str = ""
    # set by the pipeline
    stage: str | None = None
    attempts: int = 0
    deid_study_uid: str | None = None
    deid_series_uid: str | None = None
    deid_sop_uid: str | None = None
    deid_size: int | None = None
    deid_sha256: str | None = None
    object_key: str | None = None
    modality: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    #: the manifest version that listed it (0: superseded, never listed; None: not yet)
    reported_version: int | None = None
    # the current claim, if any (read-only for callers: set by claims, cleared by transitions)
    lease_owner: str | None = None
    lease_expires_at: float | None = None

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.sop_instance_uid, self.version)


#: the fields :meth:`StateStore.record_processed` may set
PROCESSED_FIELDS = frozenset(
    {
        "sha256",
        "deid_study_uid",
        "deid_series_uid",
        "deid_sop_uid",
        "deid_size",
        "deid_sha256",
        "modality",
        "series_number",
        "instance_number",
    }
)


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on one instance: ``owner`` (a node id) may carry it until another claim takes
    it over. ``token`` is what transitions check; ``expires_at`` says when others may claim."""

    key: InstanceKey
    owner: str
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """An instance handed out by :meth:`StateStore.claim_work`, with its lease."""

    record: InstanceRecord
    lease: Lease


class AdmitOutcome(StrEnum):
    ADMITTED = "admitted"  # stored as the proposed version
    DUPLICATE = "duplicate"  # the newest version has the same size and sha256: nothing stored
    CONFLICT = "conflict"  # the newest version is not the one the caller saw: try again


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`StateStore.admit` did. ``record`` is the stored row (ADMITTED), the newest
    existing version (DUPLICATE), or the newest version now present (CONFLICT)."""

    outcome: AdmitOutcome
    record: InstanceRecord


@dataclass(frozen=True, slots=True)
class StudyProgress:
    """A study with instances not yet in a manifest (what the study tracker looks at)."""

    study_instance_uid: str
    first_received_at: float
    last_received_at: float
    manifest_version: int
    deid_study_uid: str | None
    pending: int  # received or processed: still on their way
    unreported: int  # uploaded or quarantined, not yet in a manifest
    #: what the sender said (storage commitment, MPPS COMPLETED): SOP Instance UIDs expected
    #: in this study, how many of them have no row in it, and how many unreported rows no
    #: expectation names (a late instance nobody announced: the idle rule decides then)
    expected: int = 0
    expected_missing: int = 0
    unexpected: int = 0
    #: when the newest expectation was recorded, and by what (``commitment`` | ``mpps``)
    expected_at: float | None = None
    expected_by: str | None = None


@dataclass(frozen=True, slots=True)
class StudyRecord:
    study_instance_uid: str
    deid_study_uid: str | None
    first_received_at: float
    last_received_at: float
    manifest_version: int
    notified_version: int
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class Publication:
    """The right to publish (or announce) manifest ``version`` of one study.

    Held by ``owner`` under ``token`` like an instance :class:`Lease`; ``study`` is the study's
    progress as it was when the publication began (what the manifest's header says).
    """

    study_instance_uid: str
    version: int
    owner: str
    token: str
    expires_at: float
    study: StudyProgress
    #: how completeness was decided: ``idle`` (stable_after), ``commitment`` or ``mpps`` (every
    #: expected instance arrived, or expected_deadline passed); announcements say ``idle``
    completion: str = "idle"
    #: expected SOP Instance UIDs (original) with no row in the study when it began
    missing: tuple[str, ...] = ()


class CommitmentRef(NamedTuple):
    """One item of a storage commitment request's Referenced SOP Sequence."""

    sop_class_uid: str
    sop_instance_uid: str


class CommitmentState(StrEnum):
    PENDING = "pending"  # recorded, result or report still owed
    REPORTED = "reported"  # the N-EVENT-REPORT was taken by the requester
    UNREPORTED = "unreported"  # gave up delivering the report (no peer, refused, retry_for spent)


@dataclass(frozen=True, slots=True)
class Commitment:
    """A storage commitment request (PS3.4 J.3.2), as the store keeps it until reported.

    ``node_id`` / ``association_id``: where the N-ACTION came in (the report goes back on that
    association while it is open). ``outcome``: the last result or delivery error, for status.
    """

    transaction_uid: str
    calling_ae: str
    refs: tuple[CommitmentRef, ...]
    requested_at: float = 0.0
    node_id: str = ""
    association_id: str = ""
    state: CommitmentState = CommitmentState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    outcome: str | None = None
    failed: int | None = None  # instances reported failed (set when reported)


@dataclass(frozen=True, slots=True)
class CommitmentLease:
    """The right to evaluate and report one commitment (a fencing token, like :class:`Lease`)."""

    transaction_uid: str
    owner: str
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a sender said a study contains: ``source`` ``commitment`` (``source_id`` the
    Transaction UID) or ``mpps`` (the MPPS SOP Instance UID)."""

    study_instance_uid: str
    source: str
    source_id: str
    recorded_at: float
    sop_instance_uids: frozenset[str]


@dataclass(frozen=True, slots=True)
class MppsRecord:
    """A Modality Performed Procedure Step (PS3.4 F.7) as the store keeps it (no PHI beyond
    UIDs: the dataset itself is not stored)."""

    sop_instance_uid: str
    status: str  # IN PROGRESS | COMPLETED | DISCONTINUED
    calling_ae: str
    study_instance_uids: tuple[str, ...]
    created_at: float
    updated_at: float
    #: DISCONTINUED: the Discontinuation Reason Code (value, scheme, meaning), if given
    reason: tuple[str, str, str] | None = None
    instances: int = 0  # SOP instances the COMPLETED step named


class MppsUpdate(StrEnum):
    UPDATED = "updated"
    NO_SUCH_INSTANCE = "no-such-instance"
    FINAL = "final"  # COMPLETED or DISCONTINUED already: may no longer be updated


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node's last heartbeat. ``alive`` is computed by the store at read time."""

    node_id: str
    last_heartbeat: float
    expires_at: float
    open_associations: int
    info: Mapping[str, str] = field(default_factory=dict)
    alive: bool = True


class StateStore(Protocol):
    """What the node keeps per instance, study and node; safe for concurrent callers (threads
    of one process and any number of processes or hosts sharing the backend)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- admission (the C-STORE path) ------------------------------------------------------------
    def latest_version(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The newest version of a SOP Instance UID, or None if it was never stored."""
        ...

    def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        """Every version of a SOP Instance UID, oldest first."""
        ...

    def admit(self, rec: InstanceRecord) -> Admission:
        """Record a newly spooled instance as version ``rec.version`` — atomically:

        1. if the newest stored version has ``rec``'s size and a sha256 equal to ``rec.sha256``
           (not None) → DUPLICATE, nothing written (a sender's retry is idempotent);
        2. else if the newest stored version is not ``rec.version - 1`` (none, for version 1)
           → CONFLICT, nothing written: another admission got in between; the caller compares
           with the returned newest and proposes again;
        3. else the row is stored (state ``received``, ``received_at`` now if 0), its study
           created or its ``last_received_at`` advanced, and older versions that finished but
           were never reported end ``superseded`` (reported_version 0) → ADMITTED.

        The spool file is durable before this is called (promise 1); on DUPLICATE or CONFLICT
        the caller removes or renames it.
        """
        ...

    def admit_recovered(self, rec: InstanceRecord) -> bool:
        """Reconciliation: store a row rebuilt from a spool file as exactly ``rec.key`` if that
        key has no row (False otherwise). No duplicate check (the file was acknowledged)."""
        ...

    def set_sha256(self, key: InstanceKey, sha256: str) -> None:
        """Fill in a row's raw sha256 if it has none (back-filled by the duplicate check)."""
        ...

    def set_spool_path(self, key: InstanceKey, relative: str | None) -> None:
        """Point a row at its spool file (``None``: the raw copy is gone, purged)."""
        ...

    # -- claiming work ---------------------------------------------------------------------------
    def claim_work(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        exclude: Collection[InstanceKey] = (),
    ) -> list[Claim]:
        """Claim up to ``limit`` (<= :data:`MAX_BATCH`) instances in :data:`WORK_STATES` that
        have no lease or an expired one, oldest first. Each returned claim is exclusive (no two
        callers ever hold one instance's lease at once); a backend may claim them one
        conditional write at a time. ``exclude``: keys the caller carries already."""
        ...

    def claim_instance(
        self, key: InstanceKey, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Lease | None:
        """Claim one instance (in any state) if it has no live lease; None if another holds it
        or the key has no row."""
        ...

    def renew(self, lease: Lease, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
        """Extend a lease from now; raises :class:`LeaseLost` if it was taken over."""
        ...

    def release(self, lease: Lease) -> None:
        """Give an instance back unchanged (shutting down, worker crashed): claimable at once.
        A lease already lost is ignored."""
        ...

    # -- transitions (each checks the lease; LeaseLost if it was taken over) ---------------------
    def record_processed(self, lease: Lease, **fields: Any) -> None:
        """Store the de-identified identity (:data:`PROCESSED_FIELDS` only) and move the row to
        ``processed``; the lease is kept (the upload follows). Also records the study's
        pseudonymized UID when ``deid_study_uid`` is given (first one wins)."""
        ...

    def record_uploaded(self, lease: Lease, object_key: str) -> InstanceState:
        """The de-identified object is at the destination: ``uploaded`` — or ``superseded`` if a
        newer version exists by then. Lease released. Returns the state the row ended in."""
        ...

    def quarantine(
        self,
        lease: Lease,
        *,
        stage: str,
        reason: str,
        deid_sop_uid: str | None = None,
        deid_series_uid: str | None = None,
        sha256: str | None = None,
    ) -> InstanceState:
        """Hold an instance back with its reason (pseudonymized UIDs name it in reports) —
        ``superseded`` instead if a newer version exists. Lease released; returns the state."""
        ...

    def record_retry(self, lease: Lease, *, stage: str, reason: str) -> None:
        """Count a failed attempt that will be retried (attempts + 1); lease kept."""
        ...

    def requeue(self, lease: Lease, *, reason: str) -> None:
        """Back to ``received`` (to be processed again from its raw copy); lease released."""
        ...

    def supersede_if_stale(self, lease: Lease) -> bool:
        """If a newer version of the instance exists, end this one ``superseded`` (never listed
        in a manifest) and release the lease: True. Otherwise change nothing: False."""
        ...

    # -- reading ---------------------------------------------------------------------------------
    def get(self, key: InstanceKey) -> InstanceRecord | None: ...

    def instances(
        self, *, study_instance_uid: str | None = None, state: InstanceState | None = None
    ) -> list[InstanceRecord]:
        """Rows, optionally of one study and/or in one state, in admission order."""
        ...

    def spooled_paths(self, node_ids: Collection[str] | None = None) -> dict[str, InstanceRecord]:
        """Rows that still point at a spool file, keyed by relative path; only those received
        by ``node_ids`` when given (a node reconciles its own sub-directory and dead nodes')."""
        ...

    def backlog(self) -> int:
        """Instances received or processed, not yet uploaded or quarantined."""
        ...

    def oldest_undelivered(self) -> float | None:
        """When the oldest instance still on its way was admitted (received, processed, or
        uploaded and not yet in a manifest); None when there is none. Read on every metrics
        flush: never a table scan."""
        ...

    def purgeable(self, *, delivered_before: float) -> list[InstanceRecord]:
        """Delivered or superseded rows, still with a spool file, last changed before then."""
        ...

    # -- studies and publication -----------------------------------------------------------------
    def studies_to_report(self) -> list[StudyProgress]:
        """Studies holding instances not yet listed in a manifest, with their progress."""
        ...

    def manifest_rows(self, study_instance_uid: str) -> list[InstanceRecord]:
        """The newest version of every instance of a study (what a manifest lists)."""
        ...

    def begin_publication(
        self,
        study_instance_uid: str,
        owner: str,
        *,
        stable_after: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        expected_deadline: float | None = None,
    ) -> Publication | None:
        """Decide the study complete and allocate its next manifest version — atomically.

        Complete: nothing pending (received/processed), at least one finished row unreported,
        no hold by a live node, no live publication of it by anyone, and one of
        (see :func:`completion_rule`): every expected instance has a row and every unreported
        row was expected (``completion`` = the expectation's source, at once); the newest
        expectation is ``expected_deadline`` old (same, ``missing`` listed); no instance for
        ``stable_after`` seconds (``idle``). Then the version is ``manifest_version + 1``
        (compare-and-set on ``manifest_version``: a publication whose owner died before
        :meth:`complete_publication` is begun again with the *same* version). None otherwise.
        """
        ...

    def renew_publication(
        self, pub: Publication, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication:
        """Extend a publication's lease; :class:`LeaseLost` if it was taken over."""
        ...

    def mark_reported(self, pub: Publication, keys: Collection[InstanceKey]) -> None:
        """Manifest ``pub.version`` lists these rows: they are reported (``uploaded`` ones
        become ``delivered``). At most :data:`MAX_BATCH` keys per call; idempotent, and rows
        already reported keep their version. :class:`LeaseLost` if ``pub`` was taken over."""
        ...

    def complete_publication(self, pub: Publication, deid_study_uid: str) -> None:
        """Manifest ``pub.version`` is published and its rows marked: the study's
        ``manifest_version`` becomes it (CAS from ``pub.version - 1``), ``delivered_at`` now,
        its pseudonymized UID recorded. The publication lease is kept for the announcement."""
        ...

    def claim_announcement(
        self, study_instance_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication | None:
        """The right to announce the study's current manifest version, if it is not announced
        yet and no live publication of it is held; None otherwise."""
        ...

    def mark_notified(self, pub: Publication) -> None:
        """Every notifier took manifest ``pub.version``: ``notified_version`` becomes it (never
        lowered); the publication lease is released. :class:`LeaseLost` if taken over."""
        ...

    def release_publication(self, pub: Publication) -> None:
        """Give a publication up (announcement failed; try again later). Lost: ignored."""
        ...

    def set_study_pseudonym(self, study_instance_uid: str, deid_study_uid: str) -> None:
        """Record a study's pseudonymized UID (first one wins)."""
        ...

    def unnotified(self) -> list[StudyRecord]:
        """Studies whose latest manifest version has not been announced yet."""
        ...

    def study(self, uid: str) -> StudyRecord | None:
        """A study by its original or its pseudonymized Study Instance UID."""
        ...

    # -- what senders said: expectations, storage commitment, MPPS ------------------------------
    def expect_instances(
        self,
        study_instance_uid: str,
        *,
        source: str,
        source_id: str,
        sop_instance_uids: Collection[str],
        recorded_at: float | None = None,
    ) -> bool:
        """Record that ``source`` (``commitment`` | ``mpps``) named these instances as the
        study's; False (nothing written) if ``source_id`` already has an expectation for the
        study. Any size: a backend chunks the list (write-once items, the header last)."""
        ...

    def expectations(self, study_instance_uid: str) -> list[Expectation]:
        """The study's expectations, oldest first."""
        ...

    def add_commitment(self, commitment: Commitment) -> bool:
        """Record a storage commitment request (state ``pending``); False if its Transaction
        UID is known already (a repeat: nothing written). Any number of references."""
        ...

    def due_commitments(self, now: float | None = None) -> list[Commitment]:
        """Pending commitments whose next attempt is due and that nobody holds a live lease
        on — headers only (``refs`` empty: :meth:`claim_commitment` loads them)."""
        ...

    def claim_commitment(
        self, transaction_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> tuple[Commitment, CommitmentLease] | None:
        """Claim a pending commitment whose lease is free or expired (exclusive, like
        :meth:`claim_instance`): the commitment with its references, and the lease."""
        ...

    def finish_commitment(
        self,
        lease: CommitmentLease,
        *,
        state: CommitmentState,
        outcome: str,
        failed: int | None = None,
        retry_at: float | None = None,
    ) -> None:
        """Record what came of an attempt and release the lease: ``state`` PENDING with
        ``retry_at`` (attempts + 1), or final. :class:`LeaseLost` if it was taken over."""
        ...

    def commitment(self, transaction_uid: str) -> Commitment | None:
        """A commitment's header (``refs`` empty), or None."""
        ...

    def create_mpps(self, rec: MppsRecord) -> bool:
        """Store a new MPPS (N-CREATE); False if that SOP Instance UID exists (0x0111)."""
        ...

    def update_mpps(
        self,
        sop_instance_uid: str,
        *,
        status: str | None = None,
        study_instance_uids: Collection[str] = (),
        reason: tuple[str, str, str] | None = None,
        instances: int | None = None,
    ) -> MppsUpdate:
        """N-SET, atomically: only while the step is ``IN PROGRESS``."""
        ...

    def mpps(
        self, *, sop_instance_uid: str | None = None, study_instance_uid: str | None = None
    ) -> list[MppsRecord]:
        """MPPS records: one by UID, those naming a study, or all."""
        ...

    # -- nodes, holds, key -----------------------------------------------------------------------
    def heartbeat(
        self,
        node_id: str,
        *,
        open_associations: int = 0,
        info: Mapping[str, str] | None = None,
        ttl: float = DEFAULT_HEARTBEAT_TTL,
    ) -> None:
        """Say this node is alive until ``ttl`` seconds from now (upsert)."""
        ...

    def nodes(self) -> list[NodeRecord]:
        """Every node with a heartbeat record, alive or not (``alive`` filled in)."""
        ...

    def lease_owners(self) -> set[str]:
        """Every node id holding any instance lease, publication or hold (live or expired)."""
        ...

    def release_node(self, node_id: str) -> int:
        """A node is dead (or gone for good): drop its instance leases, publications and study
        holds, and its heartbeat record. Returns how many leases were dropped. Idempotent."""
        ...

    def hold_study(self, study_instance_uid: str, node_id: str, association_id: str) -> None:
        """An open association of ``node_id`` carries this study: it is not complete while the
        node is alive — has an unexpired heartbeat; a node without one holds nothing
        (idempotent)."""
        ...

    def release_holds(self, node_id: str, association_id: str) -> None:
        """The association ended: every hold it had goes."""
        ...

    def held_studies(self) -> set[str]:
        """Studies held by an association of a live node."""
        ...

    def key_fingerprint(self, fingerprint: str) -> str:
        """The store's pseudonymization-key fingerprint, set to ``fingerprint`` if it has none
        (atomically: the first node wins). A caller whose fingerprint differs must refuse to
        start: its pseudonyms would differ from every other node's (promise 3)."""
        ...

    # -- reports ---------------------------------------------------------------------------------
    def status_report(self, study: str | None = None) -> dict[str, Any]:
        """``{"studies": [...]}``: per study (``study`` may be the original or pseudonymized
        UID) its times, versions, instance counts by state, bytes, unreported count,
        quarantined instances and a summary ``state``."""
        ...


def completion_rule(
    study: StudyProgress,
    *,
    now: float,
    stable_after: float,
    expected_deadline: float | None,
) -> str | None:
    """How ``study`` is complete now, or None (shared by the backends and the tracker; the
    caller checks pending, unreported, holds and publications):

    1. every expected instance has a row and every unreported row was expected: the
       expectation's source (``commitment`` | ``mpps``), at once;
    2. the newest expectation is ``expected_deadline`` seconds old: its source (missing
       instances are listed as such);
    3. no instance for ``stable_after`` seconds: ``idle`` — the rule for senders that say
       nothing, and the longest wait after the last instance for everyone.
    """
    if study.expected and study.expected_by is not None:
        if not study.expected_missing and not study.unexpected:
            return study.expected_by
        if (
            expected_deadline is not None
            and study.expected_at is not None
            and now - study.expected_at >= expected_deadline
        ):
            return study.expected_by
    if now - study.last_received_at >= stable_after:
        return "idle"
    return None


def with_expectations(
    study: StudyProgress,
    expectations: Iterable[Expectation],
    rows: Iterable[tuple[str, InstanceState, int | None]],
) -> StudyProgress:
    """``study`` with what ``expectations`` say, given its rows as (SOP Instance UID, state,
    reported_version) — any versions: "has a row" is what counts (for backends computing it
    outside their query language)."""
    exps = sorted(expectations, key=lambda e: e.recorded_at)
    if not exps:
        return study
    expected = frozenset().union(*(e.sop_instance_uids for e in exps))
    present: set[str] = set()
    unexpected = 0
    for uid, state, reported in rows:
        present.add(uid)
        if (
            reported is None
            and state in (InstanceState.UPLOADED, InstanceState.QUARANTINED)
            and uid not in expected
        ):
            unexpected += 1
    return replace(
        study,
        expected=len(expected),
        expected_missing=len(expected - present),
        unexpected=unexpected,
        expected_at=exps[-1].recorded_at,
        expected_by=exps[-1].source,
    )


def missing_instances(expectations: Iterable[Expectation], present: Collection[str]) -> list[str]:
    """Expected SOP Instance UIDs without a row (sorted)."""
    expected: set[str] = set()
    for e in expectations:
        expected |= e.sop_instance_uids
    return sorted(expected.difference(present))


def describe_expectations(store: StateStore, report: dict[str, Any]) -> None:
    """Add to a status report's study what senders said of it: ``expected`` (instances named
    by commitments and MPPS), ``expected_received`` (of those, with a row), ``missing`` (the
    others), ``pending_commitments`` (Transaction UIDs not reported yet) and ``mpps``."""
    exps = store.expectations(report["study"])
    present = {r.sop_instance_uid for r in store.instances(study_instance_uid=report["study"])}
    expected: set[str] = set()
    for e in exps:
        expected |= e.sop_instance_uids
    report["expected"] = len(expected)
    report["expected_received"] = len(expected & present)
    report["missing"] = sorted(expected - present)
    pending = []
    for e in exps:
        if e.source == "commitment":
            c = store.commitment(e.source_id)
            if c is not None and c.state == CommitmentState.PENDING:
                pending.append(e.source_id)
    report["pending_commitments"] = pending
    report["mpps"] = [
        {"instance": m.sop_instance_uid, "status": m.status, "instances": m.instances}
        | ({"reason": m.reason[2] or m.reason[0]} if m.reason else {})
        for m in store.mpps(study_instance_uid=report["study"])
    ]


def study_state(study: Mapping[str, Any]) -> str:
    """A status report's summary of one study (shared by the backends):
    receiving → processing → completing → delivered; "quarantined" when nothing could be."""
    by_state = study["instances_by_state"]
    if by_state.get(str(InstanceState.RECEIVED)) or by_state.get(str(InstanceState.PROCESSED)):
        return "processing"
    if study["unreported"]:
        return "completing"  # uploaded, waiting for stable_after or an open association
    if by_state.get(str(InstanceState.DELIVERED)):
        return "delivered"
    return "quarantined"
