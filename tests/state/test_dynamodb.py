"""What only the DynamoDB backend must show: its table (on demand, indexes, TTL), refusing to
create it when forbidden, small items, a 3,000-instance study within the 100-item transaction
limit, and condition failures turned into the interface's answers. The behaviour every backend
shares is tests/state/test_contract.py's; these run against moto's server (a real HTTP
endpoint in a separate, single-threaded process: tests/moto_dynamodb.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydicom.uid import generate_uid

from dicomgate.state import (
    MAX_BATCH,
    AdmitOutcome,
    InstanceRecord,
    InstanceState,
    LeaseLost,
    StateError,
)
from dicomgate.state.dynamodb import (
    TTL_ATTRIBUTE,
    DynamoDBStateStore,
    TableMissingError,
    _instance_item,
    _ts,
    open_dynamodb,
)
from tests.moto_dynamodb import MotoDynamoDB, dynamodb_env, moto_dynamodb, run_moto_dynamodb

__all__ = ["dynamodb_env", "moto_dynamodb"]  # fixtures, imported for pytest


@pytest.fixture
def store(dynamodb_env: MotoDynamoDB) -> Iterator[DynamoDBStateStore]:
    with open_dynamodb(f"dg-{uuid.uuid4().hex[:12]}") as s:
        yield s


def _record(
    study: str, *, uid: str | None = None, version: int = 1, sha256: str = "00" * 32
) -> InstanceRecord:
    """A row as ingest makes it, with UIDs of full length (64 characters: PS3.5 §9.1)."""
    sop = uid or generate_uid()
    return InstanceRecord(
        sop_instance_uid=sop,
        version=version,
        study_instance_uid=study,
        series_instance_uid=generate_uid(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size=540_000,
        spool_path=f"node-a/instances/{sop}~v{version}.dcm",
        calling_ae="CT_SCANNER_01",
        peer_address="10.20.30.40",
        association_id=uuid.uuid4().hex,
        sha256=sha256,
        node_id="node-a",
    )


def _item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (strings in UTF-8, numbers about
    one byte per two digits; developer guide, "Item sizes")."""

    def value(av: dict[str, Any]) -> int:
        (kind, v), *_ = av.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            return len(v) // 2 + 2
        if kind == "SS":
            return sum(len(x.encode()) for x in v)
        if kind == "M":
            return 3 + sum(len(k) + value(x) + 1 for k, x in v.items())
        return 1

    return sum(len(name.encode()) + value(av) for name, av in item.items())


class _TransactionSpy:
    """Wraps the store's boto3 client and records the size of every TransactWriteItems."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.sizes: list[int] = []

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.sizes.append(len(kwargs["TransactItems"]))
        return self._client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- the table -------------------------------------------------------------------------------
def test_table_created_on_demand_with_indexes_and_ttl(store: DynamoDBStateStore) -> None:
    client = store._client
    desc = client.describe_table(TableName=store.table)["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {i["IndexName"] for i in desc["GlobalSecondaryIndexes"]} >= {"by_study", "queue"}
    ttl = client.describe_time_to_live(TableName=store.table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    # a heartbeat carries the TTL attribute, in epoch seconds, after its expiry (TTL tidies;
    # liveness is always decided by expires_at against the clock)
    store.heartbeat("node-a", ttl=30)
    item = client.get_item(TableName=store.table, Key={"pk": {"S": "N#node-a"}, "sk": {"S": "N"}})
    assert int(item["Item"][TTL_ATTRIBUTE]["N"]) >= float(item["Item"]["expires_at"]["N"])
    # opening again (another node starting) finds the table and changes nothing
    assert store.create_table() is False


def test_creation_refused_when_forbidden(dynamodb_env: MotoDynamoDB) -> None:
    name = f"dg-{uuid.uuid4().hex[:12]}"
    with pytest.raises(TableMissingError, match="does not exist"):
        open_dynamodb(name, create=False)
    client = dynamodb_env.client()
    try:
        assert name not in client.list_tables()["TableNames"]
        open_dynamodb(name).close()  # allowed: made
        open_dynamodb(name, create=False).close()  # now it exists: fine
    finally:
        client.close()


def test_unusable_configuration_is_a_state_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No region in boto3's chain: a StateError that says so (the CLI prints StateErrors with
    the setting's name), not a botocore traceback."""
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StateError, match="NoRegionError"):
        open_dynamodb("dg-anything")
    with pytest.raises(StateError, match="table name"):
        open_dynamodb("")


