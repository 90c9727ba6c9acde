"""How a contract test names a state store so that another thread or a spawned process can open
its own handle to the same store (a node is a process with its own connection)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dicomgate.state import StateStore

__all__ = ["StoreSpec"]


@dataclass(frozen=True)
class StoreSpec:
    """``backend`` "sqlite" (``location``: the database file) or "dynamodb" (``location``: the
    table); ``env``: what a child process sets first (boto3's endpoint and credentials)."""

    backend: str
    location: str
    env: dict[str, str] = field(default_factory=dict)

    def open(self) -> StateStore:
        if self.backend == "sqlite":
            from dicomgate.state.sqlite import SqliteStateStore

            return SqliteStateStore.open(Path(self.location))
        if self.backend == "dynamodb":
            from dicomgate.state.dynamodb import open_dynamodb

            os.environ.update(self.env)
            return open_dynamodb(self.location)
        raise ValueError(f"unknown backend {self.backend!r}")
