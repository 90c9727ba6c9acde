"""What the node keeps and where it delivers: buckets, the state table, the key secret, the
shared spool (EFS) and the notification topic (and queue)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dicomgate_deploy.config import DeployConfig
from dicomgate_deploy.nag import acknowledge
from dicomgate_deploy.network import Network

#: the container's uid/gid (the Dockerfile's non-root user); the spool's access point writes as it
CONTAINER_UID = 10001

# The node's DynamoDB schema (dicomgate/state/dynamodb.py): string keys pk/sk, TTL on ``ttl``,
# and these sparse global secondary indexes (name, hash key, range key, projected attributes;
# None: ALL, () : KEYS_ONLY). Every key attribute is a string. The node checks at start-up
# that each index exists; deploy/tests/test_state_table.py checks this copy against the node's.
TABLE_PARTITION_KEY = "pk"
TABLE_SORT_KEY = "sk"
TABLE_TTL_ATTRIBUTE = "ttl"
TABLE_INDEXES: tuple[tuple[str, str, str | None, tuple[str, ...] | None], ...] = (
    (
        "by_study",
        "g_study",
        "g_order",
        ("state", "size", "reported_version", "stage", "reason", "deid_sop_uid"),
    ),
    ("queue", "g_queue", "g_qsort", None),
    ("flag", "g_flag", "g_fsort", None),
    ("owner", "g_owner", "g_osort", ("lease_token", "pub_token")),
    ("spool", "g_node", "g_order", ()),
    ("deid", "g_deid", None, ()),
    ("kind", "g_kind", "g_ksort", ()),
)


class Storage(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        key: kms.IKey,
        network: Network,
        removal: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        c = config

        # -- S3: the delivery bucket (new: with server access logs to its own log bucket) ------
        self.bucket_key: kms.IKey = key
        self.log_bucket: s3.Bucket | None = None
        if c.destination.bucket_name is None:
            self.log_bucket = s3.Bucket(
                self,
                "AccessLogs",
                # S3 server access logging delivers only to SSE-S3 buckets (not SSE-KMS)
                encryption=s3.BucketEncryption.S3_MANAGED,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="expire-access-logs",
                        expiration=Duration.days(365),
                        noncurrent_version_expiration=Duration.days(30),
                        abort_incomplete_multipart_upload_after=Duration.days(7),
                    )
                ],
                removal_policy=removal,
            )
            # (cdk-nag recognizes it as the delivery bucket's log target: no S1 finding)
            acknowledge(
                self.log_bucket,
                "HIPAA.Security-S3DefaultEncryptionKMS",
                "S3 server access logging can only deliver to a bucket encrypted with SSE-S3; "
                "the logs hold request metadata (pseudonymized object keys), no image data.",
            )
            acknowledge(
                self.log_bucket,
                "HIPAA.Security-S3BucketReplicationEnabled",
                "Access logs are kept in one region for a year; cross-region replication of "
                "logs is a site decision outside this stack.",
            )
            transitions = []
            if c.destination.transition_ia_days:
                transitions.append(
                    s3.Transition(
                        storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                        transition_after=Duration.days(c.destination.transition_ia_days),
                    )
                )
            self.bucket: s3.IBucket = s3.Bucket(
                self,
                "Delivery",
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,  # one KMS call per object batch, not per object
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                minimum_tls_version=1.2,
                versioned=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.log_bucket,
                server_access_logs_prefix="delivery/",
                lifecycle_rules=[
                    s3.LifecycleRule(
                        id="delivered-studies",
                        prefix=f"{c.destination.prefix}/",
                        transitions=transitions or None,
                        expiration=Duration.days(c.destination.expire_days)
                        if c.destination.expire_days
                        else None,
                        noncurrent_version_expiration=Duration.days(
                            c.destination.noncurrent_expire_days
                        ),
                        abort_incomplete_multipart_upload_after=Duration.days(1),
                    ),
                ],
                removal_policy=removal,
            )
            acknowledge(
                self.bucket,
                "HIPAA.Security-S3BucketReplicationEnabled",
                "De-identified deliveries are versioned and kept in the stack's region; "
                "recipients download them within days. Cross-region replication is a site "
                "decision (add a replication rule to a bucket you own: destination.bucket_name).",
            )
        else:
            self.bucket = s3.Bucket.from_bucket_name(self, "Delivery", c.destination.bucket_name)
            if c.destination.bucket_kms_key_arn:
                self.bucket_key = kms.Key.from_key_arn(
                    self, "DeliveryKey", c.destination.bucket_kms_key_arn
                )

        # -- DynamoDB: the shared state -----------------------------------------------------
        string = dynamodb.AttributeType.STRING
        self.table = dynamodb.Table(
            self,
            "State",
            partition_key=dynamodb.Attribute(name=TABLE_PARTITION_KEY, type=string),
            sort_key=dynamodb.Attribute(name=TABLE_SORT_KEY, type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TABLE_TTL_ATTRIBUTE,
            deletion_protection=removal == RemovalPolicy.RETAIN,
            removal_policy=removal,
        )
        for name, hash_key, range_key, attributes in TABLE_INDEXES:
            if attributes is None:
                projection = dynamodb.ProjectionType.ALL
            elif attributes:
                projection = dynamodb.ProjectionType.INCLUDE
            else:
                projection = dynamodb.ProjectionType.KEYS_ONLY
            self.table.add_global_secondary_index(
                index_name=name,
                partition_key=dynamodb.Attribute(name=hash_key, type=string),
                sort_key=dynamodb.Attribute(name=range_key, type=string) if range_key else None,
                projection_type=projection,
                non_key_attributes=list(attributes) if attributes else None,
            )
        acknowledge(
            self.table,
            "HIPAA.Security-DynamoDBInBackupPlan",
            "Point-in-time recovery (35 days, continuous) is on; the table is working state "
            "(leases, instance rows purged after delivery), so AWS Backup snapshots add "
            "nothing PITR does not restore.",
        )

        # -- the pseudonymization key -------------------------------------------------------
        self.key_secret = secretsmanager.Secret(
            self,
            "PseudonymKey",
            description="dicomgate pseudonymization key (DICOMGATE_SECRET_KEY_ARN): losing or "
            "changing it changes every future pseudonym",
            encryption_key=key,
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False
            ),
            removal_policy=removal,
        )
        for rule in ("AwsSolutions-SMG4", "HIPAA.Security-SecretsManagerRotationEnabled"):
            acknowledge(
                self.key_secret,
                rule,
                "Never rotated on purpose: pseudonyms are a pure function of the value and this "
                "key (the same patient maps to the same pseudonym across studies and nodes), "
                "and the state store refuses a node whose key fingerprint differs.",
            )

        # -- EFS: the shared spool ----------------------------------------------------------
        self.spool = efs.FileSystem(
            self,
            "Spool",
            vpc=network.vpc,
            vpc_subnets=network.task_subnets,  # one mount target per AZ
            security_group=network.efs_sg,
            encrypted=True,
            kms_key=key,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            enable_automatic_backups=False,
            # The file system policy is written here (TLS only) and by the service (the task
            # role, through the mount targets, no root access). True only stops CDK from adding
            # its own statement, which would let *any* IAM principal that reaches a mount
            # target write as root; with a policy in place, anonymous (non-IAM) mounts are
            # refused anyway.
            allow_anonymous_access=True,
            file_system_policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="DenyWithoutTls",
                        effect=iam.Effect.DENY,
                        principals=[iam.AnyPrincipal()],
                        actions=["*"],
                        conditions={"Bool": {"aws:SecureTransport": "false"}},
                    )
                ]
            ),
            removal_policy=removal,
        )
        acknowledge(
            self.spool,
            "HIPAA.Security-EFSInBackupPlan",
            "The spool holds raw (identifiable) instances only until they are delivered, then "
            "purges them (promise 2 of the design); backing it up would keep PHI for the "
            "backup's retention. Durability comes from EFS itself (multi-AZ, fsync'd writes). "
            "The audit files beside it (pseudonymized identifiers) are retained with the file "
            "system and forwarded to the site's audit repository, its system of record.",
        )
        self.access_point = self.spool.add_access_point(
            "SpoolAccessPoint",
            path="/dicomgate-spool",
            posix_user=efs.PosixUser(uid=str(CONTAINER_UID), gid=str(CONTAINER_UID)),
            create_acl=efs.Acl(
                owner_uid=str(CONTAINER_UID), owner_gid=str(CONTAINER_UID), permissions="750"
            ),
        )
        # The audit trail's files, one directory per task (service.py): on the same file
        # system, beside the spool rather than in it, so that neither the spool's layout nor
        # its purge ever meets them. None with the audit trail off.
        self.audit_access_point: efs.AccessPoint | None = None
        if c.audit.enabled:
            self.audit_access_point = self.spool.add_access_point(
                "AuditAccessPoint",
                path="/dicomgate-audit",
                posix_user=efs.PosixUser(uid=str(CONTAINER_UID), gid=str(CONTAINER_UID)),
                create_acl=efs.Acl(
                    owner_uid=str(CONTAINER_UID), owner_gid=str(CONTAINER_UID), permissions="700"
                ),
            )

        # -- study notifications ------------------------------------------------------------
        self.topic = sns.Topic(
            self,
            "Notifications",
            display_name="dicomgate study notifications",
            master_key=key,
            enforce_ssl=True,
        )
        for address in c.notifications.emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        self.queue: sqs.Queue | None = None
        if c.notifications.sqs_queue:
            dead = sqs.Queue(
                self,
                "NotificationsDeadLetters",
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=key,
                enforce_ssl=True,
                retention_period=Duration.days(14),
                removal_policy=removal,
            )
            self.queue = sqs.Queue(
                self,
                "NotificationsQueue",
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=key,
                enforce_ssl=True,
                retention_period=Duration.days(14),
                visibility_timeout=Duration.minutes(5),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dead, max_receive_count=5),
                removal_policy=removal,
            )
