"""Fixtures for the delivery tests: one SeaweedFS per session, a fresh bucket per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from dicomgate.delivery import S3Destination
from tests.delivery.helpers import seaweed_destination
from tests.seaweed import SeaweedFS, run_seaweedfs


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on 127.0.0.1, shared by the session (all its ports are ephemeral)."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def bucket(seaweed: SeaweedFS) -> str:
    """A new, empty bucket on the session's SeaweedFS."""
    name = f"dg-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(name)
    return name


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
