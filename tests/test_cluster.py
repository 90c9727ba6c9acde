"""Several ``dicomgate serve`` processes as one deployment (issue 8, "How it will be checked").

Real parts throughout: each node is its own ``dicomgate serve`` process on its own port, all
sharing one spool directory (as EFS would be) and one DynamoDB table (moto's server, a real
HTTP endpoint), delivering to SeaweedFS (real S3) and announcing to a webhook receiver on
loopback. DCMTK's storescu and pynetdicom send.

What must hold: a study split across nodes is delivered once, whole, with one manifest per
version; a node SIGKILLed mid-study or mid-publication loses nothing it acknowledged and causes
no second manifest of a version; a late instance makes version 2; a node with another key
refuses to join.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dicomgate.testing import write_ct_study
from tests.helpers import (
    TEST_KEY,
    NodeProcess,
    dicomgate_cli,
    send_files,
    serve_process,
    storescu,
    wait_for,
)
from tests.moto_dynamodb import dynamodb_env, moto_dynamodb  # noqa: F401 - fixtures
from tests.pipeline.webhook import SECRET
from tests.seaweed import SeaweedFS

pytestmark = pytest.mark.slow

HEARTBEAT_TTL = 2.0


class Hook:
    """A webhook receiver that records each notification; ``hold`` makes the first request
    wait (a node caught mid-announcement) until ``release`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.url = ""

    def versions(self) -> list[int]:
        with self.lock:
            return [n["manifest_version"] for n in self.received]


@contextlib.contextmanager
def hook_server(hook: Hook) -> Iterator[Hook]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(sig, self.headers.get("X-Dicomgate-Signature", "")):
                with hook.lock:
                    hook.received.append(json.loads(body))
            hook.arrived.set()
            hook.release.wait(60)
            with contextlib.suppress(OSError):  # the caller may be dead by now
                self.send_response(204)
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def table(request: pytest.FixtureRequest) -> str:
    """DICOMGATE_STATE for a fresh table on the session's moto server (the environment that
    points boto3 at it is inherited by the nodes)."""
    request.getfixturevalue("dynamodb_env")
    return f"dynamodb://dg-{uuid.uuid4().hex[:12]}"


def _env(
    seaweed: SeaweedFS, bucket: str, hook: Hook, state: str, spool: Path, node: str, **extra: str
) -> dict[str, str]:
    return {
        **seaweed.env(),
        # moto accepts any credentials; DynamoDB's endpoint comes from dynamodb_env
        "DICOMGATE_STATE": state,
        "DICOMGATE_SPOOL_DIR": str(spool),
        "DICOMGATE_NODE_ID": node,
        "DICOMGATE_DESTINATION": f"s3://{bucket}/deliveries",
        "DICOMGATE_STABLE_AFTER": "2",
        "DICOMGATE_HEARTBEAT_TTL": str(HEARTBEAT_TTL),
        "DICOMGATE_NOTIFY_WEBHOOK_URL": hook.url,
        "DICOMGATE_NOTIFY_WEBHOOK_SECRET": SECRET,
        "DICOMGATE_NOTIFY_TIMEOUT": "30",
        **extra,
    }


@contextlib.contextmanager
def _nodes(tmp_path: Path, names: list[str], **kw: Any) -> Iterator[dict[str, NodeProcess]]:
    """One ``dicomgate serve`` per name, each with a data directory of its own (as separate
    containers have), sharing the spool directory; all stopped afterwards."""
    spool = tmp_path / "shared-spool"
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(
                serve_process(tmp_path / f"data-{name}", env=_env(spool=spool, node=name, **kw))
            )
            for name in names
        }


def _manifest(seaweed: SeaweedFS, bucket: str, key: str) -> dict[str, Any]:
    client = seaweed.client()
    try:
        return dict(json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    finally:
        client.close()


def _by_kind(keys: list[str]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {"manifest": [], "index": [], "instance": [], "other": []}
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name.startswith("manifest"):
            kinds["manifest"].append(name)
        elif name.startswith("index"):
            kinds["index"].append(name)
        elif name.endswith(".dcm"):
            kinds["instance"].append(key)
        else:
            kinds["other"].append(key)
    return kinds


def _kill(node: NodeProcess) -> None:
    """SIGKILL a node and everything it started (its process group): no goodbye."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)


def _send_parts(dcmtk: dict[str, str], ports: list[int], parts: list[Path]) -> None:
    """DCMTK storescu, one per node, all at once."""
    errors: list[BaseException] = []

    def send(port: int, folder: Path) -> None:
        try:
            storescu(dcmtk, port, folder)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=a) for a in zip(ports, parts, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors


def _split(paths: list[Path], into: int, root: Path) -> list[Path]:
    parts = [root / f"part{i}" for i in range(into)]
    for i, p in enumerate(paths):
        parts[i % into].mkdir(parents=True, exist_ok=True)
        (parts[i % into] / p.name).write_bytes(p.read_bytes())
    return parts


@pytest.mark.parametrize("count", [2, 3])
def test_study_split_across_nodes_is_delivered_once(
    tmp_path: Path,
    dcmtk: dict[str, str],
    seaweed: SeaweedFS,
    bucket: str,
    table: str,
    count: int,
) -> None:
    """300 instances of one study, an equal share to each of 2 or 3 nodes at once: one
    manifest version 1 listing all 300, one notification, 300 instance objects; then a late
    instance to another node makes version 2 listing 301, published and announced once."""
    paths = write_ct_study(tmp_path / "study", 301, rows=32, columns=32)
    late, paths = paths[-1], paths[:-1]
    names = [f"n{i}" for i in range(count)]
    with (
        hook_server(Hook()) as hook,
        _nodes(tmp_path, names, seaweed=seaweed, bucket=bucket, hook=hook, state=table) as nodes,
    ):
        _send_parts(dcmtk, [nodes[n].port for n in names], _split(paths, count, tmp_path))
        assert wait_for(lambda: hook.versions() == [1], 180), nodes["n0"].log_text()[-3000:]
        kinds = _by_kind(seaweed.keys(bucket))
        assert len(kinds["instance"]) == 300
        assert sorted(kinds["manifest"]) == ["manifest-v1.json", "manifest.json"]
        [note] = hook.received
        assert note["counts"]["instances"] == 300
        # every node received its share (their spool sub-directories, one shared spool)
        spooled = {d.name for d in (tmp_path / "shared-spool" / "nodes").iterdir()}
        assert spooled == set(names)

        # a late instance to the last node: version 2 lists everything, once
        assert send_files("127.0.0.1", nodes[names[-1]].port, [late]) == [0]
        assert wait_for(lambda: hook.versions() == [1, 2], 60), hook.versions()
        assert not wait_for(lambda: len(hook.received) > 2, 3)  # nothing more
    kinds = _by_kind(seaweed.keys(bucket))
    assert len(kinds["instance"]) == 301
    assert sorted(kinds["manifest"]) == ["manifest-v1.json", "manifest-v2.json", "manifest.json"]
    v2 = next(k for k in seaweed.keys(bucket) if k.endswith("manifest-v2.json"))
    assert len(_manifest(seaweed, bucket, v2)["instances"]) == 301


def test_workers_on_one_sqlite_store_deliver_once(
    tmp_path: Path, dcmtk: dict[str, str], seaweed: SeaweedFS, bucket: str
) -> None:
    """The same on one host: ``serve --workers 2`` (SQLite, one spool), 300 instances over
    four storescu associations at once: one manifest version 1 listing 300, one
    notification, 300 instance objects."""
    paths = write_ct_study(tmp_path / "study", 300, rows=32, columns=32)
    with hook_server(Hook()) as hook:
        env = _env(seaweed, bucket, hook, "sqlite", tmp_path / "spool", "host")
        with serve_process(
            tmp_path / "data", env={**env, "DICOMGATE_WORKERS": "2"}, listeners=2
        ) as node:
            _send_parts(dcmtk, [node.port] * 4, _split(paths, 4, tmp_path))
            assert wait_for(lambda: hook.versions() == [1], 180), node.log_text()[-3000:]
            assert not wait_for(lambda: len(hook.received) > 1, 3)
            workers = {e["node"] for e in node.events("association established")}
            assert workers <= {"host-w0", "host-w1"}
    assert hook.received[0]["counts"]["instances"] == 300
    kinds = _by_kind(seaweed.keys(bucket))
    assert len(kinds["instance"]) == 300
    assert sorted(kinds["manifest"]) == ["manifest-v1.json", "manifest.json"]


def test_sigkilled_node_loses_nothing_it_acknowledged(
    tmp_path: Path, seaweed: SeaweedFS, bucket: str, table: str
) -> None:
    """Node a is SIGKILLed mid-association while receiving; the sender records every status
    and sends the rest to b. Once a's heartbeat expires, b delivers every instance a
    acknowledged: the last manifest lists all 120, every manifest version is written and
    announced once, and no instance object is duplicated."""
    paths = write_ct_study(tmp_path / "study", 120, rows=32, columns=32)
    statuses: dict[Path, int | None] = {}
    with (
        hook_server(Hook()) as hook,
        _nodes(tmp_path, ["a", "b"], seaweed=seaweed, bucket=bucket, hook=hook, state=table) as n,
    ):
        killer = threading.Thread(
            target=lambda: wait_for(lambda: len(statuses) >= 60, 120) and _kill(n["a"])
        )
        killer.start()
        with contextlib.suppress(ConnectionError, RuntimeError):
            send_files(
                "127.0.0.1",
                n["a"].port,
                paths,
                on_status=lambda p, s: statuses.__setitem__(p, s),
                timeout=5,
            )
        killer.join(60)
        assert n["a"].proc.poll() is not None, "a should be dead"
        acked_by_a = {p for p, s in statuses.items() if s == 0}
        assert 60 <= len(acked_by_a) < 120
        rest = [p for p in paths if p not in acked_by_a]
        assert send_files("127.0.0.1", n["b"].port, rest) == [0] * len(rest)

        def all_delivered() -> bool:
            with hook.lock:
                return bool(hook.received) and hook.received[-1]["counts"]["instances"] == 120

        assert wait_for(all_delivered, 120), n["b"].log_text()[-3000:]
        assert not wait_for(lambda: hook.versions()[-1] > len(hook.versions()), 2)
        assert any(e["event"] == "node stopped, its work released" for e in n["b"].lines)
    versions = hook.versions()
    assert versions == list(range(1, len(versions) + 1))  # each version announced once
    kinds = _by_kind(seaweed.keys(bucket))
    assert len(kinds["instance"]) == 120  # a's acknowledged and b's, none twice
    assert sorted(kinds["manifest"]) == sorted(
        ["manifest.json", *(f"manifest-v{v}.json" for v in versions)]
    )


def test_node_killed_while_announcing_makes_no_second_manifest(
    tmp_path: Path, seaweed: SeaweedFS, bucket: str, table: str
) -> None:
    """The node that published version 1 is SIGKILLed while its webhook call is still open:
    the survivor announces version 1 again (notifications are at-least-once; the partner
    de-duplicates by study and version), and never writes a manifest version 2."""
    paths = write_ct_study(tmp_path / "study", 20, rows=32, columns=32)
    with (
        hook_server(Hook(hold=True)) as hook,
        _nodes(tmp_path, ["a", "b"], seaweed=seaweed, bucket=bucket, hook=hook, state=table) as n,
    ):
        assert send_files("127.0.0.1", n["a"].port, paths[:10]) == [0] * 10
        assert send_files("127.0.0.1", n["b"].port, paths[10:]) == [0] * 10
        assert hook.arrived.wait(120), "no notification arrived"
        # whichever node published: its log says so, and it is blocked in the webhook call
        [publisher] = [
            name
            for name, node in n.items()
            if any(e["event"] == "study_delivered" for e in node.lines)
        ]
        survivor = "b" if publisher == "a" else "a"
        _kill(n[publisher])
        hook.release.set()
        assert wait_for(lambda: len(hook.received) == 2, 60), n[survivor].log_text()[-3000:]
        assert not wait_for(lambda: len(hook.received) > 2, 3)
        first, again = hook.received
        assert first["manifest_version"] == again["manifest_version"] == 1
        assert first["counts"] == again["counts"] and first["counts"]["instances"] == 20
    kinds = _by_kind(seaweed.keys(bucket))
    assert sorted(kinds["manifest"]) == ["manifest-v1.json", "manifest.json"]
    assert len(kinds["instance"]) == 20


def test_node_with_another_key_refuses_to_join(
    tmp_path: Path, seaweed: SeaweedFS, bucket: str, table: str
) -> None:
    """A second node on the same table with a different key exits 2 at start-up, naming the
    setting; the first one keeps serving."""
    with hook_server(Hook()) as hook:
        env = _env(seaweed, bucket, hook, table, tmp_path / "spool", "first")
        with serve_process(tmp_path / "d1", env=env) as first:
            other = {
                **env,
                "DICOMGATE_NODE_ID": "second",
                "DICOMGATE_SECRET_KEY": "another-key-" + TEST_KEY,
                "DICOMGATE_WORKERS": "1",
            }
            result = dicomgate_cli(
                "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
                str(tmp_path / "d2"), env=other,
            )  # fmt: skip
            assert result.returncode == 2
            assert "DICOMGATE_SECRET_KEY" in result.stderr
            assert first.proc.poll() is None
            assert send_files("127.0.0.1", first.port, write_ct_study(tmp_path / "s", 1)) == [0]
