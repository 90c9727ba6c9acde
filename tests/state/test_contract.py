"""The state store's contract (dicomgate/state/_protocol.py), the same for every backend: each
race two nodes could run is one atomic conditional operation — checked with threads and with
spawned processes, each holding its own handle to the store, as nodes do."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicomgate.state import (
    MAX_BATCH,
    AdmitOutcome,
    Commitment,
    CommitmentRef,
    CommitmentState,
    InstanceKey,
    InstanceRecord,
    InstanceState,
    LeaseLost,
    MppsRecord,
    MppsUpdate,
    StateStore,
)
from tests.state._spec import StoreSpec

STUDY = "1.2.826.0.1.3680043.10.54.1"
RACE_STUDY = "1.2.826.0.1.3680043.10.54.2"  # what racers admit and claim (never complete)
SHORT = 0.4  # a lease or heartbeat that a test lets expire


def record(
    study: str = STUDY, *, uid: str | None = None, version: int = 1, sha: str | None = None
) -> InstanceRecord:
    """A row as ingest makes it (sha None: sizes differed, so nothing was hashed)."""
    return InstanceRecord(
        sop_instance_uid=uid or generate_uid(),
        version=version,
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=100,
        spool_path=f"instances/x~v{version}.dcm",
        calling_ae="CT",
        peer_address="127.0.0.1",
        association_id="a1",
        sha256=sha,
        node_id="n1",
    )


def admitted(store: StateStore, rec: InstanceRecord) -> InstanceRecord:
    admission = store.admit(rec)
    assert admission.outcome == AdmitOutcome.ADMITTED, admission
    return admission.record


def upload(store: StateStore, rec: InstanceRecord, owner: str = "n1") -> InstanceState:
    """Carry one instance the whole way, as a node's pipeline does."""
    lease = store.claim_instance(rec.key, owner)
    assert lease is not None
    store.record_processed(
        lease,
        sha256=rec.sha256 or "ab" * 32,
        deid_study_uid="2.25.99",
        deid_series_uid="2.25.2",
        deid_sop_uid=f"2.25.{rec.version}{abs(hash(rec.sop_instance_uid))}",
        deid_size=90,
        deid_sha256="cd" * 32,
    )
    return store.record_uploaded(lease, f"key/{rec.sop_instance_uid}")


def publish(store: StateStore, study: str = STUDY, owner: str = "n1") -> int | None:
    """Publish the study's next manifest if it is complete; its version, or None."""
    pub = store.begin_publication(study, owner, stable_after=0)
    if pub is None:
        return None
    keys = [
        r.key
        for r in store.manifest_rows(study)
        if r.state in (InstanceState.UPLOADED, InstanceState.QUARANTINED, InstanceState.DELIVERED)
    ]
    for start in range(0, len(keys), MAX_BATCH):
        store.mark_reported(pub, keys[start : start + MAX_BATCH])
    store.complete_publication(pub, "2.25.99")
    store.mark_notified(pub)
    return pub.version


# -- admission --------------------------------------------------------------------------------
def test_admit_allocates_versions_and_spots_duplicates(store: StateStore) -> None:
    """Same bytes again is a duplicate; new bytes become version 2; a stale proposal conflicts."""
    first = admitted(store, record(sha="aa" * 32))
    again = store.admit(replace(first, received_at=0.0))
    assert (again.outcome, again.record.version) == (AdmitOutcome.DUPLICATE, 1)
    second = admitted(store, replace(first, version=2, sha256="bb" * 32))
    stale = store.admit(replace(first, version=2, sha256="cc" * 32))
    assert (stale.outcome, stale.record.version) == (AdmitOutcome.CONFLICT, 2)
    assert [r.version for r in store.versions(first.sop_instance_uid)] == [1, 2]
    assert store.latest_version(first.sop_instance_uid) == second
    assert second.received_at > 0 and store.get(second.key) == second


