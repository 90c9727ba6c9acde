"""S3Destination against a real S3-compatible server (SeaweedFS), links checked over plain HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from pathlib import Path

import pytest

from dicomgate.delivery import (
    CONTENT_TYPE_DICOM,
    INDEX_COLUMNS,
    Manifest,
    PermanentDeliveryError,
    RetryableDeliveryError,
    S3Destination,
    instance_key,
    make_link_set,
    open_destination,
    publish_manifest,
    read_index_csv,
)
from tests.delivery.helpers import (
    SERIES,
    STUDY,
    http_get,
    make_instance,
    make_manifest,
    seaweed_destination,
    seaweed_settings,
    sha256_hex,
)
from tests.seaweed import SeaweedFS, run_seaweedfs

KEY = instance_key(STUDY, SERIES[0], "2.25.31")
MiB = 1024 * 1024


def test_small_upload_round_trips_through_presigned_link(
    s3_dest: S3Destination, tmp_path: Path
) -> None:
    """A single-part upload records size and SHA-256 and downloads intact through its link."""
    data = os.urandom(100_000)
    path = tmp_path / "a.dcm"
    path.write_bytes(data)

    async def go() -> tuple[object, object, str]:
        stored = await s3_dest.put_file(KEY, path, metadata={"pipeline": "test"})
        return stored, await s3_dest.head(KEY), await s3_dest.link(KEY, 300)

    stored, head, url = asyncio.run(go())
    assert stored == head
    assert head is not None and head.size == len(data) and head.sha256 == sha256_hex(data)  # type: ignore[attr-defined]
    assert url.startswith(s3_dest.client.meta.endpoint_url)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=300" in url
    status, body = http_get(url)
    assert status == 200 and body == data and sha256_hex(body) == sha256_hex(data)


def test_object_carries_sse_checksum_metadata_and_prefix(
    s3_dest: S3Destination, tmp_path: Path
) -> None:
    """SSE-S3, content type, x-amz-meta-sha256 and the server-verified SHA-256 are all stored."""
    data = b"DICM" * 1000
    asyncio.run(s3_dest.put_bytes(KEY, data, content_type=CONTENT_TYPE_DICOM))
    head = s3_dest.client.head_object(
        Bucket=s3_dest.bucket, Key=f"deliveries/{KEY}", ChecksumMode="ENABLED"
    )
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == CONTENT_TYPE_DICOM
    assert head["Metadata"]["sha256"] == sha256_hex(data)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_multipart_upload_has_parts_and_downloads_intact(
    seaweed: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """Above the threshold the object is uploaded in >= 2 parts and still hashes right."""
    dest = seaweed_destination(
        seaweed, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    data = os.urandom(11 * MiB)
    path = tmp_path / "big.dcm"
    path.write_bytes(data)

    async def go() -> tuple[object, str]:
        try:
            return await dest.put_file(KEY, path), await dest.link(KEY, 300)
        finally:
            await dest.aclose()

    stored, url = asyncio.run(go())
    assert stored.size == len(data) and stored.sha256 == sha256_hex(data)  # type: ignore[attr-defined]
    attrs = dest.client.get_object_attributes(
        Bucket=bucket, Key=f"deliveries/{KEY}", ObjectAttributes=["ObjectParts"]
    )
    assert attrs["ObjectParts"]["TotalPartsCount"] >= 2
    head = dest.client.head_object(Bucket=bucket, Key=f"deliveries/{KEY}", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].endswith("-3")  # composite checksum of 3 SHA-256 parts
    assert head["Metadata"]["sha256"] == sha256_hex(data)
    status, body = http_get(url)
    assert status == 200 and sha256_hex(body) == sha256_hex(data)


def test_tampered_links_are_refused(s3_dest: S3Destination) -> None:
    """Changing a signature character or the key of a presigned link gets 403."""
    other = instance_key(STUDY, SERIES[0], "2.25.32")

    async def go() -> str:
        await s3_dest.put_bytes(KEY, b"one", content_type=CONTENT_TYPE_DICOM)
        await s3_dest.put_bytes(other, b"two", content_type=CONTENT_TYPE_DICOM)
        return await s3_dest.link(KEY, 300)

    url = asyncio.run(go())
    assert http_get(url) == (200, b"one")
    sig = url.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = url[:sig] + ("0" if url[sig] != "0" else "1") + url[sig + 1 :]
    assert http_get(flipped)[0] == 403
    assert http_get(url.replace("2.25.31.dcm", "2.25.32.dcm"))[0] == 403


def test_expired_link_is_refused(s3_dest: S3Destination) -> None:
    """A link made with expires_in=1 no longer works two seconds later."""

    async def go() -> str:
        await s3_dest.put_bytes(KEY, b"soon gone", content_type=CONTENT_TYPE_DICOM)
        return await s3_dest.link(KEY, 1)

    url = asyncio.run(go())
    time.sleep(2.1)
    status, body = http_get(url)
    assert status == 403 and b"expired" in body.lower()


def test_link_lifetime_is_capped_at_seven_days(s3_dest: S3Destination) -> None:
    """SigV4 links last at most 7 days; longer (or zero) lifetimes are a ValueError."""
    assert "X-Amz-Expires=604800" in asyncio.run(s3_dest.link(KEY, 7 * 24 * 3600))
    for bad in (0, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="link lifetime"):
            asyncio.run(s3_dest.link(KEY, bad))


def test_head_missing_delete_and_reupload(s3_dest: S3Destination) -> None:
    """head() is None for a missing key, delete is idempotent, re-upload overwrites."""

    async def go() -> None:
        assert await s3_dest.head(KEY) is None
        assert not await s3_dest.exists(KEY)
        await s3_dest.put_bytes(KEY, b"v1", content_type=CONTENT_TYPE_DICOM)
        second = await s3_dest.put_bytes(KEY, b"v2", content_type=CONTENT_TYPE_DICOM)
        head = await s3_dest.head(KEY)
        assert head is not None and head.sha256 == second.sha256 == sha256_hex(b"v2")
        await s3_dest.delete(KEY)
        await s3_dest.delete(KEY)
        assert not await s3_dest.exists(KEY)

    asyncio.run(go())


def test_wrong_sha256_is_refused_by_the_server(s3_dest: S3Destination, tmp_path: Path) -> None:
    """A file that does not match the SHA-256 we were given is rejected (BadDigest), not stored."""
    path = tmp_path / "a.dcm"
    path.write_bytes(b"actual bytes")
    with pytest.raises(PermanentDeliveryError) as info:
        asyncio.run(s3_dest.put_file(KEY, path, sha256=sha256_hex(b"other bytes")))
    assert info.value.code == "BadDigest"
    assert asyncio.run(s3_dest.head(KEY)) is None


def test_missing_bucket_is_permanent(seaweed: SeaweedFS, tmp_path: Path) -> None:
    """Uploading to a bucket that does not exist is a PermanentDeliveryError (NoSuchBucket)."""
    dest = seaweed_destination(seaweed, "dg-no-such-bucket")
    with pytest.raises(PermanentDeliveryError) as info:
        asyncio.run(dest.put_bytes(KEY, b"x", content_type=CONTENT_TYPE_DICOM))
    assert info.value.code == "NoSuchBucket" and not info.value.retryable
    asyncio.run(dest.aclose())


def test_stopped_server_is_retryable(tmp_path: Path) -> None:
    """With the S3 server stopped, uploads and heads fail with RetryableDeliveryError."""
    with run_seaweedfs(tmp_path) as server:
        server.create_bucket("dg-outage")
        dest = seaweed_destination(server, "dg-outage")
        asyncio.run(dest.put_bytes(KEY, b"before", content_type=CONTENT_TYPE_DICOM))
        server.stop()
        for call in (
            dest.put_bytes(KEY, b"during", content_type=CONTENT_TYPE_DICOM),
            dest.head(KEY),
        ):
            with pytest.raises(RetryableDeliveryError) as info:
                asyncio.run(call)
            assert info.value.retryable and info.value.code == "EndpointConnectionError"
        server.start()
        stored = asyncio.run(dest.put_bytes(KEY, b"after", content_type=CONTENT_TYPE_DICOM))
        assert stored.sha256 == sha256_hex(b"after")
        asyncio.run(dest.aclose())


def test_open_destination_uses_settings_and_credential_chain(
    s3_env: SeaweedFS, bucket: str, tmp_path: Path
) -> None:
    """open_destination('s3://...') builds a working destination from Settings and AWS_* env."""
    settings = seaweed_settings(s3_env, bucket, tmp_path, s3_storage_class="STANDARD_IA")
    dest = open_destination(settings.destination_url, settings)
    assert isinstance(dest, S3Destination) and dest.url == f"s3://{bucket}/deliveries"
    asyncio.run(dest.put_bytes(KEY, b"x", content_type=CONTENT_TYPE_DICOM))
    head = dest.client.head_object(Bucket=bucket, Key=f"deliveries/{KEY}")
    assert head.get("StorageClass") == "STANDARD_IA"
    asyncio.run(dest.aclose())


def test_published_study_downloads_and_matches_manifest(
    s3_dest: S3Destination, tmp_path: Path
) -> None:
    """Instances, manifest and index all download through a LinkSet and agree with each other."""
    blobs = [os.urandom(1000 + n) for n in range(4)]
    instances = [make_instance(n % 2, n, blob) for n, blob in enumerate(blobs)]

    async def go() -> tuple[object, object]:
        for inst, blob in zip(instances, blobs, strict=True):
            path = tmp_path / f"{inst.sop_instance_uid}.dcm"
            path.write_bytes(blob)
            await s3_dest.put_file(inst.key, path, sha256=inst.sha256)
        manifest = make_manifest(instances, quarantined=1)
        published = await publish_manifest(s3_dest, manifest)
        return published, await make_link_set(s3_dest, manifest, 600)

    published, links = asyncio.run(go())
    status, body = http_get(links.manifest.url)  # type: ignore[attr-defined]
    assert status == 200 and sha256_hex(body) == published.manifest.sha256  # type: ignore[attr-defined]
    manifest = Manifest.from_json(body)
    assert manifest.counts.instances == 4 and manifest.counts.quarantined == 1
    status, index = http_get(links.index.url)  # type: ignore[attr-defined]
    rows = read_index_csv(index)
    assert status == 200 and [r["sop_instance_uid"] for r in rows] == [
        i.sop_instance_uid for i in manifest.instances
    ]
    assert set(rows[0]) == set(INDEX_COLUMNS)
    for link in links.instances:  # type: ignore[attr-defined]
        status, blob = http_get(link.url)
        assert status == 200 and len(blob) == link.size and sha256_hex(blob) == link.sha256
    latest = s3_dest.client.get_object(
        Bucket=s3_dest.bucket, Key=f"deliveries/{STUDY}/manifest.json"
    )
    assert latest["Body"].read() == body
