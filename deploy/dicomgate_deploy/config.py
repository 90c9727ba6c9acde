"""The deployment's settings: one typed model, read from a JSON or TOML file and/or CDK context.

Sources, later ones winning key by key (nested objects are merged, lists replaced):

1. the file named by the context value ``config`` (``cdk synth -c config=site.json``; ``cdk.json``
   names ``config/example.json``), JSON or TOML by its suffix, relative to ``deploy/``;
2. the context value ``dicomgate``: an object (in ``cdk.json``) or a JSON string
   (``-c 'dicomgate={"service": {"desired_count": 3}}'``).

An invalid or unknown key stops synthesis with a message naming it (``service.cpu: ...``).
Nothing here reads AWS: an existing VPC is described by its ids (no context lookup), so
synthesis works offline and in tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEPLOY_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = DEPLOY_DIR.parent

# Fargate's valid CPU units -> memory sizes (MiB) (ECS task size table).
_FARGATE_SIZES: dict[int, range] = {
    256: range(512, 2048 + 1, 512),  # 512, 1024, 2048 (1536 is not valid; checked below)
    512: range(1024, 4096 + 1, 1024),
    1024: range(2048, 8192 + 1, 1024),
    2048: range(4096, 16384 + 1, 1024),
    4096: range(8192, 30720 + 1, 1024),
    8192: range(16384, 61440 + 1, 4096),
    16384: range(32768, 122880 + 1, 8192),
}

DeidOptionName = Literal[
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
]

#: the retention periods CloudWatch Logs accepts, in days (aws_logs.RetentionDays, in order)
RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:.+$")


class ConfigError(ValueError):
    """The deployment configuration is invalid; the message names the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _emails(value: list[str]) -> list[str]:
    for item in value:
        if not _EMAIL.match(item):
            raise ValueError(f"{item!r} is not an e-mail address")
    return value


class VpcConfig(_Model):
    """A new VPC (``vpc_id`` unset), or an existing one described by ids (no lookup)."""

    vpc_id: str | None = Field(None, pattern=r"^vpc-[0-9a-f]{8,17}$")
    #: new VPC: its address range (two AZs, /22 isolated subnets, /26 public ones if needed)
    cidr: str = "10.64.0.0/16"
    #: new VPC: pin the AZs (else the region's first two, resolved at deploy time);
    #: existing VPC: the AZs of ``private_subnet_ids``, in the same order (required)
    availability_zones: list[str] = Field(default_factory=list)
    #: existing VPC: the subnets the tasks, EFS mount targets and endpoints go in (one per AZ)
    private_subnet_ids: list[str] = Field(default_factory=list)
    #: existing VPC: their route tables (the S3 and DynamoDB gateway endpoints attach to them)
    private_subnet_route_table_ids: list[str] = Field(default_factory=list)
    #: existing VPC with an internet-facing NLB: its public subnets (one per AZ)
    public_subnet_ids: list[str] = Field(default_factory=list)
    #: create the VPC endpoints (turn off for an existing VPC that already has them: two
    #: interface endpoints with private DNS for one service cannot coexist)
    create_endpoints: bool = True
    #: VPC flow logs (all traffic) to CloudWatch Logs
    flow_logs: bool = True

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        net = ipaddress.ip_network(value)
        if net.version != 4 or net.prefixlen > 20:
            raise ValueError("must be an IPv4 network of /20 or larger")
        return value

    @model_validator(mode="after")
    def _existing(self) -> VpcConfig:
        if self.vpc_id is None and not (self.flow_logs and self.create_endpoints):
            raise ValueError(
                "flow_logs and create_endpoints may be turned off for an existing vpc_id only"
            )
        if self.vpc_id is None:
            if self.private_subnet_ids or self.private_subnet_route_table_ids:
                raise ValueError("private_subnet_ids/route tables are for an existing vpc_id")
            if self.availability_zones and len(self.availability_zones) != 2:
                raise ValueError("a new VPC spans exactly two availability_zones")
            return self
        n = len(self.private_subnet_ids)
        if n < 2:
            raise ValueError("an existing VPC needs private_subnet_ids in at least two AZs")
        if len(self.availability_zones) != n or len(self.private_subnet_route_table_ids) != n:
            raise ValueError(
                "availability_zones and private_subnet_route_table_ids must match "
                "private_subnet_ids one to one"
            )
        if self.public_subnet_ids and len(self.public_subnet_ids) != n:
            raise ValueError("public_subnet_ids must match the availability_zones one to one")
        return self


