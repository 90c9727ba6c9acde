"""The SQLite state store (WAL): the embedded default, safe for several processes on one host.

Every conditional operation of :class:`~dicomgate.state.StateStore` is one ``BEGIN IMMEDIATE``
transaction: SQLite takes the database's write lock at ``BEGIN``, so the read that decides
(newest version, lease token, completeness) and the write that follows see no other writer in
between — across threads (one connection per store, under a lock) and across processes (each
its own connection; ``busy_timeout`` makes them queue instead of failing).

Durability: the spool file is fsync'd (file and directory) *before* its row is written, and
the start-up reconciliation rebuilds a row from any spool file that lacks one.  The spool file is
therefore the durable record of an acknowledged instance, and the database runs with
``synchronous=NORMAL`` — in WAL mode that survives any process crash (SIGKILL included); a power
loss may lose the newest rows, which reconciliation restores from their files.

Schema 2 keeps schema 1's tables and rows (an integer ``id`` stays, internally, as the admission
order) and adds leases, publications, nodes, holds and a meta table; opening a schema-1 store
migrates it in place, in one transaction. Schema 3 adds what senders said (expected instances,
storage commitments, MPPS); schema 4 orders the state index by arrival time.
"""

# Every SQL string here is built from this module's own constants and column names; values are
# always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Self, cast

from dicomgate.state._protocol import (
    DEFAULT_HEARTBEAT_TTL,
    DEFAULT_LEASE_SECONDS,
    MAX_BATCH,
    PROCESSED_FIELDS,
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
    StudyProgress,
    StudyRecord,
    completion_rule,
    describe_expectations,
    study_state,
)

__all__ = ["SqliteStateStore"]

_SCHEMA_VERSION = 4

# Schema 1, as stores written before issue 8 have it (CREATE ... IF NOT EXISTS: a no-op there).
_SCHEMA_1 = (
    """CREATE TABLE IF NOT EXISTS instances (
    id                  INTEGER PRIMARY KEY,
    sop_instance_uid    TEXT NOT NULL,
    version             INTEGER NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    size                INTEGER NOT NULL,
    sha256              TEXT,
    spool_path          TEXT,
    calling_ae          TEXT NOT NULL,
    peer_address        TEXT NOT NULL,
    association_id      TEXT NOT NULL,
    state               TEXT NOT NULL,
    reason              TEXT,
    received_at         REAL NOT NULL,
    updated_at          REAL NOT NULL,
    stage               TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    deid_study_uid      TEXT,
    deid_series_uid     TEXT,
    deid_sop_uid        TEXT,
    deid_size           INTEGER,
    deid_sha256         TEXT,
    object_key          TEXT,
    modality            TEXT,
    series_number       INTEGER,
    instance_number     INTEGER,
    reported_version    INTEGER,
    UNIQUE (sop_instance_uid, version)
)""",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_state ON instances (state)",
    """CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid  TEXT PRIMARY KEY,
    first_received_at   REAL NOT NULL,
    last_received_at    REAL NOT NULL,
    deid_study_uid      TEXT,
    manifest_version    INTEGER NOT NULL DEFAULT 0,
    notified_version    INTEGER NOT NULL DEFAULT 0,
    delivered_at        REAL
)""",
    "CREATE INDEX IF NOT EXISTS studies_deid ON studies (deid_study_uid)",
    "CREATE INDEX IF NOT EXISTS instances_unreported ON instances (study_instance_uid) "
    "WHERE reported_version IS NULL",
)

# Schema 1 → 2: only additions, so every existing row survives as it is.
_TO_SCHEMA_2 = (
    "ALTER TABLE instances ADD COLUMN node_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE instances ADD COLUMN lease_owner TEXT",
    "ALTER TABLE instances ADD COLUMN lease_token TEXT",
    "ALTER TABLE instances ADD COLUMN lease_expires_at REAL",
    "ALTER TABLE studies ADD COLUMN pub_owner TEXT",
    "ALTER TABLE studies ADD COLUMN pub_token TEXT",
    "ALTER TABLE studies ADD COLUMN pub_version INTEGER",
    "ALTER TABLE studies ADD COLUMN pub_expires_at REAL",
    "CREATE INDEX IF NOT EXISTS instances_leased ON instances (lease_owner) "
    "WHERE lease_owner IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS nodes (
    node_id             TEXT PRIMARY KEY,
    last_heartbeat      REAL NOT NULL,
    expires_at          REAL NOT NULL,
    open_associations   INTEGER NOT NULL DEFAULT 0,
    info                TEXT NOT NULL DEFAULT '{}'
)""",
    """CREATE TABLE IF NOT EXISTS holds (
    study_instance_uid  TEXT NOT NULL,
    node_id             TEXT NOT NULL,
    association_id      TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, node_id, association_id)
)""",
    "CREATE INDEX IF NOT EXISTS holds_node ON holds (node_id, association_id)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

# Schema 2 → 3 (issue 10): what senders said — expectations, storage commitments, MPPS.
_TO_SCHEMA_3 = (
    """CREATE TABLE IF NOT EXISTS expected (
    study_instance_uid  TEXT NOT NULL,
    source_id           TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    source              TEXT NOT NULL,
    recorded_at         REAL NOT NULL,
    PRIMARY KEY (study_instance_uid, source_id, sop_instance_uid)
)""",
    "CREATE INDEX IF NOT EXISTS expected_sop ON expected (study_instance_uid, sop_instance_uid)",
    """CREATE TABLE IF NOT EXISTS commitments (
    transaction_uid     TEXT PRIMARY KEY,
    calling_ae          TEXT NOT NULL,
    requested_at        REAL NOT NULL,
    node_id             TEXT NOT NULL,
    association_id      TEXT NOT NULL,
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     REAL NOT NULL,
    outcome             TEXT,
    failed              INTEGER,
    lease_owner         TEXT,
    lease_token         TEXT,
    lease_expires_at    REAL
)""",
    "CREATE INDEX IF NOT EXISTS commitments_due ON commitments (state, next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS commitment_refs (
    transaction_uid     TEXT NOT NULL,
    seq                 INTEGER NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    PRIMARY KEY (transaction_uid, seq)
)""",
    """CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid    TEXT PRIMARY KEY,
    status              TEXT NOT NULL,
    calling_ae          TEXT NOT NULL,
    studies             TEXT NOT NULL DEFAULT '[]',
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    reason              TEXT,
    instances           INTEGER NOT NULL DEFAULT 0
)""",
)

