"""Why an instance was held back: the rule behind every quarantine reason.

A quarantine reason is a sentence for a person ("burned-in: text found on frame 3 could not be
masked"); the *rule* is the stable name an operator groups, counts and alerts on
(``dicomgate status`` groups by it, ``dicomgate_quarantined_total{rule}`` counts by it).  Reasons
never carry a value, only the rule and where (attribute keyword, frame, region count).

The rule is derived from the stage and the reason's wording, so rows written before rules
existed group correctly too; :func:`rule_of` is the one place that knows the wordings.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Rule", "rule_of"]


class Rule(StrEnum):
    """Every reason an instance can be held back, by what must change for it to go out."""

    #: Pixel data may show identifying text that could not be decoded, analysed or masked, or
    #: the site chose ``burned_in_policy = quarantine`` (PS3.15 E.3.1).
    BURNED_IN = "burned-in"
    #: The independent PHI verifier found an identifying value in the de-identified output.
    PHI_CHECK = "phi-check"
    #: The dataset cannot be read, or lacks what delivery needs (UIDs, dates, ...).
    INVALID = "invalid"
    #: The raw copy in the spool is gone or damaged (a disk problem, not the sender's).
    SPOOL = "spool"
    #: De-identifying it crashed the worker process repeatedly.
    WORKER_CRASH = "worker-crash"
    #: The destination refused the object, or stayed unreachable for ``retry_for``.
    DESTINATION = "destination"
    #: Anything else (kept visible rather than hidden in a bigger group).
    OTHER = "other"


_BY_PREFIX: tuple[tuple[str, Rule], ...] = (
    ("burned-in", Rule.BURNED_IN),
    ("phi check", Rule.PHI_CHECK),
    ("phi-check", Rule.PHI_CHECK),
    ("spool file", Rule.SPOOL),
    ("raw copy", Rule.SPOOL),
    ("worker process died", Rule.WORKER_CRASH),
    ("destination", Rule.DESTINATION),
    ("invalid", Rule.INVALID),  # "invalid dataset: ..." (the offline door check), "invalid X"
)

_BY_STAGE: dict[str, Rule] = {
    "validate": Rule.INVALID,
    "spool": Rule.SPOOL,
    "upload": Rule.DESTINATION,
}


def rule_of(stage: str | None, reason: str | None) -> Rule:
    """The rule behind a quarantine ``reason`` recorded at ``stage``."""
    text = (reason or "").strip().lower()
    for prefix, rule in _BY_PREFIX:
        if text.startswith(prefix):
            return rule
    if stage in _BY_STAGE:
        return _BY_STAGE[stage]
    if stage == "deidentify" and text.startswith(("dataset ", "dataset:")):
        return Rule.INVALID  # the door check's wording (dicomgate.checks)
    return Rule.OTHER
