"""Turn the one ``destination`` setting into a :class:`Destination`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from dicomgate.delivery.destination import Destination
from dicomgate.delivery.file import FileDestination
from dicomgate.delivery.s3 import S3Destination

if TYPE_CHECKING:
    from dicomgate.config import Settings

__all__ = ["file_url_path", "open_destination"]


def file_url_path(url: str) -> Path:
    """``file:///srv/out`` → ``Path("/srv/out")``; only local, absolute file URLs."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ValueError(f"not a local file:///path URL: {url!r}")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or parts.query or parts.fragment:
        raise ValueError(f"file destination must be an absolute file:///path: {url!r}")
    return path


def open_destination(url: str, settings: Settings) -> Destination:
    """The destination for ``url`` (``s3://bucket/prefix`` or ``file:///path``).

    Pass ``settings.destination_url`` for the configured one (empty ``destination`` means
    ``file://<data_dir>/delivered``). Nothing is contacted here: a wrong bucket or missing
    credentials show up as a :class:`PermanentDeliveryError` on first use.
    """
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        return S3Destination.from_url(url, settings)
    if scheme == "file":
        return FileDestination(file_url_path(url), max_workers=settings.delivery_concurrency)
    raise ValueError(f"unsupported destination {url!r}: use s3://bucket/prefix or file:///path")
