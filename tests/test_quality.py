"""The package stays ruff- and mypy-clean (so the README's test command proves it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    """ruff finds nothing in the package, the tests or the benchmarks."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "dicomgate", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    """mypy --strict (configured in pyproject.toml) passes on the package."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
