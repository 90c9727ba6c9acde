"""Run moto's DynamoDB as a real HTTP endpoint, in a separate process, for tests.

    with run_moto_dynamodb() as moto:
        monkeypatch.setenv(...) for each item of moto.env()   # boto3's own variables
        ...                                                   # boto3.client("dynamodb") talks to it

Why a separate, single-threaded process: moto's ``update_item`` reads the item, checks the
condition and writes with no lock (its FAQ: not concurrency safe), so a threaded server can let
two racing nodes both win one conditional write. werkzeug's ``run_simple(..., threaded=False)``
handles one request at a time and serializes them — the guarantee real DynamoDB gives per item.
A separate process also keeps moto's CPU off the test process's GIL.

The listening socket is bound here, on 127.0.0.1 port 0, and handed to the child, which serves
it through ``run_simple`` (werkzeug's own hand-over: ``WERKZEUG_SERVER_FD``); so the port is known
before the child starts and nobody can take it in between. The server is always stopped.

One repair to moto (in the child only, semantics unchanged): its ``transact_write_items``
deep-copies the whole table once per item of the transaction, to roll back on failure — a
3-item admit costs ~100 ms once the table holds a 3,000-instance study, a 100-item page seconds.
The child backs up only the items the transaction names, and restores those on failure.
And two for speed, where moto spends about 1.5 ms per item a read returns: results of item
operations are serialized with ``json.dumps`` instead of moto's generic serializer, and query
results are neither deep-copied nor projected through moto's expression walker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config

__all__ = [
    "MotoDynamoDB",
    "MotoUnavailable",
    "dynamodb_env",
    "moto_dynamodb",
    "run_moto_dynamodb",
]

REGION = "us-east-1"


class MotoUnavailable(RuntimeError):
    """moto's server did not start or did not answer."""


@dataclass
class MotoDynamoDB:
    """One moto server process. Use :func:`run_moto_dynamodb` rather than building this."""

    port: int
    region: str = REGION
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """boto3's own variables pointing its default chain at this server (no DICOMGATE_*)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint_url,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 DynamoDB client for this server (``config`` goes to botocore's Config)."""
        return boto3.session.Session().client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(**config),
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server (its process group), SIGKILL after ``timeout``; reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def _wait_ready(server: MotoDynamoDB, process: subprocess.Popen[bytes], timeout: float) -> None:
    client = server.client(
        connect_timeout=1, read_timeout=5, retries={"max_attempts": 1, "mode": "standard"}
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise MotoUnavailable(f"moto server exited with {process.returncode}")
            try:
                client.list_tables()
                return
            except Exception as exc:  # still importing moto: the socket queues, then answers
                last = exc
                time.sleep(0.05)
    finally:
        client.close()
    raise MotoUnavailable(f"moto server not ready after {timeout}s: {last}")


@contextlib.contextmanager
def run_moto_dynamodb(*, timeout: float = 30.0) -> Iterator[MotoDynamoDB]:
    """Start moto's server on 127.0.0.1 (ephemeral port), yield it ready, always stop it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = int(sock.getsockname()[1])
        fd = sock.fileno()
        env = {
            **os.environ,
            # run_simple serves an inherited socket when it believes a reloader started it
            "WERKZEUG_RUN_MAIN": "true",
            "WERKZEUG_SERVER_FD": str(fd),
        }
        process = subprocess.Popen(
            # -P: the script's folder (tests/, with its scp/ and pipeline/) is not on sys.path
            [sys.executable, "-P", __file__, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            pass_fds=(fd,),
            start_new_session=True,  # our signals only, never the test runner's group
        )
    finally:
        sock.close()  # the child holds its own copy
    server = MotoDynamoDB(port=port, _process=process)
    try:
        _wait_ready(server, process, timeout)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_dynamodb() -> Iterator[MotoDynamoDB]:
    """One moto DynamoDB server for the session (tests use tables of their own)."""
    with run_moto_dynamodb() as server:
        yield server


@pytest.fixture
def dynamodb_env(moto_dynamodb: MotoDynamoDB, monkeypatch: pytest.MonkeyPatch) -> MotoDynamoDB:
    """boto3's default chain (credentials, region, endpoint) pointed at the session's server,
    in this process and in any process it starts."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_dynamodb.env().items():
        monkeypatch.setenv(name, value)
    return moto_dynamodb


# -- the child process ---------------------------------------------------------------------------


def _repair_moto_transactions() -> None:
    """Roll back a failed transaction from per-item backups instead of whole-table copies."""
    import copy
    import types

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
        return obj if isinstance(obj, Table) else copy.deepcopy(obj, memo)

    # the models module's only use of ``copy`` is deepcopy (tables in transactions, items)
    models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[attr-defined]
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            name = op.get("TableName")
            if name not in self.tables:
                continue
            table = self.tables[name]
            if "Key" in op:
                key = op["Key"]
            else:
                attrs = (table.hash_key_attr, table.range_key_attr)
                key = {a: op["Item"][a] for a in attrs if a and a in op.get("Item", {})}
            try:
                current = self.get_item(name, key)
            except Exception:
                continue
            saved = copy.deepcopy(current.to_json()["Attributes"]) if current else None
            backups.append((name, key, saved))
        try:
            original(self, transact_items)
        except BaseException:
            for name, key, saved in reversed(backups):  # the first backup is the oldest state
                if saved is None:
                    self.delete_item(name, key)
                else:
                    self.put_item(name, saved)
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


#: item operations whose results are plain JSON (no timestamps, no binary in our use)
_FAST_ACTIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactWriteItems",
    }
)


