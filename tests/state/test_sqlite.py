"""What only the SQLite backend must show: a store of the single-node schema (1, integer ids)
migrates in place on open without losing a row, and several processes opening one new store at
once all find it ready (the migration is one IMMEDIATE transaction)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from dicomgate.state import InstanceKey, InstanceState, StateError
from dicomgate.state.sqlite import SqliteStateStore
from tests.state.test_contract import record

# dicomgate's schema 1, verbatim (as stores written before issue 8 have it)
SCHEMA_1 = """
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

UID = "1.2.826.0.1.3680043.10.54.7"
STUDY = "1.2.826.0.1.3680043.10.54.1"


def _row(version: int, state: str, reported: int | None) -> tuple[object, ...]:
    return (
        UID, version, STUDY, STUDY + ".1", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1",
        100, f"instances/{UID}~v{version}.dcm", "CT", "127.0.0.1", "a1", state,
        1000.0 + version, 1000.0 + version, reported,
    )  # fmt: skip


def _schema_1_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("PRAGMA user_version=1")
    db.executemany(
        "INSERT INTO instances (sop_instance_uid, version, study_instance_uid, "
        "series_instance_uid, sop_class_uid, transfer_syntax_uid, size, spool_path, calling_ae, "
        "peer_address, association_id, state, received_at, updated_at, reported_version) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [_row(1, "delivered", 1), _row(2, "uploaded", None), _row(3, "received", None)],
    )
    db.execute(
        "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at, "
        "deid_study_uid, manifest_version, notified_version) "
        "VALUES (?, 1001, 1003, '2.25.9', 1, 1)",
        (STUDY,),
    )
    db.commit()
    db.close()


def test_schema_1_store_migrates_without_losing_rows(tmp_path: Path) -> None:
    """Every row and study survives; the stale v2 settles as superseded; work can be claimed."""
    path = tmp_path / "state.sqlite3"
    _schema_1_store(path)
    with pytest.raises(StateError, match="start the node once to migrate"):
        SqliteStateStore.open(path, readonly=True)
    with SqliteStateStore.open(path) as store:
        rows = store.versions(UID)
        assert [(r.version, r.state, r.reported_version) for r in rows] == [
            (1, InstanceState.DELIVERED, 1),
            (2, InstanceState.SUPERSEDED, 0),  # issue 11, item 1: settled once, at start-up
            (3, InstanceState.RECEIVED, None),
        ]
        assert all(r.node_id == "" and r.lease_owner is None for r in rows)
        study = store.study("2.25.9")
        assert study is not None and (study.manifest_version, study.notified_version) == (1, 1)
        [claim] = store.claim_work("n1", limit=5)
        assert claim.record.key == InstanceKey(UID, 3)
        assert store.key_fingerprint("f") == "f"
    with SqliteStateStore.open(path, readonly=True) as store:  # migrated: readable now
        assert len(store.instances()) == 3
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == 4


def _open_and_admit(path: str, i: int) -> int:  # pragma: no cover - a spawned process
    from dataclasses import replace

    from tests.state.test_contract import record

    with SqliteStateStore.open(Path(path)) as store:
        return store.admit(replace(record(), sop_instance_uid=f"{UID}.{i}")).record.version


def test_schema_3_store_gets_the_arrival_ordered_state_index(tmp_path: Path) -> None:
    """Schema 4 replaces the state index by (state, received_at): oldest_undelivered() is one
    index lookup per state; a schema-3 store is migrated in place, its rows kept."""
    path = tmp_path / "state.sqlite3"
    with SqliteStateStore.open(path) as store:
        rec = store.admit(record()).record
    db = sqlite3.connect(path)
    db.execute("DROP INDEX instances_state_received")
    db.execute("CREATE INDEX instances_state ON instances (state)")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    with SqliteStateStore.open(path) as store:
        assert store.get(rec.key) == rec
        assert store.oldest_undelivered() == rec.received_at
    db = sqlite3.connect(path)
    indexes = {row[1] for row in db.execute("PRAGMA index_list(instances)")}
    assert "instances_state_received" in indexes and "instances_state" not in indexes
    plan = " ".join(
        str(row[3])
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT min(received_at) FROM instances WHERE state = 'received'"
        )
    )
    assert "instances_state_received" in plan
    assert db.execute("PRAGMA user_version").fetchone() == (4,)


def test_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """Three processes creating one store at the same moment all get it, schema and all."""
    path = str(tmp_path / "state.sqlite3")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert pool.starmap(_open_and_admit, [(path, i) for i in range(3)]) == [1, 1, 1]
    with SqliteStateStore.open(Path(path)) as store:
        assert len(store.instances()) == 3
