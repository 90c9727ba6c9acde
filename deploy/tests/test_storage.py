"""The CMK and everything it encrypts: buckets, state table, secret, spool, topics, queues, logs."""

from __future__ import annotations

import ast
import re
from typing import Any

from dicomgate_deploy.config import REPO_ROOT
from dicomgate_deploy.storage import (
    TABLE_INDEXES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    TABLE_TTL_ATTRIBUTE,
)
from tests.conftest import Synth

NODE_DYNAMODB = REPO_ROOT / "dicomgate" / "state" / "dynamodb.py"


def _key_arn(s: Synth) -> dict[str, Any]:
    return {"Fn::GetAtt": [s.logical_id(s.stack.encryption.key), "Arn"]}


def test_key_rotation_and_policy(default: Synth) -> None:
    logical, key = default.one("AWS::KMS::Key")
    props = key["Properties"]
    assert props["EnableKeyRotation"] is True
    assert props["RotationPeriodInDays"] == 365
    assert key["DeletionPolicy"] == "Retain"
    statements = props["KeyPolicy"]["Statement"]
    logs = [s for s in statements if s.get("Sid") == "CloudWatchLogsThisStack"]
    assert len(logs) == 1
    principal = logs[0]["Principal"]["Service"]
    assert "logs." in str(principal)
    # CloudWatch Logs may use the key for this stack's log groups only
    condition = logs[0]["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
    assert ":log-group:/dicomgate/Dicomgate/*" in str(condition)
    alarms = [s for s in statements if s.get("Sid") == "CloudWatchAlarmsToEncryptedTopic"]
    assert alarms[0]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert alarms[0]["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    default.template.has_resource_properties(
        "AWS::KMS::Alias",
        {"AliasName": "alias/dicomgate/Dicomgate", "TargetKeyId": {"Fn::GetAtt": [logical, "Arn"]}},
    )


def test_everything_encrypted_with_the_cmk(variant: Synth) -> None:
    key = _key_arn(variant)
    t = variant.template
    t.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}},
    )
    t.has_resource_properties("AWS::EFS::FileSystem", {"Encrypted": True, "KmsKeyId": key})
    t.has_resource_properties("AWS::SecretsManager::Secret", {"KmsKeyId": key})
    for topic in variant.resources("AWS::SNS::Topic").values():
        assert topic["Properties"]["KmsMasterKeyId"] == key
    for queue in variant.resources("AWS::SQS::Queue").values():
        assert queue["Properties"]["KmsMasterKeyId"] == key
    groups = variant.resources("AWS::Logs::LogGroup").values()
    assert len(groups) == 2  # the node's and the flow logs
    for group in groups:
        assert group["Properties"]["KmsKeyId"] == key


def test_delivery_bucket(default: Synth) -> None:
    bucket = default.logical_id(default.stack.storage.bucket)
    log_bucket = default.logical_id(default.stack.storage.log_bucket)
    props = default.data["Resources"][bucket]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {
                "KMSMasterKeyID": _key_arn(default),
                "SSEAlgorithm": "aws:kms",
            },
        }
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": log_bucket},
        "LogFilePrefix": "delivery/",
    }
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == "studies/"
    assert rule["Status"] == "Enabled"
    assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert default.data["Resources"][bucket]["DeletionPolicy"] == "Retain"


def _denies_plain_http(s: Synth, bucket_logical: str) -> bool:
    for policy in s.resources("AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] != {"Ref": bucket_logical}:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
            ):
                return True
    return False


