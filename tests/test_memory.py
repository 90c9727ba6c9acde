"""A ~1 GB instance is received with the node's peak RSS under 300 MB."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dicomgate.testing import write_large_instance
from tests.helpers import serve_process


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.slow
def test_one_gigabyte_instance_keeps_rss_flat(tmp_path: Path, dcmtk: dict[str, str]) -> None:
    """storescu sends a 1 GB multi-frame instance; it is stored whole, peak RSS < 300 MB."""
    big = write_large_instance(tmp_path / "big.dcm", frames=2000)  # 2000 × 512×512×16 bit
    assert big.stat().st_size > 1_000_000_000
    try:
        with serve_process(tmp_path / "data") as node:
            result = subprocess.run(
                [dcmtk["storescu"], "-aec", "DICOMGATE", "127.0.0.1", str(node.port), str(big)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            assert result.returncode == 0, result.stderr
            peak = _peak_rss_mb(node.proc.pid)
            [stored] = list((tmp_path / "data" / "spool" / "instances").iterdir())
            # File Meta may differ in length from the sender's; the dataset is the same size
            assert abs(stored.stat().st_size - big.stat().st_size) < 1024
        assert peak < 300, f"peak RSS {peak:.0f} MB"
    finally:
        big.unlink(missing_ok=True)