def test_a_newer_version_supersedes_a_finished_unreported_one(store: StateStore) -> None:
    """Issue 11 item 1: an uploaded, unreported older version ends superseded, never listed."""
    v1 = admitted(store, record())
    assert upload(store, v1) == InstanceState.UPLOADED
    v2 = admitted(store, replace(v1, version=2))
    old = store.get(v1.key)
    assert old is not None and (old.state, old.reported_version) == (InstanceState.SUPERSEDED, 0)
    # and one still being carried ends superseded when it finishes
    lease = store.claim_instance(v2.key, "n1")
    assert lease is not None
    admitted(store, replace(v1, version=3))
    assert store.record_uploaded(lease, "k") == InstanceState.SUPERSEDED
    assert publish(store) is None  # v3 still pending: nothing to report yet
    assert upload(store, replace(v1, version=3)) == InstanceState.UPLOADED
    assert publish(store) == 1
    assert {
        (r.version, r.state, r.reported_version) for r in store.versions(v1.sop_instance_uid)
    } == {
        (1, InstanceState.SUPERSEDED, 0),
        (2, InstanceState.SUPERSEDED, 0),
        (3, InstanceState.DELIVERED, 1),
    }


def test_recovered_rows_are_stored_once(store: StateStore) -> None:
    """Reconciliation's rebuilt row goes in under its own key, never twice."""
    rec = record(version=2)
    assert store.admit_recovered(rec) and not store.admit_recovered(rec)
    assert [r.version for r in store.versions(rec.sop_instance_uid)] == [2]
    store.set_sha256(rec.key, "ee" * 32)
    store.set_sha256(rec.key, "ff" * 32)  # first one wins: it is the file's
    store.set_spool_path(rec.key, None)
    got = store.get(rec.key)
    assert got is not None and (got.sha256, got.spool_path) == ("ee" * 32, None)
    assert store.spooled_paths() == {}


# -- claims -----------------------------------------------------------------------------------
def test_claims_are_exclusive_and_checked_by_every_transition(store: StateStore) -> None:
    """A lease taken over after expiry makes the old holder's transitions fail with LeaseLost."""
    rec = admitted(store, record())
    [claim] = store.claim_work("n1", limit=10, lease_seconds=SHORT)
    assert claim.record.key == rec.key and claim.lease.owner == "n1"
    assert store.claim_work("n2", limit=10) == []
    assert store.claim_instance(rec.key, "n2") is None
    time.sleep(SHORT + 0.1)
    [taken] = store.claim_work("n2", limit=10, lease_seconds=SHORT)
    assert taken.lease.token != claim.lease.token
    for attempt in (
        lambda: store.renew(claim.lease),
        lambda: store.record_processed(claim.lease, sha256="00" * 32),
        lambda: store.record_uploaded(claim.lease, "k"),
        lambda: store.quarantine(claim.lease, stage="s", reason="r"),
        lambda: store.record_retry(claim.lease, stage="s", reason="r"),
        lambda: store.requeue(claim.lease, reason="r"),
        lambda: store.supersede_if_stale(claim.lease),
    ):
        with pytest.raises(LeaseLost):
            attempt()
    store.release(claim.lease)  # a lost lease is ignored
    assert store.get(rec.key).lease_owner == "n2"  # type: ignore[union-attr]
    # an expired lease nobody took over is still its holder's (a fencing token, not a clock)
    time.sleep(SHORT + 0.1)
    store.record_retry(taken.lease, stage="upload", reason="slow")
    assert store.renew(taken.lease).expires_at > time.time()
    store.release(taken.lease)
    again = store.claim_instance(rec.key, "n3")
    assert again is not None and store.get(rec.key).attempts == 1  # type: ignore[union-attr]


def test_transitions_release_or_keep_the_lease(store: StateStore) -> None:
    """Processed keeps the lease (the upload follows); terminal states and requeue release it."""
    a, b = admitted(store, record()), admitted(store, record())
    la = store.claim_instance(a.key, "n1")
    assert la is not None
    store.record_processed(la, sha256="11" * 32, deid_study_uid="2.25.7")
    assert store.claim_work("n2", limit=10)[0].record.key == b.key  # a is still n1's
    store.requeue(la, reason="staged file damaged")
    got = store.get(a.key)
    assert got is not None and (got.state, got.lease_owner) == (InstanceState.RECEIVED, None)
    assert store.study(STUDY).deid_study_uid == "2.25.7"  # type: ignore[union-attr]
    la2 = store.claim_instance(a.key, "n1")
    assert la2 is not None and not store.supersede_if_stale(la2)
    assert store.quarantine(la2, stage="verify", reason="PHI", sha256="12" * 32) == (
        InstanceState.QUARANTINED
    )
    assert store.backlog() == 1
    with pytest.raises(ValueError, match="not pipeline fields"):
        store.record_processed(la2, state="delivered")


