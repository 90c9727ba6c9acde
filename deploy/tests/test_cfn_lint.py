"""cfn-lint finds nothing in the synthesized templates.

The only ignore is written into the template itself, on the resource it concerns (cfn-lint
resource metadata): W3005 on CDK's own custom-resource provider, see stack._lint_metadata.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Synth

CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def test_cfn_lint_clean(variant: Synth) -> None:
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", str(variant.template_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_cfn_lint_ignore_is_documented_and_narrow(default: Synth) -> None:
    ignored = {
        logical: res["Metadata"]["cfn-lint"]["config"]["ignore_checks"]
        for logical, res in default.data["Resources"].items()
        if "cfn-lint" in res.get("Metadata", {})
    }
    assert len(ignored) == 1
    ((logical, checks),) = ignored.items()
    assert logical.startswith("CustomVpcRestrictDefaultSGCustomResourceProviderHandler")
    assert checks == ["W3005"]
