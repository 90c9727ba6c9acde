"""Promise 1 under SIGKILL: every instance the sender saw acknowledged survives a crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.state.sqlite import SqliteStateStore
from dicomgate.testing import write_ct_study
from tests.helpers import dataset_bytes, send_files, serve_process, wait_for


@pytest.mark.slow
def test_sigkill_mid_study_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    """SIGKILL part-way through a study; after restart every 0x0000'd instance is intact."""
    paths = write_ct_study(tmp_path / "study", 200, rows=128, columns=128)
    acknowledged: list[Path] = []
    lock = threading.Lock()

    def on_status(path: Path, status: int | None) -> None:
        if status == 0x0000:
            with lock:
                acknowledged.append(path)

    data_dir = tmp_path / "data"
    errors: list[BaseException] = []
    with serve_process(data_dir) as node:

        def send() -> None:
            try:
                send_files("127.0.0.1", node.port, paths, on_status=on_status)
            except BaseException as exc:  # the association dies with the node
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert wait_for(lambda: len(acknowledged) >= 60, timeout=60)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        sender.join(30)
    with lock:
        acked = list(acknowledged)
    assert 60 <= len(acked) < len(paths), "the kill should land mid-study"

    # restart: reconciliation runs, the node serves again
    with serve_process(data_dir) as node:
        [report] = node.events("spool reconciled")
        assert report["files_unreadable"] == 0

    with SqliteStateStore.open(data_dir / "state.sqlite3", readonly=True) as store:
        rows = {r.sop_instance_uid: (r.spool_path, r.size) for r in store.instances()}
    for original in acked:
        ds = dcmread(original, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        assert uid in rows, f"acknowledged instance {original.name} has no state row"
        spool_path, size = rows[uid]
        stored = data_dir / "spool" / spool_path
        assert stored.stat().st_size == size
        stored_ds = dcmread(stored)
        assert stored_ds.SOPInstanceUID == uid
        assert stored_ds.StudyInstanceUID == ds.StudyInstanceUID
        assert stored_ds.SeriesInstanceUID == ds.SeriesInstanceUID
        assert dataset_bytes(stored) == dataset_bytes(original)
    assert list((data_dir / "spool" / "incoming").iterdir()) == []

    status = subprocess.run(
        [sys.executable, "-m", "dicomgate", "status", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [study] = json.loads(status.stdout)["studies"]
    assert study["instances"] >= len(acked)
