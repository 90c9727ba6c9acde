"""VPC, subnets, endpoints, flow logs and security groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match

from tests.conftest import EXISTING, Synth, synthesize


def _service_name(endpoint: dict[str, Any]) -> str:
    """The endpoint's service (``s3``, ``ecr.api``...) from its synthesized ServiceName."""
    name = endpoint["Properties"]["ServiceName"]
    if isinstance(name, dict):  # {"Fn::Join": ["", ["com.amazonaws.", {"Ref": region}, ".s3"]]}
        name = "".join(p for p in name["Fn::Join"][1] if isinstance(p, str))
    return name.removeprefix("com.amazonaws.").lstrip(".")


def test_new_vpc_two_azs_isolated_no_nat(default: Synth) -> None:
    default.template.resource_count_is("AWS::EC2::VPC", 1)
    default.template.resource_count_is("AWS::EC2::NatGateway", 0)
    default.template.resource_count_is("AWS::EC2::InternetGateway", 0)  # internal NLB
    subnets = default.resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    azs = [s["Properties"]["AvailabilityZone"] for s in subnets.values()]
    assert azs[0] != azs[1]
    for subnet in subnets.values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    # no route to anywhere but the VPC (and the gateway endpoints' prefix lists)
    default.template.resource_count_is("AWS::EC2::Route", 0)
    # the default security group is closed (CDK's custom resource: CloudFormation cannot)
    default.template.resource_count_is("Custom::VpcRestrictDefaultSG", 1)


def test_internet_facing_nlb_gets_public_subnets_tasks_stay_private(public: Synth) -> None:
    subnets = public.resources("AWS::EC2::Subnet")
    public_ids = {
        k
        for k, s in subnets.items()
        if {"Key": "aws-cdk:subnet-type", "Value": "Public"} in s["Properties"]["Tags"]
    }
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    public.template.resource_count_is("AWS::EC2::InternetGateway", 1)
    private_ids = set(subnets) - public_ids
    assert len(public_ids) == 2 and len(private_ids) == 2
    public.template.resource_count_is("AWS::EC2::NatGateway", 0)
    _, nlb = public.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert nlb["Properties"]["Scheme"] == "internet-facing"
    assert {s["Ref"] for s in nlb["Properties"]["Subnets"]} == public_ids
    _, service = public.one("AWS::ECS::Service")
    config = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert {s["Ref"] for s in config["Subnets"]} == private_ids
    assert config["AssignPublicIp"] == "DISABLED"


def test_existing_vpc_by_ids_without_lookup(existing: Synth) -> None:
    existing.template.resource_count_is("AWS::EC2::VPC", 0)
    existing.template.resource_count_is("AWS::EC2::Subnet", 0)
    _, service = existing.one("AWS::ECS::Service")
    config = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert config["Subnets"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    # nothing was left for a context lookup: `cdk synth` would not need AWS credentials
    manifest = json.loads((existing.outdir / "manifest.json").read_text())
    assert "missing" not in manifest
    gateways = [
        e
        for e in existing.resources("AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway"
    ]
    for gateway in gateways:
        assert gateway["Properties"]["RouteTableIds"] == [
            "rtb-0aaaaaaaaaaaaaaaa",
            "rtb-0bbbbbbbbbbbbbbbb",
        ]


def test_endpoints(variant: Synth) -> None:
    endpoints = variant.resources("AWS::EC2::VPCEndpoint").values()
    gateway = {
        _service_name(e) for e in endpoints if e["Properties"].get("VpcEndpointType") == "Gateway"
    }
    interface = {
        _service_name(e): e
        for e in endpoints
        if e["Properties"].get("VpcEndpointType") == "Interface"
    }
    assert gateway == {"s3", "dynamodb"}
    expected = {"ecr.api", "ecr.dkr", "logs", "secretsmanager", "kms", "sns"}
    if variant.stack.storage.queue is not None:
        expected.add("sqs")
    assert set(interface) == expected
    endpoint_sg = variant.logical_id(variant.stack.network.endpoint_sg)
    task_sg = variant.logical_id(variant.stack.network.task_sg)
    for endpoint in interface.values():
        assert endpoint["Properties"]["PrivateDnsEnabled"] is True
        assert endpoint["Properties"]["SecurityGroupIds"] == [
            {"Fn::GetAtt": [endpoint_sg, "GroupId"]}
        ]
    # the endpoints' only inbound rule: HTTPS from the tasks
    variant.template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "GroupId": {"Fn::GetAtt": [endpoint_sg, "GroupId"]},
            "SourceSecurityGroupId": {"Fn::GetAtt": [task_sg, "GroupId"]},
            "FromPort": 443,
            "ToPort": 443,
            "IpProtocol": "tcp",
        },
    )
    sg = variant.data["Resources"][endpoint_sg]["Properties"]
    assert "SecurityGroupIngress" not in sg


def test_flow_logs_all_traffic_encrypted(variant: Synth) -> None:
    log_group = variant.logical_id(variant.stack.network.flow_log_group)
    key = variant.logical_id(variant.stack.encryption.key)
    variant.template.has_resource_properties(
        "AWS::EC2::FlowLog",
        {
            "TrafficType": "ALL",
            "LogDestinationType": "cloud-watch-logs",
            "LogGroupName": {"Ref": log_group},
            "ResourceType": "VPC",
        },
    )
    variant.template.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": Match.string_like_regexp("^/dicomgate/.+/vpc-flow-logs$"),
            "KmsKeyId": {"Fn::GetAtt": [key, "Arn"]},
            "RetentionInDays": 365,
        },
    )


