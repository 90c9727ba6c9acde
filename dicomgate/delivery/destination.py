"""The one small interface every destination implements, and what it returns.

Why async: the pipeline is asyncio, and a destination call waits on the network or the disk.
boto3 and file I/O are blocking, so each implementation runs them on **its own** thread pool
(``delivery_concurrency`` workers) rather than ``asyncio.to_thread``'s shared default pool,
which on a 2-core machine holds 6 threads and is shared with everything else. The event loop
never blocks; the pipeline bounds concurrency by how many calls it has in flight.

Every method raises only :class:`~dicomgate.delivery.errors.RetryableDeliveryError` or
:class:`~dicomgate.delivery.errors.PermanentDeliveryError` (plus ``ValueError`` for a key or
argument that could never work — a bug, not a delivery failure).

Idempotency: ``put_*`` overwrites, so re-uploading after a crash is harmless; ``head`` lets a
restarted pipeline skip an object already there with the same ``sha256``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from dicomgate.spool import sha256_file  # one home for it, re-exported here

__all__ = [
    "CONTENT_TYPE_CSV",
    "CONTENT_TYPE_DICOM",
    "CONTENT_TYPE_JSON",
    "MAX_LINK_EXPIRY",
    "Destination",
    "StoredObject",
    "check_expiry",
    "public_url",
    "sha256_file",
]

CONTENT_TYPE_DICOM = "application/dicom"  # PS3.18 / RFC 3240
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv; charset=utf-8"

# SigV4 presigned URLs live at most 7 days (X-Amz-Expires <= 604800).
MAX_LINK_EXPIRY = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as it is in the destination.

    ``sha256`` is the lowercase hex SHA-256 of the whole object as we recorded it at upload
    (``None`` if the object was not written by dicomgate and carries no such record).
    ``etag`` is the server's ETag without quotes (for S3 multipart, not an MD5);
    ``version_id`` is set when the bucket is versioned.
    """

    key: str
    size: int
    sha256: str | None
    etag: str | None = None
    version_id: str | None = None


def public_url(url: str) -> str:
    """``url`` without userinfo (``user:secret@``) and without a query (it may hold a token):
    what may be logged; neither ``s3://`` nor ``file://`` destinations need them to be
    recognised in a log."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@runtime_checkable
class Destination(Protocol):
    """Where de-identified objects go. Keys come from :mod:`dicomgate.delivery.layout`."""

    @property
    def url(self) -> str:
        """The destination as configured (``s3://bucket/prefix``, ``file:///path``)."""
        ...

    @property
    def links_expire(self) -> bool:
        """Whether a link stops working after its lifetime (S3 presigned URLs do; a
        ``file://`` path does not, so it is reported with no expiry)."""
        ...

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = CONTENT_TYPE_DICOM,
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
    ) -> StoredObject:
        """Upload the file at ``path`` as ``key`` (overwriting), with its SHA-256.

        Pass ``sha256`` (hex) when it is already known to skip hashing the file again; S3
        single-part uploads and file copies are then checked against it (a mismatch is a
        ``PermanentDeliveryError`` with code ``BadDigest``); multipart parts are checked
        against their own per-part checksums.
        """
        ...

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Upload ``data`` as ``key`` (overwriting) — manifests and indexes."""
        ...

    async def head(self, key: str) -> StoredObject | None:
        """The object stored as ``key``, or ``None`` if there is none."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored as ``key``."""
        ...

    async def link(self, key: str, expires_in: int) -> str:
        """A URL to download ``key``: presigned GET for S3, ``file://`` URI for files.

        ``expires_in`` is in seconds, 1 to 7 days. No request is made: a link to a missing
        key is made just the same (and fails when used).
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; no error if it does not exist."""
        ...

    async def aclose(self) -> None:
        """Release threads and connections. The destination is unusable afterwards."""
        ...


def check_expiry(expires_in: int) -> int:
    """Return ``expires_in`` if it is a valid link lifetime, else raise ``ValueError``."""
    if not 1 <= expires_in <= MAX_LINK_EXPIRY:
        raise ValueError(f"link lifetime must be 1..{MAX_LINK_EXPIRY} s, got {expires_in}")
    return expires_in
