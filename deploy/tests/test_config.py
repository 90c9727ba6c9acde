"""The typed configuration: sources, merging, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dicomgate_deploy.config import ConfigError, DeployConfig, from_context, parse, read_file
from tests.conftest import EXAMPLE

BASE: dict[str, Any] = {"network": {"allowed_cidrs": ["10.0.0.0/8"]}}


def _context(values: dict[str, Any]) -> Any:
    return values.get


def test_example_file_defaults() -> None:
    config = parse(read_file(EXAMPLE))
    assert isinstance(config, DeployConfig)
    assert config.vpc.vpc_id is None
    assert (config.service.cpu, config.service.memory_mib) == (1024, 2048)
    assert (config.service.min_count, config.service.desired_count, config.service.max_count) == (
        2,
        2,
        6,
    )
    assert config.tls.enabled is False
    assert config.destination.bucket_name is None
    assert config.link_expiry_seconds == 21600


def test_context_overrides_file_key_by_key(tmp_path: Path) -> None:
    inline = json.dumps({"service": {"desired_count": 3, "max_count": 8}})
    config = from_context(_context({"config": str(EXAMPLE), "dicomgate": inline}))
    assert config.service.desired_count == 3
    assert config.service.max_count == 8
    assert config.service.cpu == 1024  # kept from the file
    assert config.network.allowed_cidrs == ["10.10.0.0/16"]


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'stack_name = "Site"\ndeid_options = ["retain_uids"]\n'
        '[network]\nallowed_cidrs = ["172.16.0.0/12"]\n'
        "[tls]\nenabled = true\n"
        'secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tls"\n'
    )
    config = from_context(_context({"config": str(path)}))
    assert config.stack_name == "Site"
    assert config.tls.enabled
    assert config.deid_options == ["retain_uids"]


def test_no_configuration() -> None:
    with pytest.raises(ConfigError, match="no configuration"):
        from_context(_context({}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"network": {"allowed_cidrs": []}}, "network.allowed_cidrs: List should have at least 1"),
        ({"network": {"allowed_cidrs": ["0.0.0.0/0"]}}, "whole internet"),
        ({"network": {"allowed_cidrs": ["10.0.0.1/8"]}}, "not a network in CIDR notation"),
        ({"service": {"cpu": 1024, "memory_mib": 1024}}, "memory_mib 1024 is not valid"),
        ({"service": {"cpu": 300}}, "cpu must be one of"),
        ({"service": {"min_count": 3, "desired_count": 2}}, "min_count <= desired_count"),
        ({"service": {"environment": {"FOO": "1"}}}, "not a DICOMGATE_* setting"),
        ({"service": {"environment": {"DICOMGATE_STATE": "sqlite"}}}, "may not set"),
        ({"service": {"log_retention_days": 100}}, "log_retention_days must be one of"),
        ({"vpc": {"vpc_id": "vpc-0123456789abcdef0"}}, "private_subnet_ids in at least two"),
        ({"tls": {"enabled": True}}, "needs secret_arn"),
        ({"tls": {"plaintext": False}}, "tls: plaintext false (TLS only) needs enabled"),
        ({"service": {"environment": {"DICOMGATE_WORKERS": "4"}}}, "may not set"),
        ({"service": {"environment": {"DICOMGATE_AUDIT_FILE": "/x"}}}, "may not set"),
        ({"service": {"environment": {"DICOMGATE_PLAINTEXT": "false"}}}, "may not set"),
        (
            {
                "network": {
                    "allowed_cidrs": ["10.0.0.0/8"],
                    "egress": [{"cidr": "0.0.0.0/0", "ports": [104]}],
                }
            },
            "network.egress.0.cidr",
        ),
        (
            {
                "network": {
                    "allowed_cidrs": ["10.0.0.0/8"],
                    "egress": [{"cidr": "10.1.0.0/16", "ports": []}],
                }
            },
            "network.egress.0.ports",
        ),
        (
            {
                "network": {
                    "allowed_cidrs": ["10.0.0.0/8"],
                    "egress": [{"cidr": "10.1.0.0/16", "ports": [0]}],
                }
            },
            "0 is not a TCP port",
        ),
        ({"audit": {"syslog_url": "udp://audit:514"}}, "audit.syslog_url"),
        ({"audit": {"enabled": False, "syslog_url": "tls://audit"}}, "needs the audit trail"),
        ({"audit": {"syslog_ca_pem": "-----BEGIN CERTIFICATE-----"}}, "syslog_ca_pem is for"),
        (
            {
                "audit": {
                    "syslog_url": "tls://audit",
                    "syslog_ca_pem": "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----",
                }
            },
            "holds a private key",
        ),
        ({"vpc": {"flow_logs": False}}, "existing vpc_id only"),
        ({"link_expiry_seconds": 8 * 86400}, "link_expiry_seconds"),
        ({"deid_options": ["retain_everything"]}, "deid_options.0"),
        ({"servic": {}}, "servic: unknown key"),
        ({"notifications": {"emails": ["nobody"]}}, "not an e-mail address"),
        ({"destination": {"bucket_name": "Bad_Bucket"}}, "destination.bucket_name"),
        (
            {
                "network": {"internet_facing": True, "allowed_cidrs": ["10.0.0.0/8"]},
                "vpc": {
                    "vpc_id": "vpc-0123456789abcdef0",
                    "availability_zones": ["a", "b"],
                    "private_subnet_ids": ["s1", "s2"],
                    "private_subnet_route_table_ids": ["r1", "r2"],
                },
            },
            "needs vpc.public_subnet_ids",
        ),
    ],
)
def test_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    data = json.loads(json.dumps(BASE))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(ConfigError) as info:
        parse(data, where="site.json")
    assert message in str(info.value)
    assert str(info.value).startswith("site.json: ")
