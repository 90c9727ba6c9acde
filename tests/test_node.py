"""The node as operators run it: status, shutdown on signals, reconciliation, logs without PHI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner
from pydicom import dcmread
from structlog.testing import capture_logs

import dicomgate
import dicomgate.node as node_module
from dicomgate.cli import main
from dicomgate.config import load_settings
from dicomgate.node import Node, StartupError
from dicomgate.state.sqlite import SqliteStateStore
from dicomgate.testing import CT_PHI, write_ct_study
from tests.helpers import (
    TEST_KEY,
    associate,
    send_files,
    serve_process,
    start_node,
    stop_process,
    storescu,
    wait_for,
)


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
        # every line of the node's log is JSON when not on a terminal; multiprocessing's
        # resource tracker (a helper process sharing the node's stderr) may add its own
        # plain-text "leaked semaphore" warning when the pool goes down at the stop
        if "resource_tracker" not in line and "warnings.warn(" not in line:
            json.loads(line)


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
    # the row lost with the process (SQLite fault injection: no interface deletes rows)
    db.execute("DELETE FROM instances WHERE sop_instance_uid = ? AND version = ?", lost_row.key)
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
        assert report.quarantined == 1
        assert n.node.metrics.registry.get_sample_value(
            "dicomgate_quarantined_total", {"rule": "spool"}
        ) == 1  # fmt: skip
        assert n.incoming_files == []


def test_reconcile_never_attaches_an_unacknowledged_copy(tmp_path: Path) -> None:
    """A row whose file is gone and, under its name, a file of another size — what a crash
    leaves between spooling a re-send with changed content and hearing from the store that
    the name was taken (never acknowledged): the file is dropped, not attached to the row."""
    [a] = write_ct_study(tmp_path / "a", 1, rows=16, columns=16)
    ds = dcmread(a)
    ds.ImageComments = "a changed re-send, never acknowledged"
    b = tmp_path / "b.dcm"
    ds.save_as(b, enforce_file_format=True)
    data = tmp_path / "data"
    with start_node(data) as n:
        assert send_files(n.host, n.port, [a]) == [0]
        assert n.node.state is not None
        [v1] = n.node.state.instances()
        assert v1.spool_path is not None
        n.node.state.set_spool_path(v1.key, None)  # its file lost
    spooled = data / "spool" / str(v1.spool_path)
    spooled.write_bytes(b.read_bytes())  # the leftover under the same name
    assert spooled.stat().st_size != v1.size
    with start_node(data) as n:
        assert n.node.reconcile_report is not None
        assert n.node.reconcile_report.rows_rebuilt == 0
        assert n.node.reconcile_report.stale_removed == 1
        assert n.node.state is not None
        assert n.node.state.get(v1.key).spool_path is None  # type: ignore[union-attr]
        assert not spooled.exists()


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


# -- start-up says what it is, or which setting stops it (issue 11, items 9 and 11) ---------------
def _serve(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int | None, list[dict[str, Any]], str]:
    """Run ``dicomgate serve`` (JSON logs, only the given DICOMGATE_* variables) until it has
    started or exited; stop it; return (exit status if it exited by itself, events, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DICOMGATE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomgate", "serve", "--host", "127.0.0.1", "--data-dir",
         str(data_dir), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, "DICOMGATE_LOG_FORMAT": "json", "DICOMGATE_MIN_FREE_SPACE": "0",
             "DICOMGATE_OPS_PORT": "0", "DICOMGATE_WORKERS": "1", **(env or {})},
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def read(stream: IO[str]) -> None:
        for line in stream:
            lines.append(line)
            if '"node started"' in line:
                started.set()
        started.set()  # EOF: the node exited

    reader = threading.Thread(target=read, args=(proc.stderr,), daemon=True)
    reader.start()
    started.wait(timeout)
    try:
        code: int | None = proc.wait(0.5)  # it exited by itself (the error cases)
    except subprocess.TimeoutExpired:
        code = None
        stop_process(proc)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group (pool helpers)
    reader.join(10)
    proc.stderr.close()
    # Only the log's lines: multiprocessing's resource tracker may add a plain-text warning
    # when a node is stopped right after starting its pool (not these tests' subject).
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return code, events, "".join(lines)


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_start_line_says_what_the_node_is(tmp_path: Path) -> None:
    """One ``node started`` line: version, bound addresses, data directory, destination
    without credentials, stable_after, and the key: generated (with the file to back up),
    then loaded from the data directory at the next start."""
    data = tmp_path / "data"
    env = {
        "DICOMGATE_STABLE_AFTER": "7",
        "DICOMGATE_DESTINATION": "s3://AKIDEXAMPLE:s3cr3t@bucket/prefix",
        "DICOMGATE_S3_ENDPOINT_URL": "http://127.0.0.1:9",  # never contacted at start-up
        "DICOMGATE_AE_TITEL": "GATE",
    }
    code, events, _ = _serve(data, "--port", "0", env=env)
    assert code is None, "the node should have started"
    [warning] = [e for e in events if e["level"] == "warning"]
    assert "DICOMGATE_AE_TITEL is ignored; did you mean DICOMGATE_AE_TITLE?" in warning["event"]
    [started] = [e for e in events if e["event"] == "node started"]
    [listening] = [e for e in events if e["event"] == "listening"]
    [ops] = [e for e in events if e["event"] == "ops endpoint listening"]
    assert started["version"] == dicomgate.__version__
    assert started["listen"] == f"127.0.0.1:{listening['port']}"
    assert started["ops"] == f"127.0.0.1:{ops['port']}"
    assert started["data_dir"] == str(data.absolute())
    assert started["destination"] == "s3://bucket/prefix"
    assert "s3cr3t" not in json.dumps(started) and "AKIDEXAMPLE" not in json.dumps(started)
    assert started["stable_after"] == 7
    assert started["secret_key"].startswith("generated: back this file up")
    assert started["secret_key_path"] == str((data / "secret.key").absolute())

    code, events, _ = _serve(data, "--port", "0", env={"DICOMGATE_OPS_ENABLED": "false"})
    [started] = [e for e in events if e["event"] == "node started"]
    assert started["secret_key"] == "loaded from the data directory"
    assert started["ops"] == "disabled"
    assert started["destination"] == (data / "delivered").resolve().as_uri()