def _repair_moto_serializer() -> None:
    """Serialize item operations' results with ``json.dumps``: moto's generic, shape-walking
    serializer costs about 1 ms per item returned (a 3,000-row query: seconds). The fallback
    (anything else, or a value json cannot take) is moto's own."""
    import json

    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.serialized

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    def serialized(self: Any, action_result: Any) -> Any:
        result = getattr(action_result, "result", None)
        if isinstance(result, dict) and self._get_action() in _FAST_ACTIONS:
            try:
                body = json.dumps(plain(result))
            except (TypeError, ValueError):
                return original(self, action_result)
            headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
            return 200, headers, body
        return original(self, action_result)

    DynamoHandler.serialized = serialized  # type: ignore[method-assign]


def _repair_moto_reads() -> None:
    """Queries and scans without a deep copy of every result item (moto copies, then
    projects through a generic expression walker: ~0.5 ms per item). The copies guard
    nothing here: results are only serialized, never changed."""
    import copy
    import types

    from moto.dynamodb.models import table
    from moto.dynamodb.models.dynamo_type import Item

    def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(obj, Item):
            return obj
        if isinstance(obj, list) and all(isinstance(i, Item) for i in obj):
            return list(obj)
        return copy.deepcopy(obj, memo)

    table.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)  # type: ignore[attr-defined]

    def project(self: Any, item: Item) -> Item:
        kind = (self.projection or {}).get("ProjectionType", "ALL")
        if kind == "ALL":
            return item
        keep = set(self.table_key_attrs) | {k["AttributeName"] for k in self.schema}
        if kind == "INCLUDE":
            keep |= set(self.projection.get("NonKeyAttributes", []))
        projected: Item = object.__new__(Item)
        projected.hash_key, projected.range_key = item.hash_key, item.range_key
        projected.attrs = type(item.attrs)()
        dict.update(projected.attrs, {k: v for k, v in item.attrs.items() if k in keep})
        return projected

    table.SecondaryIndex.project = project  # type: ignore[method-assign]


def _serve(port: int) -> None:
    """Serve moto on the socket inherited from the parent, one request at a time."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    _repair_moto_transactions()
    _repair_moto_serializer()
    _repair_moto_reads()
    run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
