"""Synthesize the app once per configuration variant (offline), shared by every test.

Each variant is synthesized with both cdk-nag packs on, exactly as ``cdk synth`` does: a
finding that is not acknowledged fails the fixture. Templates are read back from the cloud
assembly and checked with ``aws_cdk.assertions.Template.from_json``.
"""

from __future__ import annotations

import json
import os

# jsii prints a banner about Node 20's end of life on every start; the tests do not need it
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from dicomgate_deploy.config import DEPLOY_DIR, parse, read_file
from dicomgate_deploy.nag import UNACKNOWLEDGED, Acknowledged, acknowledged
from dicomgate_deploy.stack import DicomgateStack, build

EXAMPLE = DEPLOY_DIR / "config" / "example.json"

#: an existing VPC (ids only: no lookup), an existing bucket with its own key, TLS with client
#: certificates, an SQS queue, e-mail subscribers, client addresses preserved, Annex E options
EXISTING: dict[str, Any] = {
    "stack_name": "DgExisting",
    "vpc": {
        "vpc_id": "vpc-0123456789abcdef0",
        "availability_zones": ["us-east-1a", "us-east-1b"],
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
        "private_subnet_route_table_ids": ["rtb-0aaaaaaaaaaaaaaaa", "rtb-0bbbbbbbbbbbbbbbb"],
    },
    "network": {
        "allowed_cidrs": ["10.10.0.0/16", "192.0.2.0/28"],
        "preserve_client_ip": True,
        "ops_cidrs": ["10.20.0.0/24"],
    },
    "destination": {
        "bucket_name": "hospital-deliveries",
        "bucket_kms_key_arn": (
            "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
        ),
        "prefix": "dicomgate/out",
    },
    "notifications": {"emails": ["research@example.org"], "sqs_queue": True},
    "alarms": {"emails": ["oncall@example.org"]},
    "tls": {
        "enabled": True,
        "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dicomgate/tls-AbCdEf",
        "mutual": True,
    },
    "deid_options": ["retain_longitudinal_modified_dates", "clean_descriptors"],
    "link_expiry_seconds": 3600,
}

#: a new VPC with an internet-facing NLB (public subnets), TLS without client certificates
PUBLIC: dict[str, Any] = {
    "stack_name": "DgPublic",
    "network": {"allowed_cidrs": ["198.51.100.0/24", "2001:db8::/48"], "internet_facing": True},
    "tls": {
        "enabled": True,
        "secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicomgate/tls",
    },
    "service": {
        "cpu": 2048,
        "memory_mib": 4096,
        "desired_count": 3,
        "min_count": 2,
        "max_count": 10,
    },
}


#: a TLS-only node (no 11112 anywhere) with client certificates, two workers, its audit trail
#: sent to the site's repository, and egress to that repository and to a sender that takes
#: storage commitment reports
TLS_ONLY: dict[str, Any] = {
    "stack_name": "DgTlsOnly",
    "network": {
        "allowed_cidrs": ["10.10.0.0/16"],
        "ops_cidrs": ["10.20.0.0/24"],
        "egress": [
            {"cidr": "10.30.0.10/32", "ports": [6514], "description": "audit repository"},
            {"cidr": "10.10.4.0/24", "ports": [104, 11113], "description": "commitment peers"},
        ],
    },
    "service": {"cpu": 2048, "memory_mib": 4096},
    "tls": {
        "enabled": True,
        "plaintext": False,
        "mutual": True,
        "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:dicomgate/tls-XyZ123",
    },
    "audit": {
        "syslog_url": "tls://audit.hospital.example:6514",
        "syslog_ca_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    },
}


@dataclass
class Synth:
    """One synthesized variant."""

    app: App
    stack: DicomgateStack
    outdir: Path
    data: dict[str, Any]  # the CloudFormation template
    acknowledged: list[Acknowledged]
    report: dict[str, Any] | None  # the policy-validation report, when synthesis failed

    @property
    def template(self) -> Template:
        return Template.from_json(self.data)

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.data["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(type_)
        assert len(found) == 1, f"{len(found)} {type_}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


def synthesize(
    config: dict[str, Any], outdir: Path, *, raw: bool = False, expect_ok: bool = True
) -> Synth:
    """Build and synthesize; ``raw`` records acknowledgments without applying them."""
    context: dict[str, Any] = {UNACKNOWLEDGED: True} if raw else {}
    app = App(outdir=str(outdir), context=context)
    stack = build(app, parse(config))
    report = None
    try:
        app.synth()
    except RuntimeError as exc:
        if "ValidationFailed" not in str(exc):
            raise
        report = json.loads((outdir / "validation-report.json").read_text())
        if expect_ok:
            pytest.fail("cdk-nag findings not acknowledged:\n" + describe(report))
    data = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    return Synth(app, stack, outdir, data, acknowledged(app), report)


def findings(report: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(pack, rule with finding id, construct path) of every finding in a validation report."""
    out = []
    for plugin in (report or {}).get("pluginReports", []):
        for violation in plugin["violations"]:
            for construct in violation["violatingConstructs"]:
                out.append(
                    (plugin["pluginName"], violation["ruleName"], construct["constructPath"])
                )
    return out


def describe(report: dict[str, Any]) -> str:
    return "\n".join(f"  {rule} at {path}" for _, rule, path in findings(report))


@pytest.fixture(scope="session")
def default(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """``config/example.json`` as ``cdk synth`` reads it: new VPC, internal NLB, TLS off."""
    return synthesize(read_file(EXAMPLE), tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="session")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(EXISTING, tmp_path_factory.mktemp("existing"))


@pytest.fixture(scope="session")
def public(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(PUBLIC, tmp_path_factory.mktemp("public"))


@pytest.fixture(scope="session")
def tls_only(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(TLS_ONLY, tmp_path_factory.mktemp("tls_only"))


@pytest.fixture(scope="session", params=["default", "existing", "public", "tls_only"])
def variant(request: pytest.FixtureRequest) -> Iterator[Synth]:
    """Each variant in turn, for checks that hold for all of them."""
    yield request.getfixturevalue(request.param)
