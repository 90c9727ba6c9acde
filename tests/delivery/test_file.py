"""FileDestination: atomic, durable writes under a directory, file:// links."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dicomgate.config import Settings
from dicomgate.delivery import (
    CONTENT_TYPE_JSON,
    FileDestination,
    PermanentDeliveryError,
    instance_key,
    open_destination,
)
from tests.delivery.helpers import SERIES, STUDY, sha256_hex

KEY = instance_key(STUDY, SERIES[0], "2.25.31")


def test_put_file_copies_bytes_and_hash(tmp_path: Path) -> None:
    """put_file writes the bytes under root/<key> and reports size and SHA-256."""
    dest = FileDestination(tmp_path / "out")
    src = tmp_path / "src.dcm"
    src.write_bytes(b"DICM" * 5000)
    stored = asyncio.run(dest.put_file(KEY, src))
    target = tmp_path / "out" / KEY
    assert target.read_bytes() == src.read_bytes()
    assert stored.size == 20000 and stored.sha256 == sha256_hex(src.read_bytes())
    assert asyncio.run(dest.head(KEY)) == stored
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    asyncio.run(dest.aclose())


def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    """After writes and overwrites only the final files exist: no .tmp leftovers."""
    dest = FileDestination(tmp_path)
    for n in range(3):
        asyncio.run(dest.put_bytes(KEY, b"v%d" % n, content_type=CONTENT_TYPE_JSON))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / KEY] and files[0].read_bytes() == b"v2"
    asyncio.run(dest.aclose())


def test_failed_write_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between write and rename leaves the previous version whole and no temp file."""
    dest = FileDestination(tmp_path)
    asyncio.run(dest.put_bytes(KEY, b"old", content_type=CONTENT_TYPE_JSON))

    def fail_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail_fsync)
    with pytest.raises(Exception) as info:
        asyncio.run(dest.put_bytes(KEY, b"new", content_type=CONTENT_TYPE_JSON))
    assert info.value.retryable  # type: ignore[attr-defined]  # EIO may clear up
    assert (tmp_path / KEY).read_bytes() == b"old"
    assert [p.name for p in (tmp_path / KEY).parent.iterdir()] == ["2.25.31.dcm"]
    asyncio.run(dest.aclose())


def test_writes_are_fsynced_before_and_after_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is fsync'd, then renamed, then its directory (and new parents) fsync'd."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if Path(f"/proc/self/fd/{fd}").is_dir() else "fsync-file")
        real_fsync(fd)

    def replace(self: Path, target: Path) -> Path:
        events.append("rename")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    dest = FileDestination(tmp_path)
    asyncio.run(dest.put_bytes(KEY, b"x", content_type=CONTENT_TYPE_JSON))
    # study/ and series/ were created: the object's dir plus both new directories' parents.
    assert events == ["fsync-file", "rename", "fsync-dir", "fsync-dir", "fsync-dir"]
    asyncio.run(dest.aclose())


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    """A file whose bytes do not match the given SHA-256 is not published."""
    dest = FileDestination(tmp_path / "out")
    src = tmp_path / "src.dcm"
    src.write_bytes(b"actual")
    with pytest.raises(PermanentDeliveryError, match="SHA-256"):
        asyncio.run(dest.put_file(KEY, src, sha256=sha256_hex(b"expected")))
    assert not (tmp_path / "out" / KEY).exists()
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))
    asyncio.run(dest.aclose())


def test_link_head_delete(tmp_path: Path) -> None:
    """link() is the file URI; head() is None once deleted; delete is idempotent."""
    dest = FileDestination(tmp_path)

    async def go() -> None:
        await dest.put_bytes(KEY, b"x", content_type=CONTENT_TYPE_JSON)
        assert await dest.link(KEY, 60) == (tmp_path / KEY).resolve().as_uri()
        assert await dest.exists(KEY)
        await dest.delete(KEY)
        await dest.delete(KEY)
        assert await dest.head(KEY) is None and not await dest.exists(KEY)
        await dest.aclose()

    asyncio.run(go())


@pytest.mark.parametrize("key", ["../escape.dcm", "/abs.dcm", "a//b", "a/./b", "a\\b", ""])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    """Keys with dot segments, empty segments, backslashes or a leading slash are refused."""
    dest = FileDestination(tmp_path)
    with pytest.raises(ValueError, match="invalid object key"):
        asyncio.run(dest.put_bytes(key, b"x", content_type=CONTENT_TYPE_JSON))
    asyncio.run(dest.aclose())


def test_root_that_is_a_file_is_permanent(tmp_path: Path) -> None:
    """A destination root that is not a directory fails permanently (ENOTDIR)."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    dest = FileDestination(blocker)
    with pytest.raises(PermanentDeliveryError) as info:
        asyncio.run(dest.put_bytes(KEY, b"x", content_type=CONTENT_TYPE_JSON))
    assert info.value.code == "ENOTDIR"
    asyncio.run(dest.aclose())


def test_default_destination_is_under_the_data_dir(tmp_path: Path) -> None:
    """With no destination set, open_destination gives file://<data_dir>/delivered."""
    settings = Settings(data_dir=tmp_path)
    dest = open_destination(settings.destination_url, settings)
    assert isinstance(dest, FileDestination) and dest.root == (tmp_path / "delivered").resolve()
    asyncio.run(dest.aclose())


@pytest.mark.parametrize("url", ["file://host/x", "file:relative", "http://x/y", "s3://"])
def test_bad_destination_urls(tmp_path: Path, url: str) -> None:
    """Remote file hosts, relative paths, other schemes and bucket-less s3 URLs are refused."""
    with pytest.raises(ValueError):
        open_destination(url, Settings(data_dir=tmp_path))
