"""A spool shared by several nodes: each writes only under its own directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomgate.spool import Spool, node_dir_name

UID = "1.2.826.0.1.3680043.8.498.1"


def _received(spool: Spool, data: bytes) -> Path:
    path = spool.incoming / "rx.tmp"
    path.write_bytes(data)
    return path


def test_two_nodes_on_one_spool_never_share_a_file(tmp_path: Path) -> None:
    a = Spool(tmp_path, limit=10**9, min_free=0, node_id="host-1")
    b = Spool(tmp_path, limit=10**9, min_free=0, node_id="host-2")
    a.prepare()
    b.prepare()
    rel_a, _ = a.admit(_received(a, b"from a"), UID, 1)
    rel_b, _ = b.admit(_received(b, b"from b"), UID, 1)  # same UID and version: no clash
    assert rel_a == f"nodes/host-1/instances/{UID}~v1.dcm"
    assert rel_b == f"nodes/host-2/instances/{UID}~v1.dcm"
    # any node reads any file by the relative path the state store keeps
    assert b.path_of(rel_a).read_bytes() == b"from a"
    assert a.path_of(rel_b).read_bytes() == b"from b"
    assert a.relative(a.spooled_files()[0]) == rel_a
    assert list(a.other_nodes()) == ["host-2"] and list(b.other_nodes()) == ["host-1"]
    assert [p.name for p in a.spooled_files()] == [f"{UID}~v1.dcm"]
    assert a.usage().bytes_used == len(b"from a")  # each node counts its own files


def test_spool_without_node_id_keeps_the_single_node_layout(tmp_path: Path) -> None:
    legacy = Spool(tmp_path, limit=10**9, min_free=0)
    legacy.prepare()
    rel, _ = legacy.admit(_received(legacy, b"x"), UID, 2)
    assert rel == f"instances/{UID}~v2.dcm"
    node = Spool(tmp_path, limit=10**9, min_free=0, node_id="n")
    assert node.path_of(rel).read_bytes() == b"x"  # old rows' paths still resolve


def test_node_ids_become_safe_distinct_directory_names() -> None:
    assert node_dir_name("ip-10-0-1-5.ec2.internal-123") == "ip-10-0-1-5.ec2.internal-123"
    odd = [node_dir_name(x) for x in ("../etc", "a/b", "a_b", "..", "x" * 100)]
    assert all("/" not in n and n not in (".", "..") and len(n) <= 64 for n in odd)
    assert node_dir_name("a/b") != node_dir_name("a_b")
    assert len(set(odd)) == len(odd)


def test_a_spool_file_is_never_replaced(tmp_path: Path) -> None:
    """Admitting under a name that is taken fails and keeps both files: the spooled one is
    an acknowledged instance."""
    spool = Spool(tmp_path, limit=10**9, min_free=0)
    spool.prepare()
    rel, _ = spool.admit(_received(spool, b"acknowledged"), UID, 1)
    second = _received(spool, b"another copy")
    with pytest.raises(FileExistsError):
        spool.admit(second, UID, 1)
    assert spool.path_of(rel).read_bytes() == b"acknowledged"
    assert second.read_bytes() == b"another copy"  # still the caller's to refuse and remove
    assert spool.usage().bytes_used == len(b"acknowledged")
