"""``s3://bucket/prefix``: Amazon S3 or any S3-compatible server (``s3_endpoint_url``).

Requests are signed with SigV4 (also the presigned links, which SigV4 caps at 7 days). boto3 is
blocking, so calls run on this destination's own thread pool (see
:mod:`dicomgate.delivery.destination`); boto3 clients are thread-safe.

Integrity, on every object:

* our own hex SHA-256 of the whole object in user metadata (``x-amz-meta-sha256``), which
  survives multipart uploads and is what :meth:`S3Destination.head` reports;
* with ``s3_checksum`` (the default) an S3 checksum the server verifies on receipt: below the
  multipart threshold, ``x-amz-checksum-sha256`` carries *our* digest, so the server refuses
  (``BadDigest``) any byte that differs from what we hashed; above it, every part carries its
  own SHA-256 (``ChecksumAlgorithm=SHA256``; S3 stores a composite ``<b64>-<parts>`` checksum).
  A server that answers ``NotImplemented`` to checksums is detected once, logged, and used
  without them from then on (the metadata digest remains).

Encryption (``s3_sse``): ``AES256`` (SSE-S3) or ``aws:kms`` with ``s3_kms_key_id``; the storage
class (``s3_storage_class``) is passed as given. Failures become
:class:`~dicomgate.delivery.errors.RetryableDeliveryError` or
:class:`~dicomgate.delivery.errors.PermanentDeliveryError`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from dicomgate._logging import get_logger
from dicomgate.delivery.destination import (
    CONTENT_TYPE_DICOM,
    StoredObject,
    check_expiry,
    sha256_file,
)
from dicomgate.delivery.errors import DeliveryError, PermanentDeliveryError, classify_aws_error
from dicomgate.delivery.layout import validate_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from dicomgate.config import Settings

__all__ = ["S3Destination", "S3Options", "parse_s3_url"]

_T = TypeVar("_T")
_log = get_logger(__name__)

# S3 user-metadata names travel as x-amz-meta-<name> headers: lower-case token characters.
_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SHA256_METADATA = "sha256"


@dataclass(frozen=True, slots=True)
class S3Options:
    """Everything an :class:`S3Destination` needs besides the bucket; see ``Settings.s3_*``."""

    region: str | None = None
    endpoint_url: str | None = None
    sse: Literal["none", "AES256", "aws:kms"] = "AES256"
    kms_key_id: str | None = None
    storage_class: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    checksum: bool = True
    max_attempts: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * 1024**2
    multipart_chunksize: int = 16 * 1024**2
    multipart_concurrency: int = 4
    concurrency: int = 8

    def __post_init__(self) -> None:
        if self.sse == "aws:kms" and not self.kms_key_id:
            raise ValueError("SSE-KMS needs a KMS key id (s3_kms_key_id)")

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        """The options the settings describe."""
        return cls(
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
            storage_class=settings.s3_storage_class,
            addressing_style=settings.s3_addressing_style,
            checksum=settings.s3_checksum,
            max_attempts=settings.s3_max_attempts,
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            multipart_threshold=int(settings.s3_multipart_threshold),
            multipart_chunksize=int(settings.s3_multipart_chunksize),
            multipart_concurrency=settings.s3_multipart_concurrency,
            concurrency=settings.delivery_concurrency,
        )

    def make_client(self, session: boto3.session.Session | None = None) -> S3Client:
        """A boto3 S3 client: SigV4, bounded retries and timeouts, a pool sized for our threads."""
        config = Config(
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max(10, self.concurrency * self.multipart_concurrency),
            s3={"addressing_style": self.addressing_style},
            # We choose checksums ourselves; botocore's default CRC32 on every request is not
            # understood by every S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = session or boto3.session.Session()
        return session.client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")`` (prefix may be empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket[/prefix] URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"s3 destination URL may not have a query or fragment: {url!r}")
    prefix = parts.path.strip("/")
    if prefix:
        validate_key(prefix)
    return parts.netloc, prefix


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    for name, value in metadata.items():
        if not _META_NAME.match(name) or not value.isascii():
            raise ValueError(f"S3 metadata must be lower-case names with ASCII values: {name!r}")
    return dict(metadata)


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _stored(key: str, size: int, sha256: str | None, response: Mapping[str, Any]) -> StoredObject:
    """A :class:`StoredObject` from a PutObject/HeadObject response."""
    return StoredObject(
        key=key,
        size=size,
        sha256=sha256,
        etag=response.get("ETag", "").strip('"') or None,
        version_id=response.get("VersionId"),
    )


class S3Destination:
    """A destination in an S3 bucket, under an optional key prefix."""

    links_expire = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        options: S3Options | None = None,
        *,
        client: S3Client | None = None,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._options = options or S3Options()
        self._client = client or self._options.make_client()
        self._checksum = self._options.checksum
        self._transfer = TransferConfig(
            multipart_threshold=self._options.multipart_threshold,
            multipart_chunksize=self._options.multipart_chunksize,
            max_concurrency=self._options.multipart_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        self._pool = ThreadPoolExecutor(
            max_workers=self._options.concurrency, thread_name_prefix="dg-s3"
        )

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> S3Destination:
        """The destination ``s3://bucket/prefix`` configured by ``settings``."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, S3Options.from_settings(settings))

    # -- helpers -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> S3Client:
        """The boto3 client (thread-safe; tests use it to inspect the bucket)."""
        return self._client

    @property
    def checksums_enabled(self) -> bool:
        """Whether S3 checksums are sent (False after a server refused them)."""
        return self._checksum

    def object_key(self, key: str) -> str:
        """The full S3 key of a relative ``key``: the prefix joined with it."""
        validate_key(key)
        return f"{self._prefix}/{key}" if self._prefix else key

    def _extra_args(self, content_type: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": dict(metadata)}
        if self._options.sse != "none":
            extra["ServerSideEncryption"] = self._options.sse
        if self._options.sse == "aws:kms":
            extra["SSEKMSKeyId"] = self._options.kms_key_id
        if self._options.storage_class:
            extra["StorageClass"] = self._options.storage_class
        return extra

    @staticmethod
    def _checksum_args(digest: str, checksum: bool) -> dict[str, Any]:
        # Our own digest, so the server checks the bytes against what we hashed.
        return {"ChecksumSHA256": _b64(digest)} if checksum else {}

    async def _run(self, action: str, func: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, func)
        except (DeliveryError, ValueError):
            raise
        except Exception as exc:
            raise classify_aws_error(exc, action) from exc

    def _with_checksum_fallback(self, action: str, upload: Callable[[bool], _T]) -> _T:
        """Run ``upload(checksum)``; if the server does not implement checksums, go without."""
        if not self._checksum:
            return upload(False)
        try:
            return upload(True)
        except Exception as exc:
            error = classify_aws_error(exc, action)
            if error.code != "NotImplemented":
                raise
            self._checksum = False
            _log.warning(
                "s3_checksums_unsupported",
                destination=self.url,
                detail=str(error),
                fallback="x-amz-meta-sha256 only",
            )
            return upload(False)

    # -- the Destination interface -------------------------------------------------------------

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = CONTENT_TYPE_DICOM,
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
    ) -> StoredObject:
        s3_key = self.object_key(key)
        meta = _check_metadata(metadata or {})
        action = f"put s3://{self._bucket}/{s3_key}"

        def upload() -> StoredObject:
            size = path.stat().st_size
            digest = sha256.lower() if sha256 else sha256_file(path)[0]
            extra = self._extra_args(content_type, {**meta, SHA256_METADATA: digest})
            if size < self._options.multipart_threshold:

                def single(checksum: bool) -> StoredObject:
                    with path.open("rb") as body:
                        response = self._client.put_object(
                            Bucket=self._bucket,
                            Key=s3_key,
                            Body=body,
                            **self._checksum_args(digest, checksum),
                            **extra,
                        )
                    return _stored(key, size, digest, response)

                return self._with_checksum_fallback(action, single)

            def multipart(checksum: bool) -> StoredObject:
                args = {**extra, "ChecksumAlgorithm": "SHA256"} if checksum else extra
                self._client.upload_file(
                    str(path), self._bucket, s3_key, ExtraArgs=args, Config=self._transfer
                )
                stored = self._head(key)
                if stored is None or stored.size != size:
                    raise PermanentDeliveryError(
                        f"{action}: object missing or wrong size after upload"
                    )
                return stored

            return self._with_checksum_fallback(action, multipart)

        return await self._run(action, upload)

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        s3_key = self.object_key(key)
        digest = hashlib.sha256(data).hexdigest()
        extra = self._extra_args(
            content_type, {**_check_metadata(metadata or {}), SHA256_METADATA: digest}
        )
        action = f"put s3://{self._bucket}/{s3_key}"

        def single(checksum: bool) -> StoredObject:
            response = self._client.put_object(
                Bucket=self._bucket,
                Key=s3_key,
                Body=data,
                **self._checksum_args(digest, checksum),
                **extra,
            )
            return _stored(key, len(data), digest, response)

        return await self._run(action, lambda: self._with_checksum_fallback(action, single))

    def _head(self, key: str) -> StoredObject | None:
        try:
            response = self._client.head_object(Bucket=self._bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        digest = response.get("Metadata", {}).get(SHA256_METADATA)
        if digest is None:
            # Not ours, or written without metadata: a single-part S3 checksum is still whole.
            checksum = response.get("ChecksumSHA256")
            if checksum and "-" not in checksum:
                digest = base64.b64decode(checksum).hex()
        return _stored(key, response["ContentLength"], digest, response)

    async def head(self, key: str) -> StoredObject | None:
        return await self._run(
            f"head s3://{self._bucket}/{self.object_key(key)}", lambda: self._head(key)
        )

    async def exists(self, key: str) -> bool:
        return await self.head(key) is not None

    async def link(self, key: str, expires_in: int) -> str:
        check_expiry(expires_in)
        s3_key = self.object_key(key)

        def presign() -> str:
            # Local computation, but the first call may resolve credentials (IMDS, SSO...).
            return self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": s3_key},
                ExpiresIn=expires_in,
            )

        return await self._run(f"presign s3://{self._bucket}/{s3_key}", presign)

    async def delete(self, key: str) -> None:
        s3_key = self.object_key(key)

        def remove() -> None:
            self._client.delete_object(Bucket=self._bucket, Key=s3_key)

        await self._run(f"delete s3://{self._bucket}/{s3_key}", remove)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
        self._client.close()
