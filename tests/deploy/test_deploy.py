"""The AWS deployment (deploy/, a CDK app) is tested by its own suite in its own virtual
environment: deploy/test installs deploy/requirements.txt into deploy/.venv (PyPI), then
synthesizes every configuration variant offline and checks the templates (CDK assertions),
cdk-nag's AwsSolutions and HIPAA.Security packs and cfn-lint. Running it here makes the README's
test command (and so CI) cover it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_TEST = ROOT / "deploy" / "test"


@pytest.mark.timeout(1500)
def test_deploy_suite_passes() -> None:
    result = subprocess.run(
        [str(DEPLOY_TEST), "-q", "-p", "no:cacheprovider"],
        cwd=ROOT / "deploy",
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    summary = re.search(r"(\d+) passed", result.stdout)
    assert summary, output[-3000:]
    assert int(summary.group(1)) >= 50
    assert " failed" not in result.stdout.splitlines()[-1]
