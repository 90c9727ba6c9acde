"""Each association's end is logged once, with one word for one kind of ending (issue 11,
item 14): a peer that releases and closes at once is "released", never "connection closed"."""

from __future__ import annotations

import subprocess
from typing import Any

from structlog.testing import capture_logs

from tests.helpers import NodeHandle, associate, wait_for


def _endings(logs: list[dict[str, Any]]) -> list[str]:
    return [e["how"] for e in logs if e["event"] == "association ended"]


def test_release_then_close_is_always_released(node: NodeHandle, dcmtk: dict[str, str]) -> None:
    """DCMTK's echoscu releases and drops the connection at once; pynetdicom releases politely."""
    rounds = 12
    with capture_logs() as logs:
        for _ in range(rounds):
            subprocess.run(
                [dcmtk["echoscu"], "-aec", "DICOMGATE", node.host, str(node.port)],
                check=True,
                timeout=30,
                env={"TCP_NODELAY": "1"},
            )
            assoc = associate(node.host, node.port)
            assert assoc.is_established
            assoc.release()
        assert wait_for(lambda: len(_endings(logs)) == 2 * rounds, timeout=10)
    assert _endings(logs) == ["released"] * (2 * rounds)


def test_abort_is_aborted(node: NodeHandle) -> None:
    """A peer's A-ABORT is logged as aborted, once."""
    with capture_logs() as logs:
        for _ in range(5):
            assoc = associate(node.host, node.port)
            assert assoc.is_established
            assoc.abort()
        assert wait_for(lambda: len(_endings(logs)) == 5, timeout=10)
    assert _endings(logs) == ["aborted"] * 5
