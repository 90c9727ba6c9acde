"""The customer-managed KMS key every store of the stack is encrypted with."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


def log_group_prefix(stack_name: str) -> str:
    """Every log group of the stack is named under this prefix (the key policy names it)."""
    return f"/dicomgate/{stack_name}/"


class Encryption(Construct):
    """One CMK, rotation on, for S3, DynamoDB, EFS, Secrets Manager, SNS, SQS and the logs.

    The key policy keeps CDK's default (the account administers the key through IAM; roles of
    this stack get use of it through their own policies, scoped with ``kms:ViaService``) and adds
    the two AWS services that use the key as themselves: CloudWatch Logs, for this stack's log
    groups only, and CloudWatch alarms, which publish to the encrypted alarm topic.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, stack_name: str, removal: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"dicomgate {stack_name}: delivery bucket, state table, spool, key "
            "secret, topics, queues and logs",
            enable_key_rotation=True,
            rotation_period=Duration.days(365),
            alias=f"alias/dicomgate/{stack_name}",
            removal_policy=removal,
            pending_window=Duration.days(30),
        )
        # CloudWatch Logs encrypts with the key as the service; only this stack's log groups.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsThisStack",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],  # in a key policy "*" means this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
                            f"{log_group_prefix(stack_name)}*"
                        )
                    }
                },
            )
        )
        # CloudWatch alarms publish to the CMK-encrypted alarm topic as the service.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsToEncryptedTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )
