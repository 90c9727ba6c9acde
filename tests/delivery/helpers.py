"""Helpers shared by the delivery tests (and usable by the pipeline's end-to-end tests)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import boto3

from dicomgate.config import Settings
from dicomgate.delivery import (
    DeidInfo,
    Manifest,
    ManifestInstance,
    QuarantinedInstance,
    S3Destination,
    S3Options,
    instance_key,
)
from tests.seaweed import SeaweedFS

STUDY = "2.25.100000000000000000000000000000000001"
SERIES = ("2.25.200000000000000000000000000000000001", "2.25.200000000000000000000000000000000002")
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url`` with a plain HTTP client; return (status, body) even for errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seaweed_settings(
    seaweed: SeaweedFS, bucket: str, tmp_path: Path, **overrides: object
) -> Settings:
    """Settings delivering to ``s3://<bucket>/deliveries`` on ``seaweed``."""
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "destination": f"s3://{bucket}/deliveries",
        "s3_endpoint_url": seaweed.endpoint_url,
        "s3_region": seaweed.region,
        "s3_max_attempts": 1,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def seaweed_destination(
    seaweed: SeaweedFS, bucket: str, prefix: str = "deliveries", **options: object
) -> S3Destination:
    """An S3Destination on ``seaweed`` with explicit credentials (no environment needed)."""
    opts = S3Options(
        region=seaweed.region,
        endpoint_url=seaweed.endpoint_url,
        max_attempts=1,
        **options,  # type: ignore[arg-type]
    )
    session = boto3.session.Session(
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name=seaweed.region,
    )
    return S3Destination(bucket, prefix, opts, client=opts.make_client(session))


def make_instance(series_index: int, number: int, data: bytes) -> ManifestInstance:
    """A manifest entry for fake instance ``number`` of series ``series_index``."""
    series = SERIES[series_index]
    sop = f"2.25.3{series_index}{number:04d}"
    return ManifestInstance(
        sop_instance_uid=sop,
        series_instance_uid=series,
        sop_class_uid=CT,
        transfer_syntax_uid=EXPLICIT_LE,
        modality="CT",
        series_number=series_index + 1,
        instance_number=number,
        size=len(data),
        sha256=sha256_hex(data),
        key=instance_key(STUDY, series, sop),
    )


def make_manifest(
    instances: list[ManifestInstance], version: int = 1, quarantined: int = 0
) -> Manifest:
    """A manifest of ``instances`` plus ``quarantined`` held-back ones."""
    return Manifest.build(
        study_instance_uid=STUDY,
        manifest_version=version,
        instances=instances,
        quarantined=[
            QuarantinedInstance(
                sop_instance_uid=f"2.25.9{n}",
                series_instance_uid=SERIES[0],
                sop_class_uid=CT,
                stage="verify",
                reason="PatientName survived de-identification",
                quarantined_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            )
            for n in range(quarantined)
        ],
        deidentification=DeidInfo(options=["retain_uids"], table_version="2026c"),
        created_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        node="DICOMGATE",
        destination="s3://bucket/deliveries",
    )
