"""What SeaweedFS cannot show: SSE-KMS request parameters (moto), checksum fallback (Stubber)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from dicomgate.delivery import CONTENT_TYPE_DICOM, S3Destination, S3Options, instance_key
from tests.delivery.helpers import SERIES, STUDY, sha256_hex

KEY = instance_key(STUDY, SERIES[0], "2.25.31")
MiB = 1024 * 1024


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's mock AWS with fake credentials (never real ones)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def _kms_destination(options: dict[str, Any]) -> tuple[S3Destination, str, list[dict[str, Any]]]:
    kms = boto3.client("kms", region_name="eu-west-1")
    key_id = kms.create_key(Description="dicomgate test")["KeyMetadata"]["KeyId"]
    opts = S3Options(region="eu-west-1", sse="aws:kms", kms_key_id=key_id, **options)
    client = opts.make_client()
    client.create_bucket(
        Bucket="dg-kms", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append({"operation": model.name, **params})

    client.meta.events.register("provide-client-params.s3.*", record)
    return S3Destination("dg-kms", "out", opts, client=client), key_id, calls


def test_sse_kms_parameters_are_sent_single_part(aws: None, tmp_path: Path) -> None:
    """SSE-KMS sends ServerSideEncryption=aws:kms with the key id, and S3 reports it back."""
    dest, key_id, calls = _kms_destination({"storage_class": "STANDARD_IA"})
    path = tmp_path / "a.dcm"
    path.write_bytes(b"DICM" * 100)
    asyncio.run(dest.put_file(KEY, path))
    put = next(c for c in calls if c["operation"] == "PutObject")
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == key_id
    assert put["StorageClass"] == "STANDARD_IA" and "ChecksumSHA256" in put
    head = dest.client.head_object(Bucket="dg-kms", Key=f"out/{KEY}")
    assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
    asyncio.run(dest.aclose())


def test_sse_kms_parameters_are_sent_multipart(aws: None, tmp_path: Path) -> None:
    """A multipart upload starts with the SSE-KMS parameters and a SHA-256 checksum algorithm."""
    dest, key_id, calls = _kms_destination(
        {"multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB}
    )
    path = tmp_path / "big.dcm"
    path.write_bytes(b"\0" * (6 * MiB))
    stored = asyncio.run(dest.put_file(KEY, path))
    create = next(c for c in calls if c["operation"] == "CreateMultipartUpload")
    assert create["ServerSideEncryption"] == "aws:kms" and create["SSEKMSKeyId"] == key_id
    assert create["ChecksumAlgorithm"] == "SHA256"
    assert create["Metadata"]["sha256"] == sha256_hex(path.read_bytes()) == stored.sha256
    assert sum(c["operation"] == "UploadPart" for c in calls) == 2
    asyncio.run(dest.aclose())


def test_kms_without_key_id_is_refused() -> None:
    """SSE-KMS without a key id is a configuration error, caught before any request."""
    with pytest.raises(ValueError, match="KMS key id"):
        S3Options(sse="aws:kms")


def test_server_without_checksums_falls_back_once(tmp_path: Path) -> None:
    """A NotImplemented answer to checksums is remembered; uploads go on with metadata only."""
    opts = S3Options(region="us-east-1", sse="none")
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1"
    )
    client = opts.make_client(session)
    dest = S3Destination("dg-old", "", opts, client=client)
    with Stubber(client) as stub:
        stub.add_client_error(
            "put_object", service_error_code="NotImplemented", http_status_code=501
        )
        base = {"Bucket": "dg-old", "Key": KEY, "Body": ANY, "ContentType": CONTENT_TYPE_DICOM}
        meta = {"Metadata": {"sha256": sha256_hex(b"one")}}
        stub.add_response("put_object", {"ETag": '"e1"'}, {**base, **meta})
        stub.add_response(
            "put_object", {"ETag": '"e2"'}, {**base, "Metadata": {"sha256": sha256_hex(b"two")}}
        )
        first = asyncio.run(dest.put_bytes(KEY, b"one", content_type=CONTENT_TYPE_DICOM))
        second = asyncio.run(dest.put_bytes(KEY, b"two", content_type=CONTENT_TYPE_DICOM))
        stub.assert_no_pending_responses()
    assert not dest.checksums_enabled
    assert (first.etag, second.etag) == ("e1", "e2")
    asyncio.run(dest.aclose())
