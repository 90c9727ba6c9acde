"""Test helpers: start nodes (in-process or as a real ``dicomgate serve``), send with pynetdicom."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from dicomgate.config import load_settings
from dicomgate.node import Node

DCMTK_TOOLS = ("echoscu", "storescu", "storescp")
TEST_KEY = "k" * 40


@dataclass
class NodeHandle:
    node: Node
    host: str
    port: int
    data_dir: Path

    @property
    def spool_files(self) -> list[Path]:
        return sorted((self.data_dir / "spool" / "instances").iterdir())

    @property
    def incoming_files(self) -> list[Path]:
        return sorted((self.data_dir / "spool" / "incoming").iterdir())


@contextlib.contextmanager
def start_node(data_dir: Path, *, pipeline: bool = False, **overrides: Any) -> Iterator[NodeHandle]:
    """An in-process node on 127.0.0.1 (SCP only unless ``pipeline``), stopped afterwards."""
    settings = load_settings(
        data_dir=data_dir,
        host="127.0.0.1",
        secret_key=TEST_KEY,
        **{"port": 0, "ops_port": 0, "min_free_space": 0, **overrides},
    )
    node = Node(settings, pipeline=pipeline)
    host, port = node.start()
    try:
        yield NodeHandle(node, host, port, data_dir)
    finally:
        node.stop(timeout=5)


def send_files(
    host: str,
    port: int,
    paths: Sequence[Path],
    *,
    aec: str = "DICOMGATE",
    aet: str = "PYNETDICOM",
    on_status: Any = None,
    timeout: float = 30,
) -> list[int | None]:
    """C-STORE each file's bytes as they are on disk (no re-encoding); return the statuses.

    With ``STORE_SEND_CHUNKED_DATASET`` pynetdicom streams the dataset part of the file and
    takes the request's SOP Class/Instance UIDs from its File Meta — which lets tests send a
    request that disagrees with its dataset.
    """
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts: dict[tuple[str, str], None] = {}
    for p in paths:
        meta = dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        contexts[(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))] = None
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, ts)
    statuses: list[int | None] = []
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate(host, port, ae_title=aec)
        if not assoc.is_established:
            raise ConnectionError("association not established")
        try:
            for p in paths:
                rsp = assoc.send_c_store(p)
                status = int(rsp.Status) if rsp and "Status" in rsp else None
                statuses.append(status)
                if on_status is not None:
                    on_status(p, status)
                if not assoc.is_established:
                    break
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    return statuses


def associate(host: str, port: int, *, aec: str = "DICOMGATE", aet: str = "PYNETDICOM") -> Any:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    return ae.associate(host, port, ae_title=aec)


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a DICOM file after its File Meta Information (the dataset as sent)."""
    with path.open("rb") as f:
        f.seek(128 + 4)
        # (0002,0000) File Meta Information Group Length, explicit VR LE: UL value at offset 8
        head = f.read(12)
        group_length = int.from_bytes(head[8:12], "little")
        f.seek(128 + 4 + 12 + group_length)
        return f.read()


# -- a real `dicomgate serve` in a subprocess ----------------------------------------------------
@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    data_dir: Path
    port: int = 0
    tls_port: int = 0  # the DICOM TLS listener's, when there is one
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines if e.get("event") == name]

    def log_text(self) -> str:
        return "".join(self.raw)


def _pump(np: NodeProcess, ready: threading.Event, listeners: int = 1) -> None:
    assert np.proc.stderr is not None
    for line in np.proc.stderr:
        np.raw.append(line)
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        np.lines.append(entry)
        if entry.get("event") == "listening" and not entry.get("tls"):
            np.port = int(entry["port"])
        if entry.get("event") == "listening" and entry.get("tls"):
            np.tls_port = int(entry["port"])
        if entry.get("event") in ("listening", "node started"):
            # one node: listening is enough; several: every one has announced itself
            event = "listening" if listeners == 1 else "node started"
            if len(np.events(event)) >= listeners:
                ready.set()
    ready.set()


@contextlib.contextmanager
def serve_process(
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    listeners: int = 1,
) -> Iterator[NodeProcess]:
    """Run ``dicomgate serve`` on 127.0.0.1 with an ephemeral port; always stop it.

    Ready once ``listeners`` nodes said "listening" (``serve --workers N``: N)."""
    full_env = {
        **os.environ,
        "DICOMGATE_SECRET_KEY": TEST_KEY,
        "DICOMGATE_MIN_FREE_SPACE": "0",
        "DICOMGATE_LOG_FORMAT": "json",
        "DICOMGATE_OPS_PORT": "0",
        "DICOMGATE_WORKERS": "1",  # one process unless a test asks for serve --workers
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dicomgate",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        start_new_session=True,  # its own process group: the pipeline's workers go with it
    )
    np = NodeProcess(proc, data_dir)
    ready = threading.Event()
    np._reader = threading.Thread(target=_pump, args=(np, ready, listeners), daemon=True)
    np._reader.start()
    try:
        if not ready.wait(timeout) or np.port == np.tls_port == 0:
            raise RuntimeError(f"dicomgate serve did not start:\n{np.log_text()}")
        yield np
    finally:
        stop_process(proc)
        # anything left in its group (a SIGKILLed node's workers) goes too, so the log pipe
        # reaches EOF and the reader ends
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if np._reader is not None:
            np._reader.join(timeout=10)
        if proc.stderr is not None and (np._reader is None or not np._reader.is_alive()):
            proc.stderr.close()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def storescu(
    dcmtk: dict[str, str],
    port: int,
    *paths: Path,
    host: str = "127.0.0.1",
    aet: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send files or folders (recursively) with DCMTK's storescu, Nagle off as benchmarks do."""
    argv = [dcmtk["storescu"], *(["-aet", aet] if aet else []), "-aec", "DICOMGATE", "+sd", "+r"]
    return subprocess.run(
        [*argv, host, str(port), *map(str, paths)],
        check=check,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def dicomgate_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dicomgate ARGS`` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "dicomgate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
        env={**os.environ, **(env or {})},
    )
