"""``dicomgate serve --workers N`` (issue 8, item 5): N node processes on one port, each a node of
its own, restarted when one dies, drained together on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from dicomgate.testing import write_ct_study
from tests.helpers import TEST_KEY, send_files, serve_process, wait_for

WORKERS = {"DICOMGATE_WORKERS": "2", "DICOMGATE_STABLE_AFTER": "1"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_workers_share_one_port_and_deliver_once(tmp_path: Path) -> None:
    """Two workers listen on the one port the supervisor picked, each as its own node in the
    shared SQLite store; a study sent over six associations is delivered once, whole; SIGTERM
    drains both and the supervisor exits 0 with no process left behind."""
    paths = write_ct_study(tmp_path / "s", 24, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "data"
    with serve_process(data, env=WORKERS, listeners=2) as node:
        listening = node.events("listening")
        assert len({e["port"] for e in listening}) == 1
        started = node.events("node started")
        ids = sorted(e["node_id"] for e in started)
        assert len(ids) == 2 and ids[0].endswith("-w0") and ids[1].endswith("-w1")
        assert {e["node"] for e in listening} == set(ids)  # every worker line says whose
        for i in range(6):
            assert send_files("127.0.0.1", node.port, paths[i::6]) == [0] * 4
        manifests = data / "delivered"
        assert wait_for(lambda: len(list(manifests.glob("*/manifest-v1.json"))) == 1, 60)
        pids = [int(p) for p in _children(node.proc.pid)]
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(60) == 0
    [manifest] = list(manifests.glob("*/manifest-v1.json"))
    assert not list(manifests.glob("*/manifest-v2.json"))
    body = json.loads(manifest.read_bytes())
    assert len(body["instances"]) == 24
    assert body["study_instance_uid"] != uid
    assert sorted(e["node"] for e in node.events("stopped") if "node" in e) == ids
    assert wait_for(lambda: not any(_alive(p) for p in pids), 10)
    # each worker spooled under its own sub-directory of the one spool
    assert {p.name for p in (data / "spool" / "nodes").iterdir()} == set(ids)


def _children(pid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return out.stdout.split()


def test_a_killed_worker_is_restarted_under_its_node_id(tmp_path: Path) -> None:
    """SIGKILL one worker: the supervisor starts it again under the same node id, and the
    port keeps answering throughout."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    with serve_process(tmp_path / "data", env=WORKERS, listeners=2) as node:
        ids = {e["node_id"] for e in node.events("node started")}
        workers = [
            int(pid)
            for pid in _children(node.proc.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(node.events("node started")) == 3, 30), node.log_text()
        assert any(e["event"] == "worker died, restarting" for e in node.lines)
        assert node.events("node started")[-1]["node_id"] in ids  # the same node, again
        assert send_files("127.0.0.1", node.port, paths) == [0, 0]


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    """Worker 1's ops port (ops_port + 1) is taken: the supervisor stops every worker and
    exits 2; the worker's error names the setting."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ops_base = busy.getsockname()[1] - 1
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMGATE_")}
        result = subprocess.run(
            [sys.executable, "-m", "dicomgate", "serve", "--host", "127.0.0.1", "--port", "0",
             "--workers", "2", "--data-dir", str(tmp_path / "data")],
            env={**clean, "DICOMGATE_SECRET_KEY": TEST_KEY, "DICOMGATE_LOG_FORMAT": "json",
                 "DICOMGATE_OPS_HOST": "127.0.0.1", "DICOMGATE_OPS_PORT": str(ops_base),
                 "DICOMGATE_MIN_FREE_SPACE": "0"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        busy.close()
    assert result.returncode == 2, result.stderr
    assert "DICOMGATE_OPS_PORT" in result.stderr
    assert '"worker could not start"' in result.stderr


def test_a_busy_port_is_reported_once(tmp_path: Path) -> None:
    """The DICOM port is held by another program: the supervisor says so, naming the setting,
    before starting any worker."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMGATE_")}
        result = subprocess.run(
            [sys.executable, "-m", "dicomgate", "serve", "--host", "127.0.0.1", "--port",
             str(busy.getsockname()[1]), "--workers", "2", "--data-dir", str(tmp_path / "d")],
            env={**clean, "DICOMGATE_LOG_FORMAT": "json", "DICOMGATE_OPS_PORT": "0"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        busy.close()
    assert result.returncode == 2
    assert "DICOMGATE_PORT" in result.stderr and '"starting workers"' not in result.stderr


def test_workers_tell_each_other_when_they_receive(tmp_path: Path) -> None:
    """A worker's open associations are published in its slot of the host's shared array, so
    every worker's pipeline knows the host is receiving (receiving comes first host-wide)."""
    from multiprocessing import RawArray

    from pynetdicom import AE

    from dicomgate._host import HostActivity
    from dicomgate.config import load_settings
    from dicomgate.node import Node

    counts = RawArray("i", 2)
    mine, other = HostActivity(counts, 1), HostActivity(counts, 0)
    settings = load_settings(
        data_dir=tmp_path / "d", host="127.0.0.1", port=0, ops_port=0, secret_key=TEST_KEY,
        reuse_port=True, node_id="w1", min_free_space=0,
    )  # fmt: skip
    node = Node(settings, pipeline=False, host=mine)
    _, port = node.start()
    try:
        assert not other.busy() and not node._ingest_busy()
        ae = AE(ae_title="SENDER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMGATE")
        assert assoc.is_established
        assert wait_for(lambda: counts[1] == 1, 5)
        assert other.busy()  # worker 0 sees worker 1 receiving
        assoc.release()
        assert wait_for(lambda: counts[1] == 0, 5) and not other.busy()
        counts[0] = 1  # worker 0 receives: this node's pipeline would yield too
        assert node._ingest_busy()
    finally:
        node.stop(timeout=5)
