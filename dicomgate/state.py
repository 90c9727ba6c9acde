"""The state store: what the node holds, per instance and per study (SQLite, WAL).

Every instance the node acknowledged has one row per version; its ``state`` moves
``received → processed → uploaded → delivered`` or ends ``quarantined`` with a reason.

Durability: the spool file is fsync'd (file and directory) *before* its row is written, and
the start-up reconciliation rebuilds a row from any spool file that lacks one.  The spool file is
therefore the durable record of an acknowledged instance, and the database runs with
``synchronous=NORMAL`` — in WAL mode that survives any process crash (SIGKILL included); a power
loss may lose the newest rows, which reconciliation restores from their files.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

__all__ = ["InstanceRecord", "InstanceState", "StateStore", "StudyProgress", "StudyRecord"]


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


_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
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
    -- filled by the pipeline (pseudonymized values only)
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
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid);
CREATE INDEX IF NOT EXISTS instances_state ON instances (state);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid  TEXT PRIMARY KEY,
    first_received_at   REAL NOT NULL,
    last_received_at    REAL NOT NULL,
    deid_study_uid      TEXT,
    manifest_version    INTEGER NOT NULL DEFAULT 0,
    notified_version    INTEGER NOT NULL DEFAULT 0,
    delivered_at        REAL
);
CREATE INDEX IF NOT EXISTS studies_deid ON studies (deid_study_uid);
CREATE INDEX IF NOT EXISTS instances_unreported ON instances (study_instance_uid)
    WHERE reported_version IS NULL;
"""


_SUPERSEDE_STALE = (
    "UPDATE instances SET state = 'superseded', reported_version = 0, updated_at = ? "
    "WHERE reported_version IS NULL AND state IN ('uploaded', 'quarantined') "
    "AND EXISTS (SELECT 1 FROM instances j WHERE j.sop_instance_uid = instances.sop_instance_uid "
    "AND j.version > instances.version)"
)


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
class InstanceRecord:
    """One version of one received instance, as the state store keeps it."""

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
    id: int | None = None
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
    reported_version: int | None = None


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
    "id, sop_instance_uid, version, study_instance_uid, series_instance_uid, sop_class_uid, "
    "transfer_syntax_uid, size, sha256, spool_path, calling_ae, peer_address, association_id, "
    "state, reason, received_at, " + ", ".join(_PIPELINE_FIELDS)
)


def _record(row: sqlite3.Row) -> InstanceRecord:
    return InstanceRecord(
        id=row["id"],
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
        **{name: row[name] for name in _PIPELINE_FIELDS},
    )