def test_buckets_tls_only_and_log_bucket(default: Synth) -> None:
    bucket = default.logical_id(default.stack.storage.bucket)
    log_bucket = default.logical_id(default.stack.storage.log_bucket)
    assert _denies_plain_http(default, bucket)
    assert _denies_plain_http(default, log_bucket)
    log = default.data["Resources"][log_bucket]["Properties"]
    # server access logs can only go to an SSE-S3 bucket
    assert log["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert log["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    assert log["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 365
    # S3 log delivery is admitted by a bucket policy (no ACLs)
    policy = next(
        p
        for p in default.resources("AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": log_bucket}
    )
    principals = [s.get("Principal") for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    assert {"Service": "logging.s3.amazonaws.com"} in principals


def test_existing_bucket_is_not_created(existing: Synth) -> None:
    existing.template.resource_count_is("AWS::S3::Bucket", 0)
    assert existing.stack.storage.log_bucket is None


def _node_schema() -> tuple[Any, str, str]:
    """The node's ``_INDEXES`` and ``TTL_ATTRIBUTE``, read from its source (not imported:
    deploy/.venv does not install the node and its dependencies)."""
    tree = ast.parse(NODE_DYNAMODB.read_text(encoding="utf-8"))
    indexes = ttl = None
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == "_INDEXES":
            indexes = ast.literal_eval(node.value)  # type: ignore[arg-type]
        if isinstance(target, ast.Name) and target.id == "TTL_ATTRIBUTE":
            ttl = ast.literal_eval(node.value)  # type: ignore[arg-type]
    assert indexes is not None and ttl is not None
    return indexes, ttl, NODE_DYNAMODB.read_text(encoding="utf-8")


def test_state_table_matches_the_node_schema(default: Synth) -> None:
    """The table CDK creates is the one the node would create (dicomgate/state/dynamodb.py):
    same keys, same indexes and projections, same TTL attribute."""
    node_indexes, node_ttl, source = _node_schema()
    assert re.search(r'"AttributeName": "pk", "KeyType": "HASH"', source)
    assert re.search(r'"AttributeName": "sk", "KeyType": "RANGE"', source)
    assert ("pk", "sk", node_ttl) == (TABLE_PARTITION_KEY, TABLE_SORT_KEY, TABLE_TTL_ATTRIBUTE)

    def projection(spec: dict[str, Any]) -> dict[str, Any]:
        out = {"ProjectionType": spec["ProjectionType"]}
        if "NonKeyAttributes" in spec:
            out["NonKeyAttributes"] = sorted(spec["NonKeyAttributes"])
        return out

    expected = {
        name: (hash_key, range_key, projection(spec))
        for name, hash_key, range_key, spec in node_indexes
    }
    _, table = default.one("AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    actual = {}
    for gsi in props["GlobalSecondaryIndexes"]:
        keys = {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        actual[gsi["IndexName"]] = (keys["HASH"], keys.get("RANGE"), projection(gsi["Projection"]))
    assert actual == expected
    # every key attribute is a string, as the node declares them
    attributes = {"pk", "sk"} | {a for h, r, _ in expected.values() for a in (h, r) if a}
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)
    ]
    assert len(TABLE_INDEXES) == len(node_indexes)


def test_state_table_settings(default: Synth) -> None:
    _, table = default.one("AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"


def test_pseudonym_key_secret_generated(default: Synth) -> None:
    _, secret = default.one("AWS::SecretsManager::Secret")
    generate = secret["Properties"]["GenerateSecretString"]
    assert generate["PasswordLength"] == 64  # the node needs >= 32 bytes
    assert generate["ExcludePunctuation"] is True
    assert secret["DeletionPolicy"] == "Retain"
    default.template.resource_count_is("AWS::SecretsManager::RotationSchedule", 0)


def test_spool_efs(variant: Synth) -> None:
    fs = variant.logical_id(variant.stack.storage.spool)
    _, props = variant.one("AWS::EFS::FileSystem")
    assert props["Properties"]["ThroughputMode"] == "elastic"
    assert props["Properties"]["PerformanceMode"] == "generalPurpose"
    targets = variant.resources("AWS::EFS::MountTarget").values()
    assert len(targets) == 2  # one per AZ
    efs_sg = {"Fn::GetAtt": [variant.logical_id(variant.stack.network.efs_sg), "GroupId"]}
    subnets = []
    for target in targets:
        assert target["Properties"]["FileSystemId"] == {"Ref": fs}
        assert target["Properties"]["SecurityGroups"] == [efs_sg]
        subnets.append(str(target["Properties"]["SubnetId"]))
    assert len(set(subnets)) == 2
    variant.template.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "FileSystemId": {"Ref": fs},
            "PosixUser": {"Uid": "10001", "Gid": "10001"},
            "RootDirectory": {
                "Path": "/dicomgate-spool",
                "CreationInfo": {"OwnerUid": "10001", "OwnerGid": "10001", "Permissions": "750"},
            },
        },
    )
    # NFS reaches the spool from the tasks only
    task_sg = {"Fn::GetAtt": [variant.logical_id(variant.stack.network.task_sg), "GroupId"]}
    variant.template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"GroupId": efs_sg, "SourceSecurityGroupId": task_sg, "FromPort": 2049, "ToPort": 2049},
    )


def test_topics_queue_and_subscriptions(existing: Synth, default: Synth) -> None:
    default.template.resource_count_is("AWS::SNS::Subscription", 0)
    default.template.resource_count_is("AWS::SQS::Queue", 0)
    topic = existing.logical_id(existing.stack.storage.topic)
    alarm_topic = existing.logical_id(existing.stack.monitoring.topic)
    existing.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "research@example.org", "TopicArn": {"Ref": topic}},
    )
    existing.template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "oncall@example.org", "TopicArn": {"Ref": alarm_topic}},
    )
    queues = existing.resources("AWS::SQS::Queue")
    assert len(queues) == 2  # the queue and its dead-letter queue
    queue = existing.logical_id(existing.stack.storage.queue)
    redrive = queues[queue]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == 5
    # topics and queues refuse plain HTTP
    for policy in existing.resources("AWS::SNS::TopicPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )
    for policy in existing.resources("AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" for s in statements)


def test_spool_file_system_policy(default: Synth) -> None:
    """Only the task role may mount (no root access), through a mount target, over TLS."""
    _, fs = default.one("AWS::EFS::FileSystem")
    statements = {s["Sid"]: s for s in fs["Properties"]["FileSystemPolicy"]["Statement"]}
    assert set(statements) == {"DenyWithoutTls", "TaskRoleThroughMountTargets"}
    deny = statements["DenyWithoutTls"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    allow = statements["TaskRoleThroughMountTargets"]
    assert allow["Principal"] == {
        "AWS": {"Fn::GetAtt": [default.logical_id(default.stack.service.task_role), "Arn"]}
    }
    assert allow["Action"] == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert allow["Condition"] == {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}