def _ingress(s: Synth) -> list[dict[str, Any]]:
    """Every inbound rule of every security group (inline and separate resources)."""
    rules = []
    for logical, group in s.resources("AWS::EC2::SecurityGroup").items():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            rules.append(rule | {"GroupId": {"Fn::GetAtt": [logical, "GroupId"]}})
    rules += [r["Properties"] for r in s.resources("AWS::EC2::SecurityGroupIngress").values()]
    return rules


def test_dicom_ports_open_to_allowed_networks_only(variant: Synth) -> None:
    config = variant.stack.config
    nlb_sg = {"Fn::GetAtt": [variant.logical_id(variant.stack.network.nlb_sg), "GroupId"]}
    task_sg = {"Fn::GetAtt": [variant.logical_id(variant.stack.network.task_sg), "GroupId"]}
    ports = ([11112] if config.tls.plaintext else []) + ([2762] if config.tls.enabled else [])
    rules = _ingress(variant)
    for rule in rules:
        assert rule.get("CidrIp") != "0.0.0.0/0"
        assert rule.get("CidrIpv6") != "::/0"
    nlb_rules = [r for r in rules if r["GroupId"] == nlb_sg]
    expected = {(cidr, port) for cidr in config.network.allowed_cidrs for port in ports}
    assert {(r.get("CidrIp") or r.get("CidrIpv6"), r["FromPort"]) for r in nlb_rules} == expected
    assert all(r["FromPort"] == r["ToPort"] and r["IpProtocol"] == "tcp" for r in nlb_rules)
    task_rules = [r for r in rules if r["GroupId"] == task_sg]
    from_nlb = {r["FromPort"] for r in task_rules if r.get("SourceSecurityGroupId") == nlb_sg}
    assert from_nlb == set(ports)
    from_cidrs = {
        (r.get("CidrIp") or r.get("CidrIpv6"), r["FromPort"])
        for r in task_rules
        if "SourceSecurityGroupId" not in r
    }
    expected_task = {(c, 8080) for c in config.network.ops_cidrs}  # 8080..8080+workers-1
    if config.network.preserve_client_ip:
        expected_task |= expected  # the task sees the sender's address
    assert from_cidrs == expected_task


def test_explicit_egress(default: Synth) -> None:
    net = default.stack.network
    for sg in (net.nlb_sg, net.task_sg, net.efs_sg, net.endpoint_sg):
        props = default.data["Resources"][default.logical_id(sg)]["Properties"]
        for rule in props.get("SecurityGroupEgress", []):
            # allow_all_outbound=False leaves CDK's placeholder (255.255.255.255/32, icmp 252)
            # or HTTPS to the endpoints; never "all traffic"
            assert rule["IpProtocol"] != "-1", (sg.node.path, rule)
    egress = [r["Properties"] for r in default.resources("AWS::EC2::SecurityGroupEgress").values()]
    ports = sorted(r["FromPort"] for r in egress)
    assert ports == [2049, 11112]  # tasks -> EFS, NLB -> tasks
    task = default.data["Resources"][default.logical_id(net.task_sg)]["Properties"]
    assert task["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "HTTPS to VPC endpoints (AWS APIs)",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]


def test_existing_vpc_with_its_own_endpoints_and_flow_logs(tmp_path: Path) -> None:
    """An existing VPC that already has endpoints and flow logs: the stack adds neither, and
    still synthesizes with no unacknowledged finding."""
    config = json.loads(json.dumps(EXISTING))
    config["vpc"] |= {"create_endpoints": False, "flow_logs": False}
    s = synthesize(config, tmp_path)
    s.template.resource_count_is("AWS::EC2::VPCEndpoint", 0)
    s.template.resource_count_is("AWS::EC2::FlowLog", 0)
    assert len(s.resources("AWS::Logs::LogGroup")) == 1  # the node's


def test_egress_rules_for_commitment_peers_and_audit(tls_only: Synth, default: Synth) -> None:
    """network.egress: one TCP rule of the tasks' group per CIDR and port, nothing wider; none
    by default (the tasks reach the endpoints and the spool only)."""
    task_sg = tls_only.logical_id(tls_only.stack.network.task_sg)
    rules = tls_only.data["Resources"][task_sg]["Properties"]["SecurityGroupEgress"]
    assert sorted((r.get("CidrIp"), r["FromPort"], r["ToPort"]) for r in rules) == [
        ("0.0.0.0/0", 443, 443),
        ("10.10.4.0/24", 104, 104),
        ("10.10.4.0/24", 11113, 11113),
        ("10.30.0.10/32", 6514, 6514),
    ]
    assert all(r["IpProtocol"] == "tcp" for r in rules)
    descriptions = {r["Description"] for r in rules}
    assert "commitment peers (TCP 104)" in descriptions
    assert "audit repository (TCP 6514)" in descriptions
    task = default.data["Resources"][default.logical_id(default.stack.network.task_sg)]
    assert len(task["Properties"]["SecurityGroupEgress"]) == 1  # HTTPS only


def test_tls_only_has_no_plaintext_port(tls_only: Synth) -> None:
    """TLS only: 11112 is in no rule, listener or mapping; the ops rule spans both workers."""
    assert "11112" not in json.dumps(
        {k: v for k, v in tls_only.data["Resources"].items() if "SecurityGroup" in v["Type"]}
    )
    task_sg = {"Fn::GetAtt": [tls_only.logical_id(tls_only.stack.network.task_sg), "GroupId"]}
    ops = [
        r
        for r in _ingress(tls_only)
        if r["GroupId"] == task_sg and r.get("CidrIp") == "10.20.0.0/24"
    ]
    assert [(r["FromPort"], r["ToPort"]) for r in ops] == [(8080, 8081)]
