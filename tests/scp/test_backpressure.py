"""When the spool is full the node answers 0xA700, keeps nothing, and recovers when space frees."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dicomgate.spool import Spool
from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node


def test_spool_limit_answers_a700_then_recovers(tmp_path: Path) -> None:
    """Past the spool limit C-STORE gets 0xA700; after space frees the same instance is stored."""
    paths = write_ct_study(tmp_path / "s", 4, rows=256, columns=256)  # ~130 kB each
    size = paths[0].stat().st_size
    with start_node(tmp_path / "d", spool_limit=int(size * 2.5)) as n:
        statuses = send_files(n.host, n.port, paths)
        assert statuses == [0, 0, 0xA700, 0xA700]
        assert len(n.spool_files) == 2
        assert n.incoming_files == []
        assert n.node.state is not None
        assert len(n.node.state.instances()) == 2

        # the pipeline delivers one and removes its raw copy: room for one more
        first = n.node.state.instances()[0]
        assert first.spool_path is not None
        n.node.spool.remove(first.spool_path)
        assert send_files(n.host, n.port, paths[2:3]) == [0]
        assert send_files(n.host, n.port, paths[3:4]) == [0xA700]


def test_low_free_space_answers_a700(tmp_path: Path) -> None:
    """When the filesystem has less free space than min_free_space, C-STORE gets 0xA700."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    st = os.statvfs(tmp_path)
    with start_node(tmp_path / "d") as n:
        n.node.spool.min_free = st.f_bavail * st.f_frsize * 2  # more than the disk has
        assert send_files(n.host, n.port, [path]) == [0xA700]
        assert n.spool_files == [] and n.incoming_files == []
        n.node.spool.min_free = 0
        assert send_files(n.host, n.port, [path]) == [0]


def test_disk_full_during_spool_write_answers_a700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while making the instance durable gives 0xA700 and leaves nothing behind."""
    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with start_node(tmp_path / "d") as n:
        monkeypatch.setattr("dicomgate.spool.os.fsync", full_disk)
        assert send_files(n.host, n.port, [path]) == [0xA700]
        assert n.spool_files == [] and n.incoming_files == []
        assert n.node.state is not None and n.node.state.instances() == []
        monkeypatch.setattr("dicomgate.spool.os.fsync", real_fsync)
        assert send_files(n.host, n.port, [path]) == [0]


def test_spool_counts_existing_files_at_start(tmp_path: Path) -> None:
    """The spool's usage after a restart includes what was already spooled."""
    spool = Spool(tmp_path / "spool", limit=10, min_free=0)
    spool.prepare()
    (spool.instances / "x~v1.dcm").write_bytes(b"x" * 8)
    spool.prepare()
    assert spool.usage().bytes_used == 8
    assert spool.check_room(3) is not None
    assert spool.check_room(2) is None


def test_state_store_failure_leaves_no_spool_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row that cannot be written means 0x0110 and no spool file a restart would adopt."""
    import sqlite3

    [path] = write_ct_study(tmp_path / "s", 1, rows=16, columns=16)
    with start_node(tmp_path / "d") as n:
        assert n.node.state is not None

        def locked(*args: object, **kw: object) -> int:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(n.node.state, "admit", locked)
        assert send_files(n.host, n.port, [path]) == [0x0110]
        assert n.spool_files == [] and n.incoming_files == []
        assert n.node.spool.usage().bytes_used == 0