# Schema 4: the state index also orders by arrival, so the oldest undelivered instance (a gauge
# read on every metrics flush) is one index lookup per state instead of a walk of every row.
_TO_SCHEMA_4 = (
    "CREATE INDEX IF NOT EXISTS instances_state_received ON instances (state, received_at)",
    "DROP INDEX IF EXISTS instances_state",  # a prefix of the new one
)

# a study's expectations against its rows: expected UIDs, those without a row in the study,
# unreported finished rows no expectation names, and the newest expectation
_EXPECTATION = (
    "SELECT (SELECT count(DISTINCT e.sop_instance_uid) FROM expected e "
    "WHERE e.study_instance_uid = :s) AS expected, "
    "(SELECT count(DISTINCT e.sop_instance_uid) FROM expected e "
    "WHERE e.study_instance_uid = :s AND NOT EXISTS (SELECT 1 FROM instances i "
    "WHERE i.sop_instance_uid = e.sop_instance_uid AND i.study_instance_uid = :s)) AS missing, "
    "(SELECT count(*) FROM instances i WHERE i.study_instance_uid = :s "
    "AND i.reported_version IS NULL AND i.state IN ('uploaded', 'quarantined') "
    "AND NOT EXISTS (SELECT 1 FROM expected e WHERE e.study_instance_uid = :s "
    "AND e.sop_instance_uid = i.sop_instance_uid)) AS unexpected, "
    "(SELECT recorded_at FROM expected e WHERE e.study_instance_uid = :s "
    "ORDER BY recorded_at DESC LIMIT 1) AS expected_at, "
    "(SELECT source FROM expected e WHERE e.study_instance_uid = :s "
    "ORDER BY recorded_at DESC LIMIT 1) AS expected_by"
)

_SUPERSEDE_STALE = (
    "UPDATE instances SET state = 'superseded', reported_version = 0, updated_at = ?, "
    "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
    "WHERE reported_version IS NULL AND state IN ('uploaded', 'quarantined') "
    "AND EXISTS (SELECT 1 FROM instances j WHERE j.sop_instance_uid = instances.sop_instance_uid "
    "AND j.version > instances.version)"
)

_CLEAR_LEASE = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
_CLEAR_PUB = "pub_owner = NULL, pub_token = NULL, pub_version = NULL, pub_expires_at = NULL"

_PIPELINE_FIELDS = (
    "stage",
    "attempts",
    "deid_study_uid",
    "deid_series_uid",
    "deid_sop_uid",
    "deid_size",
    "deid_sha256",
    "object_key",
    "modality",
    "series_number",
    "instance_number",
    "reported_version",
)
_COLUMNS = (
    "sop_instance_uid, version, study_instance_uid, series_instance_uid, sop_class_uid, "
    "transfer_syntax_uid, size, sha256, spool_path, calling_ae, peer_address, association_id, "
    "state, reason, received_at, node_id, lease_owner, lease_expires_at, "
    + ", ".join(_PIPELINE_FIELDS)
)
_KEY = "sop_instance_uid = ? AND version = ?"

# progress of studies: pending (on their way) and unreported (finished, in no manifest yet)
_PROGRESS = (
    "SELECT s.study_instance_uid, s.last_received_at, s.first_received_at, "
    "s.manifest_version, s.deid_study_uid, "
    "sum(i.state IN ('received', 'processed')) AS pending, "
    "sum(i.reported_version IS NULL AND i.state IN ('uploaded', 'quarantined')) AS unreported "
    "FROM studies s JOIN instances i USING (study_instance_uid) "
)


