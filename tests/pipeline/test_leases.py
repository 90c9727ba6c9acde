"""The pipeline carries an instance under a lease in the state store (issue 8): renewed while
the work takes longer than the lease, so no other node can take it, and given back on stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dicomgate.config import load_settings
from dicomgate.node import Node
from dicomgate.state import InstanceState
from dicomgate.state.sqlite import SqliteStateStore
from dicomgate.testing import write_ct_study
from tests.helpers import TEST_KEY, send_files, wait_for

LEASE = 0.6


def _node(data: Path, monkeypatch: pytest.MonkeyPatch, upload_s: float) -> tuple[Node, str, int]:
    settings = load_settings(
        data_dir=data,
        host="127.0.0.1",
        port=0,
        ops_port=0,
        min_free_space=0,
        secret_key=TEST_KEY,
        stable_after=0.1,
    )
    node = Node(settings, lease_seconds=LEASE)
    host, port = node.start()
    assert node.pipeline is not None
    destination = node.pipeline.destination

    def slowed(real: Any) -> Any:
        async def slow(*args: Any, **kw: Any) -> Any:  # a destination slower than a lease
            await asyncio.sleep(upload_s)
            return await real(*args, **kw)

        return slow

    # small instances are uploaded from memory (put_bytes), large ones from staging (put_file)
    for method in ("put_file", "put_bytes"):
        monkeypatch.setattr(destination, method, slowed(getattr(destination, method)))
    return node, host, port


def test_lease_renewed_while_uploading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload lasting several leases keeps its claim: another node claims nothing."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    node, host, port = _node(tmp_path / "d", monkeypatch, upload_s=4 * LEASE)
    try:
        assert send_files(host, port, [path]) == [0]
        with SqliteStateStore.open(node.settings.state_path) as other:
            assert wait_for(lambda: other.instances()[0].state == InstanceState.PROCESSED, 20)
            for _ in range(4):  # over three leases' time, the claim stays the node's
                assert other.claim_work("other-node", limit=5) == []
                [rec] = other.instances()
                assert rec.lease_owner == node.settings.node_id
                wait_for(lambda: False, timeout=LEASE)
            assert wait_for(lambda: other.study(rec.study_instance_uid).manifest_version == 1, 20)  # type: ignore[union-attr]
            [done] = other.instances()
            assert (done.state, done.lease_owner) == (InstanceState.DELIVERED, None)
    finally:
        node.stop(timeout=5)


def test_unfinished_work_given_back_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping mid-upload releases the claim: the next node need not wait for it to expire."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    node, host, port = _node(tmp_path / "d", monkeypatch, upload_s=60)
    try:
        assert send_files(host, port, [path]) == [0]
        assert node.state is not None
        assert wait_for(lambda: node.state.instances()[0].state == InstanceState.PROCESSED, 20)  # type: ignore[union-attr]
    finally:
        node.stop(timeout=0.5)
    with SqliteStateStore.open(tmp_path / "d" / "state.sqlite3") as store:
        [rec] = store.instances()
        assert (rec.state, rec.lease_owner) == (InstanceState.PROCESSED, None)
        assert store.claim_work("next-node", limit=5)


def test_processed_small_instance_without_its_bytes_is_made_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node stopped while uploading a small instance from memory leaves it 'processed' with
    no staged file: the next start de-identifies it again (the same bytes) and delivers it; a
    torn staged file left there from before is removed, not left behind for ever."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    node, host, port = _node(tmp_path / "d", monkeypatch, upload_s=60)
    try:
        assert send_files(host, port, [path]) == [0]
        assert node.state is not None and node.pipeline is not None
        assert wait_for(lambda: node.state.instances()[0].state == InstanceState.PROCESSED, 20)  # type: ignore[union-attr]
        [rec] = node.state.instances()
        torn = node.pipeline._staging_path(rec)
        staging = torn.parent
    finally:
        node.stop(timeout=0.5)
    assert list(staging.iterdir()) == []  # uploaded from memory: nothing was staged
    torn.write_bytes(b"torn")  # as if an older node had staged it and lost power
    again, _, _ = _node(tmp_path / "d", monkeypatch, upload_s=0)
    try:
        assert again.state is not None
        assert wait_for(lambda: again.state.instances()[0].state == InstanceState.DELIVERED, 30)  # type: ignore[union-attr]
        [done] = again.state.instances()
        assert done.deid_sha256 == rec.deid_sha256  # de-identified again: the same bytes
        assert not torn.exists()
    finally:
        again.stop(timeout=5)
