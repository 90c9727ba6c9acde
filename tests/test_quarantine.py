"""Quarantine reasons group by rule, whatever the wording after the rule."""

from __future__ import annotations

import pytest

from dicomgate.quarantine import Rule, rule_of


@pytest.mark.parametrize(
    ("stage", "reason", "rule"),
    [
        ("deidentify", "burned-in annotation: BurnedInAnnotation is YES", Rule.BURNED_IN),
        ("deidentify", "burned-in: frame 3: 2 text regions could not be masked", Rule.BURNED_IN),
        ("verify", "PHI check failed: 2 finding(s): name found in X", Rule.PHI_CHECK),
        ("validate", "invalid StudyDate", Rule.INVALID),
        ("validate", "dataset cannot be read: InvalidDicomError", Rule.INVALID),
        ("deidentify", "dataset ends inside an element header", Rule.INVALID),
        ("spool", "raw copy missing", Rule.SPOOL),
        ("received", "spool file missing at start-up", Rule.SPOOL),
        ("process", "worker process died 3 times", Rule.WORKER_CRASH),
        ("upload", "destination unavailable for 600 s", Rule.DESTINATION),
        ("upload", "AccessDenied: refused", Rule.DESTINATION),
        ("process", "something new", Rule.OTHER),
        (None, None, Rule.OTHER),
    ],
)
def test_rule_of(stage: str | None, reason: str | None, rule: Rule) -> None:
    assert rule_of(stage, reason) is rule
