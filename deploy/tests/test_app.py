"""app.py as the CDK CLI runs it (``"app": "python3 app.py"`` in cdk.json): the CLI passes the
context and the output directory through CDK_CONTEXT_JSON and CDK_OUTDIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dicomgate_deploy.config import DEPLOY_DIR


def _run(context: dict[str, object], outdir: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "CDK_CONTEXT_JSON": json.dumps(context),
        "CDK_OUTDIR": str(outdir),
    }
    return subprocess.run(
        [sys.executable, "app.py"],
        cwd=DEPLOY_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cdk_json_points_at_app_and_example() -> None:
    cdk = json.loads((DEPLOY_DIR / "cdk.json").read_text())
    assert cdk["app"] == "python3 app.py"
    assert cdk["context"]["config"] == "config/example.json"


def test_app_synthesizes_with_cdk_json_context(tmp_path: Path) -> None:
    context = json.loads((DEPLOY_DIR / "cdk.json").read_text())["context"]
    result = _run(context, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "Dicomgate.template.json").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "missing" not in manifest  # nothing to look up: synthesis is offline


def test_app_reports_a_bad_configuration(tmp_path: Path) -> None:
    result = _run({"config": "config/example.json", "dicomgate": {"service": {"cpu": 3}}}, tmp_path)
    assert result.returncode == 1
    assert "dicomgate deploy: " in result.stderr
    assert "service.cpu" in result.stderr or "cpu must be one of" in result.stderr
