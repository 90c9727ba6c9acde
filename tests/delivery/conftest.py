"""Fixtures for the delivery tests (SeaweedFS and buckets come from tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from dicomgate.delivery import S3Destination
from tests.delivery.helpers import seaweed_destination
from tests.seaweed import SeaweedFS


@pytest.fixture
def s3_env(seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> SeaweedFS:
    """boto3's credential chain (and DICOMGATE_S3_*) pointed at the SeaweedFS server."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


@pytest.fixture
def s3_dest(seaweed: SeaweedFS, bucket: str) -> Iterator[S3Destination]:
    """An S3Destination on a fresh bucket, prefix ``deliveries``."""
    dest = seaweed_destination(seaweed, bucket)
    yield dest
    asyncio.run(dest.aclose())