def test_busy_dicom_port_names_the_setting(tmp_path: Path) -> None:
    """A taken DICOM port: one error naming the address and --port/DICOMGATE_PORT, exit 2."""
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        code, events, text = _serve(tmp_path / "d", "--port", str(port))
    assert code == 2
    [error] = [e for e in events if e["level"] == "error"]
    assert error["event"] == "cannot start"
    assert f"127.0.0.1:{port}" in error["error"]
    assert "--port" in error["error"] and "DICOMGATE_PORT" in error["error"]
    assert "address already in use" in error["error"]
    assert "Traceback" not in text
    assert not [e for e in events if e["event"] in ("listening", "node started")]


def test_busy_ops_port_is_reported_before_any_listening_line(tmp_path: Path) -> None:
    """A taken ops port is the one error, naming DICOMGATE_OPS_PORT; no ``listening`` line for
    the DICOM port precedes it (that pointed operators at the wrong port)."""
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        code, events, text = _serve(
            tmp_path / "d", "--port", "0", env={"DICOMGATE_OPS_PORT": str(port)}
        )
    assert code == 2
    [error] = [e for e in events if e["level"] == "error"]
    assert f"127.0.0.1:{port}" in error["error"] and "DICOMGATE_OPS_PORT" in error["error"]
    assert not [e for e in events if "listening" in e["event"]]
    assert "Traceback" not in text


def test_unusable_data_dir_names_the_setting(tmp_path: Path) -> None:
    """A data directory that cannot be created (here: under a regular file; root ignores
    permissions) is one error naming it and --data-dir/DICOMGATE_DATA_DIR, exit 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = blocker / "data"
    code, events, text = _serve(bad, "--port", "0")
    assert code == 2
    [error] = [e for e in events if e["level"] == "error"]
    assert str(bad) in error["error"] and "not a directory" in error["error"]
    assert "--data-dir" in error["error"] and "DICOMGATE_DATA_DIR" in error["error"]
    assert "Traceback" not in text


# -- the node in the state store (issue 8) ---------------------------------------------------------
@contextlib.contextmanager
def _node(data: Path, **node_kw: Any) -> Any:
    """A node (SCP only) with the test key unless ``secret_key`` is given; stopped afterwards."""
    settings = {"secret_key": TEST_KEY, **node_kw.pop("settings", {})}
    node = Node(
        load_settings(
            data_dir=data, host="127.0.0.1", port=0, ops_port=0, min_free_space=0, **settings
        ),
        pipeline=False,
        **node_kw,
    )
    address = node.start()
    try:
        yield node, address
    finally:
        node.stop(timeout=5)


def test_heartbeat_and_dead_nodes_work_released(tmp_path: Path) -> None:
    """A node beats while it runs, releases a dead node's claims, and leaves when it stops."""
    data = tmp_path / "data"
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    with _node(data, heartbeat_ttl=0.6) as (node, (host, port)):
        assert node.state is not None
        assert send_files(host, port, [path]) == [0]
        [me] = node.state.nodes()
        assert me.node_id == node.settings.node_id and me.alive and me.info["ae_title"]
        first_beat = me.last_heartbeat
        with SqliteStateStore.open(data / "state.sqlite3") as other:  # a second node
            other.heartbeat("ghost", ttl=0.1)
            [claim] = other.claim_work("ghost", limit=1)
            assert wait_for(lambda: other.get(claim.record.key).lease_owner is None, 5)  # type: ignore[union-attr]
            assert [n.node_id for n in other.nodes()] == [me.node_id]
            assert other.nodes()[0].last_heartbeat > first_beat
            # status shows the node and what it has claimed (the test's other handle claims)
            assert other.claim_work(me.node_id, limit=1)
            shown = CliRunner().invoke(main, ["status", "--json", "--data-dir", str(data)])
            [listed] = json.loads(shown.output)["nodes"]
            assert (listed["node_id"], listed["alive"], listed["claimed"]) == (
                me.node_id,
                True,
                1,
            )
    with SqliteStateStore.open(data / "state.sqlite3") as store:
        assert store.nodes() == [] and store.lease_owners() == set()


def test_another_key_is_refused_on_a_shared_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store keeps the first key's fingerprint; on a shared store another key, or a key
    each node generated for itself, stops the node naming the settings."""
    data = tmp_path / "data"
    with _node(data):
        pass
    with capture_logs() as logs, _node(data, settings={"secret_key": "x" * 40}):
        pass  # one node on its own: warned, not refused
    assert any("key differs" in e["event"] for e in logs)
    monkeypatch.setattr(node_module, "is_shared", lambda settings: True)
    with (
        pytest.raises(StartupError, match="DICOMGATE_SECRET_KEY"),
        _node(data, settings={"secret_key": "x" * 40}),
    ):
        pass
    with (
        pytest.raises(StartupError, match="explicit pseudonymization key"),
        _node(tmp_path / "other", settings={"secret_key": None}),
    ):
        pass
    with _node(data):  # the first key is still welcome
        pass
