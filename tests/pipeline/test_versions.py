"""A re-sent instance (a new version) is reported once: one manifest and one notification per
real change, however long the node runs and whether or not it restarts (issue 11, item 1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomgate.state import InstanceState
from dicomgate.testing import write_ct_study
from tests.helpers import NodeHandle, send_files, start_node, wait_for
from tests.pipeline.webhook import SECRET, Webhook, webhook_server


def _manifest_files(n: NodeHandle, uid: str) -> list[str]:
    assert n.node.state is not None
    record = n.node.state.study(uid)
    if record is None or not record.deid_study_uid:
        return []
    folder = n.data_dir / "delivered" / record.deid_study_uid
    return sorted(p.name for p in folder.glob("manifest-v*.json"))


def _changed_copy(path: Path, out: Path) -> Path:
    """The same SOP Instance UID with one attribute changed: the sender's new version."""
    ds = dcmread(path)
    ds.SeriesDescription = "re-sent with a correction"
    ds.save_as(out, enforce_file_format=True)
    return out


def _node(data_dir: Path, hook: Webhook, **overrides: object) -> object:
    settings: dict[str, object] = {"stable_after": 0.5, **overrides}
    return start_node(
        data_dir,
        pipeline=True,
        notify_webhook_url=hook.url,
        notify_webhook_secret=SECRET,
        **settings,
    )


def _assert_settled(n: NodeHandle, hook: Webhook, uid: str, versions: list[int]) -> None:
    """Nothing more happens to the study: every row reported, no new manifest for 3 s."""
    time.sleep(3)
    assert n.node.state is not None
    assert n.node.state.study(uid).manifest_version == versions[-1]  # type: ignore[union-attr]
    assert _manifest_files(n, uid) == [f"manifest-v{v}.json" for v in versions]
    rows = n.node.state.instances(study_instance_uid=uid)
    assert all(r.reported_version is not None for r in rows), [(r.version, r.state) for r in rows]
    assert not n.node.state.studies_to_report()
    assert hook.versions() == versions


@pytest.mark.parametrize("restart", [False, True])
def test_new_version_after_delivery_publishes_once(tmp_path: Path, restart: bool) -> None:
    """Delivered study, then one instance re-sent changed: exactly manifest v2, one notification."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    changed = _changed_copy(paths[0], tmp_path / "changed.dcm")
    data_dir = tmp_path / "data"
    with webhook_server() as hook:
        with _node(data_dir, hook) as n:  # type: ignore[attr-defined]
            assert send_files(n.host, n.port, paths) == [0, 0]
            assert wait_for(lambda: hook.versions() == [1], timeout=20)
            assert send_files(n.host, n.port, [changed]) == [0]
            assert wait_for(lambda: hook.versions() == [1, 2], timeout=20)
            if not restart:
                _assert_settled(n, hook, uid, [1, 2])
                assert hook.latest()["counts"]["instances"] == 2
                assert n.node.state is not None
                rows = n.node.state.instances(study_instance_uid=uid)
                # the old version was delivered in v1 and stays so; v2 replaces it in v2
                assert sorted((r.version, str(r.state), r.reported_version) for r in rows) == [
                    (1, "delivered", 1),
                    (1, "delivered", 1),
                    (2, "delivered", 2),
                ]
        if restart:
            with _node(data_dir, hook) as n:  # type: ignore[attr-defined]
                _assert_settled(n, hook, uid, [1, 2])


@pytest.mark.parametrize("quarantined", [False, True])
def test_new_version_before_first_manifest_publishes_once(
    tmp_path: Path, quarantined: bool
) -> None:
    """The first version finished (uploaded, or quarantined) before its replacement arrived:
    one manifest, listing the newest version only; the older one ends superseded."""
    paths = write_ct_study(tmp_path / "s", 2, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    changed = _changed_copy(paths[0], tmp_path / "changed.dcm")
    rules = {"accept_modalities": ["MR"]} if quarantined else {}
    finished = InstanceState.QUARANTINED if quarantined else InstanceState.UPLOADED
    with webhook_server() as hook, _node(tmp_path / "data", hook, stable_after=2.5, **rules) as n:  # type: ignore[attr-defined]
        assert send_files(n.host, n.port, paths) == [0, 0]
        assert n.node.state is not None
        assert wait_for(
            lambda: all(
                r.state == finished
                for r in n.node.state.instances(study_instance_uid=uid)  # type: ignore[union-attr]
            ),
            timeout=20,
        )
        assert send_files(n.host, n.port, [changed]) == [0]
        assert wait_for(lambda: hook.versions() == [1], timeout=20)
        _assert_settled(n, hook, uid, [1])
        [notification] = hook.received
        counts = notification["counts"]
        assert (counts["instances"], counts["quarantined"]) == ((0, 2) if quarantined else (2, 0))
        old, new = n.node.state.versions(str(dcmread(paths[0]).SOPInstanceUID))
        assert old.state == InstanceState.SUPERSEDED and old.reported_version == 0
        assert new.state == (finished if quarantined else InstanceState.DELIVERED)


def test_quarantined_then_quarantined_again_after_delivery(tmp_path: Path) -> None:
    """An instance quarantined, reported, re-sent changed and refused again: two manifests."""
    paths = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    uid = str(dcmread(paths[0]).StudyInstanceUID)
    changed = _changed_copy(paths[0], tmp_path / "changed.dcm")
    with webhook_server() as hook, _node(tmp_path / "data", hook, accept_modalities=["MR"]) as n:  # type: ignore[attr-defined]
        assert send_files(n.host, n.port, paths) == [0]
        assert wait_for(lambda: hook.versions() == [1], timeout=20)
        assert send_files(n.host, n.port, [changed]) == [0]
        assert wait_for(lambda: hook.versions() == [1, 2], timeout=20)
        _assert_settled(n, hook, uid, [1, 2])
        latest = hook.latest()
        assert latest["counts"]["instances"] == 0 and latest["counts"]["quarantined"] == 1
