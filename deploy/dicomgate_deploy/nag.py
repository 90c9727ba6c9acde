"""cdk-nag 3: the AwsSolutions and HIPAA.Security packs, and acknowledged findings.

Packs run as CDK policy-validation plugins: any finding that is not acknowledged fails
``app.synth()`` (and ``cdk synth``) with a report in ``cdk.out/validation-report.json``.
Every acknowledgment goes through :func:`acknowledge`, which insists on a reason and records
it, so that tests can list them all (:func:`acknowledged`) and the README can quote them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct

#: context key: record acknowledgments without applying them (to list every raw finding)
UNACKNOWLEDGED = "dicomgate:nag-unacknowledged"


@dataclass(frozen=True)
class Acknowledged:
    path: str
    rule: str
    reason: str


# every acknowledgment made while building an app, in order, kept on the app object itself
_ATTRIBUTE = "_dicomgate_acknowledged"


def acknowledged(app: IConstruct) -> list[Acknowledged]:
    """The acknowledgments made in ``app`` (any construct of it)."""
    return list(getattr(app.node.root, _ATTRIBUTE, []))


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``construct`` (and its children) with a reason.

    With the context value ``dicomgate:nag-unacknowledged`` set, the acknowledgment is only
    recorded, not applied: synthesis then reports every finding (tests compare the two lists).
    """
    if len(reason.strip()) < 20:
        raise ValueError(f"{rule}: an acknowledgment needs a real reason")
    if not construct.node.try_get_context(UNACKNOWLEDGED):
        Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
    root = construct.node.root
    if not hasattr(root, _ATTRIBUTE):
        setattr(root, _ATTRIBUTE, [])
    getattr(root, _ATTRIBUTE).append(Acknowledged(construct.node.path, rule, reason))


def add_packs(app: App) -> None:
    """Run both packs over the whole app at synthesis."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    Validations.of(app).add_plugins(HIPAASecurityChecks(app))
