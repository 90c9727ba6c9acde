"""The running node: ECS cluster, Fargate service and task definition, roles, the NLB, scaling.

Stopping a task (deployment, scale-in, replacement) goes, per the ECS documentation:

1. the task is deregistered from the NLB's target groups: no *new* associations reach it, open
   ones carry on (connection termination is off, so the NLB keeps forwarding their packets);
2. the target group's **deregistration delay** runs (:data:`DEREGISTRATION_DELAY`, 120 s here
   instead of the default 300 s);
3. only then SIGTERM: the node stops accepting, gives open associations ``shutdown_timeout``
   (:data:`SHUTDOWN_TIMEOUT`, 90 s) and drains its pipeline;
4. SIGKILL after ``stopTimeout`` (:data:`STOP_TIMEOUT`, 120 s, Fargate's maximum).

So an open association has 120 + 90 = 210 s to finish before its task goes, and the node still
has 30 s after the association grace to exit cleanly. The delay is not longer because every
replacement waits for it (a rolling deployment of N tasks waits about N x 120 s), and because
nothing acknowledged is at risk when an association is cut anyway: acknowledged instances are
fsync'd on EFS and recorded in DynamoDB, other nodes adopt them, and a cut association's
unacknowledged instance is resent by its sender (C-STORE has no partial success). NLB's TCP idle
timeout (350 s) is longer than the whole sequence, so it never cuts a live association first.
"""

from __future__ import annotations

import json
import re

from aws_cdk import Aws, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from dicomgate_deploy import metrics
from dicomgate_deploy.config import REPO_ROOT, DeployConfig
from dicomgate_deploy.encryption import log_group_prefix
from dicomgate_deploy.nag import acknowledge
from dicomgate_deploy.network import DICOM_PORT, OPS_PORT, Network, retention
from dicomgate_deploy.storage import CONTAINER_UID, Storage

CONTAINER_NAME = "dicomgate"
#: the image's data directory (Dockerfile: DICOMGATE_DATA_DIR, VOLUME, owned by uid 10001); on
#: Fargate it lives on the task's ephemeral storage: staging and lock files, nothing durable
DATA_DIR = "/var/lib/dicomgate"
#: where the EFS access point is mounted: the spool every node shares
SPOOL_DIR = "/mnt/dicomgate-spool"
#: where the audit access point is mounted: one directory per task (see _container_settings)
AUDIT_DIR = "/mnt/dicomgate-audit"
TLS_DIR = f"{DATA_DIR}/tls"
AUDIT_CA_FILE = f"{DATA_DIR}/audit-syslog-ca.pem"
#: the image's init (Dockerfile ENTRYPOINT): kept in front of the start-up shell step
TINI = "/usr/bin/tini"
STOP_TIMEOUT = Duration.seconds(120)
SHUTDOWN_TIMEOUT = 90
DEREGISTRATION_DELAY = Duration.seconds(120)
HEALTH_CHECK_GRACE = Duration.seconds(120)

# Excluded from the image asset besides the repository's .dockerignore (which CDK reads), so
# that staging never copies a virtualenv, the CDK output or git into cdk.out.
ASSET_EXCLUDE = [
    ".git",
    ".venv",
    "**/.venv",
    "deploy",
    "bench/.work",
    "dicomgate-data",
    "**/cdk.out",
    "**/__pycache__",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
]

_COMPLETE_SECRET_ARN = re.compile(r"-[A-Za-z0-9]{6}$")