# -- publication ------------------------------------------------------------------------------
def test_publication_decides_completeness_and_versions(store: StateStore) -> None:
    """One publication at a time; pending instances, quiet time and live holds keep it back."""
    a = admitted(store, record())
    assert store.begin_publication(STUDY, "n1", stable_after=0) is None  # pending
    upload(store, a)
    assert store.begin_publication(STUDY, "n1", stable_after=3600) is None  # not quiet yet
    store.heartbeat("n2", ttl=SHORT)
    store.hold_study(STUDY, "n2", "assoc-1")
    assert store.held_studies() == {STUDY}
    assert store.begin_publication(STUDY, "n1", stable_after=0) is None  # n2 is still sending
    time.sleep(SHORT + 0.1)  # n2 died: its hold no longer counts
    assert store.held_studies() == set()
    pub = store.begin_publication(STUDY, "n1", stable_after=0, lease_seconds=SHORT)
    assert pub is not None and pub.version == 1 and pub.study.unreported == 1
    assert store.begin_publication(STUDY, "n2", stable_after=0) is None  # n1 is publishing
    time.sleep(SHORT + 0.1)  # n1 died mid-publication: the same version is begun again
    retake = store.begin_publication(STUDY, "n2", stable_after=0)
    assert retake is not None and retake.version == 1
    with pytest.raises(LeaseLost):
        store.mark_reported(pub, [a.key])
    store.mark_reported(retake, [a.key])
    store.mark_reported(retake, [a.key])  # idempotent
    store.complete_publication(retake, "2.25.99")
    assert store.claim_announcement(STUDY, "n1") is None  # n2 still holds it
    assert [s.study_instance_uid for s in store.unnotified()] == [STUDY]
    store.release_publication(retake)
    ann = store.claim_announcement(STUDY, "n1")
    assert ann is not None and ann.version == 1
    store.mark_notified(ann)
    assert store.unnotified() == [] and store.claim_announcement(STUDY, "n1") is None
    study = store.study("2.25.99")
    assert study is not None and (study.manifest_version, study.notified_version) == (1, 1)
    assert store.get(a.key).state == InstanceState.DELIVERED  # type: ignore[union-attr]
    # a late instance reopens the study: version 2 lists everything
    upload(store, admitted(store, record()))
    assert publish(store) == 2 and store.studies_to_report() == []
    assert {r.reported_version for r in store.instances(study_instance_uid=STUDY)} == {1, 2}


def test_oldest_undelivered_follows_the_oldest_instance_on_its_way(store: StateStore) -> None:
    """The EMF gauge's source: received, processed and uploaded-unreported instances count;
    quarantined and delivered ones do not."""
    assert store.oldest_undelivered() is None
    before = time.time()
    first = admitted(store, record())
    time.sleep(0.05)
    second = admitted(store, record(study="2.25.2"))
    oldest = store.oldest_undelivered()
    assert oldest is not None and before - 1 <= oldest <= second.received_at  # type: ignore[operator]
    assert upload(store, first) == InstanceState.UPLOADED  # on its way still: no manifest yet
    assert store.oldest_undelivered() == oldest
    assert publish(store) == 1  # first is delivered now
    later = store.oldest_undelivered()
    assert later is not None and later > oldest
    lease = store.claim_instance(second.key, "n1")
    assert lease is not None
    store.quarantine(lease, stage="verify", reason="PHI", sha256="12" * 32)
    assert store.oldest_undelivered() is None


def test_status_report_counts_and_names(store: StateStore) -> None:
    """The status report says per study what happened; quarantines by pseudonym too."""
    a, b = admitted(store, record()), admitted(store, record())
    upload(store, a)
    lease = store.claim_instance(b.key, "n1")
    assert lease is not None
    store.quarantine(lease, stage="verify", reason="PHI", deid_sop_uid="2.25.5")
    publish(store)
    [s] = store.status_report(STUDY)["studies"]
    assert s["instances_by_state"] == {"delivered": 1, "quarantined": 1}
    assert (s["state"], s["manifest_version"], s["instances"], s["bytes"]) == (
        "delivered",
        1,
        2,
        200,
    )
    [held] = s["quarantined"]
    assert held == {
        "instance": b.sop_instance_uid,
        "deid_instance": "2.25.5",
        "version": 1,
        "stage": "verify",
        "reason": "PHI",
    }
    assert store.status_report("2.25.99")["studies"][0]["study"] == STUDY
    assert store.status_report("1.2.3.4")["studies"] == []


