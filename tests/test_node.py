"""The node as operators run it: status, shutdown on signals, reconciliation, logs without PHI."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.testing import CT_PHI, write_ct_study
from tests.helpers import associate, send_files, serve_process, start_node, storescu


def _status(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", "status", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_reports_studies_and_counts(tmp_path: Path, dcmtk: dict[str, str]) -> None:
    """After storescu sends a study, ``status --json`` shows one study with every instance."""
    paths = write_ct_study(tmp_path / "study", 25, rows=32, columns=32)
    with serve_process(tmp_path / "data") as node:
        storescu(dcmtk, node.port, tmp_path / "study")
        live = _status(tmp_path / "data", "--json")  # readable while the node runs
    assert live.returncode == 0, live.stderr
    [study] = json.loads(live.stdout)["studies"]
    assert study["study"] == str(dcmread(paths[0]).StudyInstanceUID)
    assert study["instances"] == 25
    assert sum(study["instances_by_state"].values()) == 25

    text = _status(tmp_path / "data")
    assert "25 instances" in text.stdout


def test_status_without_state(tmp_path: Path) -> None:
    """``status`` on an empty data directory says so and exits 1."""
    result = _status(tmp_path / "empty")
    assert result.returncode == 1
    assert "no state store" in result.stderr


def test_sigterm_lets_open_association_finish(tmp_path: Path) -> None:
    """On SIGTERM the node stops accepting, lets an open association finish, then exits 0."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    with serve_process(tmp_path / "data") as node:
        from pynetdicom import AE, _config

        ae = AE(ae_title="LATE")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMGATE")
        assert assoc.is_established
        node.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert node.proc.poll() is None, "the node must wait for the open association"
        refused = associate("127.0.0.1", node.port)
        assert not refused.is_established, "no new associations after SIGTERM"
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            assert assoc.send_c_store(path).Status == 0
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
        assert node.proc.wait(15) == 0
        assert node.events("stopped")


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """A second SIGTERM while waiting for associations exits immediately."""
    with serve_process(tmp_path / "data", env={"DICOMGATE_SHUTDOWN_TIMEOUT": "60"}) as node:
        assoc = associate("127.0.0.1", node.port)
        assert assoc.is_established
        node.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert node.proc.poll() is None
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(5) == 1
        assoc.abort()


def test_shutdown_timeout_aborts_lingering_association(tmp_path: Path) -> None:
    """An association still open after shutdown_timeout is aborted and the node exits."""
    with serve_process(tmp_path / "data", env={"DICOMGATE_SHUTDOWN_TIMEOUT": "1"}) as node:
        assoc = associate("127.0.0.1", node.port)
        assert assoc.is_established
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(15) == 0
        assert node.events("aborting associations still open at shutdown")
        assoc.abort()


def test_logs_carry_no_patient_values(tmp_path: Path, dcmtk: dict[str, str]) -> None:
    """JSON logs of a whole store session hold no patient value and no original UID."""
    paths = write_ct_study(tmp_path / "study", 5, rows=16, columns=16)
    ds = dcmread(paths[0])
    bad = tmp_path / "bad.dcm"
    del ds.SeriesInstanceUID  # a refusal is logged too
    ds.save_as(bad, enforce_file_format=True)
    with serve_process(tmp_path / "data", "--log-level", "debug") as node:
        storescu(dcmtk, node.port, tmp_path / "study")
        assert send_files("127.0.0.1", node.port, [paths[0], bad]) == [0, 0xC001]
    log = node.log_text()
    assert node.events("instance refused") and node.events("duplicate instance, already stored")
    for value in CT_PHI.values():
        for part in {value, *value.split("^")}:
            assert part not in log, f"{part!r} leaked into the log"
    for p in paths:
        d = dcmread(p, stop_before_pixels=True)
        for uid in (d.SOPInstanceUID, d.StudyInstanceUID, d.SeriesInstanceUID):
            assert str(uid) not in log
    for line in log.splitlines():
        json.loads(line)  # every line is JSON when not on a terminal


def test_reconcile_after_crash_leftovers(tmp_path: Path) -> None:
    """Start-up removes half-received files, rebuilds lost rows, quarantines rows without files."""
    paths = write_ct_study(tmp_path / "s", 3, rows=16, columns=16)
    data = tmp_path / "data"
    with start_node(data) as n:
        assert send_files(n.host, n.port, paths) == [0, 0, 0]
        assert n.node.state is not None
        records = n.node.state.instances()
    lost_row, lost_file = records[0], records[1]
    db = sqlite3.connect(data / "state.sqlite3")
    db.execute("DELETE FROM instances WHERE id = ?", (lost_row.id,))
    db.commit()
    db.close()
    (data / "spool" / str(lost_file.spool_path)).unlink()
    (data / "spool" / "incoming" / "tmpabc123.dcm").write_bytes(b"half a dataset")

    with start_node(data) as n:
        report = n.node.reconcile_report
        assert report is not None
        assert (report.incoming_removed, report.rows_rebuilt, report.rows_missing_file) == (1, 1, 1)
        assert n.node.state is not None
        rebuilt = n.node.state.versions(lost_row.sop_instance_uid)
        assert len(rebuilt) == 1 and rebuilt[0].study_instance_uid == lost_row.study_instance_uid
        [missing] = n.node.state.versions(lost_file.sop_instance_uid)
        assert missing.state == "quarantined"
        assert missing.reason == "spool file missing at start-up"
        assert n.incoming_files == []


def test_damaged_spool_file_is_set_aside(tmp_path: Path) -> None:
    """A spool file without a row that no longer parses is moved to spool/damaged."""
    data = tmp_path / "data"
    with start_node(data):
        pass
    (data / "spool" / "instances" / "1.2.3~v1.dcm").write_bytes(b"\x00" * 10)
    with start_node(data) as n:
        assert n.node.reconcile_report is not None
        assert n.node.reconcile_report.files_unreadable == ["1.2.3~v1.dcm"]
        assert (data / "spool" / "damaged" / "1.2.3~v1.dcm").exists()


@pytest.mark.parametrize("flag", ["--host", "--port", "--ae-title", "--data-dir"])
def test_serve_flags_exist(flag: str) -> None:
    """``dicomgate serve`` documents the flags operators' scripts use."""
    result = subprocess.run(
        [sys.executable, "-m", "dicomgate", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert flag in result.stdout


def test_reconcile_stale_copy_of_purged_instance(tmp_path: Path) -> None:
    """A spool file whose row says "purged" (a lost unlink) is removed, not re-inserted."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    data = tmp_path / "data"
    with start_node(data) as n:
        assert send_files(n.host, n.port, [path]) == [0]
        assert n.node.state is not None
        [rec] = n.node.state.instances()
    stale = data / "spool" / str(rec.spool_path)
    kept = stale.read_bytes()
    db = sqlite3.connect(data / "state.sqlite3")
    db.execute("UPDATE instances SET state = 'delivered', spool_path = NULL")
    db.commit()
    db.close()
    with start_node(data) as n:
        assert n.node.reconcile_report is not None
        assert n.node.reconcile_report.stale_removed == 1
        assert not stale.exists()
        assert n.node.state is not None and len(n.node.state.instances()) == 1
    # the same, for an instance still waiting for the pipeline: the file is re-attached
    stale.write_bytes(kept)
    db = sqlite3.connect(data / "state.sqlite3")
    db.execute("UPDATE instances SET state = 'received', spool_path = NULL")
    db.commit()
    db.close()
    with start_node(data) as n:
        assert n.node.state is not None
        [again] = n.node.state.instances()
        assert again.spool_path == rec.spool_path and stale.exists()