def test_table_of_another_schema_is_refused(dynamodb_env: MotoDynamoDB) -> None:
    name = f"dg-{uuid.uuid4().hex[:12]}"
    client = dynamodb_env.client()
    try:
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
    finally:
        client.close()
    with pytest.raises(Exception, match="lacks the indexes"):
        open_dynamodb(name, create=False)


# -- items ---------------------------------------------------------------------------------------
def test_items_stay_small(store: DynamoDBStateStore) -> None:
    """Every item about 1 KB even with full-length UIDs and every field set (DynamoDB bills
    per KB written and caps items at 400 KB; a study is not one growing item)."""
    study = generate_uid()
    for _ in range(50):
        assert store.admit(_record(study)).outcome == AdmitOutcome.ADMITTED
    for claim in store.claim_work("node-a", limit=MAX_BATCH):
        store.record_processed(
            claim.lease,
            deid_study_uid=generate_uid(),
            deid_series_uid=generate_uid(),
            deid_sop_uid=generate_uid(),
            deid_size=530_000,
            deid_sha256="ff" * 32,
            modality="CT",
            series_number=3,
            instance_number=12,
        )
    store.heartbeat("node-a", open_associations=4, info={"version": "1", "host": "x" * 40})
    store.hold_study(study, "node-a", uuid.uuid4().hex)
    items = list(store._scan())
    assert len(items) > 100
    largest = max(_item_size(i) for i in items)
    assert largest < 1500, largest


# -- a 3,000-instance study ----------------------------------------------------------------------
def test_3000_instance_study_publishes_in_transactions_of_at_most_100(
    store: DynamoDBStateStore,
) -> None:
    """Completion, the manifest's rows and marking them reported page through the study;
    no write touches more than 100 items."""
    study = generate_uid()
    now = time.time() - 120
    # seed 3,000 uploaded rows with the backend's own item layout (batch writes: the admission
    # path itself is the contract tests'), then one real admission so the study item is real
    rows = []
    for i in range(3000):
        rec = _record(study)
        rows.append(
            replace(rec, state=InstanceState.UPLOADED, received_at=now, object_key=f"k/{i}")
        )
    client = store._client
    for start in range(0, len(rows), 25):
        chunk = rows[start : start + 25]
        requests: list[dict[str, Any]] = []
        for n, rec in enumerate(chunk):
            order = _ts(now) + f"#{start + n:06d}"
            requests.append(
                {
                    "PutRequest": {
                        "Item": _instance_item(rec, token=None, rev=0, order=order, updated_at=now)
                    }
                }
            )
            requests.append(
                {
                    "PutRequest": {
                        "Item": {
                            "pk": {"S": "I#" + rec.sop_instance_uid},
                            "sk": {"S": "HEAD"},
                            "latest": {"N": "1"},
                        }
                    }
                }
            )
        for half in (requests[:25], requests[25:]):
            client.batch_write_item(RequestItems={store.table: half})
    last = _record(study)
    assert store.admit_recovered(replace(last, state=InstanceState.UPLOADED, received_at=now))
    client.update_item(  # the seeded rows count as admitted into the study
        TableName=store.table,
        Key={"pk": {"S": "S#" + study}, "sk": {"S": "S"}},
        UpdateExpression="ADD admits :n",
        ExpressionAttributeValues={":n": {"N": "3000"}},
    )

    spy = _TransactionSpy(client)
    store._client = spy
    [progress] = store.studies_to_report()
    assert (progress.pending, progress.unreported) == (0, 3001)
    pub = store.begin_publication(study, "node-a", stable_after=60)
    assert pub is not None and pub.version == 1 and pub.study.unreported == 3001
    listed = store.manifest_rows(study)
    assert len(listed) == 3001
    keys = [r.key for r in listed]
    for start in range(0, len(keys), MAX_BATCH):
        store.mark_reported(pub, keys[start : start + MAX_BATCH])
    store.complete_publication(pub, generate_uid())
    store.mark_notified(pub)

    assert spy.sizes and max(spy.sizes) <= 100
    assert len(spy.sizes) >= 3001 // MAX_BATCH
    [report] = store.status_report(study)["studies"]
    assert report["instances_by_state"] == {"delivered": 3001}
    assert report["state"] == "delivered"
    assert store.studies_to_report() == []
    with pytest.raises(ValueError, match="at most"):
        store.mark_reported(pub, keys[: MAX_BATCH + 1])