class Service(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        key: kms.IKey,
        network: Network,
        storage: Storage,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        c = config

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=network.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"{log_group_prefix(c.stack_name)}node",
            encryption_key=key,
            retention=retention(c.service.log_retention_days),
            removal_policy=removal,
        )

        # -- roles ----------------------------------------------------------------------------
        trust = iam.ServicePrincipal(
            "ecs-tasks.amazonaws.com",
            conditions={
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                "ArnLike": {
                    "aws:SourceArn": f"arn:{Aws.PARTITION}:ecs:{Aws.REGION}:{Aws.ACCOUNT_ID}:*"
                },
            },
        )
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=trust,
            description="dicomgate: ECS pulls the image, writes the logs, reads the TLS secret",
        )
        acknowledge(
            self.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions (AWS requires "
            "Resource *); every other statement CDK grants names the image repository or the "
            "log group.",
        )
        acknowledge(
            self.execution_role,
            "HIPAA.Security-IAMNoInlinePolicy",
            "CDK writes its generated grants (pull from the image asset repository, write to "
            "the node's log group, read the TLS secret) as this role's own policy; they name "
            "those resources only, and a managed policy would be no narrower.",
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=trust,
            description="dicomgate node: its bucket prefix, state table, key secret, topic, spool",
        )
        self._task_policy(c, key, storage)
        storage.spool.add_to_resource_policy(
            iam.PolicyStatement(
                sid="TaskRoleThroughMountTargets",
                principals=[self.task_role],
                actions=["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                conditions={"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}},
            )
        )

        # -- task definition ------------------------------------------------------------------
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=c.service.cpu,
            memory_limit_mib=c.service.memory_mib,
            ephemeral_storage_gib=c.service.ephemeral_storage_gib,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.X86_64,
            ),
            task_role=self.task_role,
            execution_role=self.execution_role,
            volumes=[
                ecs.Volume(
                    name=name,
                    efs_volume_configuration=ecs.EfsVolumeConfiguration(
                        file_system_id=storage.spool.file_system_id,
                        transit_encryption="ENABLED",
                        authorization_config=ecs.AuthorizationConfig(
                            access_point_id=point.access_point_id, iam="ENABLED"
                        ),
                    ),
                )
                for name, point in self._efs_volumes(storage)
            ],
        )
        if c.service.image_uri:
            image = ecs.ContainerImage.from_registry(c.service.image_uri)
        else:
            # The repository's Dockerfile; CDK builds and pushes it at deploy time (synthesis
            # only stages the build context, filtered by .dockerignore and ASSET_EXCLUDE).
            image = ecs.ContainerImage.from_asset(
                str(REPO_ROOT),
                file="Dockerfile",
                exclude=ASSET_EXCLUDE,
                platform=ecr_assets.Platform.LINUX_AMD64,
            )

        environment, secrets, entry_point, command = self._container_settings(c, storage)
        # each worker process serves its own ops port (ops_port + i)
        ports = [*network.dicom_ports, *network.ops_ports]
        self.container = self.task_definition.add_container(
            CONTAINER_NAME,
            container_name=CONTAINER_NAME,
            image=image,
            essential=True,
            environment=environment,
            secrets=secrets or None,
            entry_point=entry_point,
            command=command,
            port_mappings=[
                ecs.PortMapping(container_port=p, protocol=ecs.Protocol.TCP) for p in ports
            ],
            # the image's own HEALTHCHECK, restated (ECS does not read Docker's); over TLS when
            # the node is TLS only
            health_check=ecs.HealthCheck(
                command=["CMD", *health_check_command(c)],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(15),
                retries=3,
                start_period=Duration.seconds(60),
            ),
            stop_timeout=STOP_TIMEOUT,
            user=f"{CONTAINER_UID}:{CONTAINER_UID}",
            ulimits=[ecs.Ulimit(name=ecs.UlimitName.NOFILE, soft_limit=65536, hard_limit=65536)],
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="node",
                log_group=self.log_group,
                # Non-blocking: a slow log endpoint must not stall C-STORE handling (logs and
                # EMF lines may be dropped past a 25 MiB buffer; acknowledged data never is).
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=Size.mebibytes(25),
            ),
        )
        self.container.add_mount_points(
            ecs.MountPoint(container_path=SPOOL_DIR, source_volume="spool", read_only=False)
        )
        if storage.audit_access_point is not None:
            self.container.add_mount_points(
                ecs.MountPoint(container_path=AUDIT_DIR, source_volume="audit", read_only=False)
            )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds settings and resource names/ARNs only (table, bucket, "
            "topic, the key secret's ARN) and, with audit.syslog_ca_pem, a public CA "
            "certificate; the key and TLS material come from Secrets Manager.",
        )

        # -- service --------------------------------------------------------------------------
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=c.service.desired_count,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            vpc_subnets=network.task_subnets,
            security_groups=[network.task_sg],
            assign_public_ip=False,
            health_check_grace_period=HEALTH_CHECK_GRACE,
            platform_version=ecs.FargatePlatformVersion.LATEST,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            enable_ecs_managed_tags=True,
            enable_execute_command=False,
            availability_zone_rebalancing=ecs.AvailabilityZoneRebalancing.ENABLED,
        )

        # -- NLB ------------------------------------------------------------------------------
        self.nlb = elbv2.NetworkLoadBalancer(
            self,
            "Nlb",
            vpc=network.vpc,
            internet_facing=c.network.internet_facing,
            vpc_subnets=network.nlb_subnets,
            security_groups=[network.nlb_sg],
            cross_zone_enabled=True,
            deletion_protection=c.network.deletion_protection,
        )
        acknowledge(
            self.nlb,
            "AwsSolutions-ELB2",
            "NLB access logs are written for TLS listeners only; these listeners are TCP (DICOM "
            "TLS terminates in the container so mutual TLS is end to end). Connections are "
            "recorded by VPC flow logs and the node's association log.",
        )
        acknowledge(
            self.nlb,
            "HIPAA.Security-ELBLoggingEnabled",
            "NLB access logs are written for TLS listeners only; these listeners are TCP (DICOM "
            "TLS terminates in the container). Connections are in VPC flow logs and node logs.",
        )
        self.target_groups: dict[int, elbv2.NetworkTargetGroup] = {}
        no_acm = (
            "TCP listeners on purpose: DICOM TLS (2762) terminates in the container so that "
            "mutual TLS with the senders' client certificates is end to end, which an NLB TLS "
            "listener with an ACM certificate would break; 11112 is DICOM's plaintext port, "
            "open to the allowed networks only."
        )
        for port in network.dicom_ports:
            group = elbv2.NetworkTargetGroup(
                self,
                f"Targets{port}",
                vpc=network.vpc,
                port=port,
                protocol=elbv2.Protocol.TCP,
                target_type=elbv2.TargetType.IP,
                deregistration_delay=DEREGISTRATION_DELAY,
                connection_termination=False,
                preserve_client_ip=c.network.preserve_client_ip,
                health_check=elbv2.HealthCheck(
                    enabled=True,
                    protocol=elbv2.Protocol.TCP,
                    port="traffic-port",
                    interval=Duration.seconds(30),
                    healthy_threshold_count=2,
                    unhealthy_threshold_count=2,
                ),
                targets=[
                    self.service.load_balancer_target(
                        container_name=CONTAINER_NAME, container_port=port
                    )
                ],
            )
            listener = self.nlb.add_listener(
                f"Dicom{port}",
                port=port,
                protocol=elbv2.Protocol.TCP,
                default_target_groups=[group],
            )
            acknowledge(listener, "HIPAA.Security-ELBv2ACMCertificateRequired", no_acm)
            self.target_groups[port] = group

        # -- scaling --------------------------------------------------------------------------
        self.scaling = self.service.auto_scale_task_count(
            min_capacity=c.service.min_count, max_capacity=c.service.max_count
        )
        self.scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=c.service.cpu_target_percent,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        # Backlog: step scaling on a Metrics Insights query. Every node reports the backlog of
        # the whole state store (instances acknowledged, not yet uploaded or quarantined), so
        # MAX over the nodes is the deployment's backlog (SUM would count it once per node);
        # node ids are not known in advance, hence a query, and target tracking takes none.
        # While the backlog stays above the threshold a task is added every cooldown (two
        # above four times it). Scale-out only: the CPU policy scales in, which Application
        # Auto Scaling does only when no policy asks for more.
        high = c.service.backlog_scale_out
        self.scaling.scale_on_metric(
            "Backlog",
            metric=metrics.query(metrics.BACKLOG, "MAX", Duration.minutes(1)),
            scaling_steps=[
                appscaling.ScalingInterval(lower=high, upper=4 * high, change=+1),
                appscaling.ScalingInterval(lower=4 * high, change=+2),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            evaluation_periods=3,
            cooldown=Duration.minutes(3),
        )

    # ------------------------------------------------------------------------------------------
    def _container_settings(
        self, c: DeployConfig, storage: Storage
    ) -> tuple[dict[str, str], dict[str, ecs.Secret], list[str] | None, list[str] | None]:
        env = {
            "DICOMGATE_AE_TITLE": c.service.ae_title,
            "DICOMGATE_PORT": str(DICOM_PORT),
            "DICOMGATE_DATA_DIR": DATA_DIR,
            "DICOMGATE_SPOOL_DIR": SPOOL_DIR,
            "DICOMGATE_STATE": f"dynamodb://{storage.table.table_name}",
            # the table is this stack's: a node never creates one (it refuses to start instead)
            "DICOMGATE_STATE_CREATE": "false",
            "DICOMGATE_SECRET_KEY_ARN": storage.key_secret.secret_arn,
            "DICOMGATE_DESTINATION": f"s3://{storage.bucket.bucket_name}/{c.destination.prefix}",
            "DICOMGATE_S3_SSE": "aws:kms",
            "DICOMGATE_S3_KMS_KEY_ID": storage.bucket_key.key_arn,
            "DICOMGATE_S3_REGION": Aws.REGION,
            "DICOMGATE_NOTIFY_SNS_TOPIC_ARN": storage.topic.topic_arn,
            "DICOMGATE_LINK_EXPIRY": str(c.link_expiry_seconds),
            "DICOMGATE_DEID_OPTIONS": json.dumps(list(c.deid_options)),
            "DICOMGATE_METRICS_EMF": "true",
            "DICOMGATE_OPS_HOST": "0.0.0.0",  # noqa: S104 (the task's own interface)
            "DICOMGATE_OPS_PORT": str(OPS_PORT),
            "DICOMGATE_LOG_FORMAT": "json",
            "DICOMGATE_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
            "DICOMGATE_WORKERS": str(c.service.workers),
            "AWS_REGION": Aws.REGION,
        }
        if storage.queue is not None:
            env["DICOMGATE_NOTIFY_SQS_QUEUE_URL"] = storage.queue.queue_url
        if c.network.preserve_client_ip:
            # the node sees senders' real addresses: let it check them too
            env["DICOMGATE_ALLOWED_NETWORKS"] = json.dumps(
                [*c.network.allowed_cidrs, "127.0.0.0/8"]
            )
        env.update(c.service.environment)

        secrets: dict[str, ecs.Secret] = {}
        # A short /bin/sh step before the node (behind the image's tini) when the task needs
        # files made at start: TLS material (the node reads files; ECS injects secrets as
        # variables), the audit trail's per-task file on EFS, the audit repository's CA.
        script: list[str] = []
        if c.tls.enabled:
            script += self._tls_settings(c, env, secrets)
        if not c.tls.plaintext:
            env["DICOMGATE_PLAINTEXT"] = "false"
        if c.audit.enabled:
            script += self._audit_settings(c, env)
        else:
            env["DICOMGATE_AUDIT_ENABLED"] = "false"
        if not script:
            return env, secrets, None, None  # the image's own entry point: tini, dicomgate serve
        script = ["set -eu", "umask 077", *script, "exec dicomgate serve"]
        return env, secrets, [TINI, "--", "/bin/sh", "-c"], ["; ".join(script)]

    def _tls_settings(
        self, c: DeployConfig, env: dict[str, str], secrets: dict[str, ecs.Secret]
    ) -> list[str]:
        """DICOM TLS: the node (dicomgate/config.py: tls_port, tls_cert_file, tls_key_file,
        tls_ca_file) opens its TLS listener on ``tls.port`` when certificate and key files are
        set. The shell step writes them from the secret to the task's own storage (mode 0600,
        uid 10001) and removes the variables; the execution role reads the secret."""
        assert c.tls.secret_arn is not None  # checked by the config
        tls_key = (
            kms.Key.from_key_arn(self, "TlsSecretKey", c.tls.secret_kms_key_arn)
            if c.tls.secret_kms_key_arn
            else None
        )
        if _COMPLETE_SECRET_ARN.search(c.tls.secret_arn):
            tls_secret = secretsmanager.Secret.from_secret_attributes(
                self, "TlsSecret", secret_complete_arn=c.tls.secret_arn, encryption_key=tls_key
            )
        else:
            tls_secret = secretsmanager.Secret.from_secret_attributes(
                self, "TlsSecret", secret_partial_arn=c.tls.secret_arn, encryption_key=tls_key
            )
        env.update(
            {
                "DICOMGATE_TLS_PORT": str(c.tls.port),
                "DICOMGATE_TLS_CERT_FILE": f"{TLS_DIR}/cert.pem",
                "DICOMGATE_TLS_KEY_FILE": f"{TLS_DIR}/key.pem",
            }
        )
        files = {"TLS_CERT_PEM": ("cert", "cert.pem"), "TLS_KEY_PEM": ("key", "key.pem")}
        if c.tls.mutual:
            env["DICOMGATE_TLS_CA_FILE"] = f"{TLS_DIR}/ca.pem"
            files["TLS_CA_PEM"] = ("ca", "ca.pem")
            if not c.tls.plaintext:
                # the TLS-only health check must present a client certificate the node trusts
                files["TLS_HEALTH_CERT_PEM"] = ("health_cert", "health-cert.pem")
                files["TLS_HEALTH_KEY_PEM"] = ("health_key", "health-key.pem")
        script = [f"mkdir -p {TLS_DIR}"]
        for variable, (field, name) in files.items():
            secrets[variable] = ecs.Secret.from_secrets_manager(tls_secret, field)
            script.append(f"printf '%s\\n' \"${variable}\" > {TLS_DIR}/{name}")
        script.append("unset " + " ".join(files))
        return script

    def _audit_settings(self, c: DeployConfig, env: dict[str, str]) -> list[str]:
        """The audit trail's local file on EFS, one per task. Not one file for all tasks: the
        node appends with O_APPEND, which NFS does not make atomic across clients (two tasks'
        messages could overwrite each other), and its syslog sender keeps one cursor per file
        (``<file>.cursor``, taken by whoever holds ``<file>.cursor.lock``). Only the processes
        of one task (``serve --workers``) share a file, as the node supports. The directory is
        named after the task (the last part of ECS_CONTAINER_METADATA_URI_V4, which is unique
        per task; the host name if it is missing), so the file outlives the task."""
        script = [
            'task="${ECS_CONTAINER_METADATA_URI_V4:-}"',
            'task="${task##*/}"',
            '[ -n "$task" ] || task="$(cat /proc/sys/kernel/hostname)"',
            f'export DICOMGATE_AUDIT_FILE="{AUDIT_DIR}/$task/audit.log"',
        ]
        if c.audit.syslog_url:
            env["DICOMGATE_AUDIT_SYSLOG_URL"] = c.audit.syslog_url
        if c.audit.syslog_ca_pem:
            env["AUDIT_SYSLOG_CA_PEM"] = c.audit.syslog_ca_pem
            env["DICOMGATE_AUDIT_SYSLOG_CA_FILE"] = AUDIT_CA_FILE
            script += [
                f"printf '%s\\n' \"$AUDIT_SYSLOG_CA_PEM\" > {AUDIT_CA_FILE}",
                "unset AUDIT_SYSLOG_CA_PEM",
            ]
        return script

    @staticmethod
    def _efs_volumes(storage: Storage) -> list[tuple[str, efs.IAccessPoint]]:
        volumes: list[tuple[str, efs.IAccessPoint]] = [("spool", storage.access_point)]
        if storage.audit_access_point is not None:
            volumes.append(("audit", storage.audit_access_point))
        return volumes

    def _task_policy(self, c: DeployConfig, key: kms.IKey, storage: Storage) -> None:
        """The task role's statements, each scoped to the one resource it is for, in one
        customer-managed policy (HIPAA.Security-IAMNoInlinePolicy)."""
        role = iam.ManagedPolicy(
            self,
            "TaskPolicy",
            description="dicomgate node: its bucket prefix, state table, key secret, topic, "
            "spool and the stack's KMS key through those services",
            roles=[self.task_role],
        )
        prefix = c.destination.prefix
        bucket = storage.bucket
        role.add_statements(
            iam.PolicyStatement(
                sid="DeliveryObjects",
                actions=["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects(f"{prefix}/*")],
            )
        )
        role.add_statements(
            iam.PolicyStatement(
                # lets HeadObject tell "missing" (404) from "forbidden" (403) under the prefix
                sid="DeliveryListPrefix",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
            )
        )
        table = storage.table
        role.add_statements(
            iam.PolicyStatement(
                sid="StateTable",
                # TransactWriteItems is authorized per item by Put/Update/Delete/ConditionCheck
                actions=[
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
                ],
                resources=[table.table_arn, f"{table.table_arn}/index/*"],
            )
        )
        role.add_statements(
            iam.PolicyStatement(
                sid="PseudonymKey",
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[storage.key_secret.secret_arn],
            )
        )
        role.add_statements(
            iam.PolicyStatement(
                sid="NotifyTopic", actions=["sns:Publish"], resources=[storage.topic.topic_arn]
            )
        )
        if storage.queue is not None:
            role.add_statements(
                iam.PolicyStatement(
                    sid="NotifyQueue",
                    actions=["sqs:SendMessage"],
                    resources=[storage.queue.queue_arn],
                )
            )
        via = [
            f"{service}.{Aws.REGION}.amazonaws.com"
            for service in ("s3", "dynamodb", "secretsmanager", "sns", "sqs")
        ]
        role.add_statements(
            iam.PolicyStatement(
                sid="StackKeyThroughServices",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                resources=[key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": via}},
            )
        )
        if storage.bucket_key is not key:
            role.add_statements(
                iam.PolicyStatement(
                    sid="DeliveryBucketKey",
                    actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[storage.bucket_key.key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"s3.{Aws.REGION}.amazonaws.com"}
                    },
                )
            )
        role.add_statements(
            iam.PolicyStatement(
                sid="SpoolMount",
                actions=["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
                resources=[storage.spool.file_system_arn],
                conditions={
                    "StringEquals": {
                        "elasticfilesystem:AccessPointArn": [
                            point.access_point_arn for _, point in self._efs_volumes(storage)
                        ]
                    }
                },
            )
        )
        if c.destination.bucket_name is None:
            objects = f"<{_logical(storage.bucket, 'Arn')}>/{prefix}/*"
        else:
            objects = f"arn:<AWS::Partition>:s3:::{c.destination.bucket_name}/{prefix}/*"
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::{objects}]",
            "Object-level actions on every key under the delivery prefix: the node writes "
            "objects named by pseudonymized UIDs that do not exist before the upload.",
        )
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::<{_logical(storage.table, 'Arn')}>/index/*]",
            "Queries on the state table's own indexes (seven sparse GSIs); no other table.",
        )


def health_check_command(c: DeployConfig) -> list[str]:
    """The container's health check: a C-ECHO to the node itself over loopback. Plaintext on
    11112 while that listener is open; TLS only: over TLS on the TLS port, without checking the
    node's own certificate (it names the NLB's DNS name, not 127.0.0.1), presenting the
    secret's ``health_cert``/``health_key`` when the node requires client certificates."""
    if c.tls.plaintext:
        return ["dicomgate", "echo", "127.0.0.1", str(DICOM_PORT)]
    command = ["dicomgate", "echo", "--tls", "--no-verify"]
    if c.tls.mutual:
        command += ["--cert", f"{TLS_DIR}/health-cert.pem", "--key", f"{TLS_DIR}/health-key.pem"]
    return [*command, "127.0.0.1", str(c.tls.port)]


def _logical(construct: Construct, attribute: str) -> str:
    """cdk-nag's name of a resource attribute in an IAM5 finding id: ``<LogicalIdArn>``."""
    cfn = construct.node.default_child
    return f"{Stack.of(construct).get_logical_id(cfn)}.{attribute}"  # type: ignore[arg-type]
