"""Faults on the way to S3: an outage, a SIGKILL mid-pipeline, a late instance.

Each ends with the study delivered complete, once: one notification per manifest version, no
duplicate objects.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.state.sqlite import SqliteStateStore
from dicomgate.testing import make_ct_instance, write_ct_study
from tests.helpers import serve_process, storescu, wait_for
from tests.pipeline.test_e2e_s3 import node_env
from tests.pipeline.webhook import webhook_server
from tests.seaweed import SeaweedFS, run_seaweedfs


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _max_attempts(data_dir: Path) -> int:
    with SqliteStateStore.open(data_dir / "state.sqlite3", readonly=True) as store:
        return max((r.attempts for r in store.instances()), default=0)


@pytest.mark.slow
def test_s3_outage_mid_study_then_delivered_once(tmp_path: Path, dcmtk: dict[str, str]) -> None:
    """With S3 down, instances wait and retry; when it is back the study arrives once, whole."""
    with run_seaweedfs(tmp_path / "s3") as s3, webhook_server() as hook:
        s3.create_bucket("outage-test")
        write_ct_study(tmp_path / "study", 20, rows=64, columns=64)
        with serve_process(tmp_path / "data", env=node_env(s3, "outage-test", hook)) as node:
            s3.stop()
            storescu(dcmtk, node.port, tmp_path / "study")  # the node still acknowledges
            assert wait_for(lambda: _max_attempts(tmp_path / "data") >= 2, timeout=60)
            assert hook.versions() == []
            s3.start()
            assert wait_for(lambda: hook.versions() == [1], timeout=120), node.log_text()[-2000:]
            time.sleep(1.5)
            assert hook.versions() == [1]
            assert hook.latest()["counts"]["instances"] == 20
        assert len(s3.keys("outage-test")) == 20 + 3


@pytest.mark.slow
def test_sigkill_mid_pipeline_then_late_instance(
    tmp_path: Path, dcmtk: dict[str, str], seaweed: SeaweedFS, bucket: str
) -> None:
    """SIGKILL while uploading → restart → delivered complete once; a late instance → v2."""
    paths = write_ct_study(tmp_path / "study", 150, rows=256, columns=256)
    data_dir = tmp_path / "data"
    with webhook_server() as hook:
        env = node_env(seaweed, bucket, hook, DICOMGATE_STABLE_AFTER="2")
        with serve_process(data_dir, env=env) as node:
            storescu(dcmtk, node.port, tmp_path / "study")
            assert wait_for(lambda: len(seaweed.keys(bucket)) >= 10, timeout=60)
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(10)
            # its de-identification workers die with it (PR_SET_PDEATHSIG), no orphans
            assert wait_for(lambda: not _group_alive(node.proc.pid), timeout=10)
        uploaded_before = len(seaweed.keys(bucket))
        assert hook.versions() == [], "killed before the study completed"

        with serve_process(data_dir, env=env) as node:
            assert wait_for(lambda: hook.versions() == [1], timeout=120), node.log_text()[-2000:]
            time.sleep(2.5)
            assert hook.versions() == [1]
            assert hook.latest()["counts"]["instances"] == 150
            keys = seaweed.keys(bucket)
            assert len(keys) == len(set(keys)) == 150 + 3
            assert uploaded_before <= 150

            # a late instance of the same study re-opens it: manifest v2 lists everything
            first = dcmread(paths[0])
            late = make_ct_instance(
                str(first.StudyInstanceUID), str(first.SeriesInstanceUID), 151, rows=32, columns=32
            )
            late_path = tmp_path / "late" / "late.dcm"
            late_path.parent.mkdir()
            late.save_as(late_path, enforce_file_format=True)
            storescu(dcmtk, node.port, late_path)
            assert wait_for(lambda: hook.versions() == [1, 2], timeout=60)
            note = hook.latest()
            assert note["counts"]["instances"] == 151
            client = seaweed.client()
            body = client.get_object(
                Bucket=bucket, Key=f"deliveries/{note['study_instance_uid']}/manifest.json"
            )["Body"].read()
            client.close()
            assert json.loads(body)["manifest_version"] == 2
        assert len(seaweed.keys(bucket)) == 151 + 5  # + index-v2, manifest-v2
