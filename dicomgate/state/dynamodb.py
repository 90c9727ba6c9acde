"""The DynamoDB state store: one table shared by every node, conditional writes for every race.

Selected by ``DICOMGATE_STATE=dynamodb://TABLE``. Region and credentials come from boto3's own
chain, the endpoint from boto3's ``AWS_ENDPOINT_URL_DYNAMODB`` (so tests point it at a local
server); this module reads no setting of its own.

**One table** (``pk``/``sk``, on demand), items small (about 1 KB):

==========================  =====================  ============================================
item                        pk / sk                what it holds
==========================  =====================  ============================================
instance version            ``I#uid`` / ``V#ver``  the :class:`InstanceRecord` fields (UID,
                                                   version and study once, as keys), the lease
                                                   (token, owner, expiry) and a revision ``rev``
newest version (per UID)    ``I#uid`` / ``HEAD``   ``latest``: version allocation by CAS
study                       ``S#uid`` / ``S``      times, manifest/notified versions, the
                                                   publication lease, ``admits`` and the holds
node heartbeat              ``N#id`` / ``N``       expiry, open associations, info, ``ttl``
hold (node, association)    ``H#node`` / ``assoc`` the study an open association carries
key fingerprint             ``K`` / ``K``          written once (``attribute_not_exists``)
expectation (issue 10)      ``E#study`` /          source, time, chunk nonce; the study item
                            ``X#source``           gets ``expects`` (only such studies read
                                                   them); written last: the commit point
expected UIDs, 100 a chunk  ``E#study`` /          ``uids`` (string set), written first
                            ``Y#source#nonce#k``
storage commitment          ``C#txn`` / ``C``      state, attempts, next attempt (``queue``
                                                   index while pending), lease, ref nonce
its references, 100 a chunk ``C#txn`` / ``R#n#k``  ``refs`` (one string, class/instance lines)
MPPS                        ``P#uid`` / ``P``      status, calling AE, studies, reason (``kind``)
==========================  =====================  ============================================

Lists come from sparse global secondary indexes (an item is in one only while it carries the
index's key attribute), never from a Scan on a hot path: ``by_study`` (a study's instances, a
narrow projection), ``queue`` (work to claim in admission order, purgeable rows, studies with
unreported rows, nodes, holds), ``flag`` (studies not yet announced), ``owner`` (leases by node),
``spool`` (spooled rows by node), ``deid`` (a study by its pseudonym), ``kind`` (all studies).

**Atomicity.** Each race of the protocol is one conditional write: admission is one
``TransactWriteItems`` (``HEAD`` CAS on ``latest`` + the new version ``attribute_not_exists`` +
the study's ``admits``/``last_received_at`` + stale versions superseded); a claim is one
``UpdateItem`` whose condition tests the lease expiry *in the expression* (DynamoDB deletes TTL'd
items only eventually, and moto never: expiry is never left to TTL); every other instance
transition reads the item and writes it back conditioned on its ``rev`` (so the lease token it
checked and the derived index keys it computed are still true), in a transaction with a
``ConditionCheck`` on ``HEAD`` when "a newer version exists" decides the outcome. Publication is
a compare-and-set on the study item: ``admits`` (no instance arrived since the rows were read),
``manifest_version``, ``holds_seq`` and the publication lease. A row read as pending that
finishes before the CAS only delays completion; a finished row does not become pending again
(the pipeline requeues only rows it is still carrying), so a CAS that succeeds saw the study
as it is. No call writes more than 100 items (:data:`MAX_BATCH` keys + the study check).

Global secondary indexes are eventually consistent: wherever a decision depends on a list, the
list supplies keys only and the items are re-read with strongly consistent ``BatchGetItem``,
and a study's row count is checked against its ``admits`` (a lagging index means "not yet").
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dicomgate.state._protocol import (
    DEFAULT_HEARTBEAT_TTL,
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    PROCESSED_FIELDS,
    WORK_STATES,
    Admission,
    AdmitOutcome,
    Claim,
    Commitment,
    CommitmentLease,
    CommitmentRef,
    CommitmentState,
    Expectation,
    InstanceKey,
    InstanceRecord,
    InstanceState,
    Lease,
    LeaseLost,
    MppsRecord,
    MppsUpdate,
    NodeRecord,
    Publication,
    StateError,
    StateStore,
    StudyProgress,
    StudyRecord,
    completion_rule,
    describe_expectations,
    missing_instances,
    study_state,
    with_expectations,
)

__all__ = ["DynamoDBStateStore", "TableMissingError", "open_dynamodb"]

#: the TTL attribute (epoch seconds): node heartbeats, deleted a day after they expired
TTL_ATTRIBUTE = "ttl"
#: how long a dead node's heartbeat stays visible to ``dicomgate status`` before TTL removes it
_NODE_RETENTION = 86400.0
#: HTTP connections the store's client keeps (botocore's default is 10)
_POOL = 50
#: attempts of an optimistic read-modify-write before giving up (contention, not failure)
_ATTEMPTS = 50

# (index name, hash attribute, range attribute or None, projection)
_INDEXES: tuple[tuple[str, str, str | None, dict[str, Any]], ...] = (
    (
        "by_study",
        "g_study",
        "g_order",
        {
            "ProjectionType": "INCLUDE",
            "NonKeyAttributes": [
                "state",
                "size",
                "reported_version",
                "stage",
                "reason",
                "deid_sop_uid",
            ],
        },
    ),
    ("queue", "g_queue", "g_qsort", {"ProjectionType": "ALL"}),
    ("flag", "g_flag", "g_fsort", {"ProjectionType": "ALL"}),
    (
        "owner",
        "g_owner",
        "g_osort",
        {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["lease_token", "pub_token"]},
    ),
    ("spool", "g_node", "g_order", {"ProjectionType": "KEYS_ONLY"}),
    ("deid", "g_deid", None, {"ProjectionType": "KEYS_ONLY"}),
    ("kind", "g_kind", "g_ksort", {"ProjectionType": "KEYS_ONLY"}),
)
_FINISHED = frozenset({InstanceState.UPLOADED, InstanceState.QUARANTINED})
_PURGEABLE = frozenset({InstanceState.DELIVERED, InstanceState.SUPERSEDED})
_RECORD_FIELDS = tuple(f.name for f in fields(InstanceRecord))
_FLOAT_FIELDS = frozenset({"received_at", "lease_expires_at"})
_INT_FIELDS = frozenset(
    {
        "version",
        "size",
        "attempts",
        "deid_size",
        "series_number",
        "instance_number",
        "reported_version",
    }
)
_KEYED = frozenset({"sop_instance_uid", "version", "study_instance_uid"})
_CLEAR_LEASE = ("lease_token", "lease_owner", "lease_expires_at", "g_owner", "g_osort")
_CLEAR_PUB = ("pub_token", "pub_owner", "pub_expires_at", "pub_version", "g_owner", "g_osort")
_HOLD_SEP = "\x1f"  # between node id and association id: in neither
#: UIDs (or references) per chunk item: ~7-13 KB, far below DynamoDB's 400 KB
_CHUNK = 100


class TableMissingError(StateError):
    """The table does not exist and this store may not create it."""


# -- attribute values -----------------------------------------------------------------------------
def _av(value: object) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (floats keep their full repr)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (set, frozenset)):
        return {"SS": sorted(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): _av(v) for k, v in value.items()}}
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def _py(av: Mapping[str, Any]) -> Any:
    (kind, value), *_ = av.items()
    if kind == "S":
        return value
    if kind == "N":
        return float(value) if any(c in value for c in ".eE") else int(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "SS":
        return set(value)
    if kind == "M":
        return {k: _py(v) for k, v in value.items()}
    if kind == "NULL":
        return None
    raise TypeError(f"unexpected DynamoDB type {kind}")


Item = dict[str, Any]  # a raw DynamoDB item ({name: {type: value}})


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _py(v) for k, v in item.items()}


def _values(**values: object) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword arguments (``:name``)."""
    return {f":{k}": _av(v) for k, v in values.items()}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reasons(exc: ClientError) -> list[str]:
    """The per-item codes of a cancelled transaction ("None" for items that were fine)."""
    return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])]


def _pause() -> None:
    """A short random pause before retrying a write that met another's (0-20 ms)."""
    time.sleep(0.002 * secrets.randbelow(11))


def _ts(t: float) -> str:
    """A sortable string for a time (sort keys of the indexes)."""
    return f"{t:020.6f}"


# -- keys -----------------------------------------------------------------------------------------
def _ikey(key: InstanceKey) -> Item:
    return {"pk": {"S": "I#" + key.sop_instance_uid}, "sk": {"S": f"V#{key.version:010d}"}}


def _head_key(sop_instance_uid: str) -> Item:
    return {"pk": {"S": "I#" + sop_instance_uid}, "sk": {"S": "HEAD"}}


