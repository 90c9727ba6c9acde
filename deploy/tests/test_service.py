"""Cluster, task definition (env and secrets wiring, spool mount), service, NLB, scaling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dicomgate_deploy import service as svc
from tests.conftest import TLS_ONLY, Synth, synthesize

NLB_IDLE_TIMEOUT = 350  # seconds, fixed for NLB TCP flows


def _container(s: Synth) -> dict[str, Any]:
    _, task = s.one("AWS::ECS::TaskDefinition")
    (container,) = task["Properties"]["ContainerDefinitions"]
    return container


def _env(s: Synth) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in _container(s)["Environment"]}


def test_cluster_container_insights(variant: Synth) -> None:
    variant.template.has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
    )


def test_task_definition(default: Synth) -> None:
    _, task = default.one("AWS::ECS::TaskDefinition")
    props = task["Properties"]
    assert (props["Cpu"], props["Memory"]) == ("1024", "2048")
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["NetworkMode"] == "awsvpc"
    assert props["EphemeralStorage"] == {"SizeInGiB": 30}
    task_role = default.logical_id(default.stack.service.task_role)
    execution_role = default.logical_id(default.stack.service.execution_role)
    assert task_role != execution_role
    assert props["TaskRoleArn"] == {"Fn::GetAtt": [task_role, "Arn"]}
    assert props["ExecutionRoleArn"] == {"Fn::GetAtt": [execution_role, "Arn"]}
    # the spool and the audit files: EFS through an access point each, TLS in transit, IAM
    st = default.stack.storage
    assert props["Volumes"] == [
        {
            "Name": name,
            "EFSVolumeConfiguration": {
                "FilesystemId": {"Ref": default.logical_id(st.spool)},
                "TransitEncryption": "ENABLED",
                "AuthorizationConfig": {
                    "AccessPointId": {"Ref": default.logical_id(point)},
                    "IAM": "ENABLED",
                },
            },
        }
        for name, point in (("spool", st.access_point), ("audit", st.audit_access_point))
    ]
    container = _container(default)
    assert container["MountPoints"] == [
        {"ContainerPath": "/mnt/dicomgate-spool", "ReadOnly": False, "SourceVolume": "spool"},
        {"ContainerPath": "/mnt/dicomgate-audit", "ReadOnly": False, "SourceVolume": "audit"},
    ]
    assert container["StopTimeout"] == 120
    assert container["Essential"] is True
    assert container["User"] == "10001:10001"
    assert container["HealthCheck"]["Command"] == ["CMD", "dicomgate", "echo", "127.0.0.1", "11112"]
    assert [p["ContainerPort"] for p in container["PortMappings"]] == [11112, 8080]
    # the image's tini, then a shell step that names the task's audit file, then the node
    assert container["EntryPoint"] == ["/usr/bin/tini", "--", "/bin/sh", "-c"]
    (script,) = container["Command"]
    assert script.startswith("set -eu; umask 077; ")
    assert script.endswith("; exec dicomgate serve")
    assert "Secrets" not in container
    logging = container["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["awslogs-group"] == {
        "Ref": default.logical_id(default.stack.service.log_group)
    }
    # built from the repository's Dockerfile (an image asset)
    assert "cdk-hnb659fds-container-assets" in json.dumps(container["Image"])


def test_environment_wiring(default: Synth) -> None:
    env = _env(default)
    st = default.stack.storage
    table = default.logical_id(st.table)
    assert env["DICOMGATE_STATE"] == {"Fn::Join": ["", ["dynamodb://", {"Ref": table}]]}
    assert env["DICOMGATE_STATE_CREATE"] == "false"
    assert env["DICOMGATE_SECRET_KEY_ARN"] == {"Ref": default.logical_id(st.key_secret)}
    assert env["DICOMGATE_DESTINATION"] == {
        "Fn::Join": ["", ["s3://", {"Ref": default.logical_id(st.bucket)}, "/studies"]]
    }
    assert env["DICOMGATE_S3_SSE"] == "aws:kms"
    assert env["DICOMGATE_S3_KMS_KEY_ID"] == {
        "Fn::GetAtt": [default.logical_id(default.stack.encryption.key), "Arn"]
    }
    assert env["DICOMGATE_NOTIFY_SNS_TOPIC_ARN"] == {"Ref": default.logical_id(st.topic)}
    assert env["DICOMGATE_SPOOL_DIR"] == "/mnt/dicomgate-spool"
    assert env["DICOMGATE_DATA_DIR"] == "/var/lib/dicomgate"
    assert env["DICOMGATE_LINK_EXPIRY"] == "21600"
    assert env["DICOMGATE_DEID_OPTIONS"] == "[]"
    assert env["DICOMGATE_METRICS_EMF"] == "true"
    assert env["DICOMGATE_OPS_HOST"] == "0.0.0.0"
    assert env["DICOMGATE_OPS_PORT"] == "8080"
    assert env["DICOMGATE_SHUTDOWN_TIMEOUT"] == "90"
    assert env["DICOMGATE_WORKERS"] == "1"  # one node process per vCPU of the task
    assert "DICOMGATE_NODE_ID" not in env  # each task is its own node (host name + pid)
    assert "DICOMGATE_NOTIFY_SQS_QUEUE_URL" not in env
    assert not any(k.startswith("DICOMGATE_TLS_") for k in env)
    assert "DICOMGATE_PLAINTEXT" not in env  # the node's default: the plaintext listener
    assert "DICOMGATE_AUDIT_ENABLED" not in env  # the node's default: on
    assert "DICOMGATE_AUDIT_SYSLOG_URL" not in env
    # no secret value in the environment: only names and ARNs
    assert "DICOMGATE_SECRET_KEY" not in env


def test_environment_names_are_node_settings(variant: Synth) -> None:
    """Every DICOMGATE_* variable the stack sets (the shell step's DICOMGATE_AUDIT_FILE too) is
    a setting of the node (dicomgate/config.py), so none is ignored with a warning."""
    import ast
    import re

    from dicomgate_deploy.config import REPO_ROOT

    tree = ast.parse((REPO_ROOT / "dicomgate" / "config.py").read_text(encoding="utf-8"))
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    fields = {
        n.target.id
        for n in settings.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    known = {f"DICOMGATE_{f.upper()}" for f in fields}
    names = {n for n in _env(variant) if n.startswith("DICOMGATE_")}
    names |= set(re.findall(r"DICOMGATE_[A-Z0-9_]+", " ".join(_container(variant)["Command"])))
    assert "DICOMGATE_TLS_CERT_FILE" in known and "DICOMGATE_AUDIT_FILE" in known
    assert names - known == set()


def test_existing_bucket_queue_and_options(existing: Synth) -> None:
    env = _env(existing)
    assert env["DICOMGATE_DESTINATION"] == "s3://hospital-deliveries/dicomgate/out"
    assert env["DICOMGATE_S3_KMS_KEY_ID"] == (
        "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    )
    assert env["DICOMGATE_NOTIFY_SQS_QUEUE_URL"] == {
        "Ref": existing.logical_id(existing.stack.storage.queue)
    }
    assert json.loads(env["DICOMGATE_DEID_OPTIONS"]) == [
        "retain_longitudinal_modified_dates",
        "clean_descriptors",
    ]
    assert env["DICOMGATE_LINK_EXPIRY"] == "3600"
    # client addresses preserved: the node checks them itself too (and admits its health check)
    assert json.loads(env["DICOMGATE_ALLOWED_NETWORKS"]) == [
        "10.10.0.0/16",
        "192.0.2.0/28",
        "127.0.0.0/8",
    ]


def test_tls_secrets_wiring(existing: Synth, public: Synth) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dicomgate/tls-AbCdEf"
    container = _container(existing)
    assert container["Secrets"] == [
        {"Name": "TLS_CERT_PEM", "ValueFrom": f"{arn}:cert::"},
        {"Name": "TLS_KEY_PEM", "ValueFrom": f"{arn}:key::"},
        {"Name": "TLS_CA_PEM", "ValueFrom": f"{arn}:ca::"},
    ]
    env = _env(existing)
    assert env["DICOMGATE_TLS_PORT"] == "2762"
    assert env["DICOMGATE_TLS_CERT_FILE"] == "/var/lib/dicomgate/tls/cert.pem"
    assert env["DICOMGATE_TLS_KEY_FILE"] == "/var/lib/dicomgate/tls/key.pem"
    assert env["DICOMGATE_TLS_CA_FILE"] == "/var/lib/dicomgate/tls/ca.pem"
    assert container["EntryPoint"] == ["/usr/bin/tini", "--", "/bin/sh", "-c"]
    (script,) = container["Command"]
    steps = script.split("; ")
    assert steps[:3] == ["set -eu", "umask 077", "mkdir -p /var/lib/dicomgate/tls"]
    for variable, name in (("TLS_CERT_PEM", "cert"), ("TLS_KEY_PEM", "key"), ("TLS_CA_PEM", "ca")):
        assert f"printf '%s\\n' \"${variable}\" > /var/lib/dicomgate/tls/{name}.pem" in steps
    assert "unset TLS_CERT_PEM TLS_KEY_PEM TLS_CA_PEM" in steps
    assert steps[-1] == "exec dicomgate serve"
    # the container listens where the NLB sends: 11112 and the TLS port
    assert [p["ContainerPort"] for p in container["PortMappings"]] == [11112, 2762, 8080]
    assert env.get("DICOMGATE_PLAINTEXT") is None  # both listeners
    assert container["HealthCheck"]["Command"] == ["CMD", "dicomgate", "echo", "127.0.0.1", "11112"]
    # the execution role (not the task role) reads the TLS secret
    policy = next(
        iter(
            p
            for p in existing.resources("AWS::IAM::Policy").values()
            if p["Properties"]["Roles"]
            == [{"Ref": existing.logical_id(existing.stack.service.execution_role)}]
        )
    )
    assert any(
        s["Resource"] == arn and "secretsmanager:GetSecretValue" in s["Action"]
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )
    # 2 vCPUs: two worker processes, each with its ops port
    assert _env(public)["DICOMGATE_WORKERS"] == "2"
    assert [p["ContainerPort"] for p in _container(public)["PortMappings"]] == [
        11112,
        2762,
        8080,
        8081,
    ]
    # without client certificates there is no CA
    names = [s["Name"] for s in _container(public)["Secrets"]]
    assert names == ["TLS_CERT_PEM", "TLS_KEY_PEM"]
    assert "DICOMGATE_TLS_CA_FILE" not in _env(public)


def test_tls_only(tls_only: Synth) -> None:
    """TLS only: DICOMGATE_PLAINTEXT=false, only the TLS port is mapped and balanced, and the
    health check speaks TLS to the node itself, with the client certificate mutual TLS needs."""
    env = _env(tls_only)
    assert env["DICOMGATE_PLAINTEXT"] == "false"
    assert env["DICOMGATE_TLS_PORT"] == "2762"
    assert env["DICOMGATE_TLS_CA_FILE"] == "/var/lib/dicomgate/tls/ca.pem"
    assert env["DICOMGATE_WORKERS"] == "2"
    container = _container(tls_only)
    assert [p["ContainerPort"] for p in container["PortMappings"]] == [2762, 8080, 8081]
    assert container["HealthCheck"]["Command"] == [
        "CMD",
        "dicomgate",
        "echo",
        "--tls",
        "--no-verify",
        "--cert",
        "/var/lib/dicomgate/tls/health-cert.pem",
        "--key",
        "/var/lib/dicomgate/tls/health-key.pem",
        "127.0.0.1",
        "2762",
    ]
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dicomgate/tls-XyZ123"
    assert [(s["Name"], s["ValueFrom"]) for s in container["Secrets"]] == [
        ("TLS_CERT_PEM", f"{arn}:cert::"),
        ("TLS_KEY_PEM", f"{arn}:key::"),
        ("TLS_CA_PEM", f"{arn}:ca::"),
        ("TLS_HEALTH_CERT_PEM", f"{arn}:health_cert::"),
        ("TLS_HEALTH_KEY_PEM", f"{arn}:health_key::"),
    ]
    (script,) = container["Command"]
    assert "> /var/lib/dicomgate/tls/health-cert.pem" in script
    # without client certificates, the TLS-only health check presents none
    from dicomgate_deploy.config import parse

    no_mutual = parse({**TLS_ONLY, "tls": {**TLS_ONLY["tls"], "mutual": False}})
    assert svc.health_check_command(no_mutual) == [
        "dicomgate",
        "echo",
        "--tls",
        "--no-verify",
        "127.0.0.1",
        "2762",
    ]


def test_audit_trail_on_efs_per_task(default: Synth, tls_only: Synth) -> None:
    """The audit file is on EFS (task storage is gone with the task), one directory per task
    (tasks must not append to one file over NFS); the syslog URL and CA are wired."""
    (script,) = _container(default)["Command"]
    steps = script.split("; ")
    assert 'task="${ECS_CONTAINER_METADATA_URI_V4:-}"' in steps
    assert 'task="${task##*/}"' in steps
    assert 'export DICOMGATE_AUDIT_FILE="/mnt/dicomgate-audit/$task/audit.log"' in steps
    assert "DICOMGATE_AUDIT_FILE" not in _env(default)
    st = default.stack.storage
    default.template.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "FileSystemId": {"Ref": default.logical_id(st.spool)},
            "PosixUser": {"Uid": "10001", "Gid": "10001"},
            "RootDirectory": {
                "Path": "/dicomgate-audit",
                "CreationInfo": {"OwnerUid": "10001", "OwnerGid": "10001", "Permissions": "700"},
            },
        },
    )
    env = _env(tls_only)
    assert env["DICOMGATE_AUDIT_SYSLOG_URL"] == "tls://audit.hospital.example:6514"
    assert env["DICOMGATE_AUDIT_SYSLOG_CA_FILE"] == "/var/lib/dicomgate/audit-syslog-ca.pem"
    assert env["AUDIT_SYSLOG_CA_PEM"].startswith("-----BEGIN CERTIFICATE-----")
    (script,) = _container(tls_only)["Command"]
    steps = script.split("; ")
    ca_write = "printf '%s\\n' \"$AUDIT_SYSLOG_CA_PEM\" > /var/lib/dicomgate/audit-syslog-ca.pem"
    assert ca_write in steps
    assert steps.index("unset AUDIT_SYSLOG_CA_PEM") > steps.index(ca_write)


def test_audit_trail_off(tmp_path: Path) -> None:
    """audit.enabled false: no audit access point or volume, the node told so, and nothing
    left for the shell step: the image's own entry point."""
    s = synthesize({**TLS_ONLY, "tls": {}, "audit": {"enabled": False}}, tmp_path)
    container = _container(s)
    assert _env(s)["DICOMGATE_AUDIT_ENABLED"] == "false"
    assert "EntryPoint" not in container and "Command" not in container
    assert len(s.resources("AWS::EFS::AccessPoint")) == 1
    assert [v["Name"] for v in s.one("AWS::ECS::TaskDefinition")[1]["Properties"]["Volumes"]] == [
        "spool"
    ]


def test_service_deployment(variant: Synth) -> None:
    _, service = variant.one("AWS::ECS::Service")
    props = service["Properties"]
    config = variant.stack.config
    assert props["LaunchType"] == "FARGATE"
    assert props["DesiredCount"] == config.service.desired_count
    deployment = props["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["MinimumHealthyPercent"] == 100
    assert deployment["MaximumPercent"] == 200
    assert props["HealthCheckGracePeriodSeconds"] == 120
    assert props["EnableExecuteCommand"] is False
    ports = ([11112] if config.tls.plaintext else []) + ([2762] if config.tls.enabled else [])
    assert [lb["ContainerPort"] for lb in props["LoadBalancers"]] == ports
    networking = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert networking["AssignPublicIp"] == "DISABLED"
    assert networking["SecurityGroups"] == [
        {"Fn::GetAtt": [variant.logical_id(variant.stack.network.task_sg), "GroupId"]}
    ]


def test_nlb_listeners_and_targets(variant: Synth) -> None:
    config = variant.stack.config
    ports = ([11112] if config.tls.plaintext else []) + ([2762] if config.tls.enabled else [])
    _, nlb = variant.one("AWS::ElasticLoadBalancingV2::LoadBalancer")
    props = nlb["Properties"]
    assert props["Type"] == "network"
    assert props["Scheme"] == ("internet-facing" if config.network.internet_facing else "internal")
    assert props["SecurityGroups"] == [
        {"Fn::GetAtt": [variant.logical_id(variant.stack.network.nlb_sg), "GroupId"]}
    ]
    attributes = {a["Key"]: a["Value"] for a in props["LoadBalancerAttributes"]}
    assert attributes["load_balancing.cross_zone.enabled"] == "true"
    assert attributes["deletion_protection.enabled"] == "true"
    listeners = variant.resources("AWS::ElasticLoadBalancingV2::Listener").values()
    assert sorted(lis["Properties"]["Port"] for lis in listeners) == sorted(ports)
    groups = variant.resources("AWS::ElasticLoadBalancingV2::TargetGroup")
    for listener in listeners:
        assert listener["Properties"]["Protocol"] == "TCP"
        (action,) = listener["Properties"]["DefaultActions"]
        group = groups[action["TargetGroupArn"]["Ref"]]["Properties"]
        assert group["Port"] == listener["Properties"]["Port"]
        assert group["Protocol"] == "TCP"
        assert group["TargetType"] == "ip"
        assert group["HealthCheckProtocol"] == "TCP"
        assert group["HealthCheckPort"] == "traffic-port"
        attrs = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
        assert attrs["deregistration_delay.timeout_seconds"] == "120"
        assert attrs["deregistration_delay.connection_termination.enabled"] == "false"
        assert attrs["preserve_client_ip.enabled"] == str(config.network.preserve_client_ip).lower()


def test_stop_order_budget() -> None:
    """ECS: deregistration delay, then SIGTERM, then stopTimeout (<= 120 s on Fargate), then
    SIGKILL. The node's association grace must fit inside stopTimeout with room to exit, and
    the whole sequence inside the NLB's idle timeout."""
    stop = svc.STOP_TIMEOUT.to_seconds()
    delay = svc.DEREGISTRATION_DELAY.to_seconds()
    assert stop == 120
    assert stop >= svc.SHUTDOWN_TIMEOUT + 20
    assert delay + stop < NLB_IDLE_TIMEOUT
    assert delay < 300  # shorter than the default, so deployments do not crawl


def test_autoscaling(variant: Synth) -> None:
    config = variant.stack.config.service
    _, target = variant.one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["Properties"]["MinCapacity"] == config.min_count
    assert target["Properties"]["MaxCapacity"] == config.max_count
    assert target["Properties"]["ScalableDimension"] == "ecs:service:DesiredCount"
    policies = variant.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    tracking = [p for p in policies if p["Properties"]["PolicyType"] == "TargetTrackingScaling"]
    (cpu,) = tracking
    spec = cpu["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert spec["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
    }
    assert spec["TargetValue"] == config.cpu_target_percent
    steps = [p for p in policies if p["Properties"]["PolicyType"] == "StepScaling"]
    (backlog,) = steps  # scale-out only
    step = backlog["Properties"]["StepScalingPolicyConfiguration"]
    assert [a["ScalingAdjustment"] for a in step["StepAdjustments"]] == [1, 2]
    assert step["Cooldown"] == 180
    # its alarm: the average Backlog over every node (a Metrics Insights query)
    alarms = [
        a
        for a in variant.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("AlarmActions")
        == [{"Ref": next(k for k, v in variant.data["Resources"].items() if v is backlog)}]
    ]
    (alarm,) = alarms
    (query,) = alarm["Properties"]["Metrics"]
    # every node reports the whole store's backlog: MAX is the deployment's
    assert query["Expression"] == "SELECT MAX(Backlog) FROM SCHEMA(dicomgate, NodeId)"
    assert alarm["Properties"]["Threshold"] == config.backlog_scale_out == 1000


def test_image_asset_stages_only_the_build_context(default: Synth) -> None:
    """from_asset stages the repository root filtered by .dockerignore and ASSET_EXCLUDE:
    the Dockerfile and what it copies, never git, a virtualenv or cdk.out."""
    staged = [p for p in default.outdir.iterdir() if p.is_dir() and p.name.startswith("asset.")]
    contexts = [p for p in staged if (p / "Dockerfile").exists()]
    assert len(contexts) == 1
    names = {p.name for p in contexts[0].iterdir()}
    assert {"Dockerfile", "pyproject.toml", "dicomgate"} <= names
    assert not names & {".git", ".venv", "deploy", "tests", "bench", "cdk.out"}
