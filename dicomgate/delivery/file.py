"""``file:///path``: the embedded default destination, a directory tree on local disk.

Writes are atomic and durable: the bytes go to a temporary file in the target directory, which
is fsync'd, renamed over the key and followed by an fsync of the directory — a reader (or a
crash) sees the old object or the new one, never half of one.

Only the bytes are stored: ``content_type`` and ``metadata`` are accepted for interface
compatibility and dropped, and :meth:`FileDestination.head` hashes the file to report its
SHA-256 (cheap for the rare restart-time checks it serves). Links are ``file://`` URIs and do
not expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from dicomgate.delivery.destination import (
    CONTENT_TYPE_DICOM,
    StoredObject,
    check_expiry,
    sha256_file,
)
from dicomgate.delivery.errors import DeliveryError, PermanentDeliveryError, classify_os_error
from dicomgate.delivery.layout import validate_key
from dicomgate.spool import fsync_dir

__all__ = ["FileDestination"]

_T = TypeVar("_T")
_CHUNK = 1024 * 1024


def _write_atomic(target: Path, fill: Callable[[BinaryIO], None]) -> None:
    """Create ``target`` atomically: temp file in the same directory, fsync, rename, fsync dir."""
    created = _makedirs(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    # A new directory's own entry lives in its parent: make those durable too.
    for directory in created:
        fsync_dir(directory.parent)


def _makedirs(directory: Path) -> list[Path]:
    """``mkdir -p``, returning the directories it created (outermost first)."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


class FileDestination:
    """A destination that writes objects under a local directory."""

    links_expire = False

    def __init__(self, root: Path, *, max_workers: int = 4) -> None:
        self._root = root.resolve()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dg-file")

    @property
    def url(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        """The directory objects are written under."""
        return self._root

    def path_of(self, key: str) -> Path:
        """The local path of ``key`` (validated so it stays under the root)."""
        return self._root.joinpath(*validate_key(key).split("/"))

    async def _run(self, action: str, func: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, func)
        except DeliveryError:
            raise
        except OSError as exc:
            raise classify_os_error(exc, action) from exc

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str = CONTENT_TYPE_DICOM,
        metadata: Mapping[str, str] | None = None,
        sha256: str | None = None,
    ) -> StoredObject:
        target = self.path_of(key)

        def copy() -> StoredObject:
            digest = hashlib.sha256()
            size = 0

            def fill(out: BinaryIO) -> None:
                nonlocal size
                with path.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                # The copy is hashed as written: a caller's sha256 that disagrees means the
                # source changed under us, and nothing half-checked is published.
                if sha256 is not None and sha256.lower() != digest.hexdigest():
                    raise PermanentDeliveryError(
                        f"put {key}: the file's SHA-256 does not match the one given",
                        code="BadDigest",
                    )

            _write_atomic(target, fill)
            return StoredObject(key=key, size=size, sha256=digest.hexdigest())

        return await self._run(f"put {self.url}/{key}", copy)

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        target = self.path_of(key)

        def fill(out: BinaryIO) -> None:
            out.write(data)

        def write() -> StoredObject:
            _write_atomic(target, fill)
            return StoredObject(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())

        return await self._run(f"put {self.url}/{key}", write)

    async def head(self, key: str) -> StoredObject | None:
        target = self.path_of(key)

        def stat() -> StoredObject | None:
            try:
                digest, size = sha256_file(target)
            except FileNotFoundError:
                return None
            return StoredObject(key=key, size=size, sha256=digest)

        return await self._run(f"head {self.url}/{key}", stat)

    async def exists(self, key: str) -> bool:
        target = self.path_of(key)
        return await self._run(f"stat {self.url}/{key}", target.is_file)

    async def link(self, key: str, expires_in: int) -> str:
        check_expiry(expires_in)
        return self.path_of(key).as_uri()

    async def delete(self, key: str) -> None:
        target = self.path_of(key)

        def remove() -> None:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
                fsync_dir(target.parent)

        await self._run(f"delete {self.url}/{key}", remove)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, True)
