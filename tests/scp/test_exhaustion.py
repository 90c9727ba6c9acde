"""Exhaustion (issue 12, item 4): silent and slow peers are cut after the ACSE/network
timeouts and never hold what a real sender needs; over the limit, A-ASSOCIATE-RJ."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dicomgate.scp._guard import CONNECTION_REFUSED, SecurityEvent
from dicomgate.testing import write_tiny_study
from tests.helpers import NodeHandle, associate, start_node, storescu, wait_for


def _silent(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _acceptors(handle: NodeHandle) -> int:
    assert handle.node.scp is not None
    return sum(1 for a in handle.node.scp.ae.active_associations if a.is_acceptor)


@contextlib.contextmanager
def _closing(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_silent_connections_take_no_association_slot(tmp_path: Path) -> None:
    """max_associations counts established associations: as many silent connections as there
    are slots do not stop a real sender."""
    with (
        start_node(tmp_path / "d", max_associations=2, acse_timeout=60) as node,
        _closing(_silent(node.port, 2)),
    ):
        assoc = associate(node.host, node.port)
        assert assoc.is_established
        assoc.release()


def test_pending_connections_bounded_then_cut_after_acse_timeout(
    tmp_path: Path, dcmtk: dict[str, str]
) -> None:
    """max_pending_connections silent connections: the next one is closed at once (a
    'connection refused' security event); after the ACSE timeout the silent ones are cut and
    a real storescu succeeds."""
    events: list[SecurityEvent] = []
    with start_node(
        # the timeouts are the window in which all three must be seen pending and the fourth
        # refused: 5 s, not 2 (either timeout cuts a silent connection), so a busy machine
        # accepting late does not find the first one cut already
        tmp_path / "d",
        max_pending_connections=3,
        acse_timeout=5,
        network_timeout=5,
    ) as node:
        assert node.node.scp is not None
        node.node.scp.gate.on_event = events.append
        with _closing(_silent(node.port, 3)) as silent:
            assert wait_for(lambda: node.node.scp is not None and node.node.scp.gate.pending(
                node.node.scp.ae) == 3)  # fmt: skip
            with _closing(_silent(node.port, 1)) as (extra,):
                assert _closed_by_server(extra)
            assert [e.kind for e in events] == [CONNECTION_REFUSED]
            for s in silent:  # cut by the node after acse_timeout
                assert _closed_by_server(s)
        study = write_tiny_study(tmp_path / "study", 3)
        storescu(dcmtk, node.port, tmp_path / "study")
        assert len(node.spool_files) == len(study)


def test_trickling_association_request_is_cut(tmp_path: Path) -> None:
    """A peer sending its A-ASSOCIATE-RQ one byte at a time is cut at the ACSE deadline: the
    whole request must arrive within acse_timeout of the connection."""
    with start_node(tmp_path / "d", acse_timeout=2, network_timeout=60) as node:
        header = b"\x01\x00" + (200).to_bytes(4, "big")  # claims 200 bytes
        with socket.create_connection((node.host, node.port), timeout=30) as s:
            cut = threading.Event()

            def trickle() -> None:
                try:
                    for byte in header + b"\x00" * 200:
                        if cut.is_set():
                            return
                        s.send(bytes([byte]))
                        time.sleep(0.3)  # 60 s for the whole request
                except OSError:
                    cut.set()

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            assert _closed_by_server(s)
            cut.set()
            sender.join(5)
        assert wait_for(lambda: _acceptors(node) == 0, timeout=20)
        ok = associate(node.host, node.port)
        assert ok.is_established
        ok.release()


def test_trickling_pdu_on_an_established_association_is_cut(tmp_path: Path) -> None:
    """An established association whose peer trickles a P-DATA-TF one byte at a time is cut
    once the PDU took longer than network_timeout."""
    with start_node(tmp_path / "d", network_timeout=2) as node:
        assoc = associate(node.host, node.port)
        assert assoc.is_established
        raw = assoc.dul.socket.socket
        assert node.node.scp is not None
        scp = node.node.scp
        assert wait_for(lambda: len(scp.open_associations()) == 1)
        pdu = b"\x04\x00" + (1000).to_bytes(4, "big")
        try:
            for byte in pdu + b"\x00" * 1000:
                raw.send(bytes([byte]))
                if not scp.open_associations():
                    break
                time.sleep(0.2)  # 200 s for the whole PDU
        except OSError:
            pass
        assert wait_for(lambda: not scp.open_associations(), timeout=30)
        with contextlib.suppress(Exception):
            assoc.abort()


def test_over_the_limit_gets_a_transient_local_limit_rejection(tmp_path: Path) -> None:
    """max_associations established: the next gets A-ASSOCIATE-RJ (2, 3, 2) — transient,
    service-provider (presentation), local limit exceeded; once one ends, a new one works."""
    with start_node(tmp_path / "d", max_associations=2) as node:
        first, second = associate(node.host, node.port), associate(node.host, node.port)
        assert first.is_established and second.is_established
        third = associate(node.host, node.port)
        assert third.is_rejected
        rj = third.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
        first.release()
        assert node.node.scp is not None
        scp = node.node.scp
        assert wait_for(lambda: len(scp.open_associations()) == 1)
        fourth = associate(node.host, node.port)
        assert fourth.is_established
        fourth.release()
        second.release()


def test_closed_connections_leave_no_threads(tmp_path: Path) -> None:
    """Connections closed before an A-ASSOCIATE-RQ (port probes, load balancer checks) end
    their association threads at once, not at the ACSE timeout (60 s here)."""
    with start_node(tmp_path / "d", acse_timeout=60, max_pending_connections=8) as node:
        for _ in range(30):
            socket.create_connection((node.host, node.port), timeout=5).close()
        assert wait_for(lambda: _acceptors(node) == 0, timeout=30)
        ok = associate(node.host, node.port)
        assert ok.is_established
        ok.release()
