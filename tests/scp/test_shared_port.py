"""Several node processes on one port: SO_REUSEPORT (``serve --workers``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomgate.node import StartupError
from dicomgate.testing import write_ct_study
from tests.helpers import send_files, start_node


def test_two_nodes_share_one_port_and_both_receive(tmp_path: Path) -> None:
    files = write_ct_study(tmp_path / "study", count=24, rows=8, columns=8)
    with start_node(tmp_path / "a", reuse_port=True) as a:
        b_node = start_node(tmp_path / "b", reuse_port=True, port=a.port)
        with b_node as b:
            assert b.port == a.port
            # one association per instance, from a new source port each time: the kernel
            # spreads them by the peer's address and port hash
            for f in files:
                assert send_files(a.host, a.port, [f]) == [0x0000]
            # each node spools under its own nodes/<node id>/ (reuse_port: several nodes)
            got_a = len(a.node.spool.spooled_files())
            got_b = len(b.node.spool.spooled_files())
    assert got_a + got_b == len(files)
    assert got_a and got_b, (got_a, got_b)


def test_without_reuse_port_a_taken_port_is_a_clear_startup_error(tmp_path: Path) -> None:
    with start_node(tmp_path / "a", reuse_port=True) as a:
        second = start_node(tmp_path / "b", port=a.port)
        with pytest.raises(StartupError, match="port"), second:
            pass
