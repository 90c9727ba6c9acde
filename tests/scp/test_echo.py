"""C-ECHO from DCMTK, pynetdicom and ``dicomgate echo``."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import NodeHandle, associate


def test_echoscu_succeeds(node: NodeHandle, dcmtk: dict[str, str]) -> None:
    """DCMTK's echoscu gets a successful C-ECHO from the node."""
    result = subprocess.run(
        [dcmtk["echoscu"], "-aec", "DICOMGATE", node.host, str(node.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_pynetdicom_echo_status_is_success(node: NodeHandle) -> None:
    """A pynetdicom C-ECHO gets status 0x0000."""
    assoc = associate(node.host, node.port)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


def _echo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", "echo", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_echo_command_exit_status(node: NodeHandle) -> None:
    """``dicomgate echo`` exits 0 on success and 1 when the node refuses or is absent."""
    ok = _echo_cli(node.host, str(node.port))
    assert ok.returncode == 0, ok.stderr
    assert "success" in ok.stdout

    wrong_aet = _echo_cli(node.host, str(node.port), "--aec", "NOT_THIS_NODE")
    assert wrong_aet.returncode == 1
    assert "rejected" in wrong_aet.stderr

    # a port nobody listens on: the node's own port once it has stopped is not reliable,
    # so bind-and-close a socket to get a free one
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    absent = _echo_cli("127.0.0.1", str(free_port), "--timeout", "3")
    assert absent.returncode == 1