# -- condition failures --------------------------------------------------------------------------
def test_lease_taken_over_is_lease_lost(store: DynamoDBStateStore) -> None:
    """Expiry is tested in the claim's condition (moto never runs TTL; DynamoDB only
    eventually): an expired lease is claimable at once, and its old holder's transitions
    fail their condition and raise LeaseLost."""
    rec = _record(generate_uid())
    store.admit(rec)
    [first] = store.claim_work("node-a", limit=1, lease_seconds=0.0)
    time.sleep(0.01)
    [second] = store.claim_work("node-b", limit=1)
    assert second.lease.token != first.lease.token
    for lost in (
        lambda: store.record_uploaded(first.lease, "k"),
        lambda: store.renew(first.lease),
        lambda: store.record_processed(first.lease, modality="CT"),
        lambda: store.quarantine(first.lease, stage="s", reason="r"),
    ):
        with pytest.raises(LeaseLost) as caught:
            lost()
        assert rec.sop_instance_uid not in str(caught.value)
    store.release(first.lease)  # a lost lease: ignored
    assert store.get(rec.key).lease_owner == "node-b"  # type: ignore[union-attr]
    assert store.record_uploaded(second.lease, "k") == InstanceState.UPLOADED


def test_publication_taken_over_is_lease_lost(store: DynamoDBStateStore) -> None:
    """mark_reported's transaction fails on the study's ConditionCheck → LeaseLost, and
    nothing of that transaction is written."""
    study = generate_uid()
    store.admit(_record(study))
    [claim] = store.claim_work("node-a", limit=1)
    store.record_uploaded(claim.lease, "k")
    pub = store.begin_publication(study, "node-a", stable_after=0, lease_seconds=0.0)
    assert pub is not None
    time.sleep(0.01)
    other = store.begin_publication(study, "node-b", stable_after=0)
    assert other is not None and other.version == pub.version  # same version begun again
    with pytest.raises(LeaseLost):
        store.mark_reported(pub, [claim.record.key])
    assert store.get(claim.record.key).reported_version is None  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        store.complete_publication(pub, generate_uid())
    with pytest.raises(LeaseLost):
        store.renew_publication(pub)
    store.mark_reported(other, [claim.record.key])
    store.complete_publication(other, generate_uid())
    assert store.study(study).manifest_version == 1  # type: ignore[union-attr]


