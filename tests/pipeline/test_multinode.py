"""Several nodes on one data directory and one state store (issue 8): each has its own spool
sub-directory, the work is shared out by claims, and a study split across them is delivered
once, whole, with one manifest per version; a dead node's recorded and unrecorded instances
are adopted by the survivor."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from structlog.testing import capture_logs

from dicomgate.config import load_settings
from dicomgate.node import Node
from dicomgate.spool import Spool, node_dir_name
from dicomgate.state import InstanceState
from dicomgate.testing import write_ct_study
from tests.helpers import TEST_KEY, send_files, wait_for
from tests.moto_dynamodb import dynamodb_env, moto_dynamodb  # noqa: F401 - fixtures


@contextlib.contextmanager
def _node(data: Path, node_id: str, **kw: Any) -> Iterator[tuple[Node, int]]:
    """A node in the multi-node layout (as ``serve --workers`` runs them), stopped after."""
    settings = load_settings(
        data_dir=data,
        host="127.0.0.1",
        port=0,
        ops_port=0,
        min_free_space=0,
        secret_key=TEST_KEY,
        reuse_port=True,
        node_id=node_id,
        stable_after=kw.pop("stable_after", 1.0),
        keep_raw_for=3600,
        state=kw.pop("state", "sqlite"),
    )
    node = Node(settings, pipeline=kw.pop("pipeline", True), **kw)
    _, port = node.start()
    try:
        yield node, port
    finally:
        node.stop(timeout=5)


def _manifests(data: Path, deid_study: str) -> list[str]:
    return sorted(p.name for p in (data / "delivered" / deid_study).glob("manifest-v*.json"))


@pytest.fixture(params=["sqlite", "dynamodb"])
def state(request: pytest.FixtureRequest) -> str:
    """DICOMGATE_STATE for both nodes: the SQLite file, or a fresh table on moto's server."""
    if request.param == "sqlite":
        return "sqlite"
    request.getfixturevalue("dynamodb_env")
    return f"dynamodb://dg-{uuid.uuid4().hex[:12]}"


def test_study_split_across_two_nodes_delivered_once(tmp_path: Path, state: str) -> None:
    """Half a study to each node at once: one manifest v1 listing all, one notification."""
    paths = write_ct_study(tmp_path / "s", 12, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "data"
    with (
        capture_logs() as logs,
        _node(data, "a", state=state) as (a, port_a),
        _node(data, "b", state=state) as (_, port_b),
    ):
        results: dict[str, list[int | None]] = {}

        def send(name: str, port: int, part: list[Path]) -> None:
            results[name] = send_files("127.0.0.1", port, part)

        senders = [
            threading.Thread(target=send, args=("a", port_a, paths[:6])),
            threading.Thread(target=send, args=("b", port_b, paths[6:])),
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
        assert results == {"a": [0] * 6, "b": [0] * 6}
        assert a.state is not None
        assert wait_for(lambda: a.state.study(uid).notified_version == 1, timeout=30)  # type: ignore[union-attr]
        rows = a.state.instances(study_instance_uid=uid)
        assert {r.node_id for r in rows} == {"a", "b"}  # each received its half
        assert {r.spool_path.split("/")[1] for r in rows if r.spool_path} == {"a", "b"}
        assert {(r.state, r.reported_version) for r in rows} == {(InstanceState.DELIVERED, 1)}
        record = a.state.study(uid)
        assert record is not None and record.deid_study_uid
    manifest = json.loads(
        (data / "delivered" / record.deid_study_uid / "manifest-v1.json").read_bytes()
    )
    assert len(manifest["instances"]) == 12
    assert _manifests(data, record.deid_study_uid) == ["manifest-v1.json"]
    assert len([e for e in logs if e["event"] == "study_delivered"]) == 1


def test_dead_nodes_instances_adopted(tmp_path: Path) -> None:
    """A node dies with instances acknowledged (one never recorded): the survivor delivers
    every one once its heartbeat expires."""
    paths = write_ct_study(tmp_path / "s", 4, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "data"
    with _node(data, "dead", pipeline=False, heartbeat_ttl=0.6) as (dead, port):
        assert send_files("127.0.0.1", port, paths[:3]) == [0] * 3
        assert dead.state is not None
        dead._stop_beating.set()  # it stops answering: no goodbye, its heartbeat expires
        dead.state.release_node = lambda node_id: 0  # type: ignore[method-assign]
    # acknowledged, fsync'd, but the process died before its row was written
    orphan = Spool.file_name(str(dcmread(paths[3]).SOPInstanceUID), 1)
    shutil.copy(paths[3], data / "spool" / "nodes" / node_dir_name("dead") / "instances" / orphan)
    # started while "dead" still looks alive: its heartbeat loop finds it dead and adopts
    with _node(data, "survivor", heartbeat_ttl=0.6, stable_after=0.2) as (node, _):
        assert node.state is not None
        assert wait_for(
            lambda: (s := node.state.study(uid)) is not None and s.notified_version == 1, 30
        )  # type: ignore[union-attr]
        rows = node.state.instances(study_instance_uid=uid)
        assert len(rows) == 4 and {r.state for r in rows} == {InstanceState.DELIVERED}


def test_open_association_on_one_node_holds_the_study_on_all(tmp_path: Path, state: str) -> None:
    """While an association on node a still carries a study, node b (which does the
    publishing: a runs no pipeline) does not publish it, however long ``stable_after`` has
    passed; once the association is released, the hold goes and b publishes version 1."""
    from pynetdicom import AE

    paths = write_ct_study(tmp_path / "s", 3, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    data = tmp_path / "data"
    with (
        _node(data, "a", state=state, pipeline=False) as (a, port_a),
        _node(data, "b", state=state, stable_after=0.2) as (b, _),
    ):
        assert a.state is not None and b.state is not None
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(str(dcmread(paths[0]).SOPClassUID))
        assoc = ae.associate("127.0.0.1", port_a, ae_title="DICOMGATE")
        assert assoc.is_established
        try:
            for p in paths:
                assert assoc.send_c_store(dcmread(p)).Status == 0
            assert b.state.held_studies() == {uid}
            # b de-identifies and uploads everything, but must not publish while a holds it
            assert wait_for(
                lambda: (
                    {r.state for r in b.state.instances(study_instance_uid=uid)}  # type: ignore[union-attr]
                    == {InstanceState.UPLOADED}
                ),
                30,
            )
            assert not wait_for(lambda: b.state.study(uid).manifest_version > 0, 2)  # type: ignore[union-attr]
        finally:
            assoc.release()
        assert wait_for(lambda: b.state.held_studies() == set(), 10)  # type: ignore[union-attr]
        assert wait_for(lambda: b.state.study(uid).notified_version == 1, 30)  # type: ignore[union-attr]


def test_refuses_to_create_a_missing_store_when_forbidden(tmp_path: Path, state: str) -> None:
    """state_create = false: a node finds no store (no table, no SQLite file) and refuses to
    start, naming the setting, instead of creating one the deployment should own."""
    from dicomgate.node import StartupError

    settings = load_settings(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=0,
        ops_port=0,
        secret_key=TEST_KEY,
        state=state,
        state_create=False,
    )
    node = Node(settings, pipeline=False)
    with pytest.raises(StartupError, match="DICOMGATE_STATE_CREATE"):
        node.start()