# -- nodes and the key ------------------------------------------------------------------------
def test_nodes_heartbeats_and_release(store: StateStore) -> None:
    """A dead node's claims, publications and holds are released for the others to adopt."""
    store.heartbeat("n1", open_associations=2, info={"version": "x"}, ttl=SHORT)
    store.heartbeat("n2")
    [n1, _] = sorted(store.nodes(), key=lambda n: n.node_id)
    assert (n1.node_id, n1.open_associations, dict(n1.info), n1.alive) == (
        "n1",
        2,
        {"version": "x"},
        True,
    )
    a = admitted(store, record())
    upload(store, a)
    b = admitted(store, record())
    assert store.claim_work("n1", limit=5)
    pub = store.begin_publication(STUDY, "n1", stable_after=0)
    assert pub is None  # b pending
    store.hold_study(STUDY, "n1", "x")
    time.sleep(SHORT + 0.1)
    assert {n.node_id: n.alive for n in store.nodes()} == {"n1": False, "n2": True}
    assert store.lease_owners() == {"n1"}
    assert store.release_node("n1") >= 1
    assert store.lease_owners() == set() and [n.node_id for n in store.nodes()] == ["n2"]
    [adopted] = store.claim_work("n2", limit=5)
    assert adopted.record.key == b.key
    store.release_holds("n2", "none")  # nothing of n2's: a no-op


def test_key_fingerprint_is_set_once(store: StateStore) -> None:
    """The first node's key fingerprint stays; a later node learns it differs."""
    assert store.key_fingerprint("f1") == "f1"
    assert store.key_fingerprint("f2") == "f1"


# -- races: threads and processes, each with its own handle -----------------------------------
def _race(spec: StoreSpec, n: int, work: Callable[[StateStore, int], Any]) -> list[Any]:
    """Run ``work(store, i)`` in ``n`` threads at once, each with its own store handle."""
    stores = [spec.open() for _ in range(n)]
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return work(stores[i], i)

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(run, range(n)))
    finally:
        for s in stores:
            s.close()


def _admit_until_stored(store: StateStore, rec: InstanceRecord) -> int:
    """Ingest's loop: propose newest + 1 until admitted (or found a duplicate)."""
    while True:
        newest = store.latest_version(rec.sop_instance_uid)
        proposal = replace(rec, version=newest.version + 1 if newest else 1)
        admission = store.admit(proposal)
        if admission.outcome != AdmitOutcome.CONFLICT:
            return admission.record.version


def _claim_all(store: StateStore, owner: str) -> list[InstanceKey]:
    got: list[InstanceKey] = []
    while claims := store.claim_work(owner, limit=7):
        got += [c.record.key for c in claims]
    return got


def _publish_rounds(store: StateStore, owner: str, rounds: int) -> list[int]:
    """Keep trying to publish while other racers add instances: the versions this one won."""
    won: list[int] = []
    for _ in range(rounds):
        if (v := publish(store, owner=owner)) is not None:
            won.append(v)
        upload(store, admitted(store, record()), owner)
    return won


def _check_races(
    versions: list[int], claimed: list[list[InstanceKey]], published: list[list[int]], n: int
) -> None:
    assert sorted(versions) == list(range(1, n + 1)), "two admissions got one version"
    keys = [k for got in claimed for k in got]
    # 30 instances, plus the n versions admitted in the race: each claimed exactly once
    assert len(keys) == len(set(keys)) == 30 + n, "one instance claimed twice, or one never"
    won = sorted(v for got in published for v in got)
    assert won == list(range(1, len(won) + 1)) and won, "two manifests with one version"


def test_threads_racing(state_backend: StoreSpec) -> None:
    """N threads: distinct versions, one owner per claim, one publication per manifest version."""
    n, uid = 4, generate_uid()
    versions = _race(
        state_backend,
        n,
        lambda s, i: _admit_until_stored(s, record(study=RACE_STUDY, uid=uid, sha=f"{i:064x}")),
    )
    with state_backend.open() as s:
        for _ in range(30):
            s.admit(record(study=RACE_STUDY))
    claimed = _race(state_backend, n, lambda s, i: _claim_all(s, f"n{i}"))
    with state_backend.open() as s:
        for i in range(n):
            s.release_node(f"n{i}")
        upload(s, admitted(s, record()))
    published = _race(state_backend, n, lambda s, i: _publish_rounds(s, f"n{i}", 5))
    _check_races(versions, claimed, published, n)