def _cidr(item: str) -> str:
    """A CIDR network other than the whole internet (``0.0.0.0/0``, ``::/0``)."""
    try:
        net = ipaddress.ip_network(item)
    except ValueError:
        raise ValueError(f"{item!r} is not a network in CIDR notation") from None
    if net.prefixlen == 0:
        raise ValueError(f"{item!r} opens the port to the whole internet; list the peers' networks")
    return item


class EgressRule(_Model):
    """One outbound rule of the tasks' security group: TCP to ``cidr`` on ``ports``."""

    cidr: str
    ports: list[int] = Field(min_length=1)
    #: what it is for (the rule's description in the security group)
    description: str = Field(
        "dicomgate peer", max_length=200, pattern=r"^[A-Za-z0-9 ._:/()#,@+=&;{}!$*-]*$"
    )

    @field_validator("cidr")
    @classmethod
    def _check_cidr(cls, value: str) -> str:
        return _cidr(value)

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port")
        return value


class NetworkConfig(_Model):
    """Who may reach the DICOM listeners, and how."""

    #: source networks (CIDR) allowed to connect to the NLB's DICOM ports; required
    allowed_cidrs: list[str] = Field(min_length=1)
    #: internet-facing NLB (public subnets) or internal (hospitals over VPN/Direct Connect)
    internet_facing: bool = False
    #: pass the sender's address through to the task (the node's allowed_networks and audit
    #: then see it); off: the tasks see the NLB's addresses, the NLB's security group filters
    preserve_client_ip: bool = False
    #: networks allowed to reach the ops HTTP port (8080: /healthz, /metrics) on the tasks
    ops_cidrs: list[str] = Field(default_factory=list)
    #: NLB deletion protection (turn off only to tear a test stack down)
    deletion_protection: bool = True
    #: extra outbound rules of the tasks' security group: storage commitment callbacks to the
    #: senders (the node's ``commitment_peers``), the audit repository (``audit.syslog_url``)
    egress: list[EgressRule] = Field(default_factory=list)

    @field_validator("allowed_cidrs", "ops_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            _cidr(item)
        return value


class ServiceConfig(_Model):
    """The Fargate service."""

    cpu: int = 1024
    memory_mib: int = 2048
    desired_count: int = Field(2, ge=1)
    min_count: int = Field(2, ge=1)
    max_count: int = Field(6, ge=1)
    #: target tracking: average CPU of the tasks
    cpu_target_percent: int = Field(60, ge=10, le=90)
    #: step scaling: the deployment's Backlog (instances acknowledged, not yet delivered)
    #: above which a task is added every 3 minutes (two above four times it)
    backlog_scale_out: int = Field(1000, ge=1)
    #: node processes per task (DICOMGATE_WORKERS, sharing the DICOM port); default: one per
    #: vCPU of the task. Explicit although the node now counts the CPUs it may use itself
    #: (affinity mask and cgroup v2 quota, dicomgate/_process.py): the stack must know the
    #: number at synthesis, because worker i serves the ops endpoint on 8080 + i and the port
    #: mappings and the ops security-group rule are made for exactly these ports; and what a
    #: Fargate microVM shows (CPUs online, cgroup version) is not the task size on every
    #: platform version
    workers: int = Field(1, ge=1, le=16)
    #: task storage (GiB) for the data directory (staging of de-identified files); 20-200
    ephemeral_storage_gib: int = Field(30, ge=21, le=200)
    #: the node's AE title
    ae_title: str = Field("DICOMGATE", min_length=1, max_length=16)
    #: extra DICOMGATE_* settings (strings) for the container, e.g. DICOMGATE_STABLE_AFTER
    environment: dict[str, str] = Field(default_factory=dict)
    #: log retention (days) of the container and flow logs
    log_retention_days: int = 365
    #: a container image already in a registry instead of building the repository's
    #: Dockerfile (``ContainerImage.from_asset``)
    image_uri: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_workers(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("workers") is None:
            # (an unusable cpu is left to the cpu field's own error)
            with contextlib.suppress(TypeError, ValueError):
                data = {**data, "workers": max(1, int(data.get("cpu", 1024)) // 1024)}
        return data

    @model_validator(mode="after")
    def _checks(self) -> ServiceConfig:
        sizes = _FARGATE_SIZES.get(self.cpu)
        if sizes is None:
            raise ValueError(f"cpu must be one of {sorted(_FARGATE_SIZES)} (Fargate task sizes)")
        valid = [m for m in sizes if not (self.cpu == 256 and m == 1536)]
        if self.memory_mib not in valid:
            raise ValueError(
                f"memory_mib {self.memory_mib} is not valid with cpu {self.cpu} "
                f"(from {valid[0]} to {valid[-1]} in steps of {sizes.step})"
            )
        if not self.min_count <= self.desired_count <= self.max_count:
            raise ValueError("need min_count <= desired_count <= max_count")
        if self.log_retention_days not in RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {list(RETENTION_DAYS)}")
        for name in self.environment:
            if not name.startswith("DICOMGATE_"):
                raise ValueError(f"environment: {name} is not a DICOMGATE_* setting")
        return self


class DestinationConfig(_Model):
    """Where de-identified studies go: a new bucket (default) or an existing one."""

    #: an existing bucket's name; unset: the stack creates one
    bucket_name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    #: the existing bucket's KMS key (SSE-KMS), when it is not the stack's key
    bucket_kms_key_arn: str | None = None
    #: the key prefix the node writes under (and the only one its role may touch)
    prefix: str = Field("studies", pattern=r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")
    #: new bucket: move objects to S3 Standard-IA after this many days (0: never)
    transition_ia_days: int = Field(30, ge=0)
    #: new bucket: delete objects this many days after delivery (0: keep)
    expire_days: int = Field(0, ge=0)
    #: new bucket: delete overwritten/deleted versions after this many days
    noncurrent_expire_days: int = Field(30, ge=1)

    @field_validator("bucket_kms_key_arn")
    @classmethod
    def _arn(cls, value: str | None) -> str | None:
        if value is not None and not _ARN.match(value):
            raise ValueError("must be a KMS key ARN")
        return value

    @model_validator(mode="after")
    def _checks(self) -> DestinationConfig:
        if (
            self.transition_ia_days
            and self.expire_days
            and self.expire_days <= (self.transition_ia_days)
        ):
            raise ValueError("expire_days must be later than transition_ia_days")
        if self.bucket_kms_key_arn and not self.bucket_name:
            raise ValueError("bucket_kms_key_arn is for an existing bucket_name")
        return self


class NotificationConfig(_Model):
    """Who hears about delivered studies (the node publishes each manifest's notification)."""

    #: e-mail subscriptions of the study-notification SNS topic (each must confirm)
    emails: list[str] = Field(default_factory=list)
    #: also send each notification to an SQS queue the stack creates (with a dead-letter queue)
    sqs_queue: bool = False

    @field_validator("emails")
    @classmethod
    def _check_emails(cls, value: list[str]) -> list[str]:
        return _emails(value)


class AlarmConfig(_Model):
    """Alarm thresholds; every alarm goes to the alarm topic."""

    #: e-mail subscriptions of the alarm SNS topic
    emails: list[str] = Field(default_factory=list)
    #: "instances arrive but no study is delivered" over two consecutive windows of this length
    no_delivery_minutes: int = Field(30, ge=5, le=360)
    #: the oldest acknowledged, undelivered instance is older than this (seconds)
    backlog_age_seconds: int = Field(3600, ge=300)
    #: more than this many instances quarantined in an hour (every rule together)
    quarantine_per_hour: int = Field(10, ge=1)
    #: upload retries in 15 minutes
    upload_retries: int = Field(50, ge=1)

    @field_validator("emails")
    @classmethod
    def _check_emails(cls, value: list[str]) -> list[str]:
        return _emails(value)


class TlsConfig(_Model):
    """DICOM TLS on 2762 (the node's TLS listener; it terminates in the container, so mutual
    TLS is end to end).

    Off by default only because it needs a certificate the operator provides: a Secrets
    Manager secret (``secret_arn``) made from the site's PKI, which the stack cannot create.
    """

    enabled: bool = False
    port: int = Field(2762, ge=1, le=65535)
    #: Secrets Manager secret (JSON: ``cert`` = PEM chain, ``key`` = PEM key, ``ca`` = PEM CA
    #: bundle for client certificates) created by the operator from the site's PKI
    secret_arn: str | None = None
    #: the KMS key that secret is encrypted with, if not the account's aws/secretsmanager key
    secret_kms_key_arn: str | None = None
    #: require client certificates (``DICOMGATE_TLS_CA_FILE`` from the secret's ``ca``)
    mutual: bool = False
    #: keep the plaintext listener (11112); false: TLS only (``DICOMGATE_PLAINTEXT=false``: no
    #: 11112 listener, target group or port, and the health check speaks TLS on ``port``)
    plaintext: bool = True

    @model_validator(mode="after")
    def _checks(self) -> TlsConfig:
        if self.enabled and not (self.secret_arn and _ARN.match(self.secret_arn)):
            raise ValueError("enabled TLS needs secret_arn (the Secrets Manager secret's ARN)")
        if self.secret_kms_key_arn and not _ARN.match(self.secret_kms_key_arn):
            raise ValueError("secret_kms_key_arn must be a KMS key ARN")
        if not self.plaintext and not self.enabled:
            raise ValueError("plaintext false (TLS only) needs enabled TLS")
        if self.port == 11112 and self.enabled and self.plaintext:
            raise ValueError("port 11112 is the plaintext listener's; pick another TLS port")
        return self


class AuditConfig(_Model):
    """The node's audit trail (PS3.15 A.5 messages): a local file, optionally sent to the
    site's audit repository (syslog over TLS, RFC 5425)."""

    #: write audit messages (``DICOMGATE_AUDIT_ENABLED``); each task writes its own file on EFS
    enabled: bool = True
    #: ``tls://host[:port]`` of the audit repository (port 6514 by default); the tasks need a
    #: route and a ``network.egress`` rule to it
    syslog_url: str | None = Field(None, pattern=r"^tls://[A-Za-z0-9.\[\]:-]+$")
    #: PEM CA certificate(s) the repository's certificate is checked against (public material,
    #: passed as a variable and written to a file); unset: the image's system CAs
    syslog_ca_pem: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> AuditConfig:
        if self.syslog_url and not self.enabled:
            raise ValueError("syslog_url needs the audit trail enabled")
        if self.syslog_ca_pem is not None:
            if not self.syslog_url:
                raise ValueError("syslog_ca_pem is for syslog_url")
            if "-----BEGIN CERTIFICATE-----" not in self.syslog_ca_pem:
                raise ValueError("syslog_ca_pem must hold PEM certificates")
            if "PRIVATE KEY" in self.syslog_ca_pem:
                raise ValueError("syslog_ca_pem holds a private key; give the CA certificate only")
        return self


class DeployConfig(_Model):
    """Everything the stack is built from."""

    stack_name: str = Field("Dicomgate", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    #: pin the stack to an account/region (else environment-agnostic: the CLI's credentials)
    account: str | None = Field(None, pattern=r"^\d{12}$")
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    vpc: VpcConfig = Field(default_factory=VpcConfig)
    network: NetworkConfig
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    destination: DestinationConfig = Field(default_factory=DestinationConfig)
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    #: presigned link lifetime (s), capped by the signing credentials (see deploy/README.md)
    link_expiry_seconds: int = Field(6 * 3600, ge=60, le=7 * 24 * 3600)
    #: PS3.15 Annex E options on top of the Basic Profile
    deid_options: list[DeidOptionName] = Field(default_factory=list)
    #: RETAIN (default) keeps the bucket, table, key, secret, spool and logs when the stack is
    #: deleted; DESTROY is for throw-away test stacks
    removal_policy: Literal["RETAIN", "DESTROY"] = "RETAIN"

    @model_validator(mode="after")
    def _checks(self) -> DeployConfig:
        if (
            self.network.internet_facing
            and self.vpc.vpc_id is not None
            and not self.vpc.public_subnet_ids
        ):
            raise ValueError(
                "an internet-facing NLB in an existing VPC needs vpc.public_subnet_ids"
            )
        reserved = {
            "DICOMGATE_STATE",
            "DICOMGATE_STATE_CREATE",
            "DICOMGATE_DESTINATION",
            "DICOMGATE_SECRET_KEY_ARN",
            "DICOMGATE_SPOOL_DIR",
            "DICOMGATE_DATA_DIR",
            "DICOMGATE_PORT",
            # sized into the ports, rules and health check the stack makes
            "DICOMGATE_WORKERS",
            "DICOMGATE_OPS_PORT",
            "DICOMGATE_PLAINTEXT",
            "DICOMGATE_TLS_PORT",
            "DICOMGATE_TLS_CERT_FILE",
            "DICOMGATE_TLS_KEY_FILE",
            "DICOMGATE_TLS_CA_FILE",
            # one file per task on EFS (see service.py)
            "DICOMGATE_AUDIT_ENABLED",
            "DICOMGATE_AUDIT_FILE",
            "DICOMGATE_AUDIT_SYSLOG_URL",
            "DICOMGATE_AUDIT_SYSLOG_CA_FILE",
        }
        clash = sorted(reserved & set(self.service.environment))
        if clash:
            raise ValueError(f"service.environment may not set {clash}: the stack wires them")
        return self


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_file(path: Path) -> dict[str, Any]:
    """A JSON (``.json``) or TOML (``.toml``) configuration file."""
    try:
        if path.suffix == ".toml":
            with path.open("rb") as f:
                return tomllib.load(f)
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold an object")
    return data


def parse(data: dict[str, Any], *, where: str = "config") -> DeployConfig:
    """Validate ``data``; errors name each key (``network.allowed_cidrs.0: ...``)."""
    try:
        return DeployConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{where}: {loc}: {msg.removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None


def from_context(get: Any, *, base_dir: Path = DEPLOY_DIR) -> DeployConfig:
    """The configuration from CDK context (``get`` is ``node.try_get_context``)."""
    data: dict[str, Any] = {}
    where = []
    file = get("config")
    if file:
        path = Path(file)
        path = path if path.is_absolute() else base_dir / path
        data = read_file(path)
        where.append(str(path))
    inline = get("dicomgate")
    if inline:
        if isinstance(inline, str):
            try:
                inline = json.loads(inline)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"context dicomgate is not valid JSON: {exc}") from None
        if not isinstance(inline, dict):
            raise ConfigError("context dicomgate must be an object")
        data = _merge(data, inline)
        where.append("context dicomgate")
    if not data:
        raise ConfigError(
            "no configuration: pass -c config=FILE (JSON or TOML) and/or -c dicomgate='{...}' "
            "(see deploy/README.md; config/example.json is a start)"
        )
    return parse(data, where=" + ".join(where))