def test_arrival_during_the_completeness_decision_wins(
    store: DynamoDBStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """begin_publication reads the rows, then compare-and-sets the study on ``admits``: an
    instance admitted in between makes the CAS fail (None), never a manifest without it."""
    study = generate_uid()
    store.admit(_record(study))
    [claim] = store.claim_work("node-a", limit=1)
    store.record_uploaded(claim.lease, "k")
    read_rows = store._consistent_rows

    def rows_then_an_arrival(item: dict[str, Any]) -> Any:
        rows = read_rows(item)
        store.admit(_record(study))  # another node's association, right now
        return rows

    monkeypatch.setattr(store, "_consistent_rows", rows_then_an_arrival)
    assert store.begin_publication(study, "node-a", stable_after=0) is None
    monkeypatch.undo()
    assert store.begin_publication(study, "node-a", stable_after=0) is None  # one pending now


def test_lagging_index_means_not_yet(
    store: DynamoDBStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A global secondary index is eventually consistent: while ``by_study`` shows fewer rows
    than the study's ``admits``, the study is not complete."""
    study = generate_uid()
    for _ in range(2):
        store.admit(_record(study))
    for claim in store.claim_work("node-a", limit=2):
        store.record_uploaded(claim.lease, "k")
    keys = store._study_keys
    monkeypatch.setattr(store, "_study_keys", lambda uid: keys(uid)[:1])
    assert store.begin_publication(study, "node-a", stable_after=0) is None
    monkeypatch.undo()
    assert store.begin_publication(study, "node-a", stable_after=0) is not None


def test_racing_admissions_one_version_each(dynamodb_env: MotoDynamoDB) -> None:
    """Two nodes (two clients) admitting one SOP Instance UID with different bytes: the HEAD
    CAS lets one win each version; the loser gets CONFLICT and proposes the next."""
    table = f"dg-{uuid.uuid4().hex[:12]}"
    open_dynamodb(table).close()
    uid, study = generate_uid(), generate_uid()
    admitted: list[int] = []
    lock = threading.Lock()

    def node(n: int) -> None:
        with open_dynamodb(table, create=False) as s:
            for i in range(5):
                version = 1
                while True:
                    rec = _record(study, uid=uid, version=version, sha256=f"{n:02d}{i:02d}" * 16)
                    got = s.admit(rec)
                    if got.outcome == AdmitOutcome.ADMITTED:
                        with lock:
                            admitted.append(version)
                        break
                    version = got.record.version + 1

    threads = [threading.Thread(target=node, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(admitted) == list(range(1, 16))
    with open_dynamodb(table, create=False) as s:
        assert [r.version for r in s.versions(uid)] == list(range(1, 16))
        older = [r for r in s.versions(uid) if r.version < 15]
        assert all(r.state == InstanceState.RECEIVED for r in older)  # in flight: not touched
        assert s.key_fingerprint("a" * 16) == "a" * 16
        assert s.key_fingerprint("b" * 16) == "a" * 16  # the first node's key stays


class _BusyOnce(_TransactionSpy):
    """The first transaction meets another node's transaction on the same item (DynamoDB
    cancels it with ``TransactionConflict``; moto never does)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.conflicts = 1

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.conflicts:
            self.conflicts -= 1
            reasons = [{"Code": "TransactionConflict"}] + [{"Code": "None"}] * (
                len(kwargs["TransactItems"]) - 1
            )
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "busy"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return super().transact_write_items(**kwargs)


def test_a_busy_study_item_does_not_lose_a_hold(store: DynamoDBStateStore) -> None:
    """Holds and admissions write the same study item; a hold cancelled by a concurrent
    transaction is written again, not dropped (the study would publish mid-association)."""
    study = generate_uid()
    store.admit(_record(study))
    store.heartbeat("node-a")
    busy = _BusyOnce(store._client)
    store._client = busy
    store.hold_study(study, "node-a", "assoc-1")
    assert busy.conflicts == 0 and store.held_studies() == {study}
    busy.conflicts = 1
    store.admit(_record(study))  # an admission retried the same way
    assert len(store.instances(study_instance_uid=study)) == 2
    busy.conflicts = 1
    store.release_holds("node-a", "assoc-1")
    assert store.held_studies() == set()


# -- the server helper -----------------------------------------------------------------------------
def test_moto_server_serializes_conditional_writes(moto_dynamodb: MotoDynamoDB) -> None:
    """The helper's server handles one request at a time: of racing conditional writes on one
    item, exactly one wins (a threaded moto server lets several win)."""
    client = moto_dynamodb.client(max_pool_connections=16)
    table = f"race-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def racer(n: int, rounds: int) -> None:
        for r in range(rounds):
            barrier.wait()
            try:
                client.update_item(
                    TableName=table,
                    Key={"pk": {"S": f"r{r}"}},
                    UpdateExpression="SET winner = :n",
                    ConditionExpression="attribute_not_exists(winner)",
                    ExpressionAttributeValues={":n": {"N": str(n)}},
                )
                wins.append(r)
            except client.exceptions.ConditionalCheckFailedException:
                pass

    threads = [threading.Thread(target=racer, args=(n, 10)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client.close()
    assert sorted(wins) == list(range(10))


def test_moto_server_process_is_stopped() -> None:
    with run_moto_dynamodb() as server:
        process = server._process
        assert process is not None and process.poll() is None
        assert server.endpoint_url.startswith("http://127.0.0.1:")
    assert process.poll() is not None  # reaped
