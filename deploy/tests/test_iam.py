"""Least privilege: every IAM statement names its resource; the task role's statements exactly."""

from __future__ import annotations

import re
from typing import Any

from dicomgate_deploy.config import REPO_ROOT
from tests.conftest import Synth

#: statements allowed ``Resource: *`` (action, where), each because AWS offers no narrower one
WILDCARD_ALLOWED = {
    # ECR's registry login: GetAuthorizationToken has no resource-level permission
    ("ecr:GetAuthorizationToken", "ExecutionRole"),
    # CDK's custom resource that closes the VPC's default security group describes groups
    # first (ec2:Describe* cannot be scoped); its writes name the default group only
}


def _statements(s: Synth) -> list[tuple[str, dict[str, Any]]]:
    """(owner logical id, statement) of every identity policy statement in the template."""
    out = []
    for logical, res in s.data["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            out += [(logical, st) for st in props["PolicyDocument"]["Statement"]]
        if res["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                out += [(logical, st) for st in policy["PolicyDocument"]["Statement"]]
    return out


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def test_no_wildcard_resources_except_where_aws_requires(variant: Synth) -> None:
    for owner, statement in _statements(variant):
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        if "*" not in resources:
            continue
        for action in _actions(statement):
            assert any(
                action == allowed and where in owner for allowed, where in WILDCARD_ALLOWED
            ), f"{owner}: {action} on Resource *"
    # and no wildcard action anywhere
    for owner, statement in _statements(variant):
        for action in _actions(statement):
            assert action.split(":")[1] != "*", (owner, action)


def test_task_role_statements(default: Synth) -> None:
    s = default
    st = s.stack.storage
    (doc,) = s.resources("AWS::IAM::ManagedPolicy").values()
    assert doc["Properties"]["Roles"] == [{"Ref": s.logical_id(s.stack.service.task_role)}]
    statements = {x["Sid"]: x for x in doc["Properties"]["PolicyDocument"]["Statement"]}
    bucket = s.logical_id(st.bucket)
    table = s.logical_id(st.table)
    key = s.logical_id(s.stack.encryption.key)
    assert set(statements) == {
        "DeliveryObjects",
        "DeliveryListPrefix",
        "StateTable",
        "PseudonymKey",
        "NotifyTopic",
        "StackKeyThroughServices",
        "SpoolMount",
    }
    objects = statements["DeliveryObjects"]
    assert sorted(objects["Action"]) == ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
    assert objects["Resource"] == {
        "Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/studies/*"]]
    }
    listing = statements["DeliveryListPrefix"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == {"Fn::GetAtt": [bucket, "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["studies/*"]}}
    state = statements["StateTable"]
    assert set(state["Action"]) == {
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
    }
    assert "dynamodb:CreateTable" not in state["Action"]  # DICOMGATE_STATE_CREATE=false
    assert state["Resource"] == [
        {"Fn::GetAtt": [table, "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": [table, "Arn"]}, "/index/*"]]},
    ]
    assert statements["PseudonymKey"]["Resource"] == {"Ref": s.logical_id(st.key_secret)}
    assert statements["PseudonymKey"]["Action"] == [
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    ]
    assert statements["NotifyTopic"] == {
        "Sid": "NotifyTopic",
        "Effect": "Allow",
        "Action": "sns:Publish",
        "Resource": {"Ref": s.logical_id(st.topic)},
    }
    kms = statements["StackKeyThroughServices"]
    assert kms["Action"] == ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == {"Fn::GetAtt": [key, "Arn"]}
    services = [
        "".join(p for p in v["Fn::Join"][1] if isinstance(p, str))
        for v in kms["Condition"]["StringEquals"]["kms:ViaService"]
    ]
    names = ("s3", "dynamodb", "secretsmanager", "sns", "sqs")
    assert services == [f"{x}..amazonaws.com" for x in names]
    spool = statements["SpoolMount"]
    assert spool["Action"] == ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    assert spool["Resource"] == {"Fn::GetAtt": [s.logical_id(st.spool), "Arn"]}
    # through the spool's and the audit files' access points only
    points = spool["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"]
    assert [p["Fn::Join"][1][-1] for p in points] == [
        {"Ref": s.logical_id(point)}
        for point in (st.access_point, st.audit_access_point)
        if point is not None
    ]
    assert all(":access-point/" in p["Fn::Join"][1] for p in points)
    # the task role has nothing else: no inline policy, no managed AWS policy
    role = s.data["Resources"][s.logical_id(s.stack.service.task_role)]["Properties"]
    assert "Policies" not in role and "ManagedPolicyArns" not in role
    assert not [
        p
        for p in s.resources("AWS::IAM::Policy").values()
        if {"Ref": s.logical_id(s.stack.service.task_role)} in p["Properties"]["Roles"]
    ]


def test_task_role_existing_bucket_key_and_queue(existing: Synth) -> None:
    (doc,) = existing.resources("AWS::IAM::ManagedPolicy").values()
    statements = {x["Sid"]: x for x in doc["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["NotifyQueue"]["Action"] == "sqs:SendMessage"
    assert statements["NotifyQueue"]["Resource"] == {
        "Fn::GetAtt": [existing.logical_id(existing.stack.storage.queue), "Arn"]
    }
    assert statements["DeliveryBucketKey"]["Resource"] == (
        "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    )
    assert statements["DeliveryObjects"]["Resource"] == {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":s3:::hospital-deliveries/dicomgate/out/*"],
        ]
    }


def test_roles_trust_ecs_tasks_of_this_account_only(default: Synth) -> None:
    for role in (default.stack.service.task_role, default.stack.service.execution_role):
        doc = default.data["Resources"][default.logical_id(role)]["Properties"]
        (statement,) = doc["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        assert "aws:SourceArn" in statement["Condition"]["ArnLike"]


def test_execution_role_pulls_and_logs_only(default: Synth) -> None:
    role = {"Ref": default.logical_id(default.stack.service.execution_role)}
    (policy,) = [
        p
        for p in default.resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [role]
    ]
    actions = sorted(
        a for st in policy["Properties"]["PolicyDocument"]["Statement"] for a in _actions(st)
    )
    assert actions == sorted(
        [
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetAuthorizationToken",
            "ecr:GetDownloadUrlForLayer",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        ]
    )


# the node's DynamoDB calls (boto3 client methods) -> the IAM actions that authorize them
_DYNAMODB_ACTIONS = {
    "get_item": {"dynamodb:GetItem"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
    # a transaction is authorized item by item
    "transact_write_items": {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
    },
    "transact_get_items": {"dynamodb:GetItem"},
    "describe_table": {"dynamodb:DescribeTable"},
}
#: calls made only when the node creates the table (DICOMGATE_STATE_CREATE=false: never)
_CREATE_ONLY = {"create_table", "describe_time_to_live", "update_time_to_live", "get_waiter"}


def test_task_role_covers_every_dynamodb_call_of_the_node(default: Synth) -> None:
    """Read dicomgate/state/dynamodb.py for the client calls it makes: each must be granted
    (a new call in the node without a grant here would fail in production only)."""
    source = (REPO_ROOT / "dicomgate" / "state" / "dynamodb.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"self\._client\.([a-z_]+)\(", source)) - {"close"} - _CREATE_ONLY
    unknown = calls - set(_DYNAMODB_ACTIONS)
    assert not unknown, f"map these calls to IAM actions: {sorted(unknown)}"
    (doc,) = default.resources("AWS::IAM::ManagedPolicy").values()
    statements = {x["Sid"]: x for x in doc["Properties"]["PolicyDocument"]["Statement"]}
    granted = set(statements["StateTable"]["Action"])
    for call in sorted(calls):
        assert _DYNAMODB_ACTIONS[call] <= granted, call