class StateStore:
    """SQLite-backed state, safe to share between association threads and the pipeline."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Self:
        if readonly:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        store = cls(conn)
        if not readonly:
            store._migrate()
        return store

    def _migrate(self) -> None:
        (version,) = self._conn.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise RuntimeError(
                f"state store schema {version} is newer than this dicomgate ({_SCHEMA_VERSION})"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        # Stores written before versions were superseded on arrival hold stale rows that
        # would keep their studies republishing: settle them once, at start-up.
        with self.transaction() as c:
            self._supersede_stale(c, None)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction under the store's lock (one writer at a time)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- instances ---------------------------------------------------------------------------
    def latest_version(self, sop_instance_uid: str) -> InstanceRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE sop_instance_uid = ? "  # noqa: S608
                "ORDER BY version DESC LIMIT 1",
                (sop_instance_uid,),
            ).fetchone()
        return _record(row) if row else None

    def versions(self, sop_instance_uid: str) -> list[InstanceRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE sop_instance_uid = ? "  # noqa: S608
                "ORDER BY version",
                (sop_instance_uid,),
            ).fetchall()
        return [_record(r) for r in rows]

    def insert_instance(self, rec: InstanceRecord) -> int:
        """Insert one instance row (and touch its study) in one transaction; return its id."""
        now = time.time()
        received_at = rec.received_at or now
        params = (
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
        )

        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO instances (sop_instance_uid, version, study_instance_uid, "
                "series_instance_uid, sop_class_uid, transfer_syntax_uid, size, sha256, "
                "spool_path, calling_ae, peer_address, association_id, state, reason, "
                "received_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                params,
            )
            c.execute(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at) "
                "VALUES (?, ?, ?) ON CONFLICT (study_instance_uid) DO UPDATE SET "
                "last_received_at = max(last_received_at, excluded.last_received_at)",
                (rec.study_instance_uid, received_at, received_at),
            )
            if rec.version > 1:
                self._supersede_stale(c, rec.sop_instance_uid)
            return int(cur.lastrowid or 0)

    def _supersede_stale(self, c: sqlite3.Connection, sop_instance_uid: str | None) -> None:
        """Older versions that finished (uploaded or quarantined) but were never reported
        become ``superseded``: the newest version is the one a manifest lists, so without this
        they would stay "unreported" and re-trigger their study forever. Runs inside the
        transaction that made them stale (a newer version admitted, an old one finishing)."""
        now = time.time()
        if sop_instance_uid is None:
            c.execute(_SUPERSEDE_STALE, (now,))
        else:  # one UID: the (sop_instance_uid, version) index keeps this cheap per upload
            c.execute(_SUPERSEDE_STALE + " AND sop_instance_uid = ?", (now, sop_instance_uid))

    def _update(self, row_id: int, **columns: object) -> None:
        """Set ``columns`` of one instance row (and its ``updated_at``) in one transaction."""
        sets = ", ".join(f"{name} = ?" for name in columns)
        with self.transaction() as c:
            c.execute(
                f"UPDATE instances SET {sets}, updated_at = ? WHERE id = ?",  # noqa: S608 - names are ours
                (*columns.values(), time.time(), row_id),
            )

    def set_sha256(self, row_id: int, sha256: str) -> None:
        self._update(row_id, sha256=sha256)

    def set_state(self, row_id: int, state: InstanceState, *, reason: str | None = None) -> None:
        self._update(row_id, state=str(state), reason=reason)

    def set_spool_path(self, row_id: int, relative: str | None) -> None:
        """Point a row at its spool file (``None``: the raw copy is gone, purged)."""
        self._update(row_id, spool_path=relative)

    def spooled_paths(self) -> dict[str, InstanceRecord]:
        """Every row that still points at a spool file, keyed by its relative path."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE spool_path IS NOT NULL"  # noqa: S608
            ).fetchall()
        return {r["spool_path"]: _record(r) for r in rows}

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
        sql = f"SELECT {_COLUMNS} FROM instances"  # noqa: S608
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [_record(r) for r in rows]

    # -- pipeline ------------------------------------------------------------------------------
    def work_to_do(self, *, limit: int, exclude: Collection[int] = ()) -> list[InstanceRecord]:
        """Instances still to carry: ``received`` (to process) or ``processed`` (to upload)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances "  # noqa: S608
                "WHERE state IN ('received', 'processed') ORDER BY id LIMIT ?",
                (limit + len(exclude),),
            ).fetchall()
        return [_record(r) for r in rows if r["id"] not in exclude][:limit]

    def backlog(self) -> int:
        """Instances received or processed, not yet uploaded or quarantined."""
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT count(*) FROM instances WHERE state IN ('received', 'processed')"
            ).fetchone()
        return int(n)

    def get(self, row_id: int) -> InstanceRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE id = ?",  # noqa: S608
                (row_id,),
            ).fetchone()
        return _record(row) if row else None

    def record_processed(self, row_id: int, study_instance_uid: str, **fields: Any) -> None:
        """Store the de-identified identity of an instance and move it to ``processed``."""
        unknown = set(fields) - set(_PIPELINE_FIELDS) - {"sha256"}
        if unknown:
            raise ValueError(f"not pipeline fields: {sorted(unknown)}")
        self._update(row_id, state="processed", reason=None, **fields)
        if fields.get("deid_study_uid"):
            self.set_study_pseudonym(study_instance_uid, fields["deid_study_uid"])

    def _finish(self, row_id: int, **columns: object) -> None:
        """Move one row to a terminal state; if a newer version of it exists by then (it
        arrived while this one was being carried), the row ends ``superseded`` at once."""
        sets = ", ".join(f"{name} = ?" for name in columns)
        with self.transaction() as c:
            row = c.execute(
                f"UPDATE instances SET {sets}, updated_at = ? WHERE id = ? "  # noqa: S608 - names are ours
                "RETURNING sop_instance_uid",
                (*columns.values(), time.time(), row_id),
            ).fetchone()
            if row is not None:
                self._supersede_stale(c, row[0])

    def record_uploaded(self, row_id: int, object_key: str) -> None:
        self._finish(row_id, state="uploaded", object_key=object_key, stage=None, reason=None)

    def record_retry(self, row_id: int, *, stage: str, reason: str) -> None:
        """Count a failed attempt that will be retried."""
        with self.transaction() as c:
            c.execute(
                "UPDATE instances SET attempts = attempts + 1, stage = ?, reason = ?, "
                "updated_at = ? WHERE id = ?",
                (stage, reason, time.time(), row_id),
            )

    def quarantine(
        self,
        row_id: int,
        *,
        stage: str,
        reason: str,
        deid_sop_uid: str | None = None,
        deid_series_uid: str | None = None,
    ) -> None:
        """Hold an instance back; the pseudonymized UIDs name it in reports."""
        self._finish(
            row_id,
            state="quarantined",
            stage=stage,
            reason=reason,
            deid_sop_uid=deid_sop_uid,
            deid_series_uid=deid_series_uid,
        )

    def studies_to_report(self) -> list[StudyProgress]:
        """Studies holding instances not yet listed in a manifest, with their progress."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT s.study_instance_uid, s.last_received_at, s.first_received_at, "
                "s.manifest_version, s.deid_study_uid, "
                "sum(i.state IN ('received', 'processed')) AS pending, "
                "sum(i.reported_version IS NULL AND i.state IN ('uploaded', 'quarantined')) "
                "AS unreported "
                "FROM studies s JOIN instances i USING (study_instance_uid) "
                "WHERE s.study_instance_uid IN "
                "(SELECT study_instance_uid FROM instances WHERE reported_version IS NULL) "
                "GROUP BY s.study_instance_uid"
            ).fetchall()
        return [
            StudyProgress(
                study_instance_uid=r["study_instance_uid"],
                first_received_at=r["first_received_at"],
                last_received_at=r["last_received_at"],
                manifest_version=r["manifest_version"],
                deid_study_uid=r["deid_study_uid"],
                pending=r["pending"] or 0,
                unreported=r["unreported"] or 0,
            )
            for r in rows
        ]

    def manifest_rows(self, study_instance_uid: str) -> list[InstanceRecord]:
        """The newest version of every instance of a study (what a manifest lists)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances i WHERE study_instance_uid = ? "  # noqa: S608
                "AND version = (SELECT max(version) FROM instances j "
                "WHERE j.sop_instance_uid = i.sop_instance_uid) ORDER BY id",
                (study_instance_uid,),
            ).fetchall()
        return [_record(r) for r in rows]

    def mark_reported(
        self, study_instance_uid: str, version: int, row_ids: Collection[int]
    ) -> None:
        """After manifest ``version`` is published: the rows it lists are reported (uploaded
        ones become delivered). Rows that finished while it was being published are not."""
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                "UPDATE instances SET reported_version = ?, updated_at = ?, "
                "state = CASE state WHEN 'uploaded' THEN 'delivered' ELSE state END "
                "WHERE id = ? AND reported_version IS NULL",
                [(version, now, row_id) for row_id in row_ids],
            )
            c.execute(
                "UPDATE studies SET manifest_version = ?, delivered_at = ? "
                "WHERE study_instance_uid = ?",
                (version, now, study_instance_uid),
            )

    def set_study_pseudonym(self, study_instance_uid: str, deid_study_uid: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE studies SET deid_study_uid = coalesce(deid_study_uid, ?) "
                "WHERE study_instance_uid = ?",
                (deid_study_uid, study_instance_uid),
            )

    def unnotified(self) -> list[StudyRecord]:
        """Studies whose latest manifest version has not been announced yet."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT study_instance_uid FROM studies WHERE notified_version < manifest_version"
            ).fetchall()
        return [r for r in (self.study(row[0]) for row in rows) if r is not None]

    def is_superseded(self, rec: InstanceRecord) -> bool:
        """Whether a newer version of this SOP Instance UID exists."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ? AND version > ? LIMIT 1",
                (rec.sop_instance_uid, rec.version),
            ).fetchone()
        return row is not None

    def supersede(self, row_id: int) -> None:
        """An older version replaced before upload: never listed in a manifest."""
        self._update(row_id, state="superseded", reported_version=0)

    def requeue(self, row_id: int, *, reason: str) -> None:
        """Send an instance back to be processed again from its raw copy."""
        self._update(row_id, state="received", stage="upload", reason=reason)

    def mark_notified(self, study_instance_uid: str, version: int) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE studies SET notified_version = max(notified_version, ?) "
                "WHERE study_instance_uid = ?",
                (version, study_instance_uid),
            )

    def study(self, uid: str) -> StudyRecord | None:
        """A study by its original or its pseudonymized Study Instance UID."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM studies WHERE study_instance_uid = ? OR deid_study_uid = ?",
                (uid, uid),
            ).fetchone()
        if row is None:
            return None
        return StudyRecord(
            study_instance_uid=row["study_instance_uid"],
            deid_study_uid=row["deid_study_uid"],
            first_received_at=row["first_received_at"],
            last_received_at=row["last_received_at"],
            manifest_version=row["manifest_version"],
            notified_version=row["notified_version"],
            delivered_at=row["delivered_at"],
        )

    def purgeable(self, *, delivered_before: float) -> list[InstanceRecord]:
        """Delivered instances whose raw spool copy may go."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM instances "  # noqa: S608
                "WHERE state IN ('delivered', 'superseded') "
                "AND spool_path IS NOT NULL AND updated_at <= ?",
                (delivered_before,),
            ).fetchall()
        return [_record(r) for r in rows]

    # -- reports -------------------------------------------------------------------------------
    def status_report(self, study: str | None = None) -> dict[str, Any]:
        """Studies with instance counts by state and quarantine reasons (for ``status``).

        ``study`` may be the original or the pseudonymized Study Instance UID.
        """
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
            rows = self._conn.execute(
                sql,
                params,
            ).fetchall()
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
            s["state"] = _study_state(s)
        return {"studies": list(studies.values())}


def _study_state(study: dict[str, Any]) -> str:
    """receiving → processing → delivered; "quarantined" when nothing could be delivered."""
    by_state = study["instances_by_state"]
    if by_state.get(str(InstanceState.RECEIVED)) or by_state.get(str(InstanceState.PROCESSED)):
        return "processing"
    if study["unreported"]:
        return "completing"  # uploaded, waiting for stable_after or an open association
    if by_state.get(str(InstanceState.DELIVERED)):
        return "delivered"
    return "quarantined"