def _process_racer(
    spec: StoreSpec, i: int, uid: str, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a spawned process
    with spec.open() as store:
        barrier.wait()
        version = _admit_until_stored(store, record(study=RACE_STUDY, uid=uid, sha=f"{i:064x}"))
        barrier.wait()
        claimed = _claim_all(store, f"p{i}")
        barrier.wait()
        for key in claimed:
            lease = store.claim_instance(key, f"p{i}")
            if lease is not None:  # our own claim is live: nobody else can take it
                raise AssertionError("a live claim was taken twice")
        store.release_node(f"p{i}")
        barrier.wait()
        published = _publish_rounds(store, f"p{i}", 4)
    results.put((version, claimed, published))


def test_processes_racing(state_backend: StoreSpec) -> None:
    """N spawned processes (nodes) race on admit, claim, completion and manifest versions."""
    n, uid = 3, generate_uid()
    with state_backend.open() as s:
        for _ in range(30):
            s.admit(record(study=RACE_STUDY))
        upload(s, admitted(s, record()))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_process_racer, args=(state_backend, i, uid, barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=120) for _ in range(n)]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    _check_races([g[0] for g in got], [g[1] for g in got], [g[2] for g in got], n)


# -- what senders said (issue 10) ---------------------------------------------------------------
COMMIT_STUDY = "1.2.826.0.1.3680043.10.54.3"


def test_expectations_complete_a_study_at_once(store: StateStore) -> None:
    """Every expected instance arrived and finished: complete without stable_after; a late
    instance nobody named waits for the idle rule again; a missing one after the deadline."""
    a, b = admitted(store, record(COMMIT_STUDY)), admitted(store, record(COMMIT_STUDY))
    named = [a.sop_instance_uid, b.sop_instance_uid]
    assert store.expect_instances(
        COMMIT_STUDY, source="commitment", source_id="2.25.1", sop_instance_uids=named
    )
    assert not store.expect_instances(  # once per source: a repeat writes nothing
        COMMIT_STUDY, source="commitment", source_id="2.25.1", sop_instance_uids=["2.25.7"]
    )
    [e] = store.expectations(COMMIT_STUDY)
    assert (e.source, e.source_id, e.sop_instance_uids) == ("commitment", "2.25.1", set(named))
    upload(store, a)
    assert store.begin_publication(COMMIT_STUDY, "n1", stable_after=3600) is None  # b pending
    upload(store, b)
    [progress] = [s for s in store.studies_to_report() if s.study_instance_uid == COMMIT_STUDY]
    assert (progress.expected, progress.expected_missing, progress.unexpected) == (2, 0, 0)
    assert progress.expected_by == "commitment"
    pub = store.begin_publication(COMMIT_STUDY, "n1", stable_after=3600)
    assert pub is not None and pub.completion == "commitment" and pub.missing == ()
    store.mark_reported(pub, [a.key, b.key])
    store.complete_publication(pub, "2.25.98")
    store.mark_notified(pub)
    # a late instance nobody named: the idle rule
    late = admitted(store, record(COMMIT_STUDY))
    upload(store, late)
    assert store.begin_publication(COMMIT_STUDY, "n1", stable_after=3600) is None
    # an MPPS names it and one more that never comes: complete once the deadline passed
    assert store.expect_instances(
        COMMIT_STUDY,
        source="mpps",
        source_id="2.25.2",
        sop_instance_uids=[late.sop_instance_uid, "2.25.404"],
    )
    assert store.begin_publication(COMMIT_STUDY, "n1", stable_after=3600) is None
    late_deadline = store.begin_publication(
        COMMIT_STUDY, "n1", stable_after=3600, expected_deadline=60
    )
    assert late_deadline is None
    pub = store.begin_publication(COMMIT_STUDY, "n1", stable_after=3600, expected_deadline=0)
    assert pub is not None and pub.version == 2
    assert pub.completion == "mpps" and pub.missing == ("2.25.404",)
    renewed = store.renew_publication(pub)
    assert (renewed.completion, renewed.missing) == (pub.completion, pub.missing)
    report = store.status_report(COMMIT_STUDY)["studies"][0]
    assert (report["expected"], report["expected_received"]) == (4, 3)
    assert report["missing"] == ["2.25.404"]


