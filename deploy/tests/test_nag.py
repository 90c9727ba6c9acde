"""cdk-nag: AwsSolutions and HIPAA.Security report nothing unacknowledged, every
acknowledgment answers a real finding, and every one carries its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomgate_deploy.config import parse, read_file
from tests.conftest import EXAMPLE, EXISTING, PUBLIC, TLS_ONLY, Synth, findings, synthesize


def test_no_unacknowledged_findings(variant: Synth) -> None:
    # the fixture fails on any finding; synthesis wrote the report's empty form
    assert variant.report is None
    assert findings(variant.report) == []


@pytest.mark.parametrize("config", ["default", "existing", "public", "tls_only"])
def test_every_acknowledgment_is_needed(config: str, tmp_path: Path) -> None:
    """Synthesize with acknowledgments recorded but not applied: the findings must be exactly
    the acknowledged ones (none left over, none acknowledged for nothing)."""
    data = {
        "default": read_file(EXAMPLE),
        "existing": EXISTING,
        "public": PUBLIC,
        "tls_only": TLS_ONLY,
    }[config]
    raw = synthesize(data, tmp_path, raw=True, expect_ok=False)
    assert raw.report is not None
    found = findings(raw.report)
    packs = {pack for pack, _, _ in found}
    assert packs == {"AwsSolutions", "HIPAA.Security"}  # both packs ran
    acknowledged = {(a.rule, a.path) for a in raw.acknowledged}
    unmatched = [
        (rule, path)
        for _, rule, path in found
        if not any(rule == r and (path == p or path.startswith(p + "/")) for r, p in acknowledged)
    ]
    assert unmatched == []
    unused = [
        (r, p)
        for r, p in acknowledged
        if not any(rule == r and (path == p or path.startswith(p + "/")) for _, rule, path in found)
    ]
    assert unused == []
    parse(data)  # (the same configuration the fixture variants use)


def test_acknowledgments_have_reasons(variant: Synth) -> None:
    assert variant.acknowledged
    for ack in variant.acknowledged:
        assert len(ack.reason) >= 40, ack
        assert ack.rule.startswith(("AwsSolutions-", "HIPAA.Security-")), ack
