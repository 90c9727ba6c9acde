"""Shared fixtures: DCMTK tools, in-process nodes, pynetdicom senders."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DCMTK_TOOLS, NodeHandle, start_node
from tests.seaweed import SeaweedFS, run_seaweedfs


@pytest.fixture(scope="session")
def dcmtk() -> dict[str, str]:
    """Paths of DCMTK's tools (Debian package ``dcmtk``); the suite fails loudly without them.

    /usr/bin first: pynetdicom installs Python apps also called ``storescu``/``echoscu``.
    """
    found = {}
    for tool in DCMTK_TOOLS:
        path = f"/usr/bin/{tool}" if Path(f"/usr/bin/{tool}").exists() else shutil.which(tool)
        if path is None:
            pytest.fail(f"DCMTK's {tool} is missing: apt-get install dcmtk (see .ci/run)")
        found[tool] = path
    return found


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeHandle]:
    """A node on 127.0.0.1 with an ephemeral port and default policy, stopped afterwards."""
    with start_node(tmp_path / "data") as handle:
        yield handle


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
