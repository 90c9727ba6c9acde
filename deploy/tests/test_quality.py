"""The CDK app and its tests stay ruff-clean (lint and format)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicomgate_deploy.config import DEPLOY_DIR

RUFF = Path(sys.executable).with_name("ruff")


def test_ruff_check() -> None:
    result = subprocess.run(
        [str(RUFF), "check", "--no-cache", "."],
        cwd=DEPLOY_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = subprocess.run(
        [str(RUFF), "format", "--check", "--no-cache", "."],
        cwd=DEPLOY_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
