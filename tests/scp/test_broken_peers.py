"""Broken peers: truncated or garbage PDUs and associations cut mid-dataset."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pynetdicom import AE, _config

from dicomgate.testing import write_large_instance
from tests.helpers import NodeHandle, associate, start_node, wait_for


def _still_serves(node: NodeHandle) -> None:
    assoc = associate(node.host, node.port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_truncated_associate_pdu(node: NodeHandle) -> None:
    """A connection that sends half an A-ASSOCIATE-RQ and hangs up does not hurt the node."""
    with socket.create_connection((node.host, node.port), timeout=2) as s:
        s.sendall(b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 20)  # claims 256 bytes, sends 20
    _still_serves(node)


def test_unknown_pdu_type_is_aborted(node: NodeHandle) -> None:
    """A PDU of an unknown type gets the connection closed (A-ABORT or close), not a crash."""
    with socket.create_connection((node.host, node.port), timeout=2) as s:
        s.sendall(b"\x99\x00\x00\x00\x00\x04abcd")
        reply = _recv_all(s)
    assert reply == b"" or reply[0] == 0x07  # nothing, or an A-ABORT PDU
    _still_serves(node)


def test_garbage_inside_associate_rq(node: NodeHandle) -> None:
    """A well-framed A-ASSOCIATE-RQ with a garbage body is refused without a crash."""
    body = b"\xff" * 80
    with socket.create_connection((node.host, node.port), timeout=2) as s:
        s.sendall(b"\x01\x00" + len(body).to_bytes(4, "big") + body)
        reply = _recv_all(s)
    assert reply == b"" or reply[0] in (0x03, 0x07)  # A-ASSOCIATE-RJ or A-ABORT
    _still_serves(node)


# The test's own sender aborts under itself; its pynetdicom DUL thread then complains.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_association_aborted_mid_dataset_leaves_nothing(tmp_path: Path) -> None:
    """An instance cut off by an abort part-way through is neither kept nor recorded."""
    big = write_large_instance(tmp_path / "big.dcm", frames=200, rows=256, columns=256)  # 26 MB
    ae = AE(ae_title="ABORTER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1")
    # small PDUs make the transfer slow enough to abort in the middle
    with start_node(tmp_path / "d", max_pdu_size=4096) as node:
        _abort_mid_dataset(node, ae, big)


def _abort_mid_dataset(node: NodeHandle, ae: AE, big: Path) -> None:
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate(node.host, node.port, ae_title="DICOMGATE")
        assert assoc.is_established
        sender = threading.Thread(target=lambda: assoc.send_c_store(big), daemon=True)
        sender.start()
        assert wait_for(lambda: len(node.incoming_files) == 1, timeout=10)
        assoc.abort()
        sender.join(timeout=3)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    assert wait_for(lambda: node.incoming_files == [], timeout=10), node.incoming_files
    assert node.spool_files == []
    assert node.node.state is not None and node.node.state.instances() == []
    _still_serves(node)
