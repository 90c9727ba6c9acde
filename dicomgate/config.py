"""Settings: one pydantic-settings model, read from the CLI, the environment and a TOML file.

Precedence, highest first: command-line flags, ``DICOMGATE_*`` environment variables, the TOML
file named by ``--config`` (or ``DICOMGATE_CONFIG``), the defaults below.  Every setting's
environment name is ``DICOMGATE_`` + its field name in upper case; lists are JSON
(``DICOMGATE_ALLOWED_CALLING_AE_TITLES='["CT1","PACS"]'``), as pydantic-settings reads them.

An invalid value stops start-up with :class:`SettingsError`, whose message names the setting the
way the operator typed it: the flag (``--port``), the environment variable (``DICOMGATE_PORT``)
or the file and key (``gate.toml:port``), whichever supplied the value.  An unknown key in the
TOML file is an error (a typo must not fall back to a default silently); an unknown
``DICOMGATE_*`` variable cannot be an error (the environment is shared with other software), so
:func:`unknown_environment` turns it into a warning with the closest valid name.
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as PydanticSettingsError,
)

__all__ = [
    "CONFIG_ENV",
    "ECHO_AET_ENV",
    "DeidOption",
    "Settings",
    "SettingsError",
    "env_name",
    "load_settings",
    "unknown_environment",
]

ENV_PREFIX = "DICOMGATE_"
#: a commitment_peers address that is called back over DICOM TLS
TLS_SCHEME = "tls://"


def parse_peer(address: str) -> tuple[str, int, bool] | None:
    """(host, port, tls) of a ``commitment_peers`` address — ``host:port``, or
    ``tls://host:port`` for DICOM TLS; ``[v6]`` hosts lose their brackets — else None."""
    tls = address.startswith(TLS_SCHEME)
    host, sep, port = address.removeprefix(TLS_SCHEME).rpartition(":")
    # "/" in the host: a misspelt scheme ("TLS://", "tsl://"), not a host name
    if not sep or not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port), tls


# Variables the project reads outside the settings model (never "unknown").
CONFIG_ENV = "DICOMGATE_CONFIG"  # the TOML file (click's --config)
ECHO_AET_ENV = "DICOMGATE_ECHO_AET"  # dicomgate echo's calling AE title (the health check)
OTHER_ENV_VARS = frozenset({CONFIG_ENV, ECHO_AET_ENV})

# The TOML file for the settings being built; a ContextVar rather than a global so that
# loading settings in tests never leaks a file into the next load.
_TOML_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "dicomgate_toml_file", default=None
)


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