def test_big_expectations_are_chunked(store: StateStore) -> None:
    """3,000 expected instances and a 3,000-reference commitment: stored and read whole."""
    uids = [f"2.25.{i}" for i in range(3000)]
    assert store.expect_instances(
        "2.25.5", source="commitment", source_id="2.25.6", sop_instance_uids=uids
    )
    [e] = store.expectations("2.25.5")
    assert e.sop_instance_uids == set(uids)
    refs = tuple(CommitmentRef("1.2.840.10008.5.1.4.1.1.2", u) for u in uids)
    assert store.add_commitment(Commitment("2.25.6", "ORTHANC", refs, node_id="n1"))
    claimed = store.claim_commitment("2.25.6", "n1")
    assert claimed is not None and claimed[0].refs == refs


def test_commitments_are_claimed_once_and_survive(state_backend: StoreSpec) -> None:
    """A commitment is recorded once, claimed by one racer, retried, then reported."""
    refs = (CommitmentRef("1.2.840.10008.5.1.4.1.1.2", "2.25.10"),)
    with state_backend.open() as s:
        assert s.add_commitment(Commitment("2.25.20", "CT", refs, node_id="n0"))
        assert not s.add_commitment(Commitment("2.25.20", "CT", (), node_id="n0"))
        assert [c.transaction_uid for c in s.due_commitments()] == ["2.25.20"]
    won = _race(state_backend, 4, lambda s, i: s.claim_commitment("2.25.20", f"n{i}"))
    winners = [w for w in won if w is not None]
    assert len(winners) == 1
    commitment, lease = winners[0]
    assert commitment.refs == refs and commitment.calling_ae == "CT"
    with state_backend.open() as s:  # a new handle: what a restarted node sees
        assert s.due_commitments() == []  # held
        s.finish_commitment(lease, state=CommitmentState.PENDING, outcome="x", retry_at=0.0)
        with pytest.raises(LeaseLost):
            s.finish_commitment(lease, state=CommitmentState.REPORTED, outcome="y")
        [due] = s.due_commitments()
        assert due.attempts == 1 and due.outcome == "x"
        short = s.claim_commitment("2.25.20", "a", lease_seconds=SHORT)
        assert short is not None and s.claim_commitment("2.25.20", "b") is None
        time.sleep(SHORT + 0.1)  # a died: b takes it over, a's token is dead
        taken = s.claim_commitment("2.25.20", "b")
        assert taken is not None
        with pytest.raises(LeaseLost):
            s.finish_commitment(short[1], state=CommitmentState.REPORTED, outcome="late")
        s.finish_commitment(taken[1], state=CommitmentState.REPORTED, outcome="ok", failed=0)
        assert s.due_commitments() == [] and s.claim_commitment("2.25.20", "c") is None
        done = s.commitment("2.25.20")
        assert done is not None and done.state == CommitmentState.REPORTED and done.failed == 0


def test_mpps_create_once_and_final_states(store: StateStore) -> None:
    now = time.time()
    rec = MppsRecord("2.25.30", "IN PROGRESS", "CT", ("2.25.31",), now, now)
    assert store.create_mpps(rec) and not store.create_mpps(rec)
    assert store.update_mpps("2.25.404", status="COMPLETED") == MppsUpdate.NO_SUCH_INSTANCE
    assert store.update_mpps("2.25.30") == MppsUpdate.UPDATED
    reason = ("110514", "DCM", "Incorrect worklist entry selected")
    assert (
        store.update_mpps("2.25.30", status="DISCONTINUED", reason=reason, instances=2)
        == MppsUpdate.UPDATED
    )
    assert store.update_mpps("2.25.30", status="COMPLETED") == MppsUpdate.FINAL
    [m] = store.mpps(study_instance_uid="2.25.31")
    assert (m.status, m.reason, m.instances) == ("DISCONTINUED", reason, 2)
    assert (
        store.mpps(sop_instance_uid="2.25.30") == [m] and store.mpps(study_instance_uid="x") == []
    )


def test_mpps_updates_race(state_backend: StoreSpec) -> None:
    """Two N-SETs finishing one step at once: exactly one is applied."""
    now = time.time()
    with state_backend.open() as s:
        assert s.create_mpps(MppsRecord("2.25.40", "IN PROGRESS", "CT", (), now, now))
    outcomes = _race(
        state_backend,
        4,
        lambda s, i: s.update_mpps("2.25.40", status="COMPLETED" if i % 2 else "DISCONTINUED"),
    )
    assert sorted(outcomes) == sorted([MppsUpdate.UPDATED] + [MppsUpdate.FINAL] * 3)
