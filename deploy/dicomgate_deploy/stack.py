"""The stack: encryption, network, storage, service and monitoring, and its outputs."""

from __future__ import annotations

from aws_cdk import App, CfnOutput, Environment, RemovalPolicy, Stack
from constructs import Construct

from dicomgate_deploy.config import DeployConfig
from dicomgate_deploy.encryption import Encryption
from dicomgate_deploy.monitoring import Monitoring
from dicomgate_deploy.nag import add_packs
from dicomgate_deploy.network import Network
from dicomgate_deploy.service import Service
from dicomgate_deploy.storage import Storage


class DicomgateStack(Stack):
    def __init__(self, scope: Construct, config: DeployConfig) -> None:
        env = (
            Environment(account=config.account, region=config.region)
            if config.account or config.region
            else None
        )
        super().__init__(
            scope,
            config.stack_name,
            env=env,
            description="dicomgate: DICOM C-STORE gateway that de-identifies (PS3.15 Annex E) "
            "and delivers to S3 (ECS Fargate behind an NLB)",
        )
        self.config = config
        removal = (
            RemovalPolicy.RETAIN if config.removal_policy == "RETAIN" else RemovalPolicy.DESTROY
        )
        self.encryption = Encryption(
            self, "Encryption", stack_name=config.stack_name, removal=removal
        )
        key = self.encryption.key
        self.network = Network(self, "Network", config=config, key=key, removal=removal)
        self.storage = Storage(
            self, "Storage", config=config, key=key, network=self.network, removal=removal
        )
        self.service = Service(
            self,
            "Service",
            config=config,
            key=key,
            network=self.network,
            storage=self.storage,
            removal=removal,
        )
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, key=key, service=self.service
        )

        self._lint_metadata()

        outputs = {
            "DicomEndpoint": self.service.nlb.load_balancer_dns_name,
            "DeliveryBucket": self.storage.bucket.bucket_name,
            "StateTable": self.storage.table.table_name,
            "PseudonymKeySecret": self.storage.key_secret.secret_arn,
            "NotificationTopic": self.storage.topic.topic_arn,
            "AlarmTopic": self.monitoring.topic.topic_arn,
            "LogGroup": self.service.log_group.log_group_name,
            "Cluster": self.service.cluster.cluster_name,
            "ServiceName": self.service.service.service_name,
        }
        if self.storage.queue is not None:
            outputs["NotificationQueue"] = self.storage.queue.queue_url
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

    def _lint_metadata(self) -> None:
        """cfn-lint's documented ignores, written on the resources they are about."""
        provider = self.node.try_find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
        if provider is not None:
            handler = provider.node.find_child("Handler")
            # CDK's provider declares DependsOn its role *and* reads the role's Arn: W3005
            # ("dependency already enforced") is about CDK's generated code, and harmless.
            handler.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})


#: CDK feature flags the stack relies on (set on the app unless the context already has them)
FEATURE_FLAGS = {
    # S3 server access logs are admitted by a bucket policy, not the legacy log-delivery ACL
    # (which would need ObjectWriter ownership)
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}


def build(app: App, config: DeployConfig, *, nag: bool = True) -> DicomgateStack:
    """Add the stack to ``app``; with ``nag`` both cdk-nag packs check it at synthesis."""
    for flag, value in FEATURE_FLAGS.items():
        if app.node.try_get_context(flag) is None:
            app.node.set_context(flag, value)
    stack = DicomgateStack(app, config)
    if nag:
        add_packs(app)
    return stack
