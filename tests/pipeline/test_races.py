"""Regression tests for races and failures found in review: each once lost or stalled data."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

import dicomgate.pipeline._publisher as publisher_module
from dicomgate.delivery.file import FileDestination
from dicomgate.testing import write_ct_study
from tests.helpers import NodeHandle, send_files, start_node, wait_for


def _version(n: NodeHandle, uid: str) -> int:
    assert n.node.state is not None
    study = n.node.state.study(uid)
    return study.manifest_version if study else 0


def _manifest(n: NodeHandle, uid: str) -> dict[str, Any]:
    assert n.node.state is not None
    record = n.node.state.study(uid)
    assert record is not None and record.deid_study_uid
    path = n.data_dir / "delivered" / record.deid_study_uid / "manifest.json"
    return dict(json.loads(path.read_bytes()))


def test_instance_finishing_during_publication_waits_for_next_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance uploaded while manifest 1 is being published is listed in manifest 2."""
    real = publisher_module.publish_manifest
    publishing = threading.Event()

    async def slow_publish(dest: Any, manifest: Any) -> Any:
        publishing.set()
        await asyncio.sleep(2)  # a slow PUT, retries inside boto3...
        return await real(dest, manifest)

    monkeypatch.setattr(publisher_module, "publish_manifest", slow_publish)
    paths = write_ct_study(tmp_path / "s", 3, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.3) as n:
        assert send_files(n.host, n.port, paths[:2]) == [0, 0]
        assert publishing.wait(30)  # complete; publication of version 1 under way
        assert send_files(n.host, n.port, paths[2:]) == [0]
        assert wait_for(lambda: _version(n, uid) == 2, timeout=60)
        manifest = _manifest(n, uid)
        assert manifest["manifest_version"] == 2 and manifest["counts"]["instances"] == 3
        assert n.node.state is not None
        assert {r.reported_version for r in n.node.state.instances(study_instance_uid=uid)} == {
            1,
            2,
        }


def test_newer_version_wins_a_slow_older_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1's slow upload cannot overwrite v2: the object and the manifest both hold v2."""
    real = FileDestination.put_bytes  # a small instance is uploaded from memory
    calls: list[str] = []

    async def put_bytes(self: FileDestination, key: str, data: bytes, **kw: Any) -> Any:
        calls.append(key)
        if len(calls) == 1:
            await asyncio.sleep(1.5)
        return await real(self, key, data, **kw)

    monkeypatch.setattr(FileDestination, "put_bytes", put_bytes)
    [v1] = write_ct_study(tmp_path / "v1", 1, rows=16, columns=16)
    ds = dcmread(v1)
    ds.PixelData = bytes(len(ds.PixelData))
    v2 = tmp_path / "v2.dcm"
    ds.save_as(v2, enforce_file_format=True)
    uid = str(ds.StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.5) as n:
        assert send_files(n.host, n.port, [v1]) == [0]
        time.sleep(0.3)
        assert send_files(n.host, n.port, [v2]) == [0]
        assert wait_for(lambda: _version(n, uid) >= 1, timeout=20)
        time.sleep(2)
        [entry] = _manifest(n, uid)["instances"]
        data = (n.data_dir / "delivered" / entry["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert not any(dcmread(n.data_dir / "delivered" / entry["key"]).PixelData)  # v2's
        assert n.node.state is not None
        states = sorted(
            (r.version, r.state) for r in n.node.state.instances(study_instance_uid=uid)
        )
        assert states[-1] == (2, "delivered")


def test_malformed_modality_does_not_stall_other_studies(tmp_path: Path) -> None:
    """A multi-valued Modality is tolerated, and no study's failure blocks another's."""
    a = write_ct_study(tmp_path / "a", 2, rows=16, columns=16)
    ds = dcmread(a[0])
    ds.Modality = ["CT", "PT", "OT", "SC", "XA"]
    ds.save_as(a[0], enforce_file_format=True)
    b = write_ct_study(tmp_path / "b", 2, rows=16, columns=16)
    ua, ub = (str(dcmread(x[0]).StudyInstanceUID) for x in (a, b))
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.3) as n:
        assert send_files(n.host, n.port, a) == [0, 0]
        assert send_files(n.host, n.port, b) == [0, 0]
        assert wait_for(lambda: _version(n, ua) == 1 and _version(n, ub) == 1, timeout=20)
        assert n.node.pipeline is not None
        assert not [t for t in n.node.pipeline._tasks if t.done()]


def test_failing_publication_is_retried_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while publishing is logged and retried, not the end of the study."""
    real = publisher_module.publish_manifest
    failures = [RuntimeError("boom"), RuntimeError("boom again")]

    async def flaky(dest: Any, manifest: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(dest, manifest)

    monkeypatch.setattr(publisher_module, "publish_manifest", flaky)
    monkeypatch.setattr(publisher_module, "backoff", lambda n, cap: 0.1)
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    with start_node(tmp_path / "data", pipeline=True, stable_after=0.2) as n:
        assert send_files(n.host, n.port, paths) == [0, 0]
        assert wait_for(lambda: _version(n, uid) == 1, timeout=20)
        assert n.node.state is not None
        assert wait_for(lambda: n.node.state.study(uid).notified_version == 1, timeout=10)  # type: ignore[union-attr]
    assert failures == []


def test_data_directory_is_locked(tmp_path: Path) -> None:
    """A second node on the same data directory refuses to start."""
    from dicomgate.node import DataDirInUseError

    with (
        start_node(tmp_path / "data"),
        pytest.raises(DataDirInUseError, match="in use"),
        start_node(tmp_path / "data"),
    ):
        pass
    with start_node(tmp_path / "data"):  # released on stop
        pass