def _skey(study_instance_uid: str) -> Item:
    return {"pk": {"S": "S#" + study_instance_uid}, "sk": {"S": "S"}}


def _nkey(node_id: str) -> Item:
    return {"pk": {"S": "N#" + node_id}, "sk": {"S": "N"}}


def _lost(key: InstanceKey | str) -> LeaseLost:
    # no UID in the message: it could reach a log line
    what = f"version {key.version}" if isinstance(key, InstanceKey) else "a publication"
    return LeaseLost(f"lease on {what} was taken over")


# -- instance items -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Row:
    """An instance item as read: the record plus what only the store sees."""

    rec: InstanceRecord
    token: str | None
    rev: int
    order: str
    updated_at: float


def _key_of(item: Mapping[str, Any]) -> InstanceKey:
    """An instance item's key, from its table key (projected into every index)."""
    return InstanceKey(str(item["pk"]["S"])[2:], int(str(item["sk"]["S"])[2:]))


def _row(item: Mapping[str, Any]) -> _Row:
    plain = _plain(item)
    key = _key_of(item)
    values: dict[str, Any] = {
        "sop_instance_uid": key.sop_instance_uid,
        "version": key.version,
        "study_instance_uid": str(plain["g_study"])[2:],
        "spool_path": None,  # the one field without a default that may be None (not stored)
    }
    for name in _RECORD_FIELDS:
        if name in plain and plain[name] is not None:
            value = plain[name]
            if name in _FLOAT_FIELDS:
                value = float(value)
            elif name in _INT_FIELDS:
                value = int(value)
            values[name] = value
    values["state"] = InstanceState(values["state"])
    return _Row(
        rec=InstanceRecord(**values),
        token=plain.get("lease_token"),
        rev=int(plain.get("rev", 0)),
        order=str(plain.get("g_order", "")),
        updated_at=float(plain.get("updated_at", 0.0)),
    )


def _instance_item(
    rec: InstanceRecord, *, token: str | None, rev: int, order: str, updated_at: float
) -> Item:
    """The whole item of one instance version, with the index keys its state implies (the
    UID and version are the table key's, the study the ``by_study`` key's: stored once)."""
    attrs: dict[str, object] = {
        name: getattr(rec, name)
        for name in _RECORD_FIELDS
        if getattr(rec, name) is not None and name not in _KEYED
    }
    attrs["state"] = str(rec.state)
    attrs.update(rev=rev, updated_at=updated_at, g_study="S#" + rec.study_instance_uid)
    attrs["g_order"] = order
    if rec.state in WORK_STATES:
        attrs.update(g_queue="work", g_qsort=order)
    elif rec.state in _PURGEABLE and rec.spool_path is not None:
        attrs.update(g_queue="purge", g_qsort=_ts(updated_at))
    if rec.spool_path is not None:
        attrs["g_node"] = "N#" + rec.node_id
    if token is not None and rec.lease_owner is not None:
        attrs.update(
            lease_token=token,
            g_owner="O#" + rec.lease_owner,
            g_osort="I",
        )
    item = {k: _av(v) for k, v in attrs.items()}
    item.update(_ikey(rec.key))
    return item


#: what a read-modify-write does to a row: (row, HEAD's latest) → (record, lease token) or None
_Change = Callable[[_Row, int], "tuple[InstanceRecord, str | None] | None"]


def _cleared(rec: InstanceRecord) -> InstanceRecord:
    return replace(rec, lease_owner=None, lease_expires_at=None)


# -- study items ----------------------------------------------------------------------------------
def _study_record(plain: Mapping[str, Any]) -> StudyRecord:
    return StudyRecord(
        study_instance_uid=str(plain["pk"])[2:],
        deid_study_uid=plain.get("deid_study_uid"),
        first_received_at=float(plain["first_received_at"]),
        last_received_at=float(plain["last_received_at"]),
        manifest_version=int(plain.get("manifest_version", 0)),
        notified_version=int(plain.get("notified_version", 0)),
        delivered_at=float(plain["delivered_at"]) if "delivered_at" in plain else None,
    )


def _is_study(plain: Mapping[str, Any] | None) -> bool:
    """A study item made by an admission (a hold alone makes a bare one)."""
    return plain is not None and "first_received_at" in plain


def _pub_live(plain: Mapping[str, Any], now: float) -> bool:
    return "pub_token" in plain and float(plain.get("pub_expires_at", 0.0)) > now


