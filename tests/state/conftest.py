"""The ``state_backend`` fixture: every contract test runs once per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomgate.state import StateStore
from tests.moto_dynamodb import dynamodb_env, moto_dynamodb  # noqa: F401 - fixtures
from tests.state._spec import StoreSpec

#: Backends the contract tests run against. To add one: append its name here and a branch in
#: ``state_backend`` below that returns the StoreSpec of a fresh, empty store.
BACKENDS = ["sqlite", "dynamodb"]


@pytest.fixture(params=BACKENDS)
def state_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """A fresh, empty store of one backend, named so that threads and processes can open it."""
    if request.param == "sqlite":
        spec = StoreSpec("sqlite", str(tmp_path / "state.sqlite3"))
    elif request.param == "dynamodb":
        # a table of its own on the session's moto server (started only if a test needs it)
        server = request.getfixturevalue("dynamodb_env")
        spec = StoreSpec("dynamodb", f"dg-{uuid.uuid4().hex[:12]}", env=server.env())
    else:
        raise AssertionError(f"no fixture branch for backend {request.param!r}")
    spec.open().close()  # created (schema / table) before anyone races on it
    return spec


@pytest.fixture
def store(state_backend: StoreSpec) -> Iterator[StateStore]:
    with state_backend.open() as s:
        yield s