def _record(row: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(
        sop_instance_uid=row["sop_instance_uid"],
        version=row["version"],
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        size=row["size"],
        sha256=row["sha256"],
        spool_path=row["spool_path"],
        calling_ae=row["calling_ae"],
        peer_address=row["peer_address"],
        association_id=row["association_id"],
        state=InstanceState(row["state"]),
        reason=row["reason"],
        received_at=row["received_at"],
        node_id=row["node_id"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        **{name: row[name] for name in _PIPELINE_FIELDS},
    )


def _progress(row: sqlite3.Row) -> StudyProgress:
    return StudyProgress(
        study_instance_uid=row["study_instance_uid"],
        first_received_at=row["first_received_at"],
        last_received_at=row["last_received_at"],
        manifest_version=row["manifest_version"],
        deid_study_uid=row["deid_study_uid"],
        pending=row["pending"] or 0,
        unreported=row["unreported"] or 0,
    )


def _study_record(row: sqlite3.Row) -> StudyRecord:
    return StudyRecord(
        study_instance_uid=row["study_instance_uid"],
        deid_study_uid=row["deid_study_uid"],
        first_received_at=row["first_received_at"],
        last_received_at=row["last_received_at"],
        manifest_version=row["manifest_version"],
        notified_version=row["notified_version"],
        delivered_at=row["delivered_at"],
    )


def _lost(key: InstanceKey | str) -> LeaseLost:
    # no UID in the message: it could reach a log line
    what = f"version {key.version}" if isinstance(key, InstanceKey) else "a publication"
    return LeaseLost(f"lease on {what} was taken over")


class SqliteStateStore:
    """SQLite-backed :class:`~dicomgate.state.StateStore`; one connection shared by threads."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Self:
        if readonly:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # before anything that may wait for another process's write lock
        conn.execute("PRAGMA busy_timeout=10000")
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        store = cls(conn)
        try:
            if readonly:
                store._check_schema()
            else:
                store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    def _check_schema(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version != _SCHEMA_VERSION:
            raise StateError(
                f"state store schema {version}, this dicomgate reads {_SCHEMA_VERSION}: "
                "start the node once to migrate it"
            )

    def _migrate(self) -> None:
        """Create or migrate the schema in one IMMEDIATE transaction (several processes may
        open a new store at once: the second waits, then finds it done)."""
        with self._transaction() as c:
            (version,) = c.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise StateError(
                    f"state store schema {version} is newer than this dicomgate ({_SCHEMA_VERSION})"
                )
            if version < _SCHEMA_VERSION:
                for statement in _SCHEMA_1:
                    c.execute(statement)
                if version < 2:
                    for statement in _TO_SCHEMA_2:
                        c.execute(statement)
                for statement in (*_TO_SCHEMA_3, *_TO_SCHEMA_4):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            # Stores written before versions were superseded on arrival hold stale rows that
            # would keep their studies republishing: settle them once, at start-up.
            c.execute(_SUPERSEDE_STALE, (time.time(),))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction under the store's lock: the write lock of the database is
        held from the first read, so a conditional operation is atomic across processes."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Collection[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- admission -------------------------------------------------------------------------------
    def latest_version(self, sop_instance_uid: str) -> InstanceRecord | None:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM instances WHERE sop_instance_uid = ? "
            "ORDER BY version DESC LIMIT 1",
            (sop_instance_uid,),
        )
        return _record(rows[0]) if rows else None

    def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM instances WHERE sop_instance_uid = ? ORDER BY version",
            (sop_instance_uid,),
        )
        return [_record(r) for r in rows]

    def _insert(self, c: sqlite3.Connection, rec: InstanceRecord, now: float) -> bool:
        received_at = rec.received_at or now
        cur = c.execute(
            "INSERT INTO instances (sop_instance_uid, version, study_instance_uid, "
            "series_instance_uid, sop_class_uid, transfer_syntax_uid, size, sha256, "
            "spool_path, calling_ae, peer_address, association_id, state, reason, "
            "received_at, updated_at, node_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (sop_instance_uid, version) DO NOTHING",
            (
                rec.sop_instance_uid,
                rec.version,
                rec.study_instance_uid,
                rec.series_instance_uid,
                rec.sop_class_uid,
                rec.transfer_syntax_uid,
                rec.size,
                rec.sha256,
                rec.spool_path,
                rec.calling_ae,
                rec.peer_address,
                rec.association_id,
                str(rec.state),
                rec.reason,
                received_at,
                now,
                rec.node_id,
            ),
        )
        if cur.rowcount == 0:
            return False
        c.execute(
            "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at) "
            "VALUES (?, ?, ?) ON CONFLICT (study_instance_uid) DO UPDATE SET "
            "last_received_at = max(last_received_at, excluded.last_received_at)",
            (rec.study_instance_uid, received_at, received_at),
        )
        if rec.version > 1:
            self._supersede_stale(c, rec.sop_instance_uid, now)
        return True

    def admit(self, rec: InstanceRecord) -> Admission:
        now = time.time()
        with self._transaction() as c:
            row = c.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE sop_instance_uid = ? "
                "ORDER BY version DESC LIMIT 1",
                (rec.sop_instance_uid,),
            ).fetchone()
            newest = _record(row) if row is not None else None
            if (
                newest is not None
                and rec.sha256 is not None
                and newest.size == rec.size
                and newest.sha256 == rec.sha256
            ):
                return Admission(AdmitOutcome.DUPLICATE, newest)
            if (newest.version if newest is not None else 0) != rec.version - 1:
                if newest is None:
                    raise ValueError(f"version {rec.version} proposed for a new instance")
                return Admission(AdmitOutcome.CONFLICT, newest)
            self._insert(c, rec, now)
            stored = c.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE {_KEY}",
                rec.key,
            ).fetchone()
        return Admission(AdmitOutcome.ADMITTED, _record(stored))

    def admit_recovered(self, rec: InstanceRecord) -> bool:
        with self._transaction() as c:
            return self._insert(c, rec, time.time())

    def _supersede_stale(self, c: sqlite3.Connection, sop_instance_uid: str, now: float) -> None:
        """Older versions that finished (uploaded or quarantined) but were never reported
        become ``superseded``: the newest version is the one a manifest lists, so without this
        they would stay "unreported" and re-trigger their study forever. Runs inside the
        transaction that made them stale (a newer version admitted, an old one finishing);
        the (sop_instance_uid, version) index keeps it cheap."""
        c.execute(_SUPERSEDE_STALE + " AND sop_instance_uid = ?", (now, sop_instance_uid))

    def _set(self, key: InstanceKey, **columns: object) -> None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        with self._transaction() as c:
            c.execute(
                f"UPDATE instances SET {sets}, updated_at = ? WHERE {_KEY}",
                (*columns.values(), time.time(), *key),
            )

    def set_sha256(self, key: InstanceKey, sha256: str) -> None:
        with self._transaction() as c:
            c.execute(
                f"UPDATE instances SET sha256 = coalesce(sha256, ?) WHERE {_KEY}",
                (sha256, *key),
            )

    def set_spool_path(self, key: InstanceKey, relative: str | None) -> None:
        self._set(key, spool_path=relative)

    # -- claims ----------------------------------------------------------------------------------
    def claim_work(
        self,
        owner: str,
        *,
        limit: int,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        exclude: Collection[InstanceKey] = (),
    ) -> list[Claim]:
        limit = min(limit, MAX_BATCH)
        now = time.time()
        skip = set(exclude)
        claims: list[Claim] = []
        with self._transaction() as c:
            rows = c.execute(
                f"SELECT {_COLUMNS} FROM instances "
                "WHERE state IN ('received', 'processed') "
                "AND (lease_token IS NULL OR lease_expires_at <= ?) ORDER BY id LIMIT ?",
                (now, limit + len(skip)),
            ).fetchall()
            for row in rows:
                rec = _record(row)
                if rec.key in skip:
                    continue
                lease = Lease(rec.key, owner, secrets.token_hex(16), now + lease_seconds)
                self._write_lease(c, lease)
                claims.append(Claim(_leased(rec, lease), lease))
                if len(claims) == limit:
                    break
        return claims

    @staticmethod
    def _write_lease(c: sqlite3.Connection, lease: Lease) -> None:
        c.execute(
            "UPDATE instances SET lease_owner = ?, lease_token = ?, lease_expires_at = ? "
            f"WHERE {_KEY}",
            (lease.owner, lease.token, lease.expires_at, *lease.key),
        )

    def claim_instance(
        self, key: InstanceKey, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Lease | None:
        now = time.time()
        lease = Lease(key, owner, secrets.token_hex(16), now + lease_seconds)
        with self._transaction() as c:
            cur = c.execute(
                "UPDATE instances SET lease_owner = ?, lease_token = ?, lease_expires_at = ? "
                f"WHERE {_KEY} AND (lease_token IS NULL OR lease_expires_at <= ?)",
                (lease.owner, lease.token, lease.expires_at, *key, now),
            )
        return lease if cur.rowcount else None

    def _leased_update(
        self, c: sqlite3.Connection, lease: Lease, sets: str, params: Collection[object]
    ) -> None:
        """``UPDATE ... SET sets`` of the leased row, or :class:`LeaseLost`."""
        cur = c.execute(
            f"UPDATE instances SET {sets}, updated_at = ? WHERE {_KEY} AND lease_token = ?",
            (*params, time.time(), *lease.key, lease.token),
        )
        if cur.rowcount == 0:
            raise _lost(lease.key)

    def renew(self, lease: Lease, *, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Lease:
        expires = time.time() + lease_seconds
        with self._transaction() as c:
            cur = c.execute(
                f"UPDATE instances SET lease_expires_at = ? WHERE {_KEY} AND lease_token = ?",
                (expires, *lease.key, lease.token),
            )
        if cur.rowcount == 0:
            raise _lost(lease.key)
        return Lease(lease.key, lease.owner, lease.token, expires)

    def release(self, lease: Lease) -> None:
        with self._transaction() as c:
            c.execute(
                f"UPDATE instances SET {_CLEAR_LEASE} WHERE {_KEY} AND lease_token = ?",
                (*lease.key, lease.token),
            )

    # -- transitions -----------------------------------------------------------------------------
    def record_processed(self, lease: Lease, **fields: Any) -> None:
        unknown = set(fields) - PROCESSED_FIELDS
        if unknown:
            raise ValueError(f"not pipeline fields: {sorted(unknown)}")
        sets = ", ".join(["state = 'processed'", "reason = NULL"] + [f"{n} = ?" for n in fields])
        with self._transaction() as c:
            self._leased_update(c, lease, sets, list(fields.values()))
            if fields.get("deid_study_uid"):
                c.execute(
                    "UPDATE studies SET deid_study_uid = coalesce(deid_study_uid, ?) "
                    "WHERE study_instance_uid = "
                    f"(SELECT study_instance_uid FROM instances WHERE {_KEY})",
                    (fields["deid_study_uid"], *lease.key),
                )

    def _finish(self, lease: Lease, sets: str, params: Collection[object]) -> InstanceState:
        """Move the leased row to a terminal state and release the lease; if a newer version
        exists by then (it arrived while this one was carried), the row ends superseded."""
        with self._transaction() as c:
            self._leased_update(c, lease, f"{sets}, {_CLEAR_LEASE}", params)
            self._supersede_stale(c, lease.key.sop_instance_uid, time.time())
            (state,) = c.execute(
                f"SELECT state FROM instances WHERE {_KEY}",
                lease.key,
            ).fetchone()
        return InstanceState(state)

    def record_uploaded(self, lease: Lease, object_key: str) -> InstanceState:
        return self._finish(
            lease,
            "state = 'uploaded', object_key = ?, stage = NULL, reason = NULL",
            (object_key,),
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
        return self._finish(
            lease,
            "state = 'quarantined', stage = ?, reason = ?, deid_sop_uid = ?, "
            "deid_series_uid = ?, sha256 = coalesce(?, sha256)",
            (stage, reason, deid_sop_uid, deid_series_uid, sha256),
        )

    def record_retry(self, lease: Lease, *, stage: str, reason: str) -> None:
        with self._transaction() as c:
            self._leased_update(
                c, lease, "attempts = attempts + 1, stage = ?, reason = ?", (stage, reason)
            )

    def requeue(self, lease: Lease, *, reason: str) -> None:
        with self._transaction() as c:
            self._leased_update(
                c,
                lease,
                f"state = 'received', stage = 'upload', reason = ?, {_CLEAR_LEASE}",
                (reason,),
            )

    def supersede_if_stale(self, lease: Lease) -> bool:
        # The usual answer ("no newer version, still ours") from one read, without taking the
        # write lock that receiving threads and other nodes wait on.
        [(newer, held)] = self._read(
            "SELECT EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = ? AND version > ?), "
            f"EXISTS (SELECT 1 FROM instances WHERE {_KEY} AND lease_token = ?)",
            (*lease.key, *lease.key, lease.token),
        )
        if not held:
            raise _lost(lease.key)
        if not newer:
            return False
        with self._transaction() as c:
            newer = c.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ? AND version > ? LIMIT 1",
                lease.key,
            ).fetchone()
            if newer is None:
                # still ours? (a lost lease must say so, whatever the answer would have been)
                held = c.execute(
                    f"SELECT 1 FROM instances WHERE {_KEY} AND lease_token = ?",
                    (*lease.key, lease.token),
                ).fetchone()
                if held is None:
                    raise _lost(lease.key)
                return False
            self._leased_update(
                c, lease, f"state = 'superseded', reported_version = 0, {_CLEAR_LEASE}", ()
            )
        return True

    # -- reading ---------------------------------------------------------------------------------
    def get(self, key: InstanceKey) -> InstanceRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM instances WHERE {_KEY}", key)
        return _record(rows[0]) if rows else None

    def instances(
        self, *, study_instance_uid: str | None = None, state: InstanceState | None = None
    ) -> list[InstanceRecord]:
        where, params = [], []
        if study_instance_uid is not None:
            where.append("study_instance_uid = ?")
            params.append(study_instance_uid)
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        sql = f"SELECT {_COLUMNS} FROM instances"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_record(r) for r in self._read(sql + " ORDER BY id", params)]

    def spooled_paths(self, node_ids: Collection[str] | None = None) -> dict[str, InstanceRecord]:
        sql = f"SELECT {_COLUMNS} FROM instances WHERE spool_path IS NOT NULL"
        params: list[str] = []
        if node_ids is not None:
            params = list(node_ids)
            sql += f" AND node_id IN ({', '.join('?' * len(params))})"
        return {r["spool_path"]: _record(r) for r in self._read(sql, params)}

    def backlog(self) -> int:
        [(n,)] = self._read(
            "SELECT count(*) FROM instances WHERE state IN ('received', 'processed')"
        )
        return int(n)

    def oldest_undelivered(self) -> float | None:
        # one min() per state: each is a single lookup in (state, received_at)
        [(oldest,)] = self._read(
            "SELECT min(m) FROM ("
            + " UNION ALL ".join(
                f"SELECT min(received_at) AS m FROM instances WHERE state = '{state}'"
                for state in ("received", "processed", "uploaded")
            )
            + ")"
        )
        return float(oldest) if oldest is not None else None

    def purgeable(self, *, delivered_before: float) -> list[InstanceRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM instances "
            "WHERE state IN ('delivered', 'superseded') "
            "AND spool_path IS NOT NULL AND updated_at <= ?",
            (delivered_before,),
        )
        return [_record(r) for r in rows]

    # -- studies and publication -----------------------------------------------------------------
    def studies_to_report(self) -> list[StudyProgress]:
        with self._lock:
            c = self._conn
            rows = c.execute(
                _PROGRESS + "WHERE s.study_instance_uid IN "
                "(SELECT study_instance_uid FROM instances WHERE reported_version IS NULL) "
                "GROUP BY s.study_instance_uid"
            ).fetchall()
            expecting = {
                r[0] for r in c.execute("SELECT DISTINCT study_instance_uid FROM expected")
            }
            return [
                self._expecting(c, _progress(r))
                if r["study_instance_uid"] in expecting
                else _progress(r)
                for r in rows
            ]

    @staticmethod
    def _expecting(c: sqlite3.Connection, study: StudyProgress) -> StudyProgress:
        """``study`` with what its expectations say (unchanged when it has none)."""
        row = c.execute(_EXPECTATION, {"s": study.study_instance_uid}).fetchone()
        if not row["expected"]:
            return study
        return replace(
            study,
            expected=row["expected"],
            expected_missing=row["missing"],
            unexpected=row["unexpected"],
            expected_at=row["expected_at"],
            expected_by=row["expected_by"],
        )

    def manifest_rows(self, study_instance_uid: str) -> list[InstanceRecord]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM instances i WHERE study_instance_uid = ? "
            "AND version = (SELECT max(version) FROM instances j "
            "WHERE j.sop_instance_uid = i.sop_instance_uid) ORDER BY id",
            (study_instance_uid,),
        )
        return [_record(r) for r in rows]

    @staticmethod
    def _study_progress(c: sqlite3.Connection, uid: str) -> StudyProgress | None:
        row = c.execute(
            _PROGRESS + "WHERE s.study_instance_uid = ? GROUP BY s.study_instance_uid", (uid,)
        ).fetchone()
        return SqliteStateStore._expecting(c, _progress(row)) if row is not None else None

    def _take_publication(
        self,
        c: sqlite3.Connection,
        study: StudyProgress,
        owner: str,
        version: int,
        seconds: float,
        completion: str = "idle",
    ) -> Publication:
        now = time.time()
        missing: tuple[str, ...] = ()
        if study.expected_missing:
            missing = tuple(
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT e.sop_instance_uid FROM expected e "
                    "WHERE e.study_instance_uid = ? AND NOT EXISTS (SELECT 1 FROM instances i "
                    "WHERE i.sop_instance_uid = e.sop_instance_uid "
                    "AND i.study_instance_uid = e.study_instance_uid) ORDER BY 1",
                    (study.study_instance_uid,),
                )
            )
        pub = Publication(
            study_instance_uid=study.study_instance_uid,
            version=version,
            owner=owner,
            token=secrets.token_hex(16),
            expires_at=now + seconds,
            study=study,
            completion=completion,
            missing=missing,
        )
        c.execute(
            "UPDATE studies SET pub_owner = ?, pub_token = ?, pub_version = ?, pub_expires_at = ? "
            "WHERE study_instance_uid = ?",
            (pub.owner, pub.token, pub.version, pub.expires_at, pub.study_instance_uid),
        )
        return pub

    def begin_publication(
        self,
        study_instance_uid: str,
        owner: str,
        *,
        stable_after: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        expected_deadline: float | None = None,
    ) -> Publication | None:
        with self._transaction() as c:
            now = time.time()
            study = self._study_progress(c, study_instance_uid)
            if study is None or study.pending or not study.unreported:
                return None
            completion = completion_rule(
                study, now=now, stable_after=stable_after, expected_deadline=expected_deadline
            )
            if completion is None:
                return None
            busy = c.execute(
                "SELECT 1 FROM studies WHERE study_instance_uid = ? "
                "AND pub_token IS NOT NULL AND pub_expires_at > ? "
                "UNION ALL SELECT 1 FROM holds h JOIN nodes n USING (node_id) "
                "WHERE h.study_instance_uid = ? AND n.expires_at > ? LIMIT 1",
                (study_instance_uid, now, study_instance_uid, now),
            ).fetchone()
            if busy is not None:
                return None
            return self._take_publication(
                c, study, owner, study.manifest_version + 1, lease_seconds, completion
            )

    def _check_pub(self, c: sqlite3.Connection, pub: Publication) -> sqlite3.Row:
        row = c.execute(
            "SELECT * FROM studies WHERE study_instance_uid = ? AND pub_token = ?",
            (pub.study_instance_uid, pub.token),
        ).fetchone()
        if row is None:
            raise _lost(pub.study_instance_uid)
        return cast(sqlite3.Row, row)

    def renew_publication(
        self, pub: Publication, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication:
        expires = time.time() + lease_seconds
        with self._transaction() as c:
            self._check_pub(c, pub)
            c.execute(
                "UPDATE studies SET pub_expires_at = ? WHERE study_instance_uid = ?",
                (expires, pub.study_instance_uid),
            )
        return replace(pub, expires_at=expires)

    def mark_reported(self, pub: Publication, keys: Collection[InstanceKey]) -> None:
        if len(keys) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} keys per call")
        now = time.time()
        with self._transaction() as c:
            self._check_pub(c, pub)
            c.executemany(
                "UPDATE instances SET reported_version = ?, updated_at = ?, "
                "state = CASE state WHEN 'uploaded' THEN 'delivered' ELSE state END "
                f"WHERE {_KEY} AND study_instance_uid = ? AND reported_version IS NULL",
                [(pub.version, now, *key, pub.study_instance_uid) for key in keys],
            )

    def complete_publication(self, pub: Publication, deid_study_uid: str) -> None:
        with self._transaction() as c:
            row = self._check_pub(c, pub)
            if row["manifest_version"] not in (pub.version - 1, pub.version):
                raise _lost(pub.study_instance_uid)  # someone else published this version
            c.execute(
                "UPDATE studies SET manifest_version = ?, delivered_at = ?, "
                "deid_study_uid = coalesce(deid_study_uid, ?) WHERE study_instance_uid = ?",
                (pub.version, time.time(), deid_study_uid, pub.study_instance_uid),
            )

    def claim_announcement(
        self, study_instance_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> Publication | None:
        with self._transaction() as c:
            row = c.execute(
                "SELECT manifest_version FROM studies WHERE study_instance_uid = ? "
                "AND notified_version < manifest_version "
                "AND (pub_token IS NULL OR pub_expires_at <= ?)",
                (study_instance_uid, time.time()),
            ).fetchone()
            if row is None:
                return None
            study = self._study_progress(c, study_instance_uid)
            assert study is not None
            return self._take_publication(c, study, owner, row[0], lease_seconds)

    def mark_notified(self, pub: Publication) -> None:
        with self._transaction() as c:
            self._check_pub(c, pub)
            c.execute(
                f"UPDATE studies SET notified_version = max(notified_version, ?), {_CLEAR_PUB} "
                "WHERE study_instance_uid = ?",
                (pub.version, pub.study_instance_uid),
            )

    def release_publication(self, pub: Publication) -> None:
        with self._transaction() as c:
            c.execute(
                f"UPDATE studies SET {_CLEAR_PUB} WHERE study_instance_uid = ? AND pub_token = ?",
                (pub.study_instance_uid, pub.token),
            )

    def set_study_pseudonym(self, study_instance_uid: str, deid_study_uid: str) -> None:
        with self._transaction() as c:
            c.execute(
                "UPDATE studies SET deid_study_uid = coalesce(deid_study_uid, ?) "
                "WHERE study_instance_uid = ?",
                (deid_study_uid, study_instance_uid),
            )

    def unnotified(self) -> list[StudyRecord]:
        rows = self._read("SELECT * FROM studies WHERE notified_version < manifest_version")
        return [_study_record(r) for r in rows]

    def study(self, uid: str) -> StudyRecord | None:
        rows = self._read(
            "SELECT * FROM studies WHERE study_instance_uid = ? OR deid_study_uid = ?", (uid, uid)
        )
        return _study_record(rows[0]) if rows else None

    # -- what senders said ---------------------------------------------------------------------
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
        with self._transaction() as c:
            known = c.execute(
                "SELECT 1 FROM expected WHERE study_instance_uid = ? AND source_id = ? LIMIT 1",
                (study_instance_uid, source_id),
            ).fetchone()
            if known is not None or not sop_instance_uids:
                return False
            c.executemany(
                "INSERT INTO expected (study_instance_uid, source_id, sop_instance_uid, source, "
                "recorded_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(study_instance_uid, source_id, u, source, at) for u in set(sop_instance_uids)],
            )
        return True

    def expectations(self, study_instance_uid: str) -> list[Expectation]:
        out: dict[str, Expectation] = {}
        for r in self._read(
            "SELECT source_id, source, recorded_at, sop_instance_uid FROM expected "
            "WHERE study_instance_uid = ? ORDER BY recorded_at, source_id",
            (study_instance_uid,),
        ):
            e = out.get(r["source_id"])
            uids = {r["sop_instance_uid"]} | (e.sop_instance_uids if e else frozenset())
            out[r["source_id"]] = Expectation(
                study_instance_uid, r["source"], r["source_id"], r["recorded_at"], frozenset(uids)
            )
        return list(out.values())

    def add_commitment(self, commitment: Commitment) -> bool:
        cm = commitment
        with self._transaction() as c:
            cur = c.execute(
                "INSERT INTO commitments (transaction_uid, calling_ae, requested_at, node_id, "
                "association_id, state, attempts, next_attempt_at) VALUES (?,?,?,?,?,?,0,?) "
                "ON CONFLICT DO NOTHING",
                (
                    cm.transaction_uid,
                    cm.calling_ae,
                    cm.requested_at or time.time(),
                    cm.node_id,
                    cm.association_id,
                    str(CommitmentState.PENDING),
                    cm.next_attempt_at,
                ),
            )
            if cur.rowcount == 0:
                return False
            c.executemany(
                "INSERT INTO commitment_refs (transaction_uid, seq, sop_class_uid, "
                "sop_instance_uid) VALUES (?, ?, ?, ?)",
                [(cm.transaction_uid, i, *ref) for i, ref in enumerate(cm.refs)],
            )
        return True

    @staticmethod
    def _commitment(row: sqlite3.Row, refs: tuple[CommitmentRef, ...] = ()) -> Commitment:
        return Commitment(
            transaction_uid=row["transaction_uid"],
            calling_ae=row["calling_ae"],
            refs=refs,
            requested_at=row["requested_at"],
            node_id=row["node_id"],
            association_id=row["association_id"],
            state=CommitmentState(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            outcome=row["outcome"],
            failed=row["failed"],
        )

    def due_commitments(self, now: float | None = None) -> list[Commitment]:
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT * FROM commitments WHERE state = 'pending' AND next_attempt_at <= ? "
            "AND (lease_token IS NULL OR lease_expires_at <= ?) ORDER BY requested_at",
            (now, now),
        )
        return [self._commitment(r) for r in rows]

    def claim_commitment(
        self, transaction_uid: str, owner: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> tuple[Commitment, CommitmentLease] | None:
        now = time.time()
        lease = CommitmentLease(transaction_uid, owner, secrets.token_hex(16), now + lease_seconds)
        with self._transaction() as c:
            cur = c.execute(
                "UPDATE commitments SET lease_owner = ?, lease_token = ?, lease_expires_at = ? "
                "WHERE transaction_uid = ? AND state = 'pending' "
                "AND (lease_token IS NULL OR lease_expires_at <= ?)",
                (owner, lease.token, lease.expires_at, transaction_uid, now),
            )
            if cur.rowcount == 0:
                return None
            row = c.execute(
                "SELECT * FROM commitments WHERE transaction_uid = ?", (transaction_uid,)
            ).fetchone()
            refs = tuple(
                CommitmentRef(r[0], r[1])
                for r in c.execute(
                    "SELECT sop_class_uid, sop_instance_uid FROM commitment_refs "
                    "WHERE transaction_uid = ? ORDER BY seq",
                    (transaction_uid,),
                )
            )
        return self._commitment(row, refs), lease

    def finish_commitment(
        self,
        lease: CommitmentLease,
        *,
        state: CommitmentState,
        outcome: str,
        failed: int | None = None,
        retry_at: float | None = None,
    ) -> None:
        with self._transaction() as c:
            cur = c.execute(
                "UPDATE commitments SET state = ?, outcome = ?, failed = coalesce(?, failed), "
                "attempts = attempts + ?, next_attempt_at = coalesce(?, next_attempt_at), "
                "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
                "WHERE transaction_uid = ? AND lease_token = ?",
                (
                    str(state),
                    outcome,
                    failed,
                    1 if retry_at is not None else 0,
                    retry_at,
                    lease.transaction_uid,
                    lease.token,
                ),
            )
            if cur.rowcount == 0:
                raise LeaseLost("lease on a commitment was taken over")

    def commitment(self, transaction_uid: str) -> Commitment | None:
        rows = self._read("SELECT * FROM commitments WHERE transaction_uid = ?", (transaction_uid,))
        return self._commitment(rows[0]) if rows else None

    def create_mpps(self, rec: MppsRecord) -> bool:
        with self._transaction() as c:
            cur = c.execute(
                "INSERT INTO mpps (sop_instance_uid, status, calling_ae, studies, created_at, "
                "updated_at, reason, instances) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (
                    rec.sop_instance_uid,
                    rec.status,
                    rec.calling_ae,
                    json.dumps(list(rec.study_instance_uids)),
                    rec.created_at,
                    rec.updated_at,
                    json.dumps(rec.reason) if rec.reason else None,
                    rec.instances,
                ),
            )
        return cur.rowcount == 1

    def update_mpps(
        self,
        sop_instance_uid: str,
        *,
        status: str | None = None,
        study_instance_uids: Collection[str] = (),
        reason: tuple[str, str, str] | None = None,
        instances: int | None = None,
    ) -> MppsUpdate:
        with self._transaction() as c:
            row = c.execute(
                "SELECT status, studies FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
            if row is None:
                return MppsUpdate.NO_SUCH_INSTANCE
            if row["status"] != "IN PROGRESS":
                return MppsUpdate.FINAL
            studies = list(json.loads(row["studies"]))
            studies += [u for u in study_instance_uids if u not in studies]
            c.execute(
                "UPDATE mpps SET status = coalesce(?, status), studies = ?, updated_at = ?, "
                "reason = coalesce(?, reason), instances = coalesce(?, instances) "
                "WHERE sop_instance_uid = ? AND status = 'IN PROGRESS'",
                (
                    status,
                    json.dumps(studies),
                    time.time(),
                    json.dumps(reason) if reason else None,
                    instances,
                    sop_instance_uid,
                ),
            )
        return MppsUpdate.UPDATED

    def mpps(
        self, *, sop_instance_uid: str | None = None, study_instance_uid: str | None = None
    ) -> list[MppsRecord]:
        if sop_instance_uid is not None:
            rows = self._read("SELECT * FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,))
        else:
            rows = self._read("SELECT * FROM mpps ORDER BY created_at")
        out = [
            MppsRecord(
                sop_instance_uid=r["sop_instance_uid"],
                status=r["status"],
                calling_ae=r["calling_ae"],
                study_instance_uids=tuple(json.loads(r["studies"])),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                reason=tuple(json.loads(r["reason"])) if r["reason"] else None,
                instances=r["instances"],
            )
            for r in rows
        ]
        if study_instance_uid is not None:
            out = [m for m in out if study_instance_uid in m.study_instance_uids]
        return out

    # -- nodes, holds, key -----------------------------------------------------------------------
    def heartbeat(
        self,
        node_id: str,
        *,
        open_associations: int = 0,
        info: Mapping[str, str] | None = None,
        ttl: float = DEFAULT_HEARTBEAT_TTL,
    ) -> None:
        now = time.time()
        with self._transaction() as c:
            c.execute(
                "INSERT INTO nodes (node_id, last_heartbeat, expires_at, open_associations, info) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "last_heartbeat = excluded.last_heartbeat, expires_at = excluded.expires_at, "
                "open_associations = excluded.open_associations, info = excluded.info",
                (node_id, now, now + ttl, open_associations, json.dumps(dict(info or {}))),
            )

    def nodes(self) -> list[NodeRecord]:
        now = time.time()
        return [
            NodeRecord(
                node_id=r["node_id"],
                last_heartbeat=r["last_heartbeat"],
                expires_at=r["expires_at"],
                open_associations=r["open_associations"],
                info=json.loads(r["info"]),
                alive=r["expires_at"] > now,
            )
            for r in self._read("SELECT * FROM nodes ORDER BY node_id")
        ]

    def lease_owners(self) -> set[str]:
        rows = self._read(
            "SELECT lease_owner FROM instances WHERE lease_owner IS NOT NULL "
            "UNION SELECT pub_owner FROM studies WHERE pub_owner IS NOT NULL "
            "UNION SELECT node_id FROM holds"
        )
        return {r[0] for r in rows}

    def release_node(self, node_id: str) -> int:
        with self._transaction() as c:
            n = c.execute(
                f"UPDATE instances SET {_CLEAR_LEASE} WHERE lease_owner = ?",
                (node_id,),
            ).rowcount
            n += c.execute(
                f"UPDATE studies SET {_CLEAR_PUB} WHERE pub_owner = ?",
                (node_id,),
            ).rowcount
            c.execute("DELETE FROM holds WHERE node_id = ?", (node_id,))
            c.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
        return n

    def hold_study(self, study_instance_uid: str, node_id: str, association_id: str) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO holds (study_instance_uid, node_id, association_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (study_instance_uid, node_id, association_id),
            )

    def release_holds(self, node_id: str, association_id: str) -> None:
        with self._transaction() as c:
            c.execute(
                "DELETE FROM holds WHERE node_id = ? AND association_id = ?",
                (node_id, association_id),
            )

    def held_studies(self) -> set[str]:
        rows = self._read(
            "SELECT DISTINCT h.study_instance_uid FROM holds h JOIN nodes n USING (node_id) "
            "WHERE n.expires_at > ?",
            (time.time(),),
        )
        return {r[0] for r in rows}

    def key_fingerprint(self, fingerprint: str) -> str:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO meta (name, value) VALUES ('key_fingerprint', ?) "
                "ON CONFLICT DO NOTHING",
                (fingerprint,),
            )
            (stored,) = c.execute(
                "SELECT value FROM meta WHERE name = 'key_fingerprint'"
            ).fetchone()
        return str(stored)

    # -- reports ---------------------------------------------------------------------------------
    def status_report(self, study: str | None = None) -> dict[str, Any]:
        where = ""
        params: tuple[str, ...] = ()
        if study:
            where = "WHERE s.study_instance_uid = ? OR s.deid_study_uid = ? "
            params = (study, study)
        sql = (
            "SELECT s.study_instance_uid AS study, s.deid_study_uid, s.first_received_at, "
            "s.last_received_at, s.manifest_version, s.notified_version, s.delivered_at, "
            "i.state AS state, count(*) AS n, sum(i.size) AS bytes, "
            "sum(i.reported_version IS NULL) AS unreported "
            "FROM studies s JOIN instances i USING (study_instance_uid) "
            + where
            + "GROUP BY s.study_instance_uid, i.state ORDER BY s.first_received_at"
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            quarantined = self._conn.execute(
                "SELECT study_instance_uid, sop_instance_uid, deid_sop_uid, version, stage, "
                "reason FROM instances WHERE state = 'quarantined' ORDER BY id"
            ).fetchall()
        studies: dict[str, dict[str, Any]] = {}
        for r in rows:
            s = studies.setdefault(
                r["study"],
                {
                    "study": r["study"],
                    "deid_study": r["deid_study_uid"],
                    "first_received_at": r["first_received_at"],
                    "last_received_at": r["last_received_at"],
                    "manifest_version": r["manifest_version"],
                    "notified_version": r["notified_version"],
                    "delivered_at": r["delivered_at"],
                    "instances": 0,
                    "bytes": 0,
                    "unreported": 0,
                    "instances_by_state": {},
                    "quarantined": [],
                },
            )
            s["instances"] += r["n"]
            s["bytes"] += r["bytes"] or 0
            s["unreported"] += r["unreported"] or 0
            s["instances_by_state"][r["state"]] = r["n"]
        for q in quarantined:
            if q["study_instance_uid"] in studies:
                studies[q["study_instance_uid"]]["quarantined"].append(
                    {
                        "instance": q["sop_instance_uid"],
                        "deid_instance": q["deid_sop_uid"],
                        "version": q["version"],
                        "stage": q["stage"],
                        "reason": q["reason"],
                    }
                )
        for s in studies.values():
            s["state"] = study_state(s)
            if study:
                describe_expectations(self, s)
        return {"studies": list(studies.values())}


def _leased(rec: InstanceRecord, lease: Lease) -> InstanceRecord:
    """The record as it stands once ``lease`` was written."""
    return replace(rec, lease_owner=lease.owner, lease_expires_at=lease.expires_at)