def _progress(study: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> StudyProgress:
    pending = unreported = 0
    for r in rows:
        state = InstanceState(r["state"])
        if state in WORK_STATES:
            pending += 1
        elif state in _FINISHED and r.get("reported_version") is None:
            unreported += 1
    rec = _study_record(study)
    return StudyProgress(
        study_instance_uid=rec.study_instance_uid,
        first_received_at=rec.first_received_at,
        last_received_at=rec.last_received_at,
        manifest_version=rec.manifest_version,
        deid_study_uid=rec.deid_study_uid,
        pending=pending,
        unreported=unreported,
    )


class DynamoDBStateStore:
    """DynamoDB-backed :class:`~dicomgate.state.StateStore`; thread-safe (one boto3 client,
    which is), and safe for any number of nodes sharing the table."""

    def __init__(self, table: str, *, client: Any = None) -> None:
        # Any: boto3's client is typed only by the boto3-stubs[dynamodb] extra, not installed
        self.table = table
        # one client for every thread (boto3 clients are thread-safe); a pool as wide as the
        # pipeline's concurrency, so claims and uploads' transitions do not queue for sockets
        self._client: Any = (
            client
            if client is not None
            else boto3.client("dynamodb", config=Config(max_pool_connections=_POOL))
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def table_exists(self) -> bool:
        try:
            self._client.describe_table(TableName=self.table)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True

    def create_table(self) -> bool:
        """Create the table (on demand, its indexes, TTL on ``ttl``) if it is missing; True if
        this call created it. Safe when several nodes start at once (one wins, all wait)."""
        created = False
        if not self.table_exists():
            attributes = {"pk", "sk"} | {
                a for _, h, r, _ in _INDEXES for a in (h, r) if a is not None
            }
            try:
                self._client.create_table(
                    TableName=self.table,
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[
                        {"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)
                    ],
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    GlobalSecondaryIndexes=[
                        {
                            "IndexName": name,
                            "KeySchema": [{"AttributeName": h, "KeyType": "HASH"}]
                            + ([{"AttributeName": r, "KeyType": "RANGE"}] if r else []),
                            "Projection": projection,
                        }
                        for name, h, r, projection in _INDEXES
                    ],
                )
                created = True
            except ClientError as exc:
                if _code(exc) != "ResourceInUseException":  # another node is creating it
                    raise
        self._client.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        ttl = self._client.describe_time_to_live(TableName=self.table)
        if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in (
            "ENABLED",
            "ENABLING",
        ):
            try:
                self._client.update_time_to_live(
                    TableName=self.table,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
                )
            except ClientError as exc:  # another node enabled it first
                if "already enabled" not in str(exc):
                    raise
        return created

    def check_table(self) -> None:
        """The table exists and has this schema's indexes (else :class:`StateError`)."""
        try:
            desc = self._client.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise TableMissingError(
                    f"DynamoDB table {self.table!r} does not exist and may not be created here "
                    "(DICOMGATE_STATE_CREATE=false: run `dicomgate state init` first)"
                ) from None
            raise
        present = {i["IndexName"] for i in desc.get("GlobalSecondaryIndexes", [])}
        missing = sorted({name for name, *_ in _INDEXES} - present)
        if missing:
            raise StateError(
                f"DynamoDB table {self.table!r} lacks the indexes {missing}: "
                "not a dicomgate state table of this version"
            )

    # -- low-level helpers ------------------------------------------------------------------------
    def _get(self, key: Item) -> Item | None:
        out = self._client.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item: Item | None = out.get("Item")
        return item

    def _query(self, **kwargs: Any) -> Iterator[Item]:
        kwargs["TableName"] = self.table
        while True:
            out = self._client.query(**kwargs)
            yield from out.get("Items", [])
            if "LastEvaluatedKey" not in out:
                return
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def _scan(self, **kwargs: Any) -> Iterator[Item]:
        kwargs["TableName"] = self.table
        while True:
            out = self._client.scan(**kwargs)
            yield from out.get("Items", [])
            if "LastEvaluatedKey" not in out:
                return
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def _index(self, index: str, hash_attr: str, value: str, **kwargs: Any) -> Iterator[Item]:
        cond = "#h = :h"
        names = {"#h": hash_attr, **kwargs.pop("ExpressionAttributeNames", {})}
        values = {":h": {"S": value}, **kwargs.pop("ExpressionAttributeValues", {})}
        if "range" in kwargs:
            cond += " AND " + kwargs.pop("range")
        return self._query(
            IndexName=index,
            KeyConditionExpression=cond,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            **kwargs,
        )

    def _batch_get(self, keys: Iterable[Item]) -> list[Item]:
        """Strongly consistent reads of many items (100 per request), in no particular order."""
        unique = {(k["pk"]["S"], k["sk"]["S"]): k for k in keys}
        pending = list(unique.values())
        found: list[Item] = []
        delay = 0.01
        while pending:
            chunk, pending = pending[:100], pending[100:]
            out = self._client.batch_get_item(
                RequestItems={self.table: {"Keys": chunk, "ConsistentRead": True}}
            )
            found.extend(out.get("Responses", {}).get(self.table, []))
            left = out.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if left:  # throttled: back off, then read the rest
                pending.extend(left)
                time.sleep(delay)
                delay = min(1.0, delay * 2)
        return found

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """One TransactWriteItems; None on success, else the cancellation reason per item."""
        if len(items) > 100:
            raise StateError("a transaction of more than 100 items")  # a bug of this module
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if _code(exc) == "TransactionCanceledException":
                return _reasons(exc) or ["Unknown"]
            raise
        return None

    def _update(
        self, key: Item, expr: str, *, cond: str | None = None, **kwargs: Any
    ) -> Item | None:
        """One conditional UpdateItem; the new item (ALL_NEW), or None if the condition failed."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": expr,
            "ReturnValues": "ALL_NEW",
            **kwargs,
        }
        if cond is not None:
            args["ConditionExpression"] = cond
        for attempt in range(_ATTEMPTS):
            try:
                out = self._client.update_item(**args)
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return None
                if _code(exc) != "TransactionConflictException" or attempt == _ATTEMPTS - 1:
                    raise
                _pause()  # the item is in another node's transaction right now: try again
                continue
            item: Item = out.get("Attributes", {})
            return item
        raise AssertionError("unreachable")

    def _write(self, items: list[dict[str, Any]]) -> bool:
        """Items of a transaction, written; one conditional Put alone goes as a PutItem (half
        the cost of a transaction). False if a condition failed or a transaction was in the
        way (the caller reads again and decides again)."""
        if len(items) > 1:
            return self._transact(items) is None
        put = items[0]["Put"]
        try:
            self._client.put_item(**put)
        except ClientError as exc:
            if _code(exc) in ("ConditionalCheckFailedException", "TransactionConflictException"):
                return False
            raise
        return True

    def _transact_retrying(self, items: list[dict[str, Any]]) -> list[str] | None:
        """:meth:`_transact`, again while it is cancelled only by other transactions on the
        same items (``TransactionConflict``: a busy study item); other reasons are returned."""
        for _ in range(_ATTEMPTS):
            reasons = self._transact(items)
            if reasons is None or "ConditionalCheckFailed" in reasons:
                return reasons
            _pause()
        raise StateError("a transaction kept conflicting")

    def _put_row(self, row: _Row, rec: InstanceRecord, token: str | None, now: float) -> Item:
        """The transaction item writing ``rec`` over ``row``, if nobody changed it since."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": _instance_item(
                    rec, token=token, rev=row.rev + 1, order=row.order, updated_at=now
                ),
                "ConditionExpression": "rev = :rev",
                "ExpressionAttributeValues": _values(rev=row.rev),
            }
        }

    def _versions(self, sop_instance_uid: str) -> tuple[int, list[_Row]]:
        """``HEAD``'s latest version (0: none) and every version's row, oldest first."""
        latest = 0
        rows: list[_Row] = []
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=_values(pk="I#" + sop_instance_uid),
            ConsistentRead=True,
        ):
            if item["sk"]["S"] == "HEAD":
                latest = int(item["latest"]["N"])
            else:
                rows.append(_row(item))
        return latest, rows

    def _head_and_row(self, key: InstanceKey) -> tuple[int, _Row | None]:
        """``HEAD``'s latest version (0: none) and the row of ``key`` (None: none), each read
        consistently, in one request (not a query of every version)."""
        latest, row = 0, None
        for item in self._batch_get([_head_key(key.sop_instance_uid), _ikey(key)]):
            if item["sk"]["S"] == "HEAD":
                latest = int(item["latest"]["N"])
            else:
                row = _row(item)
        return latest, row

    def _head_check(self, sop_instance_uid: str, latest: int) -> dict[str, Any]:
        """A transaction item: ``HEAD`` still says ``latest`` (no newer version arrived)."""
        check: dict[str, Any] = {"TableName": self.table, "Key": _head_key(sop_instance_uid)}
        if latest:
            check.update(
                ConditionExpression="latest = :l", ExpressionAttributeValues=_values(l=latest)
            )
        else:
            check["ConditionExpression"] = "attribute_not_exists(latest)"
        return {"ConditionCheck": check}

    # -- admission ------------------------------------------------------------------------------
    def latest_version(self, sop_instance_uid: str) -> InstanceRecord | None:
        items = self._client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
            ExpressionAttributeValues=_values(pk="I#" + sop_instance_uid, v="V#"),
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
        ).get("Items", [])
        return _row(items[0]).rec if items else None

    def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        return [r.rec for r in self._versions(sop_instance_uid)[1]]

    def _stale(self, rows: Iterable[_Row], newest: int, now: float) -> list[dict[str, Any]]:
        """Writes that end older finished, never reported versions ``superseded``."""
        return [
            self._put_row(
                r,
                _cleared(replace(r.rec, state=InstanceState.SUPERSEDED, reported_version=0)),
                None,
                now,
            )
            for r in rows
            if r.rec.version < newest
            and r.rec.state in _FINISHED
            and r.rec.reported_version is None
        ]

    def _study_touch(self, study_instance_uid: str, at: float, advance: bool) -> dict[str, Any]:
        """The study's part of an admission: created if new, ``admits`` + 1, listed as having
        unreported rows, ``last_received_at`` advanced to ``at`` (never lowered: the condition
        makes a concurrent later admission cancel this one, which then retries without)."""
        sets = [
            "first_received_at = if_not_exists(first_received_at, :at)",
            "manifest_version = if_not_exists(manifest_version, :zero)",
            "notified_version = if_not_exists(notified_version, :zero)",
            "holds_seq = if_not_exists(holds_seq, :zero)",
            "g_queue = :open, g_qsort = :uid, g_kind = :kind, g_ksort = :uid",
        ]
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": _skey(study_instance_uid),
            "ExpressionAttributeValues": _values(
                at=at, zero=0, one=1, open="open", uid=study_instance_uid, kind="study"
            ),
        }
        if advance:
            sets.append("last_received_at = :at")
            update["ConditionExpression"] = (
                "attribute_not_exists(last_received_at) OR last_received_at <= :at"
            )
        else:
            sets.append("last_received_at = if_not_exists(last_received_at, :at)")
        update["UpdateExpression"] = "SET " + ", ".join(sets) + " ADD admits :one"
        return {"Update": update}

    def _insert(
        self, rec: InstanceRecord, *, admission: bool
    ) -> tuple[AdmitOutcome, InstanceRecord] | None:
        """Store ``rec`` in one transaction, deciding on one consistent read of the UID's
        items. ``admission``: :meth:`admit`'s rules (duplicate, then the ``HEAD`` CAS from
        ``rec.version - 1``); else a recovered row, stored if its key is free (None if not)."""
        advance = True
        for _ in range(_ATTEMPTS):
            now = time.time()
            latest, rows = self._versions(rec.sop_instance_uid)
            if admission:
                newest = rows[-1].rec if rows else None
                if (
                    newest is not None
                    and rec.sha256 is not None
                    and newest.size == rec.size
                    and newest.sha256 == rec.sha256
                ):
                    return AdmitOutcome.DUPLICATE, newest
                if latest != rec.version - 1:
                    if newest is None:
                        raise ValueError(f"version {rec.version} proposed for a new instance")
                    return AdmitOutcome.CONFLICT, newest
            elif any(r.rec.version == rec.version for r in rows):
                return None
            received_at = rec.received_at or now
            stored = replace(rec, received_at=received_at, lease_owner=None, lease_expires_at=None)
            order = _ts(now)
            items: list[dict[str, Any]] = []
            if rec.version > latest:
                update: dict[str, Any] = {
                    "TableName": self.table,
                    "Key": _head_key(rec.sop_instance_uid),
                    "UpdateExpression": "SET latest = :v",
                    "ExpressionAttributeValues": _values(v=rec.version),
                }
                if latest:
                    update["ConditionExpression"] = "latest = :l"
                    update["ExpressionAttributeValues"].update(_values(l=latest))
                else:
                    update["ConditionExpression"] = "attribute_not_exists(latest)"
                items.append({"Update": update})
            else:
                items.append(self._head_check(rec.sop_instance_uid, latest))
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": _instance_item(
                            stored, token=None, rev=0, order=order, updated_at=now
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            items.append(self._study_touch(rec.study_instance_uid, received_at, advance))
            items.extend(self._stale(rows, max(latest, rec.version), now)[: 100 - len(items)])
            reasons = self._transact(items)
            if reasons is None:
                return AdmitOutcome.ADMITTED, stored
            if len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                advance = False  # a later arrival advanced the study: leave its time
            # else another admission got in between: decide again on what is there now
            _pause()
        raise StateError("admission kept conflicting")

    def admit(self, rec: InstanceRecord) -> Admission:
        result = self._insert(rec, admission=True)
        assert result is not None
        return Admission(*result)

    def admit_recovered(self, rec: InstanceRecord) -> bool:
        return self._insert(rec, admission=False) is not None

    def _mutate(
        self,
        key: InstanceKey,
        change: _Change,
        *,
        lease: Lease | None = None,
        head: bool = False,
    ) -> _Row | None:
        """Read-modify-write of one instance item, conditioned on its revision.

        ``change(row, latest)`` returns ``(record, token)`` to write, or None to write nothing;
        ``latest`` is ``HEAD``'s version when ``head`` (then the write also checks ``HEAD`` is
        unchanged), else 0. With ``lease``, a row no longer carrying its token raises
        :class:`LeaseLost`. Returns the row as written (or as read, if nothing was written);
        None if the key has no row."""
        for _ in range(_ATTEMPTS):
            if head:
                latest, row = self._head_and_row(key)
            else:
                latest = 0
                item = self._get(_ikey(key))
                row = _row(item) if item is not None else None
            if row is None:
                if lease is not None:
                    raise _lost(key)
                return None
            if lease is not None and row.token != lease.token:
                raise _lost(key)
            result = change(row, latest)
            if result is None:
                return row
            rec, token = result
            now = time.time()
            items = [self._put_row(row, rec, token, now)]
            if head:
                items.append(self._head_check(key.sop_instance_uid, latest))
            if self._write(items):
                return _Row(rec, token, row.rev + 1, row.order, now)
            _pause()
        raise StateError("instance update kept conflicting")

    def set_sha256(self, key: InstanceKey, sha256: str) -> None:
        def change(row: _Row, _: int) -> tuple[InstanceRecord, str | None] | None:
            if row.rec.sha256 is not None:
                return None
            return replace(row.rec, sha256=sha256), row.token

        self._mutate(key, change)

    def set_spool_path(self, key: InstanceKey, relative: str | None) -> None:
        self._mutate(key, lambda row, _: (replace(row.rec, spool_path=relative), row.token))

    # -- claims ---------------------------------------------------------------------------------
    def _claim(
        self, key: InstanceKey, owner: str, seconds: float, *, work_only: bool
    ) -> tuple[Lease, Item] | None:
        """One UpdateItem: take the lease if the item has none or an expired one (tested in the
        condition, never left to TTL) — and, for work, is still in a work state."""
        now = time.time()
        lease = Lease(key, owner, secrets.token_hex(16), now + seconds)
        cond = (
            "attribute_exists(pk) "
            "AND (attribute_not_exists(lease_token) OR lease_expires_at <= :now)"
        )
        values = _values(
            now=now,
            tok=lease.token,
            owner=owner,
            exp=lease.expires_at,
            gowner="O#" + owner,
            gsort="I",
            one=1,
        )
        names: dict[str, str] = {}
        if work_only:
            cond += " AND #state IN (:received, :processed)"
            values.update(_values(received="received", processed="processed"))
            names["#state"] = "state"
        item = self._update(
            _ikey(key),
            "SET lease_token = :tok, lease_owner = :owner, lease_expires_at = :exp, "
            "g_owner = :gowner, g_osort = :gsort ADD rev :one",
            cond=cond,
            ExpressionAttributeValues=values,
            **({"ExpressionAttributeNames": names} if names else {}),
        )
        return (lease, item) if item is not None else None

    def claim_work(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        exclude: Collection[InstanceKey] = (),
    ) -> list[Claim]:
        limit = min(limit, MAX_BATCH)
        skip = set(exclude)
        claims: list[Claim] = []
        if limit <= 0:
            return claims
        now = time.time()
        for item in self._index(
            "queue",
            "g_queue",
            "work",
            FilterExpression="attribute_not_exists(lease_token) OR lease_expires_at <= :now",
            ExpressionAttributeValues=_values(now=now),
        ):
            key = _key_of(item)
            if key in skip:
                continue
            got = self._claim(key, owner, lease_seconds, work_only=True)
            if got is not None:
                lease, new = got
                claims.append(Claim(_row(new).rec, lease))
                if len(claims) == limit:
                    break
        return claims

    def claim_instance(
        self, key: InstanceKey, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Lease | None:
        got = self._claim(key, owner, lease_seconds, work_only=False)
        return got[0] if got is not None else None

    def renew(self, lease: Lease, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
        expires = time.time() + lease_seconds
        item = self._update(
            _ikey(lease.key),
            "SET lease_expires_at = :exp ADD rev :one",
            cond="lease_token = :tok",
            ExpressionAttributeValues=_values(exp=expires, tok=lease.token, one=1),
        )
        if item is None:
            raise _lost(lease.key)
        return replace(lease, expires_at=expires)

    def release(self, lease: Lease) -> None:
        self._update(
            _ikey(lease.key),
            "REMOVE " + ", ".join(_CLEAR_LEASE) + " ADD rev :one",
            cond="lease_token = :tok",
            ExpressionAttributeValues=_values(tok=lease.token, one=1),
        )

    # -- transitions ----------------------------------------------------------------------------
    def record_processed(self, lease: Lease, **fields: Any) -> None:
        unknown = set(fields) - PROCESSED_FIELDS
        if unknown:
            raise ValueError(f"not pipeline fields: {sorted(unknown)}")
        row = self._mutate(
            lease.key,
            lambda row, _: (
                replace(row.rec, state=InstanceState.PROCESSED, reason=None, **fields),
                row.token,
            ),
            lease=lease,
        )
        if row is not None and fields.get("deid_study_uid"):
            self.set_study_pseudonym(row.rec.study_instance_uid, fields["deid_study_uid"])

    def _finish(self, lease: Lease, **changes: Any) -> InstanceState:
        """Move the leased row to a terminal state and release the lease — ``superseded``
        instead if a newer version exists (checked against ``HEAD`` in the same write)."""

        def change(row: _Row, latest: int) -> tuple[InstanceRecord, str | None]:
            rec = _cleared(replace(row.rec, **changes))
            if latest > row.rec.version:
                rec = replace(rec, state=InstanceState.SUPERSEDED, reported_version=0)
            return rec, None

        row = self._mutate(lease.key, change, lease=lease, head=True)
        assert row is not None
        return row.rec.state

    def record_uploaded(self, lease: Lease, object_key: str) -> InstanceState:
        return self._finish(
            lease, state=InstanceState.UPLOADED, object_key=object_key, stage=None, reason=None
        )

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
        changes: dict[str, Any] = {
            "state": InstanceState.QUARANTINED,
            "stage": stage,
            "reason": reason,
            "deid_sop_uid": deid_sop_uid,
            "deid_series_uid": deid_series_uid,
        }
        if sha256 is not None:
            changes["sha256"] = sha256
        return self._finish(lease, **changes)

    def record_retry(self, lease: Lease, *, stage: str, reason: str) -> None:
        self._mutate(
            lease.key,
            lambda row, _: (
                replace(row.rec, attempts=row.rec.attempts + 1, stage=stage, reason=reason),
                row.token,
            ),
            lease=lease,
        )

    def requeue(self, lease: Lease, *, reason: str) -> None:
        self._mutate(
            lease.key,
            lambda row, _: (
                _cleared(
                    replace(row.rec, state=InstanceState.RECEIVED, stage="upload", reason=reason)
                ),
                None,
            ),
            lease=lease,
        )

    def supersede_if_stale(self, lease: Lease) -> bool:
        def change(row: _Row, latest: int) -> tuple[InstanceRecord, str | None] | None:
            if latest <= row.rec.version:
                return None
            return _cleared(
                replace(row.rec, state=InstanceState.SUPERSEDED, reported_version=0)
            ), None

        row = self._mutate(lease.key, change, lease=lease, head=True)
        return row is not None and row.rec.state == InstanceState.SUPERSEDED and row.token is None

    # -- reading --------------------------------------------------------------------------------
    def get(self, key: InstanceKey) -> InstanceRecord | None:
        item = self._get(_ikey(key))
        return _row(item).rec if item is not None else None

    def _rows(self, keys: Iterable[Item]) -> list[_Row]:
        """Instance rows by key, re-read consistently, in admission order."""
        rows = [_row(i) for i in self._batch_get(keys)]
        rows.sort(key=lambda r: (r.order, r.rec.sop_instance_uid, r.rec.version))
        return rows

    def _study_keys(self, study_instance_uid: str) -> list[Item]:
        """The study's instance items from ``by_study`` (index copies: eventually consistent)."""
        return list(self._index("by_study", "g_study", "S#" + study_instance_uid))

    def instances(
        self, *, study_instance_uid: str | None = None, state: InstanceState | None = None
    ) -> list[InstanceRecord]:
        if study_instance_uid is not None:
            keys = self._study_keys(study_instance_uid)
        elif state in WORK_STATES:
            keys = list(self._index("queue", "g_queue", "work"))
        else:  # every row: a report or a test, not a hot path
            keys = list(
                self._scan(
                    FilterExpression="begins_with(sk, :v)",
                    ExpressionAttributeValues=_values(v="V#"),
                    ProjectionExpression="pk, sk",
                )
            )
        rows = self._rows({"pk": k["pk"], "sk": k["sk"]} for k in keys)
        return [
            r.rec
            for r in rows
            if (state is None or r.rec.state == state)
            and (study_instance_uid is None or r.rec.study_instance_uid == study_instance_uid)
        ]

    def spooled_paths(self, node_ids: Collection[str] | None = None) -> dict[str, InstanceRecord]:
        if node_ids is None:
            keys = list(self._scan(IndexName="spool"))
        else:
            keys = [k for n in set(node_ids) for k in self._index("spool", "g_node", "N#" + n)]
        rows = self._rows({"pk": k["pk"], "sk": k["sk"]} for k in keys)
        return {
            r.rec.spool_path: r.rec
            for r in rows
            if r.rec.spool_path is not None and (node_ids is None or r.rec.node_id in node_ids)
        }

    def oldest_undelivered(self) -> float | None:
        # the work queue is sorted by admission: its first item is the oldest still working
        first = self._client.query(
            TableName=self.table,
            IndexName="queue",
            KeyConditionExpression="g_queue = :w",
            ExpressionAttributeValues=_values(w="work"),
            ScanIndexForward=True,
            Limit=1,
        ).get("Items", [])
        times = [float(_plain(i)["g_qsort"]) for i in first]
        # uploaded rows wait for their study's manifest: only open studies can hold them
        for study in self._index("queue", "g_queue", "open"):
            times += [
                float(r["g_order"])
                for r in map(_plain, self._study_keys(str(_plain(study)["pk"])[2:]))
                if r.get("state") == InstanceState.UPLOADED and r.get("reported_version") is None
            ]
        return min(times, default=None)

    def backlog(self) -> int:
        total = 0
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "queue",
            "KeyConditionExpression": "g_queue = :w",
            "ExpressionAttributeValues": _values(w="work"),
            "Select": "COUNT",
        }
        while True:
            out = self._client.query(**kwargs)
            total += int(out.get("Count", 0))
            if "LastEvaluatedKey" not in out:
                return total
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def purgeable(self, *, delivered_before: float) -> list[InstanceRecord]:
        keys = self._index(
            "queue",
            "g_queue",
            "purge",
            range="g_qsort <= :t",
            ExpressionAttributeValues=_values(t=_ts(delivered_before)),
        )
        rows = self._rows({"pk": k["pk"], "sk": k["sk"]} for k in keys)
        return [
            r.rec
            for r in rows
            if r.rec.state in _PURGEABLE
            and r.rec.spool_path is not None
            and r.updated_at <= delivered_before
        ]

    # -- studies and publication ------------------------------------------------------------------
    def _study_item(self, study_instance_uid: str) -> dict[str, Any] | None:
        item = self._get(_skey(study_instance_uid))
        return _plain(item) if item is not None else None

    def studies_to_report(self) -> list[StudyProgress]:
        out: list[StudyProgress] = []
        for item in self._index("queue", "g_queue", "open"):
            study = _plain(item)
            uid = str(study["pk"])[2:]
            rows = [_plain(r) for r in self._study_keys(uid)]
            if any(r.get("reported_version") is None for r in rows):
                progress = _progress(study, rows)
                if study.get("expects"):
                    progress = with_expectations(
                        progress,
                        self.expectations(uid),
                        (
                            (str(r["pk"])[2:], InstanceState(r["state"]), r.get("reported_version"))
                            for r in rows
                        ),
                    )
                out.append(progress)
            elif len(rows) >= int(study.get("admits", 0)):
                # every row is in a manifest: off the list, unless an admission came since
                self._update(
                    _skey(uid),
                    "REMOVE g_queue, g_qsort",
                    cond="admits = :a",
                    ExpressionAttributeValues=_values(a=len(rows)),
                )
        return out

    def _consistent_rows(self, study: Mapping[str, Any]) -> list[_Row] | None:
        """Every row of a study, read consistently; None while ``by_study`` lags behind."""
        uid = str(study["pk"])[2:]
        rows = [
            r
            for r in self._rows(self._keys(self._study_keys(uid)))
            if r.rec.study_instance_uid == uid
        ]
        if len(rows) < int(study.get("admits", 0)):
            return None
        return rows

    @staticmethod
    def _keys(items: Iterable[Item]) -> list[Item]:
        return [{"pk": i["pk"], "sk": i["sk"]} for i in items]

    def manifest_rows(self, study_instance_uid: str) -> list[InstanceRecord]:
        rows = self._rows(self._keys(self._study_keys(study_instance_uid)))
        newest: dict[str, int] = {}
        heads = self._batch_get(_head_key(u) for u in {r.rec.sop_instance_uid for r in rows})
        for h in heads:
            newest[str(h["pk"]["S"])[2:]] = int(h["latest"]["N"])
        return [
            r.rec
            for r in rows
            if r.rec.study_instance_uid == study_instance_uid
            and r.rec.version == newest.get(r.rec.sop_instance_uid, r.rec.version)
        ]

    def _live_nodes(self, node_ids: Collection[str], now: float) -> set[str]:
        if not node_ids:
            return set()
        items = self._batch_get(_nkey(n) for n in node_ids)
        return {str(i["pk"]["S"])[2:] for i in items if float(i["expires_at"]["N"]) > now}

    def _take_publication(
        self,
        progress: StudyProgress,
        owner: str,
        version: int,
        seconds: float,
        cond: str,
        values: dict[str, Any],
        completion: str = "idle",
        missing: tuple[str, ...] = (),
    ) -> Publication | None:
        now = time.time()
        pub = Publication(
            study_instance_uid=progress.study_instance_uid,
            version=version,
            owner=owner,
            token=secrets.token_hex(16),
            expires_at=now + seconds,
            study=progress,
            completion=completion,
            missing=missing,
        )
        done = self._update(
            _skey(pub.study_instance_uid),
            "SET pub_token = :tok, pub_owner = :owner, pub_expires_at = :exp, "
            "pub_version = :pv, g_owner = :gowner, g_osort = :gsort",
            cond=cond + " AND (attribute_not_exists(pub_token) OR pub_expires_at <= :now)",
            ExpressionAttributeValues={
                **values,
                **_values(
                    tok=pub.token,
                    owner=owner,
                    exp=pub.expires_at,
                    pv=version,
                    gowner="O#" + owner,
                    gsort="P",
                    now=now,
                ),
            },
        )
        return pub if done is not None else None

    def begin_publication(
        self,
        study_instance_uid: str,
        owner: str,
        *,
        stable_after: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        expected_deadline: float | None = None,
    ) -> Publication | None:
        now = time.time()
        study = self._study_item(study_instance_uid)
        if not _is_study(study) or study is None:
            return None
        expecting = bool(study.get("expects"))
        if _pub_live(study, now) or (
            not expecting and now - float(study["last_received_at"]) < stable_after
        ):
            return None
        holders = {h.split(_HOLD_SEP, 1)[0] for h in study.get("holds", set())}
        if self._live_nodes(holders, now):
            return None
        rows = self._consistent_rows(study)
        if rows is None:
            return None
        progress = _progress(study, (_plain_row(r) for r in rows))
        if progress.pending or not progress.unreported:
            return None
        missing: tuple[str, ...] = ()
        if expecting:
            # An expectation recorded after this read only makes this decision one that was
            # true a moment earlier (what it names arrives, or not, as a later version).
            exps = self.expectations(study_instance_uid)
            progress = with_expectations(
                progress,
                exps,
                ((r.rec.sop_instance_uid, r.rec.state, r.rec.reported_version) for r in rows),
            )
            missing = tuple(missing_instances(exps, {r.rec.sop_instance_uid for r in rows}))
        completion = completion_rule(
            progress, now=now, stable_after=stable_after, expected_deadline=expected_deadline
        )
        if completion is None:
            return None
        # the rows read above are what the study was iff nothing arrived and no hold came since
        return self._take_publication(
            progress,
            owner,
            progress.manifest_version + 1,
            lease_seconds,
            "admits = :a AND manifest_version = :mv AND holds_seq = :hs",
            _values(
                a=int(study.get("admits", 0)),
                mv=progress.manifest_version,
                hs=int(study.get("holds_seq", 0)),
            ),
            completion,
            missing,
        )

    def _check_pub(self, pub: Publication) -> dict[str, Any]:
        study = self._study_item(pub.study_instance_uid)
        if study is None or study.get("pub_token") != pub.token:
            raise _lost(pub.study_instance_uid)
        return study

    def renew_publication(
        self, pub: Publication, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication:
        expires = time.time() + lease_seconds
        done = self._update(
            _skey(pub.study_instance_uid),
            "SET pub_expires_at = :exp",
            cond="pub_token = :tok",
            ExpressionAttributeValues=_values(exp=expires, tok=pub.token),
        )
        if done is None:
            raise _lost(pub.study_instance_uid)
        return replace(pub, expires_at=expires)

    def mark_reported(self, pub: Publication, keys: Collection[InstanceKey]) -> None:
        if len(keys) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} keys per call")
        check = {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _skey(pub.study_instance_uid),
                "ConditionExpression": "pub_token = :tok",
                "ExpressionAttributeValues": _values(tok=pub.token),
            }
        }
        for _ in range(_ATTEMPTS):
            now = time.time()
            writes = []
            for row in self._rows(_ikey(k) for k in set(keys)):
                rec = row.rec
                if (
                    rec.study_instance_uid != pub.study_instance_uid
                    or rec.reported_version is not None
                ):
                    continue
                state = (
                    InstanceState.DELIVERED if rec.state == InstanceState.UPLOADED else rec.state
                )
                writes.append(
                    self._put_row(
                        row, replace(rec, reported_version=pub.version, state=state), row.token, now
                    )
                )
            reasons = self._transact([check, *writes])
            if reasons is None:
                return
            if reasons[0] == "ConditionalCheckFailed":
                raise _lost(pub.study_instance_uid)
        raise StateError("marking rows reported kept conflicting")

    def complete_publication(self, pub: Publication, deid_study_uid: str) -> None:
        done = self._update(
            _skey(pub.study_instance_uid),
            "SET manifest_version = :v, delivered_at = :now, "
            "deid_study_uid = if_not_exists(deid_study_uid, :d), "
            "g_deid = if_not_exists(g_deid, :gd), g_flag = :flag, g_fsort = :uid",
            cond="pub_token = :tok AND manifest_version IN (:v, :prev)",
            ExpressionAttributeValues=_values(
                v=pub.version,
                prev=pub.version - 1,
                now=time.time(),
                d=deid_study_uid,
                gd="D#" + deid_study_uid,
                flag="unnotified",
                uid=pub.study_instance_uid,
                tok=pub.token,
            ),
        )
        if done is None:
            raise _lost(pub.study_instance_uid)  # taken over, or someone published this version

    def claim_announcement(
        self, study_instance_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication | None:
        now = time.time()
        study = self._study_item(study_instance_uid)
        if not _is_study(study) or study is None or _pub_live(study, now):
            return None
        manifest, notified = int(study["manifest_version"]), int(study["notified_version"])
        if notified >= manifest:
            return None
        rows = [_plain(r) for r in self._study_keys(study_instance_uid)]
        return self._take_publication(
            _progress(study, rows),
            owner,
            manifest,
            lease_seconds,
            "manifest_version = :mv AND notified_version = :nv",
            _values(mv=manifest, nv=notified),
        )

    def mark_notified(self, pub: Publication) -> None:
        for _ in range(_ATTEMPTS):
            study = self._check_pub(pub)
            manifest = int(study["manifest_version"])
            notified = max(int(study["notified_version"]), pub.version)
            remove = list(_CLEAR_PUB)
            if notified >= manifest:
                remove += ["g_flag", "g_fsort"]
            done = self._update(
                _skey(pub.study_instance_uid),
                "SET notified_version = :n REMOVE " + ", ".join(remove),
                cond="pub_token = :tok AND manifest_version = :mv",
                ExpressionAttributeValues=_values(n=notified, tok=pub.token, mv=manifest),
            )
            if done is not None:
                return
        raise StateError("marking a study notified kept conflicting")

    def release_publication(self, pub: Publication) -> None:
        self._update(
            _skey(pub.study_instance_uid),
            "REMOVE " + ", ".join(_CLEAR_PUB),
            cond="pub_token = :tok",
            ExpressionAttributeValues=_values(tok=pub.token),
        )

    def set_study_pseudonym(self, study_instance_uid: str, deid_study_uid: str) -> None:
        self._update(
            _skey(study_instance_uid),
            "SET deid_study_uid = if_not_exists(deid_study_uid, :d), "
            "g_deid = if_not_exists(g_deid, :gd)",
            cond="attribute_exists(first_received_at)",
            ExpressionAttributeValues=_values(d=deid_study_uid, gd="D#" + deid_study_uid),
        )

    def unnotified(self) -> list[StudyRecord]:
        items = self._batch_get(self._keys(self._index("flag", "g_flag", "unnotified")))
        records = [_study_record(_plain(i)) for i in items if _is_study(_plain(i))]
        return sorted(
            (r for r in records if r.notified_version < r.manifest_version),
            key=lambda r: r.first_received_at,
        )

    def study(self, uid: str) -> StudyRecord | None:
        item = self._study_item(uid)
        if not _is_study(item):
            found = self._batch_get(self._keys(self._index("deid", "g_deid", "D#" + uid)))
            item = _plain(found[0]) if found else None
        return _study_record(item) if item is not None and _is_study(item) else None

    # -- what senders said ---------------------------------------------------------------------
    def _put_chunks(self, items: list[Item]) -> None:
        """Write-once chunk items (unreachable until their header exists), 25 a request."""
        pending = [{"PutRequest": {"Item": i}} for i in items]
        delay = 0.01
        while pending:
            batch, pending = pending[:25], pending[25:]
            out = self._client.batch_write_item(RequestItems={self.table: batch})
            left = out.get("UnprocessedItems", {}).get(self.table, [])
            if left:
                pending.extend(left)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _delete_chunks(self, pk: str, prefix: str) -> None:
        keys = [
            {"pk": i["pk"], "sk": i["sk"]}
            for i in self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                ExpressionAttributeValues=_values(pk=pk, p=prefix),
                ProjectionExpression="pk, sk",
            )
        ]
        for start in range(0, len(keys), 25):
            self._client.batch_write_item(
                RequestItems={
                    self.table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + 25]]
                }
            )

    def _put_new(self, item: Item) -> bool:
        return self._write(
            [
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            ]
        )

    def expect_instances(
        self,
        study_instance_uid: str,
        *,
        source: str,
        source_id: str,
        sop_instance_uids: Collection[str],
        recorded_at: float | None = None,
    ) -> bool:
        at = time.time() if recorded_at is None else recorded_at
        pk = "E#" + study_instance_uid
        uids = sorted(set(sop_instance_uids))
        if not uids or self._get({"pk": {"S": pk}, "sk": {"S": "X#" + source_id}}) is not None:
            return False
        nonce = secrets.token_hex(4)
        prefix = f"Y#{source_id}#{nonce}#"
        self._put_chunks(
            [
                {
                    "pk": {"S": pk},
                    "sk": {"S": f"{prefix}{k:05d}"},
                    "uids": _av(set(uids[start : start + _CHUNK])),
                }
                for k, start in enumerate(range(0, len(uids), _CHUNK))
            ]
        )
        header = {
            "pk": {"S": pk},
            "sk": {"S": "X#" + source_id},
            "source": _av(source),
            "recorded_at": _av(at),
            "nonce": _av(nonce),
        }
        if not self._put_new(header):
            self._delete_chunks(pk, prefix)  # another node recorded it first
            return False
        self._update(
            _skey(study_instance_uid), "ADD expects :one", ExpressionAttributeValues=_values(one=1)
        )
        return True

    def expectations(self, study_instance_uid: str) -> list[Expectation]:
        headers: dict[str, dict[str, Any]] = {}
        chunks: dict[str, set[str]] = {}
        for item in self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=_values(pk="E#" + study_instance_uid),
            ConsistentRead=True,
        ):
            plain = _plain(item)
            sk = str(plain["sk"])
            if sk.startswith("X#"):
                headers[sk[2:]] = plain
            else:  # Y#source#nonce#k
                source_id, nonce, _ = sk[2:].rsplit("#", 2)
                chunks.setdefault(f"{source_id}#{nonce}", set()).update(plain["uids"])
        out = [
            Expectation(
                study_instance_uid,
                str(h["source"]),
                source_id,
                float(h["recorded_at"]),
                frozenset(chunks.get(f"{source_id}#{h['nonce']}", set())),
            )
            for source_id, h in headers.items()
        ]
        return sorted(out, key=lambda e: (e.recorded_at, e.source_id))

    @staticmethod
    def _ckey(transaction_uid: str) -> Item:
        return {"pk": {"S": "C#" + transaction_uid}, "sk": {"S": "C"}}

    @staticmethod
    def _commitment(plain: Mapping[str, Any], refs: tuple[CommitmentRef, ...] = ()) -> Commitment:
        return Commitment(
            transaction_uid=str(plain["pk"])[2:],
            calling_ae=str(plain["calling_ae"]),
            refs=refs,
            requested_at=float(plain["requested_at"]),
            node_id=str(plain.get("node_id", "")),
            association_id=str(plain.get("association_id", "")),
            state=CommitmentState(plain["state"]),
            attempts=int(plain.get("attempts", 0)),
            next_attempt_at=float(plain.get("next_attempt_at", 0.0)),
            outcome=plain.get("outcome"),
            failed=int(plain["failed"]) if "failed" in plain else None,
        )

    def add_commitment(self, commitment: Commitment) -> bool:
        cm = commitment
        key = self._ckey(cm.transaction_uid)
        if self._get(key) is not None:
            return False
        nonce = secrets.token_hex(4)
        prefix = f"R#{nonce}#"
        lines = [f"{ref.sop_class_uid} {ref.sop_instance_uid}" for ref in cm.refs]
        self._put_chunks(
            [
                {
                    "pk": key["pk"],
                    "sk": {"S": f"{prefix}{k:05d}"},
                    "refs": {"S": "\n".join(lines[start : start + _CHUNK])},
                }
                for k, start in enumerate(range(0, len(lines), _CHUNK))
            ]
        )
        attrs: dict[str, object] = {
            "calling_ae": cm.calling_ae,
            "requested_at": cm.requested_at or time.time(),
            "node_id": cm.node_id,
            "association_id": cm.association_id,
            "state": str(CommitmentState.PENDING),
            "attempts": 0,
            "next_attempt_at": cm.next_attempt_at,
            "nonce": nonce,
            "g_queue": "commit",
            "g_qsort": _ts(cm.next_attempt_at),
        }
        if not self._put_new({**key, **{k: _av(v) for k, v in attrs.items()}}):
            self._delete_chunks(key["pk"]["S"], prefix)
            return False
        return True

    def due_commitments(self, now: float | None = None) -> list[Commitment]:
        now = time.time() if now is None else now
        out = []
        for item in self._index(
            "queue",
            "g_queue",
            "commit",
            range="g_qsort <= :t",
            ExpressionAttributeValues=_values(t=_ts(now)),
        ):
            plain = _plain(item)
            if "lease_token" in plain and float(plain.get("lease_expires_at", 0.0)) > now:
                continue
            out.append(self._commitment(plain))
        return sorted(out, key=lambda c: c.requested_at)

    def claim_commitment(
        self, transaction_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> tuple[Commitment, CommitmentLease] | None:
        now = time.time()
        lease = CommitmentLease(transaction_uid, owner, secrets.token_hex(16), now + lease_seconds)
        item = self._update(
            self._ckey(transaction_uid),
            "SET lease_token = :tok, lease_owner = :owner, lease_expires_at = :exp",
            cond="#st = :pending AND (attribute_not_exists(lease_token) "
            "OR lease_expires_at <= :now)",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=_values(
                tok=lease.token,
                owner=owner,
                exp=lease.expires_at,
                pending=str(CommitmentState.PENDING),
                now=now,
            ),
        )
        if item is None:
            return None
        plain = _plain(item)
        chunks = sorted(
            (
                _plain(i)
                for i in self._query(
                    KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                    ExpressionAttributeValues=_values(
                        pk="C#" + transaction_uid, p=f"R#{plain['nonce']}#"
                    ),
                    ConsistentRead=True,
                )
            ),
            key=lambda c: str(c["sk"]),
        )
        refs = tuple(
            CommitmentRef(*line.split(" ", 1))
            for chunk in chunks
            for line in str(chunk["refs"]).splitlines()
        )
        return self._commitment(plain, refs), lease

    def finish_commitment(
        self,
        lease: CommitmentLease,
        *,
        state: CommitmentState,
        outcome: str,
        failed: int | None = None,
        retry_at: float | None = None,
    ) -> None:
        sets = ["#st = :st", "outcome = :out"]
        values: dict[str, object] = {"st": str(state), "out": outcome, "tok": lease.token}
        adds = ""
        remove = ["lease_token", "lease_owner", "lease_expires_at"]
        if failed is not None:
            sets.append("failed = :failed")
            values["failed"] = failed
        if retry_at is not None:
            sets.append("next_attempt_at = :next")
            values.update(next=retry_at, one=1)
            adds = " ADD attempts :one"
            if state == CommitmentState.PENDING:
                sets.append("g_qsort = :qs")
                values["qs"] = _ts(retry_at)
        if state != CommitmentState.PENDING:
            remove += ["g_queue", "g_qsort"]
        done = self._update(
            self._ckey(lease.transaction_uid),
            "SET " + ", ".join(sets) + " REMOVE " + ", ".join(remove) + adds,
            cond="lease_token = :tok",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues=_values(**values),
        )
        if done is None:
            raise LeaseLost("lease on a commitment was taken over")

    def commitment(self, transaction_uid: str) -> Commitment | None:
        item = self._get(self._ckey(transaction_uid))
        return self._commitment(_plain(item)) if item is not None else None

    @staticmethod
    def _pkey(sop_instance_uid: str) -> Item:
        return {"pk": {"S": "P#" + sop_instance_uid}, "sk": {"S": "P"}}

    def create_mpps(self, rec: MppsRecord) -> bool:
        attrs: dict[str, object] = {
            "status": rec.status,
            "calling_ae": rec.calling_ae,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
            "instances": rec.instances,
            "g_kind": "mpps",
            "g_ksort": _ts(rec.created_at),
        }
        if rec.study_instance_uids:
            attrs["studies"] = set(rec.study_instance_uids)
        if rec.reason:
            attrs["reason"] = _HOLD_SEP.join(rec.reason)
        return self._put_new(
            {**self._pkey(rec.sop_instance_uid), **{k: _av(v) for k, v in attrs.items()}}
        )

    def update_mpps(
        self,
        sop_instance_uid: str,
        *,
        status: str | None = None,
        study_instance_uids: Collection[str] = (),
        reason: tuple[str, str, str] | None = None,
        instances: int | None = None,
    ) -> MppsUpdate:
        sets = ["updated_at = :now"]
        values: dict[str, object] = {"now": time.time(), "ip": "IN PROGRESS"}
        if status is not None:
            sets.append("#st = :st")
            values["st"] = status
        if reason is not None:
            sets.append("reason = :reason")
            values["reason"] = _HOLD_SEP.join(reason)
        if instances is not None:
            sets.append("instances = :n")
            values["n"] = instances
        expr = "SET " + ", ".join(sets)
        if study_instance_uids:
            expr += " ADD studies :studies"
            values["studies"] = set(study_instance_uids)
        done = self._update(
            self._pkey(sop_instance_uid),
            expr,
            cond="attribute_exists(pk) AND #st = :ip",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=_values(**values),
        )
        if done is not None:
            return MppsUpdate.UPDATED
        if self._get(self._pkey(sop_instance_uid)) is not None:
            return MppsUpdate.FINAL
        return MppsUpdate.NO_SUCH_INSTANCE

    def mpps(
        self, *, sop_instance_uid: str | None = None, study_instance_uid: str | None = None
    ) -> list[MppsRecord]:
        if sop_instance_uid is not None:
            keys = [self._pkey(sop_instance_uid)]
        else:
            keys = [{"pk": i["pk"], "sk": i["sk"]} for i in self._index("kind", "g_kind", "mpps")]
        out = []
        for item in self._batch_get(keys):
            p = _plain(item)
            reason = str(p["reason"]).split(_HOLD_SEP) if "reason" in p else []
            rec = MppsRecord(
                sop_instance_uid=str(p["pk"])[2:],
                status=str(p["status"]),
                calling_ae=str(p["calling_ae"]),
                study_instance_uids=tuple(sorted(p.get("studies", set()))),
                created_at=float(p["created_at"]),
                updated_at=float(p["updated_at"]),
                reason=(reason[0], reason[1], reason[2]) if len(reason) == 3 else None,
                instances=int(p.get("instances", 0)),
            )
            if study_instance_uid is None or study_instance_uid in rec.study_instance_uids:
                out.append(rec)
        return sorted(out, key=lambda m: m.created_at)

    # -- nodes, holds, key ------------------------------------------------------------------------
    def heartbeat(
        self,
        node_id: str,
        *,
        open_associations: int = 0,
        info: Mapping[str, str] | None = None,
        ttl: float = DEFAULT_HEARTBEAT_TTL,
    ) -> None:
        now = time.time()
        item = {
            k: _av(v)
            for k, v in {
                "node_id": node_id,
                "last_heartbeat": now,
                "expires_at": now + ttl,
                "open_associations": open_associations,
                "info": dict(info or {}),
                # TTL only tidies: liveness is always expires_at compared with the clock
                TTL_ATTRIBUTE: int(now + ttl + _NODE_RETENTION),
                "g_queue": "node",
                "g_qsort": node_id,
            }.items()
        }
        self._client.put_item(TableName=self.table, Item={**item, **_nkey(node_id)})

    def nodes(self) -> list[NodeRecord]:
        now = time.time()
        out = []
        for item in self._index("queue", "g_queue", "node"):
            p = _plain(item)
            expires = float(p["expires_at"])
            out.append(
                NodeRecord(
                    node_id=p["node_id"],
                    last_heartbeat=float(p["last_heartbeat"]),
                    expires_at=expires,
                    open_associations=int(p["open_associations"]),
                    info={str(k): str(v) for k, v in p.get("info", {}).items()},
                    alive=expires > now,
                )
            )
        return out

    def _holds(self, node_id: str, association_id: str | None = None) -> list[dict[str, Any]]:
        cond = "pk = :pk"
        values = _values(pk="H#" + node_id)
        if association_id is not None:
            cond += " AND begins_with(sk, :a)"
            values.update(_values(a=association_id + _HOLD_SEP))
        return [
            _plain(i)
            for i in self._query(
                KeyConditionExpression=cond, ExpressionAttributeValues=values, ConsistentRead=True
            )
        ]

    def _drop_hold(self, hold: Mapping[str, Any]) -> None:
        """Delete a hold item and take it off its study, in one transaction."""
        member = f"{hold['node_id']}{_HOLD_SEP}{hold['association_id']}"
        self._transact_retrying(
            [
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": {"pk": _av(hold["pk"]), "sk": _av(hold["sk"])},
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _skey(hold["study_instance_uid"]),
                        "UpdateExpression": "DELETE holds :m ADD holds_seq :one",
                        "ExpressionAttributeValues": {
                            ":m": {"SS": [member]},
                            ":one": {"N": "1"},
                        },
                    }
                },
            ]
        )

    def lease_owners(self) -> set[str]:
        owners = {str(i["g_owner"]["S"])[2:] for i in self._scan(IndexName="owner")}
        owners |= {str(i["node_id"]["S"]) for i in self._index("queue", "g_queue", "hold")}
        return owners

    def release_node(self, node_id: str) -> int:
        dropped = 0
        for item in self._index("owner", "g_owner", "O#" + node_id):
            p = _plain(item)
            if str(p["pk"]).startswith("I#"):
                done = self._update(
                    {"pk": item["pk"], "sk": item["sk"]},
                    "REMOVE " + ", ".join(_CLEAR_LEASE) + " ADD rev :one",
                    cond="lease_owner = :o",
                    ExpressionAttributeValues=_values(o=node_id, one=1),
                )
            else:
                done = self._update(
                    {"pk": item["pk"], "sk": item["sk"]},
                    "REMOVE " + ", ".join(_CLEAR_PUB),
                    cond="pub_owner = :o",
                    ExpressionAttributeValues=_values(o=node_id),
                )
            dropped += done is not None
        for hold in self._holds(node_id):
            self._drop_hold(hold)
        self._client.delete_item(TableName=self.table, Key=_nkey(node_id))
        return dropped

    def hold_study(self, study_instance_uid: str, node_id: str, association_id: str) -> None:
        member = f"{node_id}{_HOLD_SEP}{association_id}"
        hold = {
            "pk": "H#" + node_id,
            "sk": association_id + _HOLD_SEP + study_instance_uid,
            "node_id": node_id,
            "association_id": association_id,
            "study_instance_uid": study_instance_uid,
            "g_queue": "hold",
            "g_qsort": f"{study_instance_uid}{_HOLD_SEP}{member}",
        }
        self._transact_retrying(
            [
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {k: _av(v) for k, v in hold.items()},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": _skey(study_instance_uid),
                        "UpdateExpression": "ADD holds :m, holds_seq :one",
                        "ExpressionAttributeValues": {
                            ":m": {"SS": [member]},
                            ":one": {"N": "1"},
                        },
                    }
                },
            ]
        )  # cancelled: the hold exists already (idempotent)

    def release_holds(self, node_id: str, association_id: str) -> None:
        for hold in self._holds(node_id, association_id):
            self._drop_hold(hold)

    def held_studies(self) -> set[str]:
        holds = [_plain(i) for i in self._index("queue", "g_queue", "hold")]
        live = self._live_nodes({h["node_id"] for h in holds}, time.time())
        return {h["study_instance_uid"] for h in holds if h["node_id"] in live}

    def key_fingerprint(self, fingerprint: str) -> str:
        key = {"pk": {"S": "K"}, "sk": {"S": "K"}}
        try:
            self._client.put_item(
                TableName=self.table,
                Item={**key, "fingerprint": {"S": fingerprint}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        stored = self._get(key)
        assert stored is not None
        return str(stored["fingerprint"]["S"])

    # -- reports --------------------------------------------------------------------------------
    def status_report(self, study: str | None = None) -> dict[str, Any]:
        if study:
            found = self.study(study)
            uids = [found.study_instance_uid] if found is not None else []
        else:
            uids = [str(i["pk"]["S"])[2:] for i in self._index("kind", "g_kind", "study")]
        items = [_plain(i) for i in self._batch_get(_skey(u) for u in uids)]
        studies = []
        for s in sorted(
            (i for i in items if _is_study(i)), key=lambda i: float(i["first_received_at"])
        ):
            rec = _study_record(s)
            rows = [_plain(r) for r in self._study_keys(rec.study_instance_uid)]
            if not rows:
                continue
            by_state: dict[str, int] = {}
            for r in rows:
                by_state[r["state"]] = by_state.get(r["state"], 0) + 1
            report: dict[str, Any] = {
                "study": rec.study_instance_uid,
                "deid_study": rec.deid_study_uid,
                "first_received_at": rec.first_received_at,
                "last_received_at": rec.last_received_at,
                "manifest_version": rec.manifest_version,
                "notified_version": rec.notified_version,
                "delivered_at": rec.delivered_at,
                "instances": len(rows),
                "bytes": sum(int(r.get("size", 0)) for r in rows),
                "unreported": sum(r.get("reported_version") is None for r in rows),
                "instances_by_state": by_state,
                "quarantined": [
                    {
                        "instance": str(r["pk"])[2:],
                        "deid_instance": r.get("deid_sop_uid"),
                        "version": int(str(r["sk"])[2:]),
                        "stage": r.get("stage"),
                        "reason": r.get("reason"),
                    }
                    for r in rows
                    if r["state"] == str(InstanceState.QUARANTINED)
                ],
            }
            report["state"] = study_state(report)
            if study:
                describe_expectations(self, report)
            studies.append(report)
        return {"studies": studies}


def _plain_row(row: _Row) -> dict[str, Any]:
    return {"state": str(row.rec.state), "reported_version": row.rec.reported_version}


def open_dynamodb(table: str, *, readonly: bool = False, create: bool = True) -> DynamoDBStateStore:
    """The store in DynamoDB table ``table`` (``DICOMGATE_STATE=dynamodb://TABLE``).

    ``create``: make the table when missing (``dicomgate state init``, or start-up); False —
    production, where the table is provisioned as code — refuses with :class:`TableMissingError`.
    ``readonly`` never creates. Region, credentials and endpoint: boto3's own chain
    (``AWS_ENDPOINT_URL_DYNAMODB`` for a local server)."""
    if not table:
        raise StateError("dynamodb:// needs a table name (DICOMGATE_STATE=dynamodb://TABLE)")
    try:
        store = DynamoDBStateStore(table)
    except BotoCoreError as exc:  # no region configured, a malformed endpoint, ...
        raise StateError(f"cannot use DynamoDB: {type(exc).__name__}: {exc}") from None
    try:
        if create and not readonly:
            store.create_table()
        store.check_table()
    except (BotoCoreError, ClientError) as exc:
        store.close()
        # credentials, network, permissions: name the table and what AWS said (no UID here)
        raise StateError(f"cannot open DynamoDB table {table!r}: {exc}") from None
    except BaseException:
        store.close()
        raise
    return store


if TYPE_CHECKING:  # mypy proves the class is a StateStore (every method, every signature)

    def _is_a_state_store(store: DynamoDBStateStore) -> StateStore:
        return store