class DeidOption(StrEnum):
    """PS3.15 Annex E confidentiality profile options (the option columns of Table E.1-1)."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"


def _check_ae_title(value: str, setting: str) -> str:
    # PS3.5 Table 6.2-1 (AE VR): 1-16 characters of the default repertoire, no backslash or
    # control characters; leading/trailing spaces are not significant.
    title = value.strip()
    if not 1 <= len(title) <= 16:
        raise ValueError(f"{setting} must be 1-16 characters, got {value!r}")
    if not title.isascii() or "\\" in title or any(ord(c) < 0x20 for c in title):
        raise ValueError(f"{setting} may hold only printable ASCII without '\\', got {value!r}")
    return title


def _network(item: Any, index: int) -> Any:
    if not isinstance(item, str):
        return item
    try:
        return ipaddress.ip_network(item.strip())
    except ValueError:
        pass
    hint = "a network in CIDR notation, e.g. 10.20.0.0/16 or 2001:db8::/32"
    try:
        loose = ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        raise ValueError(f"item {index}: {item!r} is not {hint}") from None
    raise ValueError(
        f"item {index}: {item!r} has host bits set; the network is {loose} ({hint})"
    ) from None


class Settings(BaseSettings):
    """Every setting of a dicomgate node. Field names are the TOML keys."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # -- network ------------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Address to listen on.")  # noqa: S104
    port: int = Field(11112, ge=0, le=65535, description="TCP port (0: pick a free one).")
    reuse_port: bool = Field(
        False,
        description="Listen with SO_REUSEPORT so several node processes share the DICOM port "
        "(set by serve --workers; the kernel spreads associations across them).",
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Node processes sharing the DICOM port on this host (serve --workers; "
        "SO_REUSEPORT, one state store and spool); 0: one per core, 1: a single process.",
    )
    ae_title: str = Field("DICOMGATE", description="This node's AE title.")
    require_called_ae_title: bool = Field(
        True, description="Reject associations whose Called AE Title is not ae_title."
    )
    allowed_calling_ae_titles: list[str] = Field(
        default_factory=list, description="Calling AE titles allowed to connect (empty: any)."
    )
    allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list, description="Peer networks (CIDR) allowed to connect (empty: any)."
    )
    max_associations: int = Field(
        16,
        ge=1,
        le=1024,
        description="Established associations at once, both listeners together (then "
        "A-ASSOCIATE-RJ transient, local limit exceeded). Connections still negotiating do "
        "not count: max_pending_connections bounds them.",
    )
    max_pending_connections: int = Field(
        32,
        ge=1,
        le=4096,
        description="Connections not yet associated (TCP or TLS handshake, waiting for the "
        "A-ASSOCIATE-RQ), both listeners together; further connections are closed at once. "
        "Each is cut after acse_timeout.",
    )
    # -- DICOM TLS (PS3.15 Annex B; issue 12) ---------------------------------------------------
    plaintext: bool = Field(
        True, description="Open the plaintext DICOM listener (port); false: TLS only."
    )
    tls_port: int = Field(
        2762,
        ge=0,
        le=65535,
        description="DICOM TLS port, opened when tls_cert_file and tls_key_file are set "
        "(0: pick a free one).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain of the TLS listener (leaf first)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates: set, clients must present a certificate they issued "
        "(mutual TLS).",
    )
    tls_ae_subjects: dict[str, str] = Field(
        default_factory=dict,
        description="Calling AE title -> the certificate subject it must present: a CN, or a "
        "full subject such as 'CN=ct1,O=Hospital' (JSON object). A bound AE title is refused "
        "on the plaintext listener and with another certificate (A-ASSOCIATE-RJ reason 3). "
        "Needs tls_ca_file.",
    )
    max_pdu_size: int = Field(
        1_048_576,
        ge=0,
        description="Maximum PDU length we advertise (bytes, 0 = unlimited). "
        "pynetdicom's default 16 KiB costs throughput on large instances.",
    )
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(120.0, gt=0)
    network_timeout: float = Field(120.0, gt=0)
    shutdown_timeout: float = Field(
        30.0, ge=0, description="Seconds open associations get to finish on SIGTERM."
    )

    # -- storage ------------------------------------------------------------------------------
    data_dir: Path = Field(Path("./dicomgate-data"), description="Spool, state and key live here.")
    spool_dir: Path | None = Field(
        None,
        description="Received instances (default <data_dir>/spool). May be shared by every node "
        "(one host, or EFS): each node writes only under spool/nodes/<node id>/.",
    )
    # issue 8: the state store every node of a deployment shares, and this node's name in it
    state: str = Field(
        "sqlite",
        pattern=r"^(sqlite|dynamodb://[A-Za-z0-9_.-]{3,255})$",
        description="State store: sqlite (<data_dir>/state.sqlite3, nodes on one host) or "
        "dynamodb://TABLE (nodes anywhere; region, credentials and AWS_ENDPOINT_URL_DYNAMODB "
        "from boto3).",
    )
    state_create: bool = Field(
        True,
        description="Create the state store (DynamoDB table, SQLite file) when it is missing. "
        "False in production: a node then refuses to start rather than create a table the "
        "deployment should own (run `dicomgate state init` from the deploy job instead).",
    )
    node_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        min_length=1,
        max_length=128,
        description="This node's id in the state store (leases, heartbeats); host name + pid.",
    )
    heartbeat_ttl: float = Field(
        30.0,
        ge=0.5,
        le=3600,
        description="Seconds without a heartbeat (sent every third of it) after which the other "
        "nodes take this node for dead and adopt its work.",
    )
    lease_seconds: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="How long a claim on an instance lasts unless renewed (every third of it).",
    )
    spool_limit: ByteSize = Field(
        ByteSize(50 * 1024**3),
        description="Spool size above which C-STORE answers 0xA700 (accepts units: '20GB').",
    )
    min_free_space: ByteSize = Field(
        ByteSize(1024**3),
        description="Free space the spool's filesystem must keep; below it C-STORE answers 0xA700.",
    )

    # -- logging ------------------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON when stderr is not a terminal."
    )

    # -- de-identification ----------------------------------------------------------------------
    secret_key: SecretStr | None = Field(
        None, description="Pseudonymization key (>= 32 characters). Generated if unset."
    )
    secret_key_file: Path | None = Field(None, description="File holding the key.")
    secret_key_arn: str | None = Field(
        None,
        description="AWS Secrets Manager secret (ARN or name) holding the key; read at start-up.",
    )
    deid_options: list[DeidOption] = Field(
        default_factory=list, description="Annex E options applied on top of the Basic Profile."
    )
    deid_keep: list[str] = Field(
        default_factory=list, description="Site override: keywords or tags (GGGGEEEE) to keep."
    )
    deid_remove: list[str] = Field(
        default_factory=list, description="Site override: keywords or tags to remove."
    )
    deid_replace: dict[str, str] = Field(
        default_factory=dict, description="Site override: keyword or tag -> replacement value."
    )
    burned_in_policy: Literal["clean", "quarantine", "allow"] = Field(
        "clean",
        description="Instances that may show burned-in text: clean (OCR finds text, it is "
        "blacked out on every frame; PS3.15 E.3.1), quarantine (held back) or allow (delivered "
        "unchanged).",
    )
    burned_in_regions_file: Path | None = Field(
        None,
        description="Per-device fixed regions to black out (TOML); default: the shipped table.",
    )
    allow_burned_in_annotation: bool = Field(
        False,
        description="Older spelling of burned_in_policy = allow (true wins over the policy).",
    )
    burned_in_suspect_modalities: list[str] = Field(
        default_factory=lambda: ["US", "OT", "SC", "XC", "ES", "GM", "SM", "DOC"],
        description="Modalities quarantined unless BurnedInAnnotation is explicitly NO.",
    )

    # -- pipeline and delivery ------------------------------------------------------------------
    destination: str = Field(
        "", description="s3://bucket/prefix or file:///path; empty: file://<data_dir>/delivered."
    )
    s3_endpoint_url: str | None = Field(None, description="For S3-compatible servers.")
    s3_region: str | None = None
    s3_sse: Literal["none", "AES256", "aws:kms"] = "AES256"
    s3_kms_key_id: str | None = None
    s3_storage_class: str | None = None
    # Delivery-only tuning (dicomgate.delivery): boto3 retries are kept short because the
    # pipeline retries for `retry_for` on its own; multipart above the threshold.
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="S3 addressing style; some S3-compatible servers need 'path'."
    )
    s3_checksum: bool = Field(
        True, description="Send a SHA-256 checksum (x-amz-checksum-sha256) with every upload."
    )
    s3_max_attempts: int = Field(3, ge=1, le=20, description="boto3 attempts per S3 request.")
    s3_connect_timeout: float = Field(10.0, gt=0)
    s3_read_timeout: float = Field(60.0, gt=0)
    s3_multipart_threshold: ByteSize = Field(
        ByteSize(64 * 1024**2), description="Objects at least this large use multipart upload."
    )
    s3_multipart_chunksize: ByteSize = Field(
        ByteSize(16 * 1024**2),
        ge=5 * 1024**2,
        description="Multipart part size (S3 minimum 5 MiB).",
    )
    s3_multipart_concurrency: int = Field(4, ge=1, le=64, description="Parts uploaded at once.")
    delivery_concurrency: int = Field(
        8, ge=1, le=256, description="Destination operations running at once (worker threads)."
    )
    notify_timeout: float = Field(10.0, gt=0, description="Seconds a notifier call may take.")
    stable_after: float = Field(
        60.0, ge=0, description="Seconds of quiet before a study is complete."
    )
    expected_deadline: float = Field(
        600.0,
        ge=0,
        description="Seconds after a storage commitment or a COMPLETED MPPS named a study's "
        "instances that the study is published without those that never came (listed as "
        "missing in the manifest). stable_after still applies: whichever comes first.",
    )
    # -- what senders say: storage commitment, MPPS (issue 10) ---------------------------------
    commitment_after: Literal["received", "delivered"] = Field(
        "received",
        description="When an instance counts as committed: 'received' (durably in the spool "
        "and recorded, the promise of the C-STORE response) or 'delivered' (uploaded).",
    )
    commitment_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a storage commitment waits for instances not (yet) received "
        "before reporting them failed (0x0112 no such object instance).",
    )
    commitment_peers: dict[str, str] = Field(
        default_factory=dict,
        description="Where to send a storage commitment report when the requesting "
        "association has closed: calling AE title -> 'host:port', or 'tls://host:port' for "
        "DICOM TLS (JSON object). TLS only (plaintext false) allows tls:// peers only.",
    )
    commitment_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates that tls:// commitment peers' certificates must chain "
        "to (default: the system's). The node presents tls_cert_file if a peer asks for one.",
    )
    commitment_retry_for: float = Field(
        3600.0,
        ge=0,
        description="How long a report that could not be delivered is retried (backoff).",
    )
    link_expiry: int = Field(
        7 * 24 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Presigned link lifetime (s); SigV4 max 7 days.",
    )
    retry_for: float = Field(
        24 * 3600.0, ge=0, description="How long retryable failures are retried."
    )
    keep_raw_for: float = Field(
        0.0, ge=0, description="Seconds to keep raw spool copies after delivery."
    )
    accept_modalities: list[str] = Field(default_factory=list, description="Empty: any.")
    accept_sop_classes: list[str] = Field(default_factory=list, description="Empty: any.")
    require_attributes: list[str] = Field(default_factory=list)
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    notify_sns_topic_arn: str | None = None
    notify_sqs_queue_url: str | None = None

    # -- ops ------------------------------------------------------------------------------------
    ops_host: str = Field("127.0.0.1", description="Address of the health/metrics HTTP endpoint.")
    ops_port: int = Field(8080, ge=0, le=65535, description="Its TCP port (0: any free port).")
    ops_enabled: bool = Field(True, description="Serve /healthz, /readyz, /metrics, /studies.")
    ops_max_connections: int = Field(
        16,
        ge=1,
        le=1024,
        description="Ops HTTP requests served at once; a connection over it gets 503 at once.",
    )
    ops_request_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds an ops HTTP connection has in all to send its request and read "
        "the answer (a slow client is cut then).",
    )
    metrics_emf: bool = Field(
        False,
        description="Also write the metrics to stdout as CloudWatch Embedded Metric Format "
        "lines (namespace dicomgate; see dicomgate.ops.emf).",
    )
    metrics_emf_interval: float = Field(
        60.0, gt=0, le=3600, description="Seconds between EMF flushes (one more at stop)."
    )

    # -- audit trail (PS3.15 A.5 audit messages; IHE ATNA) ----------------------------------------
    audit_enabled: bool = Field(
        True, description="Write DICOM audit messages (see dicomgate.audit)."
    )
    audit_file: Path | None = Field(
        None,
        description="The local audit file (one XML message per line); unset: "
        "<data_dir>/audit/audit.log.",
    )
    audit_identifiers: Literal["pseudonymized", "original"] = Field(
        "pseudonymized",
        description="How audit messages name studies and patients: the pseudonymized "
        "identifiers the partner receives, or the original ones (only for an audit repository "
        "inside the hospital). Never a patient's name.",
    )
    audit_syslog_url: str | None = Field(
        None,
        description="tls://host[:port] of the audit repository (RFC 5425 syslog over TLS, "
        "port 6514 by default); unset: the local file only.",
    )
    audit_syslog_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the repository's certificate is checked "
        "against (unset: the system's).",
    )
    audit_syslog_cert_file: Path | None = Field(
        None, description="PEM client certificate (chain) for the repository, if it asks."
    )
    audit_syslog_key_file: Path | None = Field(
        None, description="Its private key (unset: in the certificate file)."
    )
    audit_source_id: str | None = Field(
        None, description="AuditSourceID of the messages; unset: <ae_title>@<host name>."
    )
    audit_enterprise_site_id: str | None = Field(
        None, description="AuditEnterpriseSiteID of the messages (the site), if set."
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return _check_ae_title(value, "ae_title")

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _calling(cls, value: list[str]) -> list[str]:
        return [_check_ae_title(v, "allowed_calling_ae_titles") for v in value]

    @field_validator("tls_ae_subjects")
    @classmethod
    def _ae_subjects(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for ae, subject in value.items():
            if not subject.strip():
                raise ValueError(f"tls_ae_subjects[{ae!r}] is empty: expected a CN or a subject")
            out[_check_ae_title(ae.strip(), "tls_ae_subjects")] = subject.strip()
        return out

    @field_validator("commitment_peers")
    @classmethod
    def _peers(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for ae, address in value.items():
            if parse_peer(address) is None:
                raise ValueError(
                    f"commitment_peers[{ae!r}] is {address!r}: expected 'host:port' or "
                    f"'{TLS_SCHEME}host:port'"
                )
            out[_check_ae_title(ae.strip(), "commitment_peers")] = address
        return out

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        # Parsed here so that a typo gets a sentence, not pydantic's union internals
        # ("lax-or-strict[lax=function-plain[ip_v4_network_validator()]..."), one per IP version.
        if not isinstance(value, list | tuple):
            return value  # pydantic says "Input should be a valid list"
        return [_network(item, i) for i, item in enumerate(value)]

    @field_validator("max_pdu_size")
    @classmethod
    def _pdu(cls, value: int) -> int:
        # PS3.8 9.3.1: a Maximum Length of 0 means "no limit"; otherwise it must leave room for
        # a PDV header, and pynetdicom refuses anything below 4 KiB-ish in practice.
        if value != 0 and value < 4096:
            raise ValueError("max_pdu_size must be 0 (unlimited) or at least 4096")
        return value

    @field_validator("audit_syslog_url")
    @classmethod
    def _audit_syslog_url(cls, value: str | None) -> str | None:
        if value:
            from dicomgate.audit._syslog import parse_syslog_url

            parse_syslog_url(value)
        return value or None

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value and not value.startswith(("s3://", "file://")):
            raise ValueError("destination must be s3://bucket[/prefix] or file:///path")
        return value

    @field_validator("secret_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "TLS_KEY_FILE" if self.tls_key_file is None else "TLS_CERT_FILE"
            raise ValueError(
                f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE go together: "
                f"set {ENV_PREFIX}{missing} too"
            )
        if not self.plaintext and not self.tls_enabled:
            raise ValueError(
                f"{ENV_PREFIX}PLAINTEXT=false needs the TLS listener: set "
                f"{ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE"
            )
        if (self.tls_ca_file is not None or self.tls_ae_subjects) and not self.tls_enabled:
            raise ValueError(
                f"{ENV_PREFIX}TLS_CA_FILE and {ENV_PREFIX}TLS_AE_SUBJECTS need the TLS listener: "
                f"set {ENV_PREFIX}TLS_CERT_FILE and {ENV_PREFIX}TLS_KEY_FILE"
            )
        if self.tls_ae_subjects and self.tls_ca_file is None:
            raise ValueError(
                f"{ENV_PREFIX}TLS_AE_SUBJECTS needs client certificates: "
                f"set {ENV_PREFIX}TLS_CA_FILE"
            )
        if not self.plaintext:
            # a TLS-only node sends nothing in clear: a report names every instance by UID
            clear = sorted(
                ae for ae, a in self.commitment_peers.items() if not a.startswith(TLS_SCHEME)
            )
            if clear:
                raise ValueError(
                    f"{ENV_PREFIX}COMMITMENT_PEERS {clear} would be called back in plaintext, but "
                    f"{ENV_PREFIX}PLAINTEXT=false: give them as '{TLS_SCHEME}host:port'"
                )
        if self.s3_sse == "aws:kms" and not self.s3_kms_key_id:
            raise ValueError(
                f"{ENV_PREFIX}S3_KMS_KEY_ID is required when {ENV_PREFIX}S3_SSE is 'aws:kms'"
            )
        return self

    # -- derived paths ----------------------------------------------------------------------------
    @property
    def tls_enabled(self) -> bool:
        """Whether the DICOM TLS listener is opened (certificate and key are set)."""
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def effective_burned_in_policy(self) -> Literal["clean", "quarantine", "allow"]:
        return "allow" if self.allow_burned_in_annotation else self.burned_in_policy

    @property
    def spool_root(self) -> Path:
        """``spool_dir``, or ``<data_dir>/spool`` when it is not set."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.sqlite3"

    @property
    def destination_url(self) -> str:
        if self.destination:
            return self.destination
        return (self.data_dir / "delivered").resolve().as_uri()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def env_name(name: str) -> str:
    """The environment variable of setting ``name``: ``port`` -> ``DICOMGATE_PORT``."""
    return f"{ENV_PREFIX}{name.upper()}"


def _closest(word: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning sentence per ``DICOMGATE_*`` variable that no setting reads.

    pydantic-settings ignores them, so ``DICOMGATE_AE_TITEL`` would leave the default in place
    without a word.  Matched without regard to case, as the settings themselves are.
    """
    env = os.environ if environ is None else environ
    known = sorted({env_name(f) for f in Settings.model_fields} | OTHER_ENV_VARS)
    warnings = []
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        # compared without the prefix, which every candidate shares and would make anything
        # look "close"
        tail = _closest(upper.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in known])
        guess = ENV_PREFIX + tail if tail else None
        hint = f"; did you mean {guess}?" if guess else " (no dicomgate setting has this name)"
        warnings.append(f"unknown environment variable {name} is ignored{hint}")
    return warnings


def _unknown_toml_keys(config_file: Path, data: Mapping[str, Any]) -> list[str]:
    fields = sorted(Settings.model_fields)
    errors = []
    for key, value in data.items():
        if key.lower() in Settings.model_fields:
            continue
        if isinstance(value, dict):
            errors.append(
                f"{config_file}:{key}: unknown table [{key}]; settings are top-level keys "
                "(remove the table header)"
            )
            continue
        guess = _closest(key.lower(), fields)
        hint = f"; did you mean {guess}?" if guess else ""
        errors.append(f"{config_file}:{key}: unknown setting{hint}")
    return errors


class _Sources:
    """Where each setting's value came from, to name it as the operator typed it."""

    def __init__(
        self,
        flags: Mapping[str, str],
        config_file: Path | None,
        toml_keys: Mapping[str, str],
        environ: Mapping[str, str],
    ) -> None:
        self.flags = flags
        self.config_file = config_file
        self.toml_keys = toml_keys  # lower-case field name -> key as written
        self.env = {k.upper() for k in environ}

    def where(self, name: str) -> str:
        # Same precedence as the sources: flag, environment, file; else the default (or a
        # value set by code), which an operator would change through the variable.
        if name in self.flags:
            return f"{self.flags[name]} ({name})"
        if env_name(name) in self.env:
            return f"{env_name(name)} ({name})"
        if self.config_file is not None and name in self.toml_keys:
            return f"{self.config_file}:{self.toml_keys[name]}"
        return f"{env_name(name)} ({name})"


def _describe(exc: ValidationError, sources: _Sources) -> str:
    lines: list[str] = []
    for err in exc.errors():
        # Keep the field name, list indexes and map keys; drop pydantic's validator names
        # ("lax-or-strict[...]", "function-after[...]"), which mean nothing to an operator.
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        name = loc[0] if loc else ""
        where = sources.where(name) if name else "settings"
        if len(loc) > 1:
            where += f" item {'.'.join(loc[1:])}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        line = f"invalid setting {where}: {msg}"
        if line not in lines:
            lines.append(line)
    return "\n".join(lines)


def load_settings(
    config_file: Path | None = None,
    *,
    flag_names: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings; ``overrides`` (CLI flags) win, ``None`` values are ignored.

    ``flag_names`` maps an override to the flag it came from (``data_dir`` -> ``--data-dir``)
    so that an invalid value is reported under the name the operator typed.
    """
    toml_keys: dict[str, str] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise SettingsError(f"config file not found: {config_file}")
        try:
            with config_file.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {config_file} is not valid TOML: {exc}") from exc
        unknown = _unknown_toml_keys(config_file, data)
        if unknown:
            raise SettingsError("\n".join(unknown))
        toml_keys = {k.lower(): k for k in data}
    given = {k: v for k, v in overrides.items() if v is not None}
    sources = _Sources(
        {k: v for k, v in (flag_names or {}).items() if k in given},
        config_file,
        toml_keys,
        os.environ,
    )
    token = _TOML_FILE.set(config_file)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, sources)) from None
    except PydanticSettingsError as exc:
        # pydantic-settings fails this way when a list/dict variable is not valid JSON
        m = re.search(r'field "(\w+)"', str(exc))
        name = m.group(1) if m else "?"
        raise SettingsError(
            f"invalid setting {env_name(name)} ({name}): not valid JSON "
            '(lists are JSON, e.g. \'["CT1", "PACS"]\')'
        ) from None
    finally:
        _TOML_FILE.reset(token)
