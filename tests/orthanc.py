"""Orthanc (Debian ``orthanc``) as a real sending PACS for tests and benches.

Started with its own configuration: DICOM and HTTP on free ports, HTTP for loopback only
(``RemoteAccessAllowed: false``), only the modalities it is given may talk to it
(``DicomAlwaysAllowStore/Echo: false``, ``DicomCheckModalityHost: true``). It runs in this
host's network namespace, not in ``unshare -n``: the node under test (in this process) must
reach its DICOM port and it must reach the node's — a private namespace would cut them apart.
Orthanc's DICOM listener binds every interface (it has no bind option); it lives only for the
test and answers only its configured modalities.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Orthanc", "free_port", "have_orthanc"]


def have_orthanc() -> bool:
    return shutil.which("Orthanc") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    work: Path
    modalities: dict[str, tuple[str, str, int]]
    aet: str = "ORTHANC"

    def __post_init__(self) -> None:
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        db = self.work / "orthanc-db"
        db.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "dicomgate-test",
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "StorageDirectory": str(db),
            "IndexDirectory": str(db),
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "StorageCommitmentReportsSize": 100,
        }
        path = self.work / "orthanc.json"
        path.write_text(json.dumps(config))
        with (self.work / "orthanc.log").open("wb") as log:
            self.proc = subprocess.Popen(
                ["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("Orthanc did not start: " + (self.work / "orthanc.log").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _call(self, method: str, path: str, data: bytes | None = None) -> Any:
        req = urllib.request.Request(self.base + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=120) as rsp:
            return json.load(rsp)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._call("POST", path, data)

    def upload(self, paths: list[Path]) -> list[str]:
        """``POST /instances`` each file: Orthanc's instance ids."""
        return [str(self.post("/instances", p.read_bytes())["ID"]) for p in paths]

    def store(
        self, modality: str, ids: list[str], *, commitment: bool, permissive: bool = False
    ) -> Any:
        """``POST /modalities/{modality}/store``, synchronous: the job's output
        (``permissive``: an instance the peer refuses does not fail the job)."""
        body = {
            "Resources": ids,
            "Synchronous": True,
            "StorageCommitment": commitment,
            "Permissive": permissive,
        }
        return self.post(f"/modalities/{modality}/store", body)

    def commitment_report(self, transaction_uid: str, timeout: float = 30.0) -> Any:
        """``GET /storage-commitment/{uid}`` once it is no longer pending."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.get(f"/storage-commitment/{transaction_uid}")
            except urllib.error.HTTPError as exc:  # not known until the report came (1.10)
                if exc.code != 404 or time.monotonic() > deadline:
                    raise
                report = {"Status": "Pending"}
            if report.get("Status") != "Pending" or time.monotonic() > deadline:
                return report
            time.sleep(0.05)
